"""Importance-sampled log-likelihood for any model with a proposal and a joint density.

For a latent-variable model p(x) = integral of p(x, z) dz and a proposal q(z | x) (a VAE's
encoder, a GAN's inference network, a Laplace approximation), the estimator is

    log p_hat(x) = log (1/k) sum_{i=1..k} w_i,   w_i = p(x, z_i) / q(z_i | x),  z_i ~ q(z | x)

the importance-weighted (IWAE) bound of Burda et al. (2016). The mean of the weights is
unbiased for p(x), so by Jensen's inequality the estimate is a lower bound *in expectation*,
E[log p_hat(x)] <= log p(x); it increases with k and is consistent as k grows (the gap shrinks
as Var(w) / (2 k p(x)^2)). A single estimate can lie above log p(x).

The standard error is the delta method for the log of a mean,

    se(log p_hat) = sd(w) / (sqrt(k) mean(w)) = sqrt((k sum w_i^2 / (sum w_i)^2 - 1) / (k - 1))

computed from running log-sums of w and w^2, so nothing overflows whatever the scale of the
log-weights. It measures the Monte-Carlo noise of the estimate, not its bias; with a poor
proposal (a few weights dominate) it can be small while the estimate is far too low, so
compare estimates with increasing k, or look at the effective sample size
(sum w)^2 / sum w^2, which :func:`importance_log_prob` returns on request.

The draws are taken ``batch_size`` at a time with a running log-sum-exp, so memory stays
bounded for any ``num_samples``; rows of ``x`` are processed in chunks as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._random import resolve_seed, seeded
from ._validation import bad_type, bad_value, check_positive_int

__all__ = ["importance_log_prob"]

#: Entries of the largest (draws, rows, features) block evaluated at once by default.
_BLOCK_ENTRIES = 2**23


def _accumulator_dtype(x: torch.Tensor) -> torch.dtype:
    # float64 running sums where the device has them (the log-sums are cheap: (N,) tensors).
    return torch.float32 if x.device.type == "mps" else torch.float64


def importance_log_prob(
    x: Any,
    *,
    proposal: Callable[[Any], torch.distributions.Distribution],
    log_joint: Callable[[Any, torch.Tensor], torch.Tensor],
    num_samples: int = 5000,
    batch_size: int | None = None,
    row_batch_size: int | None = None,
    seed: int | None = None,
    return_ess: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Importance-sampling estimate of log p(x) per datum, with its standard error.

    Parameters
    ----------
    x : Tensor of shape (N, ...)
        The data; rows are independent data points. ``proposal`` and ``log_joint`` receive
        row slices of it (``x[rows]``).
    proposal : callable
        ``proposal(x_rows)`` -> a :class:`torch.distributions.Distribution` q(z | x) with
        batch shape (B,) (one proposal per row, any event shape), from which ``sample((S,))``
        draws z of shape (S, B, *event) and whose ``log_prob`` of those is (S, B).
    log_joint : callable
        ``log_joint(x_rows, z)`` -> log p(x, z) = log p(x | z) + log p(z) of shape (S, B) for
        z of shape (S, B, *event), in nats.
    num_samples : int
        Importance samples k per datum (at least 1; the standard error needs 2).
    batch_size : int, optional
        Draws per datum evaluated at once; by default as many as fit in about 8M entries of
        (draws, rows, features) (the features of one datum of ``x``).
    row_batch_size : int, optional
        Rows of ``x`` evaluated at once; by default all, or fewer when one draw per row of
        every row would exceed that budget.
    seed : int, optional
        Seed of the draws (the global random state is restored afterwards); fresh entropy
        when None.
    return_ess : bool
        Also return the effective sample size (sum w)^2 / sum w^2 per datum (between 1 and k).

    Returns
    -------
    estimate : Tensor of shape (N,)
        log (1/k) sum_i w_i in nats, in ``x``'s floating dtype (the model's for integer x).
    stderr : Tensor of shape (N,)
        The delta-method standard error of the estimate (NaN when k = 1).
    ess : Tensor of shape (N,)
        Only with ``return_ess``.

    Examples
    --------
    A model whose marginal is known: z ~ N(0, 1), x | z ~ N(z, 1), so x ~ N(0, 2).

    >>> import torch
    >>> from torch.distributions import Normal
    >>> x = torch.tensor([0.0, 1.0])
    >>> est, se = importance_log_prob(
    ...     x, proposal=lambda x: Normal(x / 2, 0.8),
    ...     log_joint=lambda x, z: Normal(z, 1.0).log_prob(x) + Normal(0.0, 1.0).log_prob(z),
    ...     num_samples=2000, seed=0)
    >>> bool(((est - Normal(0.0, 2 ** 0.5).log_prob(x)).abs() < 4 * se + 1e-3).all())
    True
    """
    if not callable(proposal):
        raise bad_type("proposal", "a callable x -> torch.distributions.Distribution",
                       type(proposal).__name__)
    if not callable(log_joint):
        raise bad_type("log_joint", "a callable (x, z) -> Tensor of shape (S, B)",
                       type(log_joint).__name__)
    if not isinstance(x, torch.Tensor):
        raise bad_type("x", "a Tensor of shape (N, ...)", type(x).__name__,
                       "Convert it with torch.as_tensor(x).")
    if x.dim() < 1 or x.shape[0] < 1:
        raise bad_value("x", "a Tensor with at least one row", f"shape {tuple(x.shape)}")
    num_samples = check_positive_int("num_samples", num_samples)
    n = x.shape[0]
    per_datum = max(1, x[0].numel())
    if row_batch_size is None:
        row_batch_size = max(1, min(n, _BLOCK_ENTRIES // per_datum))
    row_batch_size = check_positive_int("row_batch_size", row_batch_size)
    if batch_size is None:
        batch_size = max(1, _BLOCK_ENTRIES // (per_datum * min(n, row_batch_size)))
    batch_size = min(check_positive_int("batch_size", batch_size), num_samples)
    seed = resolve_seed(seed)

    acc = _accumulator_dtype(x)
    log_s1 = torch.full((n,), -math.inf, dtype=acc, device=x.device)
    log_s2 = torch.full((n,), -math.inf, dtype=acc, device=x.device)
    out_dtype = x.dtype if x.is_floating_point() else None
    with torch.no_grad(), seeded(seed):
        for start in range(0, n, row_batch_size):
            rows = slice(start, min(start + row_batch_size, n))
            xr = x[rows]
            q = proposal(xr)
            done = 0
            while done < num_samples:
                s = min(batch_size, num_samples - done)
                z = q.sample((s,))
                log_p, log_q = log_joint(xr, z), q.log_prob(z)
                for name, value in (("log_joint", log_p), ("proposal", log_q)):
                    if value.shape != (s, xr.shape[0]):
                        raise bad_value(name, f"log-densities of shape (draws, rows) = "
                                        f"{(s, xr.shape[0])}", f"shape {tuple(value.shape)}",
                                        "Sum log p(x, z) and log q(z | x) over the event "
                                        "dimensions (e.g. Independent(..., 1) or "
                                        ".to_event(1) on the proposal).")
                log_w = log_p - log_q
                if out_dtype is None:
                    out_dtype = log_w.dtype
                log_w = log_w.to(acc)
                log_s1[rows] = torch.logaddexp(log_s1[rows], torch.logsumexp(log_w, 0))
                log_s2[rows] = torch.logaddexp(log_s2[rows], torch.logsumexp(2 * log_w, 0))
                done += s
    k = num_samples
    estimate = log_s1 - math.log(k)
    # k sum w^2 / (sum w)^2 - 1 = expm1(log k + log s2 - 2 log s1), >= 0 up to round-off.
    excess = torch.expm1(math.log(k) + log_s2 - 2 * log_s1).clamp_min(0)
    stderr = (excess / (k - 1)).sqrt() if k > 1 else torch.full_like(estimate, math.nan)
    # Non-finite weights everywhere (log p = -inf): the error is undefined, not zero.
    stderr = torch.where(torch.isfinite(estimate), stderr, torch.full_like(stderr, math.nan))
    out = (estimate.to(out_dtype), stderr.to(out_dtype))
    if return_ess:
        out += (torch.exp(2 * log_s1 - log_s2).to(out_dtype),)
    return out
