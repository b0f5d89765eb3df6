"""The training loop: it owns everything around an objective's step.

Minibatches (shuffled epochs drawn on the data's device, one index copy per epoch), the
progress bar, the metric history, early stopping on a monitored metric, the non-finite guard
(steps that :func:`ppgen.training.guarded_update` skipped are counted, and the run stops with
a named diagnostic after ``max_bad_steps`` in a row), validation every ``eval_every`` steps,
checkpoints (``checkpoint=DIR``, every ``checkpoint_every`` steps and at the end) and resume
(``resume=DIR``: bit for bit on the same machine, RNG states included).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._distributed import (
    BatchShare,
    all_reduce_sum,
    batch_share,
    broadcast_tensors,
    check_same_data,
    data_parallel,
    shard_rows,
    world,
)
from .._interrupt import deferred_interrupt
from .._progress import progress_bar
from .._threads import num_elements, work_threads
from .._validation import (
    NotSupportedError,
    bad_type,
    bad_value,
    check_nonnegative_float,
    check_positive_int,
)
from .._warnings import warn_user
from ..training import Batch, TrainState
from .checkpoint import read_checkpoint, rng_state, set_rng_state, write_checkpoint
from .result import ConvergenceWarning, Diagnostic

__all__ = ["LoopResult", "LossTrend", "train", "plan_steps", "num_rows", "take_rows",
           "loss_trend"]


@dataclass
class LoopResult:
    """What :func:`train` returns."""

    history: dict[str, np.ndarray]
    converged: bool | None
    messages: list[Diagnostic]
    state: TrainState
    num_steps: int
    skipped: int
    resumed_from: int | None = None


@dataclass
class _Position:
    """Where the loop is: the step, the epoch and the place in the epoch's permutation."""

    step: int = 0
    epoch: int = 0
    offset: int = 0
    perm: torch.Tensor | None = None
    bad_run: int = 0
    skipped: int = 0
    stopped: str = ""
    best: float = math.nan
    since_best: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)


def plan_steps(num_data: int, num_steps: int | None, num_epochs: int | None,
               batch_size: int | None) -> int:
    """The number of steps a run takes: ``num_steps`` (default 2000), or ``num_epochs`` of
    ``ceil(num_data / batch_size)`` steps (one step per epoch without minibatches)."""
    if num_steps is not None and num_epochs is not None:
        raise bad_type("num_epochs", "num_steps or num_epochs, not both",
                       f"num_steps={num_steps}, num_epochs={num_epochs}")
    if num_epochs is None:
        return check_positive_int("num_steps", 2000 if num_steps is None else num_steps)
    per_epoch = 1 if batch_size is None else math.ceil(
        num_data / min(check_positive_int("batch_size", batch_size), num_data))
    return check_positive_int("num_epochs", num_epochs) * per_epoch


def num_rows(source: Any) -> int:
    """Rows of a data set (a tensor or a data source with ``__len__``)."""
    return int(source.shape[0]) if isinstance(source, torch.Tensor) else len(source)


def take_rows(source: Any, index: torch.Tensor | None) -> Any:
    """``source[index]``, or a data source's ``take(index)`` (drawing from the global RNG,
    e.g. a fresh binarisation); the whole set for ``index=None``."""
    if hasattr(source, "take") and not isinstance(source, torch.Tensor):
        if index is None:
            index = torch.arange(len(source), device=getattr(source, "device", None))
        return source.take(index)
    if index is None:
        return source
    if isinstance(source, torch.Tensor) and isinstance(index, torch.Tensor) and \
            index.dim() == 1 and index.dtype == torch.long:
        return source.index_select(0, index)  # source[index], without advanced indexing
    return source[index]


def _slice_kwargs(kwargs: dict[str, Any], per_datum: tuple[str, ...], index, num_data: int):
    if index is None:
        return kwargs
    out = dict(kwargs)
    for k in per_datum:
        v = kwargs.get(k)
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == num_data:
            out[k] = v[index]
    return out


