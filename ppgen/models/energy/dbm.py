"""The two-layer deep Boltzmann machine (Salakhutdinov & Hinton 2009) over binary data
(energy, AIS and mean field: :mod:`ppgen.models.energy.dbm_ops`).

Training (:class:`DBMObjective`), as stages of one fit: the first quarter of the steps
pretrains the bottom RBM with doubled bottom-up input (p(h1 | v) = sigmoid(c1 + 2 v W1),
p(v | h1) = sigmoid(b + W1 h1)), the second quarter the top RBM on the bottom one's
probabilities with doubled top-down input (p(h1 | h2) = sigmoid(c1 + 2 W2 h2)), so that the
composed model counts each layer's input once; the rest trains the DBM jointly: mean-field
positive phase (10 fixed-point iterations), PCD negative phase (persistent (v, h2) chains,
one block-Gibbs sweep per step). All CD-1 updates use momentum and weight decay as the RBM's.

``log_prob`` is the variational lower bound under the mean-field posterior,
E_q[-E(v, h)] + H(q) - log Z, with log Z by AIS over (v, h2), h1 summed out.
"""

from __future__ import annotations

from typing import Any

import torch

from ..._random import resolve_seed
from ..._threads import work_threads
from ..._validation import bad_type, check_positive_int, not_supported
from ...training import Batch, TrainState
from ..base import register
from .ais import base_rate_bias, betas
from .dbm_ops import dbm_ais, mean_field
from .dbn import DBN, _layer_sizes

__all__ = ["DBM", "DBMObjective"]

_NAMES = ("weights_0", "weights_1", "visible_bias", "hidden_bias_0", "hidden_bias_1")
_OPTIONS = ("lr", "lr_decay", "momentum", "initial_momentum", "momentum_epochs",
            "weight_decay", "num_mean_field", "total_steps")


def _bern(p: torch.Tensor) -> torch.Tensor:
    return (torch.rand_like(p) < p).to(p.dtype)


def _entropy(mu: torch.Tensor) -> torch.Tensor:
    mu = mu.clamp(1e-7, 1 - 1e-7)
    return -(mu * mu.log() + (1 - mu) * (1 - mu).log()).sum(-1)


