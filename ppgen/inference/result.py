"""The result of ``ppgen.fit``: one object for EM, SVI and MCMC fits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["Fit", "Diagnostic", "ConvergenceWarning", "PointEstimateWarning"]


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped before its convergence rule was met."""


class PointEstimateWarning(UserWarning):
    """ArviZ data of a point estimate (EM, or SVI with a point-mass guide): one chain of one
    draw, which ArviZ functions that need posterior draws (``az.loo``, ``az.waic``,
    ``az.compare``, ``az.plot_ppc``, R-hat and ESS) cannot use."""


@dataclass(frozen=True)
class Diagnostic:
    """One structured finding of :meth:`Fit.diagnose`.

    Attributes
    ----------
    code : str
        ``"rhat"``, ``"ess_bulk"``, ``"ess_tail"``, ``"divergences"``, ``"not_converged"``,
        ``"khat"``, ``"nan"``, ``"em_decrease"``, ``"m_step_undone"`` (EM on a model
        function: an M-step that did not increase the expected log joint was undone),
        ``"interrupted"``, ``"too_little_data"``, ``"reg_covar_large"`` (a covariance floor
        not small against the data's variances), ``"precision_loss"`` (float32 data whose
        means dwarf their spread), ``"data_scale"`` (data far from the unit scale networks
        start at) or ``"data_range"`` (data outside a GAN generator's bounded output).
    message : str
        What was found and what to do about it.
    site : str or None
        The parameter or site concerned.
    value, threshold : float or None
        The measured value and the documented threshold it crossed.
    """

    code: str
    message: str
    site: str | None = None
    value: float | None = None
    threshold: float | None = None
    severity: Literal["warning", "error"] = "warning"

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


@dataclass(eq=False)
class Fit:
    """What a fit produced.

    Attributes
    ----------
    model : GenerativeModel or callable
        The fitted model (built-in models hold point estimates or a posterior summary).
    method : {"em", "svi", "mcmc"}
    history : dict of str to ndarray
        Per-step records; ``history["objective"]`` is what EM maximises per iteration (the
        total log-likelihood, plus the log prior density for models fitted by MAP EM, e.g. an
        HMM with Dirichlet concentrations above 1) or the loss (negative ELBO, or the custom
        loss) per SVI step.
    converged : bool or None
        Whether the stopping rule fired, or for SVI whose steps ran out first, whether the
        loss had gone flat by the end (:func:`ppgen.inference.loop.loss_trend`); None when no
        rule applied, e.g. ``tol=0`` or MCMC.
    elapsed : float
        Seconds spent fitting.
    seed : int
        The seed used (drawn from OS entropy when none was given).
    posterior : dict of str to Tensor, or None
        Posterior draws of shape (num_chains, num_draws, ...) (MCMC, or draws from an SVI
        guide that is not a point mass), after relabelling.
    sample_stats : dict of str to ndarray, or None
        MCMC statistics per chain and draw: ``diverging``, ``step_size``, ``n_steps``,
        ``lp``, ``energy``, and ``tree_depth`` (NUTS) or ``acceptance_rate`` (ChEES, whose
        ``n_steps`` and ``step_size`` are shared by the chains at each draw).
    params : dict of str to Tensor
        Point estimates: the model's public parameters, or for a user function the guide's
        medians and any ``pyro.param`` values.
    feature_names : list of str, or None
        The column names of a pandas DataFrame given as data: they name the features (the
        model's column dimension, e.g. ``feature`` or ``word``) in :meth:`to_arviz`'s
        coordinates and :meth:`summary`'s rows.
    state : dict of str to Tensor, or None
        A built-in model's whole state (``get_state()``: parameters, buffers, network
        weights) as this fit left it. ``to_arviz``, ``summary`` and ``diagnose`` describe
        this fit from it, even after the model has been refitted.
    """

    model: Any
    method: str
    history: dict[str, np.ndarray]
    converged: bool | None
    elapsed: float
    seed: int
    model_fn: Callable
    data: Any
    model_kwargs: dict[str, Any]
    info: Any
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    posterior: dict[str, torch.Tensor] | None = None
    sample_stats: dict[str, np.ndarray] | None = None
    guide: Any = None
    messages: list[Diagnostic] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = field(default=None, repr=False)
    feature_names: list[str] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @contextmanager
    def fitted_model(self) -> Iterator[Any]:
        """The model as this fit left it, for the block: a built-in model gets this fit's
        :attr:`state` back, and its current state again afterwards."""
        if self.state is None or not hasattr(self.model, "set_state"):
            yield self.model
            return
        current = self.model.get_state()
        self.model.set_state(self.state)
        try:
            yield self.model
        finally:
            self.model.set_state(current)

    def __repr__(self) -> str:
        name = getattr(self.model, "__name__", None) or type(self.model).__name__
        steps = len(self.history.get("objective", []))
        return (f"Fit(model={name}, method={self.method!r}, steps={steps}, "
                f"converged={self.converged}, elapsed={self.elapsed:.2f}s)")

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C (KeyboardInterrupt) ended this fit early: the model holds the last
        completed step's (SVI) or iteration's (EM) parameters and :attr:`history` ends there;
        :attr:`messages` says how to go on."""
        return any(m.code == "interrupted" for m in self.messages)

    @property
    def objective(self) -> float:
        """The last value of the objective (log-likelihood for EM, loss for SVI)."""
        hist = self.history.get("objective")
        if hist is None or len(hist) == 0:
            raise AttributeError(f"a {self.method} fit records no objective")
        return float(hist[-1])

    @property
    def num_chains(self) -> int:
        return 0 if self.posterior is None else next(iter(self.posterior.values())).shape[0]

    @property
    def is_point_estimate(self) -> bool:
        """Whether this fit holds a point estimate only (EM, or SVI with a point-mass guide
        such as ``guide="map"`` or a model's own guide), not posterior draws."""
        return self.posterior is None

    def to_arviz(self):
        """ArviZ ``InferenceData`` with posterior, sample_stats, log_likelihood (per datum,
        discrete latents summed out), posterior_predictive and observed_data.

        A point-estimate fit (:attr:`is_point_estimate`) gives its estimate as one chain of
        one draw, says so in ``attrs["ppgen_estimate"]`` and warns once
        (:class:`PointEstimateWarning`, naming how to get draws): ``az.loo``, ``az.waic``,
        ``az.plot_ppc`` and R-hat/ESS need posterior draws."""
        from ..diagnostics import to_inference_data

        if "idata" not in self._cache:
            self._cache["idata"] = to_inference_data(self)
        return self._cache["idata"]

    def summary(self, **kwargs: Any):
        """A table (pandas DataFrame): ArviZ's summary of the posterior, or the point
        estimates for EM/MAP fits. Its ``columns.name`` (printed above the index) and
        ``attrs["estimate"]`` say what it holds: the method, the guide, and draws or a point
        estimate."""
        from ..diagnostics import summary

        return summary(self, **kwargs)

    def diagnose(self) -> list[Diagnostic]:
        """Structured warnings: R-hat > 1.01, bulk/tail ESS < 100 per chain, divergences,
        non-convergence, PSIS k-hat > 0.7 for variational fits, NaN guard events."""
        from ..diagnostics import diagnose

        return diagnose(self)
