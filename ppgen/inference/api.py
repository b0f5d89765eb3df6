"""``ppgen.fit``: one entry point for EM, SVI and MCMC, on built-in models and on any Pyro
model function."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import pyro
import torch

from .._random import resolve_seed, seeded
from .._validation import bad_type, bad_value, check_positive_int
from ..models.base import GenerativeModel
from .em import run_em
from .mcmc import recover_discrete, run_mcmc
from .result import Fit
from .svi import run_svi
from .tracing import ModelInfo, deterministic_draws, inspect_model

__all__ = ["fit"]

Method = Literal["em", "svi", "mcmc"]

_OPTIONS = {
    "em": {"num_steps", "tol", "num_restarts"},
    "svi": {"num_steps", "tol", "lr", "lr_decay", "clip_norm", "check_every", "num_particles",
            "guide", "loss", "batch_size", "num_samples"},
    "mcmc": {"num_samples", "num_warmup", "num_chains", "target_accept_prob", "max_tree_depth",
             "kernel", "jit_compile"},
}


#: Pyro's distribution argument checks cost 5x on small models; tests switch them on with
#: the environment variable PPGEN_VALIDATE=1.
VALIDATE = os.environ.get("PPGEN_VALIDATE", "0") == "1"


@contextmanager
def isolated(seed: int) -> Iterator[None]:
    """Seeded RNGs, an empty global param store and module-local PyroModule parameters for
    the block; the user's RNG states and param store are put back afterwards."""
    store = pyro.get_param_store()
    saved = store.get_state()
    store.clear()
    try:
        with seeded(seed), pyro.settings.context(module_local_params=True), \
                pyro.validation_enabled(VALIDATE):
            yield
    finally:
        store.clear()
        store.set_state(saved)


def _to_device(x: Any, device: torch.device | None) -> Any:
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _user_data(data: Any) -> Any:
    if data is None or isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        if data.dtype == object or data.dtype.kind not in "biuf":
            raise bad_type("data", "numeric values", f"dtype {data.dtype}")
        return torch.as_tensor(data)
    if isinstance(data, list | tuple):
        return _user_data(np.asarray(data))
    return data


def fit(model: GenerativeModel | Callable, data: Any = None, method: Method = "svi", *,
        seed: int | None = None, device: str | torch.device | None = None,
        init: dict[str, Any] | None = None, model_kwargs: dict[str, Any] | None = None,
        progress: bool = True, **options: Any) -> Fit:
    """Fit a generative model by EM, SVI or MCMC.

    Parameters
    ----------
    model : GenerativeModel or callable
        A built-in model, or a Pyro model function called as ``model(data, **model_kwargs)``.
        Discrete latent sites of a function are found, hidden from the automatic guide and
        summed out without user effort.
    data : array-like or Tensor, optional
        Observations, passed as the model's first argument.
    method : {"em", "svi", "mcmc"}
    seed : int, optional
        Seeds everything; drawn from OS entropy when None (and recorded in ``Fit.seed``).
        Restart and chain seeds are derived from it. Global RNG states are restored after.
    device : str or torch.device, optional
        Move model and data there ("cuda"); by default the data's device.
    init : dict, optional
        Start values named as the model's public parameters (built-in models, e.g.
        ``weights``, ``locs``, ``covariances``) or as sample sites (functions).
    model_kwargs : dict, optional
        Extra keyword arguments of the model (and guide).
    progress : bool
        Show a progress bar (tqdm.auto; quiet when not interactive).
    **options
        Method options: em: ``num_steps``, ``tol``, ``num_restarts``. svi: ``num_steps``,
        ``tol``, ``lr``, ``lr_decay``, ``clip_norm``, ``check_every``, ``num_particles``,
        ``guide`` ("normal" | "map" | callable), ``loss``, ``batch_size`` (built-in models),
        ``num_samples`` (posterior draws from a non-MAP guide, default 1000). mcmc:
        ``num_samples``, ``num_warmup``, ``num_chains``, ``target_accept_prob``,
        ``max_tree_depth``, ``jit_compile`` (default: on for built-in models).

    Returns
    -------
    Fit

    Examples
    --------
    >>> import ppgen
    >>> x = ppgen.datasets.load_old_faithful()
    >>> result = ppgen.fit(ppgen.GaussianMixture(2), x, method="em", seed=0, progress=False)
    >>> result.converged
    True
    """
    if method not in _OPTIONS:
        raise bad_value("method", "'em', 'svi' or 'mcmc'", repr(method))
    unknown = set(options) - _OPTIONS[method]
    if unknown:
        raise bad_type("options", f"options of method={method!r} among "
                       + ", ".join(sorted(_OPTIONS[method])), ", ".join(sorted(unknown)))
    builtin = isinstance(model, GenerativeModel)
    if not builtin and not callable(model):
        raise bad_type("model", "a ppgen GenerativeModel or a Pyro model function",
                       type(model).__name__)
    if method == "em" and not (builtin and model.supports_em):
        name = type(model).__name__ if builtin else getattr(model, "__name__", "model")
        others = "'svi' or 'mcmc'" if not builtin or model.supports_mcmc else "'svi'"
        raise bad_value("method", "a method the model supports", "'em'",
                        f"{name} has no closed-form EM steps; use method={others}.")
    if method == "mcmc" and builtin and not model.supports_mcmc:
        raise bad_value("method", "a method the model supports", "'mcmc'",
                        f"{type(model).__name__} has network weights that are not latent "
                        "sites, so NUTS cannot sample it; use method='svi'.")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise bad_type("model_kwargs", "a dict", type(model_kwargs).__name__)
    if init is not None and not isinstance(init, dict):
        raise bad_type("init", "a dict of start values", type(init).__name__)
    if builtin and model_kwargs:
        accepted = inspect.signature(model.model).parameters
        unknown = set(model_kwargs) - set(accepted) - {"data"}
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            names = ", ".join(n for n in accepted if n != "data")
            raise bad_type("model_kwargs", f"keyword arguments of {type(model).__name__}.model"
                           f" ({names})", ", ".join(sorted(unknown)))
    seed = resolve_seed(seed)
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise bad_value("device", "an available device", repr(str(device)),
                        "CUDA is not available here; use device='cpu'.")
    kwargs = _to_device(dict(model_kwargs or {}), device)
    start = time.perf_counter()
    if builtin:
        snapshot = model.get_state()
        try:
            with isolated(seed):
                result = _fit_builtin(model, data, method, seed, device, init, kwargs,
                                      progress, options)
        except BaseException:
            model.set_state(snapshot)
            raise
    else:
        with isolated(seed):
            result = _fit_function(model, _to_device(_user_data(data), device), method, seed,
                                   init, kwargs, progress, options)
    result.elapsed = time.perf_counter() - start
    return result


