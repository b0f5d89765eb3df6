"""Benchmark: is a VAE trained by ``ppgen.fit`` as good as one trained by plain Pyro? Several
seeds, the test log-likelihood of each, and the paired differences.

Run directly (not in ``make bench``: about 6-8 minutes per seed and trainer set on a quiet
core, most of it the 5000-sample estimator)::

    .venv/bin/python benchmarks/vae_parity.py --seeds 0 1 2
    .venv/bin/python benchmarks/vae_parity.py --quick     # smoke run (seconds)

The set-up of ``benchmarks/vae_mnist.py`` (its classes are reused): dynamically binarized
MNIST, 784-200-200-50 with tanh, Bernoulli, Adam lr 1e-3, batch 100, ``--epochs`` epochs, one
thread. For each seed s (which sets the initial weights, ``VAE.reset_networks(s)``, and the
minibatch order, shared by all), up to four networks are trained (``--trainers``, default
a a' b):

(a) ``ppgen.fit(vae, data, "svi")``: ppgen's default VAE objective (analytic Gaussian KL);
(a') ``ppgen.fit(vae, data, "svi", iwae=True, num_particles=1)``: the one-sample bound
     log p(x, z) - log q(z | x) at one reparameterised draw, which is the estimator (and
     gradient) of Pyro's ``Trace_ELBO`` on this model: ppgen's loop with Pyro's estimator;
(b) plain Pyro, as in Pyro's VAE example (``SVI(..., Trace_ELBO())``, ``pyro.optim.Adam``);
(b') plain Pyro with ``TraceMeanField_ELBO`` (the KL in closed form): the peer of (a).

With ``--draws shared`` (the default) the plain-Pyro loop also takes the same Bernoulli and
reparameterisation draws as ppgen's runs, step by step (``vae_mnist.PlainLoop``): (a') and
(b), and (a) and (b'), then compute the same numbers up to floating-point rounding
(``tests/test_vae_parity.py``), so their paired gap measures the implementations, not the
luck of the draw; ``--draws independent`` offsets the peers' stream by one minibatch (what
this benchmark did before), so the gap also carries the seed-to-seed spread of training.

Each is scored by one estimator, ``VAE.log_prob(x, num_samples=--num-samples, seed=
--eval-seed)`` on the first ``--test-images`` images of one fixed binarization of MNIST test.
Reported per seed: the means and the paired differences (a') - (b), (a) - (b') and (a) - (b)
with their paired standard errors over images; over seeds: the mean difference and its
standard error across seeds (the seed-to-seed spread of a training run is the noise a single-seed
comparison cannot see), and the seed-to-seed standard deviation of each trainer's test
log-likelihood. Also per network: the active latent units (Burda et al. 2016: the variance over
the test images of the encoder's mean of unit j above 0.01). Target (issue 9): ppgen within
0.3 nats of plain Pyro; shown when mean +- 2 s.e. lies inside the band.
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
    p.add_argument("--trainers", nargs="+", choices=TRAINERS, default=["a", "a'", "b"],
                   help="which networks to train per seed (default a a' b; b' is plain Pyro "
                        "with TraceMeanField_ELBO, the peer of ppgen's default objective)")
    p.add_argument("--draws", choices=("shared", "independent"), default="shared",
                   help="shared (default): plain Pyro takes ppgen's draws step by step; "
                        "independent: its stream is offset by one minibatch")
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
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the results here (rewritten after every seed)")
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
    args.trainers = [t for t in TRAINERS if t in args.trainers]
    return args


#: The trainers, in the order they run: (a) ppgen's default objective, (a') ppgen with
#: Pyro's estimator, (b) plain Pyro (Trace_ELBO), (b') plain Pyro (TraceMeanField_ELBO).
TRAINERS = ("a", "a'", "b", "b'")
LABELS = {"a": "(a) ppgen, analytic KL", "a'": "(a') ppgen, Pyro's estimator",
          "b": "(b) plain Pyro", "b'": "(b') plain Pyro, analytic KL"}
#: Paired gaps reported: (left, right, JSON key).
GAPS = (("a'", "b", "same_estimator_gap"), ("a", "b'", "same_objective_gap"),
        ("a", "b", "default_gap"))
GAP_LABELS = {"same_estimator_gap": "(a') - (b), same estimator (Trace_ELBO's)",
              "same_objective_gap": "(a) - (b'), same objective (analytic KL)",
              "default_gap": "(a) - (b), ppgen's default against Pyro's example"}
MEAN_KEYS = {"a": "mean_a", "a'": "mean_a_pyro_estimator", "b": "mean_b",
             "b'": "mean_b_analytic"}
#: Burda et al. (2016): unit j is active when Var_x(E_q[z_j | x]) > 0.01.
ACTIVE_THRESHOLD = 1e-2


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


def make_trainer(key: str, train, args: argparse.Namespace, init):
    if key in ("b", "b'"):
        return PyroImpl(train, args, init, mean_field=key == "b'")
    return PpgenImpl(train, args, init, iwae_k=1 if key == "a'" else 0)


def active_units(vae, x: torch.Tensor) -> int:
    """Latent units whose posterior mean varies over the images ``x`` by more than
    ``ACTIVE_THRESHOLD`` (variance), Burda et al.'s count of units the model uses."""
    with torch.no_grad():
        loc, _ = vae.encoder(x.reshape(x.shape[0], -1).to(vae.dtype))
    return int((loc.var(0) > ACTIVE_THRESHOLD).sum())


