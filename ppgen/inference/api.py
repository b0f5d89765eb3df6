"""``ppgen.fit``: one entry point for EM, SVI and MCMC, on built-in models and on any Pyro
model function."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule

from .._context import isolated
from .._distributed import broadcast_seed
from .._random import resolve_seed
from .._threads import num_elements, work_threads
from .._validation import (
    NotSupportedError,
    bad_type,
    bad_value,
    check_positive_int,
    column_names,
    tensor_from_array,
)
from .._warnings import warn_user
from ..models.base import GenerativeModel
from ..training import Batch
from .em import run_em
from .generic_em import FunctionEM, check_em_model
from .loop import plan_steps, train
from .mcmc import recover_discrete, run_mcmc
from .result import Diagnostic, Fit
from .svi import run_svi
from .tracing import ModelInfo, deterministic_draws, inspect_model

__all__ = ["fit", "default_method"]

Method = Literal["em", "svi", "mcmc"]

#: Options of the training loop itself (minibatches, length, checkpoints, validation).
LOOP_OPTIONS = {"num_epochs", "checkpoint", "checkpoint_every", "resume", "validation_data",
                "eval_every", "patience", "max_bad_steps"}
#: Options of the objective a model's default_objective receives.
OBJECTIVE_OPTIONS = {"lr", "lr_decay", "clip_norm", "num_particles"}

_OPTIONS = {
    "em": {"num_steps", "tol", "num_restarts", "fixed"},
    "svi": {"num_steps", "tol", "check_every", "guide", "loss", "batch_size", "num_samples"}
    | LOOP_OPTIONS | OBJECTIVE_OPTIONS,
    "mcmc": {"num_samples", "num_warmup", "num_chains", "target_accept_prob", "max_tree_depth",
             "kernel", "jit_compile", "fixed"},
}
_OPTIONS["svi"].add("fixed")
#: Options of EM on a model function only (its numerical M-step).
FUNCTION_EM_OPTIONS = {"m_step_iter", "m_step_tol", "m_step"}
#: Sample sites of a public parameter of the built-in models (default: the same name).
_SITES_OF = {"covariances": ("scales", "corr_chol")}


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
        return tensor_from_array(data)
    if isinstance(data, list | tuple) or hasattr(data, "to_numpy"):  # pandas too
        return _user_data(np.asarray(data))
    return data


def default_method(model: GenerativeModel | Callable) -> Method:
    """The method ``fit`` uses when given none: the model's best. ``"em"`` for models with
    closed-form EM steps (Gaussian mixture, HMM, LDA), ``"svi"`` for the rest (models with
    network weights, such as VAEs and ProdLDA) and for a user's Pyro function."""
    if isinstance(model, GenerativeModel) and "em" in model.capabilities().methods:
        return "em"
    return "svi"


