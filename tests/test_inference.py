"""The inference layer on built-in models and on user-written Pyro functions."""

import math
import random
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from common import assert_close

import ppgen
from ppgen import GaussianMixture
from ppgen.inference.svi import _first_bad_site

EIGHT_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(sigma)):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_raw)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def user_mixture(data, num_components=2):
    """A mixture written the way a notebook user would: the discrete site is not marked."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(num_components)))
    with pyro.plate("components", num_components):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


@pytest.fixture(scope="module")
def mixture_1d():
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(150, generator=g) - 3, torch.randn(100, generator=g) + 3])


def test_svi_with_enumerated_assignments_reaches_em(old_faithful):
    em = GaussianMixture(2)
    ppgen.fit(em, old_faithful, method="em", seed=0, progress=False)
    ll_em = float(em.log_prob(old_faithful).sum())
    svi = GaussianMixture(2)
    fit = ppgen.fit(svi, old_faithful, method="svi", seed=0, num_steps=1500, lr=0.02,
                    progress=False)
    ll_svi = float(svi.log_prob(old_faithful).sum())
    assert abs(ll_svi - ll_em) <= 0.005 * abs(ll_em)
    assert fit.posterior is None and fit.method == "svi"
    assert np.isfinite(fit.history["objective"]).all()


def test_user_function_discrete_sites_are_enumerated_without_effort(mixture_1d):
    fit = ppgen.fit(user_mixture, mixture_1d, method="svi", seed=1, num_steps=1500, lr=0.05,
                    guide="map", progress=False)
    locs = fit.params["locs"].sort().values
    assert_close(locs, [-3.0, 3.0], atol=0.35)
    assert "z" in fit.info.discrete
    # the per-datum log-likelihood sums z out: compare with the closed form at the estimate
    idata = fit.to_arviz()
    ll = torch.as_tensor(idata.log_likelihood["obs"].values[0, 0])
    w, m = fit.params["weights"], fit.params["locs"]
    ref = torch.logsumexp(w.log() + dist.Normal(m, 1.0).log_prob(mixture_1d[:, None]), -1)
    assert_close(ll, ref, rtol=1e-5)


def test_user_function_mcmc_recovers_discrete_sites(mixture_1d):
    fit = ppgen.fit(user_mixture, mixture_1d, method="mcmc", seed=0, num_samples=60,
                    num_warmup=60, num_chains=1, progress=False)
    assert fit.posterior["z"].shape == (1, 60, len(mixture_1d))
    z = fit.posterior["z"][0, -1]
    locs = fit.posterior["locs"][0, -1]
    # each point's drawn component is (almost always) the nearer mean
    nearer = (mixture_1d[:, None] - locs).abs().argmin(-1)
    assert (z == nearer).float().mean() > 0.95
    idata = fit.to_arviz()
    assert idata.log_likelihood["obs"].shape == (1, 60, len(mixture_1d))


def test_eight_schools_mcmc_and_svi():
    import arviz as az

    # 2 chains x 300 + 300 (measured: R-hat <= 1.02, bulk ESS >= 570); the 4-chain, longer
    # run is benchmarks' business
    fit = ppgen.fit(eight_schools, EIGHT_Y, method="mcmc", model_kwargs={"sigma": EIGHT_SIGMA},
                    seed=0, num_samples=300, num_warmup=300, num_chains=2,
                    target_accept_prob=0.9, jit_compile=True, progress=False)
    summ = fit.summary()
    assert summ["r_hat"].max() <= 1.05
    assert summ["ess_bulk"].min() >= 300
    assert "theta[0]" in summ.index  # deterministic sites are part of the posterior
    idata = fit.to_arviz()
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                  "observed_data"):
        assert group in idata.groups()
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    assert abs(loo.elpd_loo - (-30.7)) < 1.0  # the known value for eight schools
    assert set(fit.sample_stats) >= {"diverging", "step_size", "tree_depth", "n_steps",
                                     "energy", "lp"}
    mu_mcmc = float(fit.posterior["mu"].mean())
    svi = ppgen.fit(eight_schools, EIGHT_Y, method="svi", model_kwargs={"sigma": EIGHT_SIGMA},
                    seed=0, num_steps=1500, lr=0.02, num_samples=500, progress=False)
    mu_svi = svi.posterior["mu"]
    assert abs(float(mu_svi.mean()) - mu_mcmc) < 1.5
    assert 1.5 < float(mu_svi.std()) < 5.0
    codes = {d.code for d in svi.diagnose()}
    assert codes <= {"khat", "not_converged"}
    assert np.isfinite(az.loo(svi.to_arviz()).elpd_loo)


def test_no_global_state_is_left_behind(old_faithful, mixture_1d):
    pyro.clear_param_store()
    pyro.param("user_sentinel", torch.tensor(3.0))
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = GaussianMixture(2)
    ppgen.fit(a, old_faithful, method="em", seed=0, progress=False)
    params_a = a.get_params()
    ppgen.fit(user_mixture, mixture_1d, method="svi", seed=0, num_steps=20, progress=False)
    b = GaussianMixture(2)
    ppgen.fit(b, old_faithful, method="svi", seed=1, num_steps=50, progress=False)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]
    assert list(pyro.get_param_store().keys()) == ["user_sentinel"]
    for k, v in a.get_params().items():
        assert torch.equal(v, params_a[k])
    pyro.clear_param_store()


@pytest.mark.parametrize("method, options", [
    ("em", {}),
    ("svi", {"num_steps": 30}),
    ("mcmc", {"num_samples": 10, "num_warmup": 10, "num_chains": 2, "max_tree_depth": 4}),
])
def test_same_seed_same_result(old_faithful, method, options):
    runs = []
    for _ in range(2):
        gmm = GaussianMixture(2, covariance="diag")
        ppgen.fit(gmm, old_faithful, method=method, seed=7, progress=False, **options)
        runs.append(gmm.get_params())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k])


def test_chain_seeds_are_derived_per_chain(mixture_1d):
    one = ppgen.fit(user_mixture, mixture_1d, method="mcmc", seed=3, num_samples=5,
                    num_warmup=5, num_chains=1, progress=False)
    two = ppgen.fit(user_mixture, mixture_1d, method="mcmc", seed=3, num_samples=5,
                    num_warmup=5, num_chains=2, progress=False)
    assert torch.equal(one.posterior["locs"][0], two.posterior["locs"][0])
    assert not torch.equal(two.posterior["locs"][0], two.posterior["locs"][1])


def test_nan_guard_restores_parameters_and_stops():
    data = torch.randn(50) + 2

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    elbo = pyro.infer.Trace_ELBO()
    calls = {"n": 0}

    def exploding_loss(model, guide, *args, **kwargs):
        calls["n"] += 1
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        return loss * float("nan") if calls["n"] > 20 else loss

    with pytest.warns(RuntimeWarning, match="loss became nan at step 20"):
        fit = ppgen.fit(model, data, method="svi", loss=exploding_loss, seed=0, num_steps=100,
                        progress=False)
    assert len(fit.history["objective"]) == 20
    assert fit.converged is False
    assert all(torch.isfinite(p).all() for p in fit.guide.parameters())
    assert any(d.code == "nan" for d in fit.diagnose())


def test_nan_guard_names_the_parameter_when_only_the_gradient_is_nan():
    data = torch.randn(50) + 2
    calls = {"n": 0}

    def model(data):
        calls["n"] += 1
        w = pyro.param("weight", torch.tensor(1.0))
        if calls["n"] > 6:  # from step 5 on (one trace was the set-up): NaN gradient only
            w = w + 0.0 * torch.nan_to_num(torch.sqrt(w - 3.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(w, 1.0), obs=data)

    def guide(data):
        pass

    with pytest.warns(RuntimeWarning, match=r"gradients became NaN.*'weight'"):
        fit = ppgen.fit(model, data, method="svi", guide=guide, seed=0, num_steps=50,
                        progress=False)
    assert 0 < len(fit.history["objective"]) < 50
    assert np.isfinite(fit.history["objective"]).all()
    (nan,) = [d for d in fit.diagnose() if d.code == "nan"]
    assert nan.site == "weight"


def test_nan_guard_names_the_offending_site():
    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    def guide(data):
        loc = pyro.param("mu_loc", torch.tensor(float("nan")))
        pyro.sample("mu", dist.Delta(loc))

    with pyro.validation_enabled(False):
        assert _first_bad_site(model, guide, (torch.tensor(0.0),), {}).startswith("'mu'")
    pyro.clear_param_store()


def test_custom_loss_that_is_not_an_elbo():
    data = torch.randn(200, dtype=torch.float64) * 2 + 5

    def model(data):
        loc = pyro.param("loc", torch.tensor(0.0, dtype=torch.float64))
        scale = pyro.param("scale", torch.tensor(1.0, dtype=torch.float64),
                           constraint=dist.constraints.positive)
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    def guide(data):
        pass

    def nll(model, guide, data):  # maximum likelihood, written by hand
        trace = pyro.poutine.trace(model).get_trace(data)
        return -trace.log_prob_sum()

    fit = ppgen.fit(model, data, method="svi", guide=guide, loss=nll, seed=0, num_steps=3000,
                    lr=0.05, progress=False)
    assert_close(fit.params["loc"], data.mean(), rtol=1e-3)
    assert_close(fit.params["scale"], data.std(unbiased=False), rtol=1e-2)


def test_compare_by_loo(mixture_1d):
    fits = {}
    for k in (1, 2):
        fits[f"K={k}"] = ppgen.fit(user_mixture, mixture_1d, method="mcmc", seed=0,
                                   model_kwargs={"num_components": k}, num_samples=100,
                                   num_warmup=100, num_chains=1, progress=False)
    table = ppgen.compare(fits)
    assert table.index[0] == "K=2"
    em = ppgen.fit(GaussianMixture(2), mixture_1d[:, None], method="em", progress=False)
    with pytest.raises(ValueError, match="expected posterior draws for LOO"):
        ppgen.compare({"a": em, "b": fits["K=1"]})


def test_em_convergence_warning_names_a_remedy(old_faithful):
    with pytest.warns(ppgen.ConvergenceWarning, match="increase num_steps"):
        fit = ppgen.fit(GaussianMixture(3), old_faithful, method="em", seed=0, num_steps=2,
                        tol=1e-12, progress=False)
    assert fit.converged is False
    assert [d.code for d in fit.diagnose()] == ["not_converged"]


def test_bad_calls_to_fit(old_faithful):
    with pytest.raises(ValueError, match="method: expected 'em', 'svi' or 'mcmc'"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="vi")
    with pytest.raises(TypeError, match="options: expected options of method='em'.*lr"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="em", lr=0.1)
    with pytest.raises(ValueError, match="expected discrete latent sites to enumerate for "
                       "method='em'.*method='svi' with guide='map'.*method='mcmc'"):
        ppgen.fit(eight_schools, EIGHT_Y, method="em", model_kwargs={"sigma": EIGHT_SIGMA})
    with pytest.raises(TypeError, match="model: expected a ppgen GenerativeModel"):
        ppgen.fit(42, old_faithful, method="svi")
    with pytest.raises(TypeError, match="model_kwargs: expected arguments the model accepts"):
        ppgen.fit(eight_schools, EIGHT_Y, method="svi", model_kwargs={"sigmaa": EIGHT_SIGMA})
    with pytest.raises(ValueError, match="num_steps: expected an integer >= 1, got 0"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="em", num_steps=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_refused(old_faithful):
    gmm = GaussianMixture(2)
    with pytest.raises(ValueError, match="device: expected an available device.*'cpu'"):
        ppgen.fit(gmm, old_faithful, method="em", device="cuda")
    assert not gmm.is_fitted


def test_svi_minibatches_reach_em(old_faithful):
    em = GaussianMixture(2, covariance="diag")
    ppgen.fit(em, old_faithful, method="em", seed=0, progress=False)
    mb = GaussianMixture(2, covariance="diag")
    fit = ppgen.fit(mb, old_faithful, method="svi", seed=0, batch_size=64, num_steps=1500,
                    lr=0.02, tol=0, progress=False)
    assert len(fit.history["objective"]) == 1500
    ll_em = float(em.log_prob(old_faithful).sum())
    assert abs(float(mb.log_prob(old_faithful).sum()) - ll_em) <= 0.01 * abs(ll_em)


@pytest.mark.slow
def test_mcmc_gmm_converges_after_relabelling(old_faithful):
    import arviz as az

    gmm = GaussianMixture(2)
    # 2 chains x 150 + 150 (measured: R-hat <= 1.03, bulk ESS >= 237); label switching
    # between chains would put R-hat far above 1.05
    fit = ppgen.fit(gmm, old_faithful, method="mcmc", seed=0, num_chains=2, num_samples=150,
                    num_warmup=150, progress=False)
    idata = fit.to_arviz()
    names = ["weights", "locs", "scales"]
    rhat = az.rhat(idata, var_names=names)
    ess = az.ess(idata, var_names=names, method="bulk")
    for name in names:
        assert float(rhat[name].max()) <= 1.05, name
        assert float(ess[name].min()) >= 150, name
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    # the posterior mean is close to the maximum-likelihood fit
    assert abs(float(gmm.log_prob(old_faithful).sum()) - (-1130.264)) < 2.0
    assert idata.log_likelihood["obs"].shape == (2, 150, 272)


def test_single_component_mcmc_and_svi_draw_shapes(old_faithful):
    gmm = GaussianMixture(1, covariance="diag")
    fit = ppgen.fit(gmm, old_faithful, method="mcmc", seed=0, num_samples=10, num_warmup=10,
                    num_chains=1, max_tree_depth=4, progress=False)
    assert fit.posterior["assignment"].shape == (1, 10, 272)
    assert (fit.posterior["assignment"] == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit.diagnose()
    svi = ppgen.fit(eight_schools, EIGHT_Y, method="svi", model_kwargs={"sigma": EIGHT_SIGMA},
                    seed=0, num_steps=20, num_samples=30, progress=False)
    assert svi.posterior["mu"].shape == (1, 30)
    assert svi.posterior["theta_raw"].shape == (1, 30, 8)


def test_psis_khat_is_small_when_the_guide_is_exact_and_large_when_it_is_not():
    from ppgen.diagnostics import _khat

    pyro.clear_param_store()
    data = torch.randn(30, generator=torch.Generator().manual_seed(0)) + 1.0

    def conjugate(data):  # normal-normal: the posterior is normal, so AutoNormal is exact
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    fit = ppgen.fit(conjugate, data, method="svi", seed=0, num_steps=3000, lr=0.02,
                    num_samples=100, progress=False)
    assert _khat(fit) < 0.5
    # evaluating the guide must not leak its parameters into the global param store
    assert list(pyro.get_param_store().keys()) == []
    with torch.no_grad():  # shrink the guide's scale 20-fold: far too narrow a proposal
        fit.guide.scales.mu_unconstrained -= math.log(20.0)
    assert _khat(fit) > 0.7


def test_a_fit_describes_itself_after_the_model_is_refitted(old_faithful):
    gmm = GaussianMixture(2)
    first = ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    second = ppgen.fit(gmm, 2 * old_faithful, method="em", seed=0, progress=False)
    assert not torch.allclose(first.params["locs"], second.params["locs"])
    locs = first.to_arviz().posterior["locs"].values[0, 0]
    assert_close(locs, first.params["locs"])
    assert_close(first.summary().loc["locs[0, 0]", "value"], first.params["locs"][0, 0])
    ll = first.to_arviz().log_likelihood["obs"].values[0, 0]
    with first.fitted_model() as model:
        assert_close(ll, model.log_prob(first.data))
    # ... and the model keeps the second fit's parameters.
    assert_close(gmm.locs, second.params["locs"])


def test_svi_learning_rate_reaches_the_elbo_of_a_model_without_its_own_objective():
    """lr was dropped on the way to the ELBO of a built-in model with no objective of its
    own (the mixture): two learning rates gave the same run."""
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    runs = [ppgen.fit(ppgen.GaussianMixture(2), x, method="svi", lr=lr, num_steps=20,
                      seed=0, progress=False).history["objective"] for lr in (0.001, 0.1)]
    assert runs[0][0] == pytest.approx(runs[1][0])  # same start
    assert runs[0][-1] != pytest.approx(runs[1][-1], rel=1e-3)


def _scalar_eight_schools(y, sigma):
    """Eight schools written with a Python float of tau: it cannot broadcast over draws."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(sigma)):
        theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + float(tau) * theta_raw)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


