"""Benchmark: ppgen's Baum-Welch EM for a Gaussian HMM against hmmlearn, and plain Pyro SVI.

Run with ``make bench`` or directly::

    .venv/bin/python benchmarks/hmm_em.py            # full run (N=1,000 x T=100, K=8, D=4)
    .venv/bin/python benchmarks/hmm_em.py --quick    # smoke run (N=200 x T=50, K=4, D=3)
    .venv/bin/python benchmarks/hmm_em.py --sweep    # sequence-length sweep (see below)
    .venv/bin/python benchmarks/hmm_em.py --sweep --quick   # its smoke run (T <= 2,000)
    .venv/bin/python benchmarks/hmm_em.py --sweep --unfused # also ppgen without its fused
                                                            # Gaussian E-step (before/after)

``--sweep`` times, instead, one sequence of T = 1,000, 10,000 and 100,000 frames and 10
sequences of 10,000 (K=8, D=4, diag and full): ppgen (whose float64 Gaussian EM on the CPU
takes the fused compiled E-step there, ``ppgen.models.sequence.compiled.gaussian_e_step``)
against both hmmlearn implementations, with the log-likelihoods compared, and the peak
resident memory a ppgen fit added (sampled every millisecond, minus the resident size before
the fit). Each (shape, covariance) runs in a fresh process of this script, so a row is
measured the same whether it runs alone or after the others (before, the 1 x 10,000 diag
row read 2.6-2.9x in the sweep and 3.6x alone, because the earlier shapes had changed
glibc's malloc thresholds; see ``fix_allocator``).

How every implementation is timed (both modes): glibc's malloc gets fixed thresholds for the
whole run (``fix_allocator``; ``--malloc default`` keeps glibc's adaptive ones), each
implementation runs one untimed warm-up fit and decoding, then the timed repeats are
interleaved with the order rotated by one each round (no implementation is always first or
always after the same peer); time per iteration is the best of the repeats, as below.

For each covariance structure (``diag`` and ``full``) the data are drawn with
``ppgen.datasets.make_hmm`` (float64, every sequence full length) and three fits
run side by side in this one process, for the same 20 iterations of the same
maximum-likelihood EM from the same start (true means plus noise, unit
covariances, near-uniform transition rows, uniform initial probabilities):

* hmmlearn ``GaussianHMM`` with ``implementation="log"`` and ``"scaling"``
  (``covars_prior=0, covars_weight=1, means_weight=0``, no initialisation,
  no tolerance), and
* ``ppgen.fit(HiddenMarkovModel(..., reg_covar=0), x, method="em", tol=0)``.

The script prints, per covariance, a markdown table with time per iteration,
whole-fit time, the final total log-likelihood, its relative difference to
ppgen's, whether the Viterbi paths equal ppgen's, and the speed-up of ppgen
against the FASTER hmmlearn implementation.  torch and the BLAS pools run one
thread by default (``--threads``), because hmmlearn's forward-backward is
single-threaded.

Then plain Pyro: the textbook HMM (``pyro.markov`` over time, enumerated states,
``TraceEnum_ELBO``, parameters as ``pyro.param`` with an empty guide, i.e. a
point estimate as AutoDelta gives, Adam, full batch) from the same start, run
for ``--svi-budget`` seconds of training; the exact log-likelihood of its
parameters is evaluated with ppgen's forward algorithm every few steps (not
counted as training time), and the time to come within 0.1% of EM's is reported.

Nothing is written to disk unless ``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

try:  # the outside-load meter of the GMM benchmark (same folder)
    from gmm_em import OutsideLoad
except ImportError:  # imported from elsewhere: a minimal copy

    class OutsideLoad:  # type: ignore[no-redef]
        """CPU time other processes used while this one ran (Linux /proc/stat; else None)."""

        def __init__(self) -> None:
            self.start = self._sample()

        @staticmethod
        def _sample():
            try:
                with open("/proc/stat") as f:
                    ticks = [int(v) for v in f.readline().split()[1:]]
            except (OSError, ValueError):
                return None
            busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
            return time.perf_counter(), busy, sum(os.times()[:2])

        def fraction(self):
            end = self._sample()
            if self.start is None or end is None or end[0] <= self.start[0]:
                return None
            other = (end[1] - self.start[1]) - (end[2] - self.start[2])
            return max(other, 0.0) / ((end[0] - self.start[0]) * (os.cpu_count() or 1))


LL_RTOL_TARGET = 1e-6
SWEEP_SHAPES = [(1, 1_000), (1, 10_000), (1, 100_000), (10, 10_000)]  # (N, T)
SWEEP_QUICK_SHAPES = [(1, 500), (1, 2_000), (4, 1_000)]


class PeakMemory:
    """Peak resident memory (MB) above the level at construction, sampled every ms by a
    thread until ``stop()`` (Linux /proc/self/statm; 0 elsewhere)."""

    def __init__(self) -> None:
        self.base = self._rss()
        self.peak = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return 0

    def _watch(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        return (self.peak - self.base) / 2**20


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def fix_allocator() -> str:
    """Give glibc's malloc fixed thresholds for the whole run, so that no implementation's
    time depends on what this process ran before.

    By default glibc adapts its mmap threshold (and, with it, the trim threshold) to the
    largest block freed so far: until a block of a given size has been freed once, blocks of
    that size are mapped fresh from the kernel on every allocation, and the heap top is
    returned after every fit, so each fit pays page faults again. How often that happens
    depends on what the process allocated before (in one process, a sweep's earlier shapes
    raise the thresholds for the later ones). Measured at 1 x 10,000 diag: hmmlearn took
    ~14,600 minor page faults per fit pair in a process that had run nothing before and none
    after the 1,000-frame shapes, and ran 30-40% slower. Fixed thresholds (mmap 32 MiB, the
    largest glibc allows, trim 1 GiB) turn the adaptation off: freed memory stays in the heap
    for the next fit, the steady state of a long-running process, the same for every
    implementation. Returns a description for the header (or why it is not applied).
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
              and libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1)
    except (OSError, AttributeError):
        return "the platform's default (not glibc)"
    if not ok:
        return "glibc's default (mallopt refused the fixed thresholds)"
    return "glibc with fixed thresholds (mmap 32 MiB, trim 1 GiB; --malloc default: off)"


