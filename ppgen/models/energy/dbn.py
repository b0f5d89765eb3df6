"""The deep belief network (Hinton, Osindero & Teh 2006): a stack of RBMs trained greedily,
layer by layer, as the stages of one fit.

Layers h_0 = v (D units, binary), h_1, ..., h_L (``layer_sizes``); RBM l (l = 0..L-1) joins
h_l and h_{l+1} with ``weights_l`` (n_l, n_{l+1}), ``visible_bias_l`` (n_l) and
``hidden_bias_l`` (n_{l+1}). The generative model: the top RBM (l = L-1) gives h_{L-1} its
visible marginal p_top(h_{L-1}) = exp(-F_top(h_{L-1})) / Z_top, then a directed down pass
h_l ~ Bernoulli(sigmoid(visible_bias_l + weights_l h_{l+1})) for l = L-2..0.

The recognition (up) pass q(h_{l+1} | h_l) = Bernoulli(sigmoid(hidden_bias_l + h_l
weights_l)) gives the variational lower bound (Salakhutdinov & Murray 2008) with k = num_samples
draws of the up pass (importance-weighted, tighter as k grows, a lower bound for every k):

    log p(v) >= E log (1/k) sum_i w_i,
    log w = sum_{l=0}^{L-2} [log p(h_l | h_{l+1}) - log q(h_{l+1} | h_l)] + log p_top(h_{L-1})

with log Z_top from AIS (whose own estimate is low in expectation, so the reported bound is
itself an estimate, not a guaranteed bound).

Training (:class:`GreedyCD`): the run's steps are split evenly among the L layers; stage l
trains RBM l by CD-k on the mean-field up-pass probabilities of the layers below (frozen).
The stage follows from the step number, so checkpoints and resume work as for the RBM.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..._random import resolve_seed
from ..._threads import work_threads
from ..._validation import (
    bad_type,
    bad_value,
    check_choice,
    check_data,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    not_supported,
)
from ...training import Batch, TrainState
from ..base import GenerativeModel, register
from .ais import ais_log_partition, base_rate_bias, betas, log_mean_exp
from .objectives import cd_update
from .ops import free_energy, hidden_probs, sample_hidden, sample_visible, visible_mean

__all__ = ["DBN", "GreedyCD"]

_KINDS = ("weights", "visible_bias", "hidden_bias")
_OPTIONS = ("num_gibbs_steps", "lr", "lr_decay", "momentum", "initial_momentum",
            "momentum_epochs", "weight_decay", "ais_every", "ais_samples", "ais_betas",
            "total_steps")


def _layer_sizes(value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple | list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad_type("layer_sizes", "a non-empty tuple of positive ints (the hidden "
                       "layers' sizes, bottom first)", repr(value))
    if any(v < 1 for v in value):
        raise bad_value("layer_sizes", "sizes >= 1", repr(tuple(value)))
    return tuple(int(v) for v in value)


def _bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                               reduction="none").sum(-1)


class GreedyCD:
    """Greedy layer-wise CD-k for a :class:`DBN` (module docstring); the options are those
    of :class:`~ppgen.models.energy.ContrastiveDivergence` without persistence."""

    monitor = "reconstruction_error"
    loss_converges = False  # the surrogate loss is no convergence signal
    monitor_mode = "min"

    def __init__(self, *, num_gibbs_steps: int = 1, lr: float = 0.02, lr_decay: float = 1.0,
                 momentum: float = 0.9, initial_momentum: float = 0.5,
                 momentum_epochs: int = 5, weight_decay: float = 1e-4, ais_every: int = 0,
                 ais_samples: int = 50, ais_betas: int = 500,
                 total_steps: int | None = None) -> None:
        self.num_gibbs_steps = check_positive_int("num_gibbs_steps", num_gibbs_steps)
        self.lr = check_positive_float("lr", lr)
        self.lr_decay = check_positive_float("lr_decay", lr_decay)
        for name, value in (("momentum", momentum), ("initial_momentum", initial_momentum)):
            if check_nonnegative_float(name, value) >= 1:
                raise bad_value(name, "a value in [0, 1)", value)
        self.momentum, self.initial_momentum = float(momentum), float(initial_momentum)
        self.momentum_epochs = check_positive_int("momentum_epochs", momentum_epochs,
                                                  minimum=0)
        self.weight_decay = check_nonnegative_float("weight_decay", weight_decay)
        self.ais_every = check_positive_int("ais_every", ais_every, minimum=0)
        self.ais_samples = check_positive_int("ais_samples", ais_samples)
        self.ais_betas = check_positive_int("ais_betas", ais_betas)
        self.total_steps = check_positive_int("total_steps", total_steps or 1)

    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        source = batch.source if isinstance(batch.source, torch.Tensor) else batch.data
        x = model._as_data(source, check_width=False)
        g = torch.Generator(device=x.device).manual_seed(int(seed))
        sizes = (x.shape[1], *model.layer_sizes)
        params = {}
        for layer in range(len(model.layer_sizes)):
            params[f"weights_{layer}"] = 0.01 * torch.randn(
                sizes[layer], sizes[layer + 1], generator=g, dtype=x.dtype, device=x.device)
            params[f"visible_bias_{layer}"] = (
                base_rate_bias(x, "bernoulli") if layer == 0 else
                torch.zeros(sizes[layer], dtype=x.dtype, device=x.device))
            params[f"hidden_bias_{layer}"] = torch.zeros(sizes[layer + 1], dtype=x.dtype,
                                                         device=x.device)
        model._set_fitted_params(params)
        extra = {f"velocity_{k}": torch.zeros_like(v) for k, v in params.items()}
        extra["num_evals"] = torch.zeros((), dtype=torch.long)
        return TrainState(extra=extra)

    def stage(self, step: int, num_layers: int) -> int:
        """The layer trained at ``step``."""
        return min(num_layers - 1, step * num_layers // self.total_steps)

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        x = batch.data.to(model.dtype)
        layer = self.stage(state.step, len(model.layer_sizes))
        with torch.no_grad():
            for lower in range(layer):
                x = hidden_probs(x, *model._layer(lower)[::2])
        lr = self.lr * self.lr_decay ** (state.step / self.total_steps)
        mom = self.initial_momentum if batch.epoch < self.momentum_epochs else self.momentum
        params = dict(zip(_KINDS, model._layer(layer), strict=True))
        velocity = {k: state.extra[f"velocity_{k}_{layer}"] for k in _KINDS}
        error, norm, _ = cd_update(x, params, velocity, None, "bernoulli",
                                   num_gibbs_steps=self.num_gibbs_steps, lr=lr, momentum=mom,
                                   weight_decay=self.weight_decay)
        for k in _KINDS:
            state.extra[f"velocity_{k}_{layer}"] = velocity[k]
        if layer == len(model.layer_sizes) - 1:
            model._track_top_marginals(x)
        return {"loss": error, "grad_norm": norm, "lr": lr, "stage": float(layer)}

    def evaluate(self, model: Any, state: TrainState, data: Any) -> dict[str, float]:
        """Validation metrics (:func:`evaluate_layered`): the up-down reconstruction error
        and, every ``ais_every`` evaluations, the mean held-out lower bound ``log_prob``
        (top-RBM log Z by a cheap AIS run, ``ais_samples`` chains and ``ais_betas``
        temperatures, seed 0)."""
        return evaluate_layered(self, model, state, data, lambda x: model.log_prob(
            x, ais_samples=self.ais_samples, num_betas=self.ais_betas, seed=0))


def evaluate_layered(objective: Any, model: Any, state: TrainState, data: Any,
                     log_prob: Any) -> dict[str, float]:
    """Validation metrics of a DBN or DBM objective: ``reconstruction_error`` (squared error
    of ``model.reconstruct``, summed over pixels, averaged over rows) and every
    ``objective.ais_every`` evaluations (0: never) ``log_prob``, the mean of ``log_prob(x)``
    (the model's held-out lower bound with a cheap AIS log Z: a fixed seed, so values at
    different steps are comparable). The evaluation count is training state
    (``extra["num_evals"]``), so a resumed run keeps the cadence."""
    x = data.data if isinstance(data, Batch) else data
    x = model._as_data(x, arg="validation_data")
    with torch.no_grad():
        out = {"reconstruction_error": float((x - model.reconstruct(x)).square().sum(-1)
                                             .mean())}
    count = int(state.extra.get("num_evals", 0))
    state.extra["num_evals"] = torch.tensor(count + 1, dtype=torch.long)
    if objective.ais_every and count % objective.ais_every == 0:
        out["log_prob"] = float(log_prob(x).double().mean())
    return out


@register("dbn")
class DBN(GenerativeModel):
    """Deep belief network over binary data (module docstring).

    Parameters
    ----------
    layer_sizes : tuple of int
        Sizes of the hidden layers, bottom first (the visible size comes from the data).

    Attributes
    ----------
    weights_l, visible_bias_l, hidden_bias_l : Tensor
        The RBM of layer l (l = 0 .. len(layer_sizes) - 1), as :class:`~ppgen.RBM`'s
        ``weights``, ``visible_bias``, ``hidden_bias``.
    top_marginals : Tensor or None
        Running mean of the top RBM's training inputs (its AIS base rates).

    Examples
    --------
    >>> import torch, ppgen
    >>> x = (torch.rand(200, 8) < 0.3).double()
    >>> dbn = ppgen.DBN((6, 4))
    >>> fit = ppgen.fit(dbn, x, "svi", num_epochs=4, batch_size=50, seed=0, progress=False,
    ...                 tol=0)
    >>> dbn.sample(3, seed=0).shape
    torch.Size([3, 8])
    """

    state_names = ("top_marginals",)
    default_guide = "model"
    supports_mcmc = False
    log_prob_kind = "bound"
    log_prob_estimator = ("importance-weighted variational bound over the up pass, log Z of "
                          "the top RBM by AIS")
    applications = ("sample", "log_prob", "score", "impute", "reconstruct", "transform")
    jit_compile = False
    objective_options = ("num_gibbs_steps", "momentum", "initial_momentum", "momentum_epochs",
                         "weight_decay", "ais_every", "ais_samples", "ais_betas")

    def __init__(self, layer_sizes: tuple[int, ...]) -> None:
        sizes = _layer_sizes(layer_sizes)
        object.__setattr__(self, "param_names", tuple(
            f"{k}_{layer}" for layer in range(len(sizes)) for k in _KINDS))
        super().__init__()
        self.layer_sizes = sizes
        self._log_z_cache: dict[tuple, tuple[float, float]] = {}

    def get_config(self) -> dict[str, Any]:
        return {"layer_sizes": list(self.layer_sizes)}

    @property
    def num_visible(self) -> int | None:
        w = getattr(self, "weights_0", None)
        return None if w is None else int(w.shape[0])

    def _layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(getattr(self, f"{k}_{layer}") for k in _KINDS)  # type: ignore

    def _set_fitted_params(self, params: dict[str, torch.Tensor]) -> None:
        for k, v in params.items():
            setattr(self, k, v)
        self.top_marginals = None
        self._on_params_changed()

    def _track_top_marginals(self, x: torch.Tensor) -> None:
        mean = x.mean(0)
        if self.top_marginals is None:
            self.top_marginals = mean.clone()
        else:
            self.top_marginals.mul_(0.99).add_(0.01 * mean)

    def _check_params(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in params.items():
            t = torch.as_tensor(v)
            t = (t if t.is_floating_point() else t.double()).detach().clone()
            layer = int(k.rsplit("_", 1)[1])
            n_out = self.layer_sizes[layer]
            ok = {"weights": t.dim() == 2 and t.shape[1] == n_out,
                  "visible_bias": t.dim() == 1,
                  "hidden_bias": t.dim() == 1 and t.shape[0] == n_out}[k.rsplit("_", 1)[0]]
            if not ok:
                raise bad_value(k, f"the shape of layer {layer} ({n_out} hidden units)",
                                f"shape {tuple(t.shape)}")
            out[k] = t
        return out

    def _on_params_changed(self) -> None:
        self._log_z_cache = {}

    def _as_data(self, data: Any, *, arg: str = "data", allow_nan: bool = False,
                 check_width: bool = True) -> torch.Tensor:
        fitted = self.is_fitted
        t = check_data(data, arg=arg, allow_nan=allow_nan,
                       num_features=self.num_visible if check_width and fitted else None,
                       dtype=self.dtype if fitted else None,
                       device=self.device if fitted else None)
        seen = t[~torch.isnan(t)] if allow_nan else t
        bad = (seen != 0) & (seen != 1)
        if bool(bad.any()):
            raise bad_value(arg, "binary values (0 or 1)", f"{int(bad.sum())} other values "
                            f"(e.g. {float(seen[bad][0]):g})", "Binarize the data, e.g. "
                            "(x > 0.5).float() or load_mnist(binarize='fixed').")
        return t if t.is_floating_point() else t.double()

    def prepare(self, data: Any) -> torch.Tensor:
        return self._as_data(data, check_width=False)

    # ------------------------------------------------------------------------ Pyro
    def model(self, data: torch.Tensor | None = None, **kwargs: Any) -> Any:
        raise not_supported(self, "a Pyro model (its directed layers under an undirected top "
                            "layer have no tractable site-by-site density)",
                            "use dbn.log_prob (a variational bound) and dbn.sample")

    def default_objective(self, **options: Any) -> GreedyCD:
        """Greedy layer-wise CD-k (:class:`GreedyCD`)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise bad_type("options", "options of greedy CD among " + ", ".join(_OPTIONS),
                           ", ".join(unknown))
        return GreedyCD(**options)

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise not_supported(self, "MCMC or automatic SVI guides", "use ppgen.fit(dbn, data, "
                            "'svi'), which trains it greedily by contrastive divergence")

    def finish_fit(self) -> None:
        self._on_params_changed()

    # ------------------------------------------------------------------------ top
    def _top_log_z(self, num_samples: int, num_betas: int, seed: int) -> tuple[float, float]:
        w, b, c = self._layer(len(self.layer_sizes) - 1)
        key = (num_samples, num_betas, seed, id(w), w._version, b._version, c._version,
               w.dtype, w.device)
        if key not in self._log_z_cache:
            base = b if self.top_marginals is None else torch.logit(
                self.top_marginals.clamp(0.01, 0.99))
            g = torch.Generator(device=w.device).manual_seed(seed)
            with work_threads(num_samples * w.shape[0], device=w.device):
                est, se, _ = ais_log_partition(w, b, c, base, "bernoulli",
                                               num_samples=num_samples,
                                               beta_path=betas(num_betas, "linear",
                                                               device=w.device), generator=g)
            self._log_z_cache = {key: (est, se)}
        return self._log_z_cache[key]

    def log_prob(self, data: Any, *, num_samples: int = 10, ais_samples: int = 100,
                 num_betas: int = 1000, seed: int | None = 0, return_stderr: bool = False):
        """The variational lower bound on log p(v) per row in nats (module docstring):
        ``num_samples`` up-pass draws per row (importance-weighted), log Z of the top RBM by
        AIS with ``ais_samples`` chains and ``num_betas`` temperatures (cached). With
        ``return_stderr``, also the standard error per row (the draws' and log Z's)."""
        self.check_fitted("compute log_prob")
        x = self._as_data(data)
        k = check_positive_int("num_samples", num_samples)
        seed = resolve_seed(seed)
        log_z, z_se = self._top_log_z(check_positive_int("ais_samples", ais_samples),
                                      check_positive_int("num_betas", num_betas), seed)
        g = torch.Generator(device=x.device).manual_seed(seed)
        top = len(self.layer_sizes) - 1
        with torch.no_grad():
            h = x.expand(k, *x.shape)
            log_w = torch.zeros(k, x.shape[0], dtype=x.dtype, device=x.device)
            for layer in range(top):
                w, b, c = self._layer(layer)
                up = h @ w + c
                nxt = (torch.rand(up.shape, generator=g, dtype=up.dtype, device=up.device)
                       < torch.sigmoid(up)).to(up.dtype)
                log_w += _bernoulli_log_prob(h, nxt @ w.T + b) - _bernoulli_log_prob(nxt, up)
                h = nxt
            log_w += -free_energy(h, *self._layer(top), "bernoulli") - log_z
            est, se = log_mean_exp(log_w, 0)
        if not return_stderr:
            return est
        return est, torch.sqrt(se.square() + z_se ** 2)

    def score(self, data: Any, **kwargs: Any) -> torch.Tensor:
        """Anomaly score: minus the bound of :meth:`log_prob` (its options)."""
        kwargs.pop("return_stderr", None)
        return -self.log_prob(data, **kwargs)

    # ------------------------------------------------------------------ applications
    def transform(self, data: Any) -> torch.Tensor:
        """Top-layer features: the mean-field up pass, shape (N, layer_sizes[-1])."""
        self.check_fitted("transform data")
        h = self._as_data(data)
        with torch.no_grad():
            for layer in range(len(self.layer_sizes)):
                w, _, c = self._layer(layer)
                h = hidden_probs(h, w, c)
        return h

    def _down(self, h: torch.Tensor, frm: int, g: torch.Generator | None,
              mean: bool) -> torch.Tensor:
        """Directed down pass from layer ``frm`` (h_frm) to the data; the last step gives
        probabilities when ``mean`` (and every step when ``g`` is None)."""
        for layer in range(frm - 1, -1, -1):
            w, b, _ = self._layer(layer)
            if g is None or (mean and layer == 0):
                h = visible_mean(h, w, b, "bernoulli")
            else:
                h = sample_visible(h, w, b, "bernoulli", g)
        return h

    def reconstruct(self, data: Any) -> torch.Tensor:
        """Denoised data: mean-field up pass to the top, then mean-field down pass."""
        self.check_fitted("reconstruct data")
        h = self._as_data(data)
        with torch.no_grad():
            for layer in range(len(self.layer_sizes)):
                w, _, c = self._layer(layer)
                h = hidden_probs(h, w, c)
            return self._down(h, len(self.layer_sizes), None, True)

    def sample(self, num_samples: int, *, seed: int | None = None, num_burnin: int = 1000,
               mean: bool = False) -> torch.Tensor:
        """Draw data: ``num_burnin`` block-Gibbs sweeps of the top RBM (from its base-rate
        model), then the directed down pass (probabilities at the data layer with
        ``mean``). Shape (num_samples, D)."""
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        top = len(self.layer_sizes) - 1
        w, b, c = self._layer(top)
        g = torch.Generator(device=w.device).manual_seed(resolve_seed(seed))
        with torch.no_grad(), work_threads(num_samples * w.shape[0], device=w.device):
            p = torch.sigmoid(b if self.top_marginals is None else
                              torch.logit(self.top_marginals.clamp(0.01, 0.99)))
            v = (torch.rand(num_samples, w.shape[0], generator=g, dtype=w.dtype,
                            device=w.device) < p).to(w.dtype)
            for _ in range(num_burnin + 1):
                v = sample_visible(sample_hidden(v, w, c, g), w, b, "bernoulli", g)
            return self._down(v, top, g, mean)

    def impute(self, data: Any, *, method: Literal["gibbs", "mean_field"] = "gibbs",
               num_steps: int = 200, num_burnin: int = 50,
               seed: int | None = 0) -> torch.Tensor:
        """Complete missing entries (NaN) given the observed ones.

        ``method="gibbs"``: an approximate clamped sampler: sample the up pass from the
        current completion, one Gibbs sweep of the top RBM, the down pass; observed entries
        are clamped, and the result averages E[v | h_1] over the ``num_steps`` iterations
        after ``num_burnin`` (like a VAE's pseudo-Gibbs imputation: exact only if the up
        pass were the exact posterior). ``method="mean_field"``: the same loop with
        probabilities in place of samples (up pass, one mean-field step of the top RBM,
        down pass, observed entries clamped) run ``num_steps`` times from the visible base
        rates: a deterministic completion (probabilities; round them for binary values).

        Parameters
        ----------
        data : Tensor of shape (N, D)
            NaN marks a missing entry; observed entries are returned unchanged.
        method : {"gibbs", "mean_field"}
        num_steps, num_burnin : int
            Iterations (``num_burnin`` only for ``"gibbs"``).
        seed : int, optional
            Seed of the sampler (a private generator; ``"gibbs"`` only).

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
        if method == "mean_field":
            top = len(self.layer_sizes) - 1
            with torch.no_grad():
                v = torch.where(missing, torch.sigmoid(self._layer(0)[1]).expand_as(x), x)
                for _ in range(num_steps):
                    h = v
                    for layer in range(top):
                        w, _, c = self._layer(layer)
                        h = hidden_probs(h, w, c)
                    w, b, c = self._layer(top)
                    h = hidden_probs(h, w, c)
                    v = torch.where(missing, self._down(h, top + 1, None, True), x)
            return v
        g = torch.Generator(device=x.device).manual_seed(resolve_seed(seed))
        top = len(self.layer_sizes) - 1
        with torch.no_grad(), work_threads(x.numel(), device=x.device):
            w0, b0, _ = self._layer(0)
            start = (torch.rand(x.shape, generator=g, dtype=x.dtype, device=x.device)
                     < torch.sigmoid(b0)).to(x.dtype)
            v = torch.where(missing, start, x)
            total = torch.zeros_like(x)
            for t in range(num_burnin + num_steps):
                h = v
                for layer in range(top):
                    w, _, c = self._layer(layer)
                    h = sample_hidden(h, w, c, g)
                w, b, c = self._layer(top)
                h = sample_hidden(h, w, c, g)
                if top > 0:
                    h = sample_visible(h, w, b, "bernoulli", g)
                    for layer in range(top - 1, 0, -1):
                        w, b, _ = self._layer(layer)
                        h = sample_visible(h, w, b, "bernoulli", g)
                    w, b = w0, b0
                mean_v = visible_mean(h, w, b, "bernoulli")
                if t >= num_burnin:
                    total += mean_v
                new_v = (torch.rand(x.shape, generator=g, dtype=x.dtype, device=x.device)
                         < mean_v).to(x.dtype)
                v = torch.where(missing, new_v, x)
        return torch.where(missing, total / num_steps, x)
