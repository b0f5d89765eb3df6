"""Missing-data imputation with a trained VAE: Markov chains over (z, x_missing).

Both samplers run one chain per datum, all data at once (vectorised), and return the
Rao-Blackwellised posterior mean of the missing entries, the average over the kept
iterations of E[x_missing | z_t] (the decoder's mean), which is the single imputation that
minimises the expected squared error under the chain's stationary distribution.

``"mwg"``: Metropolis-within-Gibbs (Mattei & Frellsen 2018), a Gibbs sampler on
p(z, x_mis | x_obs): an independence Metropolis-Hastings step for z, with the encoder
q(z | x_obs, x_mis) as proposal, targeting p(z | x_obs, x_mis) (acceptance ratio
p(x | z') p(z') q(z | x) / (p(x | z) p(z) q(z' | x)) at the completed x), then
x_mis ~ p(x_mis | z). Its stationary distribution is the exact conditional
p(x_mis | x_obs) of the model. With ``num_proposals`` M > 1 the z-update is iterated
sampling importance resampling (M encoder draws and the current z, one chosen by importance
weight), which leaves the same conditional invariant and moves more often. The burn-in can
use pseudo-Gibbs moves (``burnin_method``; ``VAE.impute``'s default), which reach the bulk of
the posterior fast; the kept iterations are the exact kernel's.

``"pseudo_gibbs"``: Rezende et al. (2014): z ~ q(z | x_obs, x_mis), then
x_mis ~ p(x_mis | z). Every z is accepted, so it converges to the exact conditional only if
the encoder is the exact posterior; with an approximate encoder it can drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .likelihoods import draw, log_lik, mean

__all__ = ["impute_chain"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _log_normal(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - loc) / scale).square() - scale.log() - _HALF_LOG_2PI).sum(-1)


def _log_prior(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * z.square() - _HALF_LOG_2PI).sum(-1)


def impute_chain(x: torch.Tensor, missing: torch.Tensor, *,
                 encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 decode: Callable[[torch.Tensor], Any], likelihood: str, method: str,
                 num_steps: int, num_burnin: int, generator: torch.Generator,
                 num_proposals: int = 1,
                 burnin_method: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the imputation chains (module docstring).

    Parameters
    ----------
    x : Tensor of shape (N, D)
        The data, with any value (e.g. 0) at the missing entries.
    missing : BoolTensor of shape (N, D)
    encode : callable
        x (N, D) -> loc, scale (N, L) of q(z | x).
    decode : callable
        z (..., N, L) -> the likelihood's parameters.
    likelihood : {"bernoulli", "gaussian", "continuous_bernoulli"}
    method : {"mwg", "pseudo_gibbs"}
    num_steps : int
        Iterations after the burn-in whose means are averaged.
    num_burnin : int
        Iterations discarded first.
    generator : torch.Generator
        On the data's device.
    num_proposals : int
        M, the proposals of one z-update of ``"mwg"``. M = 1: the independence
        Metropolis-Hastings step of Mattei & Frellsen. M > 1: iterated sampling importance
        resampling (i-SIR; Andrieu, Lee & Vihola 2018): M draws from the encoder, and one of
        the M + 1 candidates (the current z among them) chosen with probability proportional
        to its importance weight p(x | z) p(z) / q(z | x); it leaves p(z | x_obs, x_mis)
        invariant too, moves more often, and the kept mean averages every candidate's
        E[x_mis | z] by its weight (Rao-Blackwellised over the choice).
    burnin_method : {"pseudo_gibbs", "mwg"}, optional
        Kernel of the burn-in iterations (None: ``method``'s). Pseudo-Gibbs moves at every
        step, so it reaches the region of high posterior mass fast; the kept iterations use
        ``method``'s kernel, so what they target is unchanged.

    Returns
    -------
    imputed : Tensor of shape (N, D)
        ``x`` with the missing entries replaced by their posterior-mean estimate.
    acceptance : Tensor of shape (N,)
        The fraction of the ``method`` z-updates per chain (burn-in included unless it used
        ``burnin_method``) that moved z (1 for pseudo-Gibbs).
    """
    n = x.shape[0]
    rows = torch.arange(n, device=x.device)
    # Start: missing entries at the decoder's mean at the prior mean, z at the encoder's mean.
    loc, _ = encode(x)
    z0 = torch.zeros_like(loc)
    current = torch.where(missing, mean(likelihood, decode(z0)), x)
    z, _ = encode(current)
    params = decode(z)
    total = torch.zeros_like(x)
    accepted = torch.zeros(n, dtype=x.dtype, device=x.device)
    counted = 0
    for t in range(num_burnin + num_steps):
        kept = t >= num_burnin
        kernel = method if kept or burnin_method is None else burnin_method
        loc, scale = encode(current)
        if kernel == "pseudo_gibbs":
            eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype,
                              device=loc.device)
            z = loc + scale * eps
            params = decode(z)
            step_mean = mean(likelihood, params)
            if method == "pseudo_gibbs":
                accepted += 1
        elif num_proposals == 1:
            eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype,
                              device=loc.device)
            z_new = loc + scale * eps
            params_new = decode(z_new)
            log_target_new = log_lik(likelihood, params_new, current) + _log_prior(z_new)
            log_target_old = log_lik(likelihood, params, current) + _log_prior(z)
            log_q_new = (-0.5 * eps.square() - scale.log() - _HALF_LOG_2PI).sum(-1)
            log_q_old = _log_normal(z, loc, scale)
            log_ratio = log_target_new - log_target_old + log_q_old - log_q_new
            u = torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)
            accept = torch.log(u) < log_ratio
            z = torch.where(accept.unsqueeze(-1), z_new, z)
            params = _select(accept, params_new, params)
            accepted += accept.to(x.dtype)
            step_mean = mean(likelihood, params)
        else:
            eps = torch.randn((num_proposals, *loc.shape), generator=generator,
                              dtype=loc.dtype, device=loc.device)
            candidates = torch.cat([z.unsqueeze(0), loc + scale * eps])  # (M + 1, N, L)
            cand_params = decode(candidates)
            log_w = (log_lik(likelihood, cand_params, current) + _log_prior(candidates)
                     - _log_normal(candidates, loc, scale))  # (M + 1, N)
            weights = torch.softmax(log_w, dim=0)
            pick = torch.multinomial(weights.T, 1, generator=generator).squeeze(-1)
            z = candidates[pick, rows]
            params = _take(cand_params, pick, rows, num_proposals + 1)
            accepted += (pick != 0).to(x.dtype)
            step_mean = (weights.unsqueeze(-1) * mean(likelihood, cand_params)).sum(0)
        counted += kernel == method
        current = torch.where(missing, draw(likelihood, params, generator), x)
        if kept:
            total += step_mean
    imputed = torch.where(missing, total / max(num_steps, 1), x)
    return imputed, accepted / max(counted, 1)


def _take(params: Any, pick: torch.Tensor, rows: torch.Tensor, num: int) -> Any:
    """Row n of candidate pick[n] of decoder outputs for ``num`` candidates (a leading
    candidate axis; a parameter shared by all rows, e.g. a scale of shape (D,), broadcast)."""
    if isinstance(params, tuple):
        return tuple(_take(p, pick, rows, num) for p in params)
    return params.expand(num, rows.shape[0], params.shape[-1])[pick, rows]


def _select(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """Per-row choice between two decoder outputs (a tensor or a tuple of tensors)."""
    if isinstance(new, tuple):
        return tuple(_select(mask, a, b) for a, b in zip(new, old, strict=True))
    return torch.where(mask.unsqueeze(-1), new, old)
