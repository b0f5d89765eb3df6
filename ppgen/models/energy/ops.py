"""Pure tensor functions of restricted Boltzmann machines: energies, block Gibbs, exact log Z.

An RBM with visible units v (D) and binary hidden units h (H) has the energy

Bernoulli visibles (v in {0, 1}^D)::

    E(v, h) = -v.b - h.c - v W h

Gaussian visibles (v in R^D, unit variance; standardise the data first)::

    E(v, h) = |v - b|^2 / 2 - h.c - v W h

with ``weights`` W (D, H), ``visible_bias`` b (D,) and ``hidden_bias`` c (H,). Summing out h
gives the free energy, -F(v) = log sum_h exp(-E(v, h)):

    -F(v) = v.b + sum_j softplus(c_j + (v W)_j)                 (Bernoulli)
    -F(v) = -|v - b|^2 / 2 + sum_j softplus(c_j + (v W)_j)      (Gaussian)

and p(v) = exp(-F(v)) / Z. The conditionals factorise: p(h_j = 1 | v) = sigmoid(c_j +
(v W)_j); p(v_i = 1 | h) = sigmoid(b_i + (W h)_i) (Bernoulli) or v | h ~ Normal(b + W h, I)
(Gaussian), which is what makes block Gibbs sampling one matrix product per half-step.

The exact log partition function enumerates the smaller layer (:func:`exact_log_partition`):
over h it is

    log Z = logsumexp_h [h.c + sum_i softplus(b_i + (W h)_i)]                    (Bernoulli)
    log Z = D/2 log(2 pi) + logsumexp_h [h.c + (|b + W h|^2 - |b|^2) / 2]        (Gaussian)

and over v (Bernoulli only) logsumexp_v -F(v).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["Visible", "free_energy", "hidden_probs", "visible_mean", "sample_hidden",
           "sample_visible", "exact_log_partition", "enumerate_states", "MAX_EXACT_UNITS",
           "SPARSE_MAX_DENSITY", "SPARSE_MIN_WIDTH", "use_sparse", "binary_matmul",
           "binary_t_matmul"]

Visible = Literal["bernoulli", "gaussian"]

#: The largest layer :func:`exact_log_partition` enumerates (2^25 states, in chunks).
MAX_EXACT_UNITS = 25
#: States per chunk of the enumeration.
_CHUNK = 2**14
#: Fraction of ones below which a product with a 0/1 matrix (:func:`binary_matmul`,
#: :func:`binary_t_matmul`) runs as sums of rows (``embedding_bag``) rather than a dense
#: GEMM, on CPU, when the product is at least :data:`SPARSE_MIN_WIDTH` wide. Measured
#: (``benchmarks/rbm_mnist.py``, RESULTS.md, RBM section) with one thread on a 2-core
#: AVX-512 Xeon with MKL, a (100 x 784) 0/1 matrix times (784 x H): the row sums, index
#: extraction included (which costs the same at any H), beat the GEMM only at low density
#: and large H: at H = 500 below a density of about 0.04 to 0.09 (the runs varied with the
#: machine's load), at H = 250 never, at H = 2000 below about 0.09 (x W) and 0.17 (x^T P).
#: Binarized MNIST (density 0.13) stays dense.
SPARSE_MAX_DENSITY = 0.05
#: The narrowest product (columns of the result) that takes the sparse path.
SPARSE_MIN_WIDTH = 500


def free_energy(v: torch.Tensor, weights: torch.Tensor, visible_bias: torch.Tensor,
                hidden_bias: torch.Tensor, visible: Visible) -> torch.Tensor:
    """F(v) per row: (..., D) -> (...)."""
    hidden = F.softplus(v @ weights + hidden_bias).sum(-1)
    if visible == "bernoulli":
        return -(v @ visible_bias) - hidden
    return 0.5 * (v - visible_bias).square().sum(-1) - hidden


def hidden_probs(v: torch.Tensor, weights: torch.Tensor,
                 hidden_bias: torch.Tensor) -> torch.Tensor:
    """p(h = 1 | v): (..., D) -> (..., H)."""
    if v.dim() == 2:  # one fused GEMM + bias, sigmoid in place
        return torch.addmm(hidden_bias, v, weights).sigmoid_()
    return torch.sigmoid(v @ weights + hidden_bias)


def use_sparse(x: torch.Tensor, width: int) -> bool:
    """Whether products of the 0/1 matrix ``x`` with a matrix of ``width`` columns should take
    the sparse path: on CPU, ``width`` at least :data:`SPARSE_MIN_WIDTH` and the density of
    ``x`` (fraction of ones) below :data:`SPARSE_MAX_DENSITY`. (On other devices the dense
    product is used: reading the density would cost a host sync.)"""
    if (x.device.type != "cpu" or SPARSE_MAX_DENSITY <= 0 or width < SPARSE_MIN_WIDTH
            or x.numel() == 0):
        return False
    return float(x.sum()) < SPARSE_MAX_DENSITY * x.numel()


def binary_matmul(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None = None,
                  *, sparse: bool) -> torch.Tensor:
    """``x @ weights (+ bias)`` for a matrix ``x`` (N, D) of exact 0/1 values and
    ``weights`` (D, H): with ``sparse`` each output row is the sum of the rows of
    ``weights`` at the row's ones (``embedding_bag``, mode sum), else one dense GEMM. The
    two agree to floating-point round-off (the sums run in another order)."""
    if not sparse:
        return torch.addmm(bias, x, weights) if bias is not None else x @ weights
    mask = x != 0
    counts = mask.sum(1)
    cols = mask.nonzero()[:, 1]  # row-major: the ones of row 0, then of row 1, ...
    out = F.embedding_bag(cols, weights, counts.cumsum(0) - counts, mode="sum")
    return out.add_(bias) if bias is not None else out


def binary_t_matmul(x: torch.Tensor, p: torch.Tensor, *, sparse: bool) -> torch.Tensor:
    """``x^T @ p`` (D, H) for a 0/1 matrix ``x`` (N, D) and ``p`` (N, H): with ``sparse``
    row d is the sum of the rows of ``p`` where column d of ``x`` is one (a scatter-add of
    ``p``'s rows, run as ``embedding_bag`` over ``x``'s columns), else one dense GEMM."""
    return binary_matmul(x.T, p, sparse=sparse)


def visible_mean(h: torch.Tensor, weights: torch.Tensor, visible_bias: torch.Tensor,
                 visible: Visible) -> torch.Tensor:
    """E[v | h]: (..., H) -> (..., D) (probabilities for Bernoulli visibles)."""
    act = torch.addmm(visible_bias, h, weights.T) if h.dim() == 2 else h @ weights.T + \
        visible_bias
    return act.sigmoid_() if visible == "bernoulli" else act


def sample_hidden(v: torch.Tensor, weights: torch.Tensor, hidden_bias: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """h ~ p(h | v) (0/1 values in v's dtype)."""
    p = hidden_probs(v, weights, hidden_bias)
    # in place: the 0/1 result in p's dtype without a boolean mask and its conversion
    return torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device).lt_(p)


