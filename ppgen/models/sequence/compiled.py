"""Compiled forward–backward, log-likelihood and Viterbi for CPU tensors without gradients
(pure functions; the shapes and conventions of :mod:`ppgen.models.sequence.ops`).

The torch recursions of ``ops`` and ``parallel`` pay a few Python-level operations per time
step (or per block), which is cheap only when many sequences share the step. EM, ``predict``,
``predict_proba`` and ``log_prob`` need no gradients, so on the CPU they can run the plain
recursions as machine code instead: these kernels, compiled by numba on first use (and cached
on disk), take O(T K^2) arithmetic per sequence and no Python per step, for one long sequence
as for many short ones. Anything that needs gradients (SVI, NUTS) or runs on a GPU keeps the
torch code.

The numerics are those of ``ops``: Rabiner's scaled recursion with every emission shifted by
its maximum over states before exponentiating; a step whose forward vector underflows is
redone with the shift taken over the states the chain can reach, so the result stays exact;
padded steps (``mask`` False) carry the state forward, emit nothing and add zero to every
statistic. Viterbi runs in log space. Results equal the torch code's to round-off (tests).

If numba cannot be imported, :data:`AVAILABLE` is False and ``ops`` uses the torch code.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import torch

#: Whether numba can be imported (it is imported, and the kernels compiled, on first use).
AVAILABLE = importlib.util.find_spec("numba") is not None

__all__ = ["AVAILABLE", "MAX_STATES", "usable", "preferred", "forward_backward",
           "forward_log_prob", "viterbi"]


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels can take these tensors: numba is there, every tensor is
    a float32/float64 CPU tensor of one dtype, and no gradient is wanted through them."""
    if not AVAILABLE:
        return False
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    grad = torch.is_grad_enabled()
    return all(t.device.type == "cpu" and t.dtype == dtype and not (grad and t.requires_grad)
               for t in tensors)


def preferred(num_sequences: int, num_steps: int, num_states: int) -> bool:
    """Whether the compiled kernels beat the torch code for this shape (when both can run).

    The kernels cost O(N T K^2) scalar arithmetic; the torch recursion does the same work as
    one (K, K) x (K, N) matrix product per step, which BLAS does faster once K is large.
    """
    return num_states <= MAX_STATES


#: Largest number of states for which ``algorithm="auto"`` picks the compiled kernels.
MAX_STATES = 16


# ------------------------------------------------------------------------ kernels
def _forward_kernel(log_b, init, trans, mask, tiny, alphas, norms, shifts, b):
    """Scaled forward pass of every sequence. Fills ``alphas`` (N, T, K) with the filtered
    distributions, ``norms`` (N, T) with the normalisers (1 at padded steps), ``shifts``
    (N, T) with the emission shifts (each step's maximum over states; 0 at padded steps) and
    ``b`` (N, T, K) with the shifted emission probabilities (1 at padded steps); returns the
    log-likelihoods (N,)."""
    n, num_steps, k = log_b.shape
    log_lik = np.zeros(n, dtype=log_b.dtype)
    pred = np.empty(k, dtype=log_b.dtype)
    for s in range(n):
        total = 0.0
        prod = 1.0  # product of the normalisers since the last log (one log per ~600 steps)
        for t in range(num_steps):
            if not mask[s, t]:  # padded: carry the state forward, emit nothing
                for j in range(k):
                    b[s, t, j] = 1.0
                    alphas[s, t, j] = alphas[s, t - 1, j] if t > 0 else init[j]
                norms[s, t] = 1.0
                shifts[s, t] = 0.0
                continue
            if t == 0:
                for j in range(k):
                    pred[j] = init[j]
            else:
                for j in range(k):
                    pred[j] = 0.0
                for i in range(k):
                    a = alphas[s, t - 1, i]
                    for j in range(k):
                        pred[j] += a * trans[i, j]
            shift = -np.inf
            for j in range(k):
                if log_b[s, t, j] > shift:
                    shift = log_b[s, t, j]
            if not np.isfinite(shift):
                shift = 0.0
            c = 0.0
            for j in range(k):
                e = math.exp(log_b[s, t, j] - shift)
                b[s, t, j] = e
                v = pred[j] * e
                alphas[s, t, j] = v
                c += v
            if c <= tiny:  # rare: shift by the best state the chain can reach
                shift = -np.inf
                for j in range(k):
                    if pred[j] > 0.0 and log_b[s, t, j] > shift:
                        shift = log_b[s, t, j]
                if not np.isfinite(shift):
                    shift = 0.0
                c = 0.0
                for j in range(k):
                    e = math.exp(log_b[s, t, j] - shift) if pred[j] > 0.0 else 0.0
                    b[s, t, j] = e
                    alphas[s, t, j] = pred[j] * e
                    c += pred[j] * e
            norms[s, t] = c
            shifts[s, t] = shift
            inv = 1.0 / max(c, tiny)
            for j in range(k):
                alphas[s, t, j] *= inv
            total += shift
            prod *= c
            if prod < 1e-250 or prod > 1e250:
                total += math.log(prod)
                prod = 1.0
        log_lik[s] = total + math.log(prod)
    return log_lik


