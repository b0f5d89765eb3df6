"""Gaussian mixture: a Pyro model with enumerated assignments and closed-form EM.

The Gaussian algebra (log-densities, sufficient statistics, the M-step) lives in
:mod:`ppgen.models.gaussian`, the k-means++ start in :mod:`ppgen.models.kmeans` and the
label-switching helpers in :mod:`ppgen.models.relabel`, all shared with the HMM.

The Pyro model::

    weights ~ Dirichlet(weight_concentration * 1_K)
    for k in components:
        locs[k]   ~ Normal(prior_loc, 2 * prior_scale)                       (D,)
        scales[k] ~ LogNormal(log prior_scale, 1)           (D,) or () if spherical
        corr[k]   ~ LKJCholesky(D, lkj_concentration)       full covariance only
    for n in data:
        assignment[n] ~ Categorical(weights)                 enumerated, summed out
        obs[n] ~ MultivariateNormal(locs[z], scale_tril = diag(scales[z]) @ corr[z])

``prior_loc`` and ``prior_scale`` are the training data's mean and standard deviation per
feature (set by :meth:`GaussianMixture.prepare`), so the priors are weakly informative in the
data's units. EM maximises the likelihood (priors ignored) with ``reg_covar`` added to the
covariance diagonal in every M-step, exactly as scikit-learn's ``GaussianMixture`` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from ..._random import derive_seeds, resolve_seed
from ..._validation import (
    bad_value,
    check_choice,
    check_data,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from .._blocks import column_moments, row_blocks
from ..base import GenerativeModel, register
from ..gaussian import (
    cholesky,
    estimate_parameters,
    full_covariances,
    log_gaussian,
    outer_rows,
    scale_warnings,
    sufficient_statistics,
)
from ..kmeans import kmeans_centers
from ..relabel import permute_components, pivot_permutations

__all__ = ["GaussianMixture"]

CovarianceType = Literal["full", "diag", "spherical"]
# Rows per chunk of the E-step, so the (rows, K, D) temporaries stay near 32 MB in float64.
_CHUNK_ELEMENTS = 1_000_000
# Largest data cache (centred rows and their outer products) kept during one EM fit.
_EM_CACHE_BYTES = 2 * 1024**3


# ------------------------------------------------------------------------ pure helpers
def _row_chunks(num_rows: int, num_components: int, num_features: int) -> list[slice]:
    size = max(1, _CHUNK_ELEMENTS // max(1, num_components * num_features))
    return [slice(i, min(i + size, num_rows)) for i in range(0, num_rows, size)]


# ------------------------------------------------------------------------------ model
@register("gmm")
class GaussianMixture(GenerativeModel):
    """Gaussian mixture model with enumerated assignments.

    Parameters
    ----------
    num_components : int
        Number of mixture components K.
    covariance : {"full", "diag", "spherical"}
        Covariance structure; ``covariances`` is shaped like scikit-learn's ``covariances_``:
        (K, D, D), (K, D) or (K,).
    reg_covar : float
        Added to the covariance diagonal in every EM M-step (as scikit-learn does).
    weight_concentration : float
        Concentration of the symmetric Dirichlet prior on the weights (1 = flat).
    lkj_concentration : float
        Concentration of the LKJ prior on correlations (full covariance; 1 = uniform).
    init_method : {"kmeans++", "random"}
        EM/SVI/MCMC start: k-means++ seeding with a few Lloyd steps, or random
        responsibilities.

    Notes
    -----
    ``ppgen.fit(gmm, x)`` runs EM (the default method of models with closed-form EM): a
    maximum-likelihood point estimate. ``method="svi"`` uses the default guide
    ``guide="map"`` (``AutoDelta``: a MAP point estimate); pass ``guide="normal"`` and
    ``num_samples`` for draws from a mean-field variational posterior, or use
    ``method="mcmc"`` (NUTS) for posterior draws. Only fits with draws support PSIS-LOO
    (``ppgen.loo``, ``ppgen.compare``).

    For scikit-learn users: :meth:`score` is the anomaly score -log p(x) per row, not
    scikit-learn's mean log-likelihood; :meth:`score_samples` is scikit-learn's per-row
    log-likelihood (``score_samples(x).mean()`` its ``score``).

    Examples
    --------
    >>> import ppgen
    >>> x = ppgen.datasets.load_old_faithful()
    >>> gmm = ppgen.GaussianMixture(num_components=2)
    >>> fit = ppgen.fit(gmm, x, method="em", seed=0, progress=False)
    >>> round(float(gmm.log_prob(x).sum()), 3)
    -1130.264
    """

    param_names = ("weights", "locs", "covariances")
    state_names = ("prior_loc", "prior_scale")
    has_enumerated_sites = True
    supports_em = True
    #: The E-step's statistics add up over rows: EM runs across processes (ppgen._distributed).
    em_distributed = True
    default_guide = "map"
    column_dims = ("feature", "row", "col")

    def __init__(self, num_components: int, *, covariance: CovarianceType = "full",
                 reg_covar: float = 1e-6, weight_concentration: float = 1.0,
                 lkj_concentration: float = 1.0,
                 init_method: Literal["kmeans++", "random"] = "kmeans++") -> None:
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.covariance = check_choice("covariance", covariance, ("full", "diag", "spherical"))
        self.reg_covar = check_nonnegative_float("reg_covar", reg_covar)
        self.weight_concentration = check_positive_float("weight_concentration",
                                                         weight_concentration)
        self.lkj_concentration = check_positive_float("lkj_concentration", lkj_concentration)
        self.init_method = check_choice("init_method", init_method, ("kmeans++", "random"))
        self._em_shift: torch.Tensor | None = None
        self._em_cache = None
        self._em_stream = False
        self._chol: torch.Tensor | None = None

    def get_config(self) -> dict[str, Any]:
        return {"num_components": self.num_components, "covariance": self.covariance,
                "reg_covar": self.reg_covar, "weight_concentration": self.weight_concentration,
                "lkj_concentration": self.lkj_concentration, "init_method": self.init_method}

    @property
    def num_features(self) -> int | None:
        ref = self.locs if self.locs is not None else self.prior_loc
        return None if ref is None else int(ref.shape[-1])

    def _on_params_changed(self) -> None:
        # Called after set_params / set_state / EM steps and after every ``.to()``: the
        # Cholesky factors are recomputed lazily, in the parameters' dtype and device.
        self._chol = None

    def _cached_chol(self) -> torch.Tensor:
        cov = self.covariances
        chol = self._chol
        if chol is None or chol.device != cov.device or chol.dtype != cov.dtype:
            chol = self._chol = cholesky(cov, self.covariance)
        return chol

    # ------------------------------------------------------------ parameter checks
    def _check_params(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        k = self.num_components
        ref = self.locs if self.locs is not None else self.prior_loc
        dtype = ref.dtype if ref is not None else None
        device = ref.device if ref is not None else None
        if "locs" in params:
            locs = check_data(params["locs"], arg="params['locs']", dtype=dtype, device=device)
            if locs.shape[0] != k:
                raise bad_value("params['locs']", f"shape ({k}, num_features)",
                                f"shape {tuple(locs.shape)}")
            out["locs"] = locs
            dtype, device = locs.dtype, locs.device
        d = out["locs"].shape[1] if "locs" in out else self.num_features
        if "weights" in params:
            w = torch.as_tensor(params["weights"], dtype=dtype, device=device)
            if w.shape != (k,) or bool((w < 0).any()) or abs(float(w.sum()) - 1) > 1e-6:
                raise bad_value("params['weights']", f"{k} non-negative numbers summing to 1",
                                f"{w.tolist() if w.numel() < 20 else tuple(w.shape)}")
            out["weights"] = w
        if "covariances" in params:
            c = torch.as_tensor(params["covariances"], dtype=dtype, device=device)
            want = {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[self.covariance]
            if d is not None and tuple(c.shape) != want:
                raise bad_value("params['covariances']", f"shape {want} for covariance="
                                f"{self.covariance!r}", f"shape {tuple(c.shape)}")
            try:
                cholesky(c, self.covariance)
            except ValueError:
                raise bad_value("params['covariances']", "positive-definite covariances",
                                "a matrix that is not", "Add a small value to the diagonal."
                                ) from None
            out["covariances"] = c
        return out

    # ----------------------------------------------------------------- preparation
    def prepare(self, data: Any) -> torch.Tensor:
        x = check_data(data, arg="data")
        if x.shape[0] < self.num_components:
            raise bad_value("num_components", f"at most the number of rows of data "
                            f"({x.shape[0]})", self.num_components,
                            "Use fewer components or more data.")
        mean, var = column_moments(x, unbiased=True)
        self.prior_loc = mean
        self.prior_scale = var.sqrt().clamp_min(1e-6) if x.shape[0] > 1 else torch.ones_like(
            self.prior_loc)
        # A memory-mapped file is streamed: EM reads it block by block and keeps no copy.
        self._em_stream = isinstance(data, np.memmap)
        return x

    def _prior_settings(self, data):
        if self.prior_loc is not None:
            return self.prior_loc, self.prior_scale
        if data is None:
            raise ValueError("GaussianMixture.model: the prior is set from the data; call "
                             "model.prepare(data) (ppgen.fit does) or pass data.")
        return data.mean(0), data.std(0).clamp_min(1e-6)

    # ------------------------------------------------------------------ Pyro model
    def model(self, data: torch.Tensor | None = None, *, num_data: int | None = None,
              subsample_size: int | None = None) -> torch.Tensor:
        """The generative process (see the module docstring); returns the observations.

        Parameters
        ----------
        data : Tensor of shape (num_data, num_features), optional
            Observations; None draws from the prior predictive (give ``num_data``).
        subsample_size : int, optional
            Minibatch size for SVI (the data plate subsamples and rescales).
        """
        loc0, scale0 = self._prior_settings(data)
        k, d = self.num_components, loc0.shape[-1]
        weights = pyro.sample("weights", dist.Dirichlet(
            torch.full((k,), self.weight_concentration, dtype=loc0.dtype, device=loc0.device)))
        with pyro.plate("components", k, dim=-1):
            locs = pyro.sample("locs", dist.Normal(loc0, 2 * scale0).to_event(1))
            if self.covariance == "spherical":
                scales = pyro.sample("scales", dist.LogNormal(scale0.log().mean(), 1.0))
            else:
                scales = pyro.sample("scales", dist.LogNormal(scale0.log(), 1.0).to_event(1))
            if self.covariance == "full" and d > 1:
                corr = pyro.sample("corr_chol", dist.LKJCholesky(d, self.lkj_concentration))
        if num_data is None:
            if data is None:
                raise ValueError("GaussianMixture.model: give data or num_data.")
            num_data = data.shape[0]
        with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
            x = None if data is None else data[idx]
            z = pyro.sample("assignment", dist.Categorical(weights),
                            infer={"enumerate": "parallel"})
            # Component parameters get a unit dimension left of the component dimension, so
            # that draws laid along an extra plate on the left stay aligned after indexing.
            loc = Vindex(locs.unsqueeze(-3))[..., z, :]
            if self.covariance == "full" and d > 1:
                tril = scales.unsqueeze(-1) * corr
                return pyro.sample("obs", dist.MultivariateNormal(
                    loc, scale_tril=Vindex(tril.unsqueeze(-4))[..., z, :, :]), obs=x)
            if self.covariance == "spherical":
                scale = Vindex(scales.unsqueeze(-2))[..., z].unsqueeze(-1).expand(loc.shape)
            else:
                scale = Vindex(scales.unsqueeze(-3))[..., z, :]
            return pyro.sample("obs", dist.Normal(loc, scale).to_event(1), obs=x)

    def site_dims(self) -> dict[str, list[str]]:
        dims = {"weights": ["component"], "locs": ["component", "feature"],
                "scales": ["component", "feature"], "corr_chol": ["component", "row", "col"],
                "covariances": ["component", "row", "col"], "assignment": ["obs_id"]}
        if self.covariance == "spherical":
            dims["scales"] = ["component"]
            dims["covariances"] = ["component"]
        elif self.covariance == "diag":
            dims["covariances"] = ["component", "feature"]
        return dims

    # --------------------------------------------------------------- site <-> params
    def _params_from_sites(self, weights, locs, scales, corr=None):
        if self.covariance == "full":
            d = locs.shape[-1]
            if corr is None:
                corr = torch.eye(d, dtype=locs.dtype, device=locs.device).expand(
                    *scales.shape, d)
            tril = scales.unsqueeze(-1) * corr
            cov = tril @ tril.transpose(-1, -2)
        else:
            cov = scales.square()
        return weights, locs, cov

    def params_from_draws(self, samples: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``weights``, ``locs`` and ``covariances`` (shaped as the public parameters) under
        each draw of the sites (scales and Cholesky factors of correlations)."""
        lead = samples["locs"].shape[:2]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()
                if k in ("weights", "locs", "scales", "corr_chol")}
        values = self._params_from_sites(flat["weights"], flat["locs"], flat["scales"],
                                         flat.get("corr_chol"))
        return {name: v.reshape(*lead, *v.shape[1:])
                for name, v in zip(("weights", "locs", "covariances"), values)}

    def set_point_estimate(self, values: dict[str, torch.Tensor]) -> None:
        w, m, c = self._params_from_sites(values["weights"], values["locs"], values["scales"],
                                          values.get("corr_chol"))
        self.weights, self.locs, self.covariances = (t.detach().clone() for t in (w, m, c))
        self._on_params_changed()

    def summarize_posterior(self, samples: dict[str, torch.Tensor]) -> None:
        """Posterior means of weights, locs and covariances (after relabelling)."""
        w, m, c = self._params_from_sites(samples["weights"], samples["locs"],
                                          samples["scales"], samples.get("corr_chol"))
        self.weights, self.locs, self.covariances = w.mean(0), m.mean(0), c.mean(0)
        self._on_params_changed()

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int) -> dict[str, torch.Tensor]:
        """Start values of the sites, from ``init`` and the EM initialisation (k-means++)."""
        w, m, c = self._initial_params(data, init, seed)
        full = full_covariances(c, self.covariance, data.shape[1])
        std = full.diagonal(dim1=-2, dim2=-1).sqrt()
        values = {"weights": w.clamp_min(1e-3) / w.clamp_min(1e-3).sum(), "locs": m}
        if self.covariance == "spherical":
            values["scales"] = c.sqrt()
        else:
            values["scales"] = std
        if self.covariance == "full" and data.shape[1] > 1:
            corr = full / (std.unsqueeze(-1) * std.unsqueeze(-2))
            values["corr_chol"] = torch.linalg.cholesky(corr)
        return values

    # ------------------------------------------------------------------ EM capability
    def _initial_params(self, x: torch.Tensor, init: dict[str, Any] | None, seed: int):
        init = dict(init or {})
        unknown = set(init) - set(self.param_names)
        if unknown:
            raise bad_value("init", "keys among " + ", ".join(self.param_names),
                            ", ".join(sorted(unknown)))
        given = self._check_params(init) if init else {}
        if len(given) == 3:
            return given["weights"], given["locs"], given["covariances"]
        k = self.num_components
        g = torch.Generator(device=x.device).manual_seed(derive_seeds(seed, 1)[0])
        centers = given.get("locs")
        if centers is None and self.init_method == "kmeans++":
            centers = kmeans_centers(x, k, g)
        if centers is None:
            resp_all = torch.rand(x.shape[0], k, generator=g, dtype=x.dtype, device=x.device)
            resp_all = resp_all / resp_all.sum(1, keepdim=True)
        shift, var = column_moments(x)
        stats = None
        # Blocks of rows: one block for data that fit it (the unblocked computation).
        for b in row_blocks(x.shape[0], max(k, x.shape[1]) * x.shape[1]):
            resp = (torch.nn.functional.one_hot(torch.cdist(x[b], centers).argmin(1),
                                                k).to(x.dtype) if centers is not None
                    else resp_all[b])
            chunk = sufficient_statistics(x[b] - shift, resp, self.covariance)
            stats = chunk if stats is None else tuple(a + c for a, c in zip(stats, chunk))
        assert stats is not None
        w, m, c = estimate_parameters(*stats, x.shape[0], self.covariance,
                                      max(self.reg_covar, 1e-6 * float(var.mean())))
        m = m + shift
        return given.get("weights", w), given.get("locs", m), given.get("covariances", c)

    def data_warnings(self, data: torch.Tensor) -> list[tuple[str, str]]:
        """Findings about the training data's scale (``ppgen.fit`` turns them into warnings
        and diagnostics): see :func:`ppgen.models.gaussian.scale_warnings`."""
        return scale_warnings(data, self.reg_covar, "GaussianMixture")

    @property
    def fixable_params(self) -> tuple[str, ...]:
        """Parameters ``ppgen.fit(..., fixed=...)`` can hold at their start values."""
        return self.param_names

    def em_initialize(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                      seed: int, fixed: Sequence[str] = ()) -> None:
        """EM start; the parameters named in ``fixed`` keep their start values."""
        w, m, c = self._initial_params(data, init, seed)
        self.weights, self.locs, self.covariances = w, m, c
        self._em_fixed = frozenset(fixed)
        self._em_shift = data.mean(0)
        self._em_cache = None
        self._on_params_changed()

    def _em_chunks(self, data: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Centred row chunks of the data (and their outer products, float64 full covariance),
        cached for the iterations of one fit when they fit in ``_EM_CACHE_BYTES`` and the data
        are in memory; otherwise made one at a time (a memory-mapped file is streamed)."""
        cache = self._em_cache
        if cache is not None and cache[0] is data:
            yield from cache[1]
            return
        shift = self._em_shift if self._em_shift is not None else data.mean(0)
        n, d = data.shape
        outer = self.covariance == "full" and data.dtype == torch.float64
        size = n * d * (d + 1 if outer else 1) * data.element_size()
        keep = size <= _EM_CACHE_BYTES and not self._em_stream
        chunks = []
        for rows in _row_chunks(n, d if outer else self.num_components, d):
            xc = data[rows] - shift
            chunk = (xc, outer_rows(xc) if outer else None)
            if keep:
                chunks.append(chunk)
            yield chunk
        if keep:
            self._em_cache = (data, chunks)

    def em_finalize(self) -> None:
        """Drop the per-fit cache of data chunks."""
        self._em_cache = None

    def e_step(self, data: torch.Tensor) -> tuple[float, tuple[torch.Tensor, ...]]:
        """Log-likelihood of the current parameters and the M-step's sufficient statistics."""
        shift = self._em_shift if self._em_shift is not None else data.mean(0)
        locs = self.locs - shift
        chol = self._cached_chol()
        log_w = self.weights.log()
        total = data.new_zeros(())
        stats = None
        for xc, x2 in self._em_chunks(data):
            lp = log_gaussian(xc, locs, chol, self.covariance, x2) + log_w
            norm = torch.logsumexp(lp, dim=1, keepdim=True)
            total = total + norm.sum()
            chunk = sufficient_statistics(xc, (lp - norm).exp(), self.covariance, x2)
            stats = chunk if stats is None else tuple(a + b for a, b in zip(stats, chunk))
        return float(total), stats

    def m_step(self, data: torch.Tensor, stats: tuple[torch.Tensor, ...]) -> None:
        shift = self._em_shift if self._em_shift is not None else data.mean(0)
        fixed = getattr(self, "_em_fixed", frozenset())
        held = self.locs - shift if "locs" in fixed else None
        w, m, c = estimate_parameters(*stats, data.shape[0], self.covariance, self.reg_covar,
                                      held)
        for name, value in (("weights", w), ("locs", m + shift), ("covariances", c)):
            if name not in fixed:
                setattr(self, name, value)
        self._on_params_changed()

    # ---------------------------------------------------------------- label switching
    def relabel(self, samples: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undo label switching across and within chains.

        Each draw's components are permuted to best match a reference (squared distance of
        the locs in units of the data's standard deviation, plus log-weights); the reference
        starts as chain 0's first retained draw and is updated to the mean of the relabelled
        draws until no permutation changes (Stephens 2000, with a pivot start as in Marin,
        Mengersen & Robert 2005). All K! permutations are searched for K <= 6, the Hungarian
        algorithm per draw beyond.
        """
        k = self.num_components
        if k == 1:
            return samples
        locs = samples["locs"]
        lead = locs.shape[:-2]
        flat = {name: v.reshape(-1, *v.shape[len(lead):]) for name, v in samples.items()}
        feats = torch.cat([flat["locs"] / self.prior_scale, flat["weights"].log().unsqueeze(-1)],
                          -1)  # (S, K, F)
        perms = pivot_permutations(feats)
        out = {}
        for name, v in flat.items():
            if name == "assignment":
                inverse = torch.argsort(perms, dim=-1)
                out[name] = torch.gather(inverse, 1, v.long())
            elif name in ("weights", "locs", "scales", "corr_chol"):
                out[name] = permute_components(v, perms)
            else:
                out[name] = v
        return {name: v.reshape(*lead, *v.shape[1:]) for name, v in out.items()}

    # ------------------------------------------------------------ fast log-likelihood
    def log_likelihood(self, data: torch.Tensor, samples: dict[str, torch.Tensor],
                       **data_kwargs: Any) -> dict[str, torch.Tensor]:
        w, m, c = self._params_from_sites(samples["weights"], samples["locs"],
                                          samples["scales"], samples.get("corr_chol"))
        full = full_covariances(c, self.covariance, m.shape[-1])
        s, k, d = m.shape
        per_draw = max(1, _CHUNK_ELEMENTS // max(1, data.shape[0] * k * d))
        rows = []
        for i in range(0, s, per_draw):
            sl = slice(i, i + per_draw)
            comp = dist.MultivariateNormal(m[sl].unsqueeze(1),
                                           covariance_matrix=full[sl].unsqueeze(1))
            lp = comp.log_prob(data.unsqueeze(1)) + w[sl].log().unsqueeze(1)  # (s, N, K)
            rows.append(torch.logsumexp(lp, -1))
        return {"obs": torch.cat(rows)}

    # ------------------------------------------------------------------- applications
    def _data(self, data: Any, *, allow_nan: bool = False) -> torch.Tensor:
        return check_data(data, arg="data", num_features=self.num_features,
                          allow_nan=allow_nan, dtype=self.dtype, device=self.device)

    def _log_joint(self, x: torch.Tensor) -> torch.Tensor:
        return log_gaussian(x, self.locs, self._cached_chol(), self.covariance) + \
            self.weights.log()

    def log_prob(self, data: Any) -> torch.Tensor:
        """Log-density of each row in nats, assignments summed out.

        Parameters
        ----------
        data : array-like of shape (num_data, num_features)

        Returns
        -------
        Tensor of shape (num_data,)
        """
        self.check_fitted("compute log_prob")
        x = self._data(data)
        blocks = _row_chunks(x.shape[0], self.num_components, x.shape[1])
        if len(blocks) == 1:
            return torch.logsumexp(self._log_joint(x), -1)
        # in blocks of rows: no (N, K, D) temporaries for a large (memory-mapped) data set
        out = x.new_empty(x.shape[0])
        for b in blocks:
            out[b] = torch.logsumexp(self._log_joint(x[b]), -1)
        return out

    def score(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Anomaly score of each row: -log p(x) in nats, shape (num_data,); higher = odder.

        Careful, scikit-learn users: ``sklearn.mixture.GaussianMixture.score`` is the *mean*
        log-likelihood (higher = better). Here that is ``gmm.score_samples(x).mean()``;
        :meth:`score_samples` is the log-likelihood per row, as in scikit-learn.
        """
        return super().score(data, **kwargs)

    def predict_proba(self, data: Any) -> torch.Tensor:
        """Posterior component probabilities, shape (num_data, num_components)."""
        self.check_fitted("predict")
        return torch.softmax(self._log_joint(self._data(data)), -1)

    def predict(self, data: Any) -> torch.Tensor:
        """Most probable component of each row, shape (num_data,)."""
        return self.predict_proba(data).argmax(-1)

    def sample(self, num_samples: int, *, seed: int | None = None,
               return_labels: bool = False):
        """Draw ``num_samples`` rows (and their components if ``return_labels``)."""
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        g = torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(resolve_seed(seed))
        z = torch.multinomial(self.weights, num_samples, replacement=True, generator=g)
        d = self.num_features
        eps = torch.randn(num_samples, d, generator=g, dtype=self.dtype, device=self.device)
        full = full_covariances(self.covariances, self.covariance, d)
        tril = torch.linalg.cholesky(full)
        x = self.locs[z] + (tril[z] @ eps.unsqueeze(-1)).squeeze(-1)
        return (x, z) if return_labels else x

    def impute(self, data: Any) -> torch.Tensor:
        """Fill NaN entries with their conditional mean given the row's observed entries.

        For each component the missing coordinates' conditional Gaussian mean given the
        observed ones is mixed over the component posterior p(k | observed part). Rows are
        grouped by missing pattern; observed entries are returned unchanged.
        """
        self.check_fitted("impute")
        x = self._data(data, allow_nan=True)
        out = x.clone()
        missing = torch.isnan(x)
        rows = missing.any(1).nonzero().squeeze(-1)
        if rows.numel() == 0:
            return out
        full = full_covariances(self.covariances, self.covariance, self.num_features)
        patterns, which = torch.unique(missing[rows], dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):  # one pass per distinct missing pattern
            r = rows[which == p]
            mis, obs = pattern, ~pattern
            if not bool(obs.any()):
                out[r.unsqueeze(-1), mis.nonzero().T] = (self.weights @ self.locs).expand(
                    len(r), -1)
                continue
            s_oo = full[:, obs][:, :, obs]
            s_mo = full[:, mis][:, :, obs]
            chol = torch.linalg.cholesky(s_oo)
            diff = x[r][:, obs].unsqueeze(1) - self.locs[:, obs]  # (R, K, O)
            log_w = log_gaussian(x[r][:, obs], self.locs[:, obs], chol, "full") + \
                self.weights.log()
            resp = torch.softmax(log_w, -1)  # (R, K)
            sol = torch.cholesky_solve(diff.permute(1, 2, 0), chol)  # (K, O, R)
            cond = self.locs[:, mis].unsqueeze(-1) + s_mo @ sol  # (K, M, R)
            filled = torch.einsum("rk,kmr->rm", resp, cond)
            block = out[r]
            block[:, mis] = filled
            out[r] = block
        return out

    def parameter_counts(self) -> dict[str, int]:
        """Free scalars of each parameter (the weights sum to one: one less)."""
        k, d = self.num_components, self.num_features
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k}[self.covariance]
        return {"weights": k - 1, "locs": k * d, "covariances": cov}

    def num_parameters(self, fixed: Sequence[str] = ()) -> int:
        """Number of free parameters (for BIC/AIC), leaving out those held ``fixed``."""
        return sum(v for name, v in self.parameter_counts().items() if name not in fixed)

    def num_observed_scalars(self, data: torch.Tensor) -> int:
        """Observed scalars of prepared data (rows times features)."""
        return int(data.numel())

    def bic(self, data: Any) -> float:
        """Bayesian information criterion -2 log L + p log N (lower is better)."""
        x = self._data(data)
        return float(-2 * self.log_prob(x).sum() + self.num_parameters() * math.log(len(x)))

    def aic(self, data: Any) -> float:
        """Akaike information criterion -2 log L + 2 p (lower is better)."""
        return float(-2 * self.log_prob(data).sum() + 2 * self.num_parameters())
