"""MCMC throughput on eight schools (non-centred): Pyro's NUTS against ppgen's ChEES-HMC.

Run: ``.venv/bin/python benchmarks/mcmc.py`` (about 5 minutes on 2 cores; ``--quick`` for
a smoke run of seconds). Prints two tables:

1. The chain-batched potential (``ppgen.inference.potential.BatchedPotential``): time of one
   call giving U and grad U for C chains (C = 1, 4, 64, 1024) in each of its forms (the
   chain plate compiled by the JIT, which ChEES uses for this model; uncompiled; vmap),
   against Pyro's potential and gradient for one chain (plain and JIT-compiled).
2. ESS(tau) (ArviZ bulk ESS) per CPU second and per wall second, warm-up and compilation
   included, for Pyro NUTS (``jit_compile=True``, 4 chains one after another, run through
   ``ppgen.fit(..., kernel="nuts")``, which records its leapfrog steps) and
   ``ppgen.fit(..., kernel="chees")`` with 4, 64 and 1024 chains, all with 500 warm-up
   iterations; 8192 kept draws in all (2048 a chain for 4 chains, 128 for 64), except that
   1024 chains keep 32 each (32768): with fewer draws a chain ArviZ's ESS is unreliable.

CPU seconds are ``time.process_time()`` of this process (all its threads); one intra-op
thread throughout. The load average before and after is printed: other processes on the
machine slow the wall clock.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time

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


def run_pyro_nuts(num_chains: int, num_warmup: int, num_samples: int, seed: int):
    """Pyro's NUTS, JIT-compiled, chains one after another (ppgen's ``kernel="nuts"``, which
    records the leapfrog steps)."""
    fit = ppgen.fit(eight_schools, Y, method="mcmc", kernel="pyro-nuts", jit_compile=True,
                    num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
                    seed=seed, progress=False)
    return fit.posterior["tau"].numpy(), fit.sample_stats


def run_chees(num_chains: int, num_warmup: int, num_samples: int, seed: int):
    fit = ppgen.fit(eight_schools, Y, method="mcmc", kernel="chees", num_chains=num_chains,
                    num_warmup=num_warmup, num_samples=num_samples, seed=seed, progress=False)
    return fit.posterior["tau"].numpy(), fit.sample_stats


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        warmup, total, chains, repeats, min_draws = 20, 32, [4, 8], 3, 4
        nuts_warmup, nuts_samples = 20, 8
    else:
        warmup, total, chains, repeats, min_draws = 500, 8192, [4, 64, 1024], 200, 32
        nuts_warmup, nuts_samples = 500, 2048
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = "?"
    print(f"# MCMC benchmark: eight schools (non-centred), {datetime.date.today()}, commit "
          f"{commit}")
    print(f"python {platform.python_version()}, torch {torch.__version__} (threads="
          f"{torch.get_num_threads()}), pyro {pyro.__version__}, arviz {az.__version__}")
    print(f"load average before: {_load()}")
    potential_table([1, *chains] if 1 not in chains else chains, repeats)
    rows = []
    runs = [("Pyro NUTS (jit)", 4, nuts_warmup, nuts_samples, run_pyro_nuts)]
    # about `total` kept draws in all, but at least 32 a chain (ESS needs some draws a chain)
    runs += [(f"ppgen chees, {c} chains", c, warmup, max(total // c, min_draws), run_chees)
             for c in chains]
    for name, c, w, s, fn in runs:
        cpu, wall = time.process_time(), time.perf_counter()
        tau, stats = fn(c, w, s, args.seed)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        ess = float(az.ess(tau))
        rhat = float(az.rhat(tau))
        steps = f"{stats['n_steps'].mean():.1f}"
        div = int(stats["diverging"].sum())
        rows.append((name, c, w, s, tau.mean(), ess, rhat, steps, div, cpu, wall))
    nuts_cpu = rows[0][5] / rows[0][9]
    nuts_wall = rows[0][5] / rows[0][10]
    print("\n## ESS(tau) per second, warm-up and compilation included\n")
    print("| sampler | chains | warm-up | draws/chain | mean tau | ESS(tau) | R-hat | "
          "leapfrogs/iter | divergences | CPU s | wall s | ESS/CPU s | ESS/wall s | "
          "vs NUTS (CPU) | vs NUTS (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, c, w, s, mean, ess, rhat, steps, div, cpu, wall in rows:
        print(f"| {name} | {c} | {w} | {s} | {mean:.2f} | {ess:.0f} | {rhat:.3f} | {steps} | "
              f"{div} | {cpu:.1f} | {wall:.1f} | {ess / cpu:.1f} | "
              f"{ess / wall:.1f} | {ess / cpu / nuts_cpu:.2f}x | {ess / wall / nuts_wall:.2f}x |")
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