def train(objective: Any, model: Any, source: Any, *, seed: int, num_steps: int | None = None,
          num_epochs: int | None = None, batch_size: int | None = None, tol: float = 1e-5,
          check_every: int = 100, progress: bool = True, max_bad_steps: int = 5,
          checkpoint: Any = None, checkpoint_every: int | None = None, resume: Any = None,
          validation_data: Any = None, eval_every: int | None = None, patience: int = 5,
          kwargs: dict[str, Any] | None = None, per_datum: tuple[str, ...] = (),
          fingerprint: dict[str, Any] | None = None,
          extra_state: tuple[Callable[[], dict], Callable[[dict], None]] | None = None,
          desc: str = "SVI") -> LoopResult:
    """Run ``objective`` on ``model`` over minibatches of ``source``.

    Parameters
    ----------
    objective : ppgen.training.Objective
    source : Tensor of shape (num_data, ...) or a data source
        A source has ``__len__`` and ``take(index)`` (e.g. a dynamically binarised data set).
    num_steps, num_epochs : int, optional
        How long to train: steps, or epochs of ``ceil(num_data / batch_size)`` steps (not
        both; default 2000 steps).
    batch_size : int, optional
        Minibatch size (default: the whole data set every step).
    tol, check_every : float, int
        Without validation data: stop when the mean loss of the last ``check_every`` steps
        changed by less than ``tol`` relative to the window before (0 runs every step).
        When the steps run out first, the run still counts as converged if a line fitted
        to the last ``2 * check_every`` losses (:func:`loss_trend`) is flat: its change per
        window within ``tol``, or its slope within 3 standard errors of zero (the trend is
        below the noise of a stochastic ELBO).
        With validation data: stop when the monitored metric has not improved by more than
        ``tol`` (relative) in ``patience`` evaluations.
    max_bad_steps : int
        Stop after this many skipped (non-finite) steps in a row.
    checkpoint, checkpoint_every : path, int
        Write ``checkpoint/checkpoint.pt`` every ``checkpoint_every`` steps (default: every
        epoch, or every 100 steps without minibatches) and at the end.
    resume : path, optional
        Continue from the checkpoint in this directory (it must come from the same model,
        method, objective and data: checked).
    validation_data : Tensor, optional
        Scored by ``objective.evaluate`` every ``eval_every`` steps (default: every epoch).
    kwargs, per_datum : dict, tuple of str
        Model keyword arguments; those named in ``per_datum`` are sliced with the minibatch.
    extra_state : (get, set), optional
        More state to checkpoint (an automatic guide's module, the Pyro param store).
    """
    kwargs = dict(kwargs or {})
    rank, size = world()
    if size > 1 and not getattr(objective, "supports_data_parallel", False):
        raise NotSupportedError(
            f"ppgen.fit: expected an objective that trains across processes, got "
            f"{type(objective).__name__} under a process group of {size} ranks (every rank "
            "would train a copy of its own). Across processes the training loop runs the VAE "
            "family's objective so far; train this model in a process without a group (or "
            "call torch.distributed.destroy_process_group() first).")
    progress = progress and rank == 0  # one bar for the job
    if size > 1:
        check_same_data(source)  # a data source without a checksum: its row count
    num_data = num_rows(source)
    if num_data < 1:
        raise bad_type("data", "at least one row", "an empty data set")
    total = plan_steps(num_data, num_steps, num_epochs, batch_size)
    batch = None if batch_size is None else min(batch_size, num_data)
    per_epoch = 1 if batch is None else math.ceil(num_data / batch)
    tol = check_nonnegative_float("tol", tol)
    check_every = check_positive_int("check_every", check_every)
    max_bad_steps = check_positive_int("max_bad_steps", max_bad_steps)
    patience = check_positive_int("patience", patience)
    every = check_positive_int("checkpoint_every", checkpoint_every or
                               (per_epoch if batch is not None else 100))
    evaluate = getattr(objective, "evaluate", None)
    if validation_data is not None and evaluate is None:
        raise bad_type("validation_data", "an objective with evaluate()",
                       f"{type(objective).__name__}, which has none",
                       "Drop validation_data, or use a model whose objective scores it.")
    eval_every = check_positive_int("eval_every", eval_every or per_epoch)
    monitor = getattr(objective, "monitor", "loss")
    # Contrastive and adversarial objectives report a loss that says nothing about
    # convergence: only validation metrics judge (and stop) them.
    judge_loss = bool(getattr(objective, "loss_converges", True))
    sign = -1.0 if getattr(objective, "monitor_mode", "min") == "max" else 1.0
    device = getattr(source, "device", None)
    generator = torch.Generator().manual_seed(int(seed))

    def make_batch(index, pos: _Position) -> Batch:
        if size > 1:  # this rank's rows of the global batch
            share = batch_share()
            assert share is not None  # make_batch runs inside parallel()
            return _rank_batch(index, pos, share)
        return Batch(data=take_rows(source, index), index=index, num_data=num_data,
                     source=source, epoch=pos.epoch, step=pos.step,
                     kwargs=_slice_kwargs(kwargs, per_datum, index, num_data))

    def _rank_batch(index, pos: _Position, share: BatchShare) -> Batch:
        rows = index if index is not None else torch.arange(num_data, device=device)
        mine = rows[share.rows]
        # A source that draws (a fresh binarisation) draws the global batch, as one process
        # does, so that the random states of the ranks stay equal.
        drawn = hasattr(source, "take") and not isinstance(source, torch.Tensor)
        data = take_rows(source, rows)[share.rows] if drawn else take_rows(source, mine)
        return Batch(data=data, index=mine, num_data=num_data, source=source,
                     epoch=pos.epoch, step=pos.step,
                     kwargs=_slice_kwargs(kwargs, per_datum, mine, num_data))

    def share_of(index) -> BatchShare:
        n = num_data if index is None else len(index)
        part = shard_rows(n, rank, size)
        if part.stop <= part.start:
            raise bad_value("batch_size", f"at least one row per process ({size})",
                            n, "Use a larger batch_size or fewer processes.")
        return BatchShare(n, part)

    def parallel(index):
        if size == 1:
            return contextlib.nullcontext()
        return data_parallel(share_of(index))

    pos = _Position()
    first = None if batch is None else torch.arange(batch, device=device)
    with parallel(first):
        init_batch = make_batch(first, pos)
        state = objective.init(model, init_batch, seed)
    if size > 1 and isinstance(model, torch.nn.Module):
        # One start for the job: rank 0's weights (a model built or loaded per rank may
        # differ) and its global random state (each row's noise, as in one process).
        broadcast_tensors([*model.parameters(), *model.buffers()])
        rng = torch.random.get_rng_state()
        broadcast_tensors([rng])
        torch.random.set_rng_state(rng)
    # Threads by the size of one step's data (small steps run on one thread).
    work = num_elements(init_batch.data, *kwargs.values())
    resumed = None
    if resume is not None:
        payload = read_checkpoint(resume, fingerprint or {}, map_location=device)
        pos = _load(payload, model, state, generator, extra_state)
        resumed = pos.step
    messages: list[Diagnostic] = []
    bar = progress_bar(total=total, desc=desc, enabled=progress)
    bar.update(pos.step)

    def save(rng: dict | None = None) -> None:
        if checkpoint is not None and rank == 0:  # one writer for the job
            write_checkpoint(checkpoint, _payload(pos, model, state, generator, extra_state,
                                                  rng), fingerprint or {})

    with work_threads(work, device=device), deferred_interrupt() as interrupt:
        try:
            while pos.step < total and not pos.stopped:
                if batch is None:
                    index = None
                else:
                    if pos.perm is None:
                        pos.perm = torch.randperm(num_data, generator=generator).to(device)
                    index = pos.perm[pos.offset:pos.offset + batch]
                state.step = pos.step  # the loop keeps the counter; objectives read it
                asked = False
                # The random state before the batch is drawn (a dynamically binarized
                # source draws from it): an interrupted step is checkpointed from here.
                before = rng_state() if checkpoint is not None else None
                try:
                    with parallel(index):
                        metrics = objective.step(model, state, make_batch(index, pos))
                        weight = share.weight if (share := batch_share()) else 1.0
                        if size > 1:  # the global batch's metrics, on every rank, and
                            # whether any rank was asked to stop (Ctrl-C reaches the
                            # ranks at different moments: all stop after the same step)
                            metrics = _reduce_metrics(
                                {**metrics, "_stop": float(interrupt.requested) / weight},
                                weight)
                            asked = metrics.pop("_stop") > 0
                except KeyboardInterrupt:
                    if interrupt.requested:
                        raise  # a second Ctrl-C: abort at once, as the user asked
                    # Raised inside the step (not by Ctrl-C, which is deferred): the step
                    # is dropped and the run ends at the last completed one.
                    state.step = pos.step
                    pos.stopped = "interrupted"
                    save(before)
                    break
                state.step = pos.step + 1
                loss = float(metrics["loss"])
                norm = metrics.get("grad_norm")
                finite = math.isfinite(loss) and (norm is None or math.isfinite(float(norm)))
                if finite:
                    pos.bad_run = 0
                    _record(pos.history, metrics, pos.step)
                else:
                    pos.skipped += 1
                    pos.bad_run += 1
                    if pos.skipped == 1:
                        messages.append(_first_bad(objective, pos.step, loss))
                    if pos.bad_run >= max_bad_steps:
                        pos.stopped = "nan"
                pos.step += 1
                if batch is not None:
                    pos.offset += batch
                    if pos.offset >= num_data:
                        pos.offset, pos.perm = 0, None
                        pos.epoch += 1
                if progress and (pos.step % 10 == 0 or pos.step == total):
                    bar.set_postfix(loss=f"{loss:.4g}", epoch=pos.epoch)
                bar.update(1)
                if validation_data is not None and pos.step % eval_every == 0:
                    scores = evaluate(model, state, validation_data)
                    _record(pos.history, scores, pos.step, prefix="eval_")
                    value = sign * float(scores[monitor])
                    if not math.isfinite(pos.best) or value < pos.best - tol * abs(pos.best):
                        pos.best, pos.since_best = value, 0
                    else:
                        pos.since_best += 1
                        if tol > 0 and pos.since_best >= patience:
                            pos.stopped = "converged"
                elif (validation_data is None and judge_loss and tol > 0
                      and pos.step % check_every == 0):
                    losses = pos.history.get("objective", [])
                    if len(losses) >= 2 * check_every:
                        current = float(np.mean(losses[-check_every:]))
                        before = float(np.mean(losses[-2 * check_every:-check_every]))
                        if abs(current - before) <= tol * max(abs(before), 1e-12):
                            pos.stopped = "converged"
                if (asked if size > 1 else interrupt.requested) and not pos.stopped:
                    pos.stopped = "interrupted"
                if pos.step % every == 0 or pos.step == total or pos.stopped:
                    save()
        finally:
            bar.close()
    converged: bool | None = None if tol == 0 else pos.stopped == "converged"
    if validation_data is None and not judge_loss and pos.stopped != "nan":
        converged = None  # nothing to judge by
    trend = None
    if converged is False and not pos.stopped and validation_data is None:
        # The steps ran out before the strict rule fired: judge the end of the run by a
        # rule that the noise of a single-particle ELBO does not trip (loss_trend).
        trend = loss_trend(pos.history.get("objective", []), check_every)
        converged = trend is not None and trend.flat(tol)
    if pos.skipped and not messages:  # the first bad step came before a resume
        messages.append(Diagnostic("nan", "SVI steps became non-finite before the run was "
                                   "resumed; the updates were skipped.", severity="error"))
    if pos.stopped == "nan":
        converged = False
        msg = messages[0]
        text = (f"{msg.message} {pos.skipped} steps were skipped ({max_bad_steps} in a row), "
                f"so the run stopped at step {pos.step}. Lower lr, rescale the data, use "
                "tighter priors, or (for reparameterised Dirichlet or Gamma guides) an ELBO "
                "with analytic KL terms such as TraceMeanField_ELBO.")
        messages[0] = Diagnostic("nan", text, site=msg.site, value=float(pos.skipped),
                                 severity="error")
        warn_user(text, RuntimeWarning)
    elif pos.skipped:
        msg = messages[0]
        messages[0] = Diagnostic("nan", f"{msg.message} {pos.skipped} non-finite steps were "
                                 "skipped; training went on.", site=msg.site,
                                 value=float(pos.skipped))
    if pos.stopped == "interrupted":
        where = f"; the checkpoint in {str(checkpoint)!r} holds it" if checkpoint else ""
        messages.append(Diagnostic(
            "interrupted", f"{desc} was interrupted (KeyboardInterrupt) after step "
            f"{pos.step} of {total}: the model holds the parameters of that step{where}. "
            "Fit again with resume= and the same checkpoint= directory to continue, or "
            "with more num_steps.", value=float(pos.step)))
        warn_user(messages[-1].message, RuntimeWarning)
    elif converged is False and pos.stopped != "nan":
        msg = (f"SVI did not converge in {total} steps (windowed relative loss change above "
               f"tol={tol:g}); increase num_steps or lr, or loosen tol.")
        if trend is None and validation_data is None:
            msg = (f"SVI ran {total} steps, too few to judge convergence (the rule compares "
                   f"the last {2 * check_every} losses, check_every={check_every}); increase "
                   "num_steps or lower check_every.")
        elif trend is not None:
            msg = (f"SVI did not converge in {total} steps: over the last {trend.length} "
                   f"steps the loss still {'falls' if trend.slope < 0 else 'rises'} by "
                   f"{abs(trend.drift):.3g} per {check_every} steps ({trend.relative:.2g} "
                   f"relative; t = {trend.t:.1f}, beyond the noise and tol={tol:g}). "
                   + ("Increase num_steps or lr; " if trend.slope < 0 else
                      "Lower lr (the loss rises); ")
                   + "num_particles > 1 makes the ELBO less noisy.")
        if validation_data is not None:
            msg = (f"training did not converge in {total} steps ({monitor} still improving "
                   f"by more than tol={tol:g}); increase num_steps or num_epochs.")
        messages.append(Diagnostic("not_converged", msg, threshold=tol))
        warn_user(msg, ConvergenceWarning)
    history = {k: np.asarray(v) for k, v in pos.history.items()}
    return LoopResult(history=history, converged=converged, messages=messages, state=state,
                      num_steps=pos.step, skipped=pos.skipped, resumed_from=resumed)


