"""MCMC throughput: Pyro's NUTS against ppgen's ChEES-HMC on eight schools, the Old
Faithful mixture and Bayesian logistic regression on 50,000 MNIST rows.

Run: ``.venv/bin/python benchmarks/mcmc.py`` (about 15-20 minutes on 2 cores; ``--quick``
for a smoke run of seconds; ``--models`` to pick some of ``schools,faithful,logistic``).
Prints:

1. The chain-batched potential (``ppgen.inference.potential.BatchedPotential``) of eight
   schools: time of one call giving U and grad U for C chains (C = 1, 4, 64, 1024) in each
   of its forms (the chain plate compiled by the JIT, which ChEES uses for this model;
   uncompiled; vmap), against Pyro's potential and gradient for one chain (plain and
   JIT-compiled).
2. Per model, bulk ESS (ArviZ ``ess``, method "bulk") per CPU second and per wall second,
   **the minimum over every scalar of every continuous latent site** (the parameter named),
   warm-up, compilation and ppgen's post-processing (discrete recovery, relabelling)
   included, for Pyro's NUTS with and without the JIT (4 chains one after another, through
   ``ppgen.fit(..., kernel="pyro-nuts")``, which records its leapfrog steps) and
   ``ppgen.fit(..., kernel="chees")`` at several chain counts. ChEES needs at least 2
   chains (it adapts from statistics across chains): there is no 1-chain row.

   - eight schools (non-centred, 10 unknowns): 500 warm-up iterations; 8192 kept draws in
     all (2048 a chain for 4 chains, 128 for 64), 1024 chains keep 32 each (32768).
   - Old Faithful (272 rows x 2, ``ppgen.GaussianMixture(2, covariance="diag")``,
     assignments enumerated; 10 unknowns after relabelling: weights, locs, scales): 150
     warm-up; NUTS and 4 chains keep 150 a chain, 64 chains 32 a chain. The enumerated
     potential runs under ``torch.func.vmap`` (8-16 ms a call at 4 chains, ~150 ms at 1024):
     1024 chains would take about an hour and are left out.
   - logistic regression: ``load_mnist("train")`` (its 50,000 rows), digit 8 against the
     rest, pixels average-pooled 4x4 (7x7 = 49 features; the one constant pooled pixel
     dropped: 48), standardised, float32; alpha ~ N(0, 5^2), beta ~ N(0, I); 150 warm-up
     (``--logistic-warmup``), 150 kept a chain. ChEES at 4 chains only: one call for 64
     chains costs ~0.2 s (data x chains), ~30 minutes for the run.

CPU seconds are ``time.process_time()`` of this process (all its threads); one intra-op
thread throughout. The load average before and after is printed: other processes on the
machine slow the wall clock.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import arviz as az
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad

import ppgen
from ppgen.inference.potential import BatchedPotential, FlatSpec, chain_plate_potential
from ppgen.inference.tracing import inspect_model

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", 8):
        theta_t = pyro.sample("theta_t", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_t, SIGMA), obs=data)


def _per_call(fn, repeats: int) -> float:
    for _ in range(3):  # compile, first-call checks, the JIT's profiling runs
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def potential_table(chains: list[int], repeats: int) -> None:
    pyro.set_rng_seed(0)
    init, potential_fn, transforms, _ = initialize_model(eight_schools, (Y,), {},
                                                         max_plate_nesting=1)
    _, jit_fn, _, _ = initialize_model(eight_schools, (Y,), {}, max_plate_nesting=1,
                                       jit_compile=True, skip_jit_warnings=True)
    spec = FlatSpec.from_values(init)
    one = {k: v.detach() for k, v in init.items()}
    plain = _per_call(lambda: potential_grad(potential_fn, one), repeats)
    jitted = _per_call(lambda: potential_grad(jit_fn, one), repeats)
    print("\n## Batched potential: U and grad U of eight schools (D = 10) in one call\n")
    print("| evaluation | chains | time/call (us) | time/chain (us) | per-chain speed-up vs "
          "Pyro jit |")
    print("|---|---:|---:|---:|---:|")
    print(f"| Pyro potential_grad | 1 | {plain * 1e6:.0f} | {plain * 1e6:.0f} | "
          f"{jitted / plain:.2f}x |")
    print(f"| Pyro potential_grad, jit | 1 | {jitted * 1e6:.0f} | {jitted * 1e6:.0f} | 1.00x |")
    info = inspect_model(eight_schools, (Y,), {})
    plate = chain_plate_potential(eight_schools, (Y,), {}, spec, transforms, info.batch_dims,
                                  info.max_plate_nesting)
    for c in chains:
        q = torch.randn(c, spec.dim, generator=torch.Generator().manual_seed(c))
        for mode in ("plate-jit", "plate", "vmap"):
            batched = BatchedPotential(potential_fn, spec, plate_fn=plate)
            batched(q)
            assert batched.mode == "plate-jit", batched.mode
            batched.mode = mode
            t = _per_call(lambda b=batched, x=q: b(x), repeats)
            print(f"| BatchedPotential ({mode}) | {c} | {t * 1e6:.0f} | {t / c * 1e6:.1f} | "
                  f"{jitted / (t / c):.2f}x |")
    loop = BatchedPotential(potential_fn, spec, vectorize=False)
    q = torch.randn(4, spec.dim)
    t = _per_call(lambda: loop(q), repeats)
    print(f"| per-chain loop (fallback) | 4 | {t * 1e6:.0f} | {t / 4 * 1e6:.0f} | "
          f"{jitted / (t / 4):.2f}x |")


def logistic(target, feats):
    """Bayesian logistic regression; ``feats`` (N, F). Written to broadcast over an outer
    plate of chains (beta (C, 1, F), alpha (C, 1)) as well as for one chain."""
    alpha = pyro.sample("alpha", dist.Normal(torch.tensor(0.0, dtype=feats.dtype), 5.0))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(feats.shape[1], dtype=feats.dtype),
                                           1.0).to_event(1))
    if beta.dim() > 1:
        logits = alpha + (beta @ feats.T)[..., 0, :]
    else:
        logits = alpha + feats @ beta
    with pyro.plate("data", len(target)):
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=target)


def mnist_logistic_data(num_rows: int | None = None):
    """``load_mnist("train")`` (50,000 rows): digit 8 against the rest, 4x4-pooled pixels
    (constant ones dropped), standardised; float32. ``num_rows`` keeps the first rows."""
    x, y = ppgen.datasets.load_mnist("train")
    if num_rows is not None:
        x, y = x[:num_rows], y[:num_rows]
    pooled = torch.nn.functional.avg_pool2d(x.reshape(-1, 1, 28, 28), 4).reshape(len(x), -1)
    pooled = pooled[:, pooled.std(0) > 1e-3]
    feats = (pooled - pooled.mean(0)) / pooled.std(0)
    return (y == 8).to(feats.dtype), feats


@dataclass
class Workload:
    name: str
    model: Callable[[], Any]  # a fresh model (a built-in one carries state) or a function
    data: Any
    kwargs: dict
    sites: tuple[str, ...]  # continuous latent sites: the minimum ESS is over these
    warmup: int
    nuts_draws: int
    chees: list[tuple[int, int]]  # (chains, draws a chain)


def min_bulk_ess(posterior: dict, sites: tuple[str, ...]) -> tuple[float, str]:
    """The smallest ArviZ bulk ESS over every scalar of ``sites`` and its name."""
    best, where = math.inf, ""
    for name in sites:
        d = posterior[name].double().numpy()
        d = d.reshape(d.shape[0], d.shape[1], -1)
        for i in range(d.shape[-1]):
            ess = float(az.ess(d[..., i], method="bulk"))
            if ess < best:
                best, where = ess, name if d.shape[-1] == 1 else f"{name}[{i}]"
    return best, where


def run_one(work: Workload, kernel: str, chains: int, draws: int, seed: int,
            jit: bool | None = None) -> dict:
    options: dict[str, Any] = {"jit_compile": jit} if kernel == "pyro-nuts" else {}
    cpu, wall = time.process_time(), time.perf_counter()
    fit = ppgen.fit(work.model(), work.data, method="mcmc", kernel=kernel, num_chains=chains,
                    num_warmup=work.warmup, num_samples=draws, seed=seed, progress=False,
                    model_kwargs=work.kwargs or None, **options)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ess, where = min_bulk_ess(fit.posterior, work.sites)
    rhat = max(float(az.rhat(fit.posterior[n].double().numpy().reshape(chains, draws, -1)[
        ..., i])) for n in work.sites
        for i in range(int(fit.posterior[n][0, 0].numel())))
    stats = fit.sample_stats
    return {"chains": chains, "draws": draws, "ess": ess, "where": where, "rhat": rhat,
            "steps": float(stats["n_steps"].mean()), "div": int(stats["diverging"].sum()),
            "cpu": cpu, "wall": wall}


def workloads(quick: bool, models: list[str], logistic_warmup: int = 150) -> list[Workload]:
    out = []
    if "schools" in models:
        if quick:
            out.append(Workload("eight schools (non-centred)", lambda: eight_schools, Y, {},
                                ("mu", "tau", "theta_t"), 20, 8, [(4, 8), (8, 4)]))
        else:
            out.append(Workload("eight schools (non-centred)", lambda: eight_schools, Y, {},
                                ("mu", "tau", "theta_t"), 500, 2048,
                                [(4, 2048), (64, 128), (1024, 32)]))
    if "faithful" in models:
        x = ppgen.datasets.load_old_faithful()
        if quick:
            x = x[:40]
        out.append(Workload("Old Faithful mixture (K=2, diag)",
                            lambda: ppgen.GaussianMixture(2, covariance="diag"), x, {},
                            ("weights", "locs", "scales"), 10 if quick else 150,
                            4 if quick else 150,
                            [(4, 4)] if quick else [(4, 150), (64, 32)]))
    if "logistic" in models:
        target, feats = mnist_logistic_data(2000 if quick else None)
        out.append(Workload(f"logistic regression (MNIST 8 vs rest, {len(target):,} rows, "
                            f"{feats.shape[1]} features)", lambda: logistic, target,
                            {"feats": feats}, ("alpha", "beta"), 10 if quick else logistic_warmup,
                            4 if quick else 150, [(4, 4)] if quick else [(4, 150)]))
    return out


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="schools,faithful,logistic",
                        help="comma-separated: schools, faithful, logistic")
    parser.add_argument("--logistic-warmup", type=int, default=150,
                        help="warm-up iterations of logistic regression (default 150)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"schools", "faithful", "logistic"})
    if unknown:
        parser.error(f"--models: expected names among schools, faithful, logistic, got "
                     f"{', '.join(unknown)}")
    torch.set_num_threads(1)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = "?"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    print(f"# MCMC benchmark: {', '.join(models)}, {now} UTC, commit {commit}")
    print(f"python {platform.python_version()}, torch {torch.__version__} (threads="
          f"{torch.get_num_threads()}), pyro {pyro.__version__}, arviz {az.__version__}")
    print(f"load average before: {_load()}")
    if "schools" in models:
        potential_table([1, 4, 8] if args.quick else [1, 4, 64, 1024], 3 if args.quick else 200)
    for work in workloads(args.quick, models, args.logistic_warmup):
        runs = [("Pyro NUTS (jit)", "pyro-nuts", 4, work.nuts_draws, True),
                ("Pyro NUTS (no jit)", "pyro-nuts", 4, work.nuts_draws, False)]
        runs += [(f"ppgen chees, {c} chains", "chees", c, d, None) for c, d in work.chees]
        rows = []
        for name, kernel, c, d, jit in runs:
            rows.append((name, run_one(work, kernel, c, d, args.seed, jit)))
            print(f"  done: {name} ({rows[-1][1]['wall']:.1f} s wall, load {_load()})",
                  flush=True)
        ref = rows[0][1]
        print(f"\n## {work.name}: minimum bulk ESS per second, warm-up and compilation "
              f"included ({work.warmup} warm-up iterations)\n")
        print("| sampler | chains | draws/chain | min bulk ESS | (at) | max R-hat | "
              "leapfrogs/iter | divergences | CPU s | wall s | ESS/CPU s | ESS/wall s | "
              "vs NUTS jit (CPU) | vs NUTS jit (wall) |")
        print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in rows:
            print(f"| {name} | {r['chains']} | {r['draws']} | {r['ess']:.0f} | {r['where']} | "
                  f"{r['rhat']:.3f} | {r['steps']:.1f} | {r['div']} | {r['cpu']:.1f} | "
                  f"{r['wall']:.1f} | {r['ess'] / r['cpu']:.1f} | {r['ess'] / r['wall']:.1f} | "
                  f"{r['ess'] / r['cpu'] / (ref['ess'] / ref['cpu']):.2f}x | "
                  f"{r['ess'] / r['wall'] / (ref['ess'] / ref['wall']):.2f}x |")
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
