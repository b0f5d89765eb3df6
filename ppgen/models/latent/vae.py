"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) and its
conditional variant (Sohn et al. 2015), as Pyro model/guide pairs with an amortized guide.

The Pyro model, for data x_n flattened to D features::

    z_n ~ Normal(0, I_L)                   latent site "z" (event shape (L,))
    x_n ~ p(x | decoder(z_n))              observed site "obs" (event shape (D,))

and the guide q(z_n | x_n) = Normal(encoder(x_n)), diagonal. The conditional VAE feeds the
one-hot label y_n to both networks: ``encoder(x, y)``, ``decoder(z, y)``.

The networks are the model: their weights (``state_dict()``) are its fitted state, carried
by ``get_state``/``set_state``, snapshots, checkpoints and ``ppgen.save``. There are no public
parameters (``param_names`` is empty). ``is_fitted`` is a buffer, ``fitted``, set by every
training step of :class:`~ppgen.models.latent.VAEObjective`, by :meth:`VAE.mark_fitted` (after
a training loop of one's own, e.g. plain Pyro SVI), by ``set_params()`` and restored with the
state (``set_state``, ``ppgen.load``); applications on a VAE whose networks still hold their
random initial weights raise :class:`~ppgen.NotFittedError`, because their answers would
describe no trained model.

Data shape: the model works on flattened data, D = prod(data_shape). Data may come as
(N, *data_shape) or as (N, D); applications that return data (``sample``, ``reconstruct``,
``impute``) return (N, *data_shape), or (N, D) for (N, D) input.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..._importance import importance_log_prob
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
    one_hot_labels,
)
from .._data_scale import unit_scale_warnings
from ..base import GenerativeModel, register
from .impute import impute_chain
from .likelihoods import LIKELIHOODS, Likelihood, draw, log_lik, mean, obs_dist
from .networks import ACTIVATIONS, Activation, Decoder, Encoder
from .objectives import VAEObjective, elbo_per_datum

__all__ = ["VAE", "ConditionalVAE"]

_OBJECTIVE_OPTIONS = ("lr", "lr_decay", "clip_norm", "num_particles", "iwae", "dreg",
                      "kl_warmup", "total_steps", "betas")


