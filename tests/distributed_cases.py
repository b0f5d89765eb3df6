"""The data and fits that tests/test_distributed.py runs on several ranks and in one process
(its spawned workers, and tests/torchrun_job.py under torchrun) to compare the two."""

from __future__ import annotations

import numpy as np
import torch

import ppgen


def gmm_data(n=1001):
    """1001 rows of a 3-component mixture in 2-D (float64)."""
    g = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]])
    x = centres[g.integers(0, 3, n)] + g.normal(size=(n, 2)) * [0.7, 1.3]
    return torch.from_numpy(x)


START = {"weights": torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
         "locs": torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], dtype=torch.float64),
         "covariances": torch.eye(2, dtype=torch.float64).repeat(3, 1, 1)}


def corpus():
    counts, _ = ppgen.datasets.make_corpus(101, 40, 3, seed=0)
    return torch.as_tensor(counts, dtype=torch.float64)


def bits():
    g = np.random.default_rng(0)
    probs = g.uniform(0.1, 0.9, size=(4, 16))
    return torch.as_tensor(g.uniform(size=(150, 16)) < probs[g.integers(0, 4, 150)],
                           dtype=torch.float32)


def train_vae(checkpoint, num_steps, resume=None):
    torch.manual_seed(0)
    vae = ppgen.VAE(16, latent_dim=2, hidden_dims=(8,))
    fit = ppgen.fit(vae, bits(), method="svi", batch_size=51, num_steps=num_steps, tol=0,
                    seed=0, progress=False, checkpoint=checkpoint, checkpoint_every=3,
                    resume=resume)
    return vae, fit


#: The HMM runs of the two-rank test: each emission, and the Gaussian on both E-step paths
#: (the fused compiled kernels, and forward-backward with per-frame marginals).
HMM_CASES = {
    "gaussian-full": dict(emission="gaussian", covariance="full"),
    "gaussian-diag-unfused": dict(emission="gaussian", covariance="diag"),
    "categorical": dict(emission="categorical", emission_concentration=1.5),
    "bernoulli": dict(emission="bernoulli"),
    "poisson": dict(emission="poisson", transition_concentration=2.0),
}


def sequences(case):
    """15 ragged sequences (19-59 steps) of a 3-state chain, as a list of tensors."""
    g = np.random.default_rng(1)
    trans = np.array([[0.85, 0.1, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    out = []
    for length in g.integers(19, 60, size=15):
        z = [g.integers(3)]
        for _ in range(length - 1):
            z.append(g.choice(3, p=trans[z[-1]]))
        z = np.array(z)
        emission = HMM_CASES[case]["emission"]
        if emission == "gaussian":
            x = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])[z] + g.normal(size=(length, 2))
        elif emission == "categorical":
            x = np.array([g.choice(5, p=p) for p in np.array(
                [[0.6, 0.2, 0.1, 0.05, 0.05], [0.1, 0.1, 0.6, 0.1, 0.1],
                 [0.05, 0.05, 0.1, 0.2, 0.6]])[z]])
        elif emission == "bernoulli":
            x = (g.uniform(size=(length, 4)) < np.array(
                [[0.9, 0.1, 0.5, 0.2], [0.2, 0.8, 0.3, 0.7], [0.5, 0.5, 0.9, 0.1]])[z]) * 1.0
        else:
            x = g.poisson(np.array([[1.0, 6.0], [4.0, 0.5], [9.0, 3.0]])[z]) * 1.0
        out.append(torch.as_tensor(x) if emission == "categorical"
                   else torch.as_tensor(x, dtype=torch.float64))
    return out


def fit_hmm(case):
    """The fitted model, its Fit, and whether its E-steps ran the fused compiled kernels."""
    from ppgen.models.sequence import compiled

    fused, kernel, calls = compiled.FUSED_EM, compiled.gaussian_e_step, []

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    compiled.FUSED_EM = case != "gaussian-diag-unfused"
    compiled.gaussian_e_step = counted
    try:
        model = ppgen.HiddenMarkovModel(3, **HMM_CASES[case])
        return model, fit_em(sequences(case), model), bool(calls)
    finally:
        compiled.FUSED_EM, compiled.gaussian_e_step = fused, kernel


def fit_em(x, model):
    return ppgen.fit(model, x, method="em", seed=0, tol=1e-12, num_steps=300,
                     num_restarts=2, progress=False)
