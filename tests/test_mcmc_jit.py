"""The PyTorch JIT for model functions under method="mcmc": on by default where the model
traces correctly, off with a JITFallbackWarning where it does not (issue 14, item 3)."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import mcmc
from ppgen.inference.mcmc import JITFallbackWarning, jit_problem

Y = torch.tensor([1.2, 0.4, 2.1, 1.7, 0.9, 1.5])


def normal_normal(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def branchy(data):
    """The likelihood's scale depends on mu through a Python ``if``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    scale = 1.0 if mu > -1.0 else 3.0
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(mu, scale), obs=data - 1.5)


def _spy(monkeypatch):
    seen = []
    init = mcmc._RecordingNUTS.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["jit_compile"])
        init(self, *args, **kwargs)

    monkeypatch.setattr(mcmc._RecordingNUTS, "__init__", spy)
    return seen


def _fit(model, num_chains=2, **kw):
    return ppgen.fit(model, Y, method="mcmc", seed=0, progress=False, num_samples=300,
                     num_warmup=150, num_chains=num_chains, **kw)


def _agrees(draws, mean, sd, z=4.5):
    import arviz as az
    d = np.asarray(draws)
    ess = float(az.ess(d))
    assert abs(d.mean() - mean) < z * sd / np.sqrt(ess), (d.mean(), mean)
    assert abs(d.std() - sd) < 0.2 * sd, (d.std(), sd)


def test_a_traceable_model_function_is_compiled_by_default(monkeypatch):
    seen = _spy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", JITFallbackWarning)
        fit = _fit(normal_normal)
    assert seen == [True, True]  # both chains' kernels
    assert fit.options["jit_compile"] is True
    # The conjugate posterior: precision 1/4 + n, mean sum(y) / precision.
    precision = 0.25 + len(Y)
    _agrees(fit.posterior["mu"].numpy(), float(Y.sum()) / precision, precision ** -0.5)


def test_jit_compile_false_is_kept(monkeypatch):
    seen = _spy(monkeypatch)
    fit = ppgen.fit(normal_normal, Y, method="mcmc", seed=0, progress=False, num_samples=5,
                    num_warmup=5, num_chains=1, jit_compile=False)
    assert seen == [False] and fit.options["jit_compile"] is False


def test_jit_problem_names_value_dependent_python():
    assert jit_problem(normal_normal, (Y,), {}, 1, 0) is None
    assert "Python boolean" in jit_problem(branchy, (Y,), {}, 1, 0)

    def shape_from_value(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        k = int(mu.abs().ceil()) % 3 + 1
        pyro.sample("obs", dist.Normal(mu, 1.0).expand([k]).to_event(1), obs=data[:k])

    assert "Python integer" in jit_problem(shape_from_value, (Y,), {}, 0, 0)


def test_a_model_that_cannot_be_traced_still_fits_uncompiled(monkeypatch):
    seen = _spy(monkeypatch)
    with pytest.warns(JITFallbackWarning, match="jit_compile: .*Python boolean"):
        fit = _fit(branchy, num_chains=1)
    assert seen == [False] and fit.options["jit_compile"] is False
    # The exact posterior of mu on a grid (a traced potential would keep one branch).
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    scale = torch.where(grid > -1.0, 1.0, 3.0).unsqueeze(-1)
    logp = dist.Normal(0.0, 2.0).log_prob(grid) + dist.Normal(
        grid.unsqueeze(-1), scale).log_prob((Y - 1.5).double()).sum(-1)
    w = torch.softmax(logp, 0)
    mean = float((w * grid).sum())
    sd = float((w * (grid - mean) ** 2).sum().sqrt())
    _agrees(fit.posterior["mu"].numpy(), mean, sd)


def test_a_compiled_potential_that_fails_later_reruns_the_chain_uncompiled(monkeypatch):
    def refuses_tracing(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        if torch.jit.is_tracing():
            raise RuntimeError("not traceable here")
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    monkeypatch.setattr(mcmc, "jit_problem", lambda *a, **k: None)  # the check misses it
    seen = _spy(monkeypatch)
    with pytest.warns(JITFallbackWarning, match="failed in chain 0 .*not traceable here"):
        fit = ppgen.fit(refuses_tracing, Y, method="mcmc", seed=0, progress=False,
                        num_samples=20, num_warmup=20, num_chains=2)
    assert seen == [True, False, False] and fit.options["jit_compile"] is False
    assert fit.posterior["mu"].shape == (2, 20)
