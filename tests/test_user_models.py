"""Users' own Pyro models, written the way Pyro's examples and tutorials write them, fitted by
``ppgen.fit`` (SVI and MCMC): a ``PyroModule`` built the ordinary way (Bayesian regression
tutorial), an enumerated HMM over padded sequences with an inner plate (``examples/hmm.py``),
a subsampled coin (SVI tutorial part II), a model with several observed sites, and a
capture-recapture model with masks (``examples/capture_recapture/cjs.py``).

Each posterior is checked against Pyro's own NUTS on the same model (or a closed form), with a
tolerance from the Monte Carlo standard error of both runs, and each per-datum
log-likelihood against a hand computation (a forward algorithm for the enumerated models).
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
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn
from torch.distributions.utils import clamp_probs

import ppgen
from ppgen import NotSupportedError
from ppgen.inference.loop import loss_trend
from ppgen.inference.tracing import (
    generic_log_likelihood,
    inspect_model,
    pointwise_log_likelihood,
)


def pyro_nuts(model, args, kwargs, *, num_samples=120, num_warmup=60, seed=1,
              max_plate_nesting=None, max_tree_depth=10):
    """Pyro's own NUTS on the model (discrete sites enumerated), one chain."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    kernel = NUTS(config_enumerate(model, default="parallel"),
                  max_plate_nesting=max_plate_nesting, max_tree_depth=max_tree_depth)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup,
                disable_progbar=True)
    mcmc.run(*args, **kwargs)
    return {k: v.detach() for k, v in mcmc.get_samples().items()}