@dataclass(frozen=True)
class LossTrend:
    """A least-squares line through the last ``length`` losses of a run.

    ``slope`` per step, its standard error ``se`` (from the residual scatter: the noise of a
    stochastic ELBO), ``drift`` = slope x window (the change per window), ``relative`` =
    |drift| / |mean loss|, and ``t`` = slope / se.
    """

    length: int
    slope: float
    se: float
    mean: float
    window: int

    @property
    def drift(self) -> float:
        return self.slope * self.window

    @property
    def relative(self) -> float:
        return abs(self.drift) / max(abs(self.mean), 1e-12)

    @property
    def t(self) -> float:
        return self.slope / self.se if self.se > 0 else math.copysign(math.inf, self.slope) \
            if self.slope else 0.0

    def flat(self, tol: float, z: float = 3.0) -> bool:
        """The loss has stopped moving: its change per window is within ``tol`` (relative)
        or the trend is within ``z`` standard errors of none (below the noise)."""
        return self.relative <= tol or abs(self.t) <= z


def loss_trend(losses, window: int) -> LossTrend | None:
    """:class:`LossTrend` of the last ``2 * window`` losses (None when there are fewer)."""
    length = 2 * window
    if len(losses) < length or length < 3:
        return None
    y = np.asarray(losses[-length:], dtype=np.float64)
    t = np.arange(length, dtype=np.float64)
    t -= t.mean()
    slope = float(t @ (y - y.mean()) / (t @ t))
    resid = y - y.mean() - slope * t
    se = float(np.sqrt(resid @ resid / (length - 2) / (t @ t)))
    return LossTrend(length, slope, se, float(y.mean()), window)


