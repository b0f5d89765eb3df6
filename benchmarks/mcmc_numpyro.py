"""NumPyro's NUTS on eight schools (non-centred), as ``benchmarks/mcmc.py`` runs ppgen's
samplers: ESS(tau) (ArviZ bulk ESS) per CPU second and per wall second, compile, warm-up and
sampling included, 500 warm-up iterations and 8192 kept draws in all (2048 a chain for 4
chains, 128 for 64, 32 for 1024), chain_method="vectorized" for several chains, one CPU
thread (XLA flags below).

NumPyro is not a dependency of ppgen: run this script in an environment of its own, e.g.::

    python3 -m venv /tmp/npvenv && /tmp/npvenv/bin/pip install numpyro jax arviz
    /tmp/npvenv/bin/python benchmarks/mcmc_numpyro.py

and put its rows beside ``benchmarks/mcmc.py``'s (both print the same columns).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import time  # noqa: E402

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", len(sigma)):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(mu + tau * theta_raw, sigma), obs=y)


def run(num_chains: int, num_samples: int, seed: int) -> dict:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    mcmc = MCMC(NUTS(eight_schools), num_warmup=500, num_samples=num_samples,
                num_chains=num_chains, chain_method="vectorized" if num_chains > 1 else
                "sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), jnp.asarray(SIGMA), y=jnp.asarray(Y))
    tau = np.asarray(mcmc.get_samples(group_by_chain=True)["tau"])
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ess = float(az.ess(az.convert_to_dataset({"tau": tau}), method="bulk")["tau"])
    return {"chains": num_chains, "cpu": cpu, "wall": wall, "ess": ess,
            "mean_tau": float(tau.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chains", default="1,4,64,1024")
    args = p.parse_args()
    print(f"numpyro {numpyro.__version__}, jax {jax.__version__}; load average before "
          f"{os.getloadavg()[0]:.2f}")
    print("| sampler | chains | draws kept | CPU s | wall s | ESS(tau) | ESS/CPU s | "
          "ESS/wall s | mean tau |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in (int(v) for v in args.chains.split(",")):
        per = 32 if c >= 1024 else max(32, 8192 // c)
        r = run(c, per, args.seed)
        print(f"| NumPyro NUTS ({'vectorized' if c > 1 else 'one chain'}) | {c} | {per * c} | "
              f"{r['cpu']:.2f} | {r['wall']:.2f} | {r['ess']:.0f} | {r['ess'] / r['cpu']:.1f} "
              f"| {r['ess'] / r['wall']:.1f} | {r['mean_tau']:.2f} |", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
