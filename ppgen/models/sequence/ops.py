"""Forward–backward, Viterbi and sampling for batches of padded sequences (pure functions).

Shapes: ``N`` sequences padded to ``T`` steps, ``K`` states. Emission log-probabilities come
in as ``log_b`` of shape (*P, N, T, K), where ``*P`` are optional leading batch dimensions of
the parameters (e.g. posterior draws); ``init`` is (*P, K) and ``trans`` (*P, K, K), rows
summing to one. ``mask`` (N, T) is True at real steps; every sequence has at least one.

Everything is vectorised over sequences, states and parameter draws; the only Python loop is
over time, so the cost is linear in ``T``. For a few long sequences that loop is slow (a few
Python-level operations per step, shared by few sequences): ``forward_log_prob``,
``forward_backward``, ``viterbi`` and ``sample_posterior`` then switch to the time-parallel
code of :mod:`ppgen.models.sequence.parallel` (``algorithm="auto"``, chosen by shape with
:func:`~ppgen.models.sequence.parallel.use_parallel`; ``"sequential"`` or ``"parallel"``
force one). Both give the same results to round-off. On the CPU, where no gradient is wanted (EM,
``predict``, ``predict_proba``, ``log_prob``), ``forward_log_prob``, ``forward_backward`` and
``viterbi`` run compiled kernels instead (:mod:`ppgen.models.sequence.compiled`, numba; chosen
by :func:`~ppgen.models.sequence.compiled.preferred`, or forced with ``"compiled"``): the same
recursions with no Python per step.

Numerics. The forward and backward passes use Rabiner's scaled recursion in which every
quantity is carried as a log: at each step the emission log-probabilities are shifted by
their maximum over states before exponentiating (so the largest factor is exactly 1), the
forward vector is renormalised, and the logs of the normalisers and shifts are summed. This
is exact in exact arithmetic and replaces the K x K log-sum-exp of a plain log-space
recursion with one matrix product per step. When the states the chain can reach all emit a
frame far (hundreds of nats) below an unreachable state, that step underflows; it is then
redone with the shift taken over the reachable states only, so the result stays exact.
Viterbi runs in log space (max-plus).

Padded steps (``mask`` False) carry the state forward unchanged and emit nothing, so they
contribute exactly zero to every log-likelihood and every expected statistic.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from . import compiled, parallel

__all__ = ["forward_log_prob", "forward_backward", "viterbi", "sample_posterior",
           "sample_states"]

Algorithm = Literal["auto", "sequential", "parallel", "compiled"]


def _check(algorithm: str) -> None:
    if algorithm not in ("auto", "sequential", "parallel", "compiled"):
        raise ValueError(f"algorithm: expected 'auto', 'sequential', 'parallel' or "
                         f"'compiled', got {algorithm!r}.")


def _compiled(algorithm: str, log_b: torch.Tensor, init: torch.Tensor,
              trans: torch.Tensor) -> bool:
    """Whether to take the compiled path (CPU, no gradients, no parameter batch dims)."""
    _check(algorithm)
    fits = log_b.dim() == 3 and compiled.usable(log_b, init, trans)
    if algorithm == "compiled" and not fits:
        raise ValueError(
            "algorithm='compiled' needs numba and float32/float64 CPU tensors without "
            "gradients and without parameter batch dimensions; got "
            f"log_b of shape {tuple(log_b.shape)}, dtype {log_b.dtype}, device "
            f"{log_b.device}, numba {'found' if compiled.AVAILABLE else 'not installed'}. "
            "Use algorithm='auto'.")
    if algorithm == "auto":
        return fits and compiled.preferred(*log_b.shape)
    return algorithm == "compiled"


def _parallel(algorithm: str, log_b: torch.Tensor) -> bool:
    """Whether to take the time-parallel path (``log_b`` is (*P, N, T, K))."""
    _check(algorithm)
    if algorithm == "auto":
        n = math.prod(log_b.shape[:-2])
        return parallel.use_parallel(n, log_b.shape[-2], log_b.shape[-1])
    return algorithm == "parallel"


def _shifted(log_b: torch.Tensor, mask: torch.Tensor, dim: int = -1):
    """exp(log_b - max over states) and the shift, with padded steps set to emission 1.

    Returns (b, shift, masked log_b); ``dim`` is the states dimension.
    """
    log_b = torch.where(mask, log_b, torch.zeros((), dtype=log_b.dtype, device=log_b.device))
    shift = log_b.amax(dim, keepdim=True)
    # A step impossible under every state (all -inf) keeps shift 0, so b = 0 and the
    # sequence's log-likelihood becomes -inf instead of NaN.
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return (log_b - shift).exp(), shift, log_b


def _rescue(pred: torch.Tensor, log_b_t: torch.Tensor, dim: int):
    """One step redone with the shift taken over the states the chain can reach.

    The usual shift is the largest emission log-density over all states; when every state
    the chain can be in (pred > 0) emits the frame hundreds of nats below an unreachable
    one, exp underflows to 0 for all of them. Returns (pred * b', shift') for that step.
    """
    reach = pred > 0
    log_b_t = torch.where(reach, log_b_t, torch.full((), -math.inf, dtype=pred.dtype,
                                                       device=pred.device))
    shift = log_b_t.amax(dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return pred * (log_b_t - shift).exp(), shift


def _step_mask(mask: torch.Tensor, t: int) -> torch.Tensor:
    return mask[:, t].unsqueeze(-1)


def _filter(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
            mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Normalised forward vectors (a list over time of (*P, N, K)) and the per-step log
    normalisers log p(x_t | x_<t) (*P, N, T); differentiable."""
    b, shift, masked = _shifted(log_b, mask.unsqueeze(-1))
    tiny = torch.finfo(b.dtype).tiny
    alphas, logs = [], []
    alpha = None
    for t in range(b.shape[-2]):
        pred = init.unsqueeze(-2).expand(b[..., 0, :].shape) if alpha is None else \
            alpha @ trans
        new = pred * b[..., t, :]
        norm = new.sum(-1, keepdim=True)
        step_shift = shift[..., t, :]
        low = norm <= tiny
        if bool(low.any()):  # rare: see _rescue
            redo, redo_shift = _rescue(pred, masked[..., t, :], -1)
            new = torch.where(low, redo, new)
            step_shift = torch.where(low, redo_shift, step_shift)
            norm = new.sum(-1, keepdim=True)
        if alpha is not None:
            new = torch.where(_step_mask(mask, t), new, alpha)
            norm = torch.where(_step_mask(mask, t), norm, torch.ones_like(norm))
        alpha = new / norm.clamp_min(tiny)
        alphas.append(alpha)
        logs.append((norm.log() + step_shift).squeeze(-1))
    return alphas, torch.stack(logs, -1)


