"""The SVI runner: an ELBO chosen from the model (or any callable loss), automatic guides,
trained by the shared loop (:mod:`ppgen.inference.loop`: minibatches, learning-rate schedule,
gradient clipping, early stopping, the non-finite guard, checkpoints and resume).

It also trains models whose objective is not an ELBO: ``loss=`` takes any callable
``loss(model, guide, *args, **kwargs) -> Tensor`` (as ``pyro.infer.SVI`` does), which is how
contrastive (Boltzmann machines) and adversarial (GANs) objectives are plugged in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

from .._validation import bad_type, bad_value, check_positive_float, check_positive_int
from .loop import plan_steps, train
from .objectives import PyroLoss
from .tracing import ModelInfo, enumerated

__all__ = ["run_svi", "make_guide", "default_elbo", "resolve_loss"]

GuideKind = Literal["normal", "map"]


def make_guide(model_fn: Callable, info: ModelInfo, kind: GuideKind | Callable,
               init_values: dict[str, torch.Tensor] | None = None):
    """An automatic guide over the continuous latent sites; discrete sites are hidden from
    it and summed out by ``TraceEnum_ELBO``."""
    if callable(kind) and not isinstance(kind, str):
        return kind
    if kind not in ("normal", "map"):
        raise bad_value("guide", "'normal', 'map' or a guide callable", repr(kind))
    if not info.continuous:
        raise ValueError("guide: the model has no continuous latent sites to fit; "
                         "use pyro.param for its parameters and pass guide=lambda *a, **k: None.")
    blocked = poutine.block(model_fn, hide=list(info.discrete)) if info.discrete else model_fn
    if init_values:
        init_fn = init_to_value(values=init_values, fallback=init_to_median)
    else:
        init_fn = init_to_median
    if kind == "map":
        return AutoDelta(blocked, init_loc_fn=init_fn)
    return AutoNormal(blocked, init_loc_fn=init_fn, init_scale=0.05)


def _first_bad_site(model_fn, guide, args, kwargs) -> str:
    """Name the first site whose log-density is not finite under the guide's current draw."""
    try:
        with poutine.block():
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(
                *args, **kwargs)
        for trace in (guide_trace, model_trace):
            for name, site in trace.nodes.items():
                if site["type"] == "sample":
                    value = site["value"]
                    if not bool(torch.isfinite(value).all()):
                        return f"{name!r} (value not finite)"
                    lp = site["fn"].log_prob(value)
                    if not bool(torch.isfinite(lp).all()):
                        return f"{name!r} (log-density not finite)"
    except Exception as exc:  # the model itself fails on the bad values
        return f"unknown ({type(exc).__name__}: {exc})"
    return "unknown (all sites finite at the restored parameters)"


def default_elbo(info: ModelInfo, num_particles: int) -> pyro.infer.ELBO:
    """``TraceEnum_ELBO`` when the model has discrete latent sites, else ``Trace_ELBO``."""
    if info.discrete:
        return TraceEnum_ELBO(max_plate_nesting=info.max_plate_nesting,
                              num_particles=num_particles)
    return Trace_ELBO(num_particles=num_particles)


def resolve_loss(loss: Any, info: ModelInfo, num_particles: int) -> Any:
    """The ELBO or callable loss an SVI fit minimises: ``loss`` as given, ``"elbo"``, or
    ``"iwae"`` (the importance-weighted bound with ``num_particles`` samples, Burda et al.
    2015, as Pyro's ``RenyiELBO(alpha=0)``)."""
    if loss is None or loss == "elbo":
        return default_elbo(info, num_particles)
    if loss == "iwae":
        if info.discrete:
            raise bad_value("loss", "'elbo' for a model with enumerated discrete sites",
                            "'iwae'", "Pyro's importance-weighted bound does not enumerate.")
        return pyro.infer.RenyiELBO(alpha=0.0, num_particles=max(num_particles, 2))
    if isinstance(loss, str):
        raise bad_value("loss", "'elbo', 'iwae', a pyro ELBO or a callable", repr(loss))
    if not callable(loss) and not isinstance(loss, pyro.infer.ELBO):
        raise bad_type("loss", "a pyro ELBO or a callable loss(model, guide, *args, **kwargs)",
                       type(loss).__name__)
    return loss


