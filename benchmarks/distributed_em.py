"""Benchmark: Gaussian-mixture EM in one process against the same fit across processes.

Run the comparison (it launches the runs itself, each in a fresh interpreter)::

    .venv/bin/python benchmarks/distributed_em.py                # N=2,000,000 x D=4, K=8 full
    .venv/bin/python benchmarks/distributed_em.py --quick        # N=100,000, for the tests

or one run by hand, under torchrun (every rank passes the whole data set; ppgen's EM takes
each rank's block of rows and sums the E-step statistics over the ranks)::

    .venv/bin/torchrun --standalone --nproc-per-node 2 benchmarks/distributed_em.py --worker

Rows: one process on one intra-op thread, one process on two, and ``torchrun`` with two
processes of one thread each (gloo). Each run fits ``GaussianMixture(K, covariance="full")``
in float64 for the same ``--iters`` iterations from the same start (``init=`` the true
parameters plus noise, ``tol=0``) and reports the time per iteration (the marginal cost:
``(t(iters) - t(1)) / (iters - 1)``, each the best of ``--repeats``) and the final
log-likelihood, whose relative difference to the single-process fit the table shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def make_data(n: int, d: int, k: int, seed: int = 0):
    g = np.random.default_rng(seed)
    centres = g.normal(scale=4.0, size=(k, d))
    x = centres[g.integers(0, k, n)] + g.normal(size=(n, d))
    init = {"weights": np.full(k, 1.0 / k), "locs": centres + g.normal(scale=0.5, size=(k, d)),
            "covariances": np.tile(np.eye(d), (k, 1, 1))}
    return torch.from_numpy(x), {name: torch.from_numpy(v) for name, v in init.items()}


def worker(args) -> dict:
    """One fit (per rank under torchrun); rank 0 returns the timings."""
    import warnings

    import ppgen
    from ppgen._distributed import world

    rank, size = world()
    x, init = make_data(args.n, args.d, args.k)

    def once(iters: int) -> tuple[float, float]:
        gmm = ppgen.GaussianMixture(args.k, covariance="full")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            fit = ppgen.fit(gmm, x, method="em", init=init, num_steps=iters, tol=0.0, seed=0,
                            progress=False)
        return time.perf_counter() - t0, float(fit.history["objective"][-1])

    once(1)  # warm-up
    full = min(once(args.iters) for _ in range(args.repeats))
    one = min(once(1)[0] for _ in range(args.repeats))
    return {"processes": size, "threads": torch.get_num_threads(),
            "per_iter_ms": (full[0] - one) / (args.iters - 1) * 1e3, "log_lik": full[1],
            "rank": rank}


def launch(cmd: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", dest="n", type=int, default=2_000_000)
    p.add_argument("--features", dest="d", type=int, default=4)
    p.add_argument("--components", dest="k", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="N=100,000, 3 iterations, 1 repeat")
    p.add_argument("--worker", action="store_true", help="one run (under torchrun or not)")
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args()
    if args.quick:
        args.n, args.iters, args.repeats = 100_000, 3, 1
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        result = worker(args)
        if result["rank"] == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--rows", str(args.n),
          "--features", str(args.d), "--components", str(args.k), "--iters", str(args.iters),
          "--repeats", str(args.repeats)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", *me[1:]]
    rows = [launch(me, 1), launch(me, 2), launch(torchrun, 1)]
    base = rows[0]
    print(f"GaussianMixture EM, N={args.n:,} x D={args.d}, K={args.k} full, float64, "
          f"{args.iters} iterations; load average {os.getloadavg()[0]:.2f}\n")
    print("| run | processes x threads | ms / iteration | speed-up | rel. log-lik diff |")
    print("|---|---|---:|---:|---:|")
    names = ["one process", "one process", "torchrun (gloo)"]
    for name, r in zip(names, rows):
        diff = abs(r["log_lik"] - base["log_lik"]) / abs(base["log_lik"])
        print(f"| {name} | {r['processes']} x {r['threads']} | {r['per_iter_ms']:.1f} | "
              f"{base['per_iter_ms'] / r['per_iter_ms']:.2f}x | {diff:.1e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
