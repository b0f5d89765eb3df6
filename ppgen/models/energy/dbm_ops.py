"""Pure functions of a two-layer binary deep Boltzmann machine (Salakhutdinov & Hinton 2009).

Energy of (v, h1, h2) with ``weights_0`` W1 (D, H1), ``weights_1`` W2 (H1, H2) and biases
b (D), c1 (H1), c2 (H2)::

    E = -v.b - h1.c1 - h2.c2 - v W1 h1 - h1 W2 h2

The odd layer h1 is conditionally independent given (v, h2), so it sums out in closed form:

    log f(v, h2) = v.b + h2.c2 + sum_j softplus(c1_j + (v W1)_j + (W2 h2)_j)

AIS runs over (v, h2) with this h1 summed out (Salakhutdinov & Hinton 2009): the path from
the base model (visible base rates a, no weights, h1 and h2 uniform) to the DBM,

    log f_beta(v, h2) = (1 - beta) v.a + beta (v.b + h2.c2)
                        + sum_j softplus(beta (c1_j + (v W1)_j + (W2 h2)_j)),

log Z_0 = sum softplus(a) + (H1 + H2) log 2, with the block-Gibbs sweep h1 | (v, h2), then
(v, h2) | h1 as the transition (reversible for f_beta).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .ais import log_mean_exp

__all__ = ["log_f", "dbm_ais", "dbm_exact_log_partition", "mean_field"]


def log_f(v, h2, w1, w2, b, c1, c2, a, beta: float) -> torch.Tensor:
    act = c1 + v @ w1 + h2 @ w2.T
    return ((1 - beta) * (v @ a) + beta * (v @ b + h2 @ c2)
            + F.softplus(beta * act).sum(-1))


def _bern(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(p.shape, generator=g, dtype=p.dtype, device=p.device) < p).to(p.dtype)


def dbm_ais(w1, w2, b, c1, c2, a, *, num_samples: int, beta_path: torch.Tensor,
            generator: torch.Generator) -> tuple[float, float]:
    """AIS estimate of log Z (float64) and its standard error (module docstring)."""
    w1, w2, b, c1, c2, a = (t.double() for t in (w1, w2, b, c1, c2, a))
    g = generator
    bs = beta_path.tolist()
    v = _bern(torch.sigmoid(a).expand(num_samples, -1), g)
    h2 = _bern(torch.full((num_samples, w2.shape[1]), 0.5, dtype=w1.dtype,
                          device=w1.device), g)
    log_w = torch.zeros(num_samples, dtype=w1.dtype, device=w1.device)
    for k in range(1, len(bs)):
        beta = bs[k]
        log_w += (log_f(v, h2, w1, w2, b, c1, c2, a, beta)
                  - log_f(v, h2, w1, w2, b, c1, c2, a, bs[k - 1]))
        if k < len(bs) - 1:
            h1 = _bern(torch.sigmoid(beta * (c1 + v @ w1 + h2 @ w2.T)), g)
            v = _bern(torch.sigmoid((1 - beta) * a + beta * (b + h1 @ w1.T)), g)
            h2 = _bern(torch.sigmoid(beta * (c2 + h1 @ w2)), g)
    est, se = log_mean_exp(log_w)
    log_z0 = float(F.softplus(a).sum()) + (w1.shape[1] + w2.shape[1]) * math.log(2.0)
    return float(est) + log_z0, float(se)


def dbm_exact_log_partition(w1, w2, b, c1, c2) -> float:
    """log Z by enumerating v and h2 (h1 summed out); tiny models only."""
    from .ops import enumerate_states

    w1, w2, b, c1, c2 = (t.double() for t in (w1, w2, b, c1, c2))
    d, h = w1.shape[0], w2.shape[1]
    v = enumerate_states(d, 0, 2 ** d, dtype=w1.dtype, device=w1.device)
    h2 = enumerate_states(h, 0, 2 ** h, dtype=w1.dtype, device=w1.device)
    vv = v.repeat_interleave(len(h2), 0)
    hh = h2.repeat(len(v), 1)
    return float(torch.logsumexp(log_f(vv, hh, w1, w2, b, c1, c2, b, 1.0), 0))


def mean_field(v, w1, w2, c1, c2, num_iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-field posterior q(h1) q(h2) given v: fixed-point iterations of mu1 =
    sigmoid(c1 + v W1 + W2 mu2), mu2 = sigmoid(c2 + mu1 W2), started from the doubled
    bottom-up pass mu1 = sigmoid(c1 + 2 v W1)."""
    mu1 = torch.sigmoid(c1 + 2 * (v @ w1))
    mu2 = torch.sigmoid(c2 + mu1 @ w2)
    for _ in range(num_iters):
        mu1 = torch.sigmoid(c1 + v @ w1 + mu2 @ w2.T)
        mu2 = torch.sigmoid(c2 + mu1 @ w2)
    return mu1, mu2