def _mean_and_mcse(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and its Monte Carlo standard error per element; draws (chain, draw,
    ...)."""
    flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
    ess = np.array([float(az.ess(flat[..., i])) for i in range(flat.shape[-1])])
    sd = flat.reshape(-1, flat.shape[-1]).std(0)
    return flat.reshape(-1, flat.shape[-1]).mean(0), sd / np.sqrt(ess)


def assert_agrees(ours, theirs, *, z=4.5, msg=""):
    """Posterior means agree within ``z`` combined Monte Carlo standard errors.

    ours: (chains, draws, ...) ; theirs: (draws, ...) from one chain.
    """
    a, se_a = _mean_and_mcse(np.asarray(ours))
    b, se_b = _mean_and_mcse(np.asarray(theirs)[None])
    bound = z * np.sqrt(se_a ** 2 + se_b ** 2)
    assert np.all(np.abs(a - b) <= bound), f"{msg}: ppgen {a} vs pyro {b} (bound {bound})"


def _fit(model, data, method, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: convergence is checked on results
        return ppgen.fit(model, data, method=method, seed=0, progress=False, **kw)


# --------------------------------------------------------------------------------------------
# 1. A PyroModule built the ordinary way (Bayesian regression tutorial)


class BayesianRegression(PyroModule):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand(
            [out_features, in_features]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


@pytest.fixture(scope="module")
def regression_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    y = x @ torch.tensor([1.0, -2.0]) + 0.5 + 0.7 * torch.randn(40, generator=g)
    return x, y


def test_pyromodule_built_the_ordinary_way_fits_by_mcmc_like_pyro(regression_data):
    x, y = regression_data
    module = BayesianRegression(2, 1)  # module_local_params off, as in the tutorial
    fit = _fit(module, x, "mcmc", model_kwargs={"y": y}, num_samples=60, num_warmup=60,
               num_chains=2)
    ref = pyro_nuts(BayesianRegression(2, 1), (x,), {"y": y})
    for name in ("linear.weight", "linear.bias", "sigma"):
        assert_agrees(fit.posterior[name], ref[name], msg=name)
    # The per-datum log-likelihood is Normal(x w + b, sigma) at each datum.
    idata = fit.to_arviz()
    w = fit.posterior["linear.weight"].reshape(-1, 1, 2)
    b = fit.posterior["linear.bias"].reshape(-1, 1)
    s = fit.posterior["sigma"].reshape(-1, 1)
    hand = dist.Normal((x @ w.transpose(-1, -2)).squeeze(-1) + b, s).log_prob(y)
    assert_close(idata.log_likelihood["obs"].values.reshape(-1, 40), hand, rtol=1e-5)
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "data")
    assert not [d for d in fit.diagnose() if d.code == "divergences"]


def test_pyromodule_built_the_ordinary_way_fits_by_svi(regression_data):
    x, y = regression_data
    module = BayesianRegression(2, 1)
    fit = _fit(module, x, "svi", model_kwargs={"y": y}, num_steps=600, lr=0.1,
               num_samples=500)
    # Against the least-squares solution (flat priors relative to the data's scale).
    design = torch.cat([x, torch.ones(40, 1)], 1)
    coef = torch.linalg.lstsq(design, y.unsqueeze(-1)).solution.squeeze(-1)
    post = torch.cat([fit.posterior["linear.weight"].reshape(-1, 2),
                      fit.posterior["linear.bias"].reshape(-1, 1)], 1)
    se = post.std(0)
    assert torch.all((post.mean(0) - coef).abs() < 1.0 * se + 0.02), (post.mean(0), coef)
    assert fit.summary().shape[0] == 4


class NoisyLine(PyroModule):
    """A module with a learned (non-Bayesian) noise scale as a PyroParam."""

    def __init__(self):
        super().__init__()
        self.noise = PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)
        self.slope = PyroSample(dist.Normal(0.0, 10.0))

    def forward(self, x, y=None):
        slope = self.slope  # sampled once, outside the plate
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(slope * x, self.noise), obs=y)


def test_two_pyromodules_fitted_in_one_notebook_stay_independent():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, generator=g)
    y_a = 2.0 * x + 0.3 * torch.randn(200, generator=g)
    y_b = -1.0 * x + 2.0 * torch.randn(200, generator=g)
    a, b = NoisyLine(), NoisyLine()
    pyro.clear_param_store()
    fit_a = _fit(a, x, "svi", model_kwargs={"y": y_a}, num_steps=300, lr=0.1)
    noise_a = float(a.noise.detach())
    assert float(fit_a.params["noise"]) == noise_a  # the fit reports the learned value
    _fit(b, x, "svi", model_kwargs={"y": y_b}, num_steps=300, lr=0.1)
    assert float(a.noise.detach()) == noise_a  # b's fit left a alone
    # Each learned its own noise from its own data (from the start value 1).
    assert abs(noise_a - 0.3) < 0.1 and abs(float(b.noise.detach()) - 2.0) < 0.4
    assert len(pyro.get_param_store()) == 0  # nothing leaked into the global store


def test_a_function_that_calls_a_module_built_outside_fits():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 1, generator=g)
    y = 1.5 * x[:, 0] + 0.2 * torch.randn(60, generator=g)
    net = PyroModule[nn.Linear](1, 1)
    net.weight = PyroSample(dist.Normal(0.0, 5.0).expand([1, 1]).to_event(2))
    net.bias = PyroSample(dist.Normal(0.0, 5.0).expand([1]).to_event(1))

    def model(x, y=None):
        mean = net(x).squeeze(-1)
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(mean, 0.2), obs=y)

    fit = _fit(model, x, "svi", model_kwargs={"y": y}, num_steps=800, lr=0.05,
               num_samples=200)
    assert abs(float(fit.posterior["weight"].mean()) - 1.5) < 0.1


# --------------------------------------------------------------------------------------------
# 2. An enumerated HMM over padded sequences, with a plate of tones inside the sequences


HIDDEN = 2


def hmm_model(sequences, lengths):
    """``examples/hmm.py``'s model_2 (vectorised over sequences, masked padding)."""
    num_sequences, max_length, data_dim = sequences.shape
    probs_x = pyro.sample("probs_x",
                          dist.Dirichlet(0.9 * torch.eye(HIDDEN) + 0.1).to_event(1))
    probs_y = pyro.sample("probs_y",
                          dist.Beta(0.1, 0.9).expand([HIDDEN, data_dim]).to_event(2))
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, dim=-2) as batch:
        lengths = lengths[batch]
        x = 0
        for t in pyro.markov(range(max_length)):
            with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]),
                                infer={"enumerate": "parallel"})
                with tones_plate:
                    pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                                obs=sequences[batch, t])


