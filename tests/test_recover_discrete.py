"""recover_discrete draws every posterior draw's discrete sites in one infer_discrete pass
over a plate of draws, with the same conditional distribution as one pass per draw."""

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from ppgen.inference import mcmc
from ppgen.inference.tracing import inspect_model

X = torch.tensor([-2.0, -0.3, 0.1, 0.4, 2.5])


def mixture(data):
    w = pyro.sample("w", dist.Beta(2.0, 2.0))
    locs = pyro.sample("locs", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Bernoulli(w))
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z.long()], 1.0), obs=data)


def _exact(w, locs):
    """p(z_i = 1 | w, locs, x_i) per datum."""
    log1 = torch.log(w) + dist.Normal(locs[1], 1.0).log_prob(X)
    log0 = torch.log1p(-w) + dist.Normal(locs[0], 1.0).log_prob(X)
    return torch.sigmoid(log1 - log0)


def test_vectorised_recovery_matches_the_exact_conditional_and_the_loop(monkeypatch):
    info = inspect_model(mixture, (X,), {})
    assert info.discrete == ("z",)
    # Two parameter values, alternating over 2 chains x 2,000 draws.
    a = (torch.tensor(0.3), torch.tensor([-1.0, 1.5]))
    b = (torch.tensor(0.8), torch.tensor([0.5, -0.5]))
    n = 2000
    w = torch.stack([a[0], b[0]]).repeat(n)[:2 * n].reshape(2, n)
    locs = torch.stack([a[1], b[1]]).repeat(n, 1)[:2 * n].reshape(2, n, 2)
    samples = {"w": w, "locs": locs}
    looped = []
    orig = mcmc._discrete_per_draw
    monkeypatch.setattr(mcmc, "_discrete_per_draw",
                        lambda *args: looped.append(1) or orig(*args))
    fast = mcmc.recover_discrete(mixture, samples, (X,), {}, info, seed=0)
    assert not looped  # one pass over all draws
    assert fast["z"].shape == (2, n, len(X))
    # The loop, on fewer draws (it costs one trace each).
    m = 400
    slow = mcmc._discrete_per_draw(pyro.infer.config_enumerate(mixture, default="parallel"),
                                   {"w": w.reshape(-1)[:m], "locs": locs.reshape(-1, 2)[:m]},
                                   ["w", "locs"], m, (X,), {}, info)["z"]
    flat = fast["z"].reshape(-1, len(X))
    for parity, (wv, lv) in enumerate((a, b)):
        p = _exact(wv, lv)
        for draws, count in ((flat[parity::2], n), (slow[parity::2], m // 2)):
            freq = draws.float().mean(0)
            se = (p * (1 - p) / count).sqrt()
            assert torch.all((freq - p).abs() <= 4.5 * se + 1e-6), (parity, freq, p)


def test_a_model_that_does_not_broadcast_over_draws_falls_back_to_the_loop(monkeypatch):
    def scalar_only(data):
        w = pyro.sample("w", dist.Beta(2.0, 2.0))
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Bernoulli(w.reshape(())))  # one draw at a time only
            pyro.sample("obs", dist.Normal(2.0 * z - 1.0, 1.0), obs=data)

    info = inspect_model(scalar_only, (X,), {})
    samples = {"w": torch.full((1, 6), 0.5)}
    looped = []
    orig = mcmc._discrete_per_draw
    monkeypatch.setattr(mcmc, "_discrete_per_draw",
                        lambda *args: looped.append(1) or orig(*args))
    out = mcmc.recover_discrete(scalar_only, samples, (X,), {}, info, seed=0)
    assert looped == [1]
    assert out["z"].shape == (1, 6, len(X))
    assert set(out["z"].unique().tolist()) <= {0.0, 1.0}
