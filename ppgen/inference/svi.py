"""The SVI runner: Pyro's ``SVI`` with an ELBO chosen from the model, automatic guides,
minibatches, a learning-rate schedule, gradient clipping, early stopping and a NaN guard.

It also trains models whose objective is not an ELBO: ``loss=`` takes any callable
``loss(model, guide, *args, **kwargs) -> Tensor`` (as ``pyro.infer.SVI`` does), which is how
contrastive (Boltzmann machines) and adversarial (GANs) objectives are plugged in.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from tqdm.auto import tqdm

from .._validation import (
    bad_type,
    bad_value,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from .result import ConvergenceWarning, Diagnostic
from .tracing import ModelInfo

__all__ = ["run_svi", "make_guide"]

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


def run_svi(model_fn: Callable, args: tuple, kwargs: dict, info: ModelInfo, *, progress: bool,
            guide: GuideKind | Callable = "normal", init_values=None, loss=None,
            num_steps: int = 2000, lr: float = 0.01, lr_decay: float = 0.1,
            clip_norm: float = 10.0, tol: float = 1e-5, check_every: int = 100,
            num_particles: int = 1, batch_kwargs: dict | None = None) -> dict[str, Any]:
    """Run SVI.

    Parameters
    ----------
    guide : {"normal", "map"} or callable
        ``"normal"``: mean-field ``AutoNormal``; ``"map"``: ``AutoDelta`` (MAP); or a guide.
    loss : pyro ELBO or callable, optional
        Default: ``TraceEnum_ELBO`` when the model has discrete latent sites, else
        ``Trace_ELBO``. A callable ``loss(model, guide, *args, **kwargs)`` returning a scalar
        tensor to minimise is used as is (contrastive and adversarial objectives).
    num_steps, lr : int, float
        Most optimisation steps; Adam's learning rate.
    lr_decay : float
        The learning rate decays geometrically to ``lr * lr_decay`` at ``num_steps``.
    clip_norm : float
        Gradient norm clipping (ClippedAdam).
    tol : float
        Early stopping: the run stops when the mean loss of the last ``check_every`` steps
        changed by less than ``tol`` relative to the previous window; 0 runs all steps.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    lr = check_positive_float("lr", lr)
    lr_decay = check_positive_float("lr_decay", lr_decay)
    clip_norm = check_positive_float("clip_norm", clip_norm)
    tol = check_nonnegative_float("tol", tol)
    check_every = check_positive_int("check_every", check_every)
    num_particles = check_positive_int("num_particles", num_particles)
    guide_fn = make_guide(model_fn, info, guide, init_values)
    if loss is None:
        if info.discrete:
            loss = TraceEnum_ELBO(max_plate_nesting=info.max_plate_nesting,
                                  num_particles=num_particles)
        else:
            loss = Trace_ELBO(num_particles=num_particles)
    elif not callable(loss) and not isinstance(loss, pyro.infer.ELBO):
        raise bad_type("loss", "a pyro ELBO or a callable loss(model, guide, *args, **kwargs)",
                       type(loss).__name__)
    train_model = model_fn
    if info.discrete:
        from pyro.infer import config_enumerate

        train_model = config_enumerate(model_fn, default="parallel")
    optim = pyro.optim.ClippedAdam({"lr": lr, "clip_norm": clip_norm,
                                    "lrd": lr_decay ** (1.0 / num_steps)})
    svi = SVI(train_model, guide_fn, optim, loss=loss)
    step_kwargs = dict(kwargs, **(batch_kwargs or {}))
    losses: list[float] = []
    messages: list[Diagnostic] = []
    converged: bool | None = None if tol == 0 else False
    last_good: dict[str, torch.Tensor] | None = None
    params: dict[str, torch.Tensor] = {}
    bar = tqdm(range(num_steps), disable=not progress, desc="SVI", leave=False)
    for step in bar:
        value = svi.step(*args, **step_kwargs)
        if step == 0:
            params = _trainable(guide_fn, train_model, args, step_kwargs)
        bad_params = [name for name, p in params.items() if not bool(torch.isfinite(p).all())]
        if not math.isfinite(value) or bad_params:
            if last_good is not None:
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(last_good[name])
            if math.isfinite(value):
                # The loss was finite but its gradient was not: name the parameters.
                shown = ", ".join(repr(n) for n in bad_params[:4])
                more = f" and {len(bad_params) - 4} more" if len(bad_params) > 4 else ""
                what = (f"SVI gradients became NaN or infinite at step {step} (loss {value:.6g}): "
                        f"parameters {shown}{more} went non-finite")
                site = bad_params[0]
            else:
                site = _first_bad_site(train_model, guide_fn, args, kwargs)
                what = f"SVI loss became {value} at step {step}; offending site {site}"
            msg = (f"{what}. Parameters were restored to step {step - 1} and the run stopped. "
                   "Lower lr, rescale the data, use tighter priors, or (for reparameterised "
                   "Dirichlet or Gamma guides) an ELBO with analytic KL terms such as "
                   "TraceMeanField_ELBO.")
            messages.append(Diagnostic("nan", msg, site=site, severity="error"))
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            converged = False
            break
        last_good = {name: p.detach().clone() for name, p in params.items()}
        losses.append(value)
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{value:.4g}")
        if tol > 0 and (step + 1) % check_every == 0 and len(losses) >= 2 * check_every:
            current = float(np.mean(losses[-check_every:]))
            before = float(np.mean(losses[-2 * check_every:-check_every]))
            if abs(current - before) <= tol * max(abs(before), 1e-12):
                converged = True
                break
    bar.close()
    if converged is False and not messages:
        msg = (f"SVI did not converge in {num_steps} steps (windowed relative loss change above "
               f"tol={tol:g}); increase num_steps or lr, or loosen tol.")
        messages.append(Diagnostic("not_converged", msg, threshold=tol))
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return {"guide": guide_fn, "history": {"objective": np.asarray(losses)},
            "converged": converged, "messages": messages}


def _trainable(guide, model, args, kwargs) -> dict[str, torch.Tensor]:
    """The unconstrained tensors SVI optimises (guide modules, model modules, pyro.param)."""
    params: dict[str, torch.Tensor] = {}
    if isinstance(guide, torch.nn.Module):
        params.update({f"guide.{n}": p for n, p in guide.named_parameters()})
    for fn in (guide, model):
        with poutine.block():
            trace = poutine.trace(fn, param_only=True).get_trace(*args, **kwargs)
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                params.setdefault(name, site["value"].unconstrained())
    return params