def _record(history: dict[str, list[float]], metrics: dict[str, Any], step: int,
            prefix: str = "") -> None:
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() != 1 or isinstance(v, bool | str):
            continue
        key = "objective" if k == "loss" and not prefix else prefix + k
        history.setdefault(key, []).append(float(v))
    history.setdefault(f"{prefix}step", []).append(float(step))


def _first_bad(objective: Any, step: int, loss: float) -> Diagnostic:
    names = getattr(objective, "bad_params", [])
    if math.isfinite(loss) and names:
        shown = ", ".join(repr(n) for n in names[:4])
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        return Diagnostic("nan", f"SVI gradients became NaN or infinite at step {step} (loss "
                          f"{loss:.6g}): parameters {shown}{more} went non-finite; the update "
                          "was skipped.", site=names[0], severity="error")
    site = getattr(objective, "offending_site", lambda: None)()
    where = f"; offending site {site}" if site else ""
    return Diagnostic("nan", f"SVI loss became {loss} at step {step}{where}; the update was "
                      "skipped.", site=site, severity="error")


def _reduce_metrics(metrics: dict[str, Any], weight: float) -> dict[str, Any]:
    """A data-parallel step's scalar metrics averaged over the ranks, weighted by their share
    of the global batch: the global batch's mean of a per-row mean, and (the weights summing
    to 1) unchanged for a metric equal on every rank, such as the reduced gradient's norm;
    not right for a maximum or a count, which no objective reports so far."""
    scalars = {k: float(v) * weight for k, v in metrics.items()
               if isinstance(v, int | float) or (isinstance(v, torch.Tensor) and v.numel() == 1)}
    return {**metrics, **all_reduce_sum(scalars, what="the training step")}


