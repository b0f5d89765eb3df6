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

Gaussian EM has a fused E-step (:func:`gaussian_e_step`), taken automatically by
``HiddenMarkovModel.e_step`` when :func:`fused_usable` says so (Gaussian emissions of any
covariance structure, float64 CPU tensors without gradients, ``preferred`` by shape, and
:data:`FUSED_EM` True). Two compiled passes per EM iteration: (1) every frame's exact
emission log-density under every state, from its own differences to the state means (as
``log_gaussian_exact``), and the scaled forward recursion above on them, in one sweep;
(2) a backward pass that accumulates every sufficient statistic on the fly (the state
posteriors' sums, sums of gamma x and of gamma x x' (or its diagonal), expected transitions
and first-step posteriors), so that no (T, K) posterior array nor per-frame feature array is
ever materialised and the M-step reads (K, D, D) numbers. Memory: the centred frames and two
(T, N, K) arrays (forward vectors, emission factors), linear in T. Everything else (gradients, GPUs,
float32, other emissions, more than :data:`MAX_STATES` states) keeps the unfused path.

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

__all__ = ["AVAILABLE", "FUSED_EM", "MAX_STATES", "usable", "preferred", "fused_usable",
           "forward_backward", "forward_log_prob", "viterbi", "gaussian_e_step"]

#: Whether Gaussian EM may take the fused compiled E-step (set False to force the unfused
#: path, e.g. to compare the two).
FUSED_EM = True


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
            for j in range(k):  # a state the chain cannot be in carries 0 (ops._backward)
                carried[j] = b[t, s, j] * beta[s, j] * inv if alphas[t, s, j] > 0 else 0.0
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


# exp(v) for v <= 0 as straight-line arithmetic that the compiler vectorises over the
# states (numba's math.exp is a libm call per value, most of the forward pass's time):
# v = m log 2 + r with |r| <= log(2)/2 (Cody-Waite reduction), exp(r) by its Taylor
# polynomial of degree 13 (truncation below 1e-17 relative), times 2^m built from its bits
# (as two factors, so that subnormal results come out right and v below -745 gives 0).
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10


