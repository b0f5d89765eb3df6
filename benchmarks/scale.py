"""Benchmark: Gaussian-mixture EM on data bigger than memory, in one process and in two.

Run (it writes the data files and launches every run in a fresh interpreter)::

    .venv/bin/python benchmarks/scale.py                 # 1M, 3M, 10M rows x 16, float32
    .venv/bin/python benchmarks/scale.py --quick         # 20,000 and 60,000 rows (the tests)

or one run by hand, under torchrun (every rank maps the whole file; ppgen's EM takes each
rank's block of rows and sums the E-step statistics over the ranks)::

    .venv/bin/torchrun --standalone --nproc-per-node 2 benchmarks/scale.py --worker FILE.npy

The data: ``--rows`` x ``--features`` float32 rows from a mixture of ``--components``
Gaussians, written block by block to ``.npy`` files in ``--dir`` (a temporary folder by
default) and opened with ``np.load(path, mmap_mode="r")``. Each run fits
``GaussianMixture(K, covariance="full")`` for ``--iters`` iterations (``tol=0``) from the
same start (``init=`` the true parameters plus noise, so the k-means++ start is not timed)
and reports the time per iteration (the marginal cost, ``(t(iters) - t(1)) / (iters - 1)``,
best of ``--repeats``), the peak resident memory of the process (``VmHWM``, which counts the
mapped file's pages that were read; and the anonymous part, sampled every millisecond) and
the final log-likelihood, whose relative difference to the one-process fit the table shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def truth(d: int, k: int, seed: int = 0):
    g = np.random.default_rng(seed)
    centres = g.normal(scale=3.0, size=(k, d))
    init = {"weights": np.full(k, 1.0 / k),
            "locs": (centres + g.normal(scale=0.5, size=(k, d))).astype(np.float32),
            "covariances": np.tile(np.eye(d, dtype=np.float32), (k, 1, 1))}
    return centres, init


def write_data(path: Path, n: int, d: int, k: int, seed: int = 0) -> None:
    centres, _ = truth(d, k)
    g = np.random.default_rng(seed + 1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for i in range(0, n, 1_000_000):
        m = min(1_000_000, n - i)
        out[i:i + m] = centres[g.integers(0, k, m)] + g.normal(size=(m, d))
    out.flush()
    del out


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024


def worker(args) -> dict:
    """The fits of one run (one rank under torchrun); rank 0 returns the measurements."""
    import warnings

    import ppgen
    from ppgen._distributed import world

    rank, size = world()
    x = np.load(args.worker, mmap_mode="r")
    _, start = truth(x.shape[1], args.components)
    init = {name: torch.from_numpy(v) for name, v in start.items()}
    peak, done = [0], [False]

    def sample() -> None:
        while not done[0]:
            peak[0] = max(peak[0], _status("RssAnon"))
            time.sleep(0.001)

    def once(iters: int) -> tuple[float, float]:
        gmm = ppgen.GaussianMixture(args.components, covariance="full")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            fit = ppgen.fit(gmm, x, method="em", init=init, num_steps=iters, tol=0.0,
                            seed=0, progress=False)
        return time.perf_counter() - t0, float(fit.history["objective"][-1])

    anon0 = _status("RssAnon")
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    full = min(once(args.iters) for _ in range(args.repeats))
    one = min(once(1)[0] for _ in range(args.repeats))
    done[0] = True
    thread.join()
    if size > 1:  # every rank done before any exits
        torch.distributed.barrier()
    return {"rows": int(x.shape[0]), "file_mb": x.nbytes / 2**20, "processes": size,
            "threads": torch.get_num_threads(), "rank": rank,
            "per_iter_s": (full[0] - one) / (args.iters - 1), "log_lik": full[1],
            "peak_rss_mb": _status("VmHWM") / 2**20,
            "peak_anon_added_mb": (peak[0] - anon0) / 2**20}


def launch(cmd: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rows", type=str, default=None,
                   help="comma-separated sizes (default 1000000,3000000,10000000)")
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--components", type=int, default=8)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--dir", type=str, default=None, help="where the data files go")
    p.add_argument("--quick", action="store_true", help="20,000 and 60,000 rows, 3 iterations")
    p.add_argument("--worker", type=str, default=None, help="one run on this .npy file")
    p.add_argument("--json", type=str, default=None)
    args = p.parse_args()
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        result = worker(args)
        if result["rank"] == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return
    if args.quick:
        args.rows, args.iters = args.rows or "20000,60000", 3
    args.rows = args.rows or "1000000,3000000,10000000"
    sizes = [int(r) for r in args.rows.split(",")]
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    rows = []
    try:
        for n in sizes:
            path = Path(tmp.name) / f"x{n}.npy"
            write_data(path, n, args.features, args.components)
            me = [sys.executable, str(Path(__file__).resolve()), "--worker", str(path),
                  "--components", str(args.components), "--iters", str(args.iters),
                  "--repeats", str(args.repeats)]
            rows.append(launch(me, args.threads))
            if n == sizes[-1]:  # the largest also on two processes (gloo)
                rows.append(launch([sys.executable, "-m", "torch.distributed.run",
                                    "--standalone", "--nproc-per-node", "2", *me[1:]],
                                   args.threads))
            path.unlink()
    finally:
        tmp.cleanup()
    print(f"GaussianMixture EM (K={args.components}, full) on memory-mapped float32 data, "
          f"{args.features} features, {args.iters} iterations, {args.threads} thread(s) per "
          f"process; load average {os.getloadavg()[0]:.2f}\n")
    print("| rows | file (MB) | processes | s / iteration | us / row / iteration | "
          "peak RSS (MB) | peak anonymous added (MB) | rel. log-lik diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    single = {r["rows"]: r for r in rows if r["processes"] == 1}
    for r in rows:
        base = single[r["rows"]]["log_lik"]
        diff = abs(r["log_lik"] - base) / abs(base)
        print(f"| {r['rows']:,} | {r['file_mb']:.0f} | {r['processes']} | "
              f"{r['per_iter_s']:.3f} | {r['per_iter_s'] / r['rows'] * 1e6:.3f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_anon_added_mb']:.0f} | {diff:.1e} |")
    last = rows[-2:]
    print(f"\ntwo processes / one at {last[0]['rows']:,} rows: "
          f"{last[0]['per_iter_s'] / last[1]['per_iter_s']:.2f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