def hmm_forward(sequences, lengths, probs_x, probs_y):
    """Log-likelihood of each sequence by the forward algorithm over its real steps only."""
    out = []
    for seq, length in zip(sequences, lengths.tolist(), strict=True):
        alpha = torch.zeros(HIDDEN, dtype=torch.float64)
        alpha[0] = 1.0  # the chain starts from state 0
        total = 0.0
        for t in range(length):
            emit = dist.Bernoulli(probs_y.double()).log_prob(seq[t].double()).sum(-1).exp()
            alpha = (alpha @ probs_x.double()) * emit
            total += math.log(float(alpha.sum()))
            alpha = alpha / alpha.sum()
        out.append(total)
    return torch.tensor(out)


@pytest.fixture(scope="module")
def padded_sequences():
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([6, 2, 1, 4, 6, 5])
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.8]])
    seqs = torch.zeros(6, 6, 2)
    for n, length in enumerate(lengths.tolist()):
        state = 0
        for t in range(length):
            state = state if torch.rand((), generator=g) < 0.8 else 1 - state
            seqs[n, t] = torch.bernoulli(probs[state], generator=g)
    # Padding holds garbage: masked steps must not count whatever they hold.
    for n, length in enumerate(lengths.tolist()):
        seqs[n, length:] = torch.bernoulli(torch.full((6 - length, 2), 0.5), generator=g)
    return seqs, lengths


def _hmm_draws(num, seed):
    g = torch.Generator().manual_seed(seed)
    px = torch.distributions.Dirichlet(torch.ones(HIDDEN, HIDDEN)).sample((num,))
    py = torch.rand(num, HIDDEN, 2, generator=g) * 0.9 + 0.05
    return {"probs_x": px, "probs_y": py}


def test_hmm_log_likelihood_is_per_sequence_and_matches_the_forward_algorithm(
        padded_sequences):
    seqs, lengths = padded_sequences
    kwargs = {"lengths": lengths}
    info = inspect_model(hmm_model, (seqs,), kwargs)
    draws = _hmm_draws(5, 0)
    ll, dims = pointwise_log_likelihood(hmm_model, draws, (seqs,), kwargs, info)
    assert list(ll) == ["joint"] and dims["joint"] == ("sequences",)
    hand = torch.stack([hmm_forward(seqs, lengths, draws["probs_x"][s], draws["probs_y"][s])
                        for s in range(5)])
    assert_close(ll["joint"], hand, rtol=1e-5, atol=1e-5)
    # More padding changes nothing: a masked step contributes exactly 0 (not log K).
    longer = torch.cat([seqs, torch.ones(6, 3, 2)], 1)
    ll2, _ = pointwise_log_likelihood(hmm_model, draws, (longer,), kwargs,
                                      inspect_model(hmm_model, (longer,), kwargs))
    assert_close(ll2["joint"], ll["joint"], rtol=1e-5, atol=1e-5)


def scalar_hmm(sequences, lengths):
    """An HMM with one emission per step (no inner plate), padded and masked."""
    probs_x = pyro.sample("probs_x", dist.Dirichlet(torch.ones(HIDDEN, HIDDEN)).to_event(1))
    probs_y = pyro.sample("probs_y", dist.Beta(1.0, 1.0).expand([HIDDEN]).to_event(1))
    with pyro.plate("sequences", sequences.shape[0], dim=-1):
        x = 0
        for t in pyro.markov(range(sequences.shape[1])):
            with poutine.mask(mask=t < lengths):
                x = pyro.sample(f"x_{t}", dist.Categorical(probs_x[x]))
                pyro.sample(f"y_{t}", dist.Bernoulli(probs_y[x]), obs=sequences[:, t])


