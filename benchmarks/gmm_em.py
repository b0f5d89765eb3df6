"""Benchmark: ppgen's EM for a full-covariance Gaussian mixture against scikit-learn.

Run with ``make bench`` or directly::

    .venv/bin/python benchmarks/gmm_em.py            # full run (N=200,000, D=16, K=16)
    .venv/bin/python benchmarks/gmm_em.py --quick    # smoke run (N=20,000, 1 repeat)

Both implementations run in this one process on the same synthetic float64 data
(``numpy.random.default_rng(seed)``) for the same number of EM iterations (20)
from the same start parameters, with ``reg_covar=1e-6`` and no convergence
tolerance.  The script prints a markdown table with time per iteration, total
time, final mean log-likelihood and the ratios against scikit-learn, followed by

* the time per iteration that the iteration's FLOP count allows at this
  machine's measured float64 matmul rate (the "FLOP floor"), and
* how long plain Pyro SVI (``TraceEnum_ELBO``, Adam, full batch) needs to reach
  the same mean log-likelihood, started from the same parameters.

Targets from the issue: ppgen at least 3x faster than scikit-learn, with the
final log-likelihood equal to 1e-6 relative.

Nothing is written to disk unless ``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

SPEEDUP_TARGET = 3.0
LL_RTOL_TARGET = 1e-6
SVI_RTOL = 1e-3


# --------------------------------------------------------------------------- #
# Problem set-up
# --------------------------------------------------------------------------- #


@dataclass
class Problem:
    x: np.ndarray  # (N, D) float64, C-contiguous
    weights: np.ndarray  # (K,)   start weights
    means: np.ndarray  # (K, D) start means
    covariances: np.ndarray  # (K, D, D) start covariances


def make_data(rng: np.random.Generator, n: int, d: int, k: int) -> np.ndarray:
    """Draw ``n`` points from a random ``k``-component full-covariance mixture."""
    true_weights = rng.dirichlet(np.full(k, 5.0))
    true_means = rng.normal(scale=2.5, size=(k, d))
    a = rng.normal(size=(k, d, d)) / math.sqrt(d)
    true_covs = a @ a.transpose(0, 2, 1) + 0.25 * np.eye(d)
    chol = np.linalg.cholesky(true_covs)
    z = rng.choice(k, size=n, p=true_weights)
    eps = rng.normal(size=(n, d))
    x = true_means[z] + np.einsum("nij,nj->ni", chol[z], eps)
    return np.ascontiguousarray(x, dtype=np.float64)


def start_params(
    rng: np.random.Generator, x: np.ndarray, k: int, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cheap, KMeans-free start shared by every implementation.

    Pick ``k`` distinct data points as centres, hard-assign every point to its
    nearest centre and compute the M-step estimates (weights, means,
    covariances + ``reg_covar * I``) of those responsibilities once, with numpy.
    """
    n, d = x.shape
    centres = x[rng.choice(n, size=k, replace=False)]
    sq = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)
    labels = sq.argmin(1)
    resp = np.zeros((n, k))
    resp[np.arange(n), labels] = 1.0
    nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
    means = (resp.T @ x) / nk[:, None]
    covs = np.empty((k, d, d))
    for j in range(k):
        diff = x - means[j]
        covs[j] = (resp[:, j] * diff.T) @ diff / nk[j]
        covs[j].flat[:: d + 1] += reg_covar
    return nk / n, means, covs