def release_free_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc's ``malloc_trim``; nothing
    elsewhere), so that a resident-size meter started next sees what the next fit adds
    rather than memory freed before it and kept by the fixed trim threshold."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def time_interleaved(runners: list[Runner], repeats: int) -> float | None:
    """Time every runner the same way: one untimed warm-up fit and decoding each (kernels
    loaded, scratch memory allocated), then ``repeats`` rounds of ``run_once``, the order
    rotated by one each round so that no implementation is always timed first or after the
    same peer. Returns the share of the CPUs other processes used meanwhile (or None)."""
    for runner in runners:
        _, model = runner.fit(runner.iters)
        runner.viterbi(model)
    load = OutsideLoad()
    for i in range(repeats):
        shift = i % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            runner.run_once()
    return load.fraction()


SVI_RTOL = 1e-3


# --------------------------------------------------------------------------- #
# Problem set-up
# --------------------------------------------------------------------------- #


@dataclass
class Problem:
    covariance: str  # "diag" | "full"
    x: np.ndarray  # (N, T, D) float64
    start: dict[str, np.ndarray]  # initial_probs, transition_probs, locs, covariances
    truth_ll: float  # total log-likelihood of the data under the true parameters

    @property
    def shape(self) -> tuple[int, int, int]:
        n, t, d = self.x.shape
        return n, t, d

    @property
    def k(self) -> int:
        return self.start["initial_probs"].shape[0]