def _fit_builtin(model: GenerativeModel, data, method, seed, device, init, kwargs, progress,
                 options) -> Fit:
    x, kwargs = model.prepare_inputs(data, kwargs)
    if device is not None:
        x = x.to(device)
        kwargs = _to_device(kwargs, device)
        model.to(device)
    # Keyword arguments that describe the data (e.g. sequence lengths) reach the EM steps,
    # the start values and the log-likelihood too.
    data_kw = {k: kwargs[k] for k in model.data_kwargs if k in kwargs}
    model_fn = model.model
    if method == "em":
        out = run_em(model, x, init=init, seed=seed, progress=progress, data_kwargs=data_kw,
                     **options)
        info = ModelInfo(model.observed_sites, (), (), model.max_plate_nesting, {"obs": x})
        return Fit(model=model, method="em", history=out["history"], converged=out["converged"],
                   elapsed=0.0, seed=seed, model_fn=model_fn, data=x, model_kwargs=kwargs,
                   info=info, params=model.get_params(), messages=out["messages"],
                   options=dict(options))
    info = inspect_model(model_fn, (x,), kwargs)
    if method == "svi":
        options = dict(options)
        batch_size = options.pop("batch_size", None)
        num_draws = options.pop("num_samples", 1000)
        guide = options.pop("guide", model.default_guide)
        # The model's own guide ("model", or its bound guide method) starts itself and
        # reports its point estimate; automatic guides start from init_values.
        own = guide == "model" or getattr(guide, "__self__", None) is model
        if guide == "model":
            guide = model.guide
        batch = {}
        if batch_size is not None:
            batch = {"subsample_size": min(check_positive_int("batch_size", batch_size),
                                           x.shape[0])}
        if options.get("loss") is None:
            options["loss"] = model.default_loss(options.get("num_particles", 1))
        values = None if own else model.init_values(x, init=init, seed=seed, **data_kw)
        out = run_svi(model_fn, (x,), kwargs, info, progress=progress, guide=guide,
                      init_values=values, batch_kwargs=batch, **options)
        guide_fn = out["guide"]
        posterior = None
        point = {}
        with torch.no_grad():
            if own:
                point = model.guide_point_estimate()
            elif hasattr(guide_fn, "median"):
                point = guide_fn.median(x, **kwargs)
            if guide != "map" and not own:
                posterior = _guide_draws(guide_fn, (x,), kwargs, info, num_draws)
        if point:
            model.set_point_estimate(point)
        return Fit(model=model, method="svi", history=out["history"],
                   converged=out["converged"], elapsed=0.0, seed=seed, model_fn=model_fn,
                   data=x, model_kwargs=kwargs, info=info,
                   params=model.get_params() if model.is_fitted else {}, posterior=posterior,
                   guide=guide_fn, messages=out["messages"], options=dict(options))
    options = dict(options)
    options.setdefault("jit_compile", model.jit_compile)
    out = run_mcmc(model_fn, (x,), kwargs, info, seed=seed, progress=progress,
                   init_values_fn=lambda s: model.init_values(x, init=init, seed=s, **data_kw),
                   **options)
    samples = model.relabel(out["samples"])
    samples.update(recover_discrete(model_fn, samples, (x,), kwargs, info, seed))
    continuous = {k: v for k, v in samples.items() if k in info.continuous}
    model.summarize_posterior({k: v.reshape(-1, *v.shape[2:]) for k, v in continuous.items()})
    return Fit(model=model, method="mcmc", history={}, converged=None, elapsed=0.0, seed=seed,
               model_fn=model_fn, data=x, model_kwargs=kwargs, info=info,
               params=model.get_params(), posterior=samples, sample_stats=out["sample_stats"],
               options=dict(options))


