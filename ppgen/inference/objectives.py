"""Objectives of the training loop for Pyro models: an ELBO (or any callable loss) on a model
and a guide, as one :class:`ppgen.training.Objective`.

The step is Pyro's ``SVI.step`` taken apart: ``loss_and_grads`` under a parameter trace, then
:func:`ppgen.training.guarded_update` (total-norm clipping, the non-finite guard) and Adam with
an exponential learning-rate decay. Minibatches come from the loop: the model's subsampled
plate is conditioned on the loop's indices, so every epoch visits each datum once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch

from .._validation import check_positive_float
from ..training import Batch, TrainState, guarded_update, make_adam

__all__ = ["PyroLoss", "trainable_params"]


def trainable_params(guide: Callable, model: Callable, args: tuple,
                     kwargs: dict) -> dict[str, torch.Tensor]:
    """The unconstrained tensors SVI optimises (guide modules, model modules, pyro.param),
    by name, in a deterministic order; creates them on first use (an autoguide's set-up)."""
    params: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def add(name: str, leaf: torch.Tensor) -> None:
        if leaf.requires_grad and id(leaf) not in seen:
            seen.add(id(leaf))
            params[name] = leaf

    for fn in (guide, model):
        with poutine.block():
            trace = poutine.trace(fn, param_only=True).get_trace(*args, **kwargs)
        if isinstance(fn, torch.nn.Module):
            for n, p in fn.named_parameters():
                add(f"guide.{n}", p)
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                add(name, _leaf(site["value"]))
    return params


def _leaf(value: torch.Tensor) -> torch.Tensor:
    return value.unconstrained() if hasattr(value, "unconstrained") else value


class PyroLoss:
    """An ELBO (``pyro.infer.ELBO``) or callable ``loss(model, guide, *args, **kwargs)`` on a
    Pyro model and guide.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide, called as ``fn(data, **kwargs)``.
    loss : pyro.infer.ELBO or callable
    kwargs : dict
        Model keyword arguments.
    plates : tuple of str
        Subsampled plates of the model; with minibatches each is conditioned on the loop's
        indices and given ``subsample_size`` = the minibatch size.
    lr, lr_decay, clip_norm : float
        Adam's learning rate, decayed geometrically to ``lr * lr_decay`` at ``total_steps``;
        the total gradient norm is clipped to ``clip_norm``.
    """

    monitor = "loss"
    monitor_mode = "min"

    def __init__(self, model: Callable, guide: Callable, loss: Any, *, kwargs: dict,
                 plates: tuple[str, ...] = (), lr: float, lr_decay: float, clip_norm: float,
                 total_steps: int) -> None:
        self.model, self.guide, self.loss = model, guide, loss
        self.kwargs, self.plates = kwargs, plates
        self.lr, self.clip_norm = check_positive_float("lr", lr), clip_norm
        self.gamma = lr_decay ** (1.0 / max(total_steps, 1))
        self.names: list[str] = []
        self.bad_params: list[str] = []
        if isinstance(loss, pyro.infer.ELBO):
            self._loss_and_grads = loss.loss_and_grads
        else:
            def _loss_and_grads(model, guide, *args, **kw):
                value = loss(model, guide, *args, **kw)
                if value.requires_grad:
                    value.backward()
                return value.detach()
            self._loss_and_grads = _loss_and_grads

    def _call(self, batch: Batch) -> tuple[Callable, Callable, tuple, dict]:
        kwargs = self.kwargs
        model, guide = self.model, self.guide
        if batch.index is not None and self.plates:
            kwargs = dict(kwargs, subsample_size=int(batch.index.shape[0]))
            values = dict.fromkeys(self.plates, batch.index)
            model = poutine.condition(model, data=values)
            guide = poutine.condition(guide, data=values)
        data = batch.data if batch.index is None else batch.source
        return model, guide, (data,), kwargs

    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        fn, guide, args, kwargs = self._call(batch)
        params = trainable_params(guide, fn, args, kwargs)
        self.names = list(params)
        optimizer = make_adam(params.values(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.gamma)
        return TrainState(params={"model": list(params.values())},
                          optimizers={"model": optimizer}, schedulers={"model": schedule})

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        fn, guide, args, kwargs = self._call(batch)
        with poutine.trace(param_only=True) as capture:
            loss = self._loss_and_grads(fn, guide, *args, **kwargs)
        params = state.params["model"]
        if len(capture.trace.nodes) > len(params):  # a parameter created after init
            known = {id(p) for p in params}
            for site in capture.trace.nodes.values():
                leaf = _leaf(site["value"])
                if leaf.requires_grad and id(leaf) not in known:
                    params.append(leaf)
                    known.add(id(leaf))
                    state.optimizers["model"].add_param_group({"params": [leaf]})
                    self.names.append(site["name"])
        norm = guarded_update(state.optimizers["model"], params, self.clip_norm,
                              on_skip=self._name_bad)
        state.schedulers["model"].step()
        return {"loss": torch.as_tensor(loss), "grad_norm": norm}

    def _name_bad(self, params: list[torch.Tensor]) -> None:
        self.bad_params = [name for name, p in zip(self.names, params, strict=False)
                           if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