def _gaussian_forward_kernel(xt, mask, locs_t, factors_t, log_norm, full, init, trans,
                             tiny, alphas, norms, b):
    """Exact Gaussian log-densities and the scaled forward pass in one sweep (time-major).

    ``xt`` (T, N, D) centred frames, ``locs_t`` (D, K) centred means, ``factors_t``
    (D, D, K): the inverse Cholesky factors (``full``; [a, c, k] = L_k^-1[a, c]) or the
    precisions on the diagonal, ``log_norm`` (K,) the normalising constants. Each
    Mahalanobis distance is summed from its own (whitened) differences. Fills ``alphas``
    (T, N, K), ``norms`` (T, N) and ``b`` (T, N, K) as :func:`_forward_kernel` does, with
    its numerics (shift by the largest log-density; the reachable-state rescue); returns
    the log-likelihoods (N,) and the sum over real frames of the largest log-density's
    magnitude (the objective's round-off scale). The inner loops run over the K states,
    so the compiler vectorises them.
    """
    num_steps, n, d = xt.shape
    k = locs_t.shape[1]
    total = np.zeros(n, dtype=np.float64)
    prod = np.ones(n, dtype=np.float64)
    pred = np.empty(k, dtype=xt.dtype)
    lb = np.empty(k, dtype=xt.dtype)
    e = np.empty(k, dtype=xt.dtype)
    y = np.empty(k, dtype=xt.dtype)
    high = np.empty(k, dtype=np.int64)  # the bits of 2^m, as two factors (see _LOG2E)
    low = np.empty(k, dtype=np.int64)
    high_f = high.view(np.float64)
    low_f = low.view(np.float64)
    diff = np.empty((d, k), dtype=xt.dtype)
    scale = 0.0
    for t in range(num_steps):
        for s in range(n):
            if not mask[t, s]:  # padded: carry the state forward, emit nothing
                for j in range(k):
                    b[t, s, j] = 1.0
                    alphas[t, s, j] = alphas[t - 1, s, j] if t > 0 else init[j]
                norms[t, s] = 1.0
                continue
            # log-densities of the frame under every state
            for j in range(k):
                lb[j] = 0.0
            if full:
                for a in range(d):
                    xa = xt[t, s, a]
                    for j in range(k):
                        diff[a, j] = xa - locs_t[a, j]
                for a in range(d):
                    for j in range(k):
                        y[j] = 0.0
                    for c in range(a + 1):
                        for j in range(k):
                            y[j] += factors_t[a, c, j] * diff[c, j]
                    for j in range(k):
                        lb[j] += y[j] * y[j]
            else:
                for a in range(d):
                    xa = xt[t, s, a]
                    for j in range(k):
                        v = xa - locs_t[a, j]
                        lb[j] += v * v * factors_t[a, a, j]
            for j in range(k):
                lb[j] = log_norm[j] - 0.5 * lb[j]
            shift = -np.inf
            for j in range(k):
                shift = max(shift, lb[j])
            if not np.isfinite(shift):
                shift = 0.0
            scale += abs(shift)
            if t == 0:
                for j in range(k):
                    pred[j] = init[j]
            else:
                for j in range(k):
                    pred[j] = 0.0
                for i in range(k):
                    a_ = alphas[t - 1, s, i]
                    for j in range(k):
                        pred[j] += a_ * trans[i, j]
            for j in range(k):  # e = exp(lb - shift)
                v = max(lb[j] - shift, -760.0)
                m = math.floor(v * _LOG2E + 0.5)
                r = (v - m * _LN2_HI) - m * _LN2_LO
                p = 1.0 / 6227020800.0
                p = p * r + 1.0 / 479001600.0
                p = p * r + 1.0 / 39916800.0
                p = p * r + 1.0 / 3628800.0
                p = p * r + 1.0 / 362880.0
                p = p * r + 1.0 / 40320.0
                p = p * r + 1.0 / 5040.0
                p = p * r + 1.0 / 720.0
                p = p * r + 1.0 / 120.0
                p = p * r + 1.0 / 24.0
                p = p * r + 1.0 / 6.0
                p = p * r + 0.5
                p = p * r + 1.0
                p = p * r + 1.0
                mi = np.int64(m)
                m1 = max(mi, -1022)
                high[j] = (m1 + 1023) << 52
                low[j] = (mi - m1 + 1023) << 52
                e[j] = p
            c = 0.0
            for j in range(k):
                ej = e[j] * high_f[j] * low_f[j]
                b[t, s, j] = ej
                v = pred[j] * ej
                alphas[t, s, j] = v
                c += v
            if c <= tiny:  # rare: shift by the best state the chain can reach
                shift = -np.inf
                for j in range(k):
                    if pred[j] > 0.0 and lb[j] > shift:
                        shift = lb[j]
                if not np.isfinite(shift):
                    shift = 0.0
                c = 0.0
                for j in range(k):
                    ej = math.exp(lb[j] - shift) if pred[j] > 0.0 else 0.0
                    b[t, s, j] = ej
                    alphas[t, s, j] = pred[j] * ej
                    c += pred[j] * ej
            norms[t, s] = c
            inv = 1.0 / max(c, tiny)
            for j in range(k):
                alphas[t, s, j] *= inv
            total[s] += shift
            prod[s] *= c
            if prod[s] < 1e-250 or prod[s] > 1e250:
                total[s] += math.log(prod[s])
                prod[s] = 1.0
    log_lik = np.empty(n, dtype=xt.dtype)
    for s in range(n):
        log_lik[s] = total[s] + math.log(prod[s])
    return log_lik, scale


