"""The deep Boltzmann machine with two or three hidden layers (Salakhutdinov & Hinton 2009)
over binary data (energy, AIS and mean field: :mod:`ppgen.models.energy.dbm_ops`).

``DBM((H1, H2))`` has the layers v - h1 - h2, ``DBM((H1, H2, H3))`` v - h1 - h2 - h3; the
parameters are ``weights_0`` (D, H1), ``weights_1`` (H1, H2)[, ``weights_2`` (H2, H3)],
``visible_bias`` (D) and ``hidden_bias_0``, ``hidden_bias_1``[, ``hidden_bias_2``].

Training (:class:`DBMObjective`), as stages of one fit: the first half of the steps
pretrains the L = 2 or 3 RBMs greedily, bottom first, in equal shares (a quarter each for
two layers, a sixth each for three), each on the doubled up-pass probabilities of the layers
below; the second half trains the DBM jointly. The pretraining RBMs double the input of
each layer that lacks a neighbour in them (Salakhutdinov & Hinton 2009; Salakhutdinov &
Larochelle 2010 for deeper DBMs), so that the composed model counts each layer's input
once:

* the bottom RBM doubles the bottom-up input: p(h1 | v) = sigmoid(c1 + 2 v W1),
  p(v | h1) = sigmoid(b + W1 h1);
* a middle RBM (three layers: h1 - h2) doubles both ways: p(h2 | h1) = sigmoid(c2 +
  2 h1 W2), p(h1 | h2) = sigmoid(c1 + 2 W2 h2), an ordinary RBM with weights 2 W2 whose
  weights are halved in the DBM (h1 and h2 each get their other input from W1, W3 there);
  its CD-1 statistic updates W2 at the common learning rate (half or twice that step gave
  lower held-out bounds on the 8x8 digits);
* the top RBM doubles the top-down input: p(h_{L-1} | h_L) = sigmoid(c_{L-1} + 2 W_L h_L),
  p(h_L | h_{L-1}) = sigmoid(c_L + h_{L-1} W_L).

Joint training: mean-field positive phase (``num_mean_field`` fixed-point sweeps, started
from the doubled up pass), PCD negative phase: persistent chains over the even layers
(v, h2; ``TrainState.extra["chains_v"]``, ``["chains_h2"]``, so checkpoints resume them
exactly), one block-Gibbs sweep per step (odd layers {h1, h3} | (v, h2), then (v, h2) | odd
layers), the odd layers' probabilities in the statistics. All updates use momentum and
weight decay as the RBM's, and the learning rate decays geometrically to a tenth over the
run by default (``lr_decay=0.1``; Salakhutdinov & Hinton anneal theirs too): at a constant
rate the persistent chains lag behind the weights and longer runs get *worse* (on the 8x8
digits, (24, 12), batch 50, held-out bound over seeds 0-2: -21.9 to -22.7 nats after 20
epochs, -22.7 to -28.7 after 60), while with the decay they improve (-23.8 after 20
epochs, -19.7 to -20.1 after 60; three layers (24, 12, 8): -20.1 to -20.6; the base-rate
model -24.0).

``log_prob`` is the variational lower bound under the mean-field posterior,
E_q[-E(v, h)] + H(q) - log Z, with log Z by AIS over (v, h2), the odd layers (h1, h3)
summed out.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ..._random import resolve_seed
from ..._threads import work_threads
from ..._validation import (
    bad_type,
    bad_value,
    check_choice,
    check_positive_float,
    check_positive_int,
    not_supported,
)
from ...training import Batch, TrainState
from ..base import register
from .ais import base_rate_bias, betas
from .dbm_ops import (
    activation,
    dbm_ais,
    dbm_raise,
    doubled_up_pass,
    mean_field,
    sample_even,
    sample_odd,
)
from .dbn import DBN, GreedyCD, _layer_sizes, evaluate_layered

__all__ = ["DBM", "DBMObjective"]

_OPTIONS = ("lr", "lr_decay", "momentum", "initial_momentum", "momentum_epochs",
            "weight_decay", "num_mean_field", "ais_every", "ais_samples", "ais_betas",
            "total_steps")
#: The numbers of hidden layers a DBM can have.
_DEPTHS = (2, 3)


def _param_names(num_layers: int) -> tuple[str, ...]:
    """weights_0.., visible_bias, hidden_bias_0.. (the two-layer names are the first ones)."""
    return (*(f"weights_{i}" for i in range(num_layers)), "visible_bias",
            *(f"hidden_bias_{i}" for i in range(num_layers)))


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

    def __init__(self, *, lr: float = 0.02, lr_decay: float = 0.1, momentum: float = 0.9,
                 initial_momentum: float = 0.5, momentum_epochs: int = 5,
                 weight_decay: float = 1e-4, num_mean_field: int = 10, ais_every: int = 0,
                 ais_samples: int = 50, ais_betas: int = 500,
                 total_steps: int | None = None) -> None:
        checked = GreedyCD(lr=lr, lr_decay=lr_decay, momentum=momentum,
                           initial_momentum=initial_momentum, momentum_epochs=momentum_epochs,
                           weight_decay=weight_decay, ais_every=ais_every,
                           ais_samples=ais_samples, ais_betas=ais_betas,
                           total_steps=total_steps)
        self.ais_every, self.ais_samples = checked.ais_every, checked.ais_samples
        self.ais_betas = checked.ais_betas
        self.lr, self.lr_decay = checked.lr, checked.lr_decay
        self.momentum, self.initial_momentum = checked.momentum, checked.initial_momentum
        self.momentum_epochs, self.weight_decay = checked.momentum_epochs, checked.weight_decay
        self.total_steps = checked.total_steps
        self.num_mean_field = check_positive_int("num_mean_field", num_mean_field)

    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        source = batch.source if isinstance(batch.source, torch.Tensor) else batch.data
        x = model._as_data(source, check_width=False)
        g = torch.Generator(device=x.device).manual_seed(int(seed))
        sizes = (x.shape[1], *model.layer_sizes)
        kw = dict(dtype=x.dtype, device=x.device)
        params = {f"weights_{i}": 0.01 * torch.randn(sizes[i], sizes[i + 1], generator=g, **kw)
                  for i in range(len(model.layer_sizes))}
        params["visible_bias"] = base_rate_bias(x, "bernoulli")
        params.update({f"hidden_bias_{i}": torch.zeros(n, **kw)
                       for i, n in enumerate(model.layer_sizes)})
        model._set_fitted_params(params)
        extra = {f"velocity_{k}": torch.zeros_like(v) for k, v in params.items()}
        # Persistent chains over the even layers (v, h2); the odd ones are drawn from them.
        first = model._as_data(batch.data, check_width=False)
        extra["chains_v"] = first.clone()
        extra["chains_h2"] = (torch.rand(first.shape[0], sizes[2], generator=g, **kw)
                              < 0.5).to(x.dtype)
        extra["num_evals"] = torch.zeros((), dtype=torch.long)
        return TrainState(extra=extra)

    def evaluate(self, model: Any, state: TrainState, data: Any) -> dict[str, float]:
        """Validation metrics (:func:`~ppgen.models.energy.dbn.evaluate_layered`): the
        reconstruction error of E[v | mean-field h1] and, every ``ais_every`` evaluations,
        the mean held-out mean-field bound ``log_prob`` (log Z by a cheap AIS run,
        ``ais_samples`` chains and ``ais_betas`` temperatures, seed 0)."""
        return evaluate_layered(self, model, state, data, lambda x: model.log_prob(
            x, num_samples=self.ais_samples, num_betas=self.ais_betas, seed=0))

    def stage(self, step: int, num_layers: int = 2) -> int:
        """0 .. num_layers - 1: pretraining of the RBM of that layer (bottom first, each a
        1 / (2 num_layers) share of the steps); num_layers: joint training (the second
        half)."""
        return min(num_layers, 2 * num_layers * step // self.total_steps)

    @staticmethod
    def _pretrain(s: int, x: torch.Tensor, weights: list, biases: list,
                  weight_decay: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """CD-1 statistics of pretraining RBM ``s`` (between layers s and s + 1) on the
        doubled up-pass probabilities of layer s, and the reconstruction of the data through
        the pretraining RBMs' down conditionals."""
        top = len(weights)
        inp = x if s == 0 else doubled_up_pass(x, weights, biases, s)[-1]
        w = weights[s]

        def up(t: torch.Tensor) -> torch.Tensor:  # doubled unless RBM s is the top one
            u = t @ w
            return torch.sigmoid(biases[s + 1] + (2 * u if s < top - 1 else u))

        def down(t: torch.Tensor, layer: int) -> torch.Tensor:  # doubled above the bottom
            d = t @ weights[layer].T
            return torch.sigmoid(biases[layer] + (2 * d if layer > 0 else d))

        q0 = up(inp)
        recon = down(_bern(q0), s)
        neg = _bern(recon)
        q1 = up(neg)
        grads = {f"weights_{s}": (inp.T @ q0 - neg.T @ q1) / len(x) - weight_decay * w}
        if s == 0:
            grads["visible_bias"] = (x - neg).mean(0)
        grads[f"hidden_bias_{s}"] = (q0 - q1).mean(0)
        for layer in range(s - 1, -1, -1):
            recon = down(recon, layer)
        return grads, recon

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        x = batch.data.to(model.dtype)
        weights, biases = model._weights(), model._biases()
        top = len(weights)
        stage = self.stage(state.step, top)
        wd = self.weight_decay
        with torch.no_grad():
            if stage < top:
                grads, recon = self._pretrain(stage, x, weights, biases, wd)
            else:  # joint: mean-field positive phase, PCD negative phase
                pos = [x, *mean_field(x, weights, biases, self.num_mean_field)]
                recon = torch.sigmoid(biases[0] + pos[1] @ weights[0].T)
                chains: list = [None] * (top + 1)
                chains[0], chains[2] = state.extra["chains_v"], state.extra["chains_h2"]
                sample_odd(chains, weights, biases, None)
                sample_even(chains, weights, biases, None)
                # the even layers' states, the odd layers' probabilities given them
                neg = [chains[k] if k % 2 == 0 else
                       torch.sigmoid(activation(k, chains, weights, biases))
                       for k in range(top + 1)]
                n, m = len(x), len(neg[0])
                grads = {f"weights_{i}": (pos[i].T @ pos[i + 1] / n
                                          - neg[i].T @ neg[i + 1] / m - wd * weights[i])
                         for i in range(top)}
                grads["visible_bias"] = x.mean(0) - neg[0].mean(0)
                grads.update({f"hidden_bias_{i}": pos[i + 1].mean(0) - neg[i + 1].mean(0)
                              for i in range(top)})
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
                if stage == top:
                    state.extra["chains_v"], state.extra["chains_h2"] = chains[0], chains[2]
        return {"loss": error, "grad_norm": norm, "lr": lr, "stage": float(stage)}


