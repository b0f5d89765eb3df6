"""The training contract shared by models and the training loop.

An *objective* is two functions over a typed state, as BlackJAX algorithms are:

``init(model, batch, seed) -> TrainState``
    builds the optimisers (one per parameter group), schedulers and any extra training tensors
    (persistent Gibbs chains, moving averages) for a model and a first minibatch;
``step(model, state, batch) -> dict``
    does one update on a minibatch and returns what it learned about itself as data: at least
    ``"loss"`` (a 0-d tensor), and ``"grad_norm"`` (the total gradient norm before clipping,
    non-finite when the step was skipped by the guard).

The loop in :mod:`ppgen.inference.loop` owns everything around a step: minibatches and
epochs, the progress bar, the metric history, early stopping, the non-finite guard (it counts
the steps that :func:`guarded_update` skipped), checkpoints and resume. A model chooses its
objective with :meth:`ppgen.models.GenerativeModel.default_objective`; families define their
objectives on top of this module (it imports nothing of ppgen but validation), so models and
inference never import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ._distributed import reduce_gradients

__all__ = ["Batch", "TrainState", "Objective", "guarded_update", "make_adam"]


@dataclass
class Batch:
    """One minibatch, as the loop hands it to an objective.

    Attributes
    ----------
    data : Tensor of shape (batch_size, ...)
        The minibatch (``source[index]``, or ``source.take(index, generator)`` for a data
        source such as :class:`ppgen.datasets.DynamicBinarized`).
    index : LongTensor of shape (batch_size,), or None
        The rows of the full data set in this minibatch (None: the full data set).
    num_data : int
        Rows in the full data set (for the N / B scaling of a minibatch ELBO).
    source : Any
        The full data source (what ``fit`` was given, after the model's ``prepare``).
    epoch : int
        The epoch this minibatch belongs to (0-based).
    step : int
        The global step number of the update this minibatch is for (0-based).
    kwargs : dict
        The model's keyword arguments, those that hold one entry per datum (the model's
        ``data_kwargs``, e.g. labels) sliced to the minibatch's rows.
    """

    data: Any
    index: torch.Tensor | None
    num_data: int
    source: Any = None
    epoch: int = 0
    step: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainState:
    """What an objective carries from step to step.

    Attributes
    ----------
    params : dict of str to list of Tensor
        The tensors each optimiser updates, by parameter group (rebuilt by ``init``; not part
        of :meth:`state_dict`, which the model's own state covers).
    optimizers : dict of str to torch.optim.Optimizer
        One optimiser per parameter group.
    schedulers : dict of str to LRScheduler
        Learning-rate schedules, stepped by the objective.
    extra : dict of str to Tensor
        Further training tensors: persistent chains, moving averages, step counters.
    step : int
        Updates done so far (skipped ones included). The loop keeps it (during a step it is
        the step's own number, for schedules such as KL warm-up); objectives only read it.
    """

    params: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and strings only (loadable with ``weights_only=True``)."""
        return {
            "step": self.step,
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "extra": {k: v.detach().clone() for k, v in self.extra.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into a state built by the same objective's ``init``;
        the groups must match (checked before anything changes)."""
        for key in ("optimizers", "schedulers", "extra"):
            mine, theirs = set(getattr(self, key)), set(state.get(key, {}))
            if mine != theirs:
                raise ValueError(f"state: expected {key} {sorted(mine)}, got {sorted(theirs)}. "
                                 "The checkpoint was written by another objective.")
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        for k, v in state["extra"].items():
            ref = self.extra[k]
            self.extra[k] = v.to(device=ref.device, dtype=ref.dtype)
        self.step = int(state["step"])


@runtime_checkable
class Objective(Protocol):
    """A training objective: ``init`` + ``step`` over a :class:`TrainState`.

    Optional: ``evaluate(model, state, data) -> dict[str, float]`` (validation metrics, called
    by the loop every ``eval_every`` steps on ``validation_data``), and ``monitor``, the name
    of the metric early stopping watches (lower is better unless ``monitor_mode == "max"``),
    and ``loss_converges`` (default True): False for objectives whose training loss is no
    convergence signal (contrastive divergence, adversarial games); without validation data
    the loop then neither stops them early nor warns that they did not converge
    (``Fit.converged`` is None).
    """

    def init(self, model: Any, batch: Batch, seed: int) -> TrainState: ...

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]: ...


def make_adam(params: Iterable[torch.Tensor], *, lr: float, betas: tuple[float, float] = (0.9,
              0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over ``params``, with the fused/foreach kernels torch picks for their device."""
    return torch.optim.Adam(list(params), lr=lr, betas=betas, weight_decay=weight_decay)


def guarded_update(optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                   clip_norm: float | None, *,
                   on_skip: Callable[[list[torch.Tensor]], None] | None = None) -> torch.Tensor:
    """Clip the gradients of ``params`` to total norm ``clip_norm`` and step ``optimizer``,
    unless the norm is not finite: then the update is skipped (parameters and optimiser state
    untouched). The gradients are cleared either way.

    Returns the total gradient norm before clipping (a 0-d tensor; NaN or inf marks a skipped
    step). The finiteness check is one fused reduction and one host sync per step, from the
    norm that clipping computes anyway: no per-parameter checks and no parameter copies.
    ``on_skip(params)`` is called on a skipped step before the gradients are cleared (to name
    the parameters whose gradients went bad).
    """
    reduce_gradients(params)  # a data-parallel step: the global batch's gradients
    grads = [p for p in params if p.grad is not None]
    if not grads:
        optimizer.zero_grad(set_to_none=True)
        return torch.zeros(())
    if clip_norm is None:
        norm = torch.nn.utils.get_total_norm([p.grad for p in grads], foreach=True)
    else:
        norm = torch.nn.utils.clip_grad_norm_(grads, clip_norm, foreach=True)
    if bool(torch.isfinite(norm)):
        optimizer.step()
    elif on_skip is not None:
        on_skip(params)
    optimizer.zero_grad(set_to_none=True)
    return norm.detach()
