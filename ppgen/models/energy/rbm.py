"""The restricted Boltzmann machine (Smolensky 1986; Hinton 2002), Bernoulli or Gaussian
visibles, binary hidden units (energies and conditionals: :mod:`ppgen.models.energy.ops`).

As a Pyro model the hidden units are summed out: the observed site ``"obs"`` scores each
datum by the unnormalised log-density -F(v) (:class:`FreeEnergy`), which is what an energy-
based model can evaluate cheaply; the normaliser log Z is the hard part, estimated by
annealed importance sampling (:meth:`RBM.log_partition`). Training is contrastive divergence
(:class:`~ppgen.models.energy.ContrastiveDivergence`) through ``ppgen.fit(rbm, x, "svi")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..._random import resolve_seed
from ..._threads import work_threads
from ..._validation import (
    bad_type,
    bad_value,
    check_choice,
    check_data,
    check_positive_int,
    not_supported,
)
from .._blocks import BLOCK_ELEMENTS
from .._data_scale import unit_scale_warnings
from ..base import GenerativeModel, register
from .ais import Schedule, ais_log_partition, base_rate_bias, betas, raise_log_prob
from .objectives import ContrastiveDivergence
from .ops import (
    MAX_EXACT_UNITS,
    Visible,
    exact_log_partition,
    free_energy,
    hidden_probs,
    sample_hidden,
    sample_visible,
    visible_mean,
)

__all__ = ["RBM", "LogPartition", "FreeEnergy"]

_OBJECTIVE_OPTIONS = ("num_gibbs_steps", "persistent", "num_chains", "lr", "lr_decay",
                      "momentum", "initial_momentum", "momentum_epochs", "weight_decay",
                      "ais_every", "ais_samples", "ais_betas", "total_steps")
Method = Literal["ais", "exact", "raise"]
_NO_SHAPE = torch.Size()


def _is_binary(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is exactly 0 or 1 (False for NaN or infinities): the
    range by one reduction, then no fractional part (two passes, no comparisons' masks)."""
    if t.numel() == 0 or t.dtype == torch.bool:
        return True
    if t.dim() >= 1 and t.shape[0] > 1 and t.numel() > BLOCK_ELEMENTS:  # frac: a copy
        step = max(1, BLOCK_ELEMENTS // max(1, t[0].numel()))
        return all(_is_binary(t[i:i + step]) for i in range(0, t.shape[0], step))
    lo, hi = torch.aminmax(t)
    if not (bool(lo >= 0) and bool(hi <= 1)):  # NaN fails both
        return False
    return not t.is_floating_point() or not bool(torch.count_nonzero(torch.frac(t)))


@dataclass(frozen=True)
class LogPartition:
    """An estimate of log Z with its standard error.

    Attributes
    ----------
    estimate : float
        log Z in nats.
    stderr : float
        Monte-Carlo standard error (0 for ``"exact"``).
    method : {"exact", "ais", "raise"}
        ``"ais"``: a stochastic lower bound on log Z (so log-likelihoods from it are
        stochastic upper bounds); ``"raise"``: the mean over data of -F(v) - RAISE log p(v),
        high in expectation for a model trained towards maximum likelihood, so
        log-likelihoods from it are on the low side (for CD-1-trained RBMs it can fall on
        either side: :mod:`ppgen.models.energy.ais`).
    num_samples, num_betas : int
        Chains and intermediate distributions (0 for ``"exact"``).
    """

    estimate: float
    stderr: float
    method: str
    num_samples: int = 0
    num_betas: int = 0

    def __float__(self) -> float:
        return self.estimate


class FreeEnergy(dist.TorchDistribution):
    """The unnormalised density exp(-F(v)) of an RBM's visible units, as the observed site's
    distribution: ``log_prob(v) = -F(v)`` (log Z left out). It cannot be sampled directly;
    use :meth:`RBM.sample` (block Gibbs)."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, weights: torch.Tensor, visible_bias: torch.Tensor,
                 hidden_bias: torch.Tensor, visible: Visible, batch_shape=_NO_SHAPE,
                 validate_args=None) -> None:
        self.weights, self.visible_bias, self.hidden_bias = weights, visible_bias, hidden_bias
        self.visible = visible
        super().__init__(batch_shape, torch.Size([weights.shape[0]]),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return FreeEnergy(self.weights, self.visible_bias, self.hidden_bias, self.visible,
                          torch.Size(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return -free_energy(value, self.weights, self.visible_bias, self.hidden_bias,
                            self.visible)

    def sample(self, sample_shape=_NO_SHAPE):
        raise NotImplementedError("FreeEnergy cannot be sampled directly; use RBM.sample "
                                  "(block Gibbs sampling).")


@register("rbm")
class RBM(GenerativeModel):
    """Restricted Boltzmann machine with binary hidden units.

    Parameters
    ----------
    num_hidden : int
        Hidden units H.
    visible : {"bernoulli", "gaussian"}
        Binary visibles (data must be exactly 0/1), or unit-variance Gaussian visibles for
        real data (standardise it first: zero mean, unit variance per feature).

    Attributes
    ----------
    weights : Tensor of shape (num_visible, num_hidden)
    visible_bias : Tensor of shape (num_visible,)
    hidden_bias : Tensor of shape (num_hidden,)
        The public parameters (``get_params``/``set_params``: an RBM trained elsewhere, e.g.
        scikit-learn's ``BernoulliRBM`` with ``weights=components_.T``, ``visible_bias=
        intercept_visible_``, ``hidden_bias=intercept_hidden_``, is scored the same way).
    base_rate_bias : Tensor of shape (num_visible,) or None
        Log-odds of the training data's visible marginals (set by ``fit``): the base-rate
        model AIS starts from.

    Notes
    -----
    ``log_prob`` is -F(v) - log Z with log Z estimated by AIS (a stochastic lower bound on
    log Z, so the log-likelihood is a stochastic upper bound; cached per parameter state and
    estimator settings); ``log_prob(x, method="exact")`` enumerates the smaller layer (up to
    25 units) and ``method="raise"`` gives the per-datum RAISE estimate, low in expectation
    for a model trained towards maximum likelihood: there the two estimators bracket the
    true value (a CD-1-trained RBM can put RAISE above it: :mod:`ppgen.models.energy.ais`).

    Examples
    --------
    >>> import torch, ppgen
    >>> x = (torch.rand(200, 6) < 0.3).double()
    >>> rbm = ppgen.RBM(4)
    >>> fit = ppgen.fit(rbm, x, "svi", num_epochs=5, batch_size=50, seed=0, progress=False,
    ...                 tol=0)
    >>> rbm.weights.shape
    torch.Size([6, 4])
    >>> lz = rbm.log_partition(method="exact")
    >>> abs(rbm.log_partition(method="ais", num_samples=200, seed=0).estimate - lz.estimate) < 0.05
    True
    """

    param_names = ("weights", "visible_bias", "hidden_bias")
    state_names = ("base_rate_bias",)
    default_guide = "model"
    supports_mcmc = False
    log_prob_kind = "estimate"
    log_prob_estimator = "annealed importance sampling of log Z (Salakhutdinov & Murray 2008)"
    applications = ("sample", "log_prob", "score", "impute", "reconstruct", "transform")
    jit_compile = False
    objective_options = ("num_gibbs_steps", "persistent", "num_chains", "momentum",
                         "initial_momentum", "momentum_epochs", "weight_decay", "ais_every",
                         "ais_samples", "ais_betas")

    def __init__(self, num_hidden: int, *, visible: Visible = "bernoulli") -> None:
        super().__init__()
        self.num_hidden = check_positive_int("num_hidden", num_hidden)
        self.visible: Visible = check_choice("visible", visible,  # type: ignore[assignment]
                                             ("bernoulli", "gaussian"))
        self._log_z_cache: dict[tuple, LogPartition] = {}

    def get_config(self) -> dict[str, Any]:
        return {"num_hidden": self.num_hidden, "visible": self.visible}

    @property
    def num_visible(self) -> int | None:
        """Visible units D (None before the parameters are set)."""
        w = getattr(self, "weights", None)
        return None if w is None else int(w.shape[0])

    # ------------------------------------------------------------------ parameters
    def _check_params(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for k, v in params.items():
            t = torch.as_tensor(v)
            if not t.is_floating_point():
                t = t.double()
            t = t.detach().clone()
            if not bool(torch.isfinite(t).all()):
                raise bad_value(k, "finite values", "non-finite entries")
            out[k] = t
        w = out.get("weights", getattr(self, "weights", None))
        b = out.get("visible_bias", getattr(self, "visible_bias", None))
        c = out.get("hidden_bias", getattr(self, "hidden_bias", None))
        if "weights" in out and (w.dim() != 2 or w.shape[1] != self.num_hidden):
            raise bad_value("weights", f"shape (num_visible, {self.num_hidden}) (num_hidden="
                            f"{self.num_hidden})", f"shape {tuple(w.shape)}",
                            "Build the RBM with the weights' number of columns as num_hidden.")
        num_visible = None if w is None else w.shape[0]
        if b is not None and (b.dim() != 1 or (num_visible is not None
                                                and b.shape[0] != num_visible)):
            raise bad_value("visible_bias", f"shape ({num_visible},) (one per visible unit)",
                            f"shape {tuple(b.shape)}")
        if c is not None and (c.dim() != 1 or c.shape[0] != self.num_hidden):
            raise bad_value("hidden_bias", f"shape ({self.num_hidden},) (one per hidden "
                            "unit)", f"shape {tuple(c.shape)}")
        return out

    def set_params(self, **params: Any) -> None:
        """Set ``weights``, ``visible_bias``, ``hidden_bias`` (validated, copied); the RBM is
        fitted once all three are set. ``base_rate_bias`` is cleared unless the weights keep
        their shape (AIS then starts from the visible biases, or from data passed to
        :meth:`log_partition`)."""
        old = self.num_visible
        super().set_params(**params)
        if self.num_visible != old:
            self.base_rate_bias = None

    def _set_fitted_params(self, weights: torch.Tensor, visible_bias: torch.Tensor,
                           hidden_bias: torch.Tensor, base: torch.Tensor | None) -> None:
        self.weights, self.visible_bias, self.hidden_bias = weights, visible_bias, hidden_bias
        self.base_rate_bias = base
        self._on_params_changed()

    def _on_params_changed(self) -> None:
        self._log_z_cache = {}

    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weights, self.visible_bias, self.hidden_bias

    def _base_bias(self, data: torch.Tensor | None = None) -> torch.Tensor:
        if data is not None:
            return base_rate_bias(data, self.visible)
        base = getattr(self, "base_rate_bias", None)
        return self.visible_bias if base is None else base

    # ------------------------------------------------------------------ data checks
    def _as_data(self, data: Any, *, arg: str = "data", allow_nan: bool = False,
                 check_width: bool = True) -> torch.Tensor:
        """Validated data (N, D) in the model's dtype and device: 2-D, finite (NaN only with
        ``allow_nan``), the fitted width, and exactly 0/1 for Bernoulli visibles."""
        fitted = self.is_fitted
        binary_only = self.visible == "bernoulli" and not allow_nan
        t = check_data(data, arg=arg, allow_nan=allow_nan,
                       num_features=self.num_visible if check_width and fitted else None,
                       dtype=self.dtype if fitted else None,
                       device=self.device if fitted else None,
                       check_finite=not binary_only)  # 0/1 values are finite
        if binary_only and _is_binary(t):
            return t
        if self.visible == "bernoulli":
            if binary_only:  # NaN and infinities get their own message first
                check_data(t, arg=arg)
            seen = t[~torch.isnan(t)] if allow_nan else t
            bad = (seen != 0) & (seen != 1)
            if bool(bad.any()):
                raise bad_value(arg, "binary values (0 or 1) for Bernoulli visible units",
                                f"{int(bad.sum())} other values (e.g. {float(seen[bad][0]):g})",
                                "Binarize the data (e.g. (x > 0.5).float(), or "
                                "load_mnist(binarize='fixed')), or use visible='gaussian' "
                                "on standardised data.")
        return t

    def prepare(self, data: Any) -> torch.Tensor:
        """Validate training data (N, D): finite, 0/1 for Bernoulli visibles (any width: a
        fit starts the parameters afresh)."""
        t = self._as_data(data, check_width=False)
        if not t.is_floating_point():
            t = t.double()
        return t

    # ------------------------------------------------------------------------ Pyro
    def model(self, data: torch.Tensor | None = None, *,
              subsample_size: int | None = None) -> torch.Tensor | None:
        """The observed site ``"obs"`` scores each row of ``data`` (N, D) by -F(v), the
        unnormalised log-density (hidden units summed out)."""
        self.check_fitted("score data in its Pyro model")
        if data is None:
            raise bad_value("data", "the data to score (an RBM's Pyro model has no "
                            "generative program; use rbm.sample for new data)", "None")
        w, b, c = self._params()
        with pyro.plate("data", data.shape[0], subsample_size=subsample_size) as idx:
            return pyro.sample("obs", FreeEnergy(w, b, c, self.visible), obs=data[idx])

    def guide(self, data: torch.Tensor | None = None, *,
              subsample_size: int | None = None) -> None:
        """No latent sites (the hidden units are summed out): an empty guide."""
        return None

    def data_warnings(self, data: Any) -> list[tuple[str, str]]:
        """Findings about the training data's scale for Gaussian visibles (``ppgen.fit``
        turns them into warnings and diagnostics): see
        :func:`ppgen.models._data_scale.unit_scale_warnings`."""
        if self.visible != "gaussian" or not isinstance(data, torch.Tensor):
            return []
        return unit_scale_warnings(data, f"{type(self).__name__}(visible='gaussian')")

    def default_objective(self, **options: Any) -> ContrastiveDivergence:
        """The objective of ``ppgen.fit(rbm, x, "svi", ...)``: CD-1 by default
        (:class:`ContrastiveDivergence`; its options are fit's options of the same names)."""
        unknown = sorted(set(options) - set(_OBJECTIVE_OPTIONS))
        if unknown:
            raise bad_type("options", "options of contrastive divergence among " +
                           ", ".join(_OBJECTIVE_OPTIONS), ", ".join(unknown),
                           "(clip_norm and num_particles do not apply to CD.)")
        return ContrastiveDivergence(**options)

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise not_supported(self, "MCMC or automatic SVI guides (it has no latent sites)",
                            "use ppgen.fit(rbm, data, 'svi'), which trains it by contrastive "
                            "divergence")

    def finish_fit(self) -> None:
        self._on_params_changed()

    # -------------------------------------------------------------- log partition
    def log_partition(self, method: Method = "ais", *, num_samples: int = 100,
                      num_betas: int = 1000, schedule: Schedule = "linear",
                      data: Any = None, seed: int | None = 0) -> LogPartition:
        """log Z, the log normaliser of exp(-F(v)), with its standard error.

        Parameters
        ----------
        method : {"ais", "exact", "raise"}
            ``"exact"``: enumerate the smaller layer (the hidden one for Gaussian visibles;
            at most 25 units). ``"ais"``: annealed importance sampling from the base-rate
            model (a stochastic lower bound on log Z). ``"raise"``: mean over ``data`` of
            -F(v) - log p_RAISE(v) (needs ``data``; on the conservative, high side).
        num_samples : int
            AIS chains (``"raise"``: reverse chains per datum).
        num_betas : int
            Intermediate distributions K.
        schedule : {"linear", "geometric", "sigmoid"}
            Spacing of the inverse temperatures (:func:`ppgen.models.energy.ais.betas`).
        data : Tensor of shape (N, D), optional
            ``"ais"``: the base-rate model's visible marginals come from it (default: the
            training data's, kept in ``base_rate_bias``). ``"raise"``: the data to score.
        seed : int, optional
            Seed of the chains (a private generator; the global RNG is not touched).

        Returns
        -------
        LogPartition
        """
        self.check_fitted("compute its partition function")
        method = check_choice("method", method, ("ais", "exact", "raise"))  # type: ignore
        schedule = check_choice("schedule", schedule,  # type: ignore[assignment]
                                ("linear", "geometric", "sigmoid"))
        num_samples = check_positive_int("num_samples", num_samples)
        num_betas = check_positive_int("num_betas", num_betas)
        w, b, c = self._params()
        if method == "exact":
            units = self.num_hidden if self.visible == "gaussian" else min(w.shape)
            if units > MAX_EXACT_UNITS:
                raise bad_value("method", f"'ais' or 'raise' for a layer of more than "
                                f"{MAX_EXACT_UNITS} units ('exact' enumerates 2^units "
                                "states)", f"'exact' with {units} units in the smaller layer")
            return LogPartition(float(exact_log_partition(w, b, c, self.visible)), 0.0,
                                "exact")
        x = None if data is None else self._as_data(data)
        if method == "raise" and x is None:
            raise bad_value("data", "data to run the reverse chains from (method='raise' "
                            "estimates log Z through log p of held-out data)", "None")
        seed = resolve_seed(seed)
        g = torch.Generator(device=w.device).manual_seed(seed)
        path = betas(num_betas, schedule, device=w.device)
        rows = len(x) if method == "raise" and x is not None else 1
        with work_threads(num_samples * w.shape[0] * rows, device=w.device):
            return self._anneal(method, w, b, c, x, num_samples, num_betas, path, g)

    def _anneal(self, method, w, b, c, x, num_samples, num_betas, path, g) -> LogPartition:
        if method == "ais":
            est, se, _ = ais_log_partition(w, b, c, self._base_bias(x), self.visible,
                                           num_samples=num_samples, beta_path=path,
                                           generator=g)
            return LogPartition(est, se, "ais", num_samples, num_betas)
        assert x is not None
        lp, _ = raise_log_prob(x, w, b, c, self._base_bias(), self.visible,
                               num_samples=num_samples, beta_path=path, generator=g)
        per = -free_energy(x.double(), w.double(), b.double(), c.double(), self.visible) - lp
        se = float(per.std() / math.sqrt(len(per))) if len(per) > 1 else 0.0
        return LogPartition(float(per.mean()), se, "raise", num_samples, num_betas)

    def _cached_log_z(self, method: str, num_samples: int, num_betas: int,
                      schedule: str, seed: int | None) -> LogPartition:
        w, b, c = self._params()
        key = (method, num_samples, num_betas, schedule, seed, id(w), w._version,
               b._version, c._version, w.dtype, w.device)
        if seed is None or key not in self._log_z_cache:
            value = self.log_partition(method, num_samples=num_samples,  # type: ignore
                                       num_betas=num_betas, schedule=schedule, seed=seed)
            if seed is None:
                return value
            self._log_z_cache = {key: value}
        return self._log_z_cache[key]

    # ------------------------------------------------------------------ applications
    def free_energy(self, data: Any) -> torch.Tensor:
        """F(v) per row (N,): -log p(v) up to the constant log Z (ranks data as ``score``)."""
        self.check_fitted("compute free energies")
        x = self._as_data(data)
        with torch.no_grad():
            return free_energy(x, *self._params(), self.visible)

    def log_prob(self, data: Any, *, method: Method = "ais", num_samples: int = 100,
                 num_betas: int = 1000, schedule: Schedule = "linear",
                 seed: int | None = 0, return_stderr: bool = False):
        """Log-likelihood log p(v) = -F(v) - log Z per row, in nats.

        Parameters
        ----------
        data : Tensor of shape (N, D)
        method : {"ais", "exact", "raise"}
            How log Z is found (:meth:`log_partition`); ``"ais"`` and ``"exact"`` estimates
            are cached per parameter state and settings. ``"raise"`` estimates each log p(v)
            by its own reverse chains (``num_samples`` per datum): the conservative side of
            the AIS bracket for models trained towards maximum likelihood.
        num_samples, num_betas, schedule, seed
            Estimator settings (:meth:`log_partition`).
        return_stderr : bool
            Also return the standard error per row (AIS: that of log Z, shared by all rows).

        Returns
        -------
        log_prob : Tensor of shape (N,)
        stderr : Tensor of shape (N,)
            Only with ``return_stderr``.
        """
        self.check_fitted("compute log_prob")
        method = check_choice("method", method, ("ais", "exact", "raise"))  # type: ignore
        x = self._as_data(data)
        neg_f = -self.free_energy(x)
        if method == "raise":
            seed = resolve_seed(seed)
            g = torch.Generator(device=x.device).manual_seed(seed)
            num_samples = check_positive_int("num_samples", num_samples)
            path = betas(check_positive_int("num_betas", num_betas),
                         check_choice("schedule", schedule,  # type: ignore[arg-type]
                                      ("linear", "geometric", "sigmoid")), device=x.device)
            with work_threads(num_samples * x.numel(), device=x.device):
                lp, se = raise_log_prob(x, *self._params(), self._base_bias(), self.visible,
                                        num_samples=num_samples, beta_path=path, generator=g)
            lp, se = lp.to(x.dtype), se.to(x.dtype)
        else:
            lz = self._cached_log_z(method, num_samples, num_betas, schedule, seed)
            lp = neg_f - lz.estimate
            se = torch.full_like(lp, lz.stderr)
        return (lp, se) if return_stderr else lp

    def score(self, data: Any, *, normalized: bool = True, **kwargs: Any) -> torch.Tensor:
        """Anomaly score per row (higher = more anomalous): -log p(v) in nats (options of
        :meth:`log_prob`), or with ``normalized=False`` the free energy F(v), which ranks the
        data the same without estimating log Z."""
        if not normalized:
            return self.free_energy(data)
        kwargs.pop("return_stderr", None)
        return -self.log_prob(data, **kwargs)

    def transform(self, data: Any) -> torch.Tensor:
        """Features: the hidden units' probabilities p(h = 1 | v), shape (N, H)."""
        self.check_fitted("transform data")
        x = self._as_data(data)
        with torch.no_grad():
            return hidden_probs(x, self.weights, self.hidden_bias)

    def reconstruct(self, data: Any, *, num_gibbs_steps: int = 1) -> torch.Tensor:
        """Denoised data: ``num_gibbs_steps`` mean-field up-down passes, v -> p(h | v) ->
        E[v | h] (probabilities for Bernoulli visibles), shape (N, D)."""
        self.check_fitted("reconstruct data")
        steps = check_positive_int("num_gibbs_steps", num_gibbs_steps)
        v = self._as_data(data)
        w, b, c = self._params()
        with torch.no_grad():
            for _ in range(steps):
                v = visible_mean(hidden_probs(v, w, c), w, b, self.visible)
        return v

    def _start(self, num: int, g: torch.Generator) -> torch.Tensor:
        a = self._base_bias().expand(num, -1)
        if self.visible == "bernoulli":
            return (torch.rand(a.shape, generator=g, dtype=a.dtype, device=a.device)
                    < torch.sigmoid(a)).to(a.dtype)
        return a + torch.randn(a.shape, generator=g, dtype=a.dtype, device=a.device)

    def sample(self, num_samples: int, *, seed: int | None = None, num_burnin: int = 1000,
               thinning: int = 1, num_chains: int | None = None,
               mean: bool = False) -> torch.Tensor:
        """Draw data by block Gibbs sampling.

        ``num_chains`` chains (default: one per draw) start from the base-rate model, run
        ``num_burnin`` sweeps, then each gives a draw every ``thinning`` sweeps until
        ``num_samples`` draws are taken (chain-major order: the first draws of all chains,
        then the second ones, ...).

        Parameters
        ----------
        num_samples : int
        seed : int, optional
            A private generator's seed (the global RNG is not touched).
        num_burnin, thinning : int
        num_chains : int, optional
        mean : bool
            Return E[v | h] of each draw's last half-step instead of v itself.

        Returns
        -------
        Tensor of shape (num_samples, D)
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        thinning = check_positive_int("thinning", thinning)
        chains = num_samples if num_chains is None else min(
            check_positive_int("num_chains", num_chains), num_samples)
        w, b, c = self._params()
        g = torch.Generator(device=w.device).manual_seed(resolve_seed(seed))
        out = []
        with torch.no_grad(), work_threads(chains * w.shape[0], device=w.device):
            v = self._start(chains, g)
            taken = 0
            sweep = 0
            while taken < num_samples:
                h = sample_hidden(v, w, c, g)
                v = sample_visible(h, w, b, self.visible, g)
                sweep += 1
                if sweep >= num_burnin + 1 and (sweep - num_burnin - 1) % thinning == 0:
                    out.append(visible_mean(h, w, b, self.visible) if mean else v)
                    taken += chains
        return torch.cat(out)[:num_samples]

    def impute(self, data: Any, *, method: Literal["gibbs", "mean_field"] = "gibbs",
               num_steps: int = 500, num_burnin: int = 100,
               seed: int | None = 0) -> torch.Tensor:
        """Complete missing entries (NaN) given the observed ones.

        ``method="gibbs"``: clamped block Gibbs sampling, the observed units held fixed, the
        missing ones drawn from p(v_missing | h) in turn with h ~ p(h | v); the result is
        the average of E[v_missing | h] over the ``num_steps`` sweeps after ``num_burnin``
        (a Rao-Blackwellised estimate of the conditional mean E[v_missing | v_observed]:
        probabilities for Bernoulli visibles). ``method="mean_field"``: the deterministic
        fixed point of mu_h = sigmoid(c + v W), v_missing = E[v | mu_h] after ``num_steps``
        iterations, the mean-field completion (probabilities; round them for binary values).

        Parameters
        ----------
        data : Tensor of shape (N, D)
            NaN marks a missing entry; observed entries are returned unchanged.
        method : {"gibbs", "mean_field"}
        num_steps, num_burnin : int
        seed : int, optional
            Seed of the chains (a private generator).

        Returns
        -------
        Tensor of shape (N, D)
        """
        self.check_fitted("impute")
        method = check_choice("method", method, ("gibbs", "mean_field"))  # type: ignore
        num_steps = check_positive_int("num_steps", num_steps)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        x = self._as_data(data, allow_nan=True)
        missing = torch.isnan(x)
        w, b, c = self._params()
        g = torch.Generator(device=w.device).manual_seed(resolve_seed(seed))
        with torch.no_grad(), work_threads(x.numel(), device=w.device):
            start = self._start(x.shape[0], g) if method == "gibbs" else \
                visible_mean(torch.zeros(x.shape[0], self.num_hidden, dtype=x.dtype,
                                         device=x.device), w, self._base_bias(), self.visible)
            v = torch.where(missing, start, x)
            if method == "mean_field":
                for _ in range(num_steps):
                    v = torch.where(missing, visible_mean(hidden_probs(v, w, c), w, b,
                                                          self.visible), x)
                return v
            total = torch.zeros_like(x)
            for t in range(num_burnin + num_steps):
                h = sample_hidden(v, w, c, g)
                if t >= num_burnin:
                    total += visible_mean(h, w, b, self.visible)
                v = torch.where(missing, sample_visible(h, w, b, self.visible, g), x)
        return torch.where(missing, total / num_steps, x)