def make_problem(n: int, d: int, k: int, reg_covar: float, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    x = make_data(rng, n, d, k)
    w, m, c = start_params(rng, x, k, reg_covar)
    return Problem(x=x, weights=w, means=m, covariances=c)


def mixture_mean_loglik(
    x: torch.Tensor, weights: torch.Tensor, locs: torch.Tensor, scale_tril: torch.Tensor
) -> float:
    """Exact mean log-likelihood of a full-covariance mixture, computed with torch."""
    with torch.no_grad():
        comp = torch.distributions.MultivariateNormal(locs, scale_tril=scale_tril)
        lp = comp.log_prob(x.unsqueeze(-2)) + weights.log()
        return torch.logsumexp(lp, dim=-1).mean().item()


class OutsideLoad:
    """CPU time that other processes used while this one ran (Linux; else unknown).

    Busy CPU time from /proc/stat minus this process's own CPU time (all threads).
    A benchmark on a shared machine is only trustworthy when this stays near zero.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / hz  # all but idle and iowait
        own = sum(os.times()[:2])
        return time.perf_counter(), busy, own

    def fraction(self) -> float | None:
        """Share of all CPUs used by other processes since construction."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(other, 0.0) / (wall * (os.cpu_count() or 1)) if wall > 0 else None


# --------------------------------------------------------------------------- #
# Implementations
# --------------------------------------------------------------------------- #


@dataclass
class RunResult:
    name: str
    total_s: float  # best wall-clock time of one complete fit
    per_iter_s: float  # time per EM iteration used for the ratios
    mean_ll: float  # final mean log-likelihood on the data
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class Runner:
    """One implementation: ``fit(max_iter)`` runs a complete fit and returns its time.

    time/iter is the marginal cost of an EM iteration, measured the same way for
    every implementation: ``(t(iters) - t(1)) / (iters - 1)``, each time the best over
    the repeats.  That leaves out fixed per-fit work (scikit-learn runs an M-step on
    throw-away responsibilities during initialisation; both run a final E-step; input
    validation), which the "total" column still contains.
    """

    name = ""

    def __init__(self, prob: Problem, iters: int, reg_covar: float) -> None:
        self.prob, self.iters, self.reg_covar = prob, iters, reg_covar
        self.k = prob.weights.shape[0]
        self.best_total, self.best_one = math.inf, math.inf
        self.model = None

    def fit(self, max_iter: int) -> tuple[float, object]:
        raise NotImplementedError

    def mean_loglik(self, model) -> float:
        raise NotImplementedError

    def run_once(self) -> None:
        t, model = self.fit(self.iters)
        if t < self.best_total:
            self.best_total, self.model = t, model
        if self.iters > 1:
            self.best_one = min(self.best_one, self.fit(1)[0])

    def result(self) -> RunResult:
        if self.iters > 1:
            per_iter = max(self.best_total - self.best_one, 0.0) / (self.iters - 1)
        else:
            per_iter = self.best_total
        overhead = self.best_total - self.iters * per_iter
        return RunResult(
            name=self.name,
            total_s=self.best_total,
            per_iter_s=per_iter,
            mean_ll=self.mean_loglik(self.model),
            extra={"fixed_overhead_s": overhead, "one_iter_fit_s": self.best_one},
        )


class SklearnRunner(Runner):
    """scikit-learn GaussianMixture, no tolerance, started from the shared parameters."""

    def __init__(self, prob, iters, reg_covar, blas_threads: int | None = None) -> None:
        super().__init__(prob, iters, reg_covar)
        self.blas_threads = blas_threads
        self.precisions = np.linalg.inv(prob.covariances)
        self.name = "scikit-learn"
        if blas_threads is not None:
            self.name += f" ({blas_threads} BLAS thread(s))"

    def fit(self, max_iter: int):
        # max_iter=0 is not usable with precisions_init in scikit-learn 1.9
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture as SkGaussianMixture
        from threadpoolctl import threadpool_limits

        gm = SkGaussianMixture(
            n_components=self.k,
            covariance_type="full",
            reg_covar=self.reg_covar,
            tol=0.0,
            max_iter=max_iter,
            n_init=1,
            init_params="random_from_data",  # irrelevant: all three inits are given
            weights_init=self.prob.weights,
            means_init=self.prob.means,
            precisions_init=self.precisions,
            random_state=0,
        )
        with warnings.catch_warnings(), threadpool_limits(self.blas_threads, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            gm.fit(self.prob.x)
            elapsed = time.perf_counter() - t0
        return elapsed, gm

    def mean_loglik(self, model) -> float:
        return float(model.score(self.prob.x))


class PpgenRunner(Runner):
    """ppgen's EM: ``ppgen.fit(GaussianMixture(...), x, method="em", ...)``."""

    name = "ppgen (EM)"

    def __init__(self, prob, iters, reg_covar) -> None:
        import ppgen  # noqa: F401  (ImportError here means: ppgen not available)
        from ppgen import GaussianMixture  # noqa: F401

        super().__init__(prob, iters, reg_covar)
        self.x = torch.from_numpy(prob.x)
        self.init = {
            "weights": torch.from_numpy(prob.weights),
            "locs": torch.from_numpy(prob.means),
            "covariances": torch.from_numpy(prob.covariances),
        }
        self.fit_result = None

    def fit(self, max_iter: int):
        import ppgen
        from ppgen import GaussianMixture

        gmm = GaussianMixture(num_components=self.k, covariance="full", reg_covar=self.reg_covar)
        t0 = time.perf_counter()
        fit = ppgen.fit(
            gmm, self.x, method="em", init=self.init, num_steps=max_iter, tol=0.0, progress=False
        )
        elapsed = time.perf_counter() - t0
        return elapsed, (gmm, fit)

    def mean_loglik(self, model) -> float:
        gmm, _ = model
        with torch.no_grad():
            return float(gmm.log_prob(self.x).mean())

    def result(self) -> RunResult:
        res = super().result()
        _, fit = self.model
        objective = np.asarray(fit.history["objective"], dtype=np.float64)
        if len(objective) not in (self.iters, self.iters + 1):  # with/without the start value
            res.notes.append(
                f"ppgen history has {len(objective)} objective values for {self.iters} steps."
            )
        if len(objective):
            # the history holds total log-likelihoods; the last should match log_prob's mean
            hist_mean = objective[-1] / self.x.shape[0]
            if abs(hist_mean - res.mean_ll) > 1e-9 * abs(res.mean_ll):
                res.notes.append(
                    f"ppgen's last history objective / N = {hist_mean:.10f} differs from "
                    f"gmm.log_prob(x).mean() = {res.mean_ll:.10f}."
                )
        res.extra.update(
            fit_elapsed_s=float(fit.elapsed),
            objective_last=float(objective[-1]) if len(objective) else None,
            num_objective_values=len(objective),
        )
        return res


# --------------------------------------------------------------------------- #
# FLOP floor
# --------------------------------------------------------------------------- #


def em_iteration_flops(n: int, d: int, k: int) -> dict[str, float]:
    """FLOP count of one full-covariance EM iteration.

    Leading terms (the GEMMs):
      E-step: whiten X against each component's precision Cholesky, (X - mu_k) @ L_k:
              2 N D^2 K
      M-step: weighted scatter matrices sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T:
              2 N D^2 K  (a SYRK could halve this; counted as a GEMM)
    Lower-order terms, O(N K D): centring in both steps (2 N K D), squared norms
    of the whitened points (2 N K D), weighting the centred points (N K D), means
    r^T X (2 N K D); O(N K): log-sum-exp and normalisation (~5 N K, counting exp/log
    as one FLOP); O(K D^3): Cholesky factors and triangular inverses (negligible).
    """
    gemm = 4.0 * n * k * d * d
    lower = 7.0 * n * k * d + 5.0 * n * k + k * d**3
    return {"gemm": gemm, "lower_order": lower, "total": gemm + lower}


def _time_best(fn, repeats: int, min_time: float = 0.2) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        count, t0 = 0, time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / count)
    return best


def measure_matmul_rates(n: int, d: int, k: int, repeats: int = 3) -> dict[str, float]:
    """float64 GEMM rates (GFLOP/s) with torch for the shapes EM uses, plus 2048^2.

    The E-step shape is timed on one block of rows: over all N rows its (N, K*D)
    output is hundreds of MB and the product is bound by memory traffic, not FLOPs.
    """
    g = torch.Generator().manual_seed(0)
    dt = torch.float64
    rows = min(n, 16384)  # one row block, as a blocked E-step would use
    x = torch.randn(rows, d, generator=g, dtype=dt)
    w = torch.randn(d, k * d, generator=g, dtype=dt)
    xt = torch.randn(k, d, n, generator=g, dtype=dt)
    a = torch.randn(2048, 2048, generator=g, dtype=dt)
    b = torch.randn(2048, 2048, generator=g, dtype=dt)
    rates = {}
    t = _time_best(lambda: torch.mm(x, w), repeats)
    rates[f"E-step shape ({rows}x{d}) @ ({d}x{k * d})"] = 2.0 * rows * d * k * d / t / 1e9
    t = _time_best(lambda: torch.bmm(xt, xt.transpose(1, 2)), repeats)
    rates[f"M-step shape {k} x ({d}x{n}) @ ({n}x{d})"] = 2.0 * k * d * n * d / t / 1e9
    t = _time_best(lambda: torch.mm(a, b), repeats)
    rates["square 2048 @ 2048"] = 2.0 * 2048**3 / t / 1e9
    return rates


# --------------------------------------------------------------------------- #
# Plain Pyro SVI baseline
# --------------------------------------------------------------------------- #


def run_pyro_svi(
    prob: Problem, target_ll: float, budget_s: float, lr: float, eval_every: int
) -> dict:
    """Plain Pyro: enumerated GMM trained with TraceEnum_ELBO + Adam, full batch.

    Returns the wall-clock training time (evaluation excluded) until the exact
    mean log-likelihood, evaluated with torch every ``eval_every`` steps, is
    within ``SVI_RTOL`` relative of ``target_ll`` (or above it), or the budget
    runs out.
    """
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    from pyro.infer import SVI, TraceEnum_ELBO
    from pyro.optim import Adam

    x = torch.from_numpy(prob.x)
    n = x.shape[0]
    w0 = torch.from_numpy(prob.weights).clone()
    m0 = torch.from_numpy(prob.means).clone()
    l0 = torch.linalg.cholesky(torch.from_numpy(prob.covariances))

    def model(data):
        weights = pyro.param("weights", w0, constraint=constraints.simplex)
        locs = pyro.param("locs", m0)
        scale_tril = pyro.param("scale_tril", l0, constraint=constraints.lower_cholesky)
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.MultivariateNormal(locs[z], scale_tril=scale_tril[z]), obs=data)

    def guide(data):
        pass

    pyro.clear_param_store()
    svi = SVI(model, guide, Adam({"lr": lr}), loss=TraceEnum_ELBO(max_plate_nesting=1))
    threshold = target_ll - SVI_RTOL * abs(target_ll)

    def current_ll() -> float:
        store = pyro.get_param_store()
        return mixture_mean_loglik(
            x, store["weights"].detach(), store["locs"].detach(), store["scale_tril"].detach()
        )

    train_s, steps, best_ll, reached = 0.0, 0, -math.inf, False
    while train_s < budget_s:
        t0 = time.perf_counter()
        for _ in range(eval_every):
            svi.step(x)
        train_s += time.perf_counter() - t0
        steps += eval_every
        ll = current_ll()
        best_ll = max(best_ll, ll)
        if ll >= threshold:
            reached = True
            break
    pyro.clear_param_store()
    return {
        "reached": reached,
        "train_s": train_s,
        "steps": steps,
        "step_ms": 1e3 * train_s / max(steps, 1),
        "best_mean_ll": best_ll,
        "target_mean_ll": target_ll,
        "threshold_mean_ll": threshold,
        "budget_s": budget_s,
        "lr": lr,
        "n": n,
    }


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def format_table(rows: list[RunResult], ref: RunResult) -> str:
    lines = [
        "| implementation | time/iter (ms) | total (s) | final mean LL "
        "| rel. diff vs sklearn | speed-up vs sklearn |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel = abs(r.mean_ll - ref.mean_ll) / abs(ref.mean_ll)
        speedup = ref.per_iter_s / r.per_iter_s if r.per_iter_s > 0 else math.inf
        lines.append(
            f"| {r.name} | {r.per_iter_s * 1e3:.1f} | {r.total_s:.3f} | {r.mean_ll:.10f} "
            f"| {rel:.2e} | {speedup:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="number of data points (default 200000; 20000 with --quick)",
    )
    p.add_argument("--d", type=int, default=16, help="dimension (default 16)")
    p.add_argument("--k", type=int, default=16, help="number of components (default 16)")
    p.add_argument("--iters", type=int, default=20, help="EM iterations (default 20)")
    p.add_argument("--reg-covar", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="best of this many fits (default 3; 1 with --quick)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: N=20000, 1 repeat, 10 s SVI budget"
    )
    p.add_argument(
        "--svi-budget",
        type=float,
        default=None,
        help="seconds for the Pyro SVI baseline (default 120; 10 with --quick)",
    )
    p.add_argument(
        "--svi-lr", type=float, default=0.05, help="Adam learning rate for the SVI baseline"
    )
    p.add_argument(
        "--svi-eval-every",
        type=int,
        default=10,
        help="SVI steps between exact log-likelihood checks",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="set torch's and the BLAS/OpenMP pools' thread count (default: library defaults)",
    )
    p.add_argument(
        "--sklearn-blas-threads",
        type=int,
        default=None,
        help="limit numpy's BLAS threads for scikit-learn only (default: library default)",
    )
    p.add_argument("--skip-svi", action="store_true", help="skip the Pyro SVI baseline")
    p.add_argument(
        "--json", metavar="PATH", default=None, help="also write the results as JSON to PATH"
    )
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 20_000 if args.quick else 200_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.svi_budget is None:
        args.svi_budget = 10.0 if args.quick else 120.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        import scipy.linalg  # noqa: F401  (load every BLAS before limiting the pools)
        import sklearn.mixture  # noqa: F401
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        _limits = threadpool_limits(args.threads)  # noqa: F841  (kept for the whole run)
    n, d, k, iters = args.n, args.d, args.k, args.iters

    import sklearn
    from threadpoolctl import threadpool_info

    blas = ", ".join(
        f"{i['internal_api']}:{i['num_threads']}"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    )
    print(
        f"# GMM EM benchmark: N={n:,}, D={d}, K={k}, full covariance, float64, "
        f"{iters} EM iterations"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(threads={torch.get_num_threads()}), numpy {np.__version__} (BLAS {blas}), "
        f"scikit-learn {sklearn.__version__}; best of {args.repeats}"
    )
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before start: {load1:.2f} on {os.cpu_count()} CPUs")
    if load1 > 0.5:
        print("WARNING: the machine is busy; timings will be noisy.")
    print()

    prob = make_problem(n, d, k, args.reg_covar, args.seed)

    runners: list[Runner] = [SklearnRunner(prob, iters, args.reg_covar, args.sklearn_blas_threads)]
    ppgen_error = None
    try:
        runners.append(PpgenRunner(prob, iters, args.reg_covar))
    except ImportError as exc:  # ppgen not installed / not importable yet
        ppgen_error = f"{type(exc).__name__}: {exc}"
    # interleave the repeats, so that a burst of outside load hits every implementation
    load = OutsideLoad()
    for _ in range(args.repeats):
        for runner in runners:
            runner.run_once()
    outside = load.fraction()
    rows = [runner.result() for runner in runners]
    sk = rows[0]
    pp = rows[1] if len(rows) > 1 else None

    print(format_table(rows, sk))
    print()
    if iters > 1:
        print(
            f"- time/iter = (t(fit with {iters} iterations) - t(fit with 1)) / {iters - 1}, "
            f"best of {args.repeats} each: the marginal cost of an EM iteration; "
            "total = the whole fit with its fixed costs (validation, set-up, final E-step)."
        )
    if outside is not None:
        ncpu = os.cpu_count() or 1
        ours = min(args.threads or ncpu, ncpu) / ncpu  # share of the CPUs this run uses
        flag = " -- WARNING: timings are not trustworthy" if outside + ours > 1.05 else ""
        print(
            f"- other processes used {100 * outside:.0f}% of the machine's "
            f"{os.cpu_count()} CPUs during the timed fits{flag}."
        )
    for r in rows:
        for note in r.notes:
            print(f"- {note}")
    if pp is None:
        print(f"- ppgen unavailable ({ppgen_error}); only scikit-learn was run.")
    else:
        rel = abs(pp.mean_ll - sk.mean_ll) / abs(sk.mean_ll)
        speedup = sk.per_iter_s / pp.per_iter_s
        total_speedup = sk.total_s / pp.total_s
        ok_speed = min(speedup, total_speedup) >= SPEEDUP_TARGET
        ok_ll = rel <= LL_RTOL_TARGET
        print(
            f"- target: speed-up >= {SPEEDUP_TARGET:g}x -> {speedup:.2f}x per iteration, "
            f"{total_speedup:.2f}x on whole fits [{'PASS' if ok_speed else 'FAIL'}]; "
            f"rel. LL diff <= {LL_RTOL_TARGET:g} -> {rel:.2e} [{'PASS' if ok_ll else 'FAIL'}]"
        )
        print(
            f"- ppgen fit.elapsed (best {iters}-iteration fit) = {pp.extra['fit_elapsed_s']:.3f} s"
        )

    # FLOP floor
    flops = em_iteration_flops(n, d, k)
    rates = measure_matmul_rates(n, d, k)
    peak_name, peak = max(rates.items(), key=lambda kv: kv[1])
    floor_s = flops["total"] / (peak * 1e9)
    print()
    print(
        f"FLOP floor: one EM iteration = {flops['total'] / 1e9:.3f} GFLOP "
        f"({flops['gemm'] / 1e9:.3f} GFLOP in the E- and M-step GEMMs, 4*N*D^2*K, "
        f"+ {flops['lower_order'] / 1e9:.3f} GFLOP lower-order); "
        "measured float64 matmul rates (torch): "
        + ", ".join(f"{name} {r:.1f} GFLOP/s" for name, r in rates.items())
    )
    floor_line = f"FLOP floor at {peak:.1f} GFLOP/s ({peak_name}): {floor_s * 1e3:.1f} ms/iter"
    if pp is not None:
        floor_line += (
            f"; ppgen {pp.per_iter_s * 1e3:.1f} ms/iter = {pp.per_iter_s / floor_s:.2f}x the floor"
        )
    sk_ms, sk_ratio = sk.per_iter_s * 1e3, sk.per_iter_s / floor_s
    floor_line += f"; scikit-learn {sk_ms:.1f} ms/iter = {sk_ratio:.2f}x the floor"
    print(floor_line)

    # Plain Pyro SVI
    svi = None
    if not args.skip_svi:
        target = pp.mean_ll if pp is not None else sk.mean_ll
        source = "ppgen EM" if pp is not None else "scikit-learn EM"
        svi = run_pyro_svi(prob, target, args.svi_budget, args.svi_lr, args.svi_eval_every)
        head = (
            f"Plain Pyro SVI (TraceEnum_ELBO, Adam lr={svi['lr']:g}, full batch, same start), "
            f"target mean LL {svi['target_mean_ll']:.6f} ({source}) within {SVI_RTOL:g} relative: "
        )
        if svi["reached"]:
            em_total = pp.total_s if pp is not None else sk.total_s
            print(
                head + f"reached in {svi['train_s']:.1f} s "
                f"({svi['steps']} steps, {svi['step_ms']:.0f} ms/step), "
                f"{svi['train_s'] / em_total:.0f}x the {source} fit time; "
                f"mean LL {svi['best_mean_ll']:.6f}"
            )
        else:
            print(
                head + f"not reached in {svi['train_s']:.1f} s ({svi['steps']} steps, "
                f"{svi['step_ms']:.0f} ms/step; best mean LL {svi['best_mean_ll']:.6f}, "
                f"needed >= {svi['threshold_mean_ll']:.6f})"
            )

    if args.json:
        out = {
            "config": {k_: v for k_, v in vars(args).items() if k_ != "json"},
            "torch_threads": torch.get_num_threads(),
            "results": [asdict(r) for r in rows],
            "ppgen_error": ppgen_error,
            "outside_cpu_fraction": outside,
            "flops_per_iter": flops,
            "matmul_gflops": rates,
            "flop_floor_s_per_iter": floor_s,
            "pyro_svi": svi,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)

    return 0 if pp is not None else 1


if __name__ == "__main__":
    sys.exit(main())