def forward_log_prob(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor, *, per_step: bool = False,
                     algorithm: Algorithm = "auto", block_length: int | None = None
                     ) -> torch.Tensor:
    """Log-likelihood of each sequence (states summed out): shape (*P, N).

    Differentiable (used inside Pyro models). With ``per_step`` returns (*P, N, T): the
    one-step predictive log-densities log p(x_t | x_<t), zero at padded steps (always by
    the sequential recursion).
    """
    if not per_step and _compiled(algorithm, log_b, init, trans):
        return compiled.forward_log_prob(log_b, init, trans, mask)
    if not per_step and _parallel(algorithm, log_b):
        try:
            return parallel.log_likelihood(log_b, init, trans, mask, length=block_length)
        except parallel._FALLBACK:
            pass
    steps = _filter(log_b, init, trans, mask)[1]
    return steps if per_step else steps.sum(-1)


def _partial_steps(mask: torch.Tensor) -> list[bool]:
    """Per step, whether some sequence has ended by then (one host sync for all steps)."""
    return (~mask.all(0)).tolist()


def _buffer(workspace: dict | None, name: str, shape: tuple[int, ...],
            like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor, reused across calls through ``workspace`` when the shape matches
    (fresh multi-megabyte allocations cost page faults on every EM iteration)."""
    if workspace is not None:
        buf = workspace.get(name)
        if buf is not None and buf.shape == shape and buf.dtype == like.dtype and \
                buf.device == like.device:
            return buf
    buf = torch.empty(shape, dtype=like.dtype, device=like.device)
    if workspace is not None:
        workspace[name] = buf
    return buf


def _backward(trans, alphas, norms, b, step_mask, partial, carried, betas, tiny, *,
              guard: bool) -> torch.Tensor:
    """The scaled backward pass of :func:`forward_backward` over state-major (T, K, N)
    buffers; fills ``betas`` and ``carried`` and returns the transition pairs (K, K) (before
    the elementwise product with ``trans``).

    carried[t] = b_t * beta_t / c_t. A state the chain cannot be in at step t (alpha_t = 0)
    whose frame is likely (b_t near 1) while every reachable state's is not (c_t near the
    underflow limit) gets a carried value near 1 / c_t, which a few such steps overflow to
    inf, and 0 * inf makes the posteriors NaN. Such a state adds nothing to any posterior
    or count (every path into it has probability 0), so with ``guard`` its carried value
    is set to 0, which keeps every message finite and changes no result.
    """
    num_steps = b.shape[0]
    betas[-1] = 1
    carried[0] = 0
    for t in range(num_steps - 1, 0, -1):
        c = carried[t]
        torch.mul(b[t], betas[t], out=c).div_(norms[t].clamp_min(tiny))
        if guard:
            c.masked_fill_(alphas[t] == 0, 0.0)
        if partial[t]:
            c.masked_fill_(~step_mask[t], 0.0)
            betas[t - 1] = torch.where(step_mask[t], trans @ c, betas[t])
        else:
            torch.mm(trans, c, out=betas[t - 1])
    return torch.bmm(alphas[:-1], carried[1:].transpose(1, 2)).sum(0) if num_steps > 1 \
        else torch.zeros_like(trans)


def _finite_backward(pairs: torch.Tensor, first_betas: torch.Tensor) -> bool:
    """Whether a backward pass stayed finite: an overflow at step t >= 1 reaches the pairs
    (every step has a reachable state), one at step 0 only the first step's messages."""
    return bool(torch.isfinite(pairs).all()) and bool(torch.isfinite(first_betas).all())


