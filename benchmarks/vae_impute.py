"""Benchmark: completing half-hidden MNIST digits with a VAE, Metropolis-within-Gibbs against
pseudo-Gibbs and mean imputation.

Run directly (not in ``make bench``; about 10 minutes on 2 quiet cores)::

    .venv/bin/python benchmarks/vae_impute.py                  # train 10 epochs, then impute
    .venv/bin/python benchmarks/vae_impute.py --model runs/vae.pt   # a saved ppgen.VAE
    .venv/bin/python benchmarks/vae_impute.py --quick          # smoke run (seconds)

Set-up: a ``ppgen.VAE(784, latent_dim=50, hidden_dims=(200, 200), activation="tanh")``
trained by ``ppgen.fit(vae, load_mnist("train", binarize="dynamic"), "svi", num_epochs=E,
batch_size=100)`` (or loaded with ``--model``); the first ``--test-images`` images of one
fixed binarization of MNIST test, with half of every image hidden (NaN): the bottom half
(rows 14-27), the right half (columns 14-27), or a random half of the pixels (a fresh mask
per image). Imputations of the hidden pixels:

* mean: the training images' mean intensity per pixel;
* pseudo-Gibbs (Rezende et al. 2014): ``vae.impute(x, method="pseudo_gibbs")``;
* Metropolis-within-Gibbs (Mattei & Frellsen 2018): ``vae.impute(x)`` (the default; its
  burn-in iterations are pseudo-Gibbs moves, ``burnin_method="pseudo_gibbs"``).

Both samplers run ``--num-steps`` kept iterations after ``--num-burnin`` (ppgen's defaults,
500 and 100) and return the Rao-Blackwellised mean; each runs with ``--chain-seeds`` seeds.
Error: the mean squared error over hidden pixels against the binary test image (the Brier
score of the imputed probabilities) and against the original grey levels; the paired
standard error over images of each sampler's difference to pseudo-Gibbs.
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2,000 training images, 1 epoch, 20 test images, 20 steps")
    p.add_argument("--model", default=None, help="a saved ppgen.VAE (skips the training)")
    p.add_argument("--save", default=None, help="save the trained VAE here")
    p.add_argument("--epochs", type=int, default=None, help="default 10 (1 with --quick)")
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None, help="default 1000 (20 quick)")
    p.add_argument("--num-steps", type=int, default=None, help="default 500 (20 quick)")
    p.add_argument("--num-burnin", type=int, default=None, help="default 100 (5 quick)")
    p.add_argument("--chain-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--masks", nargs="+", default=["bottom", "right", "random"],
                   choices=["bottom", "right", "random"])
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="PATH", default=None)
    args = p.parse_args(argv)
    defaults = {"epochs": (10, 1), "train_images": (50_000, 2000), "test_images": (1000, 20),
                "num_steps": (500, 20), "num_burnin": (100, 5)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def make_mask(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 784) True where hidden."""
    grid = torch.zeros(n, 28, 28, dtype=torch.bool)
    if kind == "bottom":
        grid[:, 14:, :] = True
    elif kind == "right":
        grid[:, :, 14:] = True
    else:
        order = torch.rand(n, 784, generator=generator).argsort(1)
        grid = torch.zeros(n, 784, dtype=torch.bool).scatter_(1, order[:, :392], True)
    return grid.reshape(n, 784)