def make_problem(n: int, t: int, k: int, d: int, covariance: str, seed: int) -> Problem:
    """Data from ``make_hmm`` and one start shared by every implementation."""
    import ppgen

    x, truth = ppgen.datasets.make_hmm(n, t, k, num_features=d, covariance=covariance,
                                       seed=seed, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    locs = truth["locs"].numpy() + rng.normal(scale=1.0, size=(k, d))
    trans = 1.0 + 0.2 * rng.random((k, k))
    start = {
        "initial_probs": np.full(k, 1.0 / k),
        "transition_probs": trans / trans.sum(1, keepdims=True),
        "locs": locs,
        "covariances": np.ones((k, d)) if covariance == "diag" else np.tile(np.eye(d), (k, 1, 1)),
    }
    ref = ppgen.HiddenMarkovModel(k, emission="gaussian", covariance=covariance, reg_covar=0.0)
    ref.set_params(**{name: truth[name] for name in
                      ("initial_probs", "transition_probs", "locs", "covariances")})
    with torch.no_grad():
        truth_ll = float(ref.log_prob(x).sum())
    return Problem(covariance=covariance, x=np.ascontiguousarray(x.numpy()), start=start,
                   truth_ll=truth_ll)


# --------------------------------------------------------------------------- #
# Implementations
# --------------------------------------------------------------------------- #


@dataclass
class RunResult:
    name: str
    total_s: float  # best wall-clock time of one complete fit
    per_iter_s: float  # marginal time of one EM iteration
    loglik: float  # final total log-likelihood of the data
    viterbi_s: float  # best time of one Viterbi decoding of all sequences
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class Runner:
    """One implementation: ``fit(max_iter)`` runs a complete fit and returns (time, model).

    time/iter is the marginal cost of an EM iteration, measured the same way for every
    implementation: ``(t(iters) - t(1)) / (iters - 1)``, each time the best over the
    repeats. That leaves out fixed per-fit work (input checks, set-up, and ppgen's final
    E-step, which hmmlearn does not run); the "total" column keeps it.
    """

    name = ""

    def __init__(self, prob: Problem, iters: int) -> None:
        self.prob, self.iters = prob, iters
        self.best_total, self.best_one, self.best_viterbi = math.inf, math.inf, math.inf
        self.model = None
        self.paths: np.ndarray | None = None  # Viterbi paths (every fit gives the same)

    def fit(self, max_iter: int) -> tuple[float, object]:
        raise NotImplementedError

    def loglik(self, model) -> float:
        raise NotImplementedError

    def viterbi(self, model) -> np.ndarray:
        """Most probable state paths, (N, T) int64."""
        raise NotImplementedError

    def run_once(self) -> None:
        t, model = self.fit(self.iters)
        if t < self.best_total:
            self.best_total, self.model = t, model
        if self.iters > 1:
            self.best_one = min(self.best_one, self.fit(1)[0])
        t0 = time.perf_counter()
        self.paths = self.viterbi(model)
        self.best_viterbi = min(self.best_viterbi, time.perf_counter() - t0)

    def result(self) -> RunResult:
        notes = []
        per_iter = self.best_total / self.iters
        if self.iters > 1:
            marginal = (self.best_total - self.best_one) / (self.iters - 1)
            if marginal > 0:
                per_iter = marginal
            else:  # the one-iteration fit was the slower (noise): no marginal cost to take
                notes.append("time/iter = total / iterations (the 1-iteration fit took "
                             "longer than the full fit: outside load)")
        else:
            per_iter = self.best_total
        return RunResult(
            name=self.name,
            total_s=self.best_total,
            per_iter_s=per_iter,
            loglik=self.loglik(self.model),
            viterbi_s=self.best_viterbi,
            notes=notes,
            extra={"one_iter_fit_s": self.best_one},
        )


class HmmlearnRunner(Runner):
    """hmmlearn GaussianHMM: maximum-likelihood EM from the shared start, no tolerance."""

    def __init__(self, prob: Problem, iters: int, implementation: str) -> None:
        import hmmlearn

        super().__init__(prob, iters)
        self.implementation = implementation
        self.name = f"hmmlearn {hmmlearn.__version__} ({implementation})"
        n, t, d = prob.shape
        self.x2d = np.ascontiguousarray(prob.x.reshape(n * t, d))
        self.lengths = np.full(n, t)

    def fit(self, max_iter: int):
        from hmmlearn.hmm import GaussianHMM

        s = self.prob.start
        model = GaussianHMM(
            n_components=self.prob.k,
            covariance_type=self.prob.covariance,
            covars_prior=0.0,
            covars_weight=1.0,
            means_prior=0.0,
            means_weight=0.0,
            startprob_prior=1.0,
            transmat_prior=1.0,
            algorithm="viterbi",
            n_iter=max_iter,
            tol=-math.inf,
            init_params="",
            params="stmc",
            implementation=self.implementation,
            random_state=0,
        )
        model.startprob_ = s["initial_probs"]
        model.transmat_ = s["transition_probs"]
        model.means_ = s["locs"]
        model.covars_ = s["covariances"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model.fit(self.x2d, self.lengths)
            elapsed = time.perf_counter() - t0
        if model.monitor_.iter != max_iter:
            raise RuntimeError(f"{self.name} ran {model.monitor_.iter} of {max_iter} iterations")
        return elapsed, model

    def loglik(self, model) -> float:
        return float(model.score(self.x2d, self.lengths))

    def viterbi(self, model) -> np.ndarray:
        n, t, _ = self.prob.shape
        return model.predict(self.x2d, self.lengths).reshape(n, t).astype(np.int64)


class PpgenRunner(Runner):
    """ppgen's EM: ``ppgen.fit(HiddenMarkovModel(...), x, method="em", ...)``."""

    name = "ppgen (EM)"

    def __init__(self, prob: Problem, iters: int, measure_memory: bool = False) -> None:
        import ppgen  # noqa: F401  (ImportError here means: ppgen not available)

        super().__init__(prob, iters)
        self.measure_memory = measure_memory
        self.x = torch.from_numpy(prob.x)
        self.init = {name: torch.from_numpy(v) for name, v in prob.start.items()}

    def fit(self, max_iter: int):
        import ppgen

        hmm = ppgen.HiddenMarkovModel(self.prob.k, emission="gaussian",
                                      covariance=self.prob.covariance, reg_covar=0.0)
        meter = PeakMemory() if self.measure_memory else None
        t0 = time.perf_counter()
        fit = ppgen.fit(hmm, self.x, method="em", init=self.init, num_steps=max_iter, tol=0.0,
                        seed=0, progress=False)
        elapsed = time.perf_counter() - t0
        if meter is not None:
            self.peak_mb = max(getattr(self, "peak_mb", 0.0), meter.stop())
        return elapsed, (hmm, fit)

    def loglik(self, model) -> float:
        hmm, _ = model
        with torch.no_grad():
            return float(hmm.log_prob(self.x).sum())

    def viterbi(self, model) -> np.ndarray:
        hmm, _ = model
        with torch.no_grad():
            return hmm.predict(self.x).numpy().astype(np.int64)

    def result(self) -> RunResult:
        res = super().result()
        _, fit = self.model
        objective = np.asarray(fit.history["objective"], dtype=np.float64)
        if len(objective) != self.iters + 1:  # the start's value, then one per iteration
            res.notes.append(
                f"ppgen history has {len(objective)} objective values for {self.iters} steps."
            )
        if len(objective) and abs(objective[-1] - res.loglik) > 1e-9 * abs(res.loglik):
            res.notes.append(
                f"ppgen's last history objective {objective[-1]:.10f} differs from "
                f"hmm.log_prob(x).sum() = {res.loglik:.10f}."
            )
        res.extra.update(fit_elapsed_s=float(fit.elapsed),
                         objective_last=float(objective[-1]) if len(objective) else None)
        return res


class UnfusedPpgenRunner(PpgenRunner):
    """ppgen's EM with the fused Gaussian E-step switched off
    (``ppgen.models.sequence.compiled.FUSED_EM = False``): the path before it, as a peer."""

    name = "ppgen (EM, unfused)"

    def fit(self, max_iter: int):
        from ppgen.models.sequence import compiled

        compiled.FUSED_EM = False
        try:
            return super().fit(max_iter)
        finally:
            compiled.FUSED_EM = True


# --------------------------------------------------------------------------- #
# Plain Pyro SVI baseline
# --------------------------------------------------------------------------- #


def run_pyro_svi(prob: Problem, target_ll: float, budget_s: float, lr: float,
                 eval_every: int, jit: bool = False) -> dict:
    """Plain Pyro: the textbook HMM trained with (Jit)TraceEnum_ELBO + Adam, full batch.

    The model is written as in Pyro's ``examples/hmm.py``: a ``pyro.markov`` loop over
    time with one enumerated state site per step inside a plate over the sequences, the
    parameters as constrained ``pyro.param`` values and an empty guide (a point
    estimate of every parameter, maximum likelihood). Returns the training time (exact
    evaluations excluded) until the log-likelihood is within ``SVI_RTOL`` relative of
    ``target_ll`` (or above it), or the budget runs out.
    """
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    from pyro.infer import SVI, JitTraceEnum_ELBO, TraceEnum_ELBO
    from pyro.optim import Adam

    import ppgen

    x = torch.from_numpy(prob.x)
    n, num_steps, d = x.shape
    k = prob.k
    diag = prob.covariance == "diag"
    s = {name: torch.from_numpy(v).clone() for name, v in prob.start.items()}
    if diag:
        scale0 = s["covariances"].sqrt()
    else:
        scale0 = torch.linalg.cholesky(s["covariances"])

    def model(data):
        init = pyro.param("initial_probs", s["initial_probs"], constraint=constraints.simplex)
        trans = pyro.param("transition_probs", s["transition_probs"],
                           constraint=constraints.simplex)
        locs = pyro.param("locs", s["locs"])
        if diag:
            scales = pyro.param("scales", scale0, constraint=constraints.positive)
        else:
            scale_tril = pyro.param("scale_tril", scale0, constraint=constraints.lower_cholesky)
        with pyro.plate("sequences", data.shape[0], dim=-1):
            z = None
            for t in pyro.markov(range(data.shape[1])):
                probs = init if z is None else trans[z]
                z = pyro.sample(f"z_{t}", dist.Categorical(probs),
                                infer={"enumerate": "parallel"})
                if diag:
                    obs = dist.Normal(locs[z], scales[z]).to_event(1)
                else:
                    obs = dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z])
                pyro.sample(f"x_{t}", obs, obs=data[:, t])

    def guide(data):
        pass

    hmm = ppgen.HiddenMarkovModel(k, emission="gaussian", covariance=prob.covariance,
                                  reg_covar=0.0)

    def exact_ll(init, trans, locs, scale) -> float:
        """Total log-likelihood of the data (forward algorithm) for these parameters."""
        with torch.no_grad():
            cov = scale**2 if diag else scale @ scale.transpose(-1, -2)
            hmm.set_params(initial_probs=init, transition_probs=trans, locs=locs,
                           covariances=cov)
            return float(hmm.log_prob(x).sum())

    def current_ll() -> float:
        store = pyro.get_param_store()
        names = ("initial_probs", "transition_probs", "locs", "scales" if diag else "scale_tril")
        return exact_ll(*(store[name].detach() for name in names))

    pyro.clear_param_store()
    elbo_cls = JitTraceEnum_ELBO if jit else TraceEnum_ELBO
    svi = SVI(model, guide, Adam({"lr": lr}), loss=elbo_cls(max_plate_nesting=1))
    threshold = target_ll - SVI_RTOL * abs(target_ll)
    start_ll = exact_ll(s["initial_probs"], s["transition_probs"], s["locs"], scale0)
    train_s, steps, best_ll, reached = 0.0, 0, start_ll, False
    trace = [(0, 0.0, start_ll)]
    try:
        while train_s < budget_s:
            t0 = time.perf_counter()
            for _ in range(eval_every):
                svi.step(x)
            train_s += time.perf_counter() - t0
            steps += eval_every
            ll = current_ll()
            trace.append((steps, train_s, ll))
            best_ll = max(best_ll, ll)
            if ll >= threshold:
                reached = True
                break
    finally:
        pyro.clear_param_store()
    return {
        "reached": reached,
        "train_s": train_s,
        "steps": steps,
        "step_ms": 1e3 * train_s / max(steps, 1),
        "start_ll": start_ll,
        "best_ll": best_ll,
        "target_ll": target_ll,
        "threshold_ll": threshold,
        "budget_s": budget_s,
        "lr": lr,
        "jit": jit,
        "trace": trace,
    }


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def format_table(rows: list[RunResult], ref: RunResult, ref_paths: np.ndarray,
                 paths: dict[str, np.ndarray]) -> str:
    hl_iter = min(r.per_iter_s for r in rows if r is not ref)
    hl_total = min(r.total_s for r in rows if r is not ref)
    lines = [
        "| implementation | time/iter (ms) | total (s) | Viterbi (s) | final log-lik "
        "| rel. diff vs ppgen | Viterbi paths = ppgen's | ppgen speed-up (iter / total) |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        rel = abs(r.loglik - ref.loglik) / abs(ref.loglik)
        if r is ref:
            same = "(reference)"
            speed = f"{hl_iter / r.per_iter_s:.2f}x / {hl_total / r.total_s:.2f}x"
        else:
            diff = int((paths[r.name] != ref_paths).sum())
            same = "yes" if diff == 0 else f"NO ({diff} of {ref_paths.size} steps differ)"
            speed = f"{r.per_iter_s / ref.per_iter_s:.2f}x / {r.total_s / ref.total_s:.2f}x"
        lines.append(
            f"| {r.name} | {r.per_iter_s * 1e3:.1f} | {r.total_s:.3f} | {r.viterbi_s:.3f} "
            f"| {r.loglik:.6f} | {rel:.2e} | {same} | {speed} |"
        )
    return "\n".join(lines)


def sweep_row(args: argparse.Namespace, n: int, t: int, cov: str) -> dict:
    """One row of the sweep, measured in this process (``--sweep-row``, a fresh process)."""
    k, d, iters = args.k, args.d, args.iters
    prob = make_problem(n, t, k, d, cov, args.seed)
    pp_runner = PpgenRunner(prob, iters)
    # Peak memory first, from one untimed fit whose rise above the resident size before it is
    # ppgen's alone (after a 2-iteration fit on a 200-frame prefix loads the kernels, and the
    # free heap is handed back to the kernel, release_free_memory); the
    # timed fits run without the meter (its 1 kHz sampling thread would slow ppgen alone).
    short = PpgenRunner(make_problem(n, min(t, 200), k, d, cov, args.seed), 2)
    short.fit(2)
    release_free_memory()
    pp_runner.measure_memory = True
    pp_runner.fit(iters)
    pp_runner.measure_memory = False
    runners: list[Runner] = [HmmlearnRunner(prob, iters, impl) for impl in ("scaling", "log")]
    runners.append(pp_runner)
    if args.unfused:
        runners.append(UnfusedPpgenRunner(prob, iters))
    outside = time_interleaved(runners, args.repeats)
    res = [runner.result() for runner in runners]
    scaling, log, pp = res[:3]
    faster = min(scaling.per_iter_s, log.per_iter_s)
    rel = max(abs(r.loglik - pp.loglik) / abs(pp.loglik) for r in (scaling, log, *res[3:]))
    same = all(np.array_equal(r.paths, pp_runner.paths) for r in runners[:2])
    return {"n": n, "t": t, "covariance": cov,
            "hmmlearn_scaling_ms": scaling.per_iter_s * 1e3,
            "hmmlearn_log_ms": log.per_iter_s * 1e3,
            "ppgen_ms": pp.per_iter_s * 1e3, "speedup": faster / pp.per_iter_s,
            "ppgen_peak_mb": pp_runner.peak_mb, "max_rel_loglik_diff": rel,
            "viterbi_identical": bool(same), "outside_cpu_fraction": outside,
            "notes": any(r.notes for r in res),
            **({"ppgen_unfused_ms": res[3].per_iter_s * 1e3} if args.unfused else {})}


def run_sweep(args: argparse.Namespace) -> tuple[bool, dict]:
    """Time per EM iteration over sequence lengths, ppgen against both hmmlearn variants,
    each shape in a fresh process of this script (``--sweep-row``)."""
    shapes = SWEEP_QUICK_SHAPES if args.quick else SWEEP_SHAPES
    k, d, iters = args.k, args.d, args.iters
    print(f"## sweep over sequence length: K={k}, D={d}, {iters} EM iterations, float64, "
          f"best of {args.repeats}; each shape in a fresh process, where every implementation "
          "gets one untimed warm-up fit, then the repeats interleaved (order rotated each "
          "round), so the ratios hold under outside load and no shape inherits another's "
          "allocator or cache state")
    print()
    extra = " ppgen unfused (ms/iter) | fused speed-up over unfused |" if args.unfused else ""
    print("| N x T | covariance | hmmlearn scaling (ms/iter) | hmmlearn log (ms/iter) "
          "| ppgen (ms/iter) | ppgen speed-up vs faster | ppgen peak memory (MB) "
          "| max rel. log-lik diff | Viterbi = ppgen's | outside load |" + extra)
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|" + ("---:|---:|" if extra else ""))
    ok, rows_out = True, []
    passed = ["--k", str(k), "--d", str(d), "--iters", str(iters), "--repeats",
              str(args.repeats), "--seed", str(args.seed), "--threads", str(args.threads),
              "--malloc", args.malloc, *(["--unfused"] if args.unfused else [])]
    for n, t in shapes:
        for cov in args.covariances:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--sweep-row",
                                   f"{n},{t},{cov}", *passed],
                                  capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_ROW_TAG)]
            if proc.returncode != 0 or len(lines) != 1:
                raise RuntimeError(f"the sweep's process for N={n}, T={t}, {cov} failed "
                                   f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                                   f"{proc.stderr[-4000:]}")
            row = json.loads(lines[0][len(_ROW_TAG):])
            rel, same, speed = row["max_rel_loglik_diff"], row["viterbi_identical"], row["speedup"]
            ok = ok and rel <= LL_RTOL_TARGET and same
            outside = row["outside_cpu_fraction"]
            load_txt = "n/a" if outside is None else f"{100 * outside:.0f}%"
            if row.pop("notes"):
                load_txt += " (*)"
            unf = (f" {row['ppgen_unfused_ms']:.2f} | "
                   f"{row['ppgen_unfused_ms'] / row['ppgen_ms']:.2f}x |" if args.unfused else "")
            print(f"| {n} x {t:,} | {cov} | {row['hmmlearn_scaling_ms']:.2f} "
                  f"| {row['hmmlearn_log_ms']:.2f} | {row['ppgen_ms']:.2f} | {speed:.2f}x "
                  f"| {row['ppgen_peak_mb']:.0f} | {rel:.1e} | {'yes' if same else 'NO'} "
                  f"| {load_txt} |" + unf, flush=True)
            rows_out.append(row)
    print()
    print(f"- time/iter = (t(fit with {iters} iterations) - t(fit with 1)) / {iters - 1}, "
          "best of the repeats; outside load = CPU time other processes used during the "
          "timed fits, as a share of all CPUs. (*): for at least one implementation the "
          "1-iteration fit took longer than the full fit (outside load), so its time/iter "
          "is the full fit's time / iterations.")
    return ok, {"sweep": rows_out}