def _shape(arg: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise bad_type(arg, "a positive int or a tuple of positive ints", repr(value))
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, tuple | list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad_type(arg, "a positive int or a tuple of positive ints",
                       f"{value!r} ({type(value).__name__})")
    if len(value) == 0 or any(v < 1 for v in value):
        raise bad_value(arg, "a non-empty tuple of positive ints", repr(tuple(value)))
    return tuple(int(v) for v in value)


def _hidden(value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple | list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise bad_value("hidden_dims", "a tuple of positive ints (widths of the hidden "
                        "layers; () for linear networks)", repr(value))
    return tuple(int(v) for v in value)


@register("vae")
class VAE(GenerativeModel):
    """Variational autoencoder with an amortized diagonal-Normal guide.

    Parameters
    ----------
    data_shape : int or tuple of int
        Shape of one datum (e.g. 784 or (28, 28)); the networks see D = prod(data_shape)
        features.
    latent_dim : int
        Dimension L of z.
    hidden_dims : tuple of int
        Widths of the encoder's hidden layers; the decoder uses them reversed. () gives
        linear networks (with the Gaussian likelihood: probabilistic PCA).
    likelihood : {"bernoulli", "gaussian", "continuous_bernoulli"}
        p(x | z). ``"bernoulli"``: logits from the decoder, for binary data (intensities in
        [0, 1] are accepted and give the usual cross-entropy, which is not a normalised
        density: use a binarized copy, ``ppgen.datasets.DynamicBinarized``, or
        ``"continuous_bernoulli"`` for a density on [0, 1]). ``"gaussian"``: the decoder
        returns the mean and a learned per-feature log standard deviation (``decoder.log_scale``,
        shape (D,), shared by all data).
    activation : {"relu", "tanh", "softplus", "elu", "gelu"}
        Nonlinearity of the default networks.
    encoder, decoder : nn.Module, optional
        Networks of one's own instead of the MLPs: ``encoder(x)`` with x of shape (..., D)
        returns ``(loc, scale)`` of shape (..., L), scale > 0; ``decoder(z)`` with z of shape
        (..., L) (leading particle axes included) returns the logits (..., D), or ``(loc,
        log_scale)`` broadcastable to (..., D) for the Gaussian likelihood. A model with
        custom networks cannot be written by ``ppgen.save`` (its configuration is not
        JSON); save ``vae.state_dict()`` with ``torch.save`` instead.

    Attributes
    ----------
    encoder, decoder : nn.Module
        The networks (submodules; their weights are the model's state).

    Notes
    -----
    Trained with ``ppgen.fit(vae, x, "svi", ...)`` through :meth:`default_objective` (a
    :class:`~ppgen.models.latent.VAEObjective`: ELBO, IWAE or DReG in plain torch), or with
    Pyro directly: ``pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam(...),
    Trace_ELBO())``, then ``vae.mark_fitted()``. EM and MCMC are not offered (the weights
    are network parameters, not latent sites). The default guide is the model's own
    amortized encoder (``guide="model"``); the weights are point estimates, so a VAE fit
    holds no posterior draws (compare VAEs by held-out ``log_prob``).

    ``log_prob`` is an importance-sampling estimate (the IWAE bound with k draws from the
    encoder; :func:`ppgen.evaluation.importance_log_prob`) with its standard error.

    Examples
    --------
    >>> import torch, ppgen
    >>> from ppgen.training import Batch
    >>> x = (torch.rand(100, 6) < 0.3).float()
    >>> vae = ppgen.VAE(6, latent_dim=2, hidden_dims=(16,))
    >>> obj = vae.default_objective(lr=1e-2)
    >>> state = obj.init(vae, Batch(x, None, 100), seed=0)
    >>> for _ in range(20):
    ...     metrics = obj.step(vae, state, Batch(x, None, 100))
    >>> vae.sample(3, seed=0).shape
    torch.Size([3, 6])
    >>> vae.log_prob(x[:2], num_samples=100).shape
    torch.Size([2])
    """

    param_names = ()
    default_guide = "model"
    supports_mcmc = False
    log_prob_kind = "estimate"
    log_prob_estimator = "importance sampling (IWAE bound, k samples)"
    applications = ("sample", "log_prob", "score", "impute", "reconstruct", "transform")
    observed_dims = ("obs_id", "feature")
    jit_compile = False
    #: ``fit(..., "svi")`` options for :class:`VAEObjective` beyond the shared ones.
    objective_options = ("iwae", "dreg", "kl_warmup", "betas")

    def __init__(self, data_shape: int | tuple[int, ...], *, latent_dim: int = 16,
                 hidden_dims: tuple[int, ...] = (256, 128),
                 likelihood: Likelihood = "bernoulli", activation: Activation = "relu",
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None) -> None:
        super().__init__()
        self.data_shape = _shape("data_shape", data_shape)
        self.num_features = math.prod(self.data_shape)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.hidden_dims = _hidden(hidden_dims)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            if net is not None and not isinstance(net, nn.Module):
                raise bad_type(name, "a torch.nn.Module or None", type(net).__name__)
        self._own = {"encoder": encoder is None, "decoder": decoder is None}
        cond = self._num_cond_features()
        self.encoder = encoder if encoder is not None else Encoder(
            self.num_features + cond, self.hidden_dims, self.latent_dim, self.activation)
        self.decoder = decoder if decoder is not None else Decoder(
            self.latent_dim + cond, tuple(reversed(self.hidden_dims)), self.num_features,
            self.activation, gaussian=self.likelihood == "gaussian")
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _num_cond_features(self) -> int:
        return 0

    # ---------------------------------------------------------------- configuration
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable); refused for custom networks."""
        custom = [k for k, own in self._own.items() if not own]
        if custom:
            raise not_supported(
                self, f"ppgen.save or get_config with a custom {' and '.join(custom)} (a "
                "module passed in cannot be rebuilt from a JSON configuration)",
                "save the weights with torch.save(model.state_dict(), path) and restore them "
                "into a model built with the same networks with model.load_state_dict("
                "torch.load(path)), or pickle the whole model with torch.save(model, path)")
        return {"data_shape": list(self.data_shape), "latent_dim": self.latent_dim,
                "hidden_dims": list(self.hidden_dims), "likelihood": self.likelihood,
                "activation": self.activation}

    def __repr__(self) -> str:
        nets = "" if all(self._own.values()) else ", custom networks"
        return (f"{type(self).__name__}(data_shape={self.data_shape}, latent_dim="
                f"{self.latent_dim}, hidden_dims={self.hidden_dims}, likelihood="
                f"{self.likelihood!r}{nets})")

    # --------------------------------------------------------------------- fitted
    @property
    def is_fitted(self) -> bool:
        """Whether the networks hold trained (or loaded, or explicitly set) weights."""
        fitted = self._buffers.get("fitted") if "_buffers" in self.__dict__ else None
        return bool(fitted) if fitted is not None else False

    def mark_fitted(self) -> None:
        """Declare the current weights trained (after a training loop of one's own)."""
        self.fitted.fill_(True)

    def set_params(self, **params: Any) -> None:
        """A VAE has no public parameters: ``set_params()`` (no arguments) declares the
        current network weights fitted, as :meth:`mark_fitted`."""
        super().set_params(**params)
        self.mark_fitted()

    def finish_fit(self) -> None:
        """After ``ppgen.fit``: networks in evaluation mode, the model marked fitted."""
        self.eval()
        self.mark_fitted()

    def check_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__}'s networks hold their random initial weights, so it "
                f"cannot {action}. Train it with ppgen.fit(model, data, 'svi') (or a loop of "
                "your own, then call model.mark_fitted()), or load a trained one with "
                "ppgen.load(path).")

    def reset_networks(self, seed: int | None = None) -> None:
        """Redraw the weights of the networks the model built itself (``reset_parameters``
        of each layer) from ``seed``; user-supplied networks are left alone. Marks the model
        not fitted."""
        with seeded(resolve_seed(seed)):
            for name, own in self._own.items():
                if own:
                    net = getattr(self, name)
                    for m in net.modules():
                        if hasattr(m, "reset_parameters") and m is not net:
                            m.reset_parameters()
                    if isinstance(net, Decoder) and net.log_scale is not None:
                        with torch.no_grad():
                            net.log_scale.zero_()
        self.fitted.fill_(False)

    # ------------------------------------------------------------------- data checks
    def _conditions(self, kwargs: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Extra network inputs from model keyword arguments (none for the VAE)."""
        return ()

    def _as_data(self, data: Any, *, arg: str = "data",
                 allow_nan: bool = False) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Validated data as (N, D) in the model's dtype and device, and the shape of one
        datum to return results in (``data_shape``, or (D,) for flat input)."""
        x, out_shape = datum_rows(data, self.data_shape, arg=arg, dtype=self.dtype,
                                  device=self.device)
        self._check_values(x, arg, allow_nan=allow_nan)
        return x, out_shape

    def _check_values(self, x: torch.Tensor, arg: str, *, allow_nan: bool = False) -> None:
        # Good data (the common case) are scanned in blocks of rows, so that a memory-mapped
        # file is checked without data-sized temporaries; bad data get the full look below.
        if self.likelihood == "gaussian":
            if all_rows(x, torch.isfinite):
                return
        elif all_rows(x, lambda rows: (rows >= 0) & (rows <= 1)):  # also finite
            return
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
        if self.likelihood != "gaussian":
            seen = x[~torch.isnan(x)] if allow_nan else x
            if seen.numel() and not bool(((seen >= 0) & (seen <= 1)).all()):
                raise bad_value(arg, f"values in [0, 1] for the {self.likelihood} likelihood",
                                f"values from {float(seen.min()):g} to {float(seen.max()):g}",
                                "Scale the data to [0, 1] (e.g. pixels / 255), or use "
                                "likelihood='gaussian'.")

    def prepare(self, data: Any) -> Any:
        """Validate training data: a tensor of shape (N, *data_shape) or (N, D), finite, in
        [0, 1] for the Bernoulli likelihoods; returned as (N, D) in the model's dtype and
        device. A data source with ``take(index, generator)`` and ``probs`` (e.g.
        :class:`ppgen.datasets.DynamicBinarized`) is returned unchanged after its ``probs``
        are checked the same way."""
        if hasattr(data, "take") and hasattr(data, "probs") and not isinstance(data,
                                                                                torch.Tensor):
            probs = data.probs
            if not isinstance(probs, torch.Tensor):
                raise bad_type("data.probs", "a Tensor", type(probs).__name__)
            if self.likelihood == "gaussian":
                raise bad_value("data", "a tensor for the Gaussian likelihood",
                                f"a binarizing data source ({type(data).__name__})",
                                "Use likelihood='bernoulli' for binarized data.")
            self._as_data(probs, arg="data.probs")
            return data
        return self._as_data(data)[0]

    # ------------------------------------------------------------------------- Pyro
    def model(self, data: torch.Tensor | None = None, *, num_data: int | None = None,
              subsample_size: int | None = None) -> torch.Tensor:
        """The generative process (module docstring). ``data`` (N, D) or (N, *data_shape);
        with ``data`` None, ``num_data`` (default 1) new data are drawn."""
        return self._model(data, (), num_data, subsample_size)

    def guide(self, data: torch.Tensor | None = None, *, num_data: int | None = None,
              subsample_size: int | None = None) -> torch.Tensor:
        """q(z_n | x_n) = Normal(encoder(x_n)), the amortized guide; needs ``data``."""
        return self._guide(data, (), subsample_size)

    def _model(self, data, cond: tuple[torch.Tensor, ...], num_data, subsample_size):
        pyro.module("decoder", self.decoder)
        x, n = self._pyro_data(data, num_data)
        with pyro.plate("data", n, subsample_size=subsample_size) as idx:
            loc = torch.zeros(len(idx), self.latent_dim, dtype=self.dtype, device=self.device)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            params = self.decoder(z, *(c[idx] for c in cond))
            return pyro.sample("obs", obs_dist(self.likelihood, params),
                               obs=None if x is None else x[idx])

    def _guide(self, data, cond: tuple[torch.Tensor, ...], subsample_size):
        if data is None:
            raise bad_value("data", "the data (the guide maps each datum to q(z | x))",
                            "None")
        pyro.module("encoder", self.encoder)
        x, n = self._pyro_data(data, None)
        with pyro.plate("data", n, subsample_size=subsample_size) as idx:
            loc, scale = self.encoder(x[idx], *(c[idx] for c in cond))
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def _pyro_data(self, data, num_data) -> tuple[torch.Tensor | None, int]:
        if data is None:
            return None, 1 if num_data is None else check_positive_int("num_data", num_data)
        x = data.reshape(data.shape[0], -1)
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        return x, x.shape[0]

    def data_warnings(self, data: Any) -> list[tuple[str, str]]:
        """Findings about the training data's scale for the Gaussian likelihood (``ppgen.fit``
        turns them into warnings and diagnostics): see
        :func:`ppgen.models._data_scale.unit_scale_warnings`."""
        if self.likelihood != "gaussian" or not isinstance(data, torch.Tensor):
            return []
        return unit_scale_warnings(data, f"{type(self).__name__}(likelihood='gaussian')")

    def default_objective(self, **options: Any) -> VAEObjective:
        """The objective of ``ppgen.fit(vae, x, "svi", ...)``: a :class:`VAEObjective`.

        Parameters
        ----------
        lr : float, default 1e-3
        lr_decay : float, default 1.0
        clip_norm : float or None, default None
        num_particles : int, default 1
        iwae : bool, default False
        dreg : bool, default False
        kl_warmup : int, default 0
        total_steps : int or None
        betas : tuple of float, default (0.9, 0.999)
            See :class:`VAEObjective`. Other names are refused.
        """
        unknown = sorted(set(options) - set(_OBJECTIVE_OPTIONS))
        if unknown:
            raise bad_type("options", "options of the VAE objective among " +
                           ", ".join(_OBJECTIVE_OPTIONS), ", ".join(unknown))
        return VAEObjective(**options)

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Refused: start values are asked for only by MCMC and automatic SVI guides."""
        raise not_supported(self, "MCMC or automatic SVI guides (the weights are network "
                            "parameters, not latent sites)", "use ppgen.fit(model, data, "
                            "'svi') with the model's own amortized guide (guide='model', the "
                            "default)")

    # ------------------------------------------------------------------ applications
    def _prepare_call(self, data: Any, kwargs: dict[str, Any], *, allow_nan: bool = False):
        x, out_shape = self._as_data(data, allow_nan=allow_nan)
        return x, out_shape, self._conditions(self._check_kwargs(kwargs, x.shape[0]), x)

    def _check_kwargs(self, kwargs: dict[str, Any], n: int) -> dict[str, Any]:
        if kwargs:
            raise bad_type("kwargs", f"no keyword arguments for {type(self).__name__}",
                           ", ".join(sorted(kwargs)))
        return {}

    def encode(self, data: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z | x) per datum, each of shape (N, L)."""
        self.check_fitted("encode data")
        x, _, cond = self._prepare_call(data, kwargs)
        with torch.no_grad():
            loc, scale = self.encoder(x, *cond)
        return loc, scale

    def transform(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Latent representation: the encoder's mean E_q[z | x] per datum.

        Parameters
        ----------
        data : Tensor of shape (N, *data_shape) or (N, D)

        Returns
        -------
        Tensor of shape (N, L)
        """
        return self.encode(data, **kwargs)[0]

    def reconstruct(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Denoised data: the decoder's mean E[x | z] at the encoder's mean z = E_q[z | x].

        Parameters
        ----------
        data : Tensor of shape (N, *data_shape) or (N, D)

        Returns
        -------
        Tensor of the input's shape
        """
        self.check_fitted("reconstruct data")
        x, out_shape, cond = self._prepare_call(data, kwargs)
        with torch.no_grad():
            loc, _ = self.encoder(x, *cond)
            out = mean(self.likelihood, self.decoder(loc, *cond))
        return out.reshape(x.shape[0], *out_shape)

    def _sample(self, num_samples: int, cond: tuple[torch.Tensor, ...], seed: int | None,
                mean_only: bool) -> torch.Tensor:
        g = torch.Generator(device=self.device)
        g.manual_seed(resolve_seed(seed))
        with torch.no_grad():
            z = torch.randn(num_samples, self.latent_dim, generator=g, dtype=self.dtype,
                            device=self.device)
            params = self.decoder(z, *cond)
            x = mean(self.likelihood, params) if mean_only else draw(self.likelihood, params, g)
        return x.reshape(num_samples, *self.data_shape)

    def sample(self, num_samples: int, *, seed: int | None = None,
               mean: bool = False) -> torch.Tensor:
        """Draw new data: z ~ N(0, I), x ~ p(x | z).

        Parameters
        ----------
        num_samples : int
        seed : int, optional
            The same seed gives the same draws on the same device (fresh entropy when None;
            the global random state is not touched).
        mean : bool
            Return the decoder's mean E[x | z] instead of a draw (smoother images).

        Returns
        -------
        Tensor of shape (num_samples, *data_shape)
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        return self._sample(num_samples, (), seed, mean)

    def _proposal_and_joint(self):
        # The conditions (one-hot labels) travel as extra columns after the D features, so
        # the estimator's row chunks carry them along.
        d = self.num_features

        def proposal(xc: torch.Tensor):
            loc, scale = self.encoder(xc[:, :d], *self._split(xc))
            return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)

        def log_joint(xc: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            prior = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)
            return log_lik(self.likelihood, self.decoder(z, *self._split(xc)), xc[:, :d]) \
                + prior

        return proposal, log_joint

    def _split(self, xc: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return () if xc.shape[1] == self.num_features else (xc[:, self.num_features:],)

    def log_prob(self, data: Any, *, num_samples: int = 5000, seed: int | None = 0,
                 return_stderr: bool = False, batch_size: int | None = None,
                 **kwargs: Any):
        """Estimated log-likelihood log p(x) per datum in nats.

        The importance-weighted (IWAE) bound with k = ``num_samples`` draws from the encoder,
        log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x): a lower bound in expectation that
        tightens as k grows and is consistent (:func:`ppgen.evaluation.importance_log_prob`).

        Parameters
        ----------
        data : Tensor of shape (N, *data_shape) or (N, D)
        num_samples : int
            Importance samples k per datum.
        seed : int, optional
            Seed of the draws (0 by default, so scores are reproducible); the global random
            state is restored afterwards.
        return_stderr : bool
            Also return the delta-method standard error of each estimate.
        batch_size : int, optional
            Draws evaluated at once (memory); chosen automatically by default.

        Returns
        -------
        log_prob : Tensor of shape (N,)
        stderr : Tensor of shape (N,)
            Only with ``return_stderr``.
        """

        self.check_fitted("compute log_prob")
        x, _, cond = self._prepare_call(data, kwargs)
        xc = torch.cat([x, *cond], -1) if cond else x
        proposal, log_joint = self._proposal_and_joint()
        est, se = importance_log_prob(xc, proposal=proposal, log_joint=log_joint,
                                      num_samples=num_samples, batch_size=batch_size,
                                      seed=seed)
        return (est, se) if return_stderr else est

    def score(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Anomaly score per datum: -log_prob (nats; higher = more anomalous). Takes the
        options of :meth:`log_prob`."""
        kwargs.pop("return_stderr", None)
        return -self.log_prob(data, **kwargs)

    def elbo(self, data: Any, *, num_particles: int = 1, seed: int | None = 0,
             **kwargs: Any) -> torch.Tensor:
        """The evidence lower bound per datum in nats: E_q[log p(x | z)] - KL(q || p), the
        expectation from ``num_particles`` draws, the KL in closed form.

        Returns
        -------
        Tensor of shape (N,)
        """
        self.check_fitted("compute the ELBO")
        num_particles = check_positive_int("num_particles", num_particles)
        x, _, cond = self._prepare_call(data, kwargs)
        with seeded(resolve_seed(seed)):
            return elbo_per_datum(self, x, cond, num_particles=num_particles)

    def impute(self, data: Any, *, method: Literal["mwg", "pseudo_gibbs"] = "mwg",
               num_steps: int = 500, num_burnin: int = 100, num_proposals: int = 1,
               burnin_method: Literal["mwg", "pseudo_gibbs"] = "pseudo_gibbs",
               seed: int | None = 0, return_acceptance: bool = False, **kwargs: Any):
        """Complete missing entries (NaN) with their posterior mean given the observed ones.

        Markov chains over (z, x_missing), one per datum, all run at once; the result is the
        average of E[x_missing | z_t] over the ``num_steps`` iterations after
        ``num_burnin`` (Rao-Blackwellised). ``method="mwg"`` (default): Metropolis-within-
        Gibbs (Mattei & Frellsen 2018), whose chain targets the model's exact conditional
        p(x_missing | x_observed), after a pseudo-Gibbs burn-in; ``"pseudo_gibbs"``: the
        pseudo-Gibbs sampler of Rezende et al. (2014), exact only if the encoder is the exact
        posterior (:mod:`ppgen.models.latent.impute`).

        Parameters
        ----------
        data : Tensor of shape (N, *data_shape) or (N, D)
            NaN marks a missing entry; observed entries are returned unchanged.
        method : {"mwg", "pseudo_gibbs"}
        num_steps, num_burnin : int
        num_proposals : int
            Proposals per z-update of ``"mwg"``: 1 (default) is Mattei & Frellsen's
            independence Metropolis-Hastings step; M > 1 draws M proposals from the encoder
            and picks among them and the current z by importance weight (i-SIR), which moves
            far more often at M times the decoder passes.
        burnin_method : {"pseudo_gibbs", "mwg"}
            Kernel of the ``num_burnin`` discarded iterations. Pseudo-Gibbs (default) moves
            at every step and reaches the bulk of the posterior fast, where the
            independence sampler, which rarely accepts, would stay near its start; the kept
            iterations use ``method``, so what they target is unchanged. On half-hidden
            MNIST digits it lowered Metropolis-within-Gibbs' squared error by 4% (right
            half hidden) and 15% (random half), and changed it by under 1% (bottom half)
            (``benchmarks/RESULTS.md``).
        seed : int, optional
            Seed of the chains (a private generator; 0 by default).
        return_acceptance : bool
            Also return each chain's acceptance rate (N,): the fraction of its ``method``
            z-updates that moved (all ones for pseudo-Gibbs).

        Returns
        -------
        Tensor of the input's shape
        """
        self.check_fitted("impute")
        method = check_choice("method", method, ("mwg", "pseudo_gibbs"))
        num_steps = check_positive_int("num_steps", num_steps)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        num_proposals = check_positive_int("num_proposals", num_proposals)
        if num_proposals > 1 and method != "mwg":
            raise bad_value("num_proposals", "1 for method='pseudo_gibbs' (it accepts every "
                            "proposal)", num_proposals,
                            "Use method='mwg' for several proposals per step.")
        burnin_method = check_choice("burnin_method", burnin_method, ("pseudo_gibbs", "mwg"))
        x, out_shape, cond = self._prepare_call(data, kwargs, allow_nan=True)
        missing = torch.isnan(x)
        filled = torch.where(missing, torch.zeros_like(x), x)
        g = torch.Generator(device=self.device)
        g.manual_seed(resolve_seed(seed))
        with torch.no_grad():
            out, acceptance = impute_chain(
                filled, missing, encode=lambda v: self.encoder(v, *cond),
                decode=lambda z: self.decoder(z, *cond), likelihood=self.likelihood,
                method=method, num_steps=num_steps, num_burnin=num_burnin, generator=g,
                num_proposals=num_proposals, burnin_method=burnin_method)
        # Observed entries exactly as given (the chains never change them).
        out = torch.where(missing, out, x).reshape(x.shape[0], *out_shape)
        return (out, acceptance) if return_acceptance else out


@register("cvae")
class ConditionalVAE(VAE):
    """Conditional VAE: the one-hot label conditions both networks, p(x | z, y) q(z | x, y).

    Parameters
    ----------
    data_shape : int or tuple of int
    num_classes : int
        Number of label values C (labels are 0..C-1, or one-hot rows).
    latent_dim, hidden_dims, likelihood, activation
        As for :class:`VAE`.
    encoder, decoder : nn.Module, optional
        ``encoder(x, y)`` -> (loc, scale) and ``decoder(z, y)`` -> likelihood parameters, with
        one-hot labels y of shape (..., C) (broadcast against z's particle axes).

    Notes
    -----
    The labels are a model keyword argument: ``model(data, labels=...)``, ``fit(cvae, x,
    "svi", model_kwargs={"labels": y})``, ``cvae.log_prob(x, labels=y)`` (log p(x | y)),
    ``cvae.sample(n, labels=y)``. ``prepare_inputs`` turns them into one-hot rows. As for
    :class:`VAE`, the default guide is the model's own amortized encoder q(z | x, y)
    (``guide="model"``), and a fit holds no posterior draws.

    Examples
    --------
    >>> import torch, ppgen
    >>> from ppgen.training import Batch
    >>> x, y = (torch.rand(60, 5) < 0.5).float(), torch.arange(60) % 3
    >>> cvae = ppgen.ConditionalVAE(5, 3, latent_dim=2, hidden_dims=(8,))
    >>> _, kw = cvae.prepare_inputs(x, {"labels": y})
    >>> obj = cvae.default_objective(lr=1e-2)
    >>> state = obj.init(cvae, Batch(x, None, 60, kwargs=kw), seed=0)
    >>> metrics = obj.step(cvae, state, Batch(x, None, 60, kwargs=kw))
    >>> cvae.sample(4, labels=torch.tensor([0, 1, 2, 0]), seed=0).shape
    torch.Size([4, 5])
    """

    data_kwargs = ("labels",)

    def __init__(self, data_shape: int | tuple[int, ...], num_classes: int, *,
                 latent_dim: int = 16, hidden_dims: tuple[int, ...] = (256, 128),
                 likelihood: Likelihood = "bernoulli", activation: Activation = "relu",
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None) -> None:
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        super().__init__(data_shape, latent_dim=latent_dim, hidden_dims=hidden_dims,
                         likelihood=likelihood, activation=activation, encoder=encoder,
                         decoder=decoder)

    def _num_cond_features(self) -> int:
        return self.num_classes

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        return {"data_shape": config.pop("data_shape"), "num_classes": self.num_classes,
                **config}

    def __repr__(self) -> str:
        return super().__repr__().replace("(data_shape", "(num_classes="
                                          f"{self.num_classes}, data_shape", 1)

    # ------------------------------------------------------------------------ labels
    def _onehot(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if labels.dim() == 1:
            return F.one_hot(labels.long(), self.num_classes).to(dtype)
        return labels.to(dtype)

    def check_labels(self, labels: Any, num_data: int, *, arg: str = "labels") -> torch.Tensor:
        """Validate labels (class indices (N,) in 0..C-1, or one-hot rows (N, C)); returns
        one-hot rows (N, C) in the model's dtype and device."""
        return one_hot_labels(labels, self.num_classes, num_data, arg=arg, dtype=self.dtype,
                              device=self.device)

    def prepare_inputs(self, data: Any, model_kwargs: dict[str, Any]):
        """Validate the data (:meth:`VAE.prepare`) and ``labels``, returned one-hot (N, C)."""
        x = self.prepare(data)
        kwargs = dict(model_kwargs)
        kwargs["labels"] = self.check_labels(kwargs.get("labels"), len(x))
        return x, kwargs

    def _check_kwargs(self, kwargs: dict[str, Any], n: int) -> dict[str, Any]:
        kwargs = dict(kwargs)
        labels = kwargs.pop("labels", None)
        super()._check_kwargs(kwargs, n)
        return {"labels": self.check_labels(labels, n)}

    def _conditions(self, kwargs: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        labels = kwargs.get("labels")
        if labels is None:
            raise bad_value("labels", "the labels of the minibatch (model keyword argument "
                            "'labels')", "none", "Pass model_kwargs={'labels': y} to fit, or "
                            "a Batch with kwargs={'labels': y}.")
        return (self._onehot(labels, x.dtype),)

    # ------------------------------------------------------------------------- Pyro
    def model(self, data: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
              num_data: int | None = None, subsample_size: int | None = None) -> torch.Tensor:
        """The generative process given ``labels`` (class indices (N,) or one-hot (N, C));
        with ``data`` None one datum is drawn per label."""
        onehot = self._pyro_labels(labels)
        if data is None and num_data is None:
            num_data = onehot.shape[0]
        return self._model(data, (onehot,), num_data, subsample_size)

    def guide(self, data: torch.Tensor | None = None, *, labels: torch.Tensor | None = None,
              num_data: int | None = None, subsample_size: int | None = None) -> torch.Tensor:
        """q(z_n | x_n, y_n) = Normal(encoder(x_n, y_n))."""
        return self._guide(data, (self._pyro_labels(labels),), subsample_size)

    def _pyro_labels(self, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise bad_value("labels", "labels (class indices or one-hot rows)", "None",
                            "Pass labels=y (fit: model_kwargs={'labels': y}).")
        return self._onehot(torch.as_tensor(labels, device=self.device), self.dtype)

    # ------------------------------------------------------------------ applications
    def sample(self, num_samples: int, *, labels: Any = None, seed: int | None = None,
               mean: bool = False) -> torch.Tensor:
        """Draw new data given labels: z ~ N(0, I), x ~ p(x | z, y).

        Parameters
        ----------
        num_samples : int
        labels : int, or class indices (num_samples,), or one-hot rows (num_samples, C)
            One int gives that class to every draw.
        seed : int, optional
        mean : bool
            Return the decoder's mean instead of a draw.

        Returns
        -------
        Tensor of shape (num_samples, *data_shape)
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.full((num_samples,), labels)
        onehot = self.check_labels(labels, num_samples)
        return self._sample(num_samples, (onehot,), seed, mean)