def _payload(pos: _Position, model, state: TrainState, generator, extra_state,
             rng: dict | None = None) -> dict:
    model_state = {}
    if isinstance(model, torch.nn.Module):
        model_state = {k: v.detach().clone() for k, v in model.get_state().items()
                       if v is not None} if hasattr(model, "get_state") else model.state_dict()
    return {
        "step": pos.step,
        "model": model_state,
        "extra": extra_state[0]() if extra_state else {},
        "train_state": state.state_dict(),
        "loop": {"step": pos.step, "epoch": pos.epoch, "offset": pos.offset,
                 "perm": pos.perm, "bad_run": pos.bad_run, "skipped": pos.skipped,
                 "stopped": pos.stopped, "best": pos.best, "since_best": pos.since_best,
                 "history": {k: torch.tensor(v, dtype=torch.float64)
                             for k, v in pos.history.items()},
                 "generator": generator.get_state()},
        "rng": rng_state() if rng is None else rng,
    }


def _load(payload: dict, model, state: TrainState, generator, extra_state) -> _Position:
    loop = payload["loop"]
    if hasattr(model, "set_state"):
        names = model.param_names + model.state_names
        model.set_state({**dict.fromkeys(names), **payload["model"]})
    elif isinstance(model, torch.nn.Module):
        model.load_state_dict(payload["model"])
    if extra_state:
        extra_state[1](payload.get("extra", {}))
    state.load_state_dict(payload["train_state"])
    generator.set_state(loop["generator"])
    set_rng_state(payload["rng"])
    return _Position(step=int(loop["step"]), epoch=int(loop["epoch"]),
                     offset=int(loop["offset"]), perm=loop["perm"], bad_run=int(loop["bad_run"]),
                     skipped=int(loop["skipped"]),
                     # an interrupted run goes on when resumed
                     stopped="" if loop["stopped"] == "interrupted" else str(loop["stopped"]),
                     best=float(loop["best"]), since_best=int(loop["since_best"]),
                     history={k: v.tolist() for k, v in loop["history"].items()})
