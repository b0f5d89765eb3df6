"""Emission distributions of the hidden Markov model, one class each.

An emission knows its public parameters, its Pyro priors (sampled inside the model's
``states`` plate), its log-density for every state at once, its closed-form M-step, how to
start EM, how to sample, and how to fill missing values. The HMM class wires them to the
forward–backward core; nothing here knows about time.

Conventions: ``x`` holds the frames of all sequences flattened to (M, D) (Categorical: (M,)
integer symbols); ``params`` values have the state dimension K first after optional leading
batch dimensions (*P) of posterior draws; ``log_prob`` returns (*P, M, K).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

from ..._validation import bad_value
from ..gaussian import (
    LOG_2PI,
    cancellation_risk,
    cholesky,
    estimate_parameters,
    full_covariances,
    ill_defined_covariances,
    log_gaussian,
    log_gaussian_exact,
    sufficient_statistics,
)
from ..kmeans import kmeans

__all__ = ["make_emission", "Emission"]



def _safe_log(p: torch.Tensor) -> torch.Tensor:
    """log p with zeros mapped to log(tiny), so 0 * log p stays 0 inside matrix products
    (callers then set impossible entries to -inf explicitly)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def _empty_threshold(counts: torch.Tensor) -> float:
    """States whose count is at most this received (almost) no data."""
    return 10 * torch.finfo(counts.dtype).eps * max(1.0, float(counts.sum()))


