"""ArviZ conversion, summaries, structured diagnostics and LOO comparison.

This is the only module that imports :mod:`arviz`, so moving to ArviZ's DataTree API later
touches one file.

Thresholds (documented, as in Vehtari et al. 2021 and the ArviZ/Stan defaults):

==============  =============================================================================
R-hat           > 1.01 on any element of a parameter
ESS bulk/tail   < 100 per chain on any element of a parameter
divergences     any divergent transition after warm-up
PSIS k-hat      > 0.7 for the importance weights p(x, theta) / q(theta) of a variational fit
==============  =============================================================================
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Any

with warnings.catch_warnings():  # ArviZ announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az
import numpy as np
import pandas as pd
import torch

from ._context import isolated
from ._validation import NotSupportedError
from ._warnings import warn_user
from .inference.result import Diagnostic, Fit, PointEstimateWarning
from .inference.tracing import (
    JOINT,
    flatten_draws,
    generic_log_density,
    generic_log_likelihood,
    generic_posterior_predictive,
    observed_data,
    pointwise_log_likelihood,
)
from .models.base import GenerativeModel

__all__ = ["to_inference_data", "summary", "diagnose", "compare", "loo", "describe",
           "RHAT_MAX", "ESS_PER_CHAIN", "KHAT_MAX"]

#: Importance samples per datum for the log_likelihood group of a model whose log_prob is an
#: estimate (``to_arviz`` scores every training datum).
ESTIMATE_SAMPLES = 100
RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
KHAT_MAX = 0.7


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _model_name(fit: Fit) -> str:
    model = fit.model
    if isinstance(model, GenerativeModel):
        return type(model).__name__
    return getattr(model, "__name__", None) or type(model).__name__


def describe(fit: Fit, *, short: bool = False) -> str:
    """One line saying what a fit holds: the method, the guide of an SVI fit, and posterior
    draws (chains x draws) or a point estimate.

    Examples
    --------
    >>> import ppgen
    >>> x = ppgen.datasets.load_old_faithful()
    >>> fit = ppgen.fit(ppgen.GaussianMixture(2), x, method="em", seed=0, progress=False)
    >>> ppgen.diagnostics.describe(fit)
    'EM point estimate (1 chain x 1 draw, not posterior draws)'
    >>> ppgen.diagnostics.describe(fit, short=True)
    'EM point estimate'
    """
    guide = fit.options.get("guide")
    if fit.posterior is not None:
        chains, draws = next(iter(fit.posterior.values())).shape[:2]
        if fit.method == "mcmc":
            return f"MCMC: {chains} chain{'s' * (chains != 1)} x {draws} draws"
        return f"SVI, guide={guide!r}: {draws} draws from the variational posterior"
    tail = "" if short else " (1 chain x 1 draw, not posterior draws)"
    if fit.method == "em":
        return f"EM point estimate{tail}"
    kind = {"map": "MAP point estimate", "model": "point estimate of the model's own guide"
            }.get(guide, "point estimate")
    shown = f", guide={guide!r}" if guide is not None else ""
    return f"SVI {kind}{shown}{tail}"


def draws_remedy(fit: Fit) -> str:
    """How to get posterior draws for this fit's model (for messages about point estimates)."""
    model = fit.model
    methods = model.capabilities().methods if isinstance(model, GenerativeModel) else (
        "svi", "mcmc")
    if "mcmc" in methods:
        return ("For posterior draws fit with method='mcmc', or with method='svi', "
                "guide='normal' and num_samples=1000 (draws from the variational posterior).")
    return (f"{_model_name(fit)} has network weights, which are fitted as point estimates "
            "only: compare such models by held-out log-likelihood (model.log_prob on held-out "
            "data) instead.")


def _require_draws(fit: Fit, arg: str, purpose: str) -> None:
    if fit.posterior is None:
        raise ValueError(f"{arg}: expected posterior draws for {purpose}, got a point "
                         f"estimate (method={fit.method!r}), which ArviZ holds as 1 chain x 1 "
                         f"draw ({describe(fit, short=True)}). {draws_remedy(fit)}")