def forward_backward(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor, *, workspace: dict | None = None,
                     algorithm: Algorithm = "auto", block_length: int | None = None
                     ) -> dict[str, torch.Tensor]:
    """Posterior marginals and expected counts for EM (no parameter batch dimensions).

    Parameters
    ----------
    workspace : dict, optional
        Scratch buffers kept between calls of one fit (their contents are overwritten, so
        results of a previous call that live in them, such as ``gamma``, become invalid).

    Returns
    -------
    dict with ``log_lik`` (N,), ``gamma`` (N, T, K) state marginals (zero at padded steps;
    a permuted view of a state-major (T, K, N) buffer), ``trans_counts`` (K, K) expected
    transitions summed over sequences and steps, and ``start_counts`` (K,) the marginals of
    the first step summed over sequences.
    """
    if _compiled(algorithm, log_b, init, trans):
        return compiled.forward_backward(log_b, init, trans, mask)
    if _parallel(algorithm, log_b):
        try:
            return parallel.forward_backward(log_b, init, trans, mask, length=block_length)
        except parallel._FALLBACK:
            pass
    partial = _partial_steps(mask)
    n, num_steps, k = log_b.shape
    # State-major (T, K, N) buffers: each step is a (K, K) @ (K, N) product and elementwise
    # work on contiguous memory, the normalisers broadcasting along contiguous rows.
    lbt = log_b.permute(1, 2, 0)
    step_mask = mask.T.unsqueeze(1)  # (T, 1, N)
    if any(partial):
        lbt = torch.where(step_mask, lbt, torch.zeros((), dtype=lbt.dtype, device=lbt.device))
    shift = lbt.amax(1, keepdim=True)  # (T, 1, N)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    b = _buffer(workspace, "b", (num_steps, k, n), log_b)
    torch.sub(lbt, shift, out=b).exp_()
    init_col = init.unsqueeze(-1)
    tiny = torch.finfo(b.dtype).tiny
    alphas = _buffer(workspace, "alphas", (num_steps, k, n), log_b)
    norms = _buffer(workspace, "norms", (num_steps, 1, n), log_b)
    trans_t = trans.T.contiguous()
    for t in range(num_steps):
        alpha = alphas[t]
        if t == 0:
            torch.mul(init_col, b[0], out=alpha)
        else:
            torch.mm(trans_t, alphas[t - 1], out=alpha).mul_(b[t])
        torch.sum(alpha, 0, keepdim=True, out=norms[t])
        low = norms[t] <= tiny
        if bool(low.any()):  # rare: redo the step with a reachable-state shift (_rescue)
            pred = init_col.expand(k, n) if t == 0 else trans_t @ alphas[t - 1]
            redo, redo_shift = _rescue(pred, lbt[t], 0)
            b[t] = torch.where(low, torch.exp(torch.where(
                pred > 0, lbt[t], torch.full_like(lbt[t], -math.inf)) - redo_shift), b[t])
            shift[t] = torch.where(low, redo_shift, shift[t])
            alpha.copy_(torch.where(low, redo, alpha))
            torch.sum(alpha, 0, keepdim=True, out=norms[t])
        if t > 0 and partial[t]:
            alpha.copy_(torch.where(step_mask[t], alpha, alphas[t - 1]))
            norms[t] = torch.where(step_mask[t], norms[t], torch.ones_like(norms[t]))
        alpha.div_(norms[t].clamp_min(tiny))
    # Backward pass; carried[t] = b_t * beta_t / c_t, which also gives the expected
    # transitions: xi_t(i, j) = alpha_{t-1}(i) A_ij carried_t(j); gamma_t = alpha_t beta_t.
    carried = _buffer(workspace, "carried", (num_steps, k, n), log_b)
    betas = _buffer(workspace, "betas", (num_steps, k, n), log_b)
    pairs = _backward(trans, alphas, norms, b, step_mask, partial, carried, betas, tiny,
                      guard=False)
    if not _finite_backward(pairs, betas[0]):  # rare: see _backward
        pairs = _backward(trans, alphas, norms, b, step_mask, partial, carried, betas, tiny,
                          guard=True)
    gamma = betas.mul_(alphas)  # the betas are not needed any more
    if any(partial):
        gamma.mul_(step_mask)
    log_lik = (norms.log() + shift).squeeze(1).masked_fill_(~mask.T, 0.0).sum(0)
    return {"log_lik": log_lik, "gamma": gamma.permute(2, 0, 1), "trans_counts": trans * pairs,
            "start_counts": gamma[0].sum(-1)}


