"""PSIS k-hat's guide draws and log-densities in one vectorised guide trace (issue 14, item
3), with the per-draw loop kept for guides that do not broadcast over a plate of draws."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch

import ppgen
from ppgen import diagnostics
from ppgen._context import isolated

DATA = torch.randn(40, generator=torch.Generator().manual_seed(0)) + 1.0


def model(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(mu, sigma), obs=data)


def _fit(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppgen.fit(model, DATA, method="svi", seed=0, num_steps=400, lr=0.05,
                         num_samples=10, progress=False, **kw)


def test_vectorised_draws_have_the_guides_distribution_and_log_density():
    fit = _fit()
    with torch.no_grad(), poutine.block(), isolated(0):
        draws, log_q = diagnostics._guide_draws_and_log_q(fit, 2000)
    assert draws["mu"].shape == (2000,) and draws["sigma"].shape == (2000,)
    assert log_q.shape == (2000,)
    # AutoNormal: mu ~ Normal(loc, scale); log sigma ~ Normal(loc, scale).
    for name, values in (("mu", draws["mu"]), ("sigma", draws["sigma"].log())):
        loc = float(getattr(fit.guide.locs, name).detach())
        scale = float(getattr(fit.guide.scales, name).detach())
        assert abs(float(values.mean()) - loc) < 4.5 * scale / np.sqrt(2000)
        assert abs(float(values.std()) / scale - 1) < 0.1
    # Each draw's log-density is the guide's, in the constrained space: Normal on mu,
    # LogNormal on sigma (the exp's Jacobian included).
    loc, scale = ({n: getattr(p, n).detach() for n in ("mu", "sigma")}
                  for p in (fit.guide.locs, fit.guide.scales))
    expected = (dist.Normal(loc["mu"], scale["mu"]).log_prob(draws["mu"])
                + dist.LogNormal(loc["sigma"], scale["sigma"]).log_prob(draws["sigma"]))
    assert torch.allclose(log_q.float(), expected, rtol=1e-5, atol=1e-4)


def test_a_guide_that_does_not_broadcast_falls_back_to_one_trace_per_draw(monkeypatch):
    def guide(data):
        loc = pyro.param("loc", torch.tensor(1.0))
        mu = pyro.sample("mu", dist.Normal(loc, 0.2))
        # reshape(()) holds for one draw only: this guide cannot take a plate of draws
        pyro.sample("sigma", dist.LogNormal(mu.reshape(()) * 0.0, 0.2))

    fit = _fit(guide=guide)
    calls = []
    loop = diagnostics._guide_draws_and_log_q_loop
    monkeypatch.setattr(diagnostics, "_guide_draws_and_log_q_loop",
                        lambda f, n: calls.append(n) or loop(f, n))
    k = diagnostics._khat(fit, num_draws=50)
    assert calls == [50] and np.isfinite(k)


def test_khat_of_the_vectorised_draws_does_not_use_the_loop(monkeypatch):
    fit = _fit()
    monkeypatch.setattr(diagnostics, "_guide_draws_and_log_q_loop",
                        lambda *a: (_ for _ in ()).throw(AssertionError("loop used")))
    assert np.isfinite(diagnostics._khat(fit, num_draws=200))