_ROW_TAG = "SWEEP-ROW "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None,
                   help="number of sequences (default 1000; 200 with --quick)")
    p.add_argument("--t", type=int, default=None,
                   help="steps per sequence (default 100; 50 with --quick)")
    p.add_argument("--k", type=int, default=None, help="states (default 8; 4 with --quick)")
    p.add_argument("--d", type=int, default=None, help="features (default 4; 3 with --quick)")
    p.add_argument("--iters", type=int, default=20, help="EM iterations (default 20)")
    p.add_argument("--covariances", default="diag,full",
                   help="comma-separated covariance types (default diag,full)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None,
                   help="best of this many fits (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N=200, T=50, K=4, D=3, 1 repeat, 10 s SVI budget")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and BLAS threads (default 1: hmmlearn is single-threaded)")
    p.add_argument("--skip-svi", action="store_true", help="skip the Pyro SVI baseline")
    p.add_argument("--svi-budget", type=float, default=None,
                   help="training seconds for the Pyro SVI baseline, per covariance type "
                        "(default 120; 10 with --quick)")
    p.add_argument("--svi-lr", type=float, default=0.1,
                   help="Adam learning rate for the SVI baseline (default 0.1: fewest steps to "
                        "the target among 0.05, 0.1, 0.2, 0.4 at the default sizes; 0.2 and "
                        "0.4 leave full covariance in a worse local optimum)")
    p.add_argument("--svi-eval-every", type=int, default=5,
                   help="SVI steps between exact log-likelihood checks (default 5)")
    p.add_argument("--svi-jit", action="store_true",
                   help="use JitTraceEnum_ELBO instead of TraceEnum_ELBO")
    p.add_argument("--sweep", action="store_true",
                   help="time one sequence of T=1,000, 10,000, 100,000 and 10 of 10,000 "
                        "(K=8, D=4; --quick: T <= 2,000) instead of the N x T run; "
                        "5 iterations, best of 2 unless --iters / --repeats say otherwise")
    p.add_argument("--unfused", action="store_true",
                   help="--sweep: also time ppgen with its fused Gaussian E-step switched off "
                        "(the path before it), interleaved with the others")
    p.add_argument("--malloc", choices=("fixed", "default"), default="fixed",
                   help="glibc malloc thresholds: 'fixed' (default; the same allocator "
                        "behaviour whatever ran before, see fix_allocator) or 'default' "
                        "(glibc's adaptive thresholds, which make timings depend on history)")
    p.add_argument("--sweep-row", metavar="N,T,COV", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    defaults = {"n": (1000, 200), "t": (100, 50), "k": (8, 4), "d": (4, 3),
                "repeats": (3, 1), "svi_budget": (120.0, 10.0)}
    if args.sweep:
        defaults.update(k=(8, 4), d=(4, 3), repeats=(2, 1))
        if args.iters == p.get_default("iters"):
            args.iters = 5
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.covariances = [c.strip() for c in args.covariances.split(",") if c.strip()]
    bad = set(args.covariances) - {"diag", "full"}
    if bad or not args.covariances:
        p.error(f"--covariances: expected 'diag' and/or 'full', got {sorted(bad)}")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    allocator = fix_allocator() if args.malloc == "fixed" else "glibc's default (--malloc default)"
    try:
        import hmmlearn.hmm  # noqa: F401  (load every BLAS before limiting the pools)
    except ImportError:
        print("hmmlearn is not installed; it is the peer of this benchmark: "
              ".venv/bin/python -m pip install 'hmmlearn==0.3.3' (make bench does this).",
              file=sys.stderr)
        return 2
    import pyro
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(args.threads)
    _limits = threadpool_limits(args.threads)  # noqa: F841  (kept for the whole run)
    if args.sweep_row:  # one row of --sweep, in the fresh process run_sweep started
        n_, t_, cov_ = args.sweep_row.split(",")
        print(_ROW_TAG + json.dumps(sweep_row(args, int(n_), int(t_), cov_)), flush=True)
        return 0
    n, t, k, d, iters = args.n, args.t, args.k, args.d, args.iters

    import hmmlearn

    blas = ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()
                     if i["user_api"] == "blas")
    shape = "sweep over sequence length" if args.sweep else f"N={n:,} sequences x T={t} steps"
    print(f"# HMM EM benchmark: {shape}, K={k} states, D={d} features, "
          f"Gaussian emissions ({', '.join(args.covariances)} covariance), float64, "
          f"{iters} EM iterations")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro "
          f"{pyro.__version__}, numpy {np.__version__} (BLAS {blas}), hmmlearn "
          f"{hmmlearn.__version__}; best of {args.repeats}")
    print(f"threads: torch {torch.get_num_threads()}, BLAS {args.threads} "
          f"(--threads {args.threads}; hmmlearn's forward-backward is single-threaded)")
    print(f"allocator: {allocator}")
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before start: {load1:.2f} on {os.cpu_count()} CPUs")
    if load1 > 0.5:
        print("WARNING: the machine is busy; timings will be noisy.")
    if args.sweep:
        print()
        ok, report = run_sweep(args)
        print(f"- load average (1 min) after the sweep: {os.getloadavg()[0]:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": {k_: v for k_, v in vars(args).items() if k_ != "json"},
                           **report}, f, indent=2)
        return 0 if ok else 1

    report: dict = {"config": {k_: v for k_, v in vars(args).items() if k_ != "json"},
                    "torch_threads": torch.get_num_threads(), "runs": {}}
    ok = True
    for cov in args.covariances:
        prob = make_problem(n, t, k, d, cov, args.seed)
        runners: list[Runner] = [HmmlearnRunner(prob, iters, impl) for impl in ("log", "scaling")]
        runners.append(PpgenRunner(prob, iters))
        # a warm-up fit each, then the repeats interleaved (order rotated each round), so
        # that a burst of outside load hits every implementation
        outside = time_interleaved(runners, args.repeats)
        rows = [runner.result() for runner in runners]
        paths = {r.name: runner.paths for r, runner in zip(rows, runners)}
        pp, hl = rows[-1], rows[:-1]
        ref_paths = paths[pp.name]

        print()
        print(f"## covariance={cov!r}: log-likelihood under the true parameters "
              f"{prob.truth_ll:.6f}")
        print()
        print(format_table(rows, pp, ref_paths, paths))
        print()
        if iters > 1:
            print(f"- time/iter = (t(fit with {iters} iterations) - t(fit with 1)) / {iters - 1}, "
                  f"best of {args.repeats} each: the marginal cost of an EM iteration; total = "
                  f"the whole fit with its fixed costs (input checks, set-up; ppgen also runs "
                  f"a final E-step). Viterbi = one decoding of all {n:,} sequences.")
        if outside is not None:
            ncpu = os.cpu_count() or 1
            ours = min(args.threads, ncpu) / ncpu
            flag = " -- WARNING: timings are not trustworthy" if outside + ours > 1.05 else ""
            print(f"- other processes used {100 * outside:.0f}% of the machine's {ncpu} CPUs "
                  f"during the timed fits{flag}.")
        for r in rows:
            for note in r.notes:
                print(f"- {note}")
        fastest_iter = min(hl, key=lambda r: r.per_iter_s)
        fastest_total = min(hl, key=lambda r: r.total_s)
        rel = max(abs(r.loglik - pp.loglik) / abs(pp.loglik) for r in hl)
        same = all(np.array_equal(paths[r.name], ref_paths) for r in hl)
        ok_ll = rel <= LL_RTOL_TARGET
        ok = ok and ok_ll and same
        print(f"- speed-up of ppgen vs the faster hmmlearn: "
              f"{fastest_iter.per_iter_s / pp.per_iter_s:.2f}x per iteration (vs "
              f"{fastest_iter.name}), {fastest_total.total_s / pp.total_s:.2f}x on whole fits "
              f"(vs {fastest_total.name})")
        print(f"- agreement: max rel. log-lik diff {rel:.2e} (<= {LL_RTOL_TARGET:g} "
              f"[{'PASS' if ok_ll else 'FAIL'}]); Viterbi paths identical: "
              f"{'yes [PASS]' if same else 'no [FAIL]'}")

        svi = None
        if not args.skip_svi:
            svi = run_pyro_svi(prob, pp.loglik, args.svi_budget, args.svi_lr,
                               args.svi_eval_every, args.svi_jit)
            elbo = "JitTraceEnum_ELBO" if svi["jit"] else "TraceEnum_ELBO"
            head = (f"- plain Pyro SVI ({elbo}, pyro.markov, Adam lr={svi['lr']:g}, full batch, "
                    f"same start; log-lik {svi['start_ll']:.2f} at the start), target: within "
                    f"{SVI_RTOL:.1%} of EM's {svi['target_ll']:.2f} (>= "
                    f"{svi['threshold_ll']:.2f}): ")
            if svi["reached"]:
                print(head + f"reached in {svi['train_s']:.1f} s ({svi['steps']} steps, "
                      f"{svi['step_ms']:.0f} ms/step), {svi['train_s'] / pp.total_s:.0f}x "
                      f"ppgen's whole EM fit; log-lik {svi['best_ll']:.2f}")
            else:
                print(head + f"not reached in budget ({svi['train_s']:.1f} s, "
                      f"{svi['steps']} steps, {svi['step_ms']:.0f} ms/step); best log-lik "
                      f"{svi['best_ll']:.2f}")

        report["runs"][cov] = {
            "truth_loglik": prob.truth_ll,
            "results": [asdict(r) for r in rows],
            "viterbi_identical": {r.name: bool(np.array_equal(paths[r.name], ref_paths))
                                  for r in hl},
            "max_rel_loglik_diff": rel,
            "speedup_per_iter": fastest_iter.per_iter_s / pp.per_iter_s,
            "speedup_total": fastest_total.total_s / pp.total_s,
            "outside_cpu_fraction": outside,
            "pyro_svi": svi,
        }

    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
