"""MCMC on Old Faithful: convergence after relabelling (the numbers in the issue-2 note).

Run: ``.venv/bin/python benchmarks/gmm_mcmc.py`` (about 1.5 minutes on 2 cores).
Prints, for weights, locs and scales, the largest R-hat and the smallest bulk ESS over the
elements, the PSIS-LOO elpd, divergences and wall time; then SVI-MAP's log-likelihood.
"""

import time

import arviz as az
import torch

import ppgen


def main() -> None:
    torch.set_num_threads(1)
    x = ppgen.datasets.load_old_faithful()
    gmm = ppgen.GaussianMixture(2)
    start = time.perf_counter()
    fit = ppgen.fit(gmm, x, method="mcmc", seed=0, num_chains=4, num_samples=300,
                    num_warmup=300, progress=False)
    elapsed = time.perf_counter() - start
    idata = fit.to_arviz()
    names = ["weights", "locs", "scales"]
    rhat = az.rhat(idata, var_names=names)
    ess = az.ess(idata, var_names=names, method="bulk")
    for n in names:
        print(f"{n}: max R-hat {float(rhat[n].max()):.4f}, min bulk ESS {float(ess[n].min()):.0f}")
    print(f"PSIS-LOO elpd {az.loo(idata).elpd_loo:.1f}; divergences "
          f"{int(fit.sample_stats['diverging'].sum())}; {elapsed:.0f} s")
    svi = ppgen.GaussianMixture(2)
    ppgen.fit(svi, x, method="svi", seed=0, num_steps=1500, lr=0.02, progress=False)
    em = ppgen.GaussianMixture(2)
    ppgen.fit(em, x, method="em", seed=0, progress=False)
    print(f"log-likelihood: EM {float(em.log_prob(x).sum()):.4f}, "
          f"SVI-MAP {float(svi.log_prob(x).sum()):.4f}")


if __name__ == "__main__":
    main()