def test_masked_steps_of_an_enumerated_model_add_nothing(padded_sequences):
    """Each padded step added log K (the masked enumerated factor summed to K, not 1)."""
    seqs, lengths = padded_sequences
    seqs = seqs[..., 0]
    info = inspect_model(scalar_hmm, (seqs,), {"lengths": lengths})
    px = torch.tensor([[[0.7, 0.3], [0.2, 0.8]]])
    py = torch.tensor([[0.1, 0.9]])
    ll = generic_log_likelihood(scalar_hmm, {"probs_x": px, "probs_y": py}, (seqs,),
                                {"lengths": lengths}, info)
    (value,) = ll.values()
    hand = hmm_forward(seqs.unsqueeze(-1), lengths, px[0], py[0].unsqueeze(-1))
    assert_close(value, hand.unsqueeze(0), rtol=1e-5, atol=1e-5)


def mixture_two_sites(heights, counts):
    """A two-component mixture whose assignment drives two observed sites per datum."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 5.0))
        rates = pyro.sample("rates", dist.Gamma(2.0, 1.0))
    with pyro.plate("data", len(heights)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("height", dist.Normal(locs[z], 1.0), obs=heights)
        pyro.sample("count", dist.Poisson(rates[z]), obs=counts)


def test_coupled_observed_sites_are_stored_as_their_joint_not_under_the_first_name():
    heights = torch.tensor([-2.0, 0.5, 3.0])
    counts = torch.tensor([0.0, 4.0, 1.0])
    info = inspect_model(mixture_two_sites, (heights,), {"counts": counts})
    draw = {"weights": torch.tensor([[0.3, 0.7]]), "locs": torch.tensor([[-1.0, 2.0]]),
            "rates": torch.tensor([[0.5, 3.0]])}
    ll = generic_log_likelihood(mixture_two_sites, draw, (heights,), {"counts": counts}, info)
    assert list(ll) == ["joint"]
    per = (draw["weights"][0].log() + dist.Normal(draw["locs"][0], 1.0).log_prob(
        heights.unsqueeze(-1)) + dist.Poisson(draw["rates"][0]).log_prob(counts.unsqueeze(-1)))
    assert_close(ll["joint"], per.logsumexp(-1).unsqueeze(0), rtol=1e-5)


@pytest.mark.parametrize("rows, tones", [(slice(0, 1), 2), (slice(0, 6), 1)],
                         ids=["one-sequence", "one-tone"])
def test_hmm_log_likelihood_with_a_plate_of_size_one(padded_sequences, rows, tones):
    seqs, lengths = padded_sequences
    seqs, lengths = seqs[rows, :, :tones], lengths[rows]
    kwargs = {"lengths": lengths}
    info = inspect_model(hmm_model, (seqs,), kwargs)
    for num in (1, 3):
        draws = _hmm_draws(num, 1)
        draws["probs_y"] = draws["probs_y"][..., :tones]
        ll, _ = pointwise_log_likelihood(hmm_model, draws, (seqs,), kwargs, info)
        hand = torch.stack([hmm_forward(seqs, lengths, draws["probs_x"][s],
                                        draws["probs_y"][s]) for s in range(num)])
        assert ll["joint"].shape == (num, len(lengths))
        assert_close(ll["joint"], hand, rtol=1e-5, atol=1e-5)


def test_hmm_fits_and_reports_by_svi(padded_sequences):
    seqs, lengths = padded_sequences
    fit = _fit(hmm_model, seqs, "svi", model_kwargs={"lengths": lengths}, num_steps=40,
               lr=0.05, num_samples=10)
    idata = fit.to_arviz()
    ll = idata.log_likelihood["joint"]
    assert ll.dims == ("chain", "draw", "sequences") and ll.shape == (1, 10, 6)
    flat = {k: v.reshape(10, *v.shape[2:]) for k, v in fit.posterior.items()}
    hand = torch.stack([hmm_forward(seqs, lengths, flat["probs_x"][s], flat["probs_y"][s])
                        for s in range(10)])
    assert_close(ll.values.reshape(10, 6), hand, rtol=1e-5, atol=1e-5)
    assert fit.summary().shape[0] == HIDDEN * HIDDEN + HIDDEN * 2
    assert isinstance(fit.diagnose(), list)
    assert np.isfinite(az.loo(idata, var_name="joint").elpd_loo)


@pytest.mark.slow  # NUTS through an enumerated HMM: minutes on two shared cores
def test_hmm_mcmc_agrees_with_pyro_nuts(padded_sequences):
    """Per-sequence posterior mean log-likelihood (invariant to relabelling the states)."""
    seqs, lengths = padded_sequences
    kwargs = {"lengths": lengths}
    fit = _fit(hmm_model, seqs, "mcmc", model_kwargs=kwargs, num_samples=30, num_warmup=30,
               num_chains=2, max_tree_depth=4)
    ours = fit.to_arviz().log_likelihood["joint"].values
    ref = pyro_nuts(hmm_model, (seqs,), kwargs, num_samples=60, num_warmup=30,
                    max_plate_nesting=2, max_tree_depth=4)
    theirs = torch.stack([hmm_forward(seqs, lengths, ref["probs_x"][s], ref["probs_y"][s])
                          for s in range(60)])
    assert_agrees(ours, theirs.numpy(), msg="per-sequence log-likelihood")


# --------------------------------------------------------------------------------------------
# 3. A subsampled model (the coin of the SVI tutorial, part II)


COIN = torch.tensor([1.0] * 19 + [0.0] * 11)  # 30 flips, not a multiple of the batch of 8


def coin(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data), subsample_size=8) as ind:
        pyro.sample("obs", dist.Bernoulli(f), obs=data.index_select(0, ind))


def test_subsampled_model_is_scored_over_the_full_data():
    fit = _fit(coin, COIN, "svi", num_steps=600, lr=0.05, num_samples=400)
    # The conjugate posterior Beta(10 + 19, 10 + 11).
    exact = dist.Beta(29.0, 21.0)
    draws = fit.posterior["latent_fairness"].reshape(-1)
    assert abs(float(draws.mean()) - float(exact.mean)) < 0.03
    idata = fit.to_arviz()
    ll = idata.log_likelihood["obs"].values.reshape(400, -1)
    assert ll.shape == (400, 30)  # every datum, once, without the N/B scale
    assert_close(ll, dist.Bernoulli(draws.unsqueeze(-1)).log_prob(COIN), rtol=1e-6)
    assert_close(idata.observed_data["obs"].values, COIN)  # the data the LOO is about
    assert idata.posterior_predictive["obs"].shape == (1, 400, 30)
    assert np.isfinite(az.loo(idata).elpd_loo)


def test_mcmc_on_a_subsampled_model_is_refused_with_a_remedy():
    with pytest.raises(NotSupportedError, match="subsample_size"):
        _fit(coin, COIN, "mcmc", num_samples=10)


def test_a_subsampled_model_with_local_latents_says_why_it_has_no_loo():
    def local(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("data", len(data), subsample_size=8) as ind:
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("obs", dist.Normal(z, 0.5), obs=data.index_select(0, ind))

    fit = _fit(local, COIN, "svi", num_steps=20, num_samples=10)
    with pytest.warns(UserWarning, match="inside the subsampled plate 'data'"):
        idata = fit.to_arviz()
    assert "log_likelihood" not in idata.groups()


# --------------------------------------------------------------------------------------------
# 4. Several observed sites


def two_sites(data, counts):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    log_rate = pyro.sample("log_rate", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(data)):
        pyro.sample("height", dist.Normal(mu, 1.0), obs=data)
        pyro.sample("count", dist.Poisson(log_rate.exp()), obs=counts)


def test_several_observed_sites_get_one_variable_each_and_their_joint():
    g = torch.Generator().manual_seed(4)
    heights = 1.0 + torch.randn(25, generator=g)
    counts = torch.poisson(torch.full((25,), 3.0), generator=g)
    fit = _fit(two_sites, heights, "mcmc", model_kwargs={"counts": counts}, num_samples=60,
               num_warmup=60, num_chains=2)
    ref = pyro_nuts(two_sites, (heights,), {"counts": counts})
    for name in ("mu", "log_rate"):
        assert_agrees(fit.posterior[name], ref[name], msg=name)
    idata = fit.to_arviz()
    ll = idata.log_likelihood
    assert set(ll.data_vars) == {"height", "count", "joint"}
    mu = fit.posterior["mu"].reshape(-1, 1)
    rate = fit.posterior["log_rate"].reshape(-1, 1).exp()
    h = dist.Normal(mu, 1.0).log_prob(heights)
    c = dist.Poisson(rate).log_prob(counts)
    assert_close(ll["height"].values.reshape(-1, 25), h, rtol=1e-5)
    assert_close(ll["count"].values.reshape(-1, 25), c, rtol=1e-5)
    assert_close(ll["joint"].values.reshape(-1, 25), h + c, rtol=1e-5)
    assert ll["joint"].dims == ("chain", "draw", "data")
    for name in ("height", "count", "joint"):
        assert np.isfinite(az.loo(idata, var_name=name).elpd_loo)
    assert_close(idata.observed_data["count"].values, counts)


def test_observed_sites_without_a_shared_datum_have_no_joint():
    def global_and_local(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        pyro.sample("anchor", dist.Normal(mu, 1.0), obs=torch.tensor(0.5))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    data = torch.tensor([0.1, -0.4, 1.2])
    info = inspect_model(global_and_local, (data,), {})
    ll, dims = pointwise_log_likelihood(global_and_local, {"mu": torch.tensor([0.0, 1.0])},
                                        (data,), {}, info)
    assert set(ll) == {"anchor", "obs"} and dims["obs"] == ("data",)
    assert_close(ll["anchor"], dist.Normal(torch.tensor([0.0, 1.0]), 1.0).log_prob(
        torch.tensor(0.5)), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# 5. Capture-recapture with masks (Cormack-Jolly-Seber, examples/capture_recapture/cjs.py)


def cjs(capture_history):
    num_animals, num_times = capture_history.shape
    phi = pyro.sample("phi", dist.Beta(2.0, 2.0))  # survival
    rho = pyro.sample("rho", dist.Beta(2.0, 2.0))  # recapture
    with pyro.plate("animals", num_animals, dim=-1):
        z = torch.ones(num_animals)
        first_capture_mask = torch.zeros(num_animals).bool()
        for t in pyro.markov(range(num_times)):
            with poutine.mask(mask=first_capture_mask):
                mu_z_t = first_capture_mask.float() * phi * z + (1 - first_capture_mask.float())
                z = pyro.sample(f"z_{t}", dist.Bernoulli(clamp_probs(mu_z_t)),
                                infer={"enumerate": "parallel"})
                mu_y_t = rho * z
                pyro.sample(f"y_{t}", dist.Bernoulli(mu_y_t), obs=capture_history[:, t])
            first_capture_mask = first_capture_mask | capture_history[:, t].bool()


def cjs_hand(history, phi, rho):
    """Log-likelihood of each animal's history after its first capture (alive then)."""
    out = []
    for row in history.tolist():
        if 1.0 not in row:
            out.append(0.0)
            continue
        alive = torch.tensor([0.0, 1.0], dtype=torch.float64)  # P(z=0), P(z=1)
        total = 0.0
        for y in row[row.index(1.0) + 1:]:
            alive = torch.stack([alive[0] + alive[1] * (1 - phi), alive[1] * phi])
            emit = torch.tensor([1.0 - y, rho if y else 1 - rho], dtype=torch.float64)
            alive = alive * emit
            total += math.log(float(alive.sum()))
            alive = alive / alive.sum()
        out.append(total)
    return torch.tensor(out)


