"""MCMC with all chains vectorised in one process (issue 14, items 1-2): the chain-batched
potential (ppgen.inference.potential) and ChEES-HMC (ppgen.inference.chees) behind
``ppgen.fit(..., method="mcmc", kernel="chees")``.

References: closed forms (a correlated Gaussian, a conjugate normal-normal model), Pyro's
own NUTS (eight schools), the per-chain loop of ordinary autograd (the potential).
Tolerances scale with the ArviZ effective sample size.
"""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from common import assert_close
from pyro import poutine
from pyro.infer import MCMC, NUTS, config_enumerate
from pyro.infer.mcmc.util import initialize_model

import ppgen
from ppgen.inference import mcmc
from ppgen.inference.chees import halton, mass_windows, sample_chees
from ppgen.inference.potential import (
    BatchedPotential,
    FlatSpec,
    VmapFallbackWarning,
    chain_plate_potential,
)
from ppgen.inference.tracing import inspect_model

Y_SCHOOLS = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA_SCHOOLS = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(data):
    """Eight schools, non-centred."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", 8):
        theta_t = pyro.sample("theta_t", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_t)
        pyro.sample("obs", dist.Normal(theta, SIGMA_SCHOOLS), obs=data)


Y = torch.tensor([1.2, 0.4, 2.1, 1.7, 0.9, 1.5, -0.3, 1.1], dtype=torch.float64)
PRIOR_SD, NOISE_SD = 2.0, 1.0


def normal_normal(data):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=data.dtype), PRIOR_SD))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(mu, NOISE_SD), obs=data)


def normal_normal_posterior(data):
    precision = 1 / PRIOR_SD ** 2 + len(data) / NOISE_SD ** 2
    return float(data.sum() / NOISE_SD ** 2 / precision), 1 / precision


def not_vmappable(data):
    """normal_normal, but a value read into Python (``float``), which vmap cannot run; the
    branch never changes the density."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=data.dtype), PRIOR_SD))
    scale = NOISE_SD if float(mu.detach()) > -1e6 else 3.0
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(mu, scale), obs=data)


def gmm(data):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 2.0).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


def _fit(model, data, **kw):
    kw = {"num_chains": 64, "num_warmup": 150, "num_samples": 100, "seed": 0, **kw}
    return ppgen.fit(model, data, method="mcmc", kernel="chees", progress=False, **kw)


def _check_moments(draws, mean, var, *, z=4.5, max_rhat=1.01):
    """Mean and variance of draws (chains, draws, k) against the truth, within z Monte
    Carlo standard errors (from the ArviZ ESS of x and of (x - mean)^2); R-hat <= max_rhat
    (1.01 wants many chains: with 4 chains of 200 draws it varies by about 0.01)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d.reshape(d.shape[0], d.shape[1], -1)
    mean, var = np.broadcast_to(mean, d.shape[-1:]), np.broadcast_to(var, d.shape[-1:])
    for i in range(d.shape[-1]):
        x = d[..., i]
        ess = float(az.ess(x))
        assert abs(x.mean() - mean[i]) < z * math.sqrt(var[i] / ess), (i, x.mean(), mean[i],
                                                                         ess)
        sq = (x - mean[i]) ** 2
        se = sq.std() / math.sqrt(float(az.ess(sq)))
        assert abs(sq.mean() - var[i]) < z * se, (i, sq.mean(), var[i], se)
        assert float(az.rhat(x)) <= max_rhat, (i, float(az.rhat(x)))


def test_batched_potential_equals_the_per_chain_loop():
    for model, data in ((eight_schools, Y_SCHOOLS), (config_enumerate(gmm), torch.randn(30))):
        pyro.set_rng_seed(0)
        init, potential_fn, _, _ = initialize_model(model, (data,), {}, max_plate_nesting=1)
        spec = FlatSpec.from_values(init)
        assert spec.unpack(spec.pack(init))["locs" if "locs" in init else "theta_t"].shape \
            == init["locs" if "locs" in init else "theta_t"].shape
        potential = BatchedPotential(potential_fn, spec)
        q = torch.randn(7, spec.dim)
        value, grad = potential(q)
        assert potential.vectorized is True
        loop_value, loop_grad = potential.loop(q)
        assert value.shape == (7,) and grad.shape == (7, spec.dim)
        assert_close(value, loop_value, rtol=1e-5)
        assert_close(grad, loop_grad, rtol=1e-4, atol=1e-4)
        # the loop is Pyro's own potential, one chain at a time
        one = {k: v.requires_grad_(True) for k, v in spec.unpack(q[3].clone()).items()}
        u = potential_fn(one)
        u.backward()
        assert_close(value[3], u.detach(), rtol=1e-5)
        assert_close(grad[3], torch.cat([one[n].grad.reshape(-1) for n in spec.names]),
                     rtol=1e-4, atol=1e-4)


def masked_scaled(data):
    """Sites with a mask, a scale and an event dimension (as Pyro scores them). The scalar
    ``scale`` meets the vector ``loc`` as ``scale[..., None]``: written as ``Normal(loc,
    scale)`` the chain plate would misalign them and the potential would use vmap."""
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 2.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)), poutine.scale(scale=3.0):
        pyro.sample("obs", dist.Normal(loc, scale[..., None]).to_event(1)
                    .mask(torch.arange(len(data)) % 3 > 0), obs=data)


def stacked(data):
    """Builds a tensor from a latent value, so the chain plate's extra dimension ends up in
    the wrong place: the chain plate cannot run it, vmap can."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=data.dtype), PRIOR_SD))
    both = torch.stack([mu, 0 * mu])
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(both.sum(), NOISE_SD), obs=data)