def errors(filled: torch.Tensor, binary: torch.Tensor, grey: torch.Tensor,
           mask: torch.Tensor) -> dict:
    """Per-image MSE over hidden pixels (against the binary and the grey image)."""
    count = mask.sum(1).double()
    out = {}
    for name, ref in (("binary", binary), ("grey", grey)):
        sq = ((filled.double() - ref.double()).square() * mask).sum(1) / count
        out[name] = sq
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import ppgen

    torch.set_num_threads(args.threads)
    print(f"# VAE imputation of half-hidden MNIST digits; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    train_src, _ = ppgen.datasets.load_mnist("train", binarize="dynamic")
    if args.model:
        vae = ppgen.load(args.model)
        print(f"model: {args.model}")
    else:
        if args.train_images < len(train_src):
            train_src = ppgen.datasets.DynamicBinarized(train_src.probs[:args.train_images])
        vae = ppgen.VAE(784, latent_dim=50, hidden_dims=(200, 200), activation="tanh")
        w0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ppgen.fit(vae, train_src, "svi", num_epochs=args.epochs, batch_size=100, lr=1e-3,
                      tol=0, seed=args.seed, progress=False)
        print(f"model: 784-200-200-50 VAE trained {args.epochs} epochs on "
              f"{len(train_src):,} images in {time.perf_counter() - w0:.0f} s")
        if args.save:
            ppgen.save(vae, args.save)
    mean_image = train_src.probs.reshape(len(train_src), -1).double().mean(0).float()
    test_src, _ = ppgen.datasets.load_mnist("test", binarize="dynamic")
    n = min(args.test_images, len(test_src))
    binary = test_src.fixed(0)[:n].reshape(n, -1)
    grey = test_src.probs[:n].reshape(n, -1)
    print(f"test: first {n} images of fixed(0); samplers: {args.num_steps} kept steps after "
          f"{args.num_burnin} burn-in, chain seeds {args.chain_seeds}")
    print()
    print("| hidden half | imputation | MSE vs binary | MSE vs grey | vs pseudo-Gibbs (binary), "
          "paired s.e. | acceptance | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results = []
    g = torch.Generator().manual_seed(12345)
    for kind in args.masks:
        mask = make_mask(kind, n, g)
        data = binary.masked_fill(mask, float("nan"))
        runs = {"mean": [(errors(torch.where(mask, mean_image, binary), binary, grey, mask),
                          math.nan, 0.0)]}
        for method, label in (("pseudo_gibbs", "pseudo-Gibbs"),
                              ("mwg", "Metropolis-within-Gibbs")):
            runs[label] = []
            for s in args.chain_seeds:
                w0 = time.perf_counter()
                out, acc = vae.impute(data, method=method, num_steps=args.num_steps,
                                      num_burnin=args.num_burnin, seed=s,
                                      return_acceptance=True)
                runs[label].append((errors(out, binary, grey, mask), float(acc.mean()),
                                    time.perf_counter() - w0))
        ref = torch.stack([r[0]["binary"] for r in runs["pseudo-Gibbs"]]).mean(0)
        for label, reps in runs.items():
            per_image = torch.stack([r[0]["binary"] for r in reps]).mean(0)
            grey_err = float(torch.stack([r[0]["grey"] for r in reps]).mean())
            d = per_image - ref
            diff = (f"{float(d.mean()):+.5f} ({float(d.std() / math.sqrt(n)):.5f})"
                    if label != "pseudo-Gibbs" else "")
            acc = statistics.fmean(r[1] for r in reps)
            secs = statistics.fmean(r[2] for r in reps)
            spread = ""
            if len(reps) > 1:
                per_seed = [float(r[0]["binary"].mean()) for r in reps]
                spread = " (seeds " + ", ".join(f"{v:.4f}" for v in per_seed) + ")"
            print(f"| {kind} | {label} | {float(per_image.mean()):.4f}{spread} | "
                  f"{grey_err:.4f} | {diff} | {'' if math.isnan(acc) else f'{acc:.3f}'} | "
                  f"{secs:.1f} |", flush=True)
            results.append({"mask": kind, "imputation": label,
                            "mse_binary": float(per_image.mean()), "mse_grey": grey_err,
                            "vs_pseudo_gibbs": float(d.mean()),
                            "vs_pseudo_gibbs_se": float(d.std() / math.sqrt(n)),
                            "acceptance": acc, "seconds": secs})
    print()
    for kind in args.masks:
        rows = {r["imputation"]: r for r in results if r["mask"] == kind}
        mwg, pg, mean = (rows[k]["mse_binary"] for k in
                         ("Metropolis-within-Gibbs", "pseudo-Gibbs", "mean"))
        ok = mwg < pg and mwg < mean
        print(f"- {kind}: MSE vs binary: Metropolis-within-Gibbs {mwg:.4f}, pseudo-Gibbs "
              f"{pg:.4f}, mean {mean:.4f}; MWG lowest [{'PASS' if ok else 'FAIL'}]")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": vars(args), "rows": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
