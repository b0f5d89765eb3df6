"""Benchmark: ppgen's automatic intra-op thread choice (``ppgen._threads``) under outside load.

Run with ``make bench`` or directly::

    .venv/bin/python benchmarks/threads.py            # full run (about two minutes)
    .venv/bin/python benchmarks/threads.py --quick    # smoke run (seconds)

The problems: every family and entry point, at the main shapes of the other benchmarks.

* GMM EM: ``benchmarks/gmm_em.py``'s N=200,000 x D=16, K=16 full covariance, float64, and
  ``log_prob`` / ``sample`` of the fitted mixture on the same rows;
* HMM EM, padded: ``benchmarks/hmm_em.py``'s 1,000 sequences x 100 steps, D=4, K=8, diagonal
  covariance, float64, given as one (N, T, D) tensor; HMM EM, list: the same sequences as a
  list of 1,000 (T, D) tensors;
* LDA EM: 2,000 synthetic documents over 500 words, 10 topics (``make_corpus``);
* the training loop: a VAE (64-128-8, Bernoulli) by SVI, an RBM (64 hidden, PCD-1) by
  contrastive divergence, and a GAN (latent 8, 128-128) by its adversarial losses, each on
  the 8x8 digits (1,797 images, minibatches of 100); and the VAE's importance-sampled
  ``log_prob`` (500 samples per image);
* MCMC: Pyro's NUTS (through ``ppgen.fit``, 2 chains) on the Old Faithful mixture.

EM problems start from the start values those benchmarks use (``tol=0``, ``--iters`` EM
iterations); training problems run ``--iters`` x 10 steps; best of ``--repeats``. Each
runs under three settings, in this one process:

(a) one intra-op thread (``torch.set_num_threads(1)``, an explicit choice ppgen keeps) on the
    machine as it is, no load added: the reference;
(b) default settings: torch's own thread count, which ppgen sees as no choice, so its
    automatic rule picks the threads; meanwhile a busy-loop subprocess keeps one core busy;
(c) for reference, two threads forced (``ppgen._threads.user_choice = True``) under the same
    load: what ppgen did before the rule;
(d) only with ``--quiet-two-threads``: two threads forced, no load added (what the rule gives
    up on a quiet machine when it picks one thread).

It prints a markdown table with the times and the ratios b/a (target <= 1.5x) and c/a, and
the share of the CPUs other processes used during each setting (the busy loop counts as
other: about 1/num_cpus under load). The settings are interleaved problem by problem.
Nothing is written unless ``--json PATH`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import torch

# The outside-load meter of the GMM benchmark (this folder is on sys.path when a script runs).
from gmm_em import OutsideLoad

RATIO_TARGET = 1.5
BUSY_LOOP = ("import sys, time\nend = time.time() + float(sys.argv[1])\n"
             "while time.time() < end:\n    pass\n")


class BusyCore:
    """A subprocess that keeps one core busy for at most ``limit_s`` seconds (killed on exit)."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> BusyCore:
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(self.limit_s)])
        time.sleep(0.2)  # let it start spinning
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def make_problems(quick: bool, seed: int) -> list[dict]:
    """The three problems, with the data and start values of gmm_em.py and hmm_em.py."""
    import gmm_em
    import hmm_em

    import ppgen

    n, d, k = (20_000, 4, 3) if quick else (200_000, 16, 16)
    gp = gmm_em.make_problem(n, d, k, 1e-6, seed)
    x = torch.from_numpy(gp.x)
    gmm_init = {"weights": torch.from_numpy(gp.weights), "locs": torch.from_numpy(gp.means),
                "covariances": torch.from_numpy(gp.covariances)}
    hn, ht, hk, hd = (100, 50, 4, 3) if quick else (1000, 100, 8, 4)
    hp = hmm_em.make_problem(hn, ht, hk, hd, "diag", seed)
    seqs = torch.from_numpy(hp.x)
    hmm_init = {name: torch.from_numpy(v) for name, v in hp.start.items()}

    def gmm():
        return ppgen.GaussianMixture(k, covariance="full", reg_covar=1e-6)

    def hmm():
        return ppgen.HiddenMarkovModel(hk, emission="gaussian", covariance="diag",
                                       reg_covar=0.0)

    def em(make, data, init=None):
        return lambda iters: ppgen.fit(make(), data, method="em", init=init, seed=seed,
                                       num_steps=iters, tol=0.0, progress=False)

    fitted = gmm()
    fitted.set_params(**gmm_init)
    rows = x[:20_000] if quick else x

    docs, words, topics = (200, 100, 5) if quick else (2_000, 500, 10)
    counts, _ = ppgen.datasets.make_corpus(docs, words, topics, seed=seed)
    counts = torch.as_tensor(counts, dtype=torch.float64)

    images, _ = ppgen.datasets.load_digits()
    bits = (images > 0.5).to(torch.float32)

    def train(make, data, **options):
        return lambda iters: ppgen.fit(make(), data, "svi", num_steps=10 * iters,
                                       batch_size=100, tol=0, seed=seed, progress=False,
                                       **options)

    vae = ppgen.VAE(64, latent_dim=8, hidden_dims=(128,))
    ppgen.fit(vae, bits, "svi", num_steps=20, batch_size=100, tol=0, seed=seed,
              progress=False)
    test = bits[1600:]
    faithful = ppgen.datasets.load_old_faithful()
    faithful = (faithful - faithful.mean(0)) / faithful.std(0)
    draws = 20 if quick else 100

    return [
        {"name": f"GMM EM {n:,}x{d}, K={k}", "run": em(gmm, x, gmm_init),
         "elements": x.numel()},
        {"name": f"GMM log_prob {rows.shape[0]:,}x{d}, K={k}",
         "run": lambda iters: [fitted.log_prob(rows) for _ in range(iters)],
         "elements": rows.numel()},
        {"name": f"GMM sample {rows.shape[0]:,}x{d}, K={k}",
         "run": lambda iters: [fitted.sample(rows.shape[0], seed=i) for i in range(iters)],
         "elements": rows.numel()},
        {"name": f"HMM EM {hn:,}x{ht}x{hd}, K={hk}, padded", "run": em(hmm, seqs, hmm_init),
         "elements": seqs.numel()},
        {"name": f"HMM EM {hn:,}x{ht}x{hd}, K={hk}, list",
         "run": em(hmm, list(seqs.unbind(0)), hmm_init), "elements": seqs.numel()},
        {"name": f"LDA EM {docs:,} docs x {words} words, K={topics}",
         "run": em(lambda: ppgen.LDA(topics), counts), "elements": counts.numel()},
        {"name": "VAE SVI digits 64-128-8, batch 100",
         "run": train(lambda: ppgen.VAE(64, latent_dim=8, hidden_dims=(128,)), bits),
         "elements": 100 * 64},
        {"name": "VAE log_prob 197 digits x 500 samples",
         "run": lambda iters: [vae.log_prob(test, num_samples=500, seed=i)
                               for i in range(iters)],
         "elements": 197 * 500 * 64},
        {"name": "RBM PCD-1 digits, 64 hidden, batch 100",
         "run": train(lambda: ppgen.RBM(64), bits, persistent=True),
         "elements": 100 * 64},
        {"name": "GAN digits, latent 8, 128-128, batch 100",
         "run": train(lambda: ppgen.GAN(64, latent_dim=8, output="sigmoid"), images),
         "elements": 100 * 64},
        {"name": f"GMM NUTS Old Faithful, 2 chains x {draws}+{draws}",
         "run": lambda iters: ppgen.fit(ppgen.GaussianMixture(2), faithful, method="mcmc",
                                        num_chains=2, num_samples=draws, num_warmup=draws,
                                        seed=seed, progress=False),
         "elements": faithful.numel()},
    ]