@pytest.mark.parametrize("model, data, modes", [
    (eight_schools, Y_SCHOOLS, ("plate-jit",)),
    (masked_scaled, torch.randn(9, 2), ("plate-jit", "plate")),  # the tracer may warn
])
def test_chain_plate_potential_equals_the_per_chain_loop(model, data, modes):
    pyro.set_rng_seed(0)
    info = inspect_model(model, (data,), {})
    init, potential_fn, transforms, _ = initialize_model(model, (data,), {},
                                                         max_plate_nesting=1)
    spec = FlatSpec.from_values(init)
    plate = chain_plate_potential(model, (data,), {}, spec, transforms, info.batch_dims,
                                  info.max_plate_nesting)
    potential = BatchedPotential(potential_fn, spec, plate_fn=plate)
    q = torch.randn(7, spec.dim)
    value, grad = potential(q)
    assert potential.mode in modes  # compiled for 7 chains, checked at two points
    loop_value, loop_grad = potential.loop(q)
    assert_close(value, loop_value, rtol=1e-5, atol=1e-4)
    assert_close(grad, loop_grad, rtol=1e-4, atol=1e-4)
    other = q + 1.0
    assert_close(potential(other)[0], potential.loop(other)[0], rtol=1e-5, atol=1e-4)
    assert_close(potential(q[:3])[1], loop_grad[:3], rtol=1e-4, atol=1e-4)  # uncompiled


def test_a_model_the_chain_plate_cannot_run_uses_vmap():
    with warnings.catch_warnings():
        warnings.simplefilter("error", VmapFallbackWarning)
        out = mcmc.run_chees(stacked, (Y,), {}, inspect_model(stacked, (Y,), {}), seed=0,
                             progress=False, init_values_fn=None, num_samples=5,
                             num_warmup=5, num_chains=4, target_accept_prob=0.651)
    assert out["potential_mode"] == "vmap"
    assert out["samples"]["mu"].shape == (4, 5)


def _sample_gaussian(cov, gen, *, seed):
    """ChEES (64 chains, 400 + 400) on N(mean, cov) with a random mean (from ``gen``) through
    its closed-form batched potential; the mean and the sampler's output."""
    dim = cov.shape[0]
    mean = torch.randn(dim, generator=gen, dtype=torch.float64) * 3
    precision = torch.linalg.inv(cov)

    def potential(q):
        c = q - mean
        pc = c @ precision
        return 0.5 * (pc * c).sum(-1), pc

    init = torch.rand(64, dim, generator=gen, dtype=torch.float64) * 4 - 2
    return mean, sample_chees(potential, init, num_warmup=400, num_samples=400, seed=seed)


