"""Benchmark: is a VAE trained by ``ppgen.fit`` as good as one trained by plain Pyro? Several
seeds, the test log-likelihood of each, and the paired differences.

Run directly (not in ``make bench``: about 10 minutes per seed on 2 quiet cores)::

    .venv/bin/python benchmarks/vae_parity.py --seeds 0 1 2
    .venv/bin/python benchmarks/vae_parity.py --quick     # smoke run (seconds)

The set-up of ``benchmarks/vae_mnist.py`` (its classes are reused): dynamically binarized
MNIST, 784-200-200-50 with tanh, Bernoulli, Adam lr 1e-3, batch 100, ``--epochs`` epochs, one
thread. For each seed s (which sets the initial weights, ``VAE.reset_networks(s)``, and the
minibatch order, shared by all three), three networks are trained:

(a) ``ppgen.fit(vae, data, "svi")``: ppgen's default VAE objective (analytic Gaussian KL);
(a') ``ppgen.fit(vae, data, "svi", iwae=True, num_particles=1)``: the one-sample bound
     log p(x, z) - log q(z | x) at one reparameterised draw, which is the estimator (and
     gradient) of Pyro's ``Trace_ELBO`` on this model: ppgen's loop with Pyro's estimator;
(b) plain Pyro, as in Pyro's VAE example (``SVI(..., Trace_ELBO())``, ``pyro.optim.Adam``).

Each is scored by one estimator, ``VAE.log_prob(x, num_samples=--num-samples, seed=
--eval-seed)`` on the first ``--test-images`` images of one fixed binarization of MNIST test.
Reported per seed: the three means and the paired differences (a') - (b) and (a) - (b) with
their paired standard errors over images; over seeds: the mean difference and its standard
error across seeds (the seed-to-seed spread of a training run is the noise a single-seed
comparison cannot see). Target (issue 9): ppgen within 0.3 nats of plain Pyro.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings

import torch
from vae_mnist import LL_GAP_TARGET, PpgenImpl, PyroImpl, evaluate, initial_weights, paired


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 500 training images, 1 epoch, 10 test images, 50 samples")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="default 5 (1 with --quick)")
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None, help="default 300 (10 quick)")
    p.add_argument("--num-samples", type=int, default=None, help="default 5000 (50 quick)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent", type=int, default=50)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 200])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH", default=None)
    args = p.parse_args(argv)
    defaults = {"epochs": (5, 1), "train_images": (50_000, 500), "test_images": (300, 10),
                "num_samples": (5000, 50)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    for key in ("epochs", "train_images", "test_images", "num_samples", "batch_size",
                "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def train_one(impl, epochs: int) -> float:
    w0 = time.perf_counter()
    if isinstance(impl, PpgenImpl):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            impl.train(epochs)
    else:
        for _ in range(epochs):
            impl.epoch()
    return time.perf_counter() - w0


def main(argv=None) -> int:
    args = parse_args(argv)
    import pyro

    import ppgen
    import ppgen._threads as threads

    default_threads = threads.default_threads()
    torch.set_num_threads(args.threads)
    print(f"# ppgen vs plain Pyro, VAE on dynamically binarized MNIST: 784-"
          f"{'-'.join(map(str, args.hidden))}-{args.latent} (tanh), {args.epochs} epochs, "
          f"seeds {args.seeds}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    train, _ = ppgen.datasets.load_mnist("train", binarize="dynamic")
    if args.train_images < len(train):
        train = ppgen.datasets.DynamicBinarized(train.probs[:args.train_images])
    test_src, _ = ppgen.datasets.load_mnist("test", binarize="dynamic")
    x_test = test_src.fixed(args.test_seed)[:args.test_images]
    print(f"test: first {x_test.shape[0]} images of fixed({args.test_seed}), "
          f"{args.num_samples} importance samples each (seed {args.eval_seed})")
    print()
    print("| seed | (a) ppgen, analytic KL | (a') ppgen, Pyro's estimator | (b) plain Pyro "
          "| (a') - (b) | (a) - (b) | train s (a / a' / b) |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    for seed in args.seeds:
        args.seed = seed
        init = initial_weights(args)
        impls = {"a": PpgenImpl(train, args, init), "a'": PpgenImpl(train, args, init, iwae_k=1),
                 "b": PyroImpl(train, args, init)}
        seconds = {k: train_one(v, args.epochs) for k, v in impls.items()}
        pyro.clear_param_store()
        torch.set_num_threads(default_threads)  # the estimator: large blocks
        scores = {k: evaluate(v.to_vae(), x_test, args) for k, v in impls.items()}
        torch.set_num_threads(args.threads)
        d_same, se_same = paired(scores["a'"], scores["b"])
        d_def, se_def = paired(scores["a"], scores["b"])
        a, a1, b = (scores[k]["mean"] for k in ("a", "a'", "b"))
        ta, ta1, tb = (seconds[k] for k in ("a", "a'", "b"))
        print(f"| {seed} | {a:.2f} | {a1:.2f} | {b:.2f} | {d_same:+.3f} ({se_same:.3f}) "
              f"| {d_def:+.3f} ({se_def:.3f}) | {ta:.0f} / {ta1:.0f} / {tb:.0f} |", flush=True)
        rows.append({"seed": seed, "mean_a": a, "mean_a_pyro_estimator": a1, "mean_b": b,
                     "same_estimator_gap": d_same, "same_estimator_gap_se": se_same,
                     "default_gap": d_def, "default_gap_se": se_def,
                     "train_seconds": seconds})
    print()
    verdict = {}
    for key, label in (("same_estimator_gap", "(a') - (b), same estimator"),
                       ("default_gap", "(a) - (b), ppgen's default objective")):
        gaps = [r[key] for r in rows]
        mean = statistics.fmean(gaps)
        se = statistics.stdev(gaps) / math.sqrt(len(gaps)) if len(gaps) > 1 else math.nan
        ok = abs(mean) <= LL_GAP_TARGET
        # Shown only if the mean +- 2 s.e. lies inside the target band.
        resolved = bool(abs(mean) + 2 * se <= LL_GAP_TARGET) if len(gaps) > 1 else False
        print(f"- {label}: mean over {len(gaps)} seeds {mean:+.3f} nats (s.e. across seeds "
              f"{se:.3f}; per seed {', '.join(f'{g:+.2f}' for g in gaps)}); target |gap| <= "
              f"{LL_GAP_TARGET} [{'PASS' if ok else 'FAIL'}; mean +- 2 s.e. "
              f"{'inside' if resolved else 'not inside'} the band]")
        verdict[key] = {"mean": mean, "se": se, "pass": ok, "resolved": resolved}
    spread = statistics.stdev([r["mean_b"] for r in rows]) if len(rows) > 1 else math.nan
    print(f"- seed-to-seed s.d. of plain Pyro's test log-likelihood: {spread:.3f} nats")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": {k: v for k, v in vars(args).items() if k != "json"},
                       "rows": rows, "verdict": verdict, "pyro_seed_sd": spread}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