def viterbi(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
            mask: torch.Tensor, *, algorithm: Algorithm = "auto",
            block_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable state paths (N, T) (-1 at padded steps) and their log-probabilities (N,).
    """
    if _compiled(algorithm, log_b, init, trans):
        return compiled.viterbi(log_b, init, trans, mask)
    if _parallel(algorithm, log_b):
        return parallel.viterbi(log_b, init, trans, mask, length=block_length)
    n, num_steps, k = log_b.shape
    log_trans = trans.log()
    stay = torch.arange(k, device=log_b.device).expand(n, k)
    delta = init.log() + log_b[:, 0]
    pointers = []
    for t in range(1, num_steps):
        best, arg = (delta.unsqueeze(-1) + log_trans).max(-2)
        valid = _step_mask(mask, t)
        delta = torch.where(valid, best + log_b[:, t], delta)
        pointers.append(torch.where(valid, arg, stay))
    score, state = delta.max(-1)
    path = [state]
    for arg in reversed(pointers):
        state = arg.gather(1, state.unsqueeze(-1)).squeeze(-1)
        path.append(state)
    path = torch.stack(path[::-1], 1)
    return path.masked_fill(~mask, -1), score


def sample_posterior(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor, generator: torch.Generator, *,
                     algorithm: Algorithm = "auto", block_length: int | None = None
                     ) -> torch.Tensor:
    """One draw of the state paths from p(z | x) by forward filtering, backward sampling:
    shape (N, T), -1 at padded steps. (The two paths draw from the same distribution with
    different random streams.)"""
    if _parallel(algorithm, log_b):
        try:
            return parallel.sample_posterior(log_b, init, trans, mask, generator,
                                             length=block_length)
        except parallel._FALLBACK:
            pass
    alphas = _filter(log_b, init, trans, mask)[0]
    tiny = torch.finfo(log_b.dtype).tiny
    num_steps = len(alphas)
    state = torch.multinomial(alphas[-1], 1, generator=generator).squeeze(-1)
    path = [state]
    for t in range(num_steps - 2, -1, -1):
        weights = alphas[t] * trans[:, state].T
        # Past a sequence's end the draw is discarded; keep its weights valid anyway.
        weights = torch.where(mask[:, t + 1].unsqueeze(-1), weights, alphas[t])
        draw = torch.multinomial(weights / weights.sum(-1, keepdim=True).clamp_min(tiny), 1,
                                 generator=generator).squeeze(-1)
        state = torch.where(mask[:, t + 1], draw, state)
        path.append(state)
    return torch.stack(path[::-1], 1).masked_fill(~mask, -1)


def sample_states(init: torch.Tensor, trans: torch.Tensor, num_sequences: int,
                  num_steps: int, generator: torch.Generator,
                  first: torch.Tensor | None = None) -> torch.Tensor:
    """State paths drawn from the Markov chain itself: shape (num_sequences, num_steps).

    ``first`` (num_sequences,) long: the states of the first step, instead of draws from
    ``init``.
    """
    if first is not None:
        state = first
    else:
        state = torch.multinomial(init.expand(num_sequences, -1), 1, replacement=True,
                                  generator=generator).squeeze(-1)
    path = [state]
    for _ in range(1, num_steps):
        state = torch.multinomial(trans[state], 1, generator=generator).squeeze(-1)
        path.append(state)
    return torch.stack(path, 1)