def test_correlated_gaussian_moments_and_rhat():
    """30 dimensions, correlations up to ~0.9 and scales 0.1-10 (the mass matrix must adapt);
    the sampler on a closed-form batched potential."""
    gen = torch.Generator().manual_seed(3)
    dim = 30
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    corr_factor = torch.linalg.qr(a)[0] @ torch.diag(torch.linspace(0.3, 1.5, dim,
                                                                       dtype=torch.float64))
    cov = corr_factor @ corr_factor.T
    scales = torch.logspace(-1, 1, dim, dtype=torch.float64)
    cov = scales[:, None] * cov * scales[None, :]
    mean, out = _sample_gaussian(cov, gen, seed=1)
    draws = out["draws"].numpy()
    assert draws.shape == (64, 400, dim)
    _check_moments(draws, mean.numpy(), torch.diagonal(cov).numpy())
    stats = out["sample_stats"]
    assert not stats["diverging"].any()
    assert (stats["n_steps"] >= 1).all() and len(np.unique(stats["n_steps"])) > 1  # jittered
    assert (stats["n_steps"] == stats["n_steps"][:1]).all()  # shared by the chains
    # the adapted inverse mass matrix tracks the marginal variances
    ratio = out["inv_mass"] / torch.diagonal(cov)
    assert float(ratio.min()) > 0.5 and float(ratio.max()) < 2.0


def test_normal_normal_posterior_through_fit():
    fit = _fit(normal_normal, Y, num_samples=300)
    mean, var = normal_normal_posterior(Y)
    assert fit.posterior["mu"].shape == (64, 300)
    assert fit.posterior["mu"].dtype == torch.float64
    _check_moments(fit.posterior["mu"].numpy(), mean, var)
    stats = fit.sample_stats
    assert set(stats) == {"acceptance_rate", "step_size", "n_steps", "diverging", "energy",
                          "lp"}
    assert all(v.shape == (64, 300) for v in stats.values())
    assert 0.4 < stats["acceptance_rate"].mean() <= 1.0
    assert float(az.bfmi(stats["energy"]).min()) > 0.3
    assert not stats["diverging"].any()


def _pyro_nuts(model, data, *, num_samples, num_warmup, seed):
    pyro.set_rng_seed(seed)
    run = MCMC(NUTS(model, jit_compile=True, ignore_jit_warnings=True),
               num_samples=num_samples, warmup_steps=num_warmup, disable_progbar=True)
    run.run(data)
    return {k: v.detach().numpy()[None] for k, v in run.get_samples().items()}


def _mean_mcse(draws):
    d = np.asarray(draws, dtype=np.float64)
    return d.mean(), d.std() / math.sqrt(float(az.ess(d)))


def test_eight_schools_agrees_with_pyro_nuts():
    fit = _fit(eight_schools, Y_SCHOOLS, num_chains=32, num_warmup=150, num_samples=40)
    theirs = _pyro_nuts(eight_schools, Y_SCHOOLS, num_samples=400, num_warmup=200, seed=2)
    ours = {k: v.numpy() for k, v in fit.posterior.items()}
    assert ours["theta"].shape == (32, 40, 8)  # deterministic sites as with NUTS
    for name, f in (("mu", lambda v: v), ("tau", np.log), ("theta_t", lambda v: v[..., 0])):
        m1, s1 = _mean_mcse(f(ours[name]))
        m2, s2 = _mean_mcse(f(theirs[name]))
        assert abs(m1 - m2) < 4.5 * math.hypot(s1, s2), (name, m1, m2, s1, s2)
    assert float(az.rhat(ours["tau"])) < 1.05  # 40 draws a chain: a sanity bound only


def test_same_seed_same_draws_other_seed_other_draws():
    kw = {"num_chains": 8, "num_warmup": 30, "num_samples": 20}
    a, b = _fit(eight_schools, Y_SCHOOLS, seed=5, **kw), _fit(eight_schools, Y_SCHOOLS, seed=5,
                                                              **kw)
    c = _fit(eight_schools, Y_SCHOOLS, seed=6, **kw)
    for k in a.posterior:
        assert torch.equal(a.posterior[k], b.posterior[k]), k
    for k in a.sample_stats:
        np.testing.assert_array_equal(a.sample_stats[k], b.sample_stats[k])
    assert not torch.equal(a.posterior["mu"], c.posterior["mu"])
    state = torch.get_rng_state()
    _fit(eight_schools, Y_SCHOOLS, seed=5, **kw)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_a_model_that_does_not_vmap_falls_back_and_samples_correctly():
    with pytest.warns(VmapFallbackWarning, match="one chain after another") as caught:
        fit = _fit(not_vmappable, Y, num_chains=4, num_warmup=100, num_samples=200)
    assert len([w for w in caught if w.category is VmapFallbackWarning]) == 1
    mean, var = normal_normal_posterior(Y)
    _check_moments(fit.posterior["mu"].numpy(), mean, var, max_rhat=1.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VmapFallbackWarning)
        _fit(normal_normal, Y, num_chains=4, num_warmup=5, num_samples=5)


