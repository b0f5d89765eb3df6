"""The contract between models and inference.

A :class:`GenerativeModel` is a :class:`~pyro.nn.PyroModule` with plain Pyro ``model`` and
``guide`` methods, usable with :class:`pyro.infer.SVI`, :class:`pyro.infer.MCMC` and
:class:`pyro.infer.Predictive` directly. On top of that it offers the applications every
generative model has (``sample``, ``log_prob``, ``score``, ``impute``) and declares optional
capabilities that the runners in :mod:`ppgen.inference` use:

=======================  ==================================================================
capability               methods
=======================  ==================================================================
closed-form EM           ``em_initialize``, ``e_step``, ``m_step`` (``supports_em = True``)
SVI / MCMC start values  ``init_values``
point estimates          ``set_point_estimate`` (SVI guide medians), ``summarize_posterior``
label switching          ``relabel`` (applied to MCMC draws before diagnostics)
fast log-likelihood      ``log_likelihood`` (per datum, vectorised over posterior draws)
custom loss              ``custom_loss`` (contrastive / adversarial models)
training objective       ``default_objective`` (an :class:`ppgen.training.Objective`: own
                         steps, parameter groups, persistent state), ``parameter_groups``
training-only modules    ``training_only`` (submodules kept in checkpoints, left out of
                         ``ppgen.save``)
=======================  ==================================================================

What a model can do is declared, not discovered: :meth:`GenerativeModel.capabilities` reads the
class attributes ``supports_em``, ``supports_mcmc``, ``log_prob_kind`` and ``applications``.
A request outside them raises :class:`~ppgen.NotSupportedError` naming the alternative.

The model's state is its ``state_dict()`` (public parameters, buffers and network weights):
snapshots, the rollback of a failed fit, checkpoints and ``ppgen.save`` all use it.

The inference layer never imports a concrete model: it talks to this class only.
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from pyro.nn import PyroModule

from .._threads import work_threads
from .._validation import NotFittedError, bad_value, not_supported

__all__ = ["GenerativeModel", "Capabilities", "register", "MODEL_REGISTRY", "get_model_class"]

LogProbKind = Literal["exact", "estimate", "bound", "none"]
ModelT = TypeVar("ModelT", bound="type[GenerativeModel]")


@dataclass(frozen=True)
class Capabilities:
    """What a model declares it can do.

    Attributes
    ----------
    methods : tuple of str
        Fitting methods among ``"em"``, ``"svi"``, ``"mcmc"``.
    log_prob : {"exact", "estimate", "bound", "none"}
        The kind of :meth:`GenerativeModel.log_prob`: exact, a stochastic estimate with a
        standard error (``estimator`` names it), a lower bound, or none.
    estimator : str or None
        The estimator behind an ``"estimate"`` or ``"bound"`` log_prob (e.g.
        ``"importance sampling"``).
    applications : tuple of str
        Among ``"sample"``, ``"log_prob"``, ``"score"``, ``"impute"``, ``"reconstruct"``,
        ``"transform"``.
    """

    methods: tuple[str, ...]
    log_prob: LogProbKind
    estimator: str | None
    applications: tuple[str, ...]

#: Built-in models by short name (``"gmm"``), filled by :func:`register`.
MODEL_REGISTRY: dict[str, type[GenerativeModel]] = {}


#: The applications that run under ppgen's intra-op thread rule (:mod:`ppgen._threads`), as
#: fits do: a method of one of these names that a model class defines is wrapped in
#: :func:`~ppgen._threads.work_threads` sized by its inputs (GenerativeModel.__init_subclass__),
#: so that scoring or sampling small data does not split every op over threads that wait for
#: a core another process holds.
THREADED_APPLICATIONS = ("sample", "log_prob", "score", "score_samples", "impute",
                         "reconstruct", "transform", "predict", "predict_proba",
                         "sample_states", "free_energy", "log_partition", "encode")


def _elements(value: Any) -> int:
    """Elements of a tensor, an array, or a list or tuple of them (else 0)."""
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, np.ndarray):
        return int(value.size)
    if isinstance(value, list | tuple):
        return sum(_elements(v) for v in value if isinstance(v, torch.Tensor | np.ndarray))
    return 0


def _application_work(model: Any, name: str, args: tuple, kwargs: dict) -> int:
    """The work of one application call, in elements: its data, times the Monte Carlo
    samples per datum (``num_samples`` of an estimator), or for ``sample(n)`` n draws of the
    model's width and of ``lengths`` steps; 0 where the work is not known from the arguments
    (e.g. a partition function's estimate), which leaves the threads as they are."""
    size = sum(_elements(v) for v in (*args, *kwargs.values()))
    draws = kwargs.get("num_samples")
    if name == "sample":
        n = args[0] if args else kwargs.get("num_samples")
        width = next((w for w in (getattr(model, a, None) for a in (
            "num_features", "num_visible", "data_dim")) if isinstance(w, int)), 1)
        steps = kwargs.get("lengths")
        steps = steps if isinstance(steps, int) else 1
        return size + (n * width * steps if isinstance(n, int) else 0)
    if isinstance(draws, int) and draws > 1:
        size *= draws
    return size


_INSIDE = threading.local()  # inside an application: nested ones keep its threads


def _threaded(name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def application(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(_INSIDE, "active", False):
            return fn(self, *args, **kwargs)
        work = _application_work(self, name, args, kwargs)
        if work == 0:  # unknown: the threads as they are
            return fn(self, *args, **kwargs)
        _INSIDE.active = True
        try:
            with work_threads(work, device=self.device):
                return fn(self, *args, **kwargs)
        finally:
            _INSIDE.active = False

    application._ppgen_threaded = True  # type: ignore[attr-defined]
    return application


def register(name: str) -> Callable[[ModelT], ModelT]:
    """Class decorator adding a model to :data:`MODEL_REGISTRY` under ``name`` (the class
    itself is returned unchanged, so type checkers see its own signature)."""

    def deco(cls: ModelT) -> ModelT:
        if name in MODEL_REGISTRY and MODEL_REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered")
        cls.registry_name = name
        MODEL_REGISTRY[name] = cls
        return cls

    return deco


def get_model_class(name: str) -> type[GenerativeModel]:
    if name in MODEL_REGISTRY:
        return MODEL_REGISTRY[name]
    for cls in MODEL_REGISTRY.values():
        if cls.__name__ == name:
            return cls
    raise bad_value("model", "one of " + ", ".join(sorted(MODEL_REGISTRY)), repr(name))


class GenerativeModel(PyroModule):
    """Base class of every built-in generative model.

    Subclasses set :attr:`param_names` (the public, fitted parameters, stored as buffers so
    that ``.to(device)`` and ``state_dict`` carry them) and implement ``model``/``guide`` and
    the applications. Hyperparameters are validated in ``__init__``; no work happens there.
    """

    registry_name: ClassVar[str] = ""
    #: Public parameters; ``fit(..., init={...})`` and ``get_params`` use these names.
    param_names: ClassVar[tuple[str, ...]] = ()
    #: Extra buffers that belong to the fitted state (data-dependent prior settings).
    state_names: ClassVar[tuple[str, ...]] = ()
    #: Whether the model has discrete sites marked for enumeration.
    has_enumerated_sites: ClassVar[bool] = False
    #: Whether ``em_initialize``/``e_step``/``m_step`` exist.
    supports_em: ClassVar[bool] = False
    #: What the EM objective (``Fit.history["objective"]``) is, with its unit: the y label of
    #: ``plots.plot_history`` for EM fits.
    em_objective: ClassVar[str] = "log-likelihood (nats)"
    #: Whether NUTS can sample every parameter (False for models with network weights).
    supports_mcmc: ClassVar[bool] = True
    #: The kind of ``log_prob``: "exact", "estimate" (stochastic, with a standard error),
    #: "bound" (a lower bound) or "none"; and the estimator behind an estimate or bound.
    log_prob_kind: ClassVar[LogProbKind] = "exact"
    log_prob_estimator: ClassVar[str | None] = None
    #: The applications the model offers (see :class:`Capabilities`).
    applications: ClassVar[tuple[str, ...]] = ("sample", "log_prob", "score", "impute")
    #: Extra ``fit(..., "svi")`` options this model's :meth:`default_objective` takes.
    objective_options: ClassVar[tuple[str, ...]] = ()
    #: Names of submodules used only in training (e.g. a GAN's discriminator): kept in
    #: snapshots and checkpoints, left out of ``ppgen.save``.
    training_only: ClassVar[tuple[str, ...]] = ()
    #: Default SVI guide kind: ``"map"`` (point estimate), ``"normal"`` (mean field) or
    #: ``"model"`` (the model's own :meth:`guide`).
    default_guide: ClassVar[str] = "normal"
    #: Name of the observed site(s), for ArviZ's observed_data and log_likelihood groups.
    observed_sites: ClassVar[tuple[str, ...]] = ("obs",)
    #: A custom loss (callable ``loss(model, guide, *args, **kwargs)``) or None for an ELBO.
    custom_loss: ClassVar[Callable[..., torch.Tensor] | None] = None
    max_plate_nesting: ClassVar[int] = 1
    #: Whether NUTS may compile the model with the PyTorch JIT (shapes fixed per fit).
    jit_compile: ClassVar[bool] = True
    #: Model keyword arguments that describe the data (e.g. ``lengths`` of padded
    #: sequences); the runners pass them on to the EM steps, ``init_values`` and
    #: ``log_likelihood``, and diagnostics to ``log_prob`` and ``sample``.
    data_kwargs: ClassVar[tuple[str, ...]] = ()
    #: ArviZ dimension names of the observed data's axes (the first names one datum).
    observed_dims: ClassVar[tuple[str, ...]] = ("obs_id", "feature")
    #: ArviZ dimensions indexed by the data's columns, which a pandas DataFrame's column
    #: names label (``to_arviz`` coordinates, ``summary`` rows); () means the last of
    #: :attr:`observed_dims`.
    column_dims: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in THREADED_APPLICATIONS:
            fn = cls.__dict__.get(name)
            if isinstance(fn, types.FunctionType) and not getattr(fn, "_ppgen_threaded", False):
                setattr(cls, name, _threaded(name, fn))

    def __init__(self) -> None:
        super().__init__()
        for name in self.param_names + self.state_names:
            self.register_buffer(name, None)

    def __getattr__(self, name: str) -> Any:
        # The public parameters are buffers, which PyroModule.__getattr__ returns unchanged
        # after ~3 us of checks for its own kinds of attribute; EM's steps read them dozens
        # of times an iteration. A name PyroModule manages (a PyroParam or PyroSample) is
        # never a buffer too, but it is checked, so that the two can never disagree.
        d = self.__dict__
        buffers = d.get("_buffers")
        if (buffers is not None and name in buffers and name not in d.get("_pyro_params", ())
                and name not in d.get("_pyro_samples", ())):
            return buffers[name]
        return super().__getattr__(name)

    @classmethod
    def capabilities(cls) -> Capabilities:
        """What this model declares it can do (methods, kind of log_prob, applications)."""
        methods = tuple(m for m, ok in (("em", cls.supports_em), ("svi", True),
                                        ("mcmc", cls.supports_mcmc)) if ok)
        return Capabilities(methods=methods, log_prob=cls.log_prob_kind,
                            estimator=cls.log_prob_estimator, applications=cls.applications)

    def check_supports(self, application: str, instead: str) -> None:
        """Raise :class:`~ppgen.NotSupportedError` unless ``application`` is declared."""
        if application not in self.applications:
            raise not_supported(self, application, instead)

    def _apply(self, fn, recurse=True):
        # .to(), .float(), .cuda(): derived caches (Cholesky factors, log-parameters) must
        # follow the new device and dtype.
        out = super()._apply(fn, recurse)
        if self.is_fitted:
            self._on_params_changed()
        return out

    # ----------------------------------------------------------------------- Pyro
    def model(self, data: torch.Tensor | None = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def guide(self, data: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """The model's own guide, if it has one; the SVI runner builds automatic guides."""
        raise NotImplementedError(
            f"{type(self).__name__} has no hand-written guide; ppgen.fit(method='svi') builds "
            "an automatic guide (guide='map' or 'normal')."
        )

    # --------------------------------------------------------------- configuration
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable), used by ``ppgen.save``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ parameters
    @property
    def active_param_names(self) -> tuple[str, ...]:
        """The public parameters this configuration uses (a subset of ``param_names`` for
        models whose parameters depend on a constructor option)."""
        return self.param_names

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, n) is not None for n in self.active_param_names)

    def check_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted, so it cannot {action}. Call "
                f"ppgen.fit(model, data, method='em' | 'svi' | 'mcmc') first, or set parameters "
                f"with model.set_params(...)."
            )

    def get_params(self) -> dict[str, torch.Tensor]:
        """The public parameters (copies)."""
        self.check_fitted("report parameters")
        return {n: getattr(self, n).detach().clone() for n in self.active_param_names}

    def get_state(self, *, training: bool = True) -> dict[str, torch.Tensor | None]:
        """Everything that fitting changes: the module's ``state_dict()`` (public parameters,
        buffers, network weights) as detached copies, and ``None`` for public parameters that
        are not set yet. ``training=False`` leaves out the :attr:`training_only` modules (what
        ``ppgen.save`` writes); snapshots and checkpoints keep them."""
        state: dict[str, torch.Tensor | None] = {n: None for n in self.param_names
                                                 + self.state_names}
        skip = tuple(f"{m}." for m in self.training_only) if not training else ()
        for k, v in self.state_dict(keep_vars=True).items():
            if not k.startswith(skip):
                state[k] = v.detach().clone()
        return state

    def set_state(self, state: dict[str, torch.Tensor | None]) -> None:
        """Restore a state from :meth:`get_state` (all of it, or nothing: the entries are
        checked against the module before anything is changed). Network weights are copied
        into the existing tensors, so they keep the model's device and dtype; public
        parameters take the given tensors (None unsets them)."""
        named = self.param_names + self.state_names
        own = {k: v for k, v in self.state_dict(keep_vars=True).items() if k not in named}
        given = {k: v for k, v in state.items() if k not in named}
        skipped = tuple(f"{m}." for m in self.training_only)
        missing = [k for k in own if k not in given and not k.startswith(skipped)]
        unexpected = [k for k in given if k not in own]
        wrong = [k for k, v in given.items() if k in own and v is not None
                 and tuple(v.shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            what = "; ".join(f"{label} {', '.join(names[:4])}" for label, names in
                             (("missing", missing), ("unexpected", unexpected),
                              ("wrong shape", wrong)) if names)
            raise bad_value("state", f"the state of this {type(self).__name__} "
                            "(get_state() of the same configuration)", what)
        with torch.no_grad():
            for k, v in given.items():
                if v is not None:
                    own[k].copy_(v)
        for n in named:
            setattr(self, n, state.get(n))
        self._on_params_changed()

    def set_params(self, **params: Any) -> None:
        """Set public parameters (validated); the model counts as fitted once all are set."""
        unknown = set(params) - set(self.active_param_names)
        if unknown:
            raise bad_value("params", "names among " + ", ".join(self.active_param_names),
                            ", ".join(sorted(unknown)))
        checked = self._check_params(params)
        for k, v in checked.items():
            setattr(self, k, v)
        self._on_params_changed()

    def _check_params(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v) for k, v in params.items()}

    def _on_params_changed(self) -> None:
        """Hook: recompute caches derived from the parameters."""

    def _tensors(self):
        yield from (getattr(self, n) for n in self.param_names + self.state_names)
        yield from self.parameters()
        yield from self.buffers()

    @property
    def device(self) -> torch.device:
        """The device of the model's tensors (public parameters first, then networks)."""
        for v in self._tensors():
            if v is not None:
                return v.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's tensors (public parameters first)."""
        for v in self._tensors():
            if v is not None and v.is_floating_point():
                return v.dtype
        return torch.get_default_dtype()

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Network parameters by group, each trained by its own optimiser (e.g.
        ``{"generator": [...], "discriminator": [...]}``); by default one group ``"model"``
        with every ``nn.Parameter`` of the module, or none."""
        params = list(self.parameters())
        return {"model": params} if params else {}

    def default_objective(self, **options: Any) -> Any:
        """The training objective ``fit(..., "svi")`` uses for this model: an object with
        ``init(model, batch, seed) -> TrainState`` and ``step(model, state, batch) ->
        metrics`` (:class:`ppgen.training.Objective`), built from the fit's options; or None
        (the default) for an ELBO on :meth:`model` and the chosen guide. It receives
        ``total_steps``, the fit's ``lr``, ``lr_decay``, ``clip_norm``, ``num_particles``
        where given, and the options named in :attr:`objective_options`."""
        return None

    def finish_fit(self) -> None:
        """Hook called once the training loop has run this model's own objective (e.g. to
        switch networks to evaluation mode and mark the model fitted)."""

    # ---------------------------------------------------------------- inference hooks
    def prepare(self, data: torch.Tensor) -> torch.Tensor:
        """Validate training data and set data-dependent settings; returns the data to fit."""
        return data

    def prepare_inputs(self, data: Any,
                       model_kwargs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Validate training data (and data keyword arguments such as ``lengths``); returns
        the data to fit and the model keyword arguments. By default :meth:`prepare`."""
        return self.prepare(data), model_kwargs

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int) -> dict[str, torch.Tensor]:
        """Start values of the latent sample sites for SVI and MCMC (site name -> value)."""
        return {}

    def default_loss(self, num_particles: int = 1) -> Any:
        """The SVI objective ``fit(..., "svi")`` uses when given no ``loss=``: a Pyro ELBO,
        a callable ``loss(model, guide, *args, **kwargs)``, or None for the runner's choice
        (``Trace_ELBO``, or ``TraceEnum_ELBO`` with enumerated sites). By default
        :attr:`custom_loss`."""
        return type(self).custom_loss

    def guide_point_estimate(self) -> dict[str, torch.Tensor]:
        """Site values (for :meth:`set_point_estimate`) read from the param store after SVI
        with the model's own guide (``guide="model"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no hand-written guide; use "
                                  "guide='map' or 'normal'.")

    def set_point_estimate(self, values: dict[str, torch.Tensor]) -> None:
        """Store point estimates given as latent site values (e.g. an SVI guide's medians)."""
        raise NotImplementedError

    def summarize_posterior(self, samples: dict[str, torch.Tensor]) -> None:
        """Store a posterior summary; ``samples`` maps sites to tensors of shape (draws, ...)."""
        self.set_point_estimate({k: v.mean(0) for k, v in samples.items()})

    def relabel(self, samples: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undo label switching in draws of shape (chains, draws, ...); identity by default."""
        return samples

    def log_likelihood(self, data: torch.Tensor, samples: dict[str, torch.Tensor],
                       **data_kwargs: Any) -> dict[str, torch.Tensor] | None:
        """Per-datum log-likelihood under each draw, discrete latents summed out.

        Returns a dict observed-site -> tensor of shape (draws, num_data), or None to let the
        inference layer compute it generically by tracing the model once per draw.
        """
        return None

    def site_dims(self) -> dict[str, list[str]]:
        """ArviZ dimension names of the latent sites (without chain/draw)."""
        return {}

    def params_from_draws(self, samples: dict[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor] | None:
        """The public parameters under each posterior draw (name -> (chains, draws, ...)),
        from site draws of that shape; or None where the sites are the parameters. ``summary``
        reports these instead of internal sites (e.g. Cholesky factors of correlations), and
        ``to_arviz`` adds them to the posterior group."""
        return None

    # ----------------------------------------------------------------- applications
    def sample(self, num_samples: int, *, seed: int | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot generate samples")

    def log_prob(self, data: Any) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no tractable log-likelihood; use ppgen.evaluation"
        )

    def score(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Anomaly score per example: the negative log-likelihood in nats (higher = odder).
        Takes the keyword arguments of :meth:`log_prob` (an estimator's ``num_samples`` and
        ``seed``).

        Not scikit-learn's ``score`` (the mean log-likelihood, higher = better): that is
        ``model.score_samples(x).mean()``."""
        return -self.log_prob(data, **kwargs)

    def score_samples(self, data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Log-likelihood of each example in nats, as scikit-learn's ``score_samples``: the
        same as :meth:`log_prob` (and the negative of :meth:`score`), with its arguments.
        ``score_samples(x).mean()`` is scikit-learn's ``score``."""
        return self.log_prob(data, *args, **kwargs)

    def impute(self, data: Any) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot complete missing values")