@pytest.mark.parametrize("model_fn, vectorised", [(eight_schools, True),
                                                  (_scalar_eight_schools, False)])
def test_deterministic_sites_of_many_draws(model_fn, vectorised, monkeypatch):
    """pyro.deterministic values for (chains, draws): one vectorised run where the model
    broadcasts over draws (checked against per-draw runs), per-draw runs where it does not;
    either way exactly mu + tau * theta_raw of each draw."""
    from ppgen.inference import tracing

    g = torch.Generator().manual_seed(0)
    samples = {"mu": torch.randn(3, 40, generator=g), "tau": torch.rand(3, 40, generator=g),
               "theta_raw": torch.randn(3, 40, 8, generator=g)}
    args = (EIGHT_Y, EIGHT_SIGMA)
    info = tracing.inspect_model(model_fn, args, {})
    runs = []
    predictive = pyro.infer.Predictive

    def counting(*a, **kw):
        runs.append(kw.get("parallel", False))
        return predictive(*a, **kw)

    monkeypatch.setattr(pyro.infer, "Predictive", counting)
    out = tracing.deterministic_draws(model_fn, samples, args, {}, info)
    expected = samples["mu"][..., None] + samples["tau"][..., None] * samples["theta_raw"]
    assert out["theta"].shape == (3, 40, 8)
    torch.testing.assert_close(out["theta"], expected, rtol=1e-6, atol=1e-6)
    # the check (vectorised + per-draw on 3 draws), then the whole run
    assert runs == ([True, False, True] if vectorised else [True, False])