def test_discrete_sites_are_summed_out_and_recovered():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(15) - 3, torch.randn(15) + 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error", VmapFallbackWarning)  # the enumerated model vmaps
        fit = _fit(gmm, x, num_chains=16, num_warmup=60, num_samples=20, seed=1,
                   init={"locs": torch.tensor([-3.0, 3.0]),
                         "weights": torch.tensor([0.5, 0.5])})
    assert fit.posterior["z"].shape == (16, 20, 30)
    assert fit.posterior["weights"].shape == (16, 20, 2)
    assert_close(fit.posterior["weights"].sum(-1), torch.ones(16, 20), rtol=1e-5)
    locs = fit.posterior["locs"].reshape(-1, 2).mean(0)
    assert abs(float(locs[0]) + 3) < 0.8 and abs(float(locs[1]) - 3) < 0.8
    z = fit.posterior["z"].float().mean((0, 1))
    assert float(z[:15].mean()) < 0.1 and float(z[15:].mean()) > 0.9


def test_builtin_model_through_chees():
    x = ppgen.datasets.load_old_faithful()[:60]
    model = ppgen.GaussianMixture(2)
    fit = ppgen.fit(model, x, method="mcmc", kernel="chees", num_chains=4, num_warmup=10,
                    num_samples=5, seed=0, progress=False)
    assert fit.posterior["weights"].shape == (4, 5, 2)
    assert fit.posterior["assignment"].shape == (4, 5, 60)
    assert fit.sample_stats["n_steps"].shape == (4, 5)
    idata = fit.to_arviz()  # the ArviZ path takes the ChEES sample stats as NUTS's
    assert idata.sample_stats["acceptance_rate"].shape == (4, 5)
    assert idata.sample_stats["diverging"].dtype == bool
    assert idata.posterior["weights"].shape == (4, 5, 2)
    assert isinstance(fit.diagnose(), list)


def test_pyro_nuts_is_an_alias_of_nuts(monkeypatch):
    seen = []
    init = mcmc._RecordingNUTS.__init__

    def spy(self, *args, **kwargs):
        seen.append(True)
        init(self, *args, **kwargs)

    monkeypatch.setattr(mcmc._RecordingNUTS, "__init__", spy)
    fit = ppgen.fit(normal_normal, Y, method="mcmc", kernel="pyro-nuts", num_chains=1,
                    num_samples=5, num_warmup=5, seed=0, progress=False, jit_compile=False)
    assert seen and fit.posterior["mu"].shape == (1, 5)
    assert "tree_depth" in fit.sample_stats


@pytest.mark.parametrize("options, arg, expected", [
    ({"kernel": "hmc"}, "kernel", "'nuts', 'pyro-nuts', 'chees'"),
    ({"kernel": 3}, "kernel", "one of"),
    ({"kernel": "chees", "max_tree_depth": 5}, "max_tree_depth", "no max_tree_depth"),
    ({"kernel": "chees", "jit_compile": True}, "jit_compile", "None or False"),
    ({"kernel": "chees", "num_chains": 1}, "num_chains", "at least 2"),
    ({"kernel": "chees", "target_accept_prob": 1.5}, "target_accept_prob", "(0, 1)"),
    ({"kernel": "chees", "num_warmup": -1}, "num_warmup", ">= 0"),
])
def test_bad_kernels_and_options_are_errors(options, arg, expected):
    with pytest.raises(ValueError) as err:
        ppgen.fit(normal_normal, Y, method="mcmc", progress=False, seed=0, num_samples=5,
                  **options)
    assert str(err.value).startswith(f"{arg}: expected") and expected in str(err.value)


def test_building_blocks():
    assert [halton(i) for i in range(1, 6)] == [0.5, 0.25, 0.75, 0.125, 0.625]
    windows = mass_windows(1000)
    assert windows[0] == (75, 100) and windows[-1][1] == 950
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert mass_windows(99) == []
    short = mass_windows(100)
    assert short == [(15, 80)]


# Models with known posteriors (issue 14, "Done when"): a 100-dimensional correlated
# Gaussian, Neal's funnel (non-centred; the centred one for divergences), the conjugate
# normal-normal with Pyro's NUTS beside ChEES, a two-component mixture with enumerated
# assignments against quadrature.


