"""Time-parallel forward–backward, log-likelihood and Viterbi for long sequences (pure
functions; the shapes and conventions of :mod:`ppgen.models.sequence.ops`).

The sequential recursions of ``ops`` take one Python step per time step, which is cheap per
step only when many sequences share it. For a few long sequences this module cuts every
sequence into blocks of ``L`` steps and works in three stages, after the associative-scan
formulation of Särkkä & García-Fernández (2021, "Temporal parallelization of Bayesian
smoothers") and dynamax's parallel HMM, with blocks as leaves:

1. Block transfer matrices ``M_b = G_s ... G_e`` (``G_t[i, j] = A_ij b_t(j)``; the first step
   of a sequence has every row ``pi_j b_0(j)``; a padded step is the identity), all blocks
   at once in ``L`` vectorised steps. Each emission is shifted by its maximum over states
   and the rows are renormalised every few steps, their logs kept aside, so the products
   stay in range; a row that nevertheless falls below ``sqrt(tiny)`` sends the whole call to
   the exact sequential code (see ``_FALLBACK``).
2. Over the blocks, a prefix scan (filtering) and a suffix scan (smoothing) of the log
   transfer matrices, by recursive pairing: O(log B) sequential depth, and every product
   a log-sum-exp-stable matrix product (each row shifted by its own maximum), so no row
   underflows there. This stage alone gives the log-likelihood (differentiable: NUTS).
3. With the exact filtered distribution entering each block and the scaled backward message
   leaving it, the usual scaled forward and backward recursions run inside all blocks at
   once (``L`` vectorised steps); they give the marginals and the expected counts.

Viterbi is the same in the max-plus semiring, with back-pointers kept per block and start
state, and the block-level back-tracking done by pointer doubling (O(log B) depth).

Cost: O(T K^3 / threads) arithmetic, O(L + log(T / L)) Python steps, memory linear in T.
"""

from __future__ import annotations

import math

import torch

__all__ = ["block_length", "use_parallel", "log_likelihood", "forward_backward", "viterbi",
           "sample_posterior"]

#: Raised internally when a block product lost its precision; callers use the sequential code.
class _FALLBACK(Exception):
    pass


def block_length(num_steps: int) -> int:
    """Steps per block: about 0.6 sqrt(T), between 8 and 256 (measured on one CPU thread:
    the block products cost the same for any length, longer blocks mean fewer of them in
    the log-space scans but more vectorised steps inside)."""
    return int(min(256, max(8, round(0.6 * math.sqrt(num_steps)))))


def use_parallel(num_sequences: int, num_steps: int, num_states: int) -> bool:
    """Whether the time-parallel path is faster than the sequential one for this shape.

    The sequential recursion costs a few Python-level operations per time step, amortised
    over the sequences that share the step; it wins when many sequences do (the (K, K) x
    (K, N) product of each step is then large) or when the sequences are short.
    """
    return num_steps >= 128 and num_sequences * num_states * num_states <= 4096


