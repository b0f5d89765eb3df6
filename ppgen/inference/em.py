"""One EM driver for every model with closed-form steps.

The model supplies ``em_initialize(data, init=, seed=)``, ``e_step(data) -> (log_lik,
stats)`` and ``m_step(data, stats)``; this driver owns restarts, the stopping rule, the
monotonicity check, the convergence warning, the history and the final E-step
(as scikit-learn's ``BaseMixture.fit_predict`` does for its mixtures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._distributed import all_reduce_sum, broadcast_state, check_same_data, shard_rows, world
from .._interrupt import Interrupt, deferred_interrupt
from .._progress import progress_bar
from .._random import derive_seeds
from .._threads import num_elements, work_threads
from .._validation import (
    NotSupportedError,
    bad_value,
    check_nonnegative_float,
    check_positive_int,
)
from .._warnings import warn_user
from .result import ConvergenceWarning, Diagnostic

__all__ = ["run_em", "ConvergenceMonitor"]


@dataclass
class ConvergenceMonitor:
    """Decides when EM stops: relative change of the objective below ``tol``.

    ``tol = 0`` runs all ``num_steps`` iterations.
    """

    tol: float
    num_steps: int

    def converged(self, previous: float, current: float) -> bool:
        if self.tol <= 0 or not math.isfinite(previous):
            return False
        return abs(current - previous) <= self.tol * max(abs(previous), 1e-300)

    def decreased(self, previous: float, current: float, dtype: torch.dtype,
                  scale: float | None = None) -> bool:
        """A decrease beyond round-off: 1000 machine epsilons of the objective's size, or of
        ``scale``, the sum of the magnitudes of the terms the objective adds up (its own
        round-off; a model's e_step reports it as ``stats["objective_scale"]``), when larger.
        """
        size = max(abs(previous), 1.0, 0.0 if scale is None else float(scale))
        slack = 1e3 * torch.finfo(dtype).eps * size
        return math.isfinite(previous) and current < previous - slack


def run_em(model: Any, data: torch.Tensor, *, init: dict[str, Any] | None, seed: int,
           progress: bool, num_steps: int = 100, tol: float = 1e-6,
           num_restarts: int = 1, data_kwargs: dict[str, Any] | None = None,
           fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """Fit ``model`` by EM; leaves the best restart's parameters in the model.

    Parameters
    ----------
    num_steps : int
        Most iterations (E-step + M-step) per restart.
    tol : float
        Stop when the relative change of the log-likelihood falls below it; 0 runs all steps.
    num_restarts : int
        Independent starts (seeds derived from ``seed``); the best final log-likelihood wins.
    data_kwargs : dict, optional
        Keyword arguments describing the data (e.g. ``lengths``), passed to every step.
    fixed : tuple of str
        Parameters the model's M-steps leave at their start values (passed to
        ``em_initialize``; validated by ``ppgen.fit``).

    Under ``torchrun`` or an initialised process group (:mod:`ppgen._distributed`) every
    rank passes the same data; each starts from the whole of it (rank 0's start is
    broadcast), runs its E-steps on its own contiguous block of rows, and the E-step's
    log-likelihood and statistics are summed over the ranks, so every rank ends with the
    parameters a single process would find. Models declare it with ``em_distributed =
    True`` (E-step statistics that add up over rows, an M-step that reads nothing else;
    a part of the objective that does not add up, such as LDA's topic-word term, comes
    from ``em_shared_objective()`` and is counted once).
    """
    num_steps = check_positive_int("num_steps", num_steps)
    tol = check_nonnegative_float("tol", tol)
    num_restarts = check_positive_int("num_restarts", num_restarts)
    rank, size = world()
    data_kwargs = dict(data_kwargs or {})
    local, local_kw, reduce = data, data_kwargs, None
    if size > 1:
        name = type(model).__name__
        if not getattr(model, "em_distributed", False):
            raise NotSupportedError(
                f"model: expected a model whose EM can run across processes, got {name} "
                f"under a process group of {size} ranks. Across processes ppgen's EM runs the "
                "GaussianMixture, the HMM and LDA; fit this model in this process alone "
                "(with ppgen.single_process(): ppgen.fit(...)).")
        per_row = {k: v for k, v in data_kwargs.items() if v is not None}
        odd = {k: v for k, v in per_row.items()
               if not (isinstance(v, torch.Tensor) and v.dim() >= 1
                       and v.shape[0] == data.shape[0])}
        if odd:
            got = ", ".join(f"{k} ({tuple(v.shape)})" if isinstance(v, torch.Tensor)
                            else f"{k} ({type(v).__name__})" for k, v in sorted(odd.items()))
            raise NotSupportedError(
                f"model_kwargs: expected per-datum keyword arguments with one entry per row "
                f"of the data ({data.shape[0]}) for EM across processes, got {got}; fit in "
                "this process alone (with ppgen.single_process(): ppgen.fit(...)).")
        check_same_data(data)
        for arg, value in per_row.items():
            check_same_data(value, arg=arg)
        if data.shape[0] < size:
            raise bad_value("data", f"at least one row (sequence, document) per process "
                            f"({size})", f"{data.shape[0]} rows", "Use fewer processes.")
        rows = shard_rows(data.shape[0], rank, size)
        local = data[rows]
        local_kw = {k: None if v is None else v[rows] for k, v in data_kwargs.items()}
        reduce = all_reduce_sum
        progress = progress and rank == 0  # one bar for the job
    monitor = ConvergenceMonitor(tol, num_steps)
    messages: list[Diagnostic] = []
    decreases: list[tuple[int, int, float, float]] = []  # (restart, iteration, before, after)
    bar = progress_bar(num_steps * num_restarts, desc="EM", enabled=progress)
    try:
        # One intra-op thread for small data (ppgen._threads): EM's ops are data-sized.
        with work_threads(num_elements(data, *data_kwargs.values()),
                          device=data.device), deferred_interrupt() as interrupt:
            start_kw = {"fixed": tuple(fixed)} if fixed else {}
            best = _restarts(model, local, local_kw, init, seed, num_steps,
                             num_restarts, monitor, decreases, bar, start_kw, interrupt,
                             start_data=data, start_data_kw=data_kwargs, reduce=reduce)
    finally:
        bar.close()
        if hasattr(model, "em_finalize"):
            model.em_finalize()
    model.set_state(best["state"])
    if decreases:
        reason = getattr(model, "em_decrease_reason", None)
        messages.append(_decrease_summary(decreases, num_restarts,
                                          reason() if callable(reason) else None))
        warn_user(messages[-1].message, RuntimeWarning)
    if best["interrupted"]:
        messages.append(Diagnostic(
            "interrupted", f"EM was interrupted (KeyboardInterrupt) in restart "
            f"{best['interrupted'][0] + 1} of {num_restarts}, after iteration "
            f"{best['interrupted'][1]}: the model holds the best completed restart's "
            "parameters, or the last completed iteration's. Fit again to finish.",
            value=float(best["interrupted"][1])))
        warn_user(messages[-1].message, RuntimeWarning)
    elif tol > 0 and not best["converged"]:
        change = abs(best["history"][-1] - best["history"][-2]) / max(
            abs(best["history"][-2]), 1e-300) if len(best["history"]) > 1 else float("nan")
        msg = (f"EM did not converge in {num_steps} iterations (relative change "
               f"{change:.2e} > tol={tol:g}); increase num_steps, loosen tol, or use more "
               "num_restarts / another init.")
        messages.append(Diagnostic("not_converged", msg, value=change, threshold=tol))
        warn_user(msg, ConvergenceWarning)
    return {
        "history": {"objective": np.asarray(best["history"]),
                    "restart": np.full(len(best["history"]), best["restart"])},
        "converged": (False if best["interrupted"] else best["converged"]) if tol > 0 else None,
        "messages": messages,
    }


#: Why a closed-form EM's objective can fall, unless the model says otherwise
#: (``em_decrease_reason()``, e.g. LDA's iterative, inexact E-step).
_DECREASE_REASON = (
    "A component has probably collapsed onto a few points, where the covariance floor "
    "(reg_covar) makes the M-step inexact, or round-off dominates (float32): use fewer "
    "components, more num_restarts, or float64 data.")


def _decrease_summary(decreases: list[tuple[int, int, float, float]],
                      num_restarts: int, reason: str | None = None) -> Diagnostic:
    """One diagnostic for every decrease of the EM objective: how many, and the largest, and
    why (``reason``: the model's own account, default :data:`_DECREASE_REASON`)."""
    restart, step, before, after = min(decreases, key=lambda d: d[3] - d[2])
    where = f"at iteration {step} of restart {restart}"
    if len(decreases) > 1:
        where = (f"at {len(decreases)} iterations (in {len({d[0] for d in decreases})} of "
                 f"{num_restarts} restarts); the largest drop was {where}")
    return Diagnostic(
        "em_decrease",
        f"EM log-likelihood decreased {where}, from {before:.10g} to {after:.10g} "
        f"({after - before:.3g}). {reason or _DECREASE_REASON}",
        value=after - before)


def _restarts(model, data, kw, init, seed, num_steps, num_restarts, monitor, decreases, bar,
              start_kw=None, interrupt: Interrupt | None = None, start_data=None,
              start_data_kw=None, reduce=None):
    """Run every restart; return the best one's state, history and convergence flag.

    Ctrl-C (``interrupt.requested``) ends the fit after the iteration in progress; a
    KeyboardInterrupt raised inside an M- or E-step puts back the parameters from before it.
    Either way the best completed restart (or the interrupted one, when better) is kept and
    ``best["interrupted"]`` is ``(restart, iteration)``; with nothing completed the
    KeyboardInterrupt propagates.

    ``start_data`` (default ``data``) and ``start_data_kw`` (default ``kw``) are what
    ``em_initialize`` sees; ``reduce`` (across processes) sums each E-step's ``(log_lik,
    stats)``, in the model's ``em_additive`` form where it has one, and is given rank 0's
    start."""
    start_data = data if start_data is None else start_data
    start_data_kw = kw if start_data_kw is None else start_data_kw
    additive = getattr(model, "em_additive", None)

    shared = getattr(model, "em_shared_objective", None)

    asked = [False]  # across processes: whether any rank was asked to stop (Ctrl-C)

    def e_step():
        ll, stats = model.e_step(data, **kw)
        if reduce is None:
            return ll, stats
        if additive is not None:
            stats = additive(data, stats, **kw)
        once = shared() if shared is not None else 0.0  # a term that does not add up
        flag = float(interrupt is not None and interrupt.requested)
        ll, stats, flag = reduce((ll - once, stats, flag))
        asked[0] = flag > 0  # Ctrl-C reaches the ranks at different moments
        return ll + once, stats

    def stop_requested() -> bool:
        if reduce is not None:
            return asked[0]
        return interrupt is not None and interrupt.requested

    best: dict[str, Any] | None = None
    stopped: tuple[int, int] | None = None
    dtype = data.dtype if data.is_floating_point() else model.dtype
    for restart, restart_seed in enumerate(derive_seeds(seed, num_restarts)):
        try:
            model.em_initialize(start_data, init=init, seed=restart_seed, **start_data_kw,
                                **(start_kw or {}))
            if reduce is not None:  # one start for every rank
                model.set_state(broadcast_state(model.get_state()))
            ll, stats = e_step()
        except KeyboardInterrupt:
            if best is None:
                raise
            best["interrupted"] = (restart, 0)
            return best
        history: list[float] = []
        converged = False
        previous = -math.inf
        for step in range(num_steps):
            history.append(ll)
            scale = stats.get("objective_scale") if isinstance(stats, dict) else None
            if monitor.decreased(previous, ll, dtype, scale):
                decreases.append((restart, step, previous, ll))
            if monitor.converged(previous, ll):
                converged = True
                break
            previous = ll
            if stop_requested():
                stopped = (restart, step)
                break
            before = model.get_state()
            try:
                model.m_step(data, stats, **kw)
                ll, stats = e_step()
            except KeyboardInterrupt:
                model.set_state(before)  # no half-updated parameters
                if interrupt is not None and interrupt.requested:
                    raise  # a second Ctrl-C: abort at once
                ll = history[-1]
                stopped = (restart, step)
                break
            if not math.isfinite(ll):
                raise FloatingPointError(
                    f"EM log-likelihood became {ll} at iteration {step + 1}; scale the data, "
                    "increase reg_covar, or use float64."
                )
            bar.update(1)
            if not bar.disable:  # formatting the postfix costs ~0.5 ms even unseen
                bar.set_postfix(restart=restart, log_lik=f"{ll:.6g}")
        else:
            history.append(ll)  # the final E-step: log-likelihood of the final parameters
            converged = monitor.converged(previous, ll)
        # A later restart wins only when better beyond round-off (100 eps of the objective's
        # size or of its terms' magnitudes, stats["objective_scale"]): restarts that reach
        # the same optimum (often with the labels permuted) keep the first, whatever order
        # the sums were taken in (one process or several).
        scale = stats.get("objective_scale") if isinstance(stats, dict) else None
        if best is None or ll > best["log_likelihood"] + 1e2 * torch.finfo(dtype).eps * max(
                abs(best["log_likelihood"]), 1.0, best["objective_scale"]):
            best = {"state": model.get_state(), "history": history, "converged": converged,
                    "log_likelihood": ll, "restart": restart,
                    "objective_scale": 0.0 if scale is None else float(scale)}
        if stopped is not None or stop_requested():
            best["interrupted"] = stopped or (restart, len(history) - 1)
            return best
    assert best is not None
    best["interrupted"] = None
    return best