def test_correlated_gaussian_100_dimensions():
    """AR(1) correlations (0.9 between neighbours: the whitened target's condition number is
    (1 + 0.9) / (1 - 0.9) = 19, which a diagonal mass matrix cannot remove) with marginal
    scales 0.1-10 in shuffled order and a random mean."""
    dim, rho = 100, 0.9
    gen = torch.Generator().manual_seed(4)
    lags = torch.arange(dim, dtype=torch.float64)
    scales = torch.logspace(-1, 1, dim, dtype=torch.float64)[torch.randperm(dim,
                                                                            generator=gen)]
    cov = scales[:, None] * rho ** (lags[:, None] - lags[None, :]).abs() * scales[None, :]
    mean, out = _sample_gaussian(cov, gen, seed=2)
    _check_moments(out["draws"].numpy(), mean.numpy(), cov.diagonal().numpy())
    assert not out["sample_stats"]["diverging"].any()


def _scalar(value: float):
    return torch.tensor(value, dtype=torch.float64)


FUNNEL_DIM, FUNNEL_SCALE = 9, 3.0  # Neal (2003): v ~ N(0, 3^2), x_i | v ~ N(0, exp(v))


def funnel_non_centred(data):
    """Neal's funnel, non-centred: ``x = exp(v / 2) * x_raw`` with ``x_raw ~ N(0, 1)``, so
    the posterior of (v, x_raw) is N(0, diag(9, 1, ..., 1)). The observed site does not
    depend on the latents (``fit`` wants one): it adds a constant to the density."""
    v = pyro.sample("v", dist.Normal(_scalar(0.0), FUNNEL_SCALE))
    with pyro.plate("dim", FUNNEL_DIM):
        x_raw = pyro.sample("x_raw", dist.Normal(_scalar(0.0), 1.0))
        pyro.deterministic("x", torch.exp(v / 2)[..., None] * x_raw if v.dim() else
                           torch.exp(v / 2) * x_raw)
    pyro.sample("obs", dist.Normal(_scalar(0.0), 1.0), obs=data)


def funnel_centred(data):
    v = pyro.sample("v", dist.Normal(_scalar(0.0), FUNNEL_SCALE))
    with pyro.plate("dim", 2):
        pyro.sample("x", dist.Normal(_scalar(0.0), torch.exp(v / 2)))
    pyro.sample("obs", dist.Normal(_scalar(0.0), 1.0), obs=data)


def funnel_centred_potential(q):
    """The centred funnel's potential in (v, x_1, ..., x_d) (C, 1 + d) and its gradient, in
    closed form: U = v^2 / 18 + sum_i (x_i^2 exp(-v) / 2 + v / 2)."""
    v, x = q[:, 0], q[:, 1:]
    inv = torch.exp(-v)
    u = v ** 2 / (2 * FUNNEL_SCALE ** 2) + 0.5 * (x ** 2).sum(-1) * inv + 0.5 * x.shape[1] * v
    grad_v = v / FUNNEL_SCALE ** 2 - 0.5 * (x ** 2).sum(-1) * inv + 0.5 * x.shape[1]
    return u, torch.cat([grad_v[:, None], x * inv[:, None]], -1)


def test_non_centred_funnel_moments_rhat_and_no_divergences():
    fit = _fit(funnel_non_centred, _scalar(0.0), num_warmup=300, num_samples=400, seed=0)
    _check_moments(fit.posterior["v"].numpy(), 0.0, FUNNEL_SCALE ** 2)
    _check_moments(fit.posterior["x_raw"].numpy(), 0.0, 1.0)
    assert fit.posterior["x"].shape == (64, 400, FUNNEL_DIM)
    assert not fit.sample_stats["diverging"].any()