def time_fit(problem: dict, iters: int, repeats: int, seed: int) -> float:
    """Best wall-clock time of the whole call (``ppgen.fit`` with validation, padding and
    all, or the application)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem["run"](iters)
        best = min(best, time.perf_counter() - t0)
    return best


def run_setting(problem: dict, setting: str, args, default: int) -> dict:
    """Time one problem under one setting; returns its time and the outside CPU share."""
    import ppgen._threads as threads

    if setting == "a":
        torch.set_num_threads(1)
        threads.user_choice = True
    elif setting == "b":
        torch.set_num_threads(default)
        threads.user_choice = None  # what a user who never touched the threads gets
    else:  # "c" and "d"
        torch.set_num_threads(2)
        threads.user_choice = True
    busy = BusyCore(args.busy_limit) if setting in ("b", "c") else None
    if busy is not None:
        busy.__enter__()
    try:
        time_fit(problem, 1, 1, args.seed)  # warm-up (first-call costs, thread pools)
        meter = OutsideLoad()
        elapsed = time_fit(problem, args.iters, args.repeats, args.seed)
        outside = meter.fraction()
        loaded = busy.alive() if busy is not None else None
    finally:
        if busy is not None:
            busy.__exit__(None, None, None)
        threads.user_choice = None
        torch.set_num_threads(default)
    print(f"  ({setting}) {problem['name']}: {elapsed:.3f} s", file=sys.stderr, flush=True)
    return {"time": elapsed, "outside": outside, "busy_loop_alive": loaded}


def _mean_outside(runs: list[dict]) -> float | None:
    """Outside CPU share over several timed runs, weighted by their times."""
    if any(r["outside"] is None for r in runs):
        return None
    return sum(r["outside"] * r["time"] for r in runs) / sum(r["time"] for r in runs)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: GMM 20,000x4 K=3, HMM 100x50x3 K=4, 2 iterations")
    p.add_argument("--iters", type=int, default=None,
                   help="EM iterations per fit (default 10; 2 with --quick)")
    p.add_argument("--repeats", type=int, default=1, help="best of this many fits (default 1)")
    p.add_argument("--busy-limit", type=float, default=600.0,
                   help="seconds after which the busy loop stops by itself (default 600)")
    p.add_argument("--quiet-two-threads", action="store_true",
                   help="also time (d): two threads forced, no load added")
    p.add_argument("--only", action="append", default=None, metavar="TEXT",
                   help="run only the problems whose name contains TEXT (repeatable), e.g. "
                   "--only 'GMM EM' --only 'HMM EM'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = 2 if args.quick else 10
    if args.iters < 1 or args.repeats < 1:
        p.error("--iters and --repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import pyro

    import ppgen  # noqa: F401  (records torch's default thread count at import)
    import ppgen._threads as threads

    default = threads.default_threads()
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        print("note: OMP_NUM_THREADS / MKL_NUM_THREADS is set; setting (b) then keeps the "
              "user's choice, as ppgen does for any explicit setting.")
    problems = [p for p in make_problems(args.quick, args.seed)
                if args.only is None or any(text in p["name"] for text in args.only)]
    if not problems:
        print(f"error: --only {args.only}: no problem's name contains it", file=sys.stderr)
        return 2
    ncpu = os.cpu_count() or 1
    print(f"# Threads benchmark: {args.iters} EM iterations per fit ({10 * args.iters} "
          f"training steps, {args.iters} application calls), best of {args.repeats}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro "
          f"{pyro.__version__}; {ncpu} CPUs, torch's default intra-op threads {default}, "
          f"ppgen SMALL_WORK = {threads.SMALL_WORK:,} elements")
    print(f"load average (1 min) before start: {os.getloadavg()[0]:.2f}")
    settings = "abcd" if args.quiet_two_threads else "abc"
    # Settings interleaved per problem, so that a burst of outside load hits all of them.
    runs = {s: {} for s in settings}
    for p in problems:
        for s in settings:
            runs[s][p["name"]] = run_setting(p, s, args, default)
    results = {s: {"times": {name: r["time"] for name, r in runs[s].items()},
                   "outside": _mean_outside(list(runs[s].values())),
                   "busy_loop_alive": (None if s in "ad" else
                                       all(r["busy_loop_alive"] for r in runs[s].values()))}
               for s in settings}
    quiet2 = args.quiet_two_threads
    print()
    print("| problem | data elements | ppgen's threads (b) | (a) 1 thread, no load (s) "
          "| (b) automatic, 1 core busy (s) | (c) 2 threads, 1 core busy (s) | b/a | c/a |"
          + (" (d) 2 threads, no load (s) | d/a |" if quiet2 else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if quiet2 else ""))
    ok = True
    rows = []
    for p in problems:
        a, b, c = (results[s]["times"][p["name"]] for s in "abc")
        chosen = threads.threads_for(p["elements"])
        ok = ok and b / a <= RATIO_TARGET
        row = {"problem": p["name"], "elements": p["elements"], "threads_b": chosen,
               "a_s": a, "b_s": b, "c_s": c, "b_over_a": b / a, "c_over_a": c / a}
        line = (f"| {p['name']} | {p['elements']:,} | {chosen} | {a:.3f} | {b:.3f} | {c:.3f} "
                f"| {b / a:.2f}x | {c / a:.2f}x |")
        if quiet2:
            d = results["d"]["times"][p["name"]]
            row.update(d_s=d, d_over_a=d / a)
            line += f" {d:.3f} | {d / a:.2f}x |"
        rows.append(row)
        print(line)
    print()
    for s in settings:
        label = f"({s})"
        frac = results[s]["outside"]
        alive = results[s]["busy_loop_alive"]
        extra = "" if alive is None else (" (busy loop included, still running at the end)"
                                          if alive else " (WARNING: the busy loop had ended)")
        print(f"- {label}: other processes used "
              + (f"{100 * frac:.0f}%" if frac is not None else "an unknown share")
              + f" of the {ncpu} CPUs{extra}.")
    quiet = results["a"]["outside"]
    if quiet is not None and quiet > 0.05:
        print(f"- WARNING: setting (a) was not on a quiet machine ({100 * quiet:.0f}% outside "
              "use); its times are high, so the ratios flatter (b) and (c).")
    print(f"- target: b/a <= {RATIO_TARGET}x on every problem "
          f"[{'PASS' if ok else 'FAIL'}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": {k: v for k, v in vars(args).items() if k != "json"},
                       "default_threads": default, "small_work": threads.SMALL_WORK,
                       "rows": rows, "outside": {s: results[s]["outside"] for s in settings}},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