class DBMObjective:
    """Greedy pretraining, then mean-field + PCD joint training of a :class:`DBM` (module
    docstring)."""

    monitor = "reconstruction_error"
    loss_converges = False  # the surrogate loss is no convergence signal
    monitor_mode = "min"

    def __init__(self, *, lr: float = 0.02, lr_decay: float = 1.0, momentum: float = 0.9,
                 initial_momentum: float = 0.5, momentum_epochs: int = 5,
                 weight_decay: float = 1e-4, num_mean_field: int = 10,
                 total_steps: int | None = None) -> None:
        from .dbn import GreedyCD

        checked = GreedyCD(lr=lr, lr_decay=lr_decay, momentum=momentum,
                           initial_momentum=initial_momentum, momentum_epochs=momentum_epochs,
                           weight_decay=weight_decay, total_steps=total_steps)
        self.lr, self.lr_decay = checked.lr, checked.lr_decay
        self.momentum, self.initial_momentum = checked.momentum, checked.initial_momentum
        self.momentum_epochs, self.weight_decay = checked.momentum_epochs, checked.weight_decay
        self.total_steps = checked.total_steps
        self.num_mean_field = check_positive_int("num_mean_field", num_mean_field)

    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        source = batch.source if isinstance(batch.source, torch.Tensor) else batch.data
        x = model._as_data(source, check_width=False)
        g = torch.Generator(device=x.device).manual_seed(int(seed))
        h1, h2 = model.layer_sizes
        kw = dict(dtype=x.dtype, device=x.device)
        params = {"weights_0": 0.01 * torch.randn(x.shape[1], h1, generator=g, **kw),
                  "weights_1": 0.01 * torch.randn(h1, h2, generator=g, **kw),
                  "visible_bias": base_rate_bias(x, "bernoulli"),
                  "hidden_bias_0": torch.zeros(h1, **kw),
                  "hidden_bias_1": torch.zeros(h2, **kw)}
        model._set_fitted_params(params)
        extra = {f"velocity_{k}": torch.zeros_like(v) for k, v in params.items()}
        first = model._as_data(batch.data, check_width=False)
        extra["chains_v"] = first.clone()
        extra["chains_h2"] = (torch.rand(first.shape[0], h2, generator=g, **kw) < 0.5).to(
            x.dtype)
        return TrainState(extra=extra)

    def stage(self, step: int) -> int:
        """0, 1: pretraining of the bottom and top RBM; 2: joint training."""
        return min(2, 4 * step // self.total_steps)

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        x = batch.data.to(model.dtype)
        w1, w2, b, c1, c2 = (getattr(model, n) for n in _NAMES)
        stage = self.stage(state.step)
        wd = self.weight_decay
        with torch.no_grad():
            if stage == 0:  # bottom RBM, doubled bottom-up input
                p0 = torch.sigmoid(c1 + 2 * (x @ w1))
                recon = torch.sigmoid(b + _bern(p0) @ w1.T)
                v1 = _bern(recon)
                p1 = torch.sigmoid(c1 + 2 * (v1 @ w1))
                grads = {"weights_0": (x.T @ p0 - v1.T @ p1) / len(x) - wd * w1,
                         "visible_bias": (x - v1).mean(0), "hidden_bias_0": (p0 - p1).mean(0)}
            elif stage == 1:  # top RBM on the bottom's probabilities, doubled top-down
                h = torch.sigmoid(c1 + 2 * (x @ w1))
                q0 = torch.sigmoid(c2 + h @ w2)
                down = torch.sigmoid(c1 + 2 * (_bern(q0) @ w2.T))
                h_1 = _bern(down)
                q1 = torch.sigmoid(c2 + h_1 @ w2)
                recon = torch.sigmoid(b + down @ w1.T)
                grads = {"weights_1": (h.T @ q0 - h_1.T @ q1) / len(x) - wd * w2,
                         "hidden_bias_1": (q0 - q1).mean(0)}
            else:  # joint: mean-field positive phase, PCD negative phase
                mu1, mu2 = mean_field(x, w1, w2, c1, c2, self.num_mean_field)
                recon = torch.sigmoid(b + mu1 @ w1.T)
                v, h2 = state.extra["chains_v"], state.extra["chains_h2"]
                h1 = _bern(torch.sigmoid(c1 + v @ w1 + h2 @ w2.T))
                v = _bern(torch.sigmoid(b + h1 @ w1.T))
                h2 = _bern(torch.sigmoid(c2 + h1 @ w2))
                ph1 = torch.sigmoid(c1 + v @ w1 + h2 @ w2.T)
                n, m = len(x), len(v)
                grads = {"weights_0": x.T @ mu1 / n - v.T @ ph1 / m - wd * w1,
                         "weights_1": mu1.T @ mu2 / n - ph1.T @ h2 / m - wd * w2,
                         "visible_bias": x.mean(0) - v.mean(0),
                         "hidden_bias_0": mu1.mean(0) - ph1.mean(0),
                         "hidden_bias_1": mu2.mean(0) - h2.mean(0)}
            error = (x - recon).square().sum(-1).mean()
            lr = self.lr * self.lr_decay ** (state.step / self.total_steps)
            mom = self.initial_momentum if batch.epoch < self.momentum_epochs else self.momentum
            updates = {k: mom * state.extra[f"velocity_{k}"] + lr * gk
                       for k, gk in grads.items()}
            norm = torch.sqrt(sum(u.square().sum() for u in updates.values()))
            if bool(torch.isfinite(norm)):
                for k, u in updates.items():
                    state.extra[f"velocity_{k}"] = u
                    getattr(model, k).add_(u)
                if stage == 2:
                    state.extra["chains_v"], state.extra["chains_h2"] = v, h2
        return {"loss": error, "grad_norm": norm, "lr": lr, "stage": float(stage)}


@register("dbm")
class DBM(DBN):
    """Two-layer deep Boltzmann machine over binary data (module docstring).

    Parameters
    ----------
    layer_sizes : tuple of two ints
        Sizes (H1, H2) of the hidden layers, bottom first.

    Attributes
    ----------
    weights_0 : Tensor of shape (D, H1)
    weights_1 : Tensor of shape (H1, H2)
    visible_bias, hidden_bias_0, hidden_bias_1 : Tensor
    """

    state_names = ()
    log_prob_estimator = "mean-field variational bound, log Z by AIS (h1 summed out)"
    objective_options = ("momentum", "initial_momentum", "momentum_epochs", "weight_decay",
                         "num_mean_field")

    def __init__(self, layer_sizes: tuple[int, int]) -> None:
        sizes = _layer_sizes(layer_sizes)
        if len(sizes) != 2:
            raise bad_type("layer_sizes", "two hidden-layer sizes (H1, H2): ppgen's DBM has "
                           "two layers", repr(tuple(sizes)))
        object.__setattr__(self, "param_names", _NAMES)
        super(DBN, self).__init__()
        self.layer_sizes = sizes
        self._log_z_cache: dict[tuple, tuple[float, float]] = {}

    def _set_fitted_params(self, params: dict[str, torch.Tensor]) -> None:
        for k, v in params.items():
            setattr(self, k, v)
        self._on_params_changed()

    def _check_params(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in params.items():
            t = torch.as_tensor(v)
            out[k] = (t if t.is_floating_point() else t.double()).detach().clone()
        return out

    def _tensors5(self):
        return tuple(getattr(self, n) for n in _NAMES)

    def default_objective(self, **options: Any) -> DBMObjective:  # type: ignore[override]
        """Pretraining then joint training (:class:`DBMObjective`)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise bad_type("options", "options of DBM training among " + ", ".join(_OPTIONS),
                           ", ".join(unknown))
        return DBMObjective(**options)

    def _log_z(self, num_samples: int, num_betas: int, seed: int) -> tuple[float, float]:
        w1, w2, b, c1, c2 = self._tensors5()
        key = (num_samples, num_betas, seed, id(w1), w1._version, w2._version, b._version,
               c1._version, c2._version, w1.dtype, w1.device)
        if key not in self._log_z_cache:
            g = torch.Generator(device=w1.device).manual_seed(seed)
            with work_threads(num_samples * w1.shape[0], device=w1.device):
                value = dbm_ais(w1, w2, b, c1, c2, b, num_samples=num_samples,
                                beta_path=betas(num_betas, "linear", device=w1.device),
                                generator=g)
            self._log_z_cache = {key: value}
        return self._log_z_cache[key]

    def log_partition(self, *, num_samples: int = 100, num_betas: int = 1000,
                      seed: int | None = 0) -> tuple[float, float]:
        """log Z by AIS over (v, h2) with h1 summed out: (estimate, standard error)."""
        self.check_fitted("compute its partition function")
        return self._log_z(check_positive_int("num_samples", num_samples),
                           check_positive_int("num_betas", num_betas), resolve_seed(seed))

    def log_prob(self, data: Any, *, num_samples: int = 100, num_betas: int = 1000,
                 num_mean_field: int = 30, seed: int | None = 0,
                 return_stderr: bool = False):
        """The mean-field variational lower bound on log p(v) per row in nats, log Z by AIS
        (``num_samples`` chains, ``num_betas`` temperatures, cached); with
        ``return_stderr`` also log Z's standard error per row."""
        self.check_fitted("compute log_prob")
        x = self._as_data(data)
        log_z, se = self.log_partition(num_samples=num_samples, num_betas=num_betas,
                                       seed=seed)
        w1, w2, b, c1, c2 = self._tensors5()
        with torch.no_grad():
            mu1, mu2 = mean_field(x, w1, w2, c1, c2,
                                  check_positive_int("num_mean_field", num_mean_field))
            bound = (x @ b + mu1 @ c1 + mu2 @ c2 + ((x @ w1) * mu1).sum(-1)
                     + ((mu1 @ w2) * mu2).sum(-1) + _entropy(mu1) + _entropy(mu2) - log_z)
        return (bound, torch.full_like(bound, se)) if return_stderr else bound

    def transform(self, data: Any) -> torch.Tensor:
        """Mean-field probabilities of the top layer, shape (N, H2)."""
        self.check_fitted("transform data")
        x = self._as_data(data)
        w1, w2, _, c1, c2 = self._tensors5()
        with torch.no_grad():
            return mean_field(x, w1, w2, c1, c2, 30)[1]

    def reconstruct(self, data: Any) -> torch.Tensor:
        """E[v | mean-field h1], shape (N, D)."""
        self.check_fitted("reconstruct data")
        x = self._as_data(data)
        w1, w2, b, c1, c2 = self._tensors5()
        with torch.no_grad():
            return torch.sigmoid(b + mean_field(x, w1, w2, c1, c2, 30)[0] @ w1.T)

    def _gibbs(self, v, h2, g, missing=None, x=None):
        w1, w2, b, c1, c2 = self._tensors5()
        p1 = torch.sigmoid(c1 + v @ w1 + h2 @ w2.T)
        h1 = (torch.rand(p1.shape, generator=g, dtype=p1.dtype, device=p1.device) < p1).to(
            p1.dtype)
        pv = torch.sigmoid(b + h1 @ w1.T)
        v = (torch.rand(pv.shape, generator=g, dtype=pv.dtype, device=pv.device) < pv).to(
            pv.dtype)
        if missing is not None:
            v = torch.where(missing, v, x)
        p2 = torch.sigmoid(c2 + h1 @ w2)
        h2 = (torch.rand(p2.shape, generator=g, dtype=p2.dtype, device=p2.device) < p2).to(
            p2.dtype)
        return v, h2, pv

    def sample(self, num_samples: int, *, seed: int | None = None, num_burnin: int = 1000,
               mean: bool = False) -> torch.Tensor:
        """Draw data by block Gibbs sampling ((v, h2) | h1, then h1 | (v, h2)) from the
        base-rate start, ``num_burnin`` sweeps. Shape (num_samples, D)."""
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        w1, w2, b, _, _ = self._tensors5()
        g = torch.Generator(device=w1.device).manual_seed(resolve_seed(seed))
        with torch.no_grad(), work_threads(num_samples * w1.shape[0], device=w1.device):
            v = (torch.rand(num_samples, w1.shape[0], generator=g, dtype=w1.dtype,
                            device=w1.device) < torch.sigmoid(b)).to(w1.dtype)
            h2 = torch.zeros(num_samples, w2.shape[1], dtype=w1.dtype, device=w1.device)
            for _ in range(num_burnin + 1):
                v, h2, pv = self._gibbs(v, h2, g)
        return pv if mean else v

    def impute(self, data: Any, *, num_steps: int = 200, num_burnin: int = 50,
               seed: int | None = 0) -> torch.Tensor:
        """Complete missing entries (NaN) by clamped Gibbs sampling (observed units fixed);
        the average of E[v_missing | h1] over ``num_steps`` sweeps after ``num_burnin``."""
        self.check_fitted("impute")
        num_steps = check_positive_int("num_steps", num_steps)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        x = self._as_data(data, allow_nan=True)
        missing = torch.isnan(x)
        w1, w2, b, _, _ = self._tensors5()
        g = torch.Generator(device=w1.device).manual_seed(resolve_seed(seed))
        with torch.no_grad(), work_threads(x.numel(), device=x.device):
            start = (torch.rand(x.shape, generator=g, dtype=x.dtype, device=x.device)
                     < torch.sigmoid(b)).to(x.dtype)
            v = torch.where(missing, start, x)
            h2 = torch.zeros(len(x), w2.shape[1], dtype=x.dtype, device=x.device)
            total = torch.zeros_like(x)
            for t in range(num_burnin + num_steps):
                v, h2, pv = self._gibbs(v, h2, g, missing, x)
                if t >= num_burnin:
                    total += pv
        return torch.where(missing, total / num_steps, x)

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise not_supported(self, "MCMC or automatic SVI guides", "use ppgen.fit(dbm, data, "
                            "'svi')")