def summarize(values: list[float]) -> tuple[float, float, float]:
    """Mean, standard deviation and standard error of the mean (NaN for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    sd = statistics.stdev(values)
    return mean, sd, sd / math.sqrt(len(values))


def main(argv=None) -> int:
    args = parse_args(argv)
    import pyro

    import ppgen
    import ppgen._threads as threads

    default_threads = threads.default_threads()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print(f"# ppgen vs plain Pyro, VAE on dynamically binarized MNIST: 784-"
          f"{'-'.join(map(str, args.hidden))}-{args.latent} (tanh), {args.epochs} epochs, "
          f"seeds {args.seeds}, draws {args.draws}; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")
    train, _ = ppgen.datasets.load_mnist("train", binarize="dynamic")
    if args.train_images < len(train):
        train = ppgen.datasets.DynamicBinarized(train.probs[:args.train_images])
    test_src, _ = ppgen.datasets.load_mnist("test", binarize="dynamic")
    x_test = test_src.fixed(args.test_seed)[:args.test_images]
    print(f"train: {len(train)} images; test: first {x_test.shape[0]} images of "
          f"fixed({args.test_seed}), {args.num_samples} importance samples each (seed "
          f"{args.eval_seed})")
    print()
    cols = [LABELS[t] for t in args.trainers]
    gaps = [(lft, rgt, key) for lft, rgt, key in GAPS
            if lft in args.trainers and rgt in args.trainers]
    cols += [f"({lft}) - ({rgt})" for lft, rgt, _ in gaps]
    print("| seed | " + " | ".join(cols) + " | active units (" + " / ".join(args.trainers)
          + ") | train s (" + " / ".join(args.trainers) + ") |")
    print("|---:|" + "---:|" * len(cols) + "---|---|")
    rows = []
    verdict: dict = {}
    spread: dict = {}
    for seed in args.seeds:
        args.seed = seed
        init = initial_weights(args)
        impls = {k: make_trainer(k, train, args, init) for k in args.trainers}
        seconds = {k: train_one(v, args.epochs) for k, v in impls.items()}
        pyro.clear_param_store()
        torch.set_num_threads(default_threads)  # the estimator: large blocks
        vaes = {k: v.to_vae() for k, v in impls.items()}
        scores = {k: evaluate(v, x_test, args) for k, v in vaes.items()}
        torch.set_num_threads(args.threads)
        active = {k: active_units(v, x_test) for k, v in vaes.items()}
        row = {"seed": seed, "train_seconds": seconds, "active_units": active,
               "eval_seconds": {k: v["seconds"] for k, v in scores.items()},
               "lp": {k: v["lp"].tolist() for k, v in scores.items()}}
        for k in args.trainers:
            row[MEAN_KEYS[k]] = scores[k]["mean"]
        cells = [f"{scores[k]['mean']:.2f}" for k in args.trainers]
        for lft, rgt, key in gaps:
            d, se = paired(scores[lft], scores[rgt])
            row[key], row[key + "_se"] = d, se
            cells.append(f"{d:+.3f} ({se:.3f})")
        print(f"| {seed} | " + " | ".join(cells) + " | "
              + " / ".join(str(active[k]) for k in args.trainers) + " | "
              + " / ".join(f"{seconds[k]:.0f}" for k in args.trainers) + " |", flush=True)
        rows.append(row)
        verdict = {}
        for _, _, key in gaps:
            mean, sd, se = summarize([r[key] for r in rows])
            verdict[key] = {"mean": mean, "sd": sd, "se": se,
                            "pass": abs(mean) <= LL_GAP_TARGET,
                            "resolved": bool(abs(mean) + 2 * se <= LL_GAP_TARGET)}
        spread = {k: summarize([r[MEAN_KEYS[k]] for r in rows])[1] for k in args.trainers}
        if args.json:  # after every seed, so that a stopped run keeps what it measured
            with open(args.json, "w") as fh:
                json.dump({"config": {k: v for k, v in vars(args).items() if k != "json"},
                           "rows": rows, "verdict": verdict, "seed_sd": spread,
                           "pyro_seed_sd": spread.get("b", math.nan)}, fh, indent=2)
    print()
    for _, _, key in gaps:
        v = verdict[key]
        print(f"- {GAP_LABELS[key]}: mean over {len(rows)} seeds {v['mean']:+.3f} nats (s.d. "
              f"{v['sd']:.3f}, s.e. across seeds {v['se']:.3f}; per seed "
              f"{', '.join(f'{r[key]:+.2f}' for r in rows)}); target |gap| <= "
              f"{LL_GAP_TARGET} [{'PASS' if v['pass'] else 'FAIL'}; mean +- 2 s.e. "
              f"({v['mean'] - 2 * v['se']:+.3f}, {v['mean'] + 2 * v['se']:+.3f}) "
              f"{'inside' if v['resolved'] else 'not inside'} the band]")
    for k in args.trainers:
        au = [r["active_units"][k] for r in rows]
        print(f"- {LABELS[k]}: seed-to-seed s.d. of the test log-likelihood {spread[k]:.3f} "
              f"nats; active units {min(au)}-{max(au)}")
    print(f"- total {time.perf_counter() - t0:.0f} s; load average (1 min) at the end "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
