"""Benchmark: Bernoulli HMM fitted by EM on the JSB chorales, held-out log-likelihood per step.

Run with ``make bench`` or directly::

    .venv/bin/python benchmarks/hmm_jsb.py            # K = 8, 16, 32, 64; up to 200 iterations
    .venv/bin/python benchmarks/hmm_jsb.py --quick    # smoke run: K = 2, 4; 5 iterations

The 88-key piano rolls of ``ppgen.datasets.load_jsb_chorales`` (train 229, valid 76,
test 77 chorales) are modelled by ``HiddenMarkovModel(K, emission="bernoulli",
emission_concentration=2.0)`` (a Beta(2, 2) prior on every key probability, so EM
finds the MAP estimate and no probability collapses to 0 or 1) and fitted on the
training split by ``ppgen.fit(..., method="em", tol=1e-4, num_steps=200)``, with the
sequence lengths passed as ``model_kwargs={"lengths": lengths}``.

For every K the script prints the negative log-likelihood per time step in nats,
``-sum(hmm.log_prob(rolls, lengths)) / total frames of the split``, for train, valid
and test, the EM iterations of the best restart, whether the tolerance was met and
the wall-clock seconds of the fit (all restarts).

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

import numpy as np
import torch

try:  # the outside-load meter of the GMM benchmark (same folder)
    from gmm_em import OutsideLoad
except ImportError:  # imported from elsewhere: no outside-load column
    OutsideLoad = None

SPLITS = ("train", "valid", "test")


def nll_per_step(hmm, rolls: torch.Tensor, lengths: torch.Tensor) -> float:
    """-sum of the sequences' log-likelihoods / number of real frames, in nats."""
    with torch.no_grad():
        return -float(hmm.log_prob(rolls, lengths).sum()) / int(lengths.sum())


def fit_one(data: dict, k: int, args: argparse.Namespace) -> dict:
    import ppgen

    rolls, lengths = data["train"]
    hmm = ppgen.HiddenMarkovModel(k, emission="bernoulli",
                                  emission_concentration=args.emission_concentration)
    load = OutsideLoad() if OutsideLoad is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is reported in the table
        t0 = time.perf_counter()
        fit = ppgen.fit(hmm, rolls, method="em", model_kwargs={"lengths": lengths},
                        num_steps=args.num_steps, tol=args.tol,
                        num_restarts=args.num_restarts, seed=args.seed, progress=False)
        seconds = time.perf_counter() - t0
    outside = load.fraction() if load is not None else None
    objective = np.asarray(fit.history["objective"], dtype=np.float64)
    row = {
        "k": k,
        "num_parameters": hmm.num_parameters(),
        "iterations": len(objective) - 1,  # the start's value, then one per iteration
        "converged": fit.converged,
        "seconds": seconds,
        "outside_cpu_fraction": outside,
        "final_objective": float(objective[-1]),
    }
    for split in SPLITS:
        row[f"{split}_nll"] = nll_per_step(hmm, *data[split])
    return row


def format_table(rows: list[dict]) -> str:
    lines = [
        "| K | parameters | iterations | converged | seconds | train NLL/step "
        "| valid NLL/step | test NLL/step | other processes' CPU |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        conv = {True: "yes", False: "no", None: "-"}[r["converged"]]
        out = r["outside_cpu_fraction"]
        out = "?" if out is None else f"{100 * out:.0f}%"
        lines.append(
            f"| {r['k']} | {r['num_parameters']:,} | {r['iterations']} | {conv} "
            f"| {r['seconds']:.2f} | {r['train_nll']:.4f} | {r['valid_nll']:.4f} "
            f"| {r['test_nll']:.4f} | {out} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--states", default=None,
                   help="comma-separated numbers of states (default 8,16,32,64; 2,4 with "
                        "--quick)")
    p.add_argument("--emission-concentration", type=float, default=2.0,
                   help="Beta(a, a) prior of every key probability (default 2.0)")
    p.add_argument("--num-restarts", type=int, default=1,
                   help="EM restarts per K; the best training objective wins (default 1)")
    p.add_argument("--num-steps", type=int, default=None,
                   help="most EM iterations (default 200; 5 with --quick)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="relative change of the objective that stops EM (default 1e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's default)")
    p.add_argument("--quick", action="store_true", help="smoke run: K=2,4, 5 iterations")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.states is None:
        args.states = "2,4" if args.quick else "8,16,32,64"
    try:
        args.states = [int(s) for s in args.states.split(",") if s.strip()]
    except ValueError:
        p.error(f"--states: expected comma-separated integers, got {args.states!r}")
    if not args.states or min(args.states) < 1:
        p.error("--states: expected numbers >= 1")
    if args.num_steps is None:
        args.num_steps = 5 if args.quick else 200
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pyro

    import ppgen

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    data = {split: ppgen.datasets.load_jsb_chorales(split, dtype=dtype) for split in SPLITS}
    sizes = ", ".join(f"{s} {data[s][0].shape[0]} sequences / {int(data[s][1].sum()):,} steps"
                      for s in SPLITS)
    print(f"# Bernoulli HMM on the JSB chorales by EM: K in {args.states}, "
          f"emission_concentration={args.emission_concentration:g}, tol={args.tol:g}, "
          f"num_steps<={args.num_steps}, num_restarts={args.num_restarts}, seed={args.seed}, "
          f"{args.dtype}")
    print(f"data: 88-key piano rolls; {sizes}")
    print(f"python {platform.python_version()}, torch {torch.__version__} "
          f"(threads={torch.get_num_threads()}), pyro {pyro.__version__}")
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before start: {load1:.2f} on {os.cpu_count()} CPUs")
    print()

    rows = [fit_one(data, k, args) for k in args.states]
    print(format_table(rows))
    print()
    print("- NLL/step = -sum(log p(sequence)) / number of steps of the split, in nats (the "
          "states summed out exactly by the forward algorithm; the Beta prior is not "
          "included).")
    print("- iterations: of the best restart; seconds: the whole fit, all restarts; "
          f"converged: relative change of the EM objective <= {args.tol:g} within "
          f"{args.num_steps} iterations.")
    print("- other processes' CPU: share of the machine's CPUs that other processes used "
          "during that fit; seconds are only trustworthy when it is near 0.")
    loaded = [r["k"] for r in rows if (r["outside_cpu_fraction"] or 0.0) > 0.05]
    if loaded:
        print(f"- WARNING: other processes used over 5% of the CPUs during the fits for K in "
              f"{loaded}; their seconds are not trustworthy (torch's {torch.get_num_threads()} "
              "thread(s) slow down badly when a core is taken; --threads 1 suffers least).")
    ok = all(math.isfinite(r[f"{s}_nll"]) for r in rows for s in SPLITS)

    if args.json:
        out = {"config": {k_: v for k_, v in vars(args).items() if k_ != "json"},
               "torch_threads": torch.get_num_threads(),
               "frames": {s: int(data[s][1].sum()) for s in SPLITS},
               "results": rows}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
