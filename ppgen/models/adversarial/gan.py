"""The generative adversarial network (Goodfellow et al. 2014) as a Pyro model.

The Pyro model, for data x_n flattened to D features::

    z_n ~ Normal(0, I_L)                    latent site "z" (event shape (L,))
    x_n = g(z_n)                            deterministic site "x" (the generated datum)
    obs_n ~ Normal(g(z_n), sigma^2 I_D)     observed site "obs", only when data are given

so ``pyro.infer.Predictive(gan.model, num_samples=S)()`` draws z and x. g is the moving
average of the generator's weights (``generator_ema``), the network training keeps for
sampling. The observed site is the Gaussian observation model under which a generator has a
density (Wu et al. 2017); sigma (``obs_scale``) is chosen on validation data by
:meth:`GAN.calibrate` and ``log_prob`` estimates log p_sigma(x) by annealed importance
sampling (:mod:`ppgen._ais`).

The networks are the model: their weights (``state_dict()``) are its state; ``fitted`` is a
buffer set by training (or :meth:`GAN.mark_fitted`), as for the VAE.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Literal

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..._ais import ais_log_prob, choose_observation_scale
from ..._random import resolve_seed, seeded
from ..._validation import (
    NotFittedError,
    all_rows,
    bad_type,
    bad_value,
    check_choice,
    check_positive_int,
    datum_rows,
    not_supported,
)
from .._data_scale import output_range_warnings, unit_scale_warnings
from ..base import GenerativeModel, register
from .networks import OUTPUTS, MLPDiscriminator, MLPGenerator, Output
from .objective import AdversarialObjective
from .search import latent_search

__all__ = ["GAN"]

_OBJECTIVE_OPTIONS = ("gan_loss", "lr", "lr_discriminator", "betas", "num_critic", "gp_weight",
                      "r1_weight", "ema_decay", "lr_decay", "clip_norm", "total_steps",
                      "num_particles")


def _shape(arg: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple | list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise bad_value(arg, "a positive int or a non-empty tuple of positive ints",
                        repr(value))
    return tuple(int(v) for v in value)


def _hidden(arg: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple | list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise bad_value(arg, "a tuple of positive ints (widths of the hidden layers)",
                        repr(value))
    return tuple(int(v) for v in value)


@register("gan")
class GAN(GenerativeModel):
    """Generative adversarial network with multilayer-perceptron players.

    Parameters
    ----------
    data_shape : int or tuple of int
        Shape of one datum (e.g. 2 for points in the plane, (8, 8) for small images).
    latent_dim : int
        Dimension L of z.
    hidden_dims : tuple of int
        Widths of the generator's hidden layers (ReLU).
    discriminator_dims : tuple of int, optional
        Widths of the discriminator's hidden layers (LeakyReLU 0.2); default
        ``hidden_dims``.
    pack : int
        Samples the discriminator judges at once (PacGAN, Lin et al. 2018); 1 is the plain
        GAN. A minibatch of B rows gives the discriminator B / pack inputs. Default 4: at
        2,000 steps it keeps every mode of the ring in every seed where the plain GAN drops
        some. It does not make the samples sharp: on the grid of 25 Gaussians this MLP
        discriminator with pack 2 or 4 left the samples spread over the square (4,000 to
        12,000 steps) while pack 1 with ``batch_norm`` put them on the modes
        (``benchmarks/RESULTS.md``, whose 2-D settings are ``benchmarks/gan_mixtures.py``'s).
    spectral_norm : bool
        Spectral normalisation of the discriminator's layers (Miyato et al. 2018).
    batch_norm : bool
        Batch normalisation before each of the generator's hidden ReLUs, as in the
        generators of the VEEGAN and PacGAN 2-D experiments. It lets the generator's map
        steepen between modes without growing its weights first: on the grid of 25
        Gaussians with ``pack=1`` it took the plain GAN from 14 % to 49 % of samples within
        3 standard deviations of a mode at 3,000 steps (``benchmarks/RESULTS.md``).
        Sampling uses running statistics (eval mode); those of the moving average are
        re-estimated for its own weights after training.
    output : {"linear", "sigmoid", "tanh"}
        The generator's output: unbounded, in (0, 1) (pixel intensities), or in (-1, 1).

    Notes
    -----
    Trained by ``ppgen.fit(gan, x, "svi", ...)`` through :meth:`default_objective` (an
    :class:`~ppgen.models.adversarial.AdversarialObjective`; its options ``gan_loss``,
    ``num_critic``, ``r1_weight``, ``gp_weight``, ``ema_decay``, ``lr_discriminator``,
    ``betas`` are fit options). EM and MCMC are not offered.

    ``log_prob`` is an estimate (annealed importance sampling under the Gaussian observation
    model, with its standard error): a GAN has no exact likelihood. Without a call to
    :meth:`calibrate`, ``fit`` chooses sigma after the last step on the fit's
    ``validation_data`` when given, else on the last training minibatch (a quick search).

    Examples
    --------
    >>> import torch, ppgen
    >>> x = ppgen.datasets.make_ring(512, seed=0)[0]
    >>> gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(32,))
    >>> fit = ppgen.fit(gan, x, "svi", num_steps=20, batch_size=128, tol=0, progress=False)
    >>> gan.sample(5, seed=0).shape
    torch.Size([5, 2])
    """

    param_names = ()
    default_guide = "model"
    supports_mcmc = False
    log_prob_kind = "estimate"
    log_prob_estimator = ("annealed importance sampling with a Gaussian observation model "
                          "(Wu et al. 2017)")
    applications = ("sample", "log_prob", "score", "impute", "reconstruct")
    jit_compile = False
    objective_options = ("gan_loss", "lr_discriminator", "betas", "num_critic", "gp_weight",
                         "r1_weight", "ema_decay")

    def __init__(self, data_shape: int | tuple[int, ...], *, latent_dim: int = 8,
                 hidden_dims: tuple[int, ...] = (128, 128),
                 discriminator_dims: tuple[int, ...] | None = None, pack: int = 4,
                 spectral_norm: bool = False, output: Output = "linear",
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.data_shape = _shape("data_shape", data_shape)
        self.num_features = math.prod(self.data_shape)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.hidden_dims = _hidden("hidden_dims", hidden_dims)
        self.discriminator_dims = self.hidden_dims if discriminator_dims is None else \
            _hidden("discriminator_dims", discriminator_dims)
        self.pack = check_positive_int("pack", pack)
        if not isinstance(spectral_norm, bool):
            raise bad_type("spectral_norm", "True or False", repr(spectral_norm))
        self.spectral_norm = spectral_norm
        if not isinstance(batch_norm, bool):
            raise bad_type("batch_norm", "True or False", repr(batch_norm))
        self.batch_norm = batch_norm
        self.output = check_choice("output", output, OUTPUTS)
        self._build()
        self.generator_ema = copy.deepcopy(self.generator)
        for p in self.generator_ema.parameters():
            p.requires_grad_(False)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("obs_scale", torch.tensor(math.nan, dtype=torch.float64))

    def _num_cond_features(self) -> int:
        return 0

    def _build(self) -> None:
        cond = self._num_cond_features()
        self.generator = MLPGenerator(self.latent_dim + cond, self.hidden_dims,
                                      self.num_features, self.output,
                                      batch_norm=self.batch_norm)
        self.discriminator = MLPDiscriminator(self.pack * (self.num_features + cond),
                                              self.discriminator_dims,
                                              spectral_norm=self.spectral_norm)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable)."""
        return {"data_shape": list(self.data_shape), "latent_dim": self.latent_dim,
                "hidden_dims": list(self.hidden_dims),
                "discriminator_dims": list(self.discriminator_dims), "pack": self.pack,
                "spectral_norm": self.spectral_norm, "output": self.output,
                "batch_norm": self.batch_norm}

    # --------------------------------------------------------------------- fitted
    @property
    def is_fitted(self) -> bool:
        fitted = self._buffers.get("fitted") if "_buffers" in self.__dict__ else None
        return bool(fitted) if fitted is not None else False

    def mark_fitted(self) -> None:
        """Declare the current weights trained (after a training loop of one's own)."""
        self.fitted.fill_(True)

    def set_params(self, **params: Any) -> None:
        """No public parameters: ``set_params()`` declares the weights fitted."""
        super().set_params(**params)
        self.mark_fitted()

    def finish_fit(self) -> None:
        self.eval()
        self.mark_fitted()

    def check_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__}'s networks hold their random initial weights, so it "
                f"cannot {action}. Train it with ppgen.fit(model, data, 'svi'), or load a "
                "trained one with ppgen.load(path).")

    def reset_networks(self, seed: int | None = None) -> None:
        """Redraw both players' weights from ``seed`` (global random state restored), copy
        the generator into its moving average and forget the observation scale."""
        with seeded(resolve_seed(seed)):
            for net in (self.generator, self.discriminator):
                for m in net.modules():
                    if hasattr(m, "reset_parameters") and m is not net:
                        m.reset_parameters()
        self.generator_ema.load_state_dict(self.generator.state_dict())
        self.fitted.fill_(False)
        self.obs_scale.fill_(math.nan)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"generator": ..., "discriminator": ...}``, each trained by its own Adam (the
        moving average is not trained)."""
        return {"generator": list(self.generator.parameters()),
                "discriminator": list(self.discriminator.parameters())}

    def data_warnings(self, data: Any) -> list[tuple[str, str]]:
        """Findings about the training data against the generator's output (``ppgen.fit``
        turns them into warnings and diagnostics): data out of a bounded output's range
        (``"data_range"``), or, for ``output="linear"``, far from unit scale
        (``"data_scale"``, :func:`ppgen.models._data_scale.unit_scale_warnings`)."""
        if not isinstance(data, torch.Tensor):
            return []
        name = type(self).__name__
        if self.output == "linear":
            return unit_scale_warnings(data, name)
        low = 0.0 if self.output == "sigmoid" else -1.0
        return output_range_warnings(data, name, self.output, low, 1.0)

    def default_objective(self, **options: Any) -> AdversarialObjective:
        """The objective of ``ppgen.fit(gan, x, "svi", ...)``: an
        :class:`~ppgen.models.adversarial.AdversarialObjective` built from the fit's options
        (``gan_loss``, ``lr``, ``lr_discriminator``, ``betas``, ``num_critic``, ``gp_weight``,
        ``r1_weight``, ``ema_decay``, ``lr_decay``, ``clip_norm``), on top of
        :attr:`objective_defaults` (lr 1e-3 and R1 weight 0.1 for the MLP GAN, where the
        objective's own are 2e-4 and 0). Other names are refused."""
        unknown = sorted(set(options) - set(_OBJECTIVE_OPTIONS))
        if unknown:
            raise bad_type("options", "options of the adversarial objective among " +
                           ", ".join(_OBJECTIVE_OPTIONS), ", ".join(unknown))
        return AdversarialObjective(**{**self.objective_defaults, **options})

    #: The MLP GAN's own defaults for the objective (measured on the ring and grid:
    #: ``benchmarks/RESULTS.md``); fit options override them.
    objective_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "r1_weight": 0.1}

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise not_supported(self, "MCMC or automatic SVI guides (the weights are network "
                            "parameters, not latent sites)", "use ppgen.fit(model, data, "
                            "'svi'), which trains it with its adversarial objective")

    # ------------------------------------------------------------------- data checks
    def _conditions(self, kwargs: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()

    def _flat(self, data: torch.Tensor) -> torch.Tensor:
        x = data.reshape(data.shape[0], -1)
        return x if x.dtype == self.dtype else x.to(self.dtype)

    def _as_data(self, data: Any, *, arg: str = "data",
                 allow_nan: bool = False) -> tuple[torch.Tensor, tuple[int, ...]]:
        x, out_shape = datum_rows(data, self.data_shape, arg=arg, dtype=self.dtype,
                                  device=self.device)
        if all_rows(x, torch.isfinite):  # in row blocks: no data-sized temporaries
            return x, out_shape
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            nan = torch.isnan(x)
            if bool((~finite & ~nan).any()):
                raise bad_value(arg, "finite values", f"{int((~finite & ~nan).sum())} "
                                "infinite entries", "Replace them with NaN to mark them "
                                "missing and fill them with model.impute(data).")
            if not allow_nan:
                row = int(nan.nonzero()[0, 0])
                raise bad_value(arg, "no missing values", f"{int(nan.sum())} NaN entries "
                                f"(first in row {row})", "Fill them with model.impute(data) "
                                "(NaN marks a missing entry there), or drop those rows.")
        return x, out_shape

    def prepare(self, data: Any) -> torch.Tensor:
        """Validate training data: (N, *data_shape) or (N, D), finite; returned as (N, D),
        with at least ``pack`` rows."""
        x = self._as_data(data)[0]
        if x.shape[0] < self.pack:
            raise bad_value("data", f"at least pack={self.pack} rows", x.shape[0])
        return x

    def prepare_inputs(self, data: Any, model_kwargs: dict[str, Any]):
        if model_kwargs:
            raise bad_type("model_kwargs", f"no keyword arguments for {type(self).__name__}",
                           ", ".join(sorted(model_kwargs)))
        return self.prepare(data), model_kwargs

    def _check_kwargs(self, kwargs: dict[str, Any], n: int) -> tuple[torch.Tensor, ...]:
        if kwargs:
            raise bad_type("kwargs", f"no keyword arguments for {type(self).__name__}",
                           ", ".join(sorted(kwargs)))
        return ()

    # ------------------------------------------------------------------------- Pyro
    def model(self, data: torch.Tensor | None = None, *,
              num_data: int | None = None) -> torch.Tensor:
        """The generative process (module docstring): ``data`` (N, D) or (N, *data_shape)
        observed through N(g(z), obs_scale^2 I) (needs a calibrated ``obs_scale``); with
        ``data`` None, ``num_data`` (default 1) new data are generated."""
        return self._model(data, (), num_data)

    def _model(self, data, cond, num_data):
        pyro.module("generator_ema", self.generator_ema)
        if data is None:
            n = 1 if num_data is None else check_positive_int("num_data", num_data)
            x_obs = None
        else:
            x_obs = self._flat(data)
            n = x_obs.shape[0]
        with pyro.plate("data", n):
            loc = torch.zeros(n, self.latent_dim, dtype=self.dtype, device=self.device)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            self._intermediate_sites(z, cond)
            mean = self.generator_ema(z, *cond)
            pyro.deterministic("x", mean.reshape(*mean.shape[:-1], *self.data_shape),
                               event_dim=len(self.data_shape))
            if x_obs is not None:
                sigma = self._obs_scale()
                pyro.sample("obs", dist.Normal(mean, sigma).to_event(1), obs=x_obs)
        return mean

    def _intermediate_sites(self, z: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> None:
        """Deterministic sites a subclass records between ``z`` and ``x`` (StackGAN: the
        stage-I image); none here."""

    # ------------------------------------------------------------------ applications
    def _rng(self, seed: int | None) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(resolve_seed(seed))
        return g

    def _generate(self, z: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.generator_ema(z, *cond)

    def _sample(self, num_samples: int, cond: tuple[torch.Tensor, ...],
                seed: int | None) -> torch.Tensor:
        g = self._rng(seed)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z = torch.randn(num_samples, self.latent_dim, generator=g, dtype=self.dtype,
                                device=self.device)
                x = self._generate(z, cond)
        finally:
            self.train(was_training)
        return x.reshape(num_samples, *self.data_shape)

    def sample(self, num_samples: int, *, seed: int | None = None) -> torch.Tensor:
        """Generate data: z ~ N(0, I), x = g(z) with the moving-average generator.

        Parameters
        ----------
        num_samples : int
        seed : int, optional
            Same seed, same draws on the same device (fresh entropy when None; the global
            random state is not touched).

        Returns
        -------
        Tensor of shape (num_samples, *data_shape)
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        return self._sample(num_samples, (), seed)

    def _obs_scale(self) -> float:
        value = float(self.obs_scale)
        if not math.isfinite(value):
            raise NotFittedError(
                f"{type(self).__name__} has no observation scale yet (its log-likelihood is "
                "defined through x ~ N(g(z), sigma^2 I)); call model.calibrate("
                "validation_data) first (ppgen.fit does it after the last step).")
        return value

    def calibrate(self, validation_data: Any, *, scales: Any = None, num_steps: int = 100,
                  num_chains: int = 4, seed: int | None = 0, **kwargs: Any) -> float:
        """Choose the observation scale sigma of ``log_prob`` on validation data: the
        candidate with the highest mean AIS log-likelihood (Wu et al. 2017;
        :func:`ppgen.evaluation.choose_observation_scale`). Stores and returns it.

        Parameters
        ----------
        validation_data : Tensor of shape (N, *data_shape) or (N, D)
            Held-out data (not the test data whose likelihood is reported).
        scales : sequence of float, optional
            Candidates (default: 13 around the data's distance to generated samples).
        num_steps, num_chains, seed
            AIS settings of the search.
        """
        self.check_fitted("choose an observation scale")
        x, _ = self._as_data(validation_data, arg="validation_data")
        cond = self._check_kwargs(kwargs, x.shape[0])
        return self._choose_scale(x, cond, scales=scales, num_steps=num_steps,
                                  num_chains=num_chains, seed=seed, num_scales=13)

    def _quick_calibrate(self, x: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> None:
        """After the last training step: a cheap search (7 scales, 10 temperatures, 2 chains)
        on the last 64 rows of the fit's validation data, else of the last minibatch."""
        self._choose_scale(x[-64:], tuple(c[-64:] for c in cond), scales=None, num_steps=10,
                           num_chains=2, seed=0, num_scales=7)

    def _choose_scale(self, x, cond, **options: Any) -> float:
        expand = self._expander(cond)
        scale, _, _ = choose_observation_scale(
            x, lambda z: self._generate(z, expand(z)), latent_dim=self.latent_dim, **options)
        self.obs_scale.fill_(scale)
        return scale

    def _expander(self, cond: tuple[torch.Tensor, ...]):
        """Conditions of N rows cycled to the M rows of z (row i takes condition i mod N:
        the AIS chains are laid out chain-major, k blocks of the N data)."""
        def expand(z: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(c[torch.arange(z.shape[0], device=c.device) % c.shape[0]]
                         for c in cond)
        return expand

    def log_prob(self, data: Any, *, num_samples: int = 16, num_steps: int = 100,
                 num_leapfrog: int = 5, seed: int | None = 0, return_stderr: bool = False,
                 exact: bool = False, **kwargs: Any):
        """Estimated log p_sigma(x) per datum in nats: annealed importance sampling under
        the Gaussian observation model x ~ N(g(z), sigma^2 I) (module docstring; sigma from
        :meth:`calibrate`).

        Parameters
        ----------
        data : Tensor of shape (N, *data_shape) or (N, D)
        num_samples : int
            AIS chains per datum.
        num_steps : int
            Temperatures of the annealing schedule (more: less bias; the default is cheap,
            Wu et al. use thousands for images: compare estimates as it grows).
        num_leapfrog : int
            Leapfrog steps of the HMC transition at each temperature.
        seed : int, optional
            Seed of the chains (0 by default; the global random state is restored).
        return_stderr : bool
            Also return the standard error of each estimate over the chains.
        exact : bool
            Ask for the exact likelihood: refused (a GAN has none).

        Returns
        -------
        log_prob : Tensor of shape (N,)
        stderr : Tensor of shape (N,), only with ``return_stderr``
        """
        if exact:
            raise not_supported(self, "an exact log-likelihood (a generator has no density "
                                "of its own)", "log_prob(data) estimates it by annealed "
                                "importance sampling with a Gaussian observation model (Wu "
                                "et al. 2017), with its standard error (return_stderr=True)")
        self.check_fitted("compute log_prob")
        num_samples = check_positive_int("num_samples", num_samples)
        x, _ = self._as_data(data)
        cond = self._check_kwargs(kwargs, x.shape[0])
        sigma = self._obs_scale()
        expand = self._expander(cond)
        was_training = self.training
        self.eval()
        try:
            est, se = ais_log_prob(x, lambda z: self._generate(z, expand(z)),
                                   latent_dim=self.latent_dim, obs_scale=sigma,
                                   num_steps=num_steps, num_chains=num_samples,
                                   num_leapfrog=num_leapfrog, seed=seed)
        finally:
            self.train(was_training)
        return (est, se) if return_stderr else est

    def score(self, data: Any, *, method: Literal["nll", "anogan"] = "nll",
              feature_weight: float = 0.1, num_search_steps: int = 200,
              num_restarts: int = 4, **kwargs: Any) -> torch.Tensor:
        """Anomaly score per datum (higher = more anomalous).

        ``method="nll"`` (default): -log_prob (nats; takes the options of
        :meth:`log_prob`). ``method="anogan"`` (Schlegl et al. 2017): with z* the best latent
        reconstruction of x (:meth:`reconstruct`), (1 - lambda) ||x - g(z*)||_1 +
        lambda ||f(x) - f(g(z*))||_1, f the discriminator's last hidden layer (fed ``pack``
        copies of the datum) and lambda = ``feature_weight``.
        """
        method = check_choice("method", method, ("nll", "anogan"))
        if method == "nll":
            kwargs.pop("return_stderr", None)
            return -self.log_prob(data, **kwargs)
        self.check_fitted("score data")
        lam = float(feature_weight)
        if not 0 <= lam <= 1:
            raise bad_value("feature_weight", "a weight in [0, 1]", feature_weight)
        x, _ = self._as_data(data)
        cond = self._check_kwargs(kwargs, x.shape[0])
        rec = self._search(x, torch.ones_like(x, dtype=torch.bool), cond, num_search_steps,
                           num_restarts, 0)
        with torch.no_grad():
            k = self.pack
            pc = tuple(c.repeat(1, k) for c in cond)
            fx = self.discriminator.features(x.repeat(1, k), *pc)
            fr = self.discriminator.features(rec.repeat(1, k), *pc)
            return (1 - lam) * (x - rec).abs().sum(-1) + lam * (fx - fr).abs().sum(-1)

    def _search(self, x: torch.Tensor, observed: torch.Tensor,
                cond: tuple[torch.Tensor, ...], num_steps: int, num_restarts: int,
                seed: int | None) -> torch.Tensor:
        num_steps = check_positive_int("num_steps", num_steps)
        num_restarts = check_positive_int("num_restarts", num_restarts)
        sigma = float(self.obs_scale)
        if not math.isfinite(sigma):
            sigma = 0.1
        reps = tuple(c.repeat(num_restarts, 1) for c in cond)
        was_training = self.training
        self.eval()
        try:
            for p in self.generator_ema.parameters():
                p.requires_grad_(False)
            z, _ = latent_search(x.nan_to_num(0.0), observed,
                                 lambda zz: self._generate(zz, reps), latent_dim=self.latent_dim,
                                 obs_scale=sigma, num_steps=num_steps,
                                 num_restarts=num_restarts, lr=0.05,
                                 generator_rng=self._rng(seed))
            with torch.no_grad():
                return self._generate(z, cond)
        finally:
            self.train(was_training)

    def reconstruct(self, data: Any, *, num_steps: int = 300, num_restarts: int = 4,
                    seed: int | None = 0, **kwargs: Any) -> torch.Tensor:
        """The generated datum closest to each datum under the prior: g(z*) with z* the
        latent search of :mod:`ppgen.models.adversarial.search` on all entries.

        Returns
        -------
        Tensor of the input's shape
        """
        self.check_fitted("reconstruct data")
        x, out_shape = self._as_data(data)
        cond = self._check_kwargs(kwargs, x.shape[0])
        out = self._search(x, torch.ones_like(x, dtype=torch.bool), cond, num_steps,
                           num_restarts, seed)
        return out.reshape(x.shape[0], *out_shape)

    def impute(self, data: Any, *, num_steps: int = 300, num_restarts: int = 4,
               seed: int | None = 0, **kwargs: Any) -> torch.Tensor:
        """Fill missing entries (NaN) by latent search (Yeh et al. 2017): z* fits the observed
        entries under the prior (:mod:`ppgen.models.adversarial.search`), and the missing
        entries are taken from g(z*); observed entries are returned unchanged.

        Parameters
        ----------
        data : Tensor of shape (N, *data_shape) or (N, D)
        num_steps : int
            Adam steps of the search.
        num_restarts : int
            Prior draws the search starts from per datum (the best is kept).
        seed : int, optional

        Returns
        -------
        Tensor of the input's shape
        """
        self.check_fitted("impute")
        x, out_shape = self._as_data(data, allow_nan=True)
        cond = self._check_kwargs(kwargs, x.shape[0])
        missing = torch.isnan(x)
        fill = self._search(x, ~missing, cond, num_steps, num_restarts, seed)
        return torch.where(missing, fill, x).reshape(x.shape[0], *out_shape)