@pytest.fixture(scope="module")
def capture_history():
    g = torch.Generator().manual_seed(5)
    n, t = 30, 5
    hist = torch.zeros(n, t)
    for i in range(n):
        first = int(torch.randint(0, t, (), generator=g))
        if i % 6 == 0:
            continue  # never captured
        hist[i, first] = 1.0
        alive = True
        for s in range(first + 1, t):
            alive = alive and bool(torch.rand((), generator=g) < 0.75)
            hist[i, s] = float(alive and bool(torch.rand((), generator=g) < 0.6))
    return hist


def test_capture_recapture_log_likelihood_matches_a_hand_computation(capture_history):
    info = inspect_model(cjs, (capture_history,), {})
    draws = {"phi": torch.tensor([0.6, 0.8, 0.95]), "rho": torch.tensor([0.3, 0.5, 0.7])}
    ll, dims = pointwise_log_likelihood(cjs, draws, (capture_history,), {}, info)
    assert list(ll) == ["joint"] and dims["joint"] == ("animals",)
    hand = torch.stack([cjs_hand(capture_history, float(draws["phi"][s]),
                                 float(draws["rho"][s])) for s in range(3)])
    assert_close(ll["joint"], hand, rtol=1e-4, atol=1e-4)


def test_capture_recapture_mcmc_and_svi_agree_with_pyro_nuts(capture_history):
    fit = _fit(cjs, capture_history, "mcmc", num_samples=40, num_warmup=40, num_chains=2)
    ref = pyro_nuts(cjs, (capture_history,), {}, num_samples=80, num_warmup=40,
                    max_plate_nesting=1)
    for name in ("phi", "rho"):
        assert_agrees(fit.posterior[name], ref[name], msg=name)
    svi = _fit(cjs, capture_history, "svi", num_steps=200, lr=0.05, num_samples=50)
    for name in ("phi", "rho"):  # a mean-field guide: within a posterior sd
        sd = float(ref[name].std())
        assert abs(float(svi.posterior[name].mean()) - float(ref[name].mean())) < sd
    assert svi.to_arviz().log_likelihood["joint"].shape == (1, 50, 30)


