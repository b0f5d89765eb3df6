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
    """Scaled forward pass of every sequence. Arrays are time-major: ``log_b`` (T, N, K),
    ``mask`` (T, N). Fills ``alphas`` (T, N, K) with the filtered distributions, ``norms``
    (T, N) with the normalisers (1 at padded steps), ``shifts`` (T, N) with the emission
    shifts (each step's maximum over states; 0 at padded steps) and ``b`` (T, N, K) with the
    shifted emission probabilities (1 at padded steps); returns the log-likelihoods (N,)."""
    num_steps, n, k = log_b.shape
    # All sequences advance together, one time step at a time, so memory is read and
    # written in order (one pass over each array, which matters once they outgrow the cache).
    total = np.zeros(n, dtype=np.float64)
    prod = np.ones(n, dtype=np.float64)  # normalisers since the last log (one log per ~600)
    pred = np.empty(k, dtype=log_b.dtype)
    for t in range(num_steps):
        for s in range(n):
            if not mask[t, s]:  # padded: carry the state forward, emit nothing
                for j in range(k):
                    b[t, s, j] = 1.0
                    alphas[t, s, j] = alphas[t - 1, s, j] if t > 0 else init[j]
                norms[t, s] = 1.0
                shifts[t, s] = 0.0
                continue
            if t == 0:
                for j in range(k):
                    pred[j] = init[j]
            else:
                for j in range(k):
                    pred[j] = 0.0
                for i in range(k):
                    a = alphas[t - 1, s, i]
                    for j in range(k):
                        pred[j] += a * trans[i, j]
            shift = -np.inf
            for j in range(k):
                if log_b[t, s, j] > shift:
                    shift = log_b[t, s, j]
            if not np.isfinite(shift):
                shift = 0.0
            c = 0.0
            for j in range(k):
                e = math.exp(log_b[t, s, j] - shift)
                b[t, s, j] = e
                v = pred[j] * e
                alphas[t, s, j] = v
                c += v
            if c <= tiny:  # rare: shift by the best state the chain can reach
                shift = -np.inf
                for j in range(k):
                    if pred[j] > 0.0 and log_b[t, s, j] > shift:
                        shift = log_b[t, s, j]
                if not np.isfinite(shift):
                    shift = 0.0
                c = 0.0
                for j in range(k):
                    e = math.exp(log_b[t, s, j] - shift) if pred[j] > 0.0 else 0.0
                    b[t, s, j] = e
                    alphas[t, s, j] = pred[j] * e
                    c += pred[j] * e
            norms[t, s] = c
            shifts[t, s] = shift
            inv = 1.0 / max(c, tiny)
            for j in range(k):
                alphas[t, s, j] *= inv
            total[s] += shift
            prod[s] *= c
            if prod[s] < 1e-250 or prod[s] > 1e250:
                total[s] += math.log(prod[s])
                prod[s] = 1.0
    log_lik = np.empty(n, dtype=log_b.dtype)
    for s in range(n):
        log_lik[s] = total[s] + math.log(prod[s])
    return log_lik


def _backward_kernel(trans, mask, tiny, alphas, norms, b, gamma, pairs, start):
    """Scaled backward pass (time-major arrays): fills ``gamma`` (T, N, K) with the state
    marginals (0 at padded steps; it may be ``alphas`` itself) and accumulates the expected
    transition pairs (before the elementwise product with ``trans``) into ``pairs`` (K, K)
    and the first-step marginals into ``start`` (K,)."""
    num_steps, n, k = b.shape
    beta = np.ones((n, k), dtype=b.dtype)  # all sequences step back together (see forward)
    carried = np.empty(k, dtype=b.dtype)
    for t in range(num_steps - 1, -1, -1):
        for s in range(n):
            if mask[t, s]:
                for j in range(k):
                    gamma[t, s, j] = alphas[t, s, j] * beta[s, j]
            else:
                for j in range(k):
                    gamma[t, s, j] = 0.0
            if t == 0 or not mask[t, s]:
                continue  # at a padded step beta_{t-1} = beta_t
            inv = 1.0 / max(norms[t, s], tiny)
            for j in range(k):
                carried[j] = b[t, s, j] * beta[s, j] * inv
            for i in range(k):
                a = alphas[t - 1, s, i]
                acc = 0.0
                for j in range(k):
                    acc += trans[i, j] * carried[j]
                    pairs[i, j] += a * carried[j]
                beta[s, i] = acc
    for s in range(n):
        for j in range(k):
            start[j] += gamma[0, s, j]