def test_centred_funnel_diverges_as_with_pyro_nuts():
    """The centred funnel's neck has curvature no single step size follows: Pyro's NUTS and
    ChEES both report divergent transitions there; the same funnel non-centred has none
    with either. Two dimensions of x (Pyro's NUTS stays cheap); ChEES on the centred funnel
    runs on the closed-form potential (its tiny step sizes take ~100 leapfrog steps an
    iteration, too slow through Pyro's traces for a test), checked against the model's."""
    def non_centred(data):
        pyro.sample("v", dist.Normal(_scalar(0.0), FUNNEL_SCALE))
        with pyro.plate("dim", 2):
            pyro.sample("x_raw", dist.Normal(_scalar(0.0), 1.0))
        pyro.sample("obs", dist.Normal(_scalar(0.0), 1.0), obs=data)

    # the closed form is the model's potential (Pyro's, one chain at a time)
    _, potential_fn, _, _ = initialize_model(funnel_centred, (_scalar(0.0),), {},
                                             max_plate_nesting=1)
    q = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, grad = funnel_centred_potential(q)
    loop_u, loop_grad = BatchedPotential(potential_fn, FlatSpec.from_values(
        {"v": torch.zeros((), dtype=torch.float64), "x": torch.zeros(2, dtype=torch.float64)}),
        vectorize=False).loop(q)
    norm = 0.5 * 3 * math.log(2 * math.pi) + math.log(FUNNEL_SCALE) + \
        0.5 * math.log(2 * math.pi)  # Pyro's potential has the normalising constants
    assert_close(loop_u - norm, u, rtol=1e-10)
    assert_close(loop_grad, grad, rtol=1e-10)

    init = torch.rand(16, 3, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64) * 4 - 2
    chees_centred = sample_chees(funnel_centred_potential, init, num_warmup=150,
                                 num_samples=150, seed=1)
    chees_non_centred = _fit(non_centred, _scalar(0.0), num_chains=16, num_warmup=150,
                             num_samples=150, seed=1)
    counts = {"chees centred": int(chees_centred["sample_stats"]["diverging"].sum()),
              "chees non-centred": int(chees_non_centred.sample_stats["diverging"].sum())}
    for name, model in (("centred", funnel_centred), ("non-centred", non_centred)):
        nuts = ppgen.fit(model, _scalar(0.0), method="mcmc", kernel="pyro-nuts", num_chains=1,
                         num_warmup=150, num_samples=150, seed=1, jit_compile=True,
                         progress=False)
        counts[f"nuts {name}"] = int(nuts.sample_stats["diverging"].sum())
    assert counts["nuts centred"] > 0 and counts["chees centred"] > 0, counts
    assert counts["nuts non-centred"] == 0 and counts["chees non-centred"] == 0, counts


def test_normal_normal_pyro_nuts_agrees_with_the_closed_form():
    """Pyro's NUTS on the conjugate model ChEES samples in
    test_normal_normal_posterior_through_fit, with the same checks."""
    mean, var = normal_normal_posterior(Y)
    nuts = ppgen.fit(normal_normal, Y, method="mcmc", kernel="pyro-nuts", num_chains=4,
                     num_warmup=200, num_samples=500, seed=3, jit_compile=True,
                     progress=False)
    _check_moments(nuts.posterior["mu"].numpy(), mean, var)
    assert not nuts.sample_stats["diverging"].any()


MIXTURE_X = torch.tensor([-3.1, -2.4, -2.0, -1.7, -1.2, -0.6, 0.1, 0.8, 1.3, 1.6, 1.9, 2.2,
                          2.4, 2.7, 3.0, 3.3, 3.9], dtype=torch.float64)
MIXTURE_PRIOR_LOCS = (-2.0, 2.0)