def run_svi(model_fn: Callable, args: tuple, kwargs: dict, info: ModelInfo, *, progress: bool,
            seed: int, guide: GuideKind | Callable = "normal", init_values=None, loss=None,
            num_steps: int | None = None, lr: float = 0.01,
            lr_decay: float = 0.1, clip_norm: float = 10.0, tol: float = 1e-5,
            check_every: int = 100, num_particles: int = 1, batch_size: int | None = None,
            loop_options: dict[str, Any] | None = None,
            fingerprint: dict[str, Any] | None = None, model: Any = None) -> dict[str, Any]:
    """Run SVI through the training loop (:func:`ppgen.inference.loop.train`).

    Parameters
    ----------
    guide : {"normal", "map"} or callable
        ``"normal"``: mean-field ``AutoNormal``; ``"map"``: ``AutoDelta`` (MAP); or a guide.
    loss : pyro ELBO, callable, "elbo" or "iwae", optional
        Default: ``TraceEnum_ELBO`` when the model has discrete latent sites, else
        ``Trace_ELBO``. A callable ``loss(model, guide, *args, **kwargs)`` returning a scalar
        tensor to minimise is used as is (contrastive and adversarial objectives).
    num_steps : int, optional
        How long (default 2000 steps; or ``loop_options['num_epochs']`` epochs of
        ``ceil(num_data / batch_size)`` steps).
    lr : float
        Adam's learning rate.
    lr_decay : float
        The learning rate decays geometrically to ``lr * lr_decay`` at the last step.
    clip_norm : float
        The total gradient norm is clipped to it (its non-finite value skips the step).
    tol : float
        Early stopping: the run stops when the mean loss of the last ``check_every`` steps
        changed by less than ``tol`` relative to the previous window; 0 runs all steps.
    batch_size : int, optional
        Minibatches of the model's subsampled plate (built-in models).
    loop_options : dict
        Checkpoint, resume and validation options of the loop.
    """
    lr = check_positive_float("lr", lr)
    lr_decay = check_positive_float("lr_decay", lr_decay)
    clip_norm = check_positive_float("clip_norm", clip_norm)
    num_particles = check_positive_int("num_particles", num_particles)
    guide_fn = make_guide(model_fn, info, guide, init_values)
    loss = resolve_loss(loss, info, num_particles)
    train_model = enumerated(model_fn, info)
    loop_options = dict(loop_options or {})
    source = args[0] if batch_size is not None else _Whole(args[0])
    total = plan_steps(len(source), num_steps, loop_options.pop("num_epochs", None), batch_size)
    objective = PyroLoss(train_model, guide_fn, loss, kwargs=kwargs, plates=info.subsampled,
                         lr=lr, lr_decay=lr_decay, clip_norm=clip_norm, total_steps=total)
    objective.offending_site = lambda: _first_bad_site(train_model, guide_fn, args, kwargs)
    out = train(objective, model, source, seed=seed, num_steps=total, batch_size=batch_size,
                tol=tol, check_every=check_every, progress=progress,
                extra_state=_pyro_state(guide_fn), fingerprint=fingerprint, **loop_options)
    return {"guide": guide_fn, "history": out.history, "converged": out.converged,
            "messages": out.messages, "loop": out}


class _Whole:
    """A full-batch "data set" of one row for the loop, whose minibatch is the data itself
    (models without a subsampled plate, user functions)."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.device = getattr(data, "device", None)

    def __len__(self) -> int:
        return 1

    def take(self, index: torch.Tensor) -> Any:
        return self.data


def _pyro_state(guide_fn: Any):
    """Checkpoint hooks for what Pyro trains beside the model: the automatic guide's module
    and the values in the param store (as unconstrained tensors)."""

    def get() -> dict[str, Any]:
        store = pyro.get_param_store()
        out: dict[str, Any] = {"store": {k: store._params[k].detach().clone()
                                         for k in store.keys()}}
        if isinstance(guide_fn, torch.nn.Module):
            out["guide"] = {k: v.detach().clone() for k, v in guide_fn.state_dict().items()}
        return out

    def put(state: dict[str, Any]) -> None:
        store = pyro.get_param_store()
        saved = state.get("store", {})
        if set(saved) != set(store.keys()):
            raise bad_value("resume", f"a checkpoint with the parameters {sorted(store.keys())}",
                            sorted(saved), "It was written by another model or guide.")
        if isinstance(guide_fn, torch.nn.Module):
            guide_fn.load_state_dict(state.get("guide", {}))
        with torch.no_grad():
            for k, v in saved.items():
                store._params[k].copy_(v)

    return get, put