def sample_visible(h: torch.Tensor, weights: torch.Tensor, visible_bias: torch.Tensor,
                   visible: Visible, generator: torch.Generator | None = None) -> torch.Tensor:
    """v ~ p(v | h)."""
    mean = visible_mean(h, weights, visible_bias, visible)
    noise = torch.rand if visible == "bernoulli" else torch.randn
    draw = noise(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return draw.lt_(mean) if visible == "bernoulli" else mean.add_(draw)


def enumerate_states(num_units: int, start: int, stop: int, *, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    """The binary states with numbers start..stop-1 (bit i of the number is unit i): (stop -
    start, num_units)."""
    codes = torch.arange(start, stop, device=device)
    bits = torch.arange(num_units, device=device)
    return ((codes[:, None] >> bits) & 1).to(dtype)


def exact_log_partition(weights: torch.Tensor, visible_bias: torch.Tensor,
                        hidden_bias: torch.Tensor, visible: Visible) -> torch.Tensor:
    """log Z by enumerating the smaller layer (the hidden one for Gaussian visibles), in
    chunks of states, in float64; a 0-d float64 tensor. The caller checks the layer's size
    (at most :data:`MAX_EXACT_UNITS`)."""
    w, b, c = weights.double(), visible_bias.double(), hidden_bias.double()
    num_visible, num_hidden = w.shape
    over_visible = visible == "bernoulli" and num_visible < num_hidden
    units = num_visible if over_visible else num_hidden
    parts = []
    for start in range(0, 2**units, _CHUNK):
        s = enumerate_states(units, start, min(start + _CHUNK, 2**units), dtype=w.dtype,
                             device=w.device)
        if over_visible:
            parts.append(-free_energy(s, w, b, c, visible))
        elif visible == "bernoulli":
            parts.append(s @ c + F.softplus(s @ w.T + b).sum(-1))
        else:
            m = s @ w.T + b
            parts.append(s @ c + 0.5 * (m.square().sum(-1) - b.square().sum()))
    out = torch.logsumexp(torch.cat(parts), 0)
    if visible == "gaussian":
        out = out + 0.5 * num_visible * math.log(2 * math.pi)
    return out