# --------------------------------------------------------------------------------------------
# 6. SVI convergence on the noisy single-particle ELBO


@pytest.mark.parametrize("seed", range(10))
def test_loss_trend_does_not_flag_noise_and_flags_a_trend(seed):
    g = np.random.default_rng(seed)
    noise = 1000.0 + 5.0 * g.standard_normal(400)
    assert loss_trend(noise, 100).flat(1e-5)  # a plateau under noise: converged
    falling = noise - 0.05 * np.arange(400)  # 5 per window, as much as the noise
    trend = loss_trend(falling, 100)
    assert not trend.flat(1e-5) and trend.slope < 0
    assert loss_trend(noise[:150], 100) is None  # too short to judge


def test_svi_at_a_tutorials_step_count_is_not_reported_as_unconverged():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppgen.ConvergenceWarning)
        fit = ppgen.fit(coin, COIN, "svi", seed=0, progress=False, num_steps=600, lr=0.05,
                        num_samples=10)
    assert fit.converged is True


def test_svi_still_improving_says_what_to_try(regression_data):
    x, y = regression_data
    with pytest.warns(ppgen.ConvergenceWarning, match="still falls .* num_particles"):
        fit = ppgen.fit(BayesianRegression(2, 1), x, "svi", model_kwargs={"y": y}, seed=0,
                        progress=False, num_steps=200, lr=0.002, check_every=50,
                        num_samples=10)
    assert fit.converged is False
    assert [d.code for d in fit.messages] == ["not_converged"]