def _backward_stats_kernel(xt, trans_t, mask, tiny, alphas, norms, b, full, acc, pairs,
                           start):
    """Scaled backward pass that accumulates the M-step's statistics on the fly: with
    gamma_t = alpha_t beta_t and the frame's features f = [x, x^2] (or [x, x_a x_c for
    c <= a], ``full``), adds sum f gamma' into ``acc`` (1 + F, K) (row 0: sum gamma), the
    expected transition pairs (before the elementwise product with the transition matrix,
    whose transpose is ``trans_t``) into ``pairs`` and the first-step marginals into
    ``start``. Padded steps add nothing."""
    num_steps, n, k = b.shape
    d = xt.shape[2]
    width = acc.shape[0]
    beta = np.ones((n, k), dtype=b.dtype)
    carried = np.empty(k, dtype=b.dtype)
    nb = np.empty(k, dtype=b.dtype)
    g = np.empty(k, dtype=b.dtype)
    f = np.empty(width, dtype=b.dtype)
    f[0] = 1.0
    for t in range(num_steps - 1, -1, -1):
        for s in range(n):
            if not mask[t, s]:
                continue  # at a padded step beta_{t-1} = beta_t and gamma_t = 0
            for j in range(k):
                g[j] = alphas[t, s, j] * beta[s, j]
            for a in range(d):
                f[1 + a] = xt[t, s, a]
            q = 1 + d
            if full:
                for a in range(d):
                    for c in range(a + 1):
                        f[q] = f[1 + a] * f[1 + c]
                        q += 1
            else:
                for a in range(d):
                    f[q + a] = f[1 + a] * f[1 + a]
            for q in range(width):
                fq = f[q]
                for j in range(k):
                    acc[q, j] += fq * g[j]
            if t == 0:
                for j in range(k):
                    start[j] += g[j]
                continue
            inv = 1.0 / max(norms[t, s], tiny)
            for j in range(k):  # a state the chain cannot be in carries 0 (ops._backward)
                carried[j] = b[t, s, j] * beta[s, j] * inv if alphas[t, s, j] > 0 else 0.0
            for i in range(k):
                a_ = alphas[t - 1, s, i]
                for j in range(k):
                    pairs[i, j] += a_ * carried[j]
            for i in range(k):  # beta_{t-1} = A carried, as columns of A' (no reductions)
                nb[i] = 0.0
            for j in range(k):
                cj = carried[j]
                for i in range(k):
                    nb[i] += trans_t[j, i] * cj
            for i in range(k):
                beta[s, i] = nb[i]


@functools.cache
def _kernels():
    """The kernels, compiled by numba (cached on disk, so later processes load them)."""
    import numba

    jit = numba.njit(cache=True, nogil=True)
    # The fused kernels may contract a * b + c into one rounding (FMA); nothing else of
    # fastmath (no reassociation, and infinities and NaN keep their meaning).
    fused = numba.njit(cache=True, nogil=True, fastmath={"contract"})
    return (jit(_forward_kernel), jit(_backward_kernel), jit(_viterbi_kernel),
            fused(_gaussian_forward_kernel), fused(_backward_stats_kernel))


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


# ------------------------------------------------------------------ fused Gaussian E-step
def fused_usable(frames: torch.Tensor, *params: torch.Tensor, num_sequences: int,
                 num_steps: int, num_states: int) -> bool:
    """Whether Gaussian EM takes :func:`gaussian_e_step`: :data:`FUSED_EM`, float64 CPU
    tensors without gradients (:func:`usable`), and a shape the kernels are
    :func:`preferred` for. float32 keeps the unfused path (whose centring of the data
    differs, so the two would agree only to float32 round-off)."""
    return (FUSED_EM and frames.dtype == torch.float64 and usable(frames, *params)
            and preferred(num_sequences, num_steps, num_states))


