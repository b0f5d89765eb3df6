"""Benchmark: GANs on the ring of 8 and the grid of 25 Gaussians (VEEGAN / PacGAN protocol).

Run directly::

    .venv/bin/python benchmarks/gan_mixtures.py            # 5 seeds per data set
    .venv/bin/python benchmarks/gan_mixtures.py --quick    # 2 seeds, fewer steps
    .venv/bin/python benchmarks/gan_mixtures.py --model-defaults --num-steps 2000

Data: ``ppgen.datasets.make_ring`` (8 modes on a circle of radius 2, std 0.02) and
``make_grid`` (5 x 5 modes 2 apart, std 0.05), ``--num-data`` training points each. Two
players of one architecture for both runs: generator 2-128-128-128-2 (ReLU, batch norm
before each hidden ReLU unless ``--no-batch-norm``), discriminator 128-128-128 (LeakyReLU
0.2), latent dimension 2, batch ``--batch-size``, ``--num-steps`` steps, the same seeds:

(a) ppgen: ``ppgen.GAN(2, latent_dim=2, hidden_dims=(128, 128, 128), pack=P,
    batch_norm=True)`` fitted with non-saturating minimax, Adam lr ``--lr`` (2e-3; betas
    (0.5, 0.999)) decayed geometrically by ``--lr-decay`` (to 0.05 of it) over the run, R1
    weight ``--r1-weight`` (1.0) and the moving average of the generator (decay 0.999, its
    batch-norm statistics re-estimated for its own weights after the last step) as the
    sampler. These are explicit settings, not the model's defaults (``--model-defaults``
    runs those instead: pack 4, no batch norm, lr 1e-3 constant, R1 0.1). Why they differ
    (measured on single seeds, ``benchmarks/RESULTS.md``):
    with packing (``--pack`` 2 or 4, each minibatch of B rows packed into B / pack
    discriminator inputs) the discriminator of this size did not resolve the grid's modes
    in 12,000 steps (samples stayed spread over the square, ~2 % high quality), while
    ``pack=1`` did; batch norm in the generator (as in the VEEGAN / PacGAN generators) is
    what let the grid's samples leave the square for the modes within the budget; the
    learning-rate decay sharpens the modes at the end of a short run; R1 1.0 did better
    than 0.1 or 0.01 on the grid (seed 1: 57 / 46 / 46 % high quality at 8,000 steps).
(b) plain minimax GAN, re-run by the same code: ``pack=1``, ``ema_decay=0`` (the generator
    itself samples), ``r1_weight=0``, otherwise identical (same networks, lr, schedule).

Measured per run (``ppgen.evaluation.mixture_metrics``, 2,500 samples, seed = run seed):
modes captured (>= 1 sample within 3 standard deviations), % high-quality samples, reverse KL
over modes; mean over seeds, and the number of seeds that captured every mode. Published
anchors (modes / % high quality): grid VEEGAN 24.6 / 40, PacGAN4 24.8 / 93.6; ring VEEGAN
8 / 52.9, PacGAN 7.9 / 95.6. Goal: every mode in every seed with >= 90 % high quality.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

import ppgen
from ppgen.evaluation import mixture_metrics

ANCHORS = {"ring": "VEEGAN 8 / 52.9, PacGAN 7.9 / 95.6",
           "grid": "VEEGAN 24.6 / 40, PacGAN4 24.8 / 93.6"}


def settings(config: str, args) -> tuple[dict, dict]:
    """(model arguments, fit options) of one configuration."""
    if args.model_defaults:
        model: dict = {}
        options: dict = {}
    else:
        model = {"pack": args.pack, "batch_norm": args.batch_norm}
        options = {"lr": args.lr, "lr_decay": args.lr_decay, "r1_weight": args.r1_weight}
    if config == "plain":
        model = {**model, "pack": 1}
        options = {**options, "ema_decay": 0.0, "r1_weight": 0.0}
    return model, options


def run(name: str, config: str, seed: int, args) -> dict:
    torch.set_num_threads(args.threads)
    make = ppgen.datasets.make_ring if name == "ring" else ppgen.datasets.make_grid
    x, params = make(args.num_data, seed=seed)
    model, options = settings(config, args)
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(128, 128, 128), **model)
    start = time.perf_counter()
    ppgen.fit(gan, x, "svi", num_steps=args.num_steps, batch_size=args.batch_size, tol=0,
              progress=False, seed=seed, **options)
    seconds = time.perf_counter() - start
    m = mixture_metrics(gan, params["modes"], params["std"], num_samples=2500, seed=seed)
    row = {"data": name, "config": config, "seed": seed, "seconds": seconds, **m.as_dict()}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--num-steps", type=int, default=8000)
    parser.add_argument("--num-data", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pack", type=int, default=1)
    parser.add_argument("--no-batch-norm", dest="batch_norm", action="store_false")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-decay", type=float, default=0.05)
    parser.add_argument("--r1-weight", type=float, default=1.0)
    parser.add_argument("--model-defaults", action="store_true",
                        help="the GAN's own defaults instead of the settings above")
    parser.add_argument("--data", nargs="+", default=["ring", "grid"])
    parser.add_argument("--configs", nargs="+", default=["ppgen", "plain"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.num_steps, args.num_data = 2, min(args.num_steps, 300), 5000
    jobs = [(name, config, seed) for name in args.data for config in args.configs
            for seed in range(args.seeds)]
    start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(run, *zip(*jobs), [args] * len(jobs)))
    else:
        rows = [run(*job, args) for job in jobs]
    wall = time.perf_counter() - start
    load = os.getloadavg()
    print(f"steps {args.num_steps}, batch {args.batch_size}, {args.seeds} seeds, "
          f"{args.num_data} training points, {args.threads} thread(s), {args.jobs} job(s); "
          + ("model defaults" if args.model_defaults else
             f"pack {args.pack}, batch norm {args.batch_norm}, lr {args.lr:g}, "
             f"lr decay {args.lr_decay:g}, R1 {args.r1_weight:g}")
          + f"; wall {wall:.0f} s, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'data':5} {'config':6} {'modes':>12} {'% HQ':>12} {'rev KL':>8} "
          f"{'all modes':>10} {'s/run':>6}   anchors")
    summary = {}
    for name in args.data:
        for config in args.configs:
            sel = [r for r in rows if r["data"] == name and r["config"] == config]
            modes = np.array([r["modes"] for r in sel])
            hq = np.array([r["high_quality"] for r in sel])
            kl = np.array([r["reverse_kl"] for r in sel])
            full = 8 if name == "ring" else 25
            all_modes = int((modes == full).sum())
            goal = int(((modes == full) & (hq >= 90)).sum())
            secs = float(np.mean([r["seconds"] for r in sel]))
            summary[f"{name}/{config}"] = {"modes": float(modes.mean()),
                                           "modes_min": float(modes.min()),
                                           "high_quality": float(hq.mean()),
                                           "high_quality_min": float(hq.min()),
                                           "reverse_kl": float(kl.mean()),
                                           "seeds_all_modes": all_modes,
                                           "seeds_goal": goal, "seconds": secs}
            print(f"{name:5} {config:6} {modes.mean():6.2f} (>={modes.min():.0f}) "
                  f"{hq.mean():6.1f} (>={hq.min():.1f}) {kl.mean():8.3f} "
                  f"{all_modes:>5}/{len(sel):<4} {secs:6.1f}   goal {goal}/{len(sel)}   "
                  f"{ANCHORS[name] if config == 'ppgen' else ''}")
    out = {"args": vars(args), "rows": rows, "summary": summary, "wall_seconds": wall,
           "load_average": load}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