@contextmanager
def _quiet_arviz():
    """ArviZ's RuntimeWarnings on constant elements (fixed Cholesky entries: a zero variance)
    and its logged shape warning for a single chain (no R-hat) stay out of ppgen's output;
    :func:`diagnose` reports what matters in ppgen's own terms."""
    # ArviZ logs through its own Logger instance (arviz._log), not logging.getLogger("arviz").
    log = getattr(az, "_log", None) or logging.getLogger("arviz")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        log.setLevel(level)


def _point_draws(fit: Fit) -> dict[str, torch.Tensor]:
    """Point estimates as a single draw of the latent sites (EM / MAP fits)."""
    if isinstance(fit.model, GenerativeModel):
        return {}
    return {k: v.unsqueeze(0).unsqueeze(0) for k, v in fit.params.items()
            if k in fit.info.continuous}


def _coords(fit: Fit) -> dict[str, list[str]]:
    """ArviZ coordinates from a DataFrame's column names: every dimension of the model that
    is indexed by the data's columns."""
    model = fit.model
    if not fit.feature_names or not isinstance(model, GenerativeModel):
        return {}
    return {d: list(fit.feature_names) for d in model.column_dims or model.observed_dims[-1:]}


def _data_kwargs(fit: Fit) -> dict[str, Any]:
    """The model keyword arguments that describe the data (e.g. sequence lengths)."""
    names = getattr(fit.model, "data_kwargs", ())
    return {k: fit.model_kwargs[k] for k in names if k in fit.model_kwargs}