def _keep_empty(new: torch.Tensor, old: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """States that received (almost) no data keep their previous parameters."""
    empty = counts <= _empty_threshold(counts)
    shape = (-1,) + (1,) * (new.dim() - 1)
    return torch.where(empty.view(shape), old, new)


def _kmeans_labels(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ labels of the frames (fitted on at most 20,000 of them)."""
    if x.shape[0] > 20_000:
        idx = torch.randperm(x.shape[0], generator=generator, device=x.device)[:20_000]
        centers_from = x[idx]
        labels = kmeans(centers_from, k, generator)
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        centers = (onehot.T @ centers_from) / onehot.sum(0).clamp_min(1).unsqueeze(-1)
        return torch.cdist(x, centers).argmin(1)
    return kmeans(x, k, generator)


class Emission:
    """Base class; see the module docstring for the conventions."""

    name: str = ""
    param_names: tuple[str, ...] = ()
    site_names: tuple[str, ...] = ()
    def __init__(self, num_states: int) -> None:
        self.k = num_states

    # ---------------------------------------------------------------- data checks
    def check_frames(self, x: torch.Tensor, arg: str) -> None:
        """Refuse values outside the support (x holds the real, non-missing frames)."""

    # ------------------------------------------------------------------- densities
    def log_prob(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                 observed: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def pyro_dist(self, sites: dict[str, torch.Tensor], z: torch.Tensor):
        """The Pyro distribution of one frame given (possibly enumerated) states ``z``."""
        raise NotImplementedError

    # --------------------------------------------------------------------- priors
    def sample_sites(self, prior: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Draw the emission's sites; called inside the ``states`` plate (dim -1)."""
        raise NotImplementedError

    def params_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: sites[n] for n in self.param_names}

    def sites_from_params(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: params[n] for n in self.param_names}

    def prior_settings(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    # ------------------------------------------------------------------------- EM
    def initial_params(self, x: torch.Tensor, generator: torch.Generator,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """EM start values of the emission parameters from the frames."""
        raise NotImplementedError

    # EM works on per-frame features computed once per fit (by default the frames). The
    # M-step reads only sufficient statistics that add up over frames (em_statistics), so
    # shards of the frames (one per process) give the single-process M-step once summed.
    def em_features(self, x: torch.Tensor, constants: dict[str, Any]) -> torch.Tensor:
        """Per-frame features of the frames ``x``, with the fit-wide ``constants`` the model
        took from the whole data (the same on every process, whose ``x`` is its share)."""
        return x

    def em_log_prob(self, params: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        return self.log_prob(params, feats)

    def em_statistics(self, feats: torch.Tensor,
                      gamma: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sufficient statistics of the M-step from the features and the state marginals
        ``gamma`` (M, K): tensors that add up over any split of the frames."""
        raise NotImplementedError

    def em_m_step(self, stats: dict[str, torch.Tensor], num_frames: float,
                  old: dict[str, torch.Tensor],
                  fixed: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
        """Closed-form M-step from :meth:`em_statistics` (summed over every frame) of the
        parameters not in ``fixed`` (which the caller keeps as they are)."""
        raise NotImplementedError

    def log_prior(self, params: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """Log prior density (up to a constant) that the EM M-step maximises with the data."""
        return 0.0

    # --------------------------------------------------------------- applications
    def sample(self, params: dict[str, torch.Tensor], z: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def fill(self, params: dict[str, torch.Tensor], x: torch.Tensor, missing: torch.Tensor,
             gamma: torch.Tensor) -> torch.Tensor:
        """Missing entries of the frames ``x`` (M, D) filled from the state marginals."""
        raise NotImplementedError

    def relabel_features(self, sites: dict[str, torch.Tensor],
                         prior: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-state features (S, K, F) used to undo label switching."""
        raise NotImplementedError

    def site_dims(self) -> dict[str, list[str]]:
        return {}

    def site_supports(self) -> dict[str, tuple[Any, int]]:
        """Support constraint and event dimension of each site (for a MAP guide)."""
        raise NotImplementedError


# ------------------------------------------------------------------------- Gaussian
class GaussianEmission(Emission):
    name = "gaussian"
    param_names = ("locs", "covariances")

    def __init__(self, num_states: int, *, covariance: str, reg_covar: float,
                 lkj_concentration: float) -> None:
        super().__init__(num_states)
        self.covariance = covariance
        self.reg_covar = reg_covar
        self.lkj_concentration = lkj_concentration
        self.site_names = ("locs", "scales", "corr_chol") if covariance == "full" else (
            "locs", "scales")
        # EM's fit-wide centre and form of the features, set by em_features / em_fused_centre
        self._shift: torch.Tensor | None = None
        self._natural = False

    def log_prob(self, params, x, observed=None):
        locs, cov = params["locs"], params["covariances"]
        d = x.shape[-1]
        if locs.dim() > 2:  # posterior draws: (*P, K, D)
            full = full_covariances(cov, self.covariance, d)
            mvn = dist.MultivariateNormal(locs.unsqueeze(-3), covariance_matrix=full.unsqueeze(-4))
            return mvn.log_prob(x.unsqueeze(-2))
        # Centre on the state means' average (float32 data far from the origin), and sum
        # each Mahalanobis distance from its own differences: exact also when the means lie
        # hundreds of standard deviations apart (log_gaussian_exact).
        shift = locs.detach().mean(0)
        x, locs = x - shift, locs - shift
        chol = cholesky(cov, self.covariance)
        if observed is None or bool(observed.all()):
            radius = float(x.detach().square().sum(-1).max()) if x.shape[0] else 0.0
            risk = cancellation_risk(radius, locs.detach(), chol.detach(), self.covariance)
            if risk > 1e-11:
                return log_gaussian_exact(x, locs, chol, self.covariance)
            return log_gaussian(x, locs, chol, self.covariance)
        if self.covariance != "full":
            # Independent coordinates: missing ones simply drop out of the sum.
            return log_gaussian_exact(torch.where(observed, x, torch.zeros_like(x)), locs,
                                      chol, self.covariance, observed)
        out = torch.zeros(x.shape[0], self.k, dtype=x.dtype, device=x.device)
        full = cov
        patterns, which = torch.unique(observed, dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):  # one pass per distinct missing pattern
            rows = which == p
            if not bool(pattern.any()):
                continue
            sub = full[:, pattern][:, :, pattern]
            out[rows] = log_gaussian_exact(x[rows][:, pattern], locs[:, pattern],
                                            torch.linalg.cholesky(sub), "full")
        return out

    def pyro_dist(self, sites, z):
        loc = Vindex(sites["locs"])[..., z, :]
        if self.covariance == "full" and "corr_chol" in sites:
            tril = sites["scales"].unsqueeze(-1) * sites["corr_chol"]
            return dist.MultivariateNormal(loc, scale_tril=Vindex(tril)[..., z, :, :])
        if self.covariance == "spherical":
            scale = Vindex(sites["scales"])[..., z].unsqueeze(-1).expand(loc.shape)
        else:
            scale = Vindex(sites["scales"])[..., z, :]
        return dist.Normal(loc, scale).to_event(1)

    def prior_settings(self, x):
        scale = x.std(0).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones_like(x[0])
        return {"prior_loc": x.mean(0), "prior_scale": scale}

    def sample_sites(self, prior):
        loc0, scale0 = prior["prior_loc"], prior["prior_scale"]
        d = loc0.shape[-1]
        out = {"locs": pyro.sample("locs", dist.Normal(loc0, 2 * scale0).to_event(1))}
        if self.covariance == "spherical":
            out["scales"] = pyro.sample("scales", dist.LogNormal(scale0.log().mean(), 1.0))
        else:
            out["scales"] = pyro.sample("scales", dist.LogNormal(scale0.log(), 1.0).to_event(1))
        if self.covariance == "full" and d > 1:
            out["corr_chol"] = pyro.sample("corr_chol",
                                           dist.LKJCholesky(d, self.lkj_concentration))
        return out

    def params_from_sites(self, sites):
        locs, scales = sites["locs"], sites["scales"]
        if self.covariance == "full":
            d = locs.shape[-1]
            corr = sites.get("corr_chol")
            if corr is None:
                corr = torch.eye(d, dtype=locs.dtype, device=locs.device).expand(
                    *scales.shape, d)
            tril = scales.unsqueeze(-1) * corr
            return {"locs": locs, "covariances": tril @ tril.transpose(-1, -2)}
        return {"locs": locs, "covariances": scales.square()}

    def sites_from_params(self, params):
        locs, cov = params["locs"], params["covariances"]
        d = locs.shape[-1]
        full = full_covariances(cov, self.covariance, d)
        std = full.diagonal(dim1=-2, dim2=-1).sqrt()
        out = {"locs": locs, "scales": cov.sqrt() if self.covariance == "spherical" else std}
        if self.covariance == "full" and d > 1:
            out["corr_chol"] = torch.linalg.cholesky(full / (std.unsqueeze(-1)
                                                             * std.unsqueeze(-2)))
        return out

    def initial_params(self, x, generator, dtype):
        labels = _kmeans_labels(x, self.k, generator)
        resp = torch.nn.functional.one_hot(labels, self.k).to(x.dtype)
        reg = max(self.reg_covar, 1e-6 * float(x.var(0).mean())) if x.shape[0] > 1 else 1e-6
        shift = x.mean(0)
        nk, sx, sxx = sufficient_statistics(x - shift, resp, self.covariance)
        _, locs, cov = estimate_parameters(nk, sx, sxx, x.shape[0], self.covariance, reg)
        return {"locs": locs + shift, "covariances": cov}

    # EM's statistics are those of the frames centred on their mean (``_shift``, one for the
    # whole fit). In float64 EM uses the exponential-family form: with centred frames xc,
    # the features [second moments of xc, xc, 1] times a (F, K) matrix of natural
    # parameters give all log-densities in one matrix product, and the responsibilities
    # times the same features give every sufficient statistic in another (as the
    # mixture's x2 path); float32 keeps the frames and the direct densities.
    def em_features(self, x, constants):
        """``constants``: ``centre``, the real frames' mean, and (float64) ``sq_radius``,
        their largest squared distance from it."""
        self._shift = constants["centre"]
        self._natural = x.dtype == torch.float64
        if not self._natural:
            return x
        xc = x - self._shift
        self._sq_radius = constants["sq_radius"]
        if self.covariance == "full":
            second = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(xc.shape[0], -1)
        elif self.covariance == "diag":
            second = xc.square()
        else:
            second = xc.square().sum(-1, keepdim=True)
        return torch.cat([second, xc, torch.ones_like(xc[:, :1])], 1)

    def em_log_prob(self, params, feats):
        if not self._natural:
            return self.log_prob(params, feats)
        locs, cov = params["locs"] - self._shift, params["covariances"]
        d = locs.shape[-1]
        width = feats.shape[1] - d - 1
        chol = cholesky(cov, self.covariance)
        if cancellation_risk(self._sq_radius, locs, chol, self.covariance) > 1e-11:
            # The expanded product below would lose ~eps |x|^2 / var (1e-8 relative when the
            # means are far apart relative to their spread): the exact differences instead.
            return log_gaussian_exact(feats[:, width:width + d], locs, chol, self.covariance)
        return self._expanded_log_prob(locs, cov, chol, feats)

    def _expanded_log_prob(self, locs, cov, chol, feats):
        """[second moments, xc, 1] @ natural parameters: all log-densities in one GEMM."""
        k, d = locs.shape
        if self.covariance == "full":
            eye = torch.eye(d, dtype=cov.dtype, device=cov.device).expand(k, d, d)
            inv_chol = torch.linalg.solve_triangular(chol, eye, upper=False)
            prec = inv_chol.transpose(-1, -2) @ inv_chol
            prec_mu = (prec @ locs.unsqueeze(-1)).squeeze(-1)
            second = -0.5 * prec.reshape(k, d * d)
            log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        elif self.covariance == "diag":
            prec = cov.reciprocal()
            prec_mu = locs * prec
            second = -0.5 * prec
            log_det = cov.log().sum(-1)
        else:
            prec = cov.reciprocal()
            prec_mu = locs * prec.unsqueeze(-1)
            second = -0.5 * prec.unsqueeze(-1)
            log_det = d * cov.log()
        const = -0.5 * (d * LOG_2PI + log_det + (locs * prec_mu).sum(-1))
        weights = torch.cat([second, prec_mu, const.unsqueeze(-1)], 1)  # (K, F)
        return feats @ weights.T

    def em_statistics(self, feats, gamma):
        """``counts`` (K,), ``sums`` (K, D) and ``squares`` of the centred frames: (K, D, D)
        full, (K, D) diag, (K,) spherical."""
        if not self._natural:
            nk, sx, sxx = sufficient_statistics(feats - self._shift, gamma, self.covariance)
            return {"counts": nk, "sums": sx, "squares": sxx}
        stats = gamma.T @ feats  # (K, F): second moments, sums, counts
        d = self._shift.shape[-1]
        width = feats.shape[1] - d - 1
        sxx = stats[:, :width]
        if self.covariance == "full":
            sxx = sxx.view(-1, d, d)
        elif self.covariance == "spherical":
            sxx = sxx.squeeze(-1)
        return {"counts": stats[:, -1], "sums": stats[:, width:width + d], "squares": sxx}

    def em_m_step(self, stats, num_frames, old, fixed=frozenset()):
        nk = stats["counts"]
        held = old["locs"] - self._shift if "locs" in fixed else None
        _, locs, cov = estimate_parameters(nk, stats["sums"], stats["squares"], num_frames,
                                            self.covariance, self.reg_covar, held)
        locs = locs + self._shift
        if float(nk.min()) > _empty_threshold(nk):  # no empty state: _keep_empty keeps all
            return {"locs": locs, "covariances": cov}
        return {"locs": _keep_empty(locs, old["locs"], nk),
                "covariances": _keep_empty(cov, old["covariances"], nk)}

    # The fused compiled E-step (ppgen.models.sequence.compiled.gaussian_e_step) works on
    # frames centred on their mean (as em_features) and reads the constants below; its
    # statistics feed the same closed-form M-step as the unfused path.
    def em_fused_centre(self, constants):
        """Set and return the fit's centre, ``constants["centre"]`` (the mean of the whole
        data's real frames)."""
        self._shift = constants["centre"]
        self._natural = False  # no features
        return self._shift

    def em_fused_params(self, params):
        """The arrays :func:`~ppgen.models.sequence.compiled.gaussian_e_step` reads, in its
        layout (float64 NumPy): centred means transposed (D, K), factors (D, D, K) (the
        inverse Cholesky factors, full, or the precisions on the diagonal, diag and
        spherical), log normalisers (K,), and whether the covariances are full."""
        locs, cov = params["locs"].detach(), params["covariances"].detach()
        k, d = locs.shape
        locs_t = np.ascontiguousarray((locs.numpy() - self._shift.numpy()).T)
        if self.covariance == "full":
            chol = cholesky(cov, self.covariance)  # the error for ill-defined covariances
            eye = torch.eye(d, dtype=cov.dtype, device=cov.device).expand(k, d, d)
            factors = torch.linalg.solve_triangular(chol, eye, upper=False)
            half_log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            factors_t = np.ascontiguousarray(factors.numpy().transpose(1, 2, 0))
        else:
            var = cov.unsqueeze(-1).expand(k, d) if self.covariance == "spherical" else cov
            v = var.numpy()
            if not (v.min() > 0 and v.max() < math.inf):  # NaN fails both
                raise ill_defined_covariances()
            factors_t = np.zeros((d, d, k), dtype=v.dtype)
            factors_t.reshape(d * d, k)[::d + 1] = (1.0 / v).T  # the diagonal [a, a, k]
            half_log_det = 0.5 * var.log().sum(-1)
        log_norm = (-0.5 * d * LOG_2PI - half_log_det).numpy()
        return locs_t, factors_t, log_norm, self.covariance == "full"

    def em_fused_statistics(self, stats):
        """:meth:`em_statistics` from the fused E-step's ``counts``, ``sums`` and
        ``squares`` (always (K, D, D))."""
        sxx = stats["squares"]
        if self.covariance != "full":
            sxx = sxx.diagonal(dim1=-2, dim2=-1)
            if self.covariance == "spherical":
                sxx = sxx.sum(-1)
        return {"counts": stats["counts"], "sums": stats["sums"], "squares": sxx}

    def sample(self, params, z, generator):
        locs, cov = params["locs"], params["covariances"]
        d = locs.shape[-1]
        tril = torch.linalg.cholesky(full_covariances(cov, self.covariance, d))
        eps = torch.randn(*z.shape, d, generator=generator, dtype=locs.dtype, device=locs.device)
        return locs[z] + (tril[z] @ eps.unsqueeze(-1)).squeeze(-1)

    def fill(self, params, x, missing, gamma):
        locs = params["locs"]
        full = full_covariances(params["covariances"], self.covariance, x.shape[-1])
        out = x.clone()
        patterns, which = torch.unique(missing, dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):  # one pass per distinct missing pattern
            rows = (which == p).nonzero().squeeze(-1)
            if not bool(pattern.any()):
                continue
            mis, obs = pattern, ~pattern
            if not bool(obs.any()):
                filled = gamma[rows] @ locs[:, mis]
            else:
                s_oo = full[:, obs][:, :, obs]
                s_mo = full[:, mis][:, :, obs]
                diff = x[rows][:, obs].unsqueeze(1) - locs[:, obs]  # (R, K, O)
                sol = torch.cholesky_solve(diff.permute(1, 2, 0), torch.linalg.cholesky(s_oo))
                cond = locs[:, mis].unsqueeze(-1) + s_mo @ sol  # (K, M, R)
                filled = torch.einsum("rk,kmr->rm", gamma[rows], cond)
            block = out[rows]
            block[:, mis] = filled
            out[rows] = block
        return out

    def relabel_features(self, sites, prior):
        return sites["locs"] / prior["prior_scale"]

    def site_supports(self):
        spherical = self.covariance == "spherical"
        return {"locs": (constraints.real, 1),
                "scales": (constraints.positive, 0 if spherical else 1),
                "corr_chol": (constraints.corr_cholesky, 2)}

    def site_dims(self):
        dims = {"locs": ["state", "feature"], "scales": ["state", "feature"],
                "corr_chol": ["state", "row", "col"]}
        if self.covariance == "spherical":
            dims["scales"] = ["state"]
        return dims


# -------------------------------------------------------------------------- Bernoulli
class BernoulliEmission(Emission):
    name = "bernoulli"
    param_names = ("probs",)
    site_names = ("probs",)

    def __init__(self, num_states: int, *, concentration: float) -> None:
        super().__init__(num_states)
        self.concentration = concentration

    def check_frames(self, x, arg):
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            raise bad_value(arg, "bits (0 or 1) for emission='bernoulli'",
                            f"{int(bad.sum())} other values, e.g. {float(x[bad][0])}",
                            "Binarise the data, or use emission='gaussian' or 'poisson'.")

    def log_prob(self, params, x, observed=None):
        p = params["probs"]
        log_p, log_q = _safe_log(p), _safe_log(1 - p)
        if observed is not None:
            o = observed.to(x.dtype)
            x = torch.where(observed, x, torch.zeros_like(x))
            out = x @ log_p.transpose(-1, -2) + (o - x) @ log_q.transpose(-1, -2)
            ones = o - x
        else:
            out = x @ (log_p - log_q).transpose(-1, -2) + log_q.sum(-1).unsqueeze(-2)
            ones = 1 - x
        # A bit that a state never emits makes the frame impossible there: exactly -inf
        # (the safe logs above only keep 0 * log 0 out of the products).
        never = x @ (p == 0).to(x.dtype).transpose(-1, -2) + \
            ones @ (p == 1).to(x.dtype).transpose(-1, -2)
        return out.masked_fill(never > 0, -math.inf)

    def pyro_dist(self, sites, z):
        return dist.Bernoulli(Vindex(sites["probs"])[..., z, :]).to_event(1)

    def prior_settings(self, x):
        return {"prior_loc": x.mean(0)}

    def sample_sites(self, prior):
        a = torch.full_like(prior["prior_loc"], self.concentration)
        return {"probs": pyro.sample("probs", dist.Beta(a, a).to_event(1))}

    def initial_params(self, x, generator, dtype):
        labels = _kmeans_labels(x, self.k, generator)
        onehot = torch.nn.functional.one_hot(labels, self.k).to(x.dtype)
        means = (onehot.T @ x) / onehot.sum(0).clamp_min(1).unsqueeze(-1)
        probs = (0.8 * means + 0.2 * x.mean(0)).clamp(1e-3, 1 - 1e-3)
        return {"probs": probs}

    def em_statistics(self, feats, gamma):
        return {"counts": gamma.sum(0), "sums": gamma.T @ feats}

    def em_m_step(self, stats, num_frames, old, fixed=frozenset()):
        a = self.concentration - 1
        nk = stats["counts"]
        probs = ((stats["sums"] + a) / (nk.unsqueeze(-1) + 2 * a)).clamp(0, 1)
        return {"probs": _keep_empty(probs, old["probs"], nk + 2 * a)}

    def log_prior(self, params):
        a = self.concentration - 1
        if a == 0:
            return 0.0
        p = params["probs"]
        return a * (_safe_log(p) + _safe_log(1 - p)).sum()

    def sample(self, params, z, generator):
        p = params["probs"][z]
        return (torch.rand(p.shape, generator=generator, dtype=p.dtype,
                           device=p.device) < p).to(p.dtype)

    def fill(self, params, x, missing, gamma):
        # The most probable bit under the posterior predictive p(x_td | rest of the data).
        predictive = gamma @ params["probs"]
        return torch.where(missing, (predictive > 0.5).to(x.dtype), x)

    def relabel_features(self, sites, prior):
        p = sites["probs"].clamp(1e-6, 1 - 1e-6)
        return (p / (1 - p)).log()

    def site_supports(self):
        return {"probs": (constraints.unit_interval, 1)}

    def site_dims(self):
        return {"probs": ["state", "feature"]}


# ---------------------------------------------------------------------------- Poisson
class PoissonEmission(Emission):
    name = "poisson"
    param_names = ("rates",)
    site_names = ("rates",)

    def check_frames(self, x, arg):
        bad = (x < 0) | (x != x.round())
        if bool(bad.any()):
            raise bad_value(arg, "non-negative integer counts for emission='poisson'",
                            f"{int(bad.sum())} other values, e.g. {float(x[bad][0])}",
                            "Round or shift the counts, or use emission='gaussian'.")

    def log_prob(self, params, x, observed=None):
        r = params["rates"]
        if observed is not None:
            o = observed.to(x.dtype)
            x = torch.where(observed, x, torch.zeros_like(x))
            out = (x @ _safe_log(r).transpose(-1, -2) - o @ r.transpose(-1, -2)
                   - torch.lgamma(x + 1).sum(-1, keepdim=True))
        else:
            out = (x @ _safe_log(r).transpose(-1, -2) - r.sum(-1).unsqueeze(-2)
                   - torch.lgamma(x + 1).sum(-1, keepdim=True))
        # A positive count where a state's rate is 0 is impossible there: exactly -inf.
        never = (x > 0).to(x.dtype) @ (r == 0).to(x.dtype).transpose(-1, -2)
        return out.masked_fill(never > 0, -math.inf)

    def pyro_dist(self, sites, z):
        return dist.Poisson(Vindex(sites["rates"])[..., z, :]).to_event(1)

    def prior_settings(self, x):
        return {"prior_loc": x.mean(0).clamp_min(1e-3)}

    def sample_sites(self, prior):
        # Exponential prior (Gamma with shape 1) whose mean is the data's mean count.
        rate0 = prior["prior_loc"]
        return {"rates": pyro.sample("rates", dist.Gamma(torch.ones_like(rate0),
                                                         rate0.reciprocal()).to_event(1))}

    def initial_params(self, x, generator, dtype):
        labels = _kmeans_labels(x, self.k, generator)
        onehot = torch.nn.functional.one_hot(labels, self.k).to(x.dtype)
        means = (onehot.T @ x) / onehot.sum(0).clamp_min(1).unsqueeze(-1)
        return {"rates": (0.9 * means + 0.1 * x.mean(0)).clamp_min(1e-3)}

    def em_statistics(self, feats, gamma):
        return {"counts": gamma.sum(0), "sums": gamma.T @ feats}

    def em_m_step(self, stats, num_frames, old, fixed=frozenset()):
        nk, sums = stats["counts"], stats["sums"]
        rates = sums / nk.clamp_min(torch.finfo(sums.dtype).tiny).unsqueeze(-1)
        return {"rates": _keep_empty(rates, old["rates"], nk)}

    def sample(self, params, z, generator):
        return torch.poisson(params["rates"][z], generator=generator)

    def fill(self, params, x, missing, gamma):
        # The most probable count under the posterior predictive mixture of Poissons.
        rates = params["rates"]
        top = int(float(rates.max()) + 10 * math.sqrt(float(rates.max())) + 10)
        values = torch.arange(top + 1, dtype=x.dtype, device=x.device)  # (V,)
        log_pmf = (values[:, None, None] * _safe_log(rates) - rates
                   - torch.lgamma(values + 1)[:, None, None])  # (V, K, D)
        rows = missing.any(-1).nonzero().squeeze(-1)
        out = x.clone()
        if rows.numel():
            mix = torch.einsum("rk,vkd->rvd", gamma[rows], log_pmf.exp())
            mode = values[mix.argmax(1)]  # (R, D)
            out[rows] = torch.where(missing[rows], mode, x[rows])
        return out

    def relabel_features(self, sites, prior):
        return (sites["rates"] / prior["prior_loc"]).clamp_min(1e-6).log()

    def site_supports(self):
        return {"rates": (constraints.positive, 1)}

    def site_dims(self):
        return {"rates": ["state", "feature"]}


# ------------------------------------------------------------------------ Categorical
class CategoricalEmission(Emission):
    name = "categorical"
    param_names = ("probs",)
    site_names = ("probs",)

    def __init__(self, num_states: int, *, concentration: float, num_symbols: int) -> None:
        super().__init__(num_states)
        self.concentration = concentration
        self.num_symbols = num_symbols

    def check_frames(self, x, arg):
        if self.num_symbols is None:  # the alphabet is being inferred from these data
            bad = x < 0
            if bool(bad.any()):
                raise bad_value(arg, "symbols >= 0", f"{int(bad.sum())} negative, e.g. "
                                f"{int(x[bad][0])}", "Map the symbols to 0..num_symbols-1.")
            return
        bad = (x < 0) | (x >= self.num_symbols)
        if bool(bad.any()):
            raise bad_value(arg, f"symbols in 0..{self.num_symbols - 1} (num_symbols="
                            f"{self.num_symbols})", f"{int(bad.sum())} out of range, e.g. "
                            f"{int(x[bad][0])}", "Map the symbols to 0..num_symbols-1, or "
                            "set num_symbols to cover them.")

    def log_prob(self, params, x, observed=None):
        log_p = params["probs"].log()  # (*P, K, S); log 0 = -inf for symbols never emitted
        if observed is not None:
            x = torch.where(observed, x, torch.zeros_like(x))
        out = log_p[..., x].transpose(-1, -2)  # (*P, M, K)
        if observed is not None:
            out = out.masked_fill(~observed.unsqueeze(-1), 0.0)
        return out

    def pyro_dist(self, sites, z):
        return dist.Categorical(Vindex(sites["probs"])[..., z, :])

    def prior_settings(self, x):
        freq = torch.bincount(x, minlength=self.num_symbols).to(torch.get_default_dtype())
        return {"prior_loc": freq / freq.sum()}

    def sample_sites(self, prior):
        conc = torch.full_like(prior["prior_loc"], self.concentration)
        return {"probs": pyro.sample("probs", dist.Dirichlet(conc))}

    def initial_params(self, x, generator, dtype):
        freq = torch.bincount(x, minlength=self.num_symbols).to(dtype) + 1
        freq = freq / freq.sum()
        noise = -torch.rand(self.k, self.num_symbols, generator=generator, dtype=dtype,
                            device=x.device).log()
        noise = noise / noise.sum(-1, keepdim=True)
        return {"probs": 0.5 * freq + 0.5 * noise}

    def em_statistics(self, feats, gamma):
        """``counts`` (S, K): the expected emissions of each symbol by each state."""
        counts = torch.zeros(self.num_symbols, self.k, dtype=gamma.dtype, device=gamma.device)
        return {"counts": counts.index_add_(0, feats, gamma)}

    def em_m_step(self, stats, num_frames, old, fixed=frozenset()):
        a = self.concentration - 1
        counts = (stats["counts"].T + a).clamp_min(0)
        total = counts.sum(-1, keepdim=True)
        probs = counts / total.clamp_min(torch.finfo(counts.dtype).tiny)
        return {"probs": _keep_empty(probs, old["probs"], total.squeeze(-1))}

    def log_prior(self, params):
        a = self.concentration - 1
        return 0.0 if a == 0 else a * _safe_log(params["probs"]).sum()

    def sample(self, params, z, generator):
        p = params["probs"][z.reshape(-1)]
        return torch.multinomial(p, 1, generator=generator).reshape(z.shape)

    def fill(self, params, x, missing, gamma):
        # The most probable symbol under the posterior predictive p(x_t | rest of the data).
        return torch.where(missing, (gamma @ params["probs"]).argmax(-1).to(x.dtype), x)

    def relabel_features(self, sites, prior):
        return sites["probs"].clamp_min(1e-6).log()

    def site_supports(self):
        return {"probs": (constraints.simplex, 1)}

    def site_dims(self):
        return {"probs": ["state", "symbol"]}


def make_emission(kind: str, num_states: int, **options: Any) -> Emission:
    if kind == "gaussian":
        return GaussianEmission(num_states, covariance=options["covariance"],
                                reg_covar=options["reg_covar"],
                                lkj_concentration=options["lkj_concentration"])
    if kind == "bernoulli":
        return BernoulliEmission(num_states, concentration=options["emission_concentration"])
    if kind == "poisson":
        return PoissonEmission(num_states)
    return CategoricalEmission(num_states, concentration=options["emission_concentration"],
                               num_symbols=options["num_symbols"])