# ------------------------------------------------------------------------ helpers
def _blocks(x: torch.Tensor, mask: torch.Tensor, length: int):
    """(*P, N, T, K) -> (*P, N, B, L, K) and mask (N, T) -> (N, B, L), padding T up."""
    num_steps = x.shape[-2]
    num_blocks = -(-num_steps // length)
    pad = num_blocks * length - num_steps
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    x = x.reshape(*x.shape[:-2], num_blocks, length, x.shape[-1])
    return x, mask.reshape(mask.shape[0], num_blocks, length)


def _right_mul(m: torch.Tensor, trans: torch.Tensor, lead: int) -> torch.Tensor:
    """m (*P, ..., K, K) @ trans (*P, K, K) as one (batched) GEMM."""
    k = m.shape[-1]
    if lead == 0:
        return m @ trans
    flat = m.reshape(*m.shape[:lead], -1, k)
    return (flat @ trans).reshape(m.shape)


def _log(x: torch.Tensor) -> torch.Tensor:
    """log x; where gradients flow, zeros become log(tiny) so that their gradient is 0, not
    NaN (their weight, at most tiny relative to their row's largest entry, is negligible)."""
    if x.requires_grad:
        return x.clamp_min(torch.finfo(x.dtype).tiny).log()
    return x.log()


def _finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _log_matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(exp(x) @ exp(y)) for log matrices (..., K, K), stable: each row of the result is
    computed relative to its own largest term, so no row underflows."""
    my = _finite_or_zero(y.amax(-1, keepdim=True)).detach()  # (..., K, 1)
    w = x + my.transpose(-1, -2)
    mx = _finite_or_zero(w.amax(-1, keepdim=True)).detach()
    return _log((w - mx).exp() @ (y - my).exp()) + mx


def _vec_mat(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """log(exp(f) @ exp(m)) for log vectors f (..., K) and log matrices m (..., K, K)."""
    return torch.logsumexp(f.unsqueeze(-1) + m, -2)


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    """Positions 0, 2, 4, ... from ``even`` and 1, 3, ... from ``odd`` along dim -2."""
    n_odd = odd.shape[-2]
    both = torch.stack([even[..., :n_odd, :], odd], -2).flatten(-3, -2)
    if even.shape[-2] > n_odd:
        both = torch.cat([both, even[..., n_odd:, :]], -2)
    return both


def _prefix(f0: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """f_b = f0 (x) m_0 (x) ... (x) m_b in log space for b < n: (..., n, K), by recursive
    pairing (depth log2 n)."""
    n = m.shape[-3]
    if n == 1:
        return _vec_mat(f0, m[..., 0, :, :]).unsqueeze(-2)
    half = n // 2
    pairs = _log_matmul(m[..., 0:2 * half:2, :, :], m[..., 1:2 * half:2, :, :])
    odd = _prefix(f0, pairs)  # f_1, f_3, ...
    prev = torch.cat([f0.unsqueeze(-2), odd[..., :n - half - 1, :]], -2)  # f_-1, f_1, ...
    even = _vec_mat(prev, m[..., 0::2, :, :])
    return _interleave(even, odd)


def _suffix(m: torch.Tensor) -> torch.Tensor:
    """g_b = log(m_{b+1} ... m_{n-1} 1) for b < n (g_{n-1} = 0): (..., n, K)."""
    n = m.shape[-3]
    zeros = torch.zeros(m.shape[:-3] + m.shape[-1:], dtype=m.dtype, device=m.device)
    if n == 1:
        return zeros.unsqueeze(-2)
    rev = m.flip(-3).transpose(-1, -2)[..., :-1, :, :]
    h = _prefix(zeros, rev)  # h_j = g_{n-2-j}
    return torch.cat([h.flip(-2), zeros.unsqueeze(-2)], -2)


# ------------------------------------------------------------- stage 1: blocks
def _state_major(log_b: torch.Tensor, mask: torch.Tensor, length: int):
    """Blocked, state-major emission factors: b (*P, L, K, N*B) = exp(log_b - shift) with
    the shift (*P, L, 1, N*B) (0 and b = 1 at padded steps), the step mask (L, 1, N*B),
    and per step whether some block is padded there."""
    lb, m = _blocks(log_b, mask, length)  # (*P, N, B, L, K), (N, B, L)
    lead = lb.dim() - 4
    n, num_blocks = m.shape[:2]
    perm = tuple(range(lead)) + (lead + 2, lead + 3, lead, lead + 1)
    lbt = lb.permute(perm).reshape(*lb.shape[:lead], length, lb.shape[-1], n * num_blocks)
    step_mask = m.permute(2, 0, 1).reshape(length, 1, n * num_blocks)
    partial = (~step_mask.all(-1).squeeze(-1)).tolist()
    if any(partial):
        lbt = torch.where(step_mask, lbt, torch.zeros((), dtype=lbt.dtype, device=lbt.device))
    shift = _finite_or_zero(lbt.amax(-2, keepdim=True)).detach()
    return (lbt - shift).exp(), shift, step_mask, partial


def _block_matrices(b: torch.Tensor, shift: torch.Tensor, step_mask: torch.Tensor,
                    partial: list[bool], init: torch.Tensor, trans: torch.Tensor,
                    num_sequences: int) -> torch.Tensor:
    """Log transfer matrices of every block: (*P, N, B, K, K). Raises _FALLBACK when a row
    lost its precision (the sequential code then handles the call exactly).

    The products are kept transposed and state-major, (*P, K_to, K_from, N*B), so that each
    step is one (K, K) @ (K, K * N*B) product and a multiplication along contiguous rows.
    """
    lead = trans.dim() - 2
    length, k, nb = b.shape[-3:]
    num_blocks = nb // num_sequences
    eye = torch.eye(k, dtype=b.dtype, device=b.device).unsqueeze(-1)  # (K, K, 1)
    first = torch.zeros(num_sequences, num_blocks, dtype=torch.bool, device=b.device)
    first[:, 0] = True
    first = first.reshape(nb)
    trans_t = trans.transpose(-1, -2)  # (*P, K_to, K_from)
    # Step 0: a transition from the previous block, or the initial distribution (every row).
    start = torch.where(first, init[..., :, None, None], trans_t.unsqueeze(-1))
    mat = start * b[..., 0, :, :].unsqueeze(-2)  # (*P, K_to, K_from, NB)
    if partial[0]:
        mat = torch.where(step_mask[0], mat, eye)
    # Padded steps exist only in a few blocks (each sequence's last ones): select them.
    padded = (~step_mask.all(0).squeeze(0)).nonzero().squeeze(-1) if any(partial) else None
    rho = torch.zeros(mat.shape[:-3] + (k, nb), dtype=b.dtype, device=b.device)  # rows
    floor = math.sqrt(torch.finfo(b.dtype).tiny)
    every = 8 if b.dtype == torch.float64 else 2
    low = torch.zeros((), dtype=torch.bool, device=b.device)
    for step in range(1, length + 1):
        if step == length or step % every == 0:  # renormalise each row (start state)
            s = mat.sum(-3).clamp_min(0)  # (*P, K_from, NB)
            low = low | (s < floor).any()
            s = s.clamp_min(floor)
            mat = mat / s.unsqueeze(-3)
            rho = rho + s.log()
        if step == length:
            break
        flat = mat.reshape(*mat.shape[:-3], k, k * nb)
        new = (trans_t @ flat).view(mat.shape) * b[..., step, :, :].unsqueeze(-2)
        if partial[step]:
            keep = step_mask[step][..., padded]  # (1, P): real step in that padded block
            new[..., padded] = torch.where(keep, new[..., padded], mat[..., padded])
        mat = new
    if bool(low):
        raise _FALLBACK
    total_shift = shift.squeeze(-2).sum(-2)  # (*P, NB)
    log_m = _log(mat) + (rho + total_shift.unsqueeze(-2)).unsqueeze(-3)  # (*P, Kt, Kf, NB)
    # -> (*P, N, B, K_from, K_to)
    log_m = log_m.permute(tuple(range(lead)) + (lead + 2, lead + 1, lead))
    return log_m.reshape(*log_m.shape[:lead], num_sequences, num_blocks, k, k)


def _scans(log_m: torch.Tensor):
    """Filtering and smoothing messages at the block ends: f (..., B, K) = log p(x up to the
    block's end, z there), g = log p(x after it | z there), and the log-likelihood."""
    k = log_m.shape[-1]
    f0 = torch.full(log_m.shape[:-3] + (k,), -math.log(k), dtype=log_m.dtype,
                    device=log_m.device)
    f = _prefix(f0, log_m)
    return f, torch.logsumexp(f[..., -1, :], -1)


# ---------------------------------------------------------------- public functions
def log_likelihood(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                   mask: torch.Tensor, *, length: int | None = None) -> torch.Tensor:
    """Log-likelihood of each sequence, (*P, N); differentiable. Raises _FALLBACK."""
    length = length or block_length(log_b.shape[-2])
    b, shift, step_mask, partial = _state_major(log_b, mask, length)
    log_m = _block_matrices(b, shift, step_mask, partial, init, trans, mask.shape[0])
    return _scans(log_m)[1]


def _filter_blocks(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                   mask: torch.Tensor, length: int) -> dict:
    """Stages 1-2 and the forward half of stage 3: the normalised filtered distributions
    ``alphas`` (L, K, N*B) and their normalisers ``norms`` (L, 1, N*B) of every step, with
    what the backward half needs. Raises _FALLBACK."""
    n, _, k = log_b.shape
    b, shift, step_mask, partial = _state_major(log_b, mask, length)  # (L, K, NB)
    log_m = _block_matrices(b, shift, step_mask, partial, init, trans, n)  # (N, B, K, K)
    f, log_lik = _scans(log_m)
    num_blocks = log_m.shape[1]
    big_f = torch.logsumexp(f, -1, keepdim=True)  # (N, B, 1) log p(x up to block end)
    # Filtered distribution entering each block (after the previous block's end).
    alpha_in = (f - big_f).exp()  # (N, B, K); row b enters block b + 1
    nb = n * num_blocks
    prev = torch.cat([torch.zeros(n, 1, k, dtype=b.dtype, device=b.device),
                      alpha_in[:, :-1]], 1).reshape(nb, k).T  # (K, NB)
    is_first = torch.zeros(n, num_blocks, dtype=torch.bool, device=b.device)
    is_first[:, 0] = True
    is_first = is_first.reshape(1, nb)
    pred0 = torch.where(is_first, init.unsqueeze(-1), trans.T @ prev)
    tiny = torch.finfo(b.dtype).tiny
    alphas = torch.empty(length, k, nb, dtype=b.dtype, device=b.device)
    norms = torch.empty(length, 1, nb, dtype=b.dtype, device=b.device)
    trans_t = trans.T.contiguous()
    one = torch.ones((), dtype=b.dtype, device=b.device)
    for t in range(length):
        alpha = alphas[t]
        if t == 0:
            torch.mul(pred0, b[0], out=alpha)
        else:
            torch.mm(trans_t, alphas[t - 1], out=alpha).mul_(b[t])
        torch.sum(alpha, 0, keepdim=True, out=norms[t])
        if partial[t]:
            alpha.copy_(torch.where(step_mask[t], alpha, prev if t == 0 else alphas[t - 1]))
            norms[t] = torch.where(step_mask[t], norms[t], one)
        alpha.div_(norms[t].clamp_min(tiny))
    if bool((norms <= tiny).any()):  # a step underflowed: the sequential code rescues it
        raise _FALLBACK
    return {"b": b, "step_mask": step_mask, "partial": partial, "alphas": alphas,
            "norms": norms, "prev": prev, "is_first": is_first, "log_m": log_m, "f": f,
            "big_f": big_f, "log_lik": log_lik}


def sample_posterior(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor, generator: torch.Generator | None, *,
                     length: int | None = None) -> torch.Tensor:
    """As :func:`ppgen.models.sequence.ops.sample_posterior`: one draw of the state paths
    from p(z | x), (N, T), -1 at padded steps. Raises _FALLBACK.

    Forward filtering as above; the backward sampling pass is made parallel too: for every
    step t and every next state j a previous state is drawn from p(z_t | z_t+1 = j, x_<=t)
    (Gumbel-max, all at once), and these maps are composed by pointer doubling.
    """
    n, num_steps, k = log_b.shape
    length = length or block_length(num_steps)
    with torch.no_grad():
        fw = _filter_blocks(log_b, init, trans, mask, length)
        num_blocks = fw["log_m"].shape[1]
        alphas = fw["alphas"].reshape(length, k, n, num_blocks).permute(2, 3, 0, 1).reshape(
            n, num_blocks * length, k)[:, :num_steps]  # (N, T, K)
        last = torch.multinomial(alphas[:, -1], 1, generator=generator).squeeze(-1)
        if num_steps == 1:
            return last.unsqueeze(-1).masked_fill(~mask, -1)
        # scores[n, t, i, j] = log alpha_t(i) + log A_ij + Gumbel noise, for t < T - 1.
        u = torch.rand(n, num_steps - 1, k, k, generator=generator, dtype=alphas.dtype,
                       device=alphas.device)
        gumbel = -(-u.clamp_min(torch.finfo(u.dtype).tiny).log()).log()
        scores = alphas[:, :-1].log().unsqueeze(-1) + trans.log() + gumbel
        back = scores.argmax(-2)  # (N, T-1, K): state at t given state j at t+1
        stay = torch.arange(k, device=back.device).expand_as(back)
        back = torch.where(mask[:, 1:].unsqueeze(-1), back, stay)  # padded: carry
        ident = torch.arange(k, device=back.device).expand(n, 1, k)
        comp = torch.cat([back, ident], 1)  # comp[t] maps z_{t+1} to z_t; T-1: identity
        span = 1
        while span < num_steps:
            later = torch.cat([comp[:, span:], ident.expand(n, min(span, num_steps), k)], 1)
            comp = comp.gather(-1, later[:, :num_steps])
            span *= 2
        path = comp.gather(-1, last.view(n, 1, 1).expand(n, num_steps, 1)).squeeze(-1)
        return path.masked_fill(~mask, -1)


def _block_backward(trans, alphas, norms, b, step_mask, partial, prev, is_first, last_betas,
                    carried, betas, *, guard: bool) -> torch.Tensor:
    """The scaled backward pass inside every block at once, from each block's end message
    ``last_betas``; fills ``carried`` and ``betas`` and returns the transition pairs (K, K),
    those into each block's first step included. With ``guard``, states the chain cannot be
    in (alpha = 0) carry 0, which keeps the messages finite (as ops._backward)."""
    length = b.shape[0]
    betas[-1] = last_betas.masked_fill(alphas[-1] == 0, 0.0) if guard else last_betas
    for t in range(length - 1, -1, -1):
        c = carried[t]
        torch.mul(b[t], betas[t], out=c).div_(norms[t])
        if guard:
            c.masked_fill_(alphas[t] == 0, 0.0)
        if partial[t]:
            c.masked_fill_(~step_mask[t], 0.0)
        if t > 0:
            if partial[t]:
                betas[t - 1] = torch.where(step_mask[t], trans @ c, betas[t])
            else:
                torch.mm(trans, c, out=betas[t - 1])
    pairs = torch.bmm(alphas[:-1], carried[1:].transpose(1, 2)).sum(0) if length > 1 \
        else torch.zeros_like(trans)
    # Transitions into each block's first step from the previous block's last one.
    into = carried[0].masked_fill(is_first, 0.0)
    return pairs + prev @ into.T


def forward_backward(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor, *, length: int | None = None
                     ) -> dict[str, torch.Tensor]:
    """As :func:`ppgen.models.sequence.ops.forward_backward` (no parameter batch
    dimensions). Raises _FALLBACK."""
    n, num_steps, k = log_b.shape
    length = length or block_length(num_steps)
    with torch.no_grad():
        fw = _filter_blocks(log_b, init, trans, mask, length)
        b, step_mask, partial, alphas, norms, prev, is_first = (
            fw[name] for name in ("b", "step_mask", "partial", "alphas", "norms", "prev",
                                  "is_first"))
        log_m, big_f, log_lik = fw["log_m"], fw["big_f"], fw["log_lik"]
        num_blocks = log_m.shape[1]
        nb = n * num_blocks
        # The scaled backward message at each block's end (beta-hat of the scaled recursion).
        g = _suffix(log_m)
        beta_out = (g + big_f - log_lik[:, None, None]).exp()
        carried = torch.empty_like(alphas)
        betas = torch.empty_like(alphas)
        pairs = _block_backward(trans, alphas, norms, b, step_mask, partial, prev, is_first,
                                beta_out.reshape(nb, k).T, carried, betas, guard=False)
        if not all(bool(torch.isfinite(x).all()) for x in (pairs, betas[0], beta_out)):
            # rare: a likely frame of a state the chain cannot be in (see ops._backward)
            pairs = _block_backward(trans, alphas, norms, b, step_mask, partial, prev,
                                    is_first, beta_out.reshape(nb, k).T, carried, betas,
                                    guard=True)
        gamma = betas.mul_(alphas)
        if any(partial):
            gamma.mul_(step_mask)
        gamma = gamma.reshape(length, k, n, num_blocks).permute(2, 3, 0, 1).reshape(
            n, num_blocks * length, k)[:, :num_steps]
        return {"log_lik": log_lik, "gamma": gamma, "trans_counts": trans * pairs,
                "start_counts": gamma[:, 0].sum(0)}


def viterbi(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
            mask: torch.Tensor, *, length: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`ppgen.models.sequence.ops.viterbi`: paths (N, T) (-1 at padded steps) and
    their log-probabilities (N,)."""
    n, num_steps, k = log_b.shape
    length = length or block_length(num_steps)
    with torch.no_grad():
        lb, m = _blocks(log_b, mask, length)  # (N, B, L, K)
        num_blocks = m.shape[1]
        log_a = trans.log()
        neg = torch.full((), -math.inf, dtype=lb.dtype, device=lb.device)
        log_eye = torch.where(torch.eye(k, dtype=torch.bool, device=lb.device),
                              torch.zeros((), dtype=lb.dtype, device=lb.device), neg)
        first = torch.zeros(num_blocks, 1, 1, dtype=torch.bool, device=lb.device)
        first[0] = True
        # delta[n, b, i, j]: best score from entering state i to state j at this step.
        delta = torch.where(first, init.log().view(1, 1, 1, k), log_a) + lb[:, :, 0, None, :]
        delta = torch.where(m[:, :, 0, None, None], delta, log_eye)
        ptr_type = torch.uint8 if k <= 255 else torch.int64
        pointers = torch.empty(n, num_blocks, length, k, k, dtype=ptr_type, device=lb.device)
        stay = torch.arange(k, device=lb.device).to(ptr_type).expand(k, k)
        for t in range(1, length):
            best, arg = (delta.unsqueeze(-1) + log_a).max(-2)
            valid = m[:, :, t, None, None]
            delta = torch.where(valid, best + lb[:, :, t, None, :], delta)
            pointers[:, :, t] = torch.where(valid, arg.to(ptr_type), stay)
        # Block level: best scores at the block ends (max-plus prefix scan).
        f0 = torch.zeros(n, k, dtype=lb.dtype, device=lb.device)
        v = _maxplus_prefix(f0, delta)  # (N, B, K)
        score, last = v[:, -1].max(-1)
        # phi_b(j): the best state at block b-1's end given state j at block b's end.
        prev_v = torch.cat([f0.unsqueeze(1), v[:, :-1]], 1)
        phi = (prev_v.unsqueeze(-1) + delta).argmax(-2)  # (N, B, K)
        ends = _follow(phi, last)  # (N, B): state at each block's end
        enter = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=lb.device),
                           ends[:, :-1]], 1)
        # Inside the blocks, all at once: back-pointers of each block's entering state.
        rows = pointers.gather(3, enter.view(n, num_blocks, 1, 1, 1).expand(
            n, num_blocks, length, 1, k)).squeeze(3).long()  # (N, B, L, K)
        path = torch.empty(n, num_blocks, length, dtype=torch.long, device=lb.device)
        state = ends
        for t in range(length - 1, -1, -1):
            path[:, :, t] = state
            if t:
                state = rows[:, :, t].gather(-1, state.unsqueeze(-1)).squeeze(-1)
        path = path.reshape(n, num_blocks * length)[:, :num_steps]
        return path.masked_fill(~mask, -1), score


def _maxplus_prefix(f0: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """v_b = f0 (max,+) m_0 ... m_b: (..., n, K), by recursive pairing."""
    n = m.shape[-3]
    if n == 1:
        return (f0.unsqueeze(-1) + m[..., 0, :, :]).amax(-2).unsqueeze(-2)
    half = n // 2
    left, right = m[..., 0:2 * half:2, :, :], m[..., 1:2 * half:2, :, :]
    pairs = (left.unsqueeze(-1) + right.unsqueeze(-3)).amax(-2)
    odd = _maxplus_prefix(f0, pairs)
    prev = torch.cat([f0.unsqueeze(-2), odd[..., :n - half - 1, :]], -2)
    even = (prev.unsqueeze(-1) + m[..., 0::2, :, :]).amax(-2)
    return _interleave(even, odd)


def _follow(phi: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """States at every block end: s_{B-1} = last, s_{b-1} = phi_b(s_b); by pointer doubling.

    phi (N, B, K) maps the state at block b's end to the state at block b-1's end.
    """
    n, num_blocks, k = phi.shape
    ident = torch.arange(k, device=phi.device).expand(n, 1, k)
    # comp[b] maps the state at the last block's end to the state at block b's end.
    comp = torch.cat([phi[:, 1:], ident], 1)  # one step back (b <- b+1); identity at the end
    span = 1
    while span < num_blocks:
        later = torch.cat([comp[:, span:], ident.expand(n, span, k)], 1)
        comp = comp.gather(-1, later) if span < num_blocks else comp
        span *= 2
    return comp.gather(-1, last.view(n, 1, 1).expand(n, num_blocks, 1)).squeeze(-1)