def _scratch(workspace: dict, num_steps: int, n: int, k: int, dtype):
    """The fused E-step's (alphas, b, norms), reused between EM iterations (fresh
    multi-megabyte arrays cost page faults on every iteration)."""
    key = (num_steps, n, k, np.dtype(dtype))
    if workspace.get("fused_key") != key:
        workspace["fused"] = (np.empty((num_steps, n, k), dtype=dtype),
                              np.empty((num_steps, n, k), dtype=dtype),
                              np.empty((num_steps, n), dtype=dtype))
        workspace["fused_key"] = key
    return workspace["fused"]


def gaussian_e_step(xt: np.ndarray, mask: np.ndarray, locs_t: np.ndarray,
                    factors_t: np.ndarray, log_norm: np.ndarray, full: bool,
                    init: torch.Tensor, trans: torch.Tensor,
                    workspace: dict | None = None) -> dict:
    """The fused Gaussian E-step: log-likelihoods and the M-step's sufficient statistics.

    Parameters
    ----------
    xt : ndarray (T, N, D)
        Centred frames, time-major, C-contiguous float64 (padded steps are never read).
    mask : ndarray (T, N) bool
        True at real steps.
    locs_t : ndarray (D, K)
        State means, centred as ``xt``, transposed (C-contiguous).
    factors_t : ndarray (D, D, K)
        ``full``: the inverse Cholesky factors of the covariances, ``[a, c, k] =
        L_k^-1[a, c]`` (lower triangular); otherwise the precisions on the diagonal
        (C-contiguous). ``GaussianEmission.em_fused_params`` makes these three arrays.
    log_norm : ndarray (K,)
        -(D log(2 pi) + log det covariance) / 2 of each state.
    init, trans : Tensor (K,), (K, K)
    workspace : dict, optional
        Scratch arrays kept between the calls of one fit.

    Returns
    -------
    dict with ``log_lik`` (N,), ``objective_scale`` (float: the sum over frames of the
    largest log-density's magnitude), ``counts`` (K,) = sum gamma, ``sums`` (K, D) = sum
    gamma x, ``squares`` (K, D, D) = sum gamma x x' (diagonal only unless ``full``),
    ``trans_counts`` (K, K) and ``start_counts`` (K,).
    """
    ws = {} if workspace is None else workspace
    num_steps, n, d = xt.shape
    k = locs_t.shape[1]
    dtype = xt.dtype
    tiny = float(np.finfo(dtype).tiny)
    kern = _kernels()
    alphas, b, norms = _scratch(ws, num_steps, n, k, dtype)
    pi = np.ascontiguousarray(init.detach().numpy())
    a = np.ascontiguousarray(trans.detach().numpy())
    log_lik, scale = kern[3](xt, mask, locs_t, factors_t, log_norm, bool(full), pi, a, tiny,
                             alphas, norms, b)
    width = 1 + d + (d * (d + 1) // 2 if full else d)
    acc = np.zeros((width, k), dtype=dtype)
    pairs = np.zeros((k, k), dtype=dtype)
    start = np.zeros(k, dtype=dtype)
    kern[4](xt, np.ascontiguousarray(a.T), mask, tiny, alphas, norms, b, bool(full), acc,
            pairs, start)
    sxx = np.zeros((k, d, d), dtype=dtype)
    if full:  # unpack the lower triangle, mirrored
        rows, cols = np.tril_indices(d)
        sxx[:, rows, cols] = acc[1 + d:].T
        sxx[:, cols, rows] = acc[1 + d:].T
    else:  # the diagonal: every (d + 1)-th entry of each state's D x D block
        sxx.reshape(k, d * d)[:, ::d + 1] = acc[1 + d:].T
    return {"log_lik": torch.from_numpy(log_lik), "objective_scale": float(scale),
            "counts": torch.from_numpy(acc[0].copy()),
            "sums": torch.from_numpy(acc[1:1 + d].T.copy()),
            "squares": torch.from_numpy(sxx), "trans_counts": torch.from_numpy(a * pairs),
            "start_counts": torch.from_numpy(start)}