def _guide_draws(guide_fn, args, kwargs, info: ModelInfo, num_draws: int):
    """``num_draws`` joint draws of the latent sites from a guide: site -> (1, S, ...)."""
    num_draws = check_positive_int("num_samples", num_draws)
    predictive = pyro.infer.Predictive(guide_fn, num_samples=num_draws,
                                       return_sites=list(info.continuous))
    with pyro.poutine.block():
        draws = predictive(*args, **kwargs)
    # Predictive pads sites to the plate depth; give every site its own shape back.
    return {k: v.detach().reshape(1, num_draws, *info.shapes.get(k, v.shape[1:]))
            for k, v in draws.items() if k in info.continuous}


def _fit_function(model_fn: Callable, data, method, seed, init, kwargs, progress,
                  options) -> Fit:
    try:
        inspect.signature(model_fn).bind(data, **kwargs)
    except TypeError as exc:
        raise bad_type("model_kwargs", "arguments the model accepts as model(data, **kwargs)",
                       f"{sorted(kwargs)} ({exc})") from None
    args = (data,)
    info = inspect_model(model_fn, args, kwargs)
    if not info.observed:
        raise bad_value("model", "a model with at least one observed site (obs=...)",
                        "none", "Pass the data to pyro.sample(..., obs=data).")
    if init:
        missing = set(init) - set(info.continuous)
        if missing:
            raise bad_value("init", "keys among the continuous latent sites "
                            + ", ".join(info.continuous), ", ".join(sorted(missing)))
        init = {k: torch.as_tensor(v) for k, v in init.items()}
    if method == "svi":
        options = dict(options)
        if "batch_size" in options:
            raise bad_type("batch_size", "no batch_size for a model function",
                           options["batch_size"], "Subsample inside the model with "
                           "pyro.plate(..., subsample_size=B) and index the data with it.")
        num_draws = options.pop("num_samples", 1000)
        guide = options.pop("guide", "normal")
        out = run_svi(model_fn, args, kwargs, info, progress=progress, guide=guide,
                      init_values=init, **options)
        guide_fn = out["guide"]
        params: dict[str, torch.Tensor] = {}
        posterior = None
        with torch.no_grad():
            if hasattr(guide_fn, "median"):
                params.update({k: v.detach() for k, v in guide_fn.median(*args,
                                                                         **kwargs).items()})
            if guide != "map" and info.continuous:
                posterior = _guide_draws(guide_fn, args, kwargs, info, num_draws)
                posterior.update(deterministic_draws(model_fn, posterior, args, kwargs, info))
        params.update({k: v.detach().clone() for k, v in pyro.get_param_store().items()})
        return Fit(model=model_fn, method="svi", history=out["history"],
                   converged=out["converged"], elapsed=0.0, seed=seed, model_fn=model_fn,
                   data=data, model_kwargs=kwargs, info=info, params=params,
                   posterior=posterior, guide=guide_fn, messages=out["messages"],
                   options=dict(options))
    if not info.continuous:
        raise bad_value("model", "continuous latent sites to sample with NUTS", "none")
    out = run_mcmc(model_fn, args, kwargs, info, seed=seed, progress=progress,
                   init_values_fn=(lambda s: init) if init else None, **options)
    samples = out["samples"]
    samples.update(recover_discrete(model_fn, samples, args, kwargs, info, seed))
    samples.update(deterministic_draws(model_fn, samples, args, kwargs, info))
    params = {k: v.reshape(-1, *v.shape[2:]).float().mean(0) for k, v in samples.items()
              if k in info.continuous}
    return Fit(model=model_fn, method="mcmc", history={}, converged=None, elapsed=0.0,
               seed=seed, model_fn=model_fn, data=data, model_kwargs=kwargs, info=info,
               params=params, posterior=samples, sample_stats=out["sample_stats"],
               options=dict(options))