@register("dbm")
class DBM(DBN):
    """Deep Boltzmann machine with two or three hidden layers over binary data (module
    docstring).

    Parameters
    ----------
    layer_sizes : tuple of two or three ints
        Sizes (H1, H2) or (H1, H2, H3) of the hidden layers, bottom first (the visible size
        D comes from the data).

    Attributes
    ----------
    weights_0 : Tensor of shape (D, H1)
    weights_1 : Tensor of shape (H1, H2)
    weights_2 : Tensor of shape (H2, H3)
        Three layers only.
    visible_bias : Tensor of shape (D,)
    hidden_bias_0, hidden_bias_1, hidden_bias_2 : Tensor of shape (H1,), (H2,), (H3,)
        ``hidden_bias_2`` with three layers only.

    Examples
    --------
    >>> import torch, ppgen
    >>> x = (torch.rand(200, 8) < 0.3).double()
    >>> dbm = ppgen.DBM((6, 4, 3))
    >>> fit = ppgen.fit(dbm, x, "svi", num_epochs=4, batch_size=50, seed=0, progress=False,
    ...                 tol=0)
    >>> dbm.weights_2.shape
    torch.Size([4, 3])
    >>> dbm.sample(3, seed=0, num_burnin=10).shape
    torch.Size([3, 8])
    """

    state_names = ()
    log_prob_estimator = "mean-field variational bound, log Z by AIS (odd layers summed out)"
    objective_options = ("momentum", "initial_momentum", "momentum_epochs", "weight_decay",
                         "num_mean_field", "ais_every", "ais_samples", "ais_betas")

    def __init__(self, layer_sizes: tuple[int, ...]) -> None:
        sizes = _layer_sizes(layer_sizes)
        if len(sizes) not in _DEPTHS:
            raise bad_value("layer_sizes", "two or three hidden-layer sizes, (H1, H2) or "
                            "(H1, H2, H3)", repr(tuple(sizes)))
        object.__setattr__(self, "param_names", _param_names(len(sizes)))
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
            t = (t if t.is_floating_point() else t.double()).detach().clone()
            if not bool(torch.isfinite(t).all()):
                raise bad_value(k, "finite values", "non-finite entries")
            out[k] = t
        sizes = self.layer_sizes
        config = f"layer_sizes={sizes}"
        w0 = out.get("weights_0", getattr(self, "weights_0", None))
        b = out.get("visible_bias", getattr(self, "visible_bias", None))
        # The visible size D: from weights_0 (given now, else the current one), else from
        # the visible bias.
        d = (w0.shape[0] if w0 is not None and w0.dim() == 2 else
             b.shape[0] if b is not None and b.dim() == 1 else None)
        n = ("D" if d is None else d, *sizes)
        check = dict(out)
        if b is not None and "visible_bias" not in out:  # weights_0 of a new width alone
            check["visible_bias"] = b
        for k, t in check.items():
            kind, _, index = k.rpartition("_")
            if k == "visible_bias":
                shape, what = (n[0],), ("one per visible unit" if "visible_bias" in out
                                        else "one per visible unit: set it together with "
                                        "weights_0 of a new width")
            elif kind == "weights":
                i = int(index)
                shape, what = (n[i], n[i + 1]), f"layer {i} to layer {i + 1}; {config}"
            else:
                i = int(k.rsplit("_", 1)[1])
                shape, what = (n[i + 1],), f"one per unit of hidden layer {i + 1}; {config}"
            if t.dim() != len(shape) or any(
                    isinstance(e, int) and a != e for a, e in zip(t.shape, shape,
                                                                  strict=True)):
                text = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
                raise bad_value(k, f"shape ({text}) ({what})", f"shape {tuple(t.shape)}")
        return out

    def _weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"weights_{i}") for i in range(len(self.layer_sizes))]

    def _biases(self) -> list[torch.Tensor]:
        """[visible_bias, hidden_bias_0, ...]: the biases of layers 0 (v) .. L."""
        return [self.visible_bias, *(getattr(self, f"hidden_bias_{i}")
                                     for i in range(len(self.layer_sizes)))]

    def default_objective(self, **options: Any) -> DBMObjective:  # type: ignore[override]
        """Pretraining then joint training (:class:`DBMObjective`)."""
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise bad_type("options", "options of DBM training among " + ", ".join(_OPTIONS),
                           ", ".join(unknown))
        return DBMObjective(**options)

    def _log_z(self, num_samples: int, num_betas: int, seed: int) -> tuple[float, float]:
        weights, biases = self._weights(), self._biases()
        w0 = weights[0]
        key = (num_samples, num_betas, seed, id(w0),
               *(t._version for t in (*weights, *biases)), w0.dtype, w0.device)
        if key not in self._log_z_cache:
            g = torch.Generator(device=w0.device).manual_seed(seed)
            with work_threads(num_samples * w0.shape[0], device=w0.device):
                est, se, _ = dbm_ais(weights, biases, biases[0], num_samples=num_samples,
                                     beta_path=betas(num_betas, "linear", device=w0.device),
                                     generator=g)
            self._log_z_cache = {key: (est, se)}
        return self._log_z_cache[key]

    def log_partition(self, *, num_samples: int = 100, num_betas: int = 1000,
                      seed: int | None = 0) -> tuple[float, float]:
        """log Z by AIS over the even layers (v, h2), the odd layers (h1, h3) summed out:
        (estimate, standard error). Cached per parameter state and settings.

        Parameters
        ----------
        num_samples : int
            AIS chains.
        num_betas : int
            Intermediate distributions (a linear schedule from the base-rate model, whose
            visible biases are the DBM's own).
        seed : int, optional
            Seed of the chains (a private generator).

        Returns
        -------
        estimate, stderr : float
        """
        self.check_fitted("compute its partition function")
        return self._log_z(check_positive_int("num_samples", num_samples),
                           check_positive_int("num_betas", num_betas), resolve_seed(seed))

    def log_prob(self, data: Any, *, method: Literal["bound", "raise"] = "bound",
                 num_samples: int = 100, num_betas: int = 1000, num_mean_field: int = 30,
                 seed: int | None = 0, return_stderr: bool = False):
        """Log-likelihood of each row in nats: by default the mean-field variational lower
        bound E_q[-E(v, h)] + H(q) - log Z, log Z by AIS (low in expectation, so the bound
        is high in expectation by that much: a stochastic estimate, not a strict bound);
        with ``method="raise"`` the RAISE estimate of log p(v) itself
        (:func:`~ppgen.models.energy.dbm_ops.dbm_raise`: reverse chains from (v, h2 ~ the
        mean-field q(h2 | v)); low in expectation for a model trained towards maximum
        likelihood), which needs no log Z.

        Parameters
        ----------
        data : Tensor of shape (N, D)
            Binary data.
        method : {"bound", "raise"}
        num_samples, num_betas, seed
            ``"bound"``: the AIS estimate of log Z (:meth:`log_partition`; cached).
            ``"raise"``: reverse chains per row and intermediate distributions.
        num_mean_field : int
            Fixed-point sweeps of the mean-field posterior q(h1) ... q(hL).
        return_stderr : bool
            Also return the standard error per row (``"bound"``: log Z's).

        Returns
        -------
        log_prob : Tensor of shape (N,)
        stderr : Tensor of shape (N,)
            Only with ``return_stderr``.
        """
        self.check_fitted("compute log_prob")
        method = check_choice("method", method, ("bound", "raise"))  # type: ignore
        x = self._as_data(data)
        weights, biases = self._weights(), self._biases()
        num_mean_field = check_positive_int("num_mean_field", num_mean_field)
        if method == "raise":
            num_samples = check_positive_int("num_samples", num_samples)
            path = betas(check_positive_int("num_betas", num_betas), "linear",
                         device=x.device)
            g = torch.Generator(device=x.device).manual_seed(resolve_seed(seed))
            with torch.no_grad(), work_threads(num_samples * x.numel(), device=x.device):
                q_h2 = mean_field(x, weights, biases, num_mean_field)[1]
                lp, lp_se = dbm_raise(x, weights, biases, biases[0], q_h2,
                                      num_samples=num_samples, beta_path=path, generator=g)
            lp, lp_se = lp.to(x.dtype), lp_se.to(x.dtype)
            return (lp, lp_se) if return_stderr else lp
        log_z, se = self.log_partition(num_samples=num_samples, num_betas=num_betas,
                                       seed=seed)
        with torch.no_grad():
            mus = mean_field(x, weights, biases, num_mean_field)
            states = [x, *mus]
            bound = x @ biases[0]
            for k in range(1, len(states)):
                bound = bound + states[k] @ biases[k]
            for i, w in enumerate(weights):
                bound = bound + ((states[i] @ w) * states[i + 1]).sum(-1)
            for mu in mus:
                bound = bound + _entropy(mu)
            bound = bound - log_z
        return (bound, torch.full_like(bound, se)) if return_stderr else bound

    def transform(self, data: Any) -> torch.Tensor:
        """Mean-field probabilities of the top layer, shape (N, H_L)."""
        self.check_fitted("transform data")
        x = self._as_data(data)
        with torch.no_grad():
            return mean_field(x, self._weights(), self._biases(), 30)[-1]

    def reconstruct(self, data: Any) -> torch.Tensor:
        """E[v | mean-field h1], shape (N, D)."""
        self.check_fitted("reconstruct data")
        x = self._as_data(data)
        weights, biases = self._weights(), self._biases()
        with torch.no_grad():
            mu1 = mean_field(x, weights, biases, 30)[0]
            return torch.sigmoid(biases[0] + mu1 @ weights[0].T)

    def _start(self, v: torch.Tensor) -> list:
        """Gibbs states [v, None, h2 = 0, (None)] from the visible start ``v``."""
        states: list = [None] * (len(self.layer_sizes) + 1)
        states[0] = v
        states[2] = torch.zeros(len(v), self.layer_sizes[1], dtype=v.dtype, device=v.device)
        return states

    def _gibbs(self, states: list, g: torch.Generator, missing=None, x=None) -> torch.Tensor:
        """One block-Gibbs sweep in place: odd layers | (v, h2), then (v, h2) | odd layers
        (v clamped to ``x`` outside ``missing``); returns p(v = 1 | h1)."""
        weights, biases = self._weights(), self._biases()
        sample_odd(states, weights, biases, g)
        pv = sample_even(states, weights, biases, g)
        if missing is not None:
            states[0] = torch.where(missing, states[0], x)
        return pv

    def sample(self, num_samples: int, *, seed: int | None = None, num_burnin: int = 1000,
               mean: bool = False) -> torch.Tensor:
        """Draw data by block Gibbs sampling (odd layers | (v, h2), then (v, h2) | odd
        layers) from the base-rate start (v ~ sigmoid(visible_bias), h2 = 0).

        Parameters
        ----------
        num_samples : int
        seed : int, optional
            A private generator's seed (the global RNG is not touched).
        num_burnin : int
            Sweeps before the draw (the draw is the sweep after them).
        mean : bool
            Return p(v = 1 | h1) of the last sweep instead of v.

        Returns
        -------
        Tensor of shape (num_samples, D)
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        num_burnin = check_positive_int("num_burnin", num_burnin, minimum=0)
        b = self.visible_bias
        g = torch.Generator(device=b.device).manual_seed(resolve_seed(seed))
        with torch.no_grad(), work_threads(num_samples * b.shape[0], device=b.device):
            states = self._start((torch.rand(num_samples, b.shape[0], generator=g,
                                             dtype=b.dtype, device=b.device)
                                  < torch.sigmoid(b)).to(b.dtype))
            for _ in range(num_burnin + 1):
                pv = self._gibbs(states, g)
        return pv if mean else states[0]

    def impute(self, data: Any, *, method: Literal["gibbs", "mean_field"] = "gibbs",
               num_steps: int = 200, num_burnin: int = 50, tol: float = 1e-6,
               seed: int | None = 0) -> torch.Tensor:
        """Complete missing entries (NaN) given the observed ones.

        ``method="gibbs"``: clamped block Gibbs sampling (observed units fixed); the
        average of E[v_missing | h1] over ``num_steps`` sweeps after ``num_burnin`` (the
        conditional mean E[v_missing | v_observed], as probabilities).
        ``method="mean_field"``: the mean-field completion: the fixed point of the
        mean-field equations of every hidden layer together with the missing visible units
        (mu_k = sigmoid(act_k), v_missing = sigmoid(b + mu1 W1^T)), by coordinate-ascent
        sweeps started from the visible base rates and the doubled up pass, until no value
        changes by more than ``tol`` in a sweep or after ``num_steps`` sweeps
        (probabilities; round them for binary values).

        Parameters
        ----------
        data : Tensor of shape (N, D)
            NaN marks a missing entry; observed entries are returned unchanged.
        method : {"gibbs", "mean_field"}
        num_steps, num_burnin : int
            Sweeps (``num_burnin`` only for ``"gibbs"``; for ``"mean_field"`` the most).
        tol : float
            ``"mean_field"``: the largest change in a sweep at which it stops.
        seed : int, optional
            Seed of the chains (a private generator; ``"gibbs"`` only).

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
        b = self.visible_bias
        if method == "mean_field":
            tol = check_positive_float("tol", tol)
            weights, biases = self._weights(), self._biases()
            with torch.no_grad():
                v = torch.where(missing, torch.sigmoid(b).expand_as(x), x)
                states = [v, *doubled_up_pass(v, weights, biases)]
                for _ in range(num_steps):
                    change = torch.zeros((), dtype=x.dtype, device=x.device)
                    for k in range(1, len(states)):
                        new = torch.sigmoid(activation(k, states, weights, biases))
                        change = torch.maximum(change, (new - states[k]).abs().max())
                        states[k] = new
                    new = torch.where(missing, torch.sigmoid(
                        activation(0, states, weights, biases)), x)
                    change = torch.maximum(change, (new - states[0]).abs().max())
                    states[0] = new
                    if float(change) <= tol:
                        break
            return states[0]
        g = torch.Generator(device=b.device).manual_seed(resolve_seed(seed))
        with torch.no_grad(), work_threads(x.numel(), device=x.device):
            start = (torch.rand(x.shape, generator=g, dtype=x.dtype, device=x.device)
                     < torch.sigmoid(b)).to(x.dtype)
            states = self._start(torch.where(missing, start, x))
            total = torch.zeros_like(x)
            for t in range(num_burnin + num_steps):
                pv = self._gibbs(states, g, missing, x)
                if t >= num_burnin:
                    total += pv
        return torch.where(missing, total / num_steps, x)

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int, **kwargs: Any) -> dict[str, torch.Tensor]:
        raise not_supported(self, "MCMC or automatic SVI guides", "use ppgen.fit(dbm, data, "
                            "'svi')")