def _log_likelihood(fit: Fit, samples: dict[str, torch.Tensor],
                    dims: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Per-datum log-likelihood of the draws; for a model function ``dims`` receives the
    name of each variable's datum dimensions (its plates)."""
    lead = next(iter(samples.values())).shape[:2]
    flat = flatten_draws({k: v for k, v in samples.items() if k in fit.info.continuous}, 2)
    out = None
    if isinstance(fit.model, GenerativeModel):
        out = fit.model.log_likelihood(fit.data, flat, **_data_kwargs(fit))
        if out is None:
            out = generic_log_likelihood(fit.model_fn, flat, (fit.data,), fit.model_kwargs,
                                         fit.info)
    else:
        out, names = pointwise_log_likelihood(fit.model_fn, flat, (fit.data,),
                                              fit.model_kwargs, fit.info)
        if dims is not None:
            dims.update(_dim_names(names))
    return {k: _np(v).reshape(*lead, *v.shape[1:]) for k, v in out.items()}


def _dim_names(names: dict[str, tuple[str | None, ...]]) -> dict[str, list[str]]:
    """ArviZ dimension names: the plate's name, else ArviZ's default ``{var}_dim_{i}``."""
    return {k: [d if d is not None else f"{k}_dim_{i}" for i, d in enumerate(v)]
            for k, v in names.items()}


def to_inference_data(fit: Fit) -> az.InferenceData:
    """Convert a :class:`~ppgen.Fit` to ArviZ ``InferenceData``.

    Groups: ``posterior`` (draws; for EM/MAP fits the point estimate as one draw),
    ``sample_stats`` (MCMC), ``log_likelihood`` (per datum, discrete latents summed out),
    ``posterior_predictive`` (one replicated data set per draw) and ``observed_data``.

    For a model function, ``log_likelihood`` holds one variable per observed site, and
    ``"joint"``, their sum per datum of the plates they all share, when there are several
    (``az.loo(idata, var_name=...)`` picks one); observed sites that enumerated discrete
    latents couple (an HMM's emissions) are one variable, per datum of the plates all these
    sites share (per sequence). Dimensions are named after the plates. A subsampled plate is
    scored over the full data; where that is impossible (local latents inside it) the
    groups that need it are left out, with a warning saying why.
    """
    if not isinstance(fit.model, GenerativeModel):
        # Seeded (posterior predictive draws), and the PyroModules a model function reaches
        # keep their parameters to themselves, as in the fit.
        with isolated(fit.seed, fit.model_fn):
            idata = _inference_data(fit)
    else:
        with fit.fitted_model():
            idata = _inference_data(fit)
    idata.attrs["ppgen_estimate"] = describe(fit)
    idata.attrs["ppgen_method"] = fit.method
    if fit.posterior is None:
        note = (f"This InferenceData holds the {describe(fit)}: ArviZ functions that need "
                "posterior draws (az.loo, az.waic, az.compare, az.plot_ppc, R-hat and ESS in "
                f"az.summary) fail or warn on it. {draws_remedy(fit)}")
        idata.attrs["ppgen_note"] = note
        warn_user(note, PointEstimateWarning)
    return idata


def _inference_data(fit: Fit) -> az.InferenceData:
    model = fit.model
    builtin = isinstance(model, GenerativeModel)
    # A data source (a dynamically binarised set) is scored by one seeded draw of it.
    data = fit.data.fixed(fit.seed) if hasattr(fit.data, "fixed") else fit.data
    dims: dict[str, list[str]] = dict(model.site_dims()) if builtin else {}
    groups: dict[str, Any] = {}
    ll_names: dict[str, list[str]] = {}
    if fit.posterior is not None:
        samples = fit.posterior
        groups["posterior"] = {k: _np(v) for k, v in samples.items()}
        public = model.params_from_draws(samples) if builtin else None
        groups["posterior"].update({k: _np(v) for k, v in (public or {}).items()
                                    if k not in samples})
        try:
            groups["log_likelihood"] = _log_likelihood(fit, samples, ll_names)
            flat = flatten_draws({k: v for k, v in samples.items()
                                  if k in fit.info.continuous}, 2)
            lead = next(iter(samples.values())).shape[:2]
            pp = generic_posterior_predictive(fit.model_fn, flat, (fit.data,),
                                              fit.model_kwargs, fit.info)
            groups["posterior_predictive"] = {k: _np(v).reshape(*lead, *v.shape[1:])
                                              for k, v in pp.items()}
        except NotSupportedError as exc:  # a subsampled model that cannot see all its data
            groups.pop("log_likelihood", None)
            warn_user(f"{exc} The InferenceData has no log_likelihood or "
                      "posterior_predictive group.")
    elif builtin:
        groups["posterior"] = {k: _np(v)[None, None] for k, v in model.get_params().items()}
        data_kw = _data_kwargs(fit)
        # An estimated log_prob (importance sampling) is drawn with ESTIMATE_SAMPLES per datum
        # and the fit's seed, so that the whole training set stays affordable.
        est = ({"num_samples": ESTIMATE_SAMPLES, "seed": fit.seed}
               if model.capabilities().log_prob == "estimate" else {})
        groups["log_likelihood"] = {"obs": _np(model.log_prob(data, **data_kw, **est))[
            None, None]}
        groups["posterior_predictive"] = {
            "obs": _np(model.sample(len(data), seed=fit.seed, **data_kw))[None, None]}
    else:
        samples = _point_draws(fit)
        groups["posterior"] = {k: _np(v) for k, v in fit.params.items()}
        groups["posterior"] = {k: v[None, None] for k, v in groups["posterior"].items()}
        if samples:
            try:
                groups["log_likelihood"] = _log_likelihood(fit, samples, ll_names)
            except NotSupportedError as exc:
                warn_user(f"{exc} The InferenceData has no log_likelihood group.")
    if fit.sample_stats:
        groups["sample_stats"] = dict(fit.sample_stats)
    if builtin:
        groups["observed_data"] = {"obs": _np(data)}
        data_dims = {"obs": list(model.observed_dims[:data.dim()])}
        ll_dims = {"obs": [model.observed_dims[0]]}
    else:
        try:  # the full data of a subsampled plate, which the log-likelihood is about
            values, names = observed_data(fit.model_fn, (fit.data,), fit.model_kwargs,
                                          fit.info)
        except NotSupportedError:
            values, names = fit.info.observed_values, {}
        groups["observed_data"] = {k: _np(v) for k, v in values.items()}
        data_dims, ll_dims = _dim_names(names), ll_names
    # Groups whose variables share names but not dimensions are built apart, then joined.
    coords = _coords(fit)
    idata = az.from_dict(posterior=groups["posterior"], sample_stats=groups.get("sample_stats"),
                         dims=dims, coords=coords)
    if "log_likelihood" in groups:
        idata.extend(az.from_dict(log_likelihood=groups["log_likelihood"], dims=ll_dims))
    idata.extend(az.from_dict(posterior_predictive=groups.get("posterior_predictive"),
                              observed_data=groups["observed_data"], dims=data_dims,
                              coords=coords))
    return idata


def summary(fit: Fit, **kwargs: Any) -> pd.DataFrame:
    """ArviZ's summary table of the posterior draws, or the point estimates.

    A built-in model is summarised by its public parameters (``weights``, ``locs``,
    ``covariances`` of a mixture; as its EM fit is), not by internal sites such as Cholesky
    factors; ``var_names=`` picks sites as in ArviZ. ArviZ's RuntimeWarnings on constant
    elements and its single-chain log line are kept out (:func:`diagnose` reports R-hat and
    ESS). The table's ``columns.name`` and ``attrs`` say what it holds (:func:`describe`); a
    DataFrame's column names label the feature axes.
    """
    if fit.posterior is not None:
        names = [k for k in fit.posterior if k in fit.info.continuous + fit.info.deterministic]
        if isinstance(fit.model, GenerativeModel) and "var_names" not in kwargs:
            # A built-in model is summarised by its public parameters (as its EM fit is), not
            # by internal sites such as Cholesky factors of correlations.
            with fit.fitted_model() as model:
                public = model.params_from_draws(fit.posterior)
            if public:
                names = list(public) + [k for k in names if k in fit.info.deterministic]
        with _quiet_arviz():
            table = az.summary(fit.to_arviz(), var_names=kwargs.pop("var_names", names),
                               **kwargs)
        return _labelled(table, fit)
    rows = []
    coords = _coords(fit)
    site_dims = fit.model.site_dims() if isinstance(fit.model, GenerativeModel) else {}
    for name, value in fit.params.items():
        arr = _np(value)
        if arr.ndim == 0:
            rows.append((name, float(arr)))
        dims = site_dims.get(name, [])
        # An axis indexed by the data's columns is labelled by their names (as ArviZ does).
        labels = [coords.get(dims[i]) if i < len(dims) and dims[i] in coords
                  and len(coords[dims[i]]) == n else None for i, n in enumerate(arr.shape)]
        for idx in np.ndindex(arr.shape) if arr.ndim else ():
            parts = [str(i) if lab is None else lab[i] for i, lab in zip(idx, labels)]
            rows.append((f"{name}[{', '.join(parts)}]", float(arr[idx])))
    return _labelled(pd.DataFrame({"value": [v for _, v in rows]}, index=[n for n, _ in rows]),
                     fit)


def _labelled(table: pd.DataFrame, fit: Fit) -> pd.DataFrame:
    """The summary table says what it holds (printed above the index, and in ``attrs``)."""
    table.columns.name = describe(fit, short=True)
    table.attrs["estimate"] = describe(fit)
    table.attrs["method"] = fit.method
    if fit.options.get("guide") is not None:
        table.attrs["guide"] = fit.options["guide"]
    return table


def _khat(fit: Fit, num_draws: int = 1000) -> float:
    """PSIS k-hat of the importance weights log p(x, theta) - log q(theta), theta ~ q."""
    import pyro.poutine as poutine

    args = (fit.data,)
    # isolated(): seeded, and the guide's parameters stay module-local (running a guide
    # outside that context would copy them into the global param store, where the next
    # guide with the same names would pick them up).
    with torch.no_grad(), poutine.block(), isolated(fit.seed):
        try:  # all draws in one trace of the guide, under a plate of draws
            stacked, log_q = _guide_draws_and_log_q(fit, num_draws)
        except (RuntimeError, ValueError, NotImplementedError):
            stacked, log_q = _guide_draws_and_log_q_loop(fit, num_draws)
        ll, log_prior = generic_log_density(fit.model_fn, stacked, args, fit.model_kwargs,
                                            fit.info)
    ll_total = sum(v.reshape(num_draws, -1).sum(-1) for v in ll.values())
    # log_q is a CPU float64 tensor; the densities live on the model's device
    log_w = torch.as_tensor(log_prior + ll_total).detach().cpu().double().numpy() - \
        log_q.detach().cpu().numpy()
    _, k = az.psislw(log_w)
    return float(k)


def _guide_draws_and_log_q(fit: Fit, num: int):
    """``num`` draws of the guide's continuous sites (site -> (num, *shape)) and their log
    densities (num,) from one trace of the guide under an outermost plate of draws (as
    ``Predictive(parallel=True)``). Raises ValueError when a site does not broadcast."""
    import pyro
    import pyro.poutine as poutine
    from pyro.distributions.util import scale_and_mask

    dim = -fit.info.max_plate_nesting - 1

    def vectorized(*a, **k):
        with pyro.plate("_ppgen_draws", num, dim=dim):
            return fit.guide(*a, **k)

    tr = poutine.trace(vectorized).get_trace(fit.data, **fit.model_kwargs)
    draws, log_q = {}, torch.zeros(num, dtype=torch.float64)
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name == "_ppgen_draws":
            continue
        lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
        lp = torch.as_tensor(lp)
        lp = lp.reshape((1,) * max(0, -dim - lp.dim()) + tuple(lp.shape))
        if lp.dim() > -dim or lp.shape[dim] not in (1, num):
            raise ValueError(f"the guide's site {name!r} ignored the plate of draws")
        lp = lp.expand(*lp.shape[:lp.dim() + dim], num, *lp.shape[lp.dim() + dim + 1:])
        log_q = log_q + lp.movedim(dim, 0).reshape(num, -1).sum(-1).to(log_q)
        if name in fit.info.continuous:
            shape = fit.info.shapes.get(name)
            value = site["value"]
            if shape is None or value.numel() != num * int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f"the guide's site {name!r} ignored the plate of draws")
            draws[name] = value.reshape(num, *shape)
    missing = set(fit.info.continuous) - set(draws)
    if missing:
        raise ValueError(f"the guide has no site {sorted(missing)[0]!r}")
    return draws, log_q