def fit(model: GenerativeModel | Callable, data: Any = None, method: Method | None = None, *,
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
    method : {"em", "svi", "mcmc"}, optional
        By default the model's best (:func:`default_method`): ``"em"`` where the model has
        closed-form EM (Gaussian mixture, HMM, LDA), ``"svi"`` for models with networks
        (VAE, ProdLDA) and for a Pyro function. ``"mcmc"`` (NUTS) gives posterior draws.
    seed : int, optional
        Seeds everything; drawn from OS entropy when None (and recorded in ``Fit.seed``).
        Restart and chain seeds are derived from it. Global RNG states are restored after.
    device : str or torch.device, optional
        Move model and data there ("cuda"); by default the data's device.
    init : dict, optional
        Start values named as the model's public parameters (built-in models, e.g.
        ``weights``, ``locs``, ``covariances``) or as sample sites (functions; for
        ``method="em"`` also ``pyro.param`` names).
    model_kwargs : dict, optional
        Extra keyword arguments of the model (and guide).
    progress : bool
        Show a progress bar (tqdm.auto; quiet when not interactive).
    **options
        Every method of a built-in model: ``fixed``, a tuple of parameter names (e.g.
        ``("transition_probs",)`` for an HMM, ``("weights",)`` for a mixture) held at their
        ``init`` values (or the model's current values) while the others are fitted; under
        SVI and MCMC their sites become constants.
        Method options: em: ``num_steps``, ``tol``, ``num_restarts``; for a model function
        also ``m_step_iter``, ``m_step_tol``, ``m_step`` (see Notes). svi: ``num_steps``,
        ``tol``, ``lr``, ``lr_decay``, ``clip_norm``, ``check_every``, ``num_particles``,
        ``guide`` ("normal" | "map" | callable), ``loss``, ``batch_size`` (built-in models),
        ``num_samples`` (posterior draws from a non-MAP guide, default 1000),
        ``num_epochs``, ``checkpoint``, ``checkpoint_every``, ``resume``,
        ``validation_data`` (data, or ``(data, model_kwargs)`` for models with per-datum
        keyword arguments such as labels), ``eval_every``, ``patience``, ``max_bad_steps``
        (the training loop, :func:`ppgen.inference.loop.train`), and a model's own
        ``objective_options``. mcmc:
        ``num_samples``, ``num_warmup``, ``num_chains``, ``kernel`` (``"nuts"``, the
        default, or its alias ``"pyro-nuts"``: Pyro's NUTS, chains one after another;
        ``"chees"``: ChEES-HMC with all chains vectorised in one process, fastest with many
        chains, e.g. ``num_chains=64``), ``target_accept_prob``, ``max_tree_depth`` (NUTS),
        ``jit_compile`` (NUTS; default: on for built-in models; for a model function, on
        when its potential traces correctly, else off with a one-line
        :class:`~ppgen.inference.mcmc.JITFallbackWarning`).

    Returns
    -------
    Fit

    Notes
    -----
    **EM on a model function** (``method="em"``, :mod:`ppgen.inference.generic_em`): for a
    Pyro model whose discrete latent sites can be enumerated (finite support; every one is
    enumerated in parallel, whatever its ``infer`` says) and whose other unknowns are
    ``pyro.param`` values or continuous latent sites, taken at a point: their MAP in the
    constrained space with the site's prior (as ``AutoDelta`` gives; no log-Jacobian; a
    prior masked out, as Pyro's ``include_prior=False``, makes it maximum likelihood).
    The E-step sums the enumerated sites out exactly (the contraction ``TraceEnum_ELBO``
    runs) and takes the posterior marginal of every log-density factor as the gradient of
    the log normaliser; the M-step maximises the expected complete-data log joint over the
    unconstrained values by L-BFGS (strong-Wolfe line search), ``m_step_iter`` iterations
    at most (default 100), to a gradient tolerance ``m_step_tol`` (default 1e-9, on the
    expected log joint divided by its size). An M-step that does not increase it is undone
    (a ``m_step_undone`` message), so the objective, ``history["objective"]``, the marginal
    log-likelihood plus the log prior density of the MAP sites, never decreases. A model
    that has a closed-form M-step declares it as ``m_step=fn``: ``fn(posterior, data,
    **model_kwargs)`` returns new values by name, ``posterior[site]`` being the marginal of
    that enumerated site's factor in ``TraceEnum_ELBO``'s layout (a mixture's
    ``posterior["assignment"][k, n] = p(assignment_n = k | data)``; see
    :class:`~ppgen.inference.generic_em.FunctionEM`); L-BFGS fits what it does not return.
    ``init`` takes start values by ``pyro.param`` or site name (the model's own
    ``pyro.param`` initial values otherwise, and for sites the prior median, a prior draw
    for restarts after the first); ``fixed`` holds named ones at their start values.
    ``Fit.params`` holds the constrained values. Models without discrete latent sites, with
    subsampled plates or with discrete sites of infinite support are refused with the
    alternative (``method="svi"``, ``guide="map"``; ``method="mcmc"``). Float64 data are
    recommended: the M-step's tolerance and the monotonicity check are relative to round-off.

    Examples
    --------
    >>> import ppgen
    >>> x = ppgen.datasets.load_old_faithful()
    >>> result = ppgen.fit(ppgen.GaussianMixture(2), x, method="em", seed=0, progress=False)
    >>> result.converged
    True

    EM on Pyro's GMM tutorial model, its global unknowns as ``pyro.param``:

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro.distributions import constraints
    >>> def model(data, K=2):
    ...     weights = pyro.param("weights", torch.ones(K, dtype=data.dtype) / K,
    ...                          constraint=constraints.simplex)
    ...     scale = pyro.param("scale", torch.ones(K, dtype=data.dtype),
    ...                        constraint=constraints.positive)
    ...     locs = pyro.param("locs", torch.tensor([1.0, 5.0], dtype=data.dtype))
    ...     with pyro.plate("data", len(data)):
    ...         z = pyro.sample("assignment", dist.Categorical(weights))
    ...         pyro.sample("obs", dist.Normal(locs[z], scale[z]), obs=data)
    >>> em = ppgen.fit(model, x[:, 0], method="em", seed=0, progress=False)
    >>> round(em.objective, 3), em.converged
    (-276.36, True)
    """
    if method is None:
        method = default_method(model)
    if method not in _OPTIONS:
        raise bad_value("method", "'em', 'svi' or 'mcmc' (or None for the model's default)",
                        repr(method))
    builtin = isinstance(model, GenerativeModel)
    if not builtin and not callable(model):
        raise bad_type("model", "a ppgen GenerativeModel or a Pyro model function",
                       type(model).__name__)
    allowed = set(_OPTIONS[method])
    if builtin and method == "svi":
        allowed |= set(model.objective_options)
    if not builtin and method == "em":
        allowed |= FUNCTION_EM_OPTIONS
    unknown = set(options) - allowed
    if unknown:
        raise _unknown_options(model, method, unknown, allowed)
    methods = model.capabilities().methods if builtin else ("svi", "mcmc", "em")
    if method not in methods:
        name = type(model).__name__ if builtin else getattr(model, "__name__", "model")
        others = " or ".join(repr(m) for m in methods)
        why = {"em": f"{name} has no closed-form EM steps",
               "mcmc": f"{name} has network weights that are not latent sites, so NUTS "
                       "cannot sample it"}[method]
        raise NotSupportedError(f"method: expected a method the model supports, got "
                                f"{method!r}. {why}; use method={others}.")
    if builtin and data is None:
        raise bad_type("data", f"the data to fit {type(model).__name__} to", "None",
                       f"Pass it as fit's second argument: ppgen.fit(model, x, "
                       f"method={method!r}).")
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
    # A seed drawn here differs between processes: rank 0's, on every rank of a job.
    seed = resolve_seed(seed) if seed is not None else broadcast_seed(resolve_seed(None))
    device = _check_device(device)
    kwargs = _to_device(dict(model_kwargs or {}), device)
    start = time.perf_counter()
    if builtin:
        snapshot = model.get_state()
        # Threads for the data's preparation (e.g. padding a list of sequences); the runners
        # choose again for their own work.
        rows = data if isinstance(data, list | tuple) else (data,)
        try:
            with isolated(seed, model), work_threads(num_elements(*rows), device=device):
                result = _fit_builtin(model, data, method, seed, device, init, kwargs,
                                      progress, options)
        except BaseException:
            model.set_state(snapshot)
            raise
    else:
        with isolated(seed, model):
            result = _fit_function(model, _to_device(_user_data(data), device), method, seed,
                                   init, kwargs, progress, options)
    result.elapsed = time.perf_counter() - start
    result.feature_names = column_names(data)
    return result


def _unknown_options(model: Any, method: str, unknown: set[str], allowed: set[str]) -> TypeError:
    """The error for options ``fit`` does not take; an option that is an argument of the
    model itself (an HMM's ``lengths``, a model function's ``sigma``) belongs in
    ``model_kwargs``, and the message says so."""
    fn = model.model if isinstance(model, GenerativeModel) else model
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    model_args = sorted(n for n in unknown if n in params and n != "data")
    remedy = None
    if model_args:
        name = (f"{type(model).__name__}.model" if isinstance(model, GenerativeModel)
                else getattr(model, "__name__", "the model"))
        kwargs = ", ".join(f"{n!r}: ..." for n in model_args)
        one = len(model_args) == 1
        remedy = (f"{', '.join(model_args)} {'is an argument' if one else 'are arguments'} of "
                  f"{name}: pass {'it' if one else 'them'} as model_kwargs={{{kwargs}}}.")
    return bad_type("options", f"options of method={method!r} among "
                    + ", ".join(sorted(allowed)), ", ".join(sorted(unknown)), remedy)


def _check_device(device: Any) -> torch.device | None:
    """``device`` as a torch.device that exists here (None stays None)."""
    if device is None:
        return None
    if not isinstance(device, str | torch.device | int) or isinstance(device, bool):
        raise bad_type("device", "a device name such as 'cpu' or 'cuda', or a torch.device",
                       f"{device!r} ({type(device).__name__})")
    cuda = torch.cuda.is_available()
    hint = "use device='cpu'" + (" or device='cuda'" if cuda else "")
    if isinstance(device, int):  # torch reads an int as an accelerator's index
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        spelled = " (PyTorch calls GPUs 'cuda')" if str(device).lower().startswith("gpu") else ""
        raise bad_value("device", "a device name such as 'cpu', 'cuda' or 'cuda:0'",
                        f"{device!r}{spelled}", f"Check the spelling; {hint}.") from None
    if dev.type == "cuda" and not cuda:
        raise bad_value("device", "an available device", repr(str(dev)),
                        "CUDA is not available here; use device='cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise bad_value("device", f"a CUDA device index below {torch.cuda.device_count()}",
                        repr(str(dev)), f"{hint}.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise bad_value("device", "an available device", repr(str(dev)),
                        "MPS is not available here; use device='cpu'.")
    return dev


def _check_fixed(model: GenerativeModel, fixed: Any,
                 init: dict[str, Any] | None) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    """Validated ``fixed`` names, and ``init`` completed with the model's current values of
    fixed parameters it does not give."""
    if fixed is None:
        return (), init
    if isinstance(fixed, str):
        fixed = (fixed,)
    if not isinstance(fixed, list | tuple | set | frozenset) or \
            not all(isinstance(f, str) for f in fixed):
        raise bad_type("fixed", "a tuple of parameter names", repr(fixed))
    fixed = tuple(dict.fromkeys(fixed))
    allowed = tuple(getattr(model, "fixable_params", ()))
    unknown = [f for f in fixed if f not in allowed]
    if unknown:
        raise bad_value("fixed", "names among the parameters of "
                        f"{type(model).__name__}: " + (", ".join(allowed) or "(none)"),
                        ", ".join(unknown), "Name the public parameters, as in init=.")
    init = dict(init or {})
    missing = []
    for name in fixed:
        if init.get(name) is None:
            if getattr(model, name, None) is None:
                missing.append(name)
            else:
                init[name] = getattr(model, name).detach().clone()
    if missing:
        raise bad_value("fixed", "parameters with a value to hold", ", ".join(missing) +
                        " without one", "Give them in init={...} (or set them with "
                        "model.set_params(...) before the fit).")
    return fixed, init or None


def _too_little_data(model: GenerativeModel, x: torch.Tensor, data_kw: dict[str, Any],
                     fixed: tuple[str, ...]) -> Diagnostic | None:
    """A Diagnostic and a warning when the model has more free scalar parameters than the
    data have observed scalars (hmmlearn and scikit-learn warn the same way)."""
    if not hasattr(model, "num_observed_scalars"):
        return None
    free = model.num_parameters(fixed=fixed)
    seen = model.num_observed_scalars(x, **data_kw)
    if seen >= free:
        return None
    msg = (f"{type(model).__name__}: fitting {free} free scalar parameters to only {seen} "
           "observed scalars gives a degenerate solution; use more data, fewer states or "
           "components, a simpler covariance, or hold some parameters fixed (fixed=...).")
    warn_user(msg, UserWarning)
    return Diagnostic("too_little_data", msg, value=float(seen), threshold=float(free))


def _fixed_sites(model: GenerativeModel, x: torch.Tensor, init: dict[str, Any] | None,
                 fixed: tuple[str, ...], seed: int,
                 data_kw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Values of the sample sites of the fixed parameters (constants under SVI and MCMC)."""
    if not fixed:
        return {}
    values = model.init_values(x, init=init, seed=seed, **data_kw)
    out = {}
    for name in fixed:
        for site in _SITES_OF.get(name, (name,)):
            if site not in values:
                continue
            value = values[site]
            if site == name:  # the value itself (the start values floor probabilities)
                value = torch.as_tensor(init[name]).to(dtype=value.dtype, device=value.device)
            out[site] = value.detach()
    return out


def _fit_builtin(model: GenerativeModel, data, method, seed, device, init, kwargs, progress,
                 options) -> Fit:
    options = dict(options)
    fixed = options.pop("fixed", None)
    x, kwargs = model.prepare_inputs(data, kwargs)
    if device is not None:
        x = x.to(device)
        kwargs = _to_device(kwargs, device)
        model.to(device)
    # Keyword arguments that describe the data (e.g. sequence lengths) reach the EM steps,
    # the start values and the log-likelihood too.
    data_kw = {k: kwargs[k] for k in model.data_kwargs if k in kwargs}
    fixed, init = _check_fixed(model, fixed, init)
    small = [d for d in (_too_little_data(model, x, data_kw, fixed),) if d is not None]
    for code, msg in (model.data_warnings(x) if hasattr(model, "data_warnings") else []):
        warn_user(msg, UserWarning)
        small.append(Diagnostic(code, msg))
    constants = _fixed_sites(model, x, init, fixed, seed, data_kw) if method != "em" else {}
    model_fn = poutine.condition(model.model, data=constants) if constants else model.model
    if method == "em":
        out = run_em(model, x, init=init, seed=seed, progress=progress, data_kwargs=data_kw,
                     fixed=fixed, **options)
        info = ModelInfo(model.observed_sites, (), (), model.max_plate_nesting, {"obs": x})
        return Fit(model=model, method="em", history=out["history"], converged=out["converged"],
                   elapsed=0.0, seed=seed, model_fn=model_fn, data=x, model_kwargs=kwargs,
                   info=info, params=model.get_params(), messages=small + out["messages"],
                   options=dict(options), state=model.get_state())
    if method == "svi":
        result = _svi_builtin(model, x, seed, init, kwargs, data_kw, progress, options,
                              model_fn, constants)
        result.messages[:0] = small
        return result
    info = inspect_model(model_fn, (x,), kwargs)
    options = dict(options)
    if options.get("kernel", "nuts") != "chees":  # ChEES runs under vmap, never the JIT
        options.setdefault("jit_compile", model.jit_compile)
    faster = ["method='em' (a point estimate in closed form)"] if \
        "em" in model.capabilities().methods else []
    faster.append("method='svi' with guide='normal' (approximate posterior draws)")
    out = run_mcmc(model_fn, (x,), kwargs, info, seed=seed, progress=progress,
                   init_values_fn=lambda s: model.init_values(x, init=init, seed=s, **data_kw),
                   slow_remedy="Faster: " + ", or ".join(faster) + ".", **options)
    samples = dict(out["samples"])
    lead = next(iter(samples.values())).shape[:2] if samples else (1, 1)
    for site, value in constants.items():  # fixed sites: the same value in every draw
        samples[site] = value.expand(*lead, *value.shape).clone()
    samples = model.relabel(samples)
    samples.update(recover_discrete(model_fn, samples, (x,), kwargs, info, seed))
    continuous = {k: v for k, v in samples.items() if k in info.continuous or k in constants}
    model.summarize_posterior({k: v.reshape(-1, *v.shape[2:]) for k, v in continuous.items()})
    return Fit(model=model, method="mcmc", history={}, converged=None, elapsed=0.0, seed=seed,
               model_fn=model_fn, data=x, model_kwargs=kwargs, info=info,
               params=model.get_params(), posterior=samples, sample_stats=out["sample_stats"],
               messages=small, options=dict(options), state=model.get_state())


def _split(options: dict[str, Any], names) -> dict[str, Any]:
    return {k: options.pop(k) for k in list(options) if k in names}


def _fingerprint(model: Any, x: Any, method: str, objective: Any, options: dict[str, Any],
                 loop_kw: dict[str, Any]) -> dict[str, Any] | None:
    """What a checkpoint must match to be resumed by this fit: the model (class and
    configuration), the method, the objective and its options, and the data (shape and two
    float64 moments). None when the fit neither writes nor reads a checkpoint (the moments
    read the whole data set)."""
    if loop_kw.get("checkpoint") is None and loop_kw.get("resume") is None:
        return None
    values = getattr(x, "probs", x)
    if isinstance(model, GenerativeModel):
        try:
            config = model.get_config()
        except Exception:  # a model with user modules: its class and repr
            config = repr(model)
        name = type(model).__name__
    else:
        config, name = getattr(model, "__qualname__", repr(model)), "function"
    data: dict[str, Any] = {}
    if isinstance(values, torch.Tensor) and not values.is_sparse:
        v = values.detach()
        norm = torch.linalg.vector_norm(v, dtype=torch.float64) if v.is_floating_point() \
            else torch.linalg.vector_norm(v.double())
        data = {"shape": list(v.shape), "sum": round(float(v.sum(dtype=torch.float64)), 6),
                "sq": round(float(norm) ** 2, 6)}
    return {"model": name, "config": json_safe(config), "method": method,
            "objective": type(objective).__name__,
            "options": {k: repr(v) for k, v in sorted(options.items())}, "data": data}


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _validation_batch(model: GenerativeModel, loop_kw: dict[str, Any]) -> dict[str, Any]:
    """``validation_data=(x, model_kwargs)`` (e.g. a conditional VAE's labels) becomes a
    :class:`~ppgen.training.Batch` of the prepared data and keyword arguments."""
    val = loop_kw.get("validation_data")
    if not (isinstance(val, tuple) and len(val) == 2 and isinstance(val[1], dict)):
        return loop_kw
    x, kwargs = model.prepare_inputs(val[0], dict(val[1]))
    return dict(loop_kw, validation_data=Batch(x, None, len(x), kwargs=kwargs))


def _svi_builtin(model: GenerativeModel, x, seed, init, kwargs, data_kw, progress,
                 options, model_fn=None, constants=None) -> Fit:
    """SVI on a built-in model: its own objective when it has one (networks trained by a
    hand-written step), else an ELBO on its Pyro model (conditioned on the ``constants``,
    the fixed parameters' sites) and a guide."""
    options = dict(options)
    constants = constants or {}
    model_fn = model_fn or model.model
    loop_kw = _split(options, LOOP_OPTIONS)
    num_draws = options.pop("num_samples", 1000)
    batch_size = options.pop("batch_size", None)
    num_steps = options.pop("num_steps", None)
    tol = options.pop("tol", 1e-5)
    check_every = options.pop("check_every", 100)
    objective = None
    if "loss" not in options and "guide" not in options:
        total = plan_steps(len(x), num_steps, loop_kw.get("num_epochs"), batch_size)
        names = OBJECTIVE_OPTIONS | set(model.objective_options)
        # The options stay for the ELBO below when the model has no objective of its own
        # (popping them here lost lr, lr_decay, clip_norm and num_particles for it).
        objective = model.default_objective(
            total_steps=total, **{k: v for k, v in options.items() if k in names})
        if objective is not None:
            _split(options, names)
    if objective is not None:
        if constants:
            raise bad_value("fixed", "no fixed parameters for a model trained by its own "
                            f"objective ({type(objective).__name__})", ", ".join(constants))
        loop_kw = _validation_batch(model, loop_kw)
        # The run's length is not part of it: a finished run can be resumed with more
        # steps or epochs (the learning-rate schedule goes on from the checkpoint's state).
        fingerprint = _fingerprint(model, x, "svi", objective, {
            "batch_size": batch_size, **{k: v for k, v in vars(objective).items()
                                         if isinstance(v, int | float | str | bool)
                                         and k != "total_steps"}}, loop_kw)
        out = train(objective, model, x, seed=seed, num_steps=num_steps, batch_size=batch_size,
                    tol=tol, check_every=check_every, progress=progress, kwargs=kwargs,
                    per_datum=model.data_kwargs, fingerprint=fingerprint, **loop_kw)
        model.finish_fit()
        info = ModelInfo(model.observed_sites, (), (), model.max_plate_nesting, {})
        return Fit(model=model, method="svi", history=out.history, converged=out.converged,
                   elapsed=0.0, seed=seed, model_fn=model.model, data=x, model_kwargs=kwargs,
                   info=info, params=model.get_params() if model.is_fitted else {},
                   messages=out.messages, options=dict(options, batch_size=batch_size,
                                                       guide=model.default_guide),
                   state=model.get_state())
    guide = options.pop("guide", model.default_guide)
    guide_kind = _guide_kind(guide)
    # The model's own guide ("model", or its bound guide method) starts itself and
    # reports its point estimate; automatic guides start from init_values.
    own = guide == "model" or getattr(guide, "__self__", None) is model
    if own:
        guide_kind = "model"
    if guide == "model":
        guide = model.guide
    if constants and own:
        guide = poutine.block(guide, hide=list(constants))
    if batch_size is not None:
        batch_size = min(check_positive_int("batch_size", batch_size), x.shape[0])
        kwargs = dict(kwargs, subsample_size=batch_size)
    # One trace on a minibatch (not the whole data set) tells the sites and the plates.
    info = inspect_model(model_fn, (x,), kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "subsample_size"}
    if options.get("loss") is None:
        options["loss"] = model.default_loss(options.get("num_particles", 1))
    values = None if own else model.init_values(x, init=init, seed=seed, **data_kw)
    fingerprint = _fingerprint(model, x, "svi", guide if callable(guide) else str(guide),
                               dict(options, batch_size=batch_size, guide=str(guide)), loop_kw)
    if constants and values is not None:
        values = {k: v for k, v in values.items() if k not in constants}
    out = run_svi(model_fn, (x,), kwargs, info, progress=progress, seed=seed, guide=guide,
                  init_values=values, batch_size=batch_size, num_steps=num_steps, tol=tol,
                  check_every=check_every, loop_options=loop_kw, fingerprint=fingerprint,
                  model=model, **options)
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
        model.set_point_estimate({**point, **constants})
    return Fit(model=model, method="svi", history=out["history"], converged=out["converged"],
               elapsed=0.0, seed=seed, model_fn=model_fn, data=x, model_kwargs=kwargs,
               info=info, params=model.get_params() if model.is_fitted else {},
               posterior=posterior, guide=guide_fn, messages=out["messages"],
               options=dict(options, batch_size=batch_size, guide=guide_kind),
               state=model.get_state())


def _guide_kind(guide: Any) -> str:
    """The guide as ``Fit.options["guide"]`` records it: "map", "normal", "model", or the
    name of a user's callable."""
    if isinstance(guide, str):
        return guide
    return getattr(guide, "__name__", None) or type(guide).__name__


def _guide_draws(guide_fn, args, kwargs, info: ModelInfo, num_draws: int):
    """``num_draws`` joint draws of the latent sites from a guide: site -> (1, S, ...)."""
    num_draws = check_positive_int("num_samples", num_draws)
    sites = list(info.continuous)
    try:  # all draws in one vectorised call of the guide
        predictive = pyro.infer.Predictive(guide_fn, num_samples=num_draws, return_sites=sites,
                                           parallel=True)
        with pyro.poutine.block():
            draws = predictive(*args, **kwargs)
        if any(v.shape[0] != num_draws for k, v in draws.items() if k in sites):
            raise ValueError("a site ignored the draws' plate")
    except (RuntimeError, ValueError, NotImplementedError):
        # A guide that cannot broadcast over a plate of draws: one call per draw.
        predictive = pyro.infer.Predictive(guide_fn, num_samples=num_draws, return_sites=sites)
        with pyro.poutine.block():
            draws = predictive(*args, **kwargs)
    # Predictive pads sites to the plate depth; give every site its own shape back.
    return {k: v.detach().reshape(1, num_draws, *info.shapes.get(k, v.shape[1:]))
            for k, v in draws.items() if k in info.continuous}


def _module_params(model: Any) -> dict[str, torch.Tensor]:
    """The learned ``PyroParam`` values of a PyroModule model (module-local: they live on
    the module, not in the param store), by dotted name."""
    if not isinstance(model, PyroModule):
        return {}
    out = {}
    for prefix, module in model.named_modules():
        for name in getattr(module, "_pyro_params", {}):
            out[f"{prefix}.{name}" if prefix else name] = getattr(module, name).detach().clone()
    return out


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
    if method == "em":
        return _em_function(model_fn, data, seed, init, kwargs, info, progress, options)
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
        guide_kind = _guide_kind(guide)
        loop_kw = _split(options, LOOP_OPTIONS)
        fingerprint = _fingerprint(model_fn, data, "svi", guide if callable(guide) else
                                   str(guide), dict(options, guide=str(guide)), loop_kw)
        out = run_svi(model_fn, args, kwargs, info, progress=progress, seed=seed, guide=guide,
                      init_values=init, loop_options=loop_kw, fingerprint=fingerprint,
                      **options)
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
        params.update(_module_params(model_fn))
        return Fit(model=model_fn, method="svi", history=out["history"],
                   converged=out["converged"], elapsed=0.0, seed=seed, model_fn=model_fn,
                   data=data, model_kwargs=kwargs, info=info, params=params,
                   posterior=posterior, guide=guide_fn, messages=out["messages"],
                   options=dict(options, guide=guide_kind))
    if not info.continuous:
        raise bad_value("model", "continuous latent sites to sample with NUTS", "none")
    if info.subsampled:
        raise NotSupportedError(
            "model: expected a model without subsampling for method='mcmc', got the "
            f"subsampled plate(s) {', '.join(repr(p) for p in info.subsampled)}: NUTS needs "
            "the density of the full data (a random minibatch makes it a different density at "
            "every step). Drop subsample_size for MCMC, or use method='svi'.")
    out = run_mcmc(model_fn, args, kwargs, info, seed=seed, progress=progress,
                   init_values_fn=(lambda s: init) if init else None,
                   slow_remedy="Faster: method='svi' (guide='normal': approximate posterior "
                   "draws).", **options)
    samples = out["samples"]
    samples.update(recover_discrete(model_fn, samples, args, kwargs, info, seed))
    samples.update(deterministic_draws(model_fn, samples, args, kwargs, info))
    params = {k: v.reshape(-1, *v.shape[2:]).float().mean(0) for k, v in samples.items()
              if k in info.continuous}
    return Fit(model=model_fn, method="mcmc", history={}, converged=None, elapsed=0.0,
               seed=seed, model_fn=model_fn, data=data, model_kwargs=kwargs, info=info,
               params=params, posterior=samples, sample_stats=out["sample_stats"],
               options=dict(options, jit_compile=out["jit_compile"]))


def _em_function(model_fn: Callable, data, seed, init, kwargs, info: ModelInfo, progress,
                 options) -> Fit:
    """EM on a model function (:mod:`ppgen.inference.generic_em`): its discrete sites
    enumerated exactly, its ``pyro.param`` values and continuous sites maximised by L-BFGS."""
    check_em_model(model_fn, info)
    options = dict(options)
    fixed = options.pop("fixed", None) or ()
    if isinstance(fixed, str):
        fixed = (fixed,)
    if not isinstance(fixed, list | tuple | set | frozenset) or \
            not all(isinstance(f, str) for f in fixed):
        raise bad_type("fixed", "a tuple of pyro.param or continuous site names", repr(fixed))
    em_model = FunctionEM(model_fn, (data,), kwargs, info, fixed=tuple(fixed),
                          m_step_iter=options.pop("m_step_iter", 100),
                          m_step_tol=options.pop("m_step_tol", 1e-9),
                          m_step=options.pop("m_step", None))
    # The driver reads the data's device, dtype and size from a tensor: the data, else the
    # first observed value.
    anchor = data if isinstance(data, torch.Tensor) else next(
        (v for v in info.observed_values.values() if isinstance(v, torch.Tensor)),
        torch.zeros(0))
    out = run_em(em_model, anchor, init=init, seed=seed, progress=progress, **options)
    messages = list(out["messages"])
    if em_model.undone:
        msg = (f"EM: L-BFGS found no increase of the expected log joint in {em_model.undone} "
               "M-step(s), which were undone (the objective then stays "
               "put, and EM may stop early); raise m_step_iter, or use float64 data.")
        messages.append(Diagnostic("m_step_undone", msg, value=float(em_model.undone)))
        warn_user(msg, RuntimeWarning)
    params = em_model.point_estimates()
    return Fit(model=model_fn, method="em", history=out["history"], converged=out["converged"],
               elapsed=0.0, seed=seed, model_fn=model_fn, data=data, model_kwargs=kwargs,
               info=info, params=params, messages=messages,
               options=dict(options, fixed=tuple(fixed), m_step_iter=em_model.m_step_iter,
                            m_step_tol=em_model.m_step_tol,
                            m_step=getattr(em_model.closed_form, "__name__", "closed form")
                            if em_model.closed_form is not None else "L-BFGS"))
