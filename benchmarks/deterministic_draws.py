"""Benchmark: the ``pyro.deterministic`` sites of many MCMC draws (ppgen.inference.tracing).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/deterministic_draws.py           # 1,024 x 100
    PYTHONPATH=$PWD .venv/bin/python benchmarks/deterministic_draws.py --quick   # 8 x 20

Eight schools (non-centred, ``theta = mu + tau * theta_raw`` deterministic) with random
draws of shape (chains, draws): ``deterministic_draws`` as a fit calls it (one vectorised
Predictive run, checked against per-draw runs on 3 draws) against the per-draw runs alone
(Pyro's ``Predictive`` without ``parallel``), one intra-op thread, one timing each. Prints
both times, their ratio and the largest difference of the values.
"""

from __future__ import annotations

import argparse
import os
import time

import pyro
import pyro.distributions as dist
import torch

from ppgen.inference import tracing

Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(sigma)):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_raw)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, default=1024)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="8 chains x 20 draws")
    args = p.parse_args(argv)
    if args.quick:
        args.chains, args.draws = 8, 20
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    shape = (args.chains, args.draws)
    samples = {"mu": torch.randn(shape, generator=g), "tau": torch.rand(shape, generator=g),
               "theta_raw": torch.randn(*shape, 8, generator=g)}
    info = tracing.inspect_model(eight_schools, (Y, SIGMA), {})
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    fast = tracing.deterministic_draws(eight_schools, samples, (Y, SIGMA), {}, info)
    t_fast = time.perf_counter() - t0
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}
    t0 = time.perf_counter()
    slow = pyro.infer.Predictive(eight_schools, posterior_samples=flat,
                                 return_sites=["theta"])(Y, SIGMA)["theta"]
    t_slow = time.perf_counter() - t0
    diff = float((fast["theta"].reshape(slow.shape) - slow).abs().max())
    print(f"| draws | ppgen deterministic_draws (s) | per-draw Predictive (s) | ratio | "
          f"max abs diff |\n|---:|---:|---:|---:|---:|\n| {args.chains} x {args.draws} | "
          f"{t_fast:.3f} | {t_slow:.3f} | {t_slow / t_fast:.0f}x | {diff:.1e} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
