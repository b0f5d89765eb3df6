"""Annealed importance sampling of an RBM's log partition function, forward (AIS,
Salakhutdinov & Murray 2008) and reverse (RAISE, Burda, Grosse & Salakhutdinov 2015).

The path of distributions runs from a base-rate model A (no weights; visible biases a from
the data's visible marginals, a_i = log(p_i / (1 - p_i)) for Bernoulli visibles, a = the data
mean for Gaussian ones) to the RBM B. The hidden units are summed out, so each intermediate
distribution over v at inverse temperature beta has the unnormalised log-density

    log f_beta(v) = (1 - beta) v.a + beta v.b + sum_j softplus(beta (c_j + (v W)_j))
    log f_beta(v) = -(1 - beta) |v - a|^2 / 2 - beta |v - b|^2 / 2
                    + sum_j softplus(beta (c_j + (v W)_j))                       (Gaussian)

with log Z_0 = sum_i softplus(a_i) + H log 2 (Gaussian: D/2 log(2 pi) + H log 2), and
f_1 = exp(-F). Its transition T_beta is one block-Gibbs sweep v -> h -> v of the tempered
RBM (h_j ~ sigmoid(beta (c_j + (v W)_j)); v ~ p(v | h) with activations (1 - beta) a +
beta (b + W h)), which is reversible with respect to f_beta.

AIS (forward): v_0 ~ A; for k = 1..K: log w += log f_k(v_{k-1}) - log f_{k-1}(v_{k-1}), then
v_k ~ T_k(v_{k-1}). The mean of w is unbiased for Z_K / Z_0, so log Z_hat = log Z_0 +
log mean(w) is a stochastic *lower* bound on log Z (Jensen): E[log Z_hat] <= log Z, and the
log-likelihood -F(v) - log Z_hat it gives is an (in expectation) *upper* bound.

RAISE (reverse), per datum v: x_K = v; for k = K..1: x_{k-1} ~ T_k(x_k), log w +=
log f_{k-1}(x_{k-1}) - log f_k(x_{k-1}); log w += log f_K(v) - log Z_0. The weight is an
unbiased estimate of p_ann(v), the marginal of the annealing chain's own generative model
(base draw, then the K transitions), so its log is a stochastic lower bound on log p_ann(v);
p_ann tends to the RBM as K grows. For a model near its maximum likelihood p_ann (a model
the chains have not quite reached) fits the data worse than p, and the estimate sits *below*
log p(v): the conservative side of the bracket (tests/test_rbm.py: 10 hidden units fitted by
the exact gradient to MNIST, RAISE 0.4-1 nats below and AIS 0.4-1 above the exact value at
1000 betas). For a CD-1-trained RBM the short chains are what CD fitted, p_ann can be the
better model, and RAISE lands *above* log p(v) (about +0.5 nats at 1000 betas, measured);
read it as a bracket only for models trained towards maximum likelihood (PCD, long runs).

Standard errors are the delta method for the log of a mean: sd(w) / (sqrt(M) mean(w)) from
normalised weights (nothing overflows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .ops import Visible

__all__ = ["Schedule", "betas", "base_rate_bias", "ais_log_partition", "raise_log_prob",
           "log_mean_exp"]

Schedule = Literal["linear", "geometric", "sigmoid"]


def betas(num_betas: int, schedule: Schedule, *, dtype: torch.dtype = torch.float64,
          device: torch.device | None = None) -> torch.Tensor:
    """Inverse temperatures 0 = beta_0 < ... < beta_K = 1, K = ``num_betas``.

    ``"linear"``: evenly spaced. ``"geometric"``: beta_k = 10^(-4 (1 - k/K)) for k >= 1 (dense
    near 0, where the path starts), after beta_0 = 0. ``"sigmoid"``: Grosse et al. (2013)'s
    sigmoid schedule, sigmoid(delta (2k/K - 1)) rescaled to [0, 1] with delta = 4 (dense at
    both ends)."""
    k = torch.arange(num_betas + 1, dtype=torch.float64)
    if schedule == "linear":
        out = k / num_betas
    elif schedule == "geometric":
        out = 10.0 ** (-4.0 * (1 - k / num_betas))
        out[0] = 0.0
    else:
        s = torch.sigmoid(4.0 * (2 * k / num_betas - 1))
        out = (s - s[0]) / (s[-1] - s[0])
    return out.to(dtype=dtype, device=device)


def base_rate_bias(data: torch.Tensor, visible: Visible, *, smoothing: float = 0.05
                   ) -> torch.Tensor:
    """The base-rate model's visible biases from data (N, D): the log-odds of the visible
    marginals, pulled towards 1/2 by ``smoothing`` pseudo-counts per datum (Salakhutdinov &
    Murray use a few; without them a pixel never on would get bias -inf), or the data mean for
    Gaussian visibles."""
    if visible == "gaussian":
        return data.mean(0)
    n = data.shape[0]
    p = (data.sum(0) + smoothing * n) / (n + 2 * smoothing * n)
    return torch.log(p) - torch.log1p(-p)


@dataclass
class _Path:
    weights: torch.Tensor
    visible_bias: torch.Tensor
    hidden_bias: torch.Tensor
    base_bias: torch.Tensor
    visible: Visible

    def log_f(self, v: torch.Tensor, act: torch.Tensor, beta: float) -> torch.Tensor:
        """log f_beta(v) from v (..., D) and act = v W + c (..., H)."""
        hidden = F.softplus(beta * act).sum(-1)
        if self.visible == "bernoulli":
            return (1 - beta) * (v @ self.base_bias) + beta * (v @ self.visible_bias) + hidden
        return (-(1 - beta) * 0.5 * (v - self.base_bias).square().sum(-1)
                - beta * 0.5 * (v - self.visible_bias).square().sum(-1) + hidden)

    def act(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.weights + self.hidden_bias

    def gibbs(self, act: torch.Tensor, beta: float, generator: torch.Generator
              ) -> torch.Tensor:
        """One sweep of T_beta from the hidden activations of the current v; the new v."""
        p = torch.sigmoid(beta * act)
        h = (torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
             < p).to(p.dtype)
        mean = (1 - beta) * self.base_bias + beta * (h @ self.weights.T + self.visible_bias)
        if self.visible == "bernoulli":
            u = torch.rand(mean.shape, generator=generator, dtype=mean.dtype,
                           device=mean.device)
            return (u < torch.sigmoid(mean)).to(mean.dtype)
        return mean + torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                                  device=mean.device)

    def base_sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        a = self.base_bias.expand(num, -1)
        if self.visible == "bernoulli":
            u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
            return (u < torch.sigmoid(a)).to(a.dtype)
        return a + torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)

    def log_z0(self) -> float:
        num_visible, num_hidden = self.weights.shape
        base = (float(F.softplus(self.base_bias).sum()) if self.visible == "bernoulli"
                else 0.5 * num_visible * math.log(2 * math.pi))
        return base + num_hidden * math.log(2.0)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """log mean exp(log_w) along ``dim`` and its delta-method standard error sd(w) /
    (sqrt(M) mean(w)) (0 for M = 1)."""
    m = log_w.shape[dim]
    top = log_w.max(dim, keepdim=True).values
    w = torch.exp(log_w - top)
    mean = w.mean(dim)
    est = torch.log(mean) + top.squeeze(dim)
    if m < 2:
        return est, torch.zeros_like(est)
    se = w.std(dim) / (math.sqrt(m) * mean)
    return est, se


def _path(weights, visible_bias, hidden_bias, base_bias, visible) -> _Path:
    dt = torch.float64
    return _Path(weights.to(dt), visible_bias.to(dt), hidden_bias.to(dt), base_bias.to(dt),
                 visible)


def ais_log_partition(weights: torch.Tensor, visible_bias: torch.Tensor,
                      hidden_bias: torch.Tensor, base_bias: torch.Tensor, visible: Visible, *,
                      num_samples: int, beta_path: torch.Tensor, generator: torch.Generator
                      ) -> tuple[float, float, torch.Tensor]:
    """Forward AIS (module docstring) with ``num_samples`` chains, in float64: (log Z
    estimate, its standard error, the log-weights (num_samples,))."""
    path = _path(weights, visible_bias, hidden_bias, base_bias, visible)
    b = beta_path.tolist()
    v = path.base_sample(num_samples, generator)
    log_w = torch.zeros(num_samples, dtype=torch.float64, device=v.device)
    for k in range(1, len(b)):
        act = path.act(v)
        log_w += path.log_f(v, act, b[k]) - path.log_f(v, act, b[k - 1])
        if k < len(b) - 1:
            v = path.gibbs(act, b[k], generator)
    est, se = log_mean_exp(log_w)
    return float(est) + path.log_z0(), float(se), log_w


def raise_log_prob(data: torch.Tensor, weights: torch.Tensor, visible_bias: torch.Tensor,
                   hidden_bias: torch.Tensor, base_bias: torch.Tensor, visible: Visible, *,
                   num_samples: int, beta_path: torch.Tensor, generator: torch.Generator,
                   max_rows: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse AIS (module docstring): per datum of ``data`` (N, D), the RAISE estimate of
    log p(v) with ``num_samples`` reverse chains and its standard error, each (N,), float64.
    Rows are processed ``max_rows`` chains' worth at a time."""
    path = _path(weights, visible_bias, hidden_bias, base_bias, visible)
    b = beta_path.tolist()
    x_all = data.to(torch.float64)
    rows = max(1, max_rows // num_samples)
    ests, ses = [], []
    for start in range(0, x_all.shape[0], rows):
        x0 = x_all[start:start + rows]
        n = x0.shape[0]
        x = x0.repeat(num_samples, 1)  # (M * n, D), chain-major
        act = path.act(x)
        log_w = path.log_f(x, act, 1.0) - path.log_z0()
        for k in range(len(b) - 1, 0, -1):
            x = path.gibbs(act, b[k], generator)
            act = path.act(x)
            log_w += path.log_f(x, act, b[k - 1]) - path.log_f(x, act, b[k])
        est, se = log_mean_exp(log_w.reshape(num_samples, n))
        ests.append(est)
        ses.append(se)
    return torch.cat(ests), torch.cat(ses)