def _guide_draws_and_log_q_loop(fit: Fit, num: int):
    """As :func:`_guide_draws_and_log_q`, one guide trace per draw (a guide that does not
    broadcast over a plate of draws)."""
    import pyro.poutine as poutine

    draws, log_q = [], []
    for _ in range(num):
        tr = poutine.trace(fit.guide).get_trace(fit.data, **fit.model_kwargs)
        draws.append({k: tr.nodes[k]["value"] for k in fit.info.continuous})
        log_q.append(float(tr.log_prob_sum()))
    stacked = {k: torch.stack([d[k] for d in draws]) for k in fit.info.continuous}
    return stacked, torch.tensor(log_q, dtype=torch.float64)


def diagnose(fit: Fit) -> list[Diagnostic]:
    """Structured warnings for a fit (see the module docstring for thresholds)."""
    out = list(fit.messages)
    if fit.method == "mcmc" and fit.posterior is not None:
        idata = fit.to_arviz()
        names = [k for k in fit.posterior if k in fit.info.continuous]
        chains = fit.num_chains
        with _quiet_arviz():  # constant elements (fixed Cholesky entries) give NaN
            rhat = az.rhat(idata, var_names=names)
            ess_bulk = az.ess(idata, var_names=names, method="bulk")
            ess_tail = az.ess(idata, var_names=names, method="tail")
        for name in names:
            draws = fit.posterior[name]
            if float(draws.double().std()) == 0:  # a constant site (e.g. the weight of K=1)
                continue
            values = rhat[name].values  # all NaN with a single chain: no R-hat check then
            r = float(np.nanmax(values)) if not np.all(np.isnan(values)) else float("nan")
            if r > RHAT_MAX:
                out.append(Diagnostic("rhat", f"R-hat of {name} is {r:.3f} > {RHAT_MAX}: the "
                                      "chains disagree. Run longer (num_warmup, num_samples), "
                                      "reparameterise, or check for label switching.", name, r,
                                      RHAT_MAX))
            for code, table in (("ess_bulk", ess_bulk), ("ess_tail", ess_tail)):
                e = float(np.nanmin(table[name].values))
                if e < ESS_PER_CHAIN * chains:
                    out.append(Diagnostic(code, f"{code.replace('_', ' ')} of {name} is {e:.1f}"
                                          f" < {ESS_PER_CHAIN * chains} ({ESS_PER_CHAIN} per "
                                          f"chain x {chains} chains): draw more samples or "
                                          "reparameterise.", name, e,
                                          ESS_PER_CHAIN * chains))
        if fit.sample_stats and "diverging" in fit.sample_stats:
            n = int(np.sum(fit.sample_stats["diverging"]))
            if n:
                out.append(Diagnostic("divergences", f"{n} divergent transitions after warm-up: "
                                      "raise target_accept_prob (e.g. 0.95) or reparameterise "
                                      "(non-centred).", None, float(n), 0.0))
    if fit.method == "svi" and fit.posterior is not None and fit.guide is not None:
        if "khat" not in fit._cache:
            fit._cache["khat"] = _khat(fit)
        k = fit._cache["khat"]
        if k > KHAT_MAX:
            out.append(Diagnostic("khat", f"PSIS k-hat of the variational posterior is {k:.2f}"
                                  f" > {KHAT_MAX}: the guide is a poor fit to the posterior; "
                                  "trust its intervals less, or use method='mcmc'.", None, k,
                                  KHAT_MAX))
    return out


