"""Contrastive divergence (Hinton 2002) and persistent contrastive divergence (Tieleman 2008)
for restricted Boltzmann machines, as a :class:`ppgen.training.Objective`.

The log-likelihood gradient of an RBM is a difference of two expectations,

    d log p(v) / d W = E_data[v p(h | v)^T] - E_model[v h^T]

(likewise for the biases). CD-k estimates the model term from k block-Gibbs sweeps started at
the minibatch; PCD-k from k sweeps of persistent chains that carry over from step to step
(their hidden states, ``TrainState.extra["chains"]`` of shape (num_chains, H), so they
are checkpointed and a resumed run continues them
exactly). The update follows Hinton's practical guide (2010): hidden probabilities, not
samples, in the statistics; momentum (``initial_momentum`` for the first
``momentum_epochs`` epochs, then ``momentum``); L2 weight decay on the weights; a learning
rate decayed geometrically to ``lr * lr_decay`` over the run. The velocities are training
state too. No autograd: the gradient is the closed form above, one host sync per step (the
non-finite guard on the update's norm).

The loss the loop records is the reconstruction error (squared error of E[v | h0] with h0 ~
p(h | v), summed over visible units, averaged over the minibatch; for CD it is the first
negative half-step, so it costs nothing): CD does
not minimise a loss, and this is the usual cheap progress signal. ``evaluate`` on validation
data gives the same error and the mean free energy, and every ``ais_every`` evaluations an
AIS estimate of the mean held-out log-likelihood in nats.
"""

from __future__ import annotations

from typing import Any

import torch

