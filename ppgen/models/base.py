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
=======================  ==================================================================

The inference layer never imports a concrete model: it talks to this class only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pyro.nn import PyroModule

from .._validation import NotFittedError, bad_value

__all__ = ["GenerativeModel", "register", "MODEL_REGISTRY", "get_model_class"]

#: Built-in models by short name (``"gmm"``), filled by :func:`register`.
MODEL_REGISTRY: dict[str, type[GenerativeModel]] = {}


def register(name: str) -> Callable[[type[GenerativeModel]], type[GenerativeModel]]:
    """Class decorator adding a model to :data:`MODEL_REGISTRY` under ``name``."""

    def deco(cls: type[GenerativeModel]) -> type[GenerativeModel]:
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
    #: Whether NUTS can sample every parameter (False for models with network weights).
    supports_mcmc: ClassVar[bool] = True
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

    def __init__(self) -> None:
        super().__init__()
        for name in self.param_names + self.state_names:
            self.register_buffer(name, None)

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

    def get_state(self) -> dict[str, torch.Tensor | None]:
        """Everything that fitting changes, for snapshots and ``ppgen.save``."""
        return {
            n: (None if getattr(self, n) is None else getattr(self, n).detach().clone())
            for n in self.param_names + self.state_names
        }

    def set_state(self, state: dict[str, torch.Tensor | None]) -> None:
        for n in self.param_names + self.state_names:
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

    @property
    def device(self) -> torch.device:
        for n in self.param_names + self.state_names:
            v = getattr(self, n)
            if v is not None:
                return v.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for n in self.param_names + self.state_names:
            v = getattr(self, n)
            if v is not None and v.is_floating_point():
                return v.dtype
        return torch.get_default_dtype()

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

    # ----------------------------------------------------------------- applications
    def sample(self, num_samples: int, *, seed: int | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot generate samples")

    def log_prob(self, data: Any) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no tractable log-likelihood; use ppgen.evaluation"
        )

    def score(self, data: Any) -> torch.Tensor:
        """Anomaly score per example: the negative log-likelihood in nats (higher = odder)."""
        return -self.log_prob(data)

    def impute(self, data: Any) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot complete missing values")