def compare(fits: dict[str, Fit | az.InferenceData], **kwargs: Any) -> pd.DataFrame:
    """Rank models by PSIS-LOO expected log predictive density (``az.compare``).

    Every entry needs posterior draws with a per-datum log-likelihood (MCMC fits, or SVI fits
    with a guide that is not a point mass). Fits of models with several observed sites are
    compared on their joint per datum (``var_name="joint"``) unless ``var_name`` says which.
    """
    if not isinstance(fits, dict) or len(fits) < 2:
        size = len(fits) if hasattr(fits, "__len__") else "?"
        raise ValueError("fits: expected a dict of at least two named fits, got "
                         f"{type(fits).__name__} of length {size}.")
    idatas = {}
    for name, f in fits.items():
        if isinstance(f, Fit):
            _require_draws(f, f"fits[{name!r}]", "LOO")
            f = f.to_arviz()
        idatas[name] = f
    if "var_name" not in kwargs and all(
            len(d.log_likelihood.data_vars) > 1 and JOINT in d.log_likelihood.data_vars
            for d in idatas.values() if hasattr(d, "log_likelihood")):
        kwargs["var_name"] = JOINT  # several observed sites: compare their joint per datum
    return az.compare(idatas, ic="loo", **kwargs)


def loo(fit: Fit, **kwargs: Any) -> Any:
    """PSIS-LOO of one fit (``az.loo`` on :meth:`Fit.to_arviz`; keyword arguments such as
    ``pointwise=True`` are ArviZ's).

    A point-estimate fit (EM, or SVI with ``guide="map"`` or a model's own guide) has no
    posterior draws to leave one datum out of: it is refused with a ``ValueError`` that says
    how to get draws, where ``az.loo`` would fail with an ``IndexError``.
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"fit: expected a ppgen Fit, got {type(fit).__name__}. For "
                        "InferenceData call arviz.loo directly.")
    _require_draws(fit, "fit", "LOO")
    return az.loo(fit.to_arviz(), **kwargs)