def two_component_mixture(data):
    """Weights ~ Dirichlet(2, 2), locs ~ N((-2, 2), 1), unit scales, assignments summed
    out. The prior's asymmetry keeps the label-switched mode's mass negligible (the
    quadrature below counts it)."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.full((2,), 2.0, dtype=data.dtype)))
    locs = pyro.sample("locs", dist.Normal(torch.tensor(MIXTURE_PRIOR_LOCS, dtype=data.dtype),
                                           1.0).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[..., z] if locs.dim() > 1 else locs[z], 1.0),
                    obs=data)


def mixture_posterior_by_quadrature(x, num_w: int = 200, num_mu: int = 241):
    """Posterior means and variances of (w, mu_1, mu_2), w the first weight, by the midpoint
    rule on (0, 1) x [-6, 6]^2 (the posterior's sds are ~0.1 and ~0.4: many grid points per
    sd, and nothing outside the box)."""
    w = (torch.arange(num_w, dtype=torch.float64) + 0.5) / num_w
    mu = torch.linspace(-6, 6, num_mu, dtype=torch.float64)
    lw = w.log()[:, None, None, None]
    l1w = torch.log1p(-w)[:, None, None, None]
    m1, m2 = mu[None, :, None, None], mu[None, None, :, None]
    xs = x[None, None, None, :]
    loglik = torch.logaddexp(lw - 0.5 * (xs - m1) ** 2, l1w - 0.5 * (xs - m2) ** 2).sum(-1)
    log_prior = (lw + l1w)[..., 0] - 0.5 * (m1[..., 0] - MIXTURE_PRIOR_LOCS[0]) ** 2 \
        - 0.5 * (m2[..., 0] - MIXTURE_PRIOR_LOCS[1]) ** 2
    log_post = loglik + log_prior
    p = torch.exp(log_post - log_post.max())
    p = p / p.sum()
    grids = (w[:, None, None], mu[None, :, None], mu[None, None, :])
    means = [float((p * g).sum()) for g in grids]
    variances = [float((p * (g - m) ** 2).sum()) for g, m in zip(grids, means)]
    switched = float(p[:, mu[:, None].expand(-1, num_mu) > mu[None, :]].sum())
    return np.array(means), np.array(variances), switched


def mixture_potential(q):
    """The mixture's potential with the assignments summed out, in Pyro's unconstrained
    coordinates (q = (logit w, mu_1, mu_2); the stick-breaking map of a 2-simplex is the
    sigmoid), closed form for (C, 3) and its gradient by autograd."""
    q = q.detach().requires_grad_(True)
    logit, m1, m2 = q[:, :1], q[:, 1:2], q[:, 2:3]
    lw, l1w = torch.nn.functional.logsigmoid(logit), torch.nn.functional.logsigmoid(-logit)
    x = MIXTURE_X
    loglik = torch.logaddexp(lw - 0.5 * (x - m1) ** 2, l1w - 0.5 * (x - m2) ** 2).sum(-1)
    log_prior = (lw + l1w)[:, 0] - 0.5 * (m1[:, 0] - MIXTURE_PRIOR_LOCS[0]) ** 2 \
        - 0.5 * (m2[:, 0] - MIXTURE_PRIOR_LOCS[1]) ** 2
    log_jacobian = (lw + l1w)[:, 0]
    u = -(loglik + log_prior + log_jacobian)
    (grad,) = torch.autograd.grad(u.sum(), q)
    return u.detach(), grad


def test_mixture_with_enumerated_assignments_agrees_with_quadrature():
    """ChEES on the mixture's potential with the assignments summed out (as TraceEnum sums
    them; checked against Pyro's enumerated potential of the model, up to a constant)
    against the exact posterior moments by quadrature. Through ``fit`` the enumerated
    potential runs under vmap at ~10-30 ms a call: too slow for a test of this length
    (test_discrete_sites_are_summed_out_and_recovered runs that path briefly)."""
    mean, var, switched = mixture_posterior_by_quadrature(MIXTURE_X)
    assert switched < 1e-4  # mu_1 > mu_2: the other labelling has no mass to speak of
    assert var[0] > 0.005 and (var[1:] > 0.05).all()  # not a degenerate posterior
    _, potential_fn, _, _ = initialize_model(config_enumerate(two_component_mixture),
                                             (MIXTURE_X,), {}, max_plate_nesting=1)
    spec = FlatSpec.from_values({"weights": torch.zeros(1, dtype=torch.float64),  # unconstr.
                                 "locs": torch.zeros(2, dtype=torch.float64)})
    assert spec.dim == 3
    q = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, grad = mixture_potential(q)
    loop_u, loop_grad = BatchedPotential(potential_fn, spec, vectorize=False).loop(q)
    assert_close(loop_u - loop_u[0], u - u[0], rtol=1e-9, atol=1e-9)
    assert_close(loop_grad, grad, rtol=1e-9, atol=1e-9)

    init = torch.rand(64, 3, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64) * 4 - 2
    # every chain starts with the locs at their prior means: from U(-2, 2) some chains start
    # in the other labelling and stay there (a local mode with no mass)
    init[:, 1:] = torch.tensor(MIXTURE_PRIOR_LOCS, dtype=torch.float64)
    out = sample_chees(mixture_potential, init, num_warmup=300, num_samples=400, seed=2)
    draws = out["draws"].numpy().copy()
    draws[..., 0] = 1 / (1 + np.exp(-draws[..., 0]))  # w
    _check_moments(draws, mean, var)
    assert not out["sample_stats"]["diverging"].any()