def _viterbi_kernel(log_b, log_init, log_trans, mask, path, score):
    """Max-plus recursion with back-pointers per sequence (time-major arrays); fills
    ``path`` (T, N) (-1 at padded steps) and ``score`` (N,)."""
    num_steps, n, k = log_b.shape
    delta = np.empty(k, dtype=log_b.dtype)
    new = np.empty(k, dtype=log_b.dtype)
    back = np.empty((num_steps, k), dtype=np.int64)
    for s in range(n):
        for j in range(k):
            delta[j] = log_init[j] + log_b[0, s, j]
            back[0, j] = j
        for t in range(1, num_steps):
            if not mask[t, s]:
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
                new[j] = best + log_b[t, s, j]
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
            path[t, s] = state if mask[t, s] else -1
            state = back[t, state]


@functools.cache
def _kernels():
    """The three kernels, compiled by numba (cached on disk, so later processes load them)."""
    import numba

    jit = numba.njit(cache=True, nogil=True)
    return jit(_forward_kernel), jit(_backward_kernel), jit(_viterbi_kernel)


# ------------------------------------------------------------------------ wrappers
def _arrays(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor):
    """Time-major NumPy views (copies only where the layout needs one): ``log_b`` (N, T, K)
    is usually a transposed view of a time-major tensor, which then costs nothing."""
    lb = np.ascontiguousarray(log_b.detach().transpose(0, 1).numpy())
    return (lb, np.ascontiguousarray(init.detach().numpy()),
            np.ascontiguousarray(trans.detach().numpy()),
            np.ascontiguousarray(mask.T.numpy()))


def _forward_arrays(lb, pi, a, m):
    alphas = np.empty_like(lb)
    norms = np.empty(lb.shape[:2], dtype=lb.dtype)
    shifts = np.empty(lb.shape[:2], dtype=lb.dtype)
    b = np.empty_like(lb)
    log_lik = _kernels()[0](lb, pi, a, m, float(np.finfo(lb.dtype).tiny), alphas, norms,
                            shifts, b)
    return log_lik, alphas, norms, b


def forward_log_prob(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """log p(x_n) of every sequence (N,); ``log_b`` (N, T, K) without parameter batch dims."""
    return torch.from_numpy(_forward_arrays(*_arrays(log_b, init, trans, mask))[0])


def forward_backward(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics of :func:`ppgen.models.sequence.ops.forward_backward` (``gamma`` is a
    transposed view of a time-major (T, N, K) array, as there)."""
    lb, pi, a, m = _arrays(log_b, init, trans, mask)
    log_lik, alphas, norms, b = _forward_arrays(lb, pi, a, m)
    k = lb.shape[-1]
    gamma = alphas  # overwritten in place: alpha_t is last read where gamma_t is written
    pairs = np.zeros((k, k), dtype=lb.dtype)
    start = np.zeros(k, dtype=lb.dtype)
    _kernels()[1](a, m, float(np.finfo(lb.dtype).tiny), alphas, norms, b, gamma, pairs,
                  start)
    return {"log_lik": torch.from_numpy(log_lik),
            "gamma": torch.from_numpy(gamma).transpose(0, 1),
            "trans_counts": torch.from_numpy(a * pairs), "start_counts": torch.from_numpy(start)}


def viterbi(log_b: torch.Tensor, init: torch.Tensor, trans: torch.Tensor,
            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Most probable paths (N, T) (-1 at padded steps) and their log-probabilities (N,)."""
    lb, pi, a, m = _arrays(log_b, init, trans, mask)
    path = np.empty(lb.shape[:2], dtype=np.int64)
    score = np.empty(lb.shape[1], dtype=lb.dtype)
    with np.errstate(divide="ignore"):
        _kernels()[2](lb, np.log(pi), np.log(a), m, path, score)
    return torch.from_numpy(path).T, torch.from_numpy(score)