from ..._validation import (
    bad_type,
    bad_value,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ...training import Batch, TrainState
from .ais import ais_log_partition, base_rate_bias, betas
from .ops import (
    binary_matmul,
    binary_t_matmul,
    free_energy,
    hidden_probs,
    sample_hidden,
    sample_visible,
    use_sparse,
    visible_mean,
)

__all__ = ["ContrastiveDivergence", "cd_update"]

_PARAMS = ("weights", "visible_bias", "hidden_bias")
#: Rows of a PCD minibatch the recorded reconstruction error is taken on.
_ERROR_ROWS = 16


def cd_update(x: torch.Tensor, params: dict[str, torch.Tensor],
              velocity: dict[str, torch.Tensor], chains: torch.Tensor | None, visible: str, *,
              num_gibbs_steps: int, lr: float, momentum: float, weight_decay: float,
              binary_data: bool = False, spare: dict[str, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One CD-k (``chains`` None) or PCD-k update of an RBM's ``params`` (``weights``,
    ``visible_bias``, ``hidden_bias``; changed in place) on the minibatch ``x``, with
    momentum ``velocity`` (replaced in the dict). The update is skipped when its norm is not
    finite. Returns the reconstruction error (0-d), the update's norm and the new chains.

    ``binary_data`` says ``x`` holds exact 0/1 values (checked by the caller); then, as for
    the sampled Bernoulli visibles, the products with it (x W and x^T p(h | x)) take the
    sparse path of :func:`~ppgen.models.energy.ops.binary_matmul` when its density is below
    :data:`~ppgen.models.energy.ops.SPARSE_MAX_DENSITY` (the same result to round-off).

    ``spare``, a dict the caller keeps between calls, lends the weights' update a buffer:
    ``spare["weights"]`` (when it has the weights' shape, dtype and device) is written
    instead of a fresh tensor, and an accepted update hands the replaced velocity back in it
    (the caller must hold no other reference to that velocity). A fresh (num_visible,
    num_hidden) tensor each step costs page faults once the allocator returns freed memory
    to the system: the product into it took twice as long as into a reused buffer."""
    w, b, c = params["weights"], params["visible_bias"], params["hidden_bias"]
    with torch.no_grad():
        sparse_x = binary_data and use_sparse(x, w.shape[1])
        ph0 = binary_matmul(x, w, c, sparse=sparse_x).sigmoid_()
        # E[v | h0], h0 ~ p(h | x): the reconstruction, and CD's first negative half-step.
        # PCD needs it only for the error, so there h0 and the reconstruction are drawn for
        # the first _ERROR_ROWS rows only (of a shuffled minibatch: an unbiased estimate of
        # its mean, at a fraction of one of the step's matrix products).
        rows = x.shape[0] if chains is None else min(x.shape[0], _ERROR_ROWS)
        h0 = torch.rand_like(ph0[:rows]).lt_(ph0[:rows])  # 0/1 in ph0's dtype
        recon = visible_mean(h0, w, b, visible)  # type: ignore[arg-type]
        error = (x[:rows] - recon).square().sum(-1).mean()
        h = h0 if chains is None else chains
        for i in range(num_gibbs_steps):
            if i == 0 and chains is None:
                v = _draw(recon, visible)
            else:
                v = sample_visible(h, w, b, visible)  # type: ignore[arg-type]
            sparse_v = visible == "bernoulli" and use_sparse(v, w.shape[1])  # 0/1 draws
            ph = binary_matmul(v, w, c, sparse=sparse_v).sigmoid_()
            if i < num_gibbs_steps - 1 or chains is not None:
                h = torch.rand_like(ph).lt_(ph)
        n_pos, n_neg = x.shape[0], v.shape[0]
        # update = momentum * velocity + lr * grad, with
        # grad_W = x^T ph0 / n - v^T ph / n' - weight_decay W (lr folded into the products)
        old_w = velocity["weights"]
        buf = None if spare is None else spare.get("weights")
        if buf is not None and (buf is old_w or buf.shape != w.shape or buf.dtype != w.dtype
                                or buf.device != w.device):
            buf = None
        if sparse_x:
            upd_w = binary_t_matmul(x, ph0 * (lr / n_pos), sparse=True)
            if momentum:
                upd_w.add_(old_w, alpha=momentum)
        elif buf is not None:
            upd_w = torch.addmm(old_w, x.T, ph0, beta=momentum, alpha=lr / n_pos, out=buf)
        else:
            upd_w = torch.addmm(old_w, x.T, ph0, beta=momentum, alpha=lr / n_pos)
        if sparse_v:
            upd_w.sub_(binary_t_matmul(v, ph * (lr / n_neg), sparse=True))
        else:
            upd_w.addmm_(v.T, ph, alpha=-lr / n_neg)
        if weight_decay:
            upd_w.add_(w, alpha=-lr * weight_decay)
        updates = {
            "weights": upd_w,
            "visible_bias": (x.mean(0) - v.mean(0)).mul_(lr),
            "hidden_bias": (ph0.mean(0) - ph.mean(0)).mul_(lr),
        }
        if momentum:
            for n in _PARAMS[1:]:
                updates[n].add_(velocity[n], alpha=momentum)
        norm = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(u) for u in updates.values()]))
        if bool(torch.isfinite(norm)):
            for n in _PARAMS:
                velocity[n] = updates[n]
                params[n].add_(updates[n])
            if chains is not None:
                chains = h
            if spare is not None:
                spare["weights"] = old_w
    return error, norm, chains


def _draw(mean: torch.Tensor, visible: str) -> torch.Tensor:
    if visible == "bernoulli":
        return torch.rand_like(mean).lt_(mean)
    return mean + torch.randn_like(mean)


class ContrastiveDivergence:
    """CD-k / PCD-k training of an :class:`~ppgen.RBM` (module docstring).

    Parameters
    ----------
    num_gibbs_steps : int
        k, the block-Gibbs sweeps per update.
    persistent : bool
        PCD (chains kept across updates) or CD (chains restarted at the data; default). On
        binarized MNIST with few epochs CD-1 reaches the higher held-out log-likelihood
        (200 hidden units, 10 epochs of 10,000 images, batch 100, by AIS: CD-1 with lr 0.01
        -143 nats); PCD wants no momentum, a larger rate decayed over the run and longer
        runs: lr 0.05, ``momentum=0``, ``lr_decay=0.1`` gave -165, lr 0.01 with the default
        momentum -198, lr 0.01 with ``momentum=0.5``, ``lr_decay=0.1`` -189.
    num_chains : int, optional
        Persistent chains (default: the minibatch size).
    lr : float, optional
        Learning rate (default 0.02 for Bernoulli visibles, 0.005 for Gaussian ones; with
        momentum 0.9 the effective step is ten times that).
    lr_decay : float
        Factor in (0, 1] the learning rate decays to over ``total_steps``.
    momentum, initial_momentum : float
        Momentum in [0, 1); ``initial_momentum`` during the first ``momentum_epochs`` epochs.
    momentum_epochs : int
    weight_decay : float
        L2 penalty on the weights (Hinton's guide suggests 1e-4 to 1e-2).
    ais_every : int
        Evaluations between AIS estimates of the held-out log-likelihood (0: never).
    ais_samples, ais_betas : int
        Chains and inverse temperatures of that estimate (cheap by default; use
        ``RBM.log_partition`` for a precise one).
    total_steps : int, optional
        Steps of the whole run (for ``lr_decay``).
    """

    monitor = "reconstruction_error"
    loss_converges = False  # the surrogate loss is no convergence signal
    monitor_mode = "min"

    def __init__(self, *, num_gibbs_steps: int = 1, persistent: bool = False,
                 num_chains: int | None = None, lr: float | None = None,
                 lr_decay: float = 1.0, momentum: float = 0.9, initial_momentum: float = 0.5,
                 momentum_epochs: int = 5, weight_decay: float = 1e-4, ais_every: int = 0,
                 ais_samples: int = 50, ais_betas: int = 500,
                 total_steps: int | None = None) -> None:
        self.num_gibbs_steps = check_positive_int("num_gibbs_steps", num_gibbs_steps)
        if not isinstance(persistent, bool):
            raise bad_type("persistent", "True or False", repr(persistent))
        self.persistent = persistent
        self.num_chains = None if num_chains is None else check_positive_int("num_chains",
                                                                             num_chains)
        self.lr = None if lr is None else check_positive_float("lr", lr)
        self.lr_decay = check_positive_float("lr_decay", lr_decay)
        if self.lr_decay > 1:
            raise bad_value("lr_decay", "a factor in (0, 1]", lr_decay,
                            "Use 1.0 for a constant learning rate.")
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
        self.total_steps = None if total_steps is None else check_positive_int(
            "total_steps", total_steps)
        self._spare: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------ init
    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        """Start the RBM's parameters (weights ~ N(0, 0.01^2) from ``seed``, hidden biases
        0, visible biases the log-odds of the data's visible marginals, or their mean for
        Gaussian visibles) and the training state: zero velocities and, for PCD, chains
        started at the first minibatch's rows."""
        # Training data that fit prepared (model.prepare: validated, 0/1 for Bernoulli
        # visibles) is used as is; a data source's first minibatch is checked here.
        if isinstance(batch.source, torch.Tensor):
            x = batch.source
        else:
            x = model._as_data(batch.data, arg="data", check_width=False)
        g = torch.Generator(device=x.device).manual_seed(int(seed))
        num_visible, num_hidden = x.shape[1], model.num_hidden
        weights = 0.01 * torch.randn(num_visible, num_hidden, generator=g, dtype=x.dtype,
                                     device=x.device)
        base = base_rate_bias(x, model.visible)
        model._set_fitted_params(weights, base.clone(), torch.zeros(
            num_hidden, dtype=x.dtype, device=x.device), base)
        if self.lr is None:
            self.lr = 0.02 if model.visible == "bernoulli" else 0.005
        extra = {f"velocity_{n}": torch.zeros_like(getattr(model, n)) for n in _PARAMS}
        self._spare = {}  # cd_update's reused update buffer, fresh for each run
        extra["num_evals"] = torch.zeros((), dtype=torch.long)
        if self.persistent:
            # The chains' hidden states, started at h ~ p(h | v) of the first minibatch.
            first = batch.data if isinstance(batch.source, torch.Tensor) else x
            rows = self.num_chains or first.shape[0]
            v0 = first[torch.arange(rows, device=first.device) % first.shape[0]]
            extra["chains"] = sample_hidden(v0, weights, model.hidden_bias, g)
        return TrainState(extra=extra)

    # ------------------------------------------------------------------------ step
    def _lr(self, step: int) -> float:
        assert self.lr is not None
        if self.lr_decay == 1.0 or not self.total_steps:
            return self.lr
        return self.lr * self.lr_decay ** (step / self.total_steps)

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        x = batch.data
        if x.dtype != model.dtype:
            x = x.to(model.dtype)
        lr = self._lr(state.step)
        mom = self.initial_momentum if batch.epoch < self.momentum_epochs else self.momentum
        params = {n: getattr(model, n) for n in _PARAMS}
        velocity = {n: state.extra[f"velocity_{n}"] for n in _PARAMS}
        error, norm, chains = cd_update(
            x, params, velocity, state.extra.get("chains"), model.visible,
            num_gibbs_steps=self.num_gibbs_steps, lr=lr, momentum=mom,
            weight_decay=self.weight_decay,
            # fit's data passed model.prepare: 0/1 for Bernoulli visibles
            binary_data=model.visible == "bernoulli" and isinstance(batch.source, torch.Tensor),
            spare=self._spare)
        for n in _PARAMS:
            state.extra[f"velocity_{n}"] = velocity[n]
        if chains is not None:
            state.extra["chains"] = chains
        return {"loss": error, "grad_norm": norm, "lr": lr, "momentum": mom}

    # -------------------------------------------------------------------- evaluate
    def evaluate(self, model: Any, state: TrainState, data: Any) -> dict[str, float]:
        """Validation metrics: ``reconstruction_error`` (as the training loss, mean-field),
        ``free_energy`` (mean F(v)), and every ``ais_every`` evaluations ``log_prob``, the
        mean held-out log-likelihood in nats with log Z from a cheap AIS run (fixed seed 0,
        so values at different steps are comparable)."""
        x = data.data if isinstance(data, Batch) else data
        x = model._as_data(x, arg="validation_data")
        w, b, c = model.weights, model.visible_bias, model.hidden_bias
        with torch.no_grad():
            recon = visible_mean(hidden_probs(x, w, c), w, b, model.visible)
            fe = free_energy(x, w, b, c, model.visible)
            out = {"reconstruction_error": float((x - recon).square().sum(-1).mean()),
                   "free_energy": float(fe.mean())}
            count = int(state.extra["num_evals"])
            state.extra["num_evals"] = state.extra["num_evals"] + 1
            if self.ais_every and count % self.ais_every == 0:
                g = torch.Generator(device=x.device).manual_seed(0)
                log_z, _, _ = ais_log_partition(
                    w, b, c, model._base_bias(), model.visible, num_samples=self.ais_samples,
                    beta_path=betas(self.ais_betas, "linear", device=x.device), generator=g)
                out["log_prob"] = float(-fe.double().mean()) - log_z
        return out
