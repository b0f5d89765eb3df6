"""Benchmark: GANs on the ring of 8 and the grid of 25 Gaussians (VEEGAN / PacGAN protocol).

Run directly::

    .venv/bin/python benchmarks/gan_mixtures.py            # 5 seeds per data set
    .venv/bin/python benchmarks/gan_mixtures.py --quick    # 2 seeds, fewer steps

Data: ``ppgen.datasets.make_ring`` (8 modes on a circle of radius 2, std 0.02) and
``make_grid`` (5 x 5 modes 2 apart, std 0.05), ``--num-data`` training points each. Two
players of one architecture for both runs: generator 2-128-128-128-2 (ReLU), discriminator
128-128-128 (LeakyReLU 0.2), latent dimension 2, batch ``--batch-size``, ``--num-steps``
steps, the same seeds:

(a) ppgen default: ``ppgen.GAN(2, latent_dim=2, hidden_dims=(128, 128, 128))`` with the
    model's defaults (PacGAN packing of 4, non-saturating minimax, Adam lr 1e-3, betas
    (0.5, 0.999), R1 weight 0.1, moving average of the generator 0.999);
(b) plain minimax GAN, re-run by the same code: ``pack=1``, ``ema_decay=0`` (the generator
    itself samples), ``r1_weight=0``, otherwise identical (lr 1e-3 too).

Measured per run (``ppgen.evaluation.mixture_metrics``, 2,500 samples, seed = run seed):
modes captured (>= 1 sample within 3 standard deviations), % high-quality samples, reverse KL
over modes; mean over seeds, and the number of seeds that captured every mode. Published
anchors (modes / % high quality): grid VEEGAN 24.6 / 40, PacGAN4 24.8 / 93.6; ring VEEGAN
8 / 52.9, PacGAN 7.9 / 95.6. Goal: every mode in every seed with >= 90 % high quality.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import ppgen
from ppgen.evaluation import mixture_metrics

ANCHORS = {"ring": "VEEGAN 8 / 52.9, PacGAN 7.9 / 95.6",
           "grid": "VEEGAN 24.6 / 40, PacGAN4 24.8 / 93.6"}


def run(name: str, config: str, seed: int, args) -> dict:
    make = ppgen.datasets.make_ring if name == "ring" else ppgen.datasets.make_grid
    x, params = make(args.num_data, seed=seed)
    plain = config == "plain"
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(128, 128, 128),
                    **({"pack": 1} if plain else {}))
    options = {"ema_decay": 0.0, "r1_weight": 0.0} if plain else {}
    start = time.perf_counter()
    ppgen.fit(gan, x, "svi", num_steps=args.num_steps, batch_size=args.batch_size, tol=0,
              progress=False, seed=seed, **options)
    seconds = time.perf_counter() - start
    m = mixture_metrics(gan, params["modes"], params["std"], num_samples=2500, seed=seed)
    return {"data": name, "config": config, "seed": seed, "seconds": seconds,
            **m.as_dict()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--num-data", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.num_steps, args.num_data = 2, min(args.num_steps, 300), 5000
    torch.set_num_threads(args.threads)
    rows = [run(name, config, seed, args) for name in ("ring", "grid")
            for config in ("ppgen", "plain") for seed in range(args.seeds)]
    print(f"steps {args.num_steps}, batch {args.batch_size}, {args.seeds} seeds, "
          f"{args.num_data} training points, {args.threads} thread(s)")
    print(f"{'data':5} {'config':6} {'modes':>12} {'% HQ':>12} {'rev KL':>8} "
          f"{'all modes':>10} {'s/run':>6}   anchors")
    summary = {}
    for name in ("ring", "grid"):
        for config in ("ppgen", "plain"):
            sel = [r for r in rows if r["data"] == name and r["config"] == config]
            modes = np.array([r["modes"] for r in sel])
            hq = np.array([r["high_quality"] for r in sel])
            kl = np.array([r["reverse_kl"] for r in sel])
            full = 8 if name == "ring" else 25
            all_modes = int((modes == full).sum())
            secs = float(np.mean([r["seconds"] for r in sel]))
            summary[f"{name}/{config}"] = {"modes": float(modes.mean()),
                                           "modes_min": float(modes.min()),
                                           "high_quality": float(hq.mean()),
                                           "high_quality_min": float(hq.min()),
                                           "reverse_kl": float(kl.mean()),
                                           "seeds_all_modes": all_modes, "seconds": secs}
            print(f"{name:5} {config:6} {modes.mean():6.2f} (>={modes.min():.0f}) "
                  f"{hq.mean():6.1f} (>={hq.min():.1f}) {kl.mean():8.3f} "
                  f"{all_modes:>5}/{len(sel):<4} {secs:6.1f}   "
                  f"{ANCHORS[name] if config == 'ppgen' else ''}")
    out = {"args": vars(args), "rows": rows, "summary": summary}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
