"""Annealed importance sampling of a generator's log-likelihood under a Gaussian observation
model (Wu, Burda, Salakhutdinov & Grosse 2017, "On the quantitative analysis of
decoder-based generative models").

A deterministic generator x = g(z), z ~ N(0, I_L), has no density on data space; with a
Gaussian observation model it becomes the latent-variable model

    p_sigma(x) = integral N(z; 0, I) N(x; g(z), sigma^2 I_D) dz,

whose log-likelihood is estimated per datum by AIS from the prior to the posterior through
the geometric path f_t(z) = p(z) p(x | z)^beta_t, 0 = beta_0 < ... < beta_T = 1 (a sigmoid
schedule), with one Hamiltonian Monte Carlo transition per temperature (``num_leapfrog``
leapfrog steps, one step size per datum adapted towards 65% acceptance, as Wu et al. do).
The log-weight of a chain is sum_t (beta_t - beta_{t-1}) log p(x | z_{t-1}); the mean of
exp(log-weight) over ``num_chains`` chains is an unbiased estimate of p(x), so
log p_hat(x) = log mean_k w_k is a stochastic lower bound in expectation (it tightens as
``num_steps`` grows). The standard error is the delta method over the chains, as for
importance sampling (:mod:`ppgen._importance`): it measures the Monte-Carlo noise, not the
remaining bias of a too-short schedule.

The implementation sits below the model families (so a model's ``log_prob`` can use it);
its public home is :mod:`ppgen.evaluation.generator_likelihood`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._random import resolve_seed, seeded
from ._validation import bad_type, bad_value, check_positive_float, check_positive_int

__all__ = ["ais_log_prob", "sigmoid_schedule", "choose_observation_scale"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def sigmoid_schedule(num_steps: int, rad: float = 4.0) -> torch.Tensor:
    """Inverse temperatures beta_0 = 0 < ... < beta_T = 1 (T = ``num_steps``), spaced by a
    sigmoid in [-rad, rad] (Grosse et al. 2015), dense at both ends; float64."""
    t = torch.linspace(-rad, rad, num_steps + 1, dtype=torch.float64)
    s = torch.sigmoid(t)
    return (s - s[0]) / (s[-1] - s[0])


def _gaussian_log_lik(x: torch.Tensor, mean: torch.Tensor,
                      scale: float | torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    if isinstance(scale, torch.Tensor):
        return (-0.5 * ((x - mean) / scale).square().sum(-1) - scale.log().sum()
                - d * _HALF_LOG_2PI)
    return (-0.5 * ((x - mean) / scale).square().sum(-1) - d * (math.log(scale)
                                                               + _HALF_LOG_2PI))


def ais_log_prob(x: torch.Tensor, generator: Callable[[torch.Tensor], torch.Tensor], *,
                 latent_dim: int, obs_scale: float | torch.Tensor, num_steps: int = 500,
                 num_chains: int = 16, num_leapfrog: int = 10, step_size: float = 0.05,
                 seed: int | None = 0, row_batch_size: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """AIS estimate of log p_sigma(x) per datum in nats, with its standard error.

    Parameters
    ----------
    x : Tensor of shape (N, D)
        Data, flattened.
    generator : callable
        ``generator(z)`` with z of shape (M, L) returns the means g(z) of shape (M, D); it
        must be differentiable in z (HMC needs the gradient of log p(x | z)).
    latent_dim : int
        L.
    obs_scale : float, or Tensor of shape (D,)
        sigma of the Gaussian observation model (one per feature for a tensor, e.g. a
        Gaussian VAE decoder's learned scales).
    num_steps : int
        Temperatures T of the annealing schedule (more: less bias).
    num_chains : int
        AIS chains per datum (at least 2 for the standard error).
    num_leapfrog : int
        Leapfrog steps per HMC transition.
    step_size : float
        Initial leapfrog step size (adapted per datum during the run).
    seed : int, optional
        Seed of the chains (the global random state is restored afterwards).
    row_batch_size : int, optional
        Data rows annealed at once (default: all).

    Returns
    -------
    estimate, stderr : Tensors of shape (N,)

    Examples
    --------
    A linear generator g(z) = W z + b, whose marginal is N(b, W W^T + sigma^2 I):

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> w, b = torch.randn(3, 1, generator=g, dtype=torch.float64), torch.zeros(3).double()
    >>> x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    >>> est, se = ais_log_prob(x, lambda z: z @ w.T + b, latent_dim=1, obs_scale=0.5,
    ...                        num_steps=100, seed=0)
    >>> exact = torch.distributions.MultivariateNormal(
    ...     b, w @ w.T + 0.25 * torch.eye(3, dtype=torch.float64)).log_prob(x)
    >>> bool(((est - exact).abs() < 3 * se + 0.05).all())
    True
    """
    if not callable(generator):
        raise bad_type("generator", "a callable z (M, L) -> means (M, D)",
                       type(generator).__name__)
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 1:
        raise bad_value("x", "a Tensor of shape (N, D) with N >= 1",
                        f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                        else type(x).__name__)
    latent_dim = check_positive_int("latent_dim", latent_dim)
    sigma: float | torch.Tensor
    if isinstance(obs_scale, torch.Tensor):
        sigma = obs_scale.detach().to(device=x.device, dtype=x.dtype).reshape(-1)
        if sigma.numel() != x.shape[1] or not bool((sigma > 0).all()):
            raise bad_value("obs_scale", f"a positive number or {x.shape[1]} positive "
                            "scales (one per feature)", f"shape {tuple(obs_scale.shape)}")
    else:
        sigma = check_positive_float("obs_scale", obs_scale)
    num_steps = check_positive_int("num_steps", num_steps)
    num_chains = check_positive_int("num_chains", num_chains)
    num_leapfrog = check_positive_int("num_leapfrog", num_leapfrog)
    eps0 = check_positive_float("step_size", step_size)
    n = x.shape[0]
    rows_at_once = n if row_batch_size is None else check_positive_int("row_batch_size",
                                                                       row_batch_size)
    betas = sigmoid_schedule(num_steps).tolist()
    out_est, out_se = [], []
    with seeded(resolve_seed(seed)):
        for start in range(0, n, rows_at_once):
            xr = x[start:start + rows_at_once]
            est, se = _anneal(xr, generator, latent_dim, sigma, betas, num_chains,
                              num_leapfrog, eps0)
            out_est.append(est)
            out_se.append(se)
    return torch.cat(out_est).to(x.dtype), torch.cat(out_se).to(x.dtype)


def _anneal(x, generator, latent_dim, sigma, betas, num_chains, num_leapfrog, eps0):
    b, d = x.shape
    k = num_chains
    xk = x.unsqueeze(0).expand(k, b, d).reshape(k * b, d)

    def log_lik(z):  # (k*b, L) -> (k*b,)
        return _gaussian_log_lik(xk, generator(z), sigma)

    def energy_and_grad(z, beta):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            ll = log_lik(z)
            log_f = -0.5 * z.square().sum(-1) + beta * ll
            (grad,) = torch.autograd.grad(log_f.sum(), z)
        return -log_f.detach(), -grad, ll.detach()

    z = torch.randn(k * b, latent_dim, dtype=x.dtype, device=x.device)
    log_w = torch.zeros(k * b, dtype=torch.float64, device=x.device)
    step = torch.full((1, b, 1), eps0, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        ll_prev = log_lik(z)
    for t in range(1, len(betas)):
        beta = betas[t]
        log_w += (beta - betas[t - 1]) * ll_prev.double()
        # One HMC transition targeting p(z) p(x | z)^beta.
        u0, grad, _ = energy_and_grad(z, beta)
        eps = step.expand(k, b, 1).reshape(k * b, 1)
        p = torch.randn_like(z)
        h0 = u0 + 0.5 * p.square().sum(-1)
        zn, pn = z, p - 0.5 * eps * grad
        for i in range(num_leapfrog):
            zn = zn + eps * pn
            u, grad, ll_new = energy_and_grad(zn, beta)
            if i < num_leapfrog - 1:
                pn = pn - eps * grad
        pn = pn - 0.5 * eps * grad
        h1 = u + 0.5 * pn.square().sum(-1)
        log_accept = (h0 - h1).nan_to_num(nan=-math.inf).clamp(max=0.0)
        accept = torch.rand_like(log_accept).log() < log_accept
        z = torch.where(accept.unsqueeze(-1), zn.detach(), z)
        with torch.no_grad():
            ll_prev = torch.where(accept, ll_new, ll_prev)
            rate = accept.to(x.dtype).reshape(k, b).mean(0).reshape(1, b, 1)
            step = step * torch.where(rate > 0.65, 1.05, 0.95)
    log_w = log_w.reshape(k, b)
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    log_s1 = torch.logsumexp(log_w, 0)
    log_s2 = torch.logsumexp(2 * log_w, 0)
    excess = torch.expm1(math.log(k) + log_s2 - 2 * log_s1).clamp_min(0)
    stderr = (excess / (k - 1)).sqrt() if k > 1 else torch.full_like(estimate, math.nan)
    return estimate, stderr


def choose_observation_scale(validation: torch.Tensor,
                             generator: Callable[[torch.Tensor], torch.Tensor], *,
                             latent_dim: int, scales: torch.Tensor | list[float] | None = None,
                             num_steps: int = 100, num_chains: int = 4, seed: int | None = 0,
                             num_scales: int = 13) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The observation scale sigma with the highest mean AIS log-likelihood on validation
    data (Wu et al. 2017 choose it on a validation set, never on the test data).

    Parameters
    ----------
    validation : Tensor of shape (N, D)
    generator, latent_dim
        As for :func:`ais_log_prob`.
    scales : sequence of float, optional
        Candidates; by default ``num_scales`` values log-spaced by factors of sqrt(2) around
        the root mean squared distance (per feature) from each validation datum to the
        nearest of 1,000 generated samples (fixed seed).
    num_steps, num_chains, seed
        The AIS settings of the search (cheap; score the test data with longer runs).

    Returns
    -------
    scale : float
    scales : Tensor of shape (S,)
        The candidates.
    scores : Tensor of shape (S,)
        Mean AIS log-likelihood per datum (nats) of each candidate.
    """
    if not isinstance(validation, torch.Tensor) or validation.dim() != 2:
        raise bad_value("validation", "a Tensor of shape (N, D)",
                        type(validation).__name__ if not isinstance(validation, torch.Tensor)
                        else f"shape {tuple(validation.shape)}")
    if scales is None:
        with torch.no_grad(), seeded(resolve_seed(seed)):
            z = torch.randn(1000, latent_dim, dtype=validation.dtype, device=validation.device)
            gen = generator(z)
        dist2 = torch.cdist(validation, gen).min(1).values.square().mean()
        centre = float((dist2 / validation.shape[1]).sqrt().clamp_min(1e-4))
        half = (check_positive_int("num_scales", num_scales) - 1) / 2
        cand = centre * 2 ** (torch.arange(num_scales, dtype=torch.float64) - half).div(2)
    else:
        cand = torch.as_tensor(scales, dtype=torch.float64).reshape(-1)
        if cand.numel() < 1 or not bool((cand > 0).all()):
            raise bad_value("scales", "positive numbers", cand.tolist())
    scores = torch.stack([
        ais_log_prob(validation, generator, latent_dim=latent_dim, obs_scale=float(s),
                     num_steps=num_steps, num_chains=num_chains, seed=seed)[0].double().mean()
        for s in cand])
    best = int(torch.nan_to_num(scores, nan=-math.inf).argmax())
    return float(cand[best]), cand, scores