def _backward_kernel(trans, mask, tiny, alphas, norms, b, gamma, pairs, start):
    """Scaled backward pass: fills ``gamma`` (N, T, K) with the state marginals (0 at padded
    steps) and accumulates the expected transition pairs (before the elementwise product
    with ``trans``) into ``pairs`` (K, K) and the first-step marginals into ``start`` (K,)."""
    n, num_steps, k = b.shape
    beta = np.empty(k, dtype=b.dtype)
    carried = np.empty(k, dtype=b.dtype)
    for s in range(n):
        for j in range(k):
            beta[j] = 1.0
        for t in range(num_steps - 1, -1, -1):
            if mask[s, t]:
                for j in range(k):
                    gamma[s, t, j] = alphas[s, t, j] * beta[j]
            else:
                for j in range(k):
                    gamma[s, t, j] = 0.0
            if t == 0:
                break
            if not mask[s, t]:
                continue  # beta_{t-1} = beta_t
            inv = 1.0 / max(norms[s, t], tiny)
            for j in range(k):
                carried[j] = b[s, t, j] * beta[j] * inv
            for i in range(k):
                a = alphas[s, t - 1, i]
                acc = 0.0
                for j in range(k):
                    acc += trans[i, j] * carried[j]
                    pairs[i, j] += a * carried[j]
                beta[i] = acc
        for j in range(k):
            start[j] += gamma[s, 0, j]


def _viterbi_kernel(log_b, log_init, log_trans, mask, path, score):
    """Max-plus recursion with back-pointers per sequence; fills ``path`` (N, T) (-1 at
    padded steps) and ``score`` (N,)."""
    n, num_steps, k = log_b.shape
    delta = np.empty(k, dtype=log_b.dtype)
    new = np.empty(k, dtype=log_b.dtype)
    back = np.empty((num_steps, k), dtype=np.int64)
    for s in range(n):
        for j in range(k):
            delta[j] = log_init[j] + log_b[s, 0, j]
            back[0, j] = j
        for t in range(1, num_steps):
            if not mask[s, t]:
                for j in range(k):
                    back[t, j] = j
                continue
            for j in range(k):
                best = -np.inf
                arg = 0
                for i in range(k):
                    v = delta[i] + log_trans[i, j]
                    if v > best:
                        best = v
                        arg = i
                new[j] = best + log_b[s, t, j]
                back[t, j] = arg
            for j in range(k):
                delta[j] = new[j]
        state = 0
        best = -np.inf
        for j in range(k):
            if delta[j] > best:
                best = delta[j]
                state = j
        score[s] = best
        for t in range(num_steps - 1, -1, -1):
            path[s, t] = state if mask[s, t] else -1
            state = back[t, state]


@functools.cache
def _kernels():
    """The three kernels, compiled by numba (cached on disk, so later processes load them)."""
    import numba

    jit = numba.njit(cache=True, nogil=True)
    return jit(_forward_kernel), jit(_backward_kernel), jit(_viterbi_kernel)


# ------------------------------------------------------------------------ wrappers
def _arrays(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor):
    lb = np.ascontiguousarray(log_b.detach().numpy())
    return (lb, np.ascontiguousarray(init.detach().numpy()),
            np.ascontiguousarray(trans.detach().numpy()),
            np.ascontiguousarray(mask.numpy()))


def _forward_arrays(lb, pi, a, m):
    n, num_steps, k = lb.shape
    alphas = np.empty_like(lb)
    norms = np.empty((n, num_steps), dtype=lb.dtype)
    shifts = np.empty((n, num_steps), dtype=lb.dtype)
    b = np.empty_like(lb)
    log_lik = _kernels()[0](lb, pi, a, m, float(np.finfo(lb.dtype).tiny), alphas, norms, shifts, b)
    return log_lik, alphas, norms, b


def forward_log_prob(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """log p(x_n) of every sequence (N,); ``log_b`` (N, T, K) without parameter batch dims."""
    lb, pi, a, m = _arrays(log_b, init, trans, mask)
    return torch.from_numpy(_forward_arrays(lb, pi, a, m)[0])


def forward_backward(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics of :func:`ppgen.models.sequence.ops.forward_backward`."""
    lb, pi, a, m = _arrays(log_b, init, trans, mask)
    log_lik, alphas, norms, b = _forward_arrays(lb, pi, a, m)
    k = lb.shape[-1]
    gamma = np.empty_like(lb)
    pairs = np.zeros((k, k), dtype=lb.dtype)
    start = np.zeros(k, dtype=lb.dtype)
    _kernels()[1](a, m, float(np.finfo(lb.dtype).tiny), alphas, norms, b, gamma, pairs, start)
    return {"log_lik": torch.from_numpy(log_lik), "gamma": torch.from_numpy(gamma),
            "trans_counts": torch.from_numpy(a * pairs), "start_counts": torch.from_numpy(start)}


def viterbi(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable paths (N, T) (-1 at padded steps) and their log-probabilities (N,)."""
    lb, pi, a, m = _arrays(log_b, init, trans, mask)
    n, num_steps, _ = lb.shape
    path = np.empty((n, num_steps), dtype=np.int64)
    score = np.empty(n, dtype=lb.dtype)
    with np.errstate(divide="ignore"):
        _kernels()[2](lb, np.log(pi), np.log(a), m, path, score)
    return torch.from_numpy(path), torch.from_numpy(score)
