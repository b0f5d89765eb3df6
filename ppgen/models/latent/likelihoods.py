"""The observation models p(x | z) of the VAE family, computed directly in torch.

Each likelihood maps the decoder's output (``params``) to a log-density summed over the
features, a mean, a draw, and the Pyro distribution of the ``obs`` site:

=======================  =======================  ==========================================
likelihood               decoder output           support and density
=======================  =======================  ==========================================
``"bernoulli"``          logits (..., D)          x in {0, 1}; for intensities in [0, 1] the
                                                  same formula is the cross-entropy, not a
                                                  normalised density
``"continuous_bernoulli"`` logits (..., D)        x in [0, 1], normalised (Loaiza-Ganem &
                                                  Cunningham 2019)
``"gaussian"``           (loc, log_scale)         x real, Normal(loc, exp(log_scale))
=======================  =======================  ==========================================
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pyro.distributions as dist
import torch
import torch.nn.functional as F

__all__ = ["LIKELIHOODS", "log_lik", "mean", "draw", "obs_dist", "cb_log_norm", "cb_mean"]

Likelihood = Literal["bernoulli", "gaussian", "continuous_bernoulli"]
LIKELIHOODS: tuple[str, ...] = ("bernoulli", "gaussian", "continuous_bernoulli")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: Below this |logit| the continuous Bernoulli's normaliser and mean use their Taylor series.
_CB_TAYLOR = 0.1


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(eta) of the continuous Bernoulli with logits eta: C = eta / tanh(eta / 2) (the
    normaliser 2 atanh(1 - 2 lam) / (1 - 2 lam) with lam = sigmoid(eta)), an even function,
    log 2 + eta^2 / 12 - 7 eta^4 / 1440 + ... near 0."""
    a = logits.abs()
    small = a < _CB_TAYLOR
    safe = torch.where(small, torch.ones_like(a), a)
    # log tanh(a/2) = log(1 - e^-a) - log(1 + e^-a)
    exact = safe.log() - torch.log(-torch.expm1(-safe)) + F.softplus(-safe)
    a2 = a * a
    taylor = math.log(2.0) + a2 / 12 - 7 * a2 * a2 / 1440
    return torch.where(small, taylor, exact)


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the continuous Bernoulli: 1 / (1 - e^-eta) - 1 / eta (1/2 + eta / 12 near 0)."""
    small = logits.abs() < _CB_TAYLOR
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = -1 / torch.expm1(-safe) - 1 / safe
    taylor = 0.5 + logits / 12 - logits ** 3 / 720
    return torch.where(small, taylor, exact)


def _cb_draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw log(1 + u (e^eta - 1)) / eta, written without overflow for either
    sign of eta (for eta > 0 as 1 + log(u + (1 - u) e^-eta) / eta); u for eta near 0."""
    small = logits.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(logits), logits)
    neg = torch.log1p(u * torch.expm1(safe.clamp(max=0))) / safe
    pos = 1 + torch.log(u + (1 - u) * torch.exp(-safe.clamp(min=0))) / safe
    x = torch.where(safe > 0, pos, neg)
    return torch.where(small, u, x).clamp(0, 1)


def log_lik(kind: str, params: Any, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) summed over the last axis (the features).

    Parameters
    ----------
    kind : {"bernoulli", "gaussian", "continuous_bernoulli"}
    params : Tensor of shape (..., D), or (loc, log_scale) for "gaussian"
        The decoder's output; broadcasts against ``x``.
    x : Tensor of shape (..., D)

    Returns
    -------
    Tensor of the broadcast shape without the last axis.
    """
    if kind == "gaussian":
        loc, log_scale = params
        return (-0.5 * ((x - loc) * torch.exp(-log_scale)).square() - log_scale
                - _HALF_LOG_2PI).sum(-1)
    if kind == "bernoulli":
        # one fused kernel (x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l))
        if params.shape != x.shape:
            shape = torch.broadcast_shapes(params.shape, x.shape)
            params, x = params.expand(shape), x.expand(shape)
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)
    return (x * params - F.softplus(params) + cb_log_norm(params)).sum(-1)


def mean(kind: str, params: Any) -> torch.Tensor:
    """E[x | z], of shape (..., D)."""
    if kind == "gaussian":
        return params[0]
    if kind == "continuous_bernoulli":
        return cb_mean(params)
    return torch.sigmoid(params)


def draw(kind: str, params: Any, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw x ~ p(x | z), of shape (..., D), from ``generator`` (global RNG when None)."""
    if kind == "gaussian":
        loc, log_scale = params
        eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        return loc + torch.exp(log_scale) * eps
    u = torch.rand(params.shape, generator=generator, dtype=params.dtype, device=params.device)
    if kind == "continuous_bernoulli":
        return _cb_draw(params, u)
    return (u < torch.sigmoid(params)).to(params.dtype)


def obs_dist(kind: str, params: Any) -> dist.TorchDistribution:
    """The Pyro distribution of the ``obs`` site, event shape (D,)."""
    if kind == "gaussian":
        loc, log_scale = params
        return dist.Normal(loc, torch.exp(log_scale)).to_event(1)
    if kind == "continuous_bernoulli":
        return dist.ContinuousBernoulli(logits=params).to_event(1)
    # Intensities in [0, 1] are accepted (the cross-entropy), so the {0, 1} check is off.
    return dist.Bernoulli(logits=params, validate_args=False).to_event(1)
