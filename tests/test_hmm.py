"""HiddenMarkovModel: exactness against brute force, Pyro and hmmlearn; EM; applications;
SVI and MCMC through ppgen.fit; bad input."""

import itertools
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate, infer_discrete

import ppgen
from ppgen.models.sequence.ops import forward_backward
from tests.common import assert_close

EMISSIONS = [("gaussian", "diag"), ("gaussian", "full"), ("gaussian", "spherical"),
             ("categorical", "diag"), ("bernoulli", "diag"), ("poisson", "diag")]


def _truth(emission, covariance="diag", k=3, d=2, seed=0, **kw):
    """Data and true parameters of a small random HMM (float64)."""
    x, params = ppgen.datasets.make_hmm(kw.pop("n", 6), kw.pop("t", 5), k, num_features=d,
                                        emission=emission, covariance=covariance,
                                        num_symbols=4, seed=seed, **kw)
    params = {n: v for n, v in params.items() if n not in ("states", "lengths")}
    return x, params


def _model(emission, covariance, params, **kw):
    hmm = ppgen.HiddenMarkovModel(params["transition_probs"].shape[0], emission=emission,
                                  covariance=covariance, dtype=torch.float64, **kw)
    hmm.set_params(**params)
    return hmm


def _frame_log_density(emission, covariance, params, frame):
    """log p(frame | state k) for every k, from torch.distributions (independent code)."""
    if emission == "gaussian":
        cov = params["covariances"]
        d = params["locs"].shape[-1]
        if covariance == "diag":
            cov = torch.diag_embed(cov)
        elif covariance == "spherical":
            cov = cov[:, None, None] * torch.eye(d, dtype=cov.dtype)
        return dist.MultivariateNormal(params["locs"], covariance_matrix=cov).log_prob(frame)
    if emission == "categorical":
        return dist.Categorical(params["probs"]).log_prob(frame)
    if emission == "bernoulli":
        return dist.Bernoulli(params["probs"]).log_prob(frame).sum(-1)
    return dist.Poisson(params["rates"]).log_prob(frame).sum(-1)


def _brute_force(emission, covariance, params, seq):
    """log p(seq) by summing the joint over all K^T state paths."""
    k = params["transition_probs"].shape[0]
    log_b = torch.stack([_frame_log_density(emission, covariance, params, f) for f in seq])
    log_a = params["transition_probs"].log()
    terms = []
    for path in itertools.product(range(k), repeat=len(seq)):
        lp = params["initial_probs"][path[0]].log() + log_b[0, path[0]]
        for t in range(1, len(seq)):
            lp = lp + log_a[path[t - 1], path[t]] + log_b[t, path[t]]
        terms.append(lp)
    return torch.logsumexp(torch.stack(terms), 0)


# ------------------------------------------------------------------- exactness
@pytest.mark.parametrize("emission,covariance", EMISSIONS)
def test_forward_equals_brute_force_enumeration(emission, covariance):
    x, params = _truth(emission, covariance, n=4, t=5, min_length=2)
    hmm = _model(emission, covariance, params)
    expected = torch.stack([_brute_force(emission, covariance, params, s) for s in x])
    assert_close(hmm.log_prob(x), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("emission,covariance", EMISSIONS)
def test_forward_equals_pyro_discrete_hmm(emission, covariance):
    x, params = _truth(emission, covariance, n=5, t=7)
    hmm = _model(emission, covariance, params)
    k, t = params["transition_probs"].shape[0], 7
    # Pyro's DiscreteHMM starts from a state z_{-1} before the first frame: a uniform z_{-1}
    # and a first "transition" equal to the initial distribution give our model.
    trans = params["transition_probs"].log().expand(t, k, k).clone()
    trans[0] = params["initial_probs"].log()
    init = torch.full((k,), -math.log(k), dtype=torch.float64)
    if emission == "gaussian":
        cov = hmm.covariances
        d = hmm.locs.shape[-1]
        full = (torch.diag_embed(cov) if covariance == "diag" else
                cov[:, None, None] * torch.eye(d, dtype=cov.dtype)
                if covariance == "spherical" else cov)
        obs = dist.MultivariateNormal(hmm.locs, covariance_matrix=full)
    elif emission == "categorical":
        obs = dist.Categorical(hmm.probs)
    elif emission == "bernoulli":
        obs = dist.Bernoulli(hmm.probs).to_event(1)
    else:
        obs = dist.Poisson(hmm.rates).to_event(1)
    pyro_lp = dist.DiscreteHMM(init, trans, obs).log_prob(x)
    assert_close(hmm.log_prob(x), pyro_lp, atol=1e-10, rtol=0)


@pytest.mark.parametrize("emission,covariance", [("gaussian", "full"), ("categorical", "diag"),
                                                 ("bernoulli", "diag"), ("poisson", "diag")])
def test_markov_form_sums_to_the_forward_algorithm(emission, covariance):
    """The pyro.markov form with enumerated states, contracted by TraceEnum_ELBO, gives the
    same log-likelihood as the forward algorithm, padded steps included."""
    x, params = _truth(emission, covariance, n=4, t=6, min_length=2, seed=3)
    hmm = _model(emission, covariance, params)
    padded, kw = hmm.prepare_inputs(x, {})
    sites = hmm.init_values(padded, init=params, seed=0, **kw)
    hmm.set_point_estimate(sites)  # start values are floored away from 0: use them exactly
    expected = hmm.log_prob(x).sum()
    markov = poutine.condition(hmm.model, data=sites)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(
        config_enumerate(markov), lambda *a, **k: None, padded, enumerate_states=True, **kw)
    marginal = poutine.trace(poutine.condition(hmm.model, data=sites)).get_trace(padded, **kw)
    prior = sum(site["fn"].log_prob(site["value"]).sum() for name, site in
                marginal.nodes.items() if site["type"] == "sample" and name != "obs")
    # The markov trace scores the conditioned parameter sites too: remove their prior.
    assert_close(-loss - prior, expected, atol=1e-8, rtol=0)
    assert_close(marginal.nodes["obs"]["fn"].log_prob(padded).sum(), expected, atol=1e-10,
                 rtol=0)


def test_infer_discrete_at_temperature_zero_is_the_viterbi_path():
    x, params = _truth("gaussian", "diag", n=8, t=12, min_length=3, seed=1)
    hmm = _model("gaussian", "diag", params)
    padded, kw = hmm.prepare_inputs(x, {})
    sites = hmm.init_values(padded, init=params, seed=0, **kw)
    hmm.set_point_estimate(sites)
    model = config_enumerate(poutine.condition(hmm.model, data=sites))
    decoder = infer_discrete(model, first_available_dim=-2, temperature=0)
    trace = poutine.trace(decoder).get_trace(padded, enumerate_states=True, **kw)
    paths = torch.stack([trace.nodes[f"state_{t}"]["value"] for t in range(padded.shape[1])], 1)
    viterbi = hmm.predict(x)
    mask = viterbi >= 0
    assert torch.equal(paths[mask], viterbi[mask])
    # Posterior draws (temperature 1) come from the same conditional: their per-step
    # frequencies approach the forward-backward marginals.
    sampler = infer_discrete(model, first_available_dim=-2, temperature=1)
    pyro.set_rng_seed(0)
    z3 = torch.stack([poutine.trace(sampler).get_trace(padded, enumerate_states=True, **kw)
                      .nodes["state_3"]["value"] for _ in range(300)])  # (300, N)
    freq = torch.nn.functional.one_hot(z3, 3).double().mean(0)
    marg = hmm.predict_proba(x)[:, 3]
    real = kw["lengths"] > 3  # past its end a sequence's state is a copy, not a marginal
    assert (freq - marg)[real].abs().max() < 5 * math.sqrt(0.25 / 300)


def test_posterior_marginals_and_counts_match_brute_force():
    x, params = _truth("categorical", n=1, t=5, seed=2)
    hmm = _model("categorical", "diag", params)
    k = 3
    log_b = torch.stack([_frame_log_density("categorical", "diag", params, f) for f in x[0]])
    joint = {}
    for path in itertools.product(range(k), repeat=5):
        lp = params["initial_probs"][path[0]].log() + log_b[0, path[0]]
        for t in range(1, 5):
            lp = lp + params["transition_probs"][path[t - 1], path[t]].log() + log_b[t, path[t]]
        joint[path] = lp
    z = torch.logsumexp(torch.stack(list(joint.values())), 0)
    marg = torch.zeros(5, k, dtype=torch.float64)
    pairs = torch.zeros(k, k, dtype=torch.float64)
    for path, lp in joint.items():
        p = (lp - z).exp()
        for t in range(5):
            marg[t, path[t]] += p
            if t:
                pairs[path[t - 1], path[t]] += p
    assert_close(hmm.predict_proba(x)[0], marg, atol=1e-12, rtol=0)
    mask = torch.ones(1, 5, dtype=torch.bool)
    fb = forward_backward(hmm._log_b(x, mask), hmm.initial_probs, hmm.transition_probs, mask)
    assert_close(fb["trans_counts"], pairs, atol=1e-12, rtol=0)
    # Per-step surprises sum to the sequence's score.
    assert_close(hmm.score(x, per_step=True).sum(-1), hmm.score(x), atol=1e-12, rtol=0)


def test_lengths_padding_and_lists_agree():
    x, params = _truth("gaussian", "full", n=5, t=9, min_length=2, seed=4)
    hmm = _model("gaussian", "full", params)
    alone = torch.cat([hmm.log_prob([s]) for s in x])
    assert_close(hmm.log_prob(x), alone, atol=1e-12, rtol=0)
    padded, kw = hmm.prepare_inputs(x, {})
    garbage = padded.clone()
    mask = torch.arange(9) < kw["lengths"].unsqueeze(-1)
    garbage[~mask] = 1e6
    assert_close(hmm.log_prob(garbage, kw["lengths"]), alone, atol=1e-12, rtol=0)
    assert torch.equal(hmm.predict(garbage, kw["lengths"]), hmm.predict(x))
    nan_pad = padded.clone()
    nan_pad[~mask] = float("nan")
    assert_close(hmm.log_prob(nan_pad, kw["lengths"]), alone, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------- EM
def _hmmlearn_case(emission, covariance, seed=0):
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    k, d = 3, 2
    x, truth = ppgen.datasets.make_hmm(40, 30, k, num_features=d, emission=emission,
                                       covariance=covariance, num_symbols=5, seed=seed)
    g = torch.Generator().manual_seed(seed)
    # hmmlearn builds its convergence monitor in the constructor: pass n_iter and tol there.
    same = {"init_params": "", "n_iter": 20, "tol": -np.inf}
    start = {"initial_probs": torch.full((k,), 1 / k, dtype=torch.float64),
             "transition_probs": torch.full((k, k), 0.5 / k, dtype=torch.float64)
             + 0.5 * torch.eye(k, dtype=torch.float64)}
    if emission == "gaussian":
        start["locs"] = truth["locs"] + torch.randn(k, d, generator=g, dtype=torch.float64)
        start["covariances"] = torch.ones(k, d, dtype=torch.float64) if covariance == "diag" \
            else torch.eye(d, dtype=torch.float64).expand(k, d, d).clone()
        peer = hmmlearn.GaussianHMM(k, covariance_type=covariance, covars_prior=0,
                                    covars_weight=1, means_weight=0, **same)
        peer.means_, peer.covars_ = start["locs"].numpy(), start["covariances"].numpy()
        flat = x.reshape(-1, d).numpy()
    elif emission == "categorical":
        p = torch.rand(k, 5, generator=g, dtype=torch.float64) + 0.5
        start["probs"] = p / p.sum(-1, keepdim=True)
        peer = hmmlearn.CategoricalHMM(k, n_features=5, **same)
        peer.emissionprob_ = start["probs"].numpy()
        flat = x.reshape(-1, 1).numpy()
    else:
        start["rates"] = truth["rates"] * (1 + 0.3 * torch.rand(k, d, generator=g,
                                                                dtype=torch.float64))
        peer = hmmlearn.PoissonHMM(k, **same)
        peer.lambdas_ = start["rates"].numpy()
        flat = x.reshape(-1, d).numpy()
    peer.startprob_ = start["initial_probs"].numpy()
    peer.transmat_ = start["transition_probs"].numpy()
    return x, flat, start, peer


@pytest.mark.parametrize("emission,covariance", [("gaussian", "diag"), ("gaussian", "full"),
                                                 ("categorical", "diag"), ("poisson", "diag")])
def test_em_matches_hmmlearn_from_the_same_start(emission, covariance):
    x, flat, start, peer = _hmmlearn_case(emission, covariance)
    lengths = [x.shape[1]] * x.shape[0]
    peer.fit(flat, lengths)
    hmm = ppgen.HiddenMarkovModel(3, emission=emission, covariance=covariance, reg_covar=0,
                                  dtype=torch.float64)
    ppgen.fit(hmm, x, "em", init=start, num_steps=20, tol=0, seed=0, progress=False)
    ours = float(hmm.log_prob(x).sum())
    theirs = peer.score(flat, lengths)
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)
    assert np.array_equal(hmm.predict(x).reshape(-1).numpy(), peer.predict(flat, lengths))
    assert_close(hmm.transition_probs, torch.as_tensor(peer.transmat_), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("emission,covariance", EMISSIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_never_decreases(emission, covariance, seed):
    x, _ = ppgen.datasets.make_hmm(20, 25, 4, num_features=3, emission=emission,
                                   covariance=covariance, min_length=5, seed=seed)
    hmm = ppgen.HiddenMarkovModel(4, emission=emission, covariance=covariance,
                                  transition_concentration=1.5, emission_concentration=1.2,
                                  dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fit = ppgen.fit(hmm, x, "em", num_steps=30, tol=0, seed=seed, progress=False)
    objective = fit.history["objective"]
    assert np.all(np.diff(objective) >= -1e-9 * np.abs(objective[:-1]))
    # With non-flat priors the objective is the log posterior: the log-likelihood plus the
    # Dirichlet log-densities (up to constants).
    ll = float(hmm.log_prob(x).sum())
    assert objective[-1] == pytest.approx(ll + hmm._log_prior(), rel=1e-12)


def test_a_state_without_data_stays_finite():
    x, truth = _truth("gaussian", "diag", n=20, t=15, k=2, seed=5)
    far = {"locs": torch.cat([truth["locs"], torch.full((1, 2), 1e4, dtype=torch.float64)]),
           "covariances": torch.ones(3, 2, dtype=torch.float64)}
    for emission_init in (far,):
        hmm = ppgen.HiddenMarkovModel(3, reg_covar=0, dtype=torch.float64)
        ppgen.fit(hmm, x, "em", init=emission_init, num_steps=10, tol=0, seed=0,
                  progress=False)
        for name, value in hmm.get_params().items():
            assert torch.isfinite(value).all(), name
        assert_close(hmm.locs[2], far["locs"][2], atol=0, rtol=0)  # kept, not NaN


def test_em_recovers_a_sticky_gaussian_hmm():
    x, truth = ppgen.datasets.make_hmm(100, 60, 3, num_features=2, seed=11)
    hmm = ppgen.HiddenMarkovModel(3)
    ppgen.fit(hmm, x, "em", num_restarts=3, seed=0, progress=False)
    order = torch.cdist(truth["locs"], hmm.locs).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2]
    assert_close(hmm.locs[order], truth["locs"], atol=0.05, rtol=0)
    assert_close(hmm.transition_probs[order][:, order], truth["transition_probs"], atol=0.03,
                 rtol=0)
    decoded = order.argsort()[hmm.predict(x)]
    oracle = _model("gaussian", "diag", {k: v for k, v in truth.items()
                                         if k not in ("states", "lengths")})
    best = (oracle.predict(x) == truth["states"]).double().mean()
    assert (decoded == truth["states"]).double().mean() >= best - 0.005


def test_categorical_alphabet_inferred_saved_and_checked(tmp_path):
    x, _ = _truth("categorical", n=20, t=10)
    hmm = ppgen.HiddenMarkovModel(2, emission="categorical")
    ppgen.fit(hmm, x, "em", seed=0, progress=False)
    assert hmm.probs.shape == (2, int(x.max()) + 1)
    loaded = ppgen.load(ppgen.save(hmm, tmp_path / "hmm.pt"))
    assert torch.equal(loaded.log_prob(x), hmm.log_prob(x))
    with pytest.raises(ValueError, match="symbols in 0..*out of range"):
        hmm.log_prob(x + 10)


# ------------------------------------------------------------------ applications
def test_sample_follows_the_chain():
    _, params = _truth("gaussian", "diag", k=3, seed=6)
    hmm = _model("gaussian", "diag", params)
    x, z = hmm.sample(400, lengths=50, seed=0, return_states=True)
    assert x.shape == (400, 50, 2) and z.shape == (400, 50)
    counts = torch.zeros(3, 3, dtype=torch.float64)
    counts.index_put_((z[:, :-1].reshape(-1), z[:, 1:].reshape(-1)),
                      torch.ones(400 * 49, dtype=torch.float64), accumulate=True)
    freq = counts / counts.sum(-1, keepdim=True)
    se = (freq * (1 - freq) / counts.sum(-1, keepdim=True)).sqrt()
    assert ((freq - params["transition_probs"]).abs() <= 5 * se + 1e-3).all()
    ragged = hmm.sample(3, lengths=[2, 5, 3], seed=1)
    assert ragged.shape == (3, 5, 2) and (ragged[0, 2:] == 0).all()
    assert torch.equal(hmm.sample(3, lengths=4, seed=2), hmm.sample(3, lengths=4, seed=2))


@pytest.mark.parametrize("emission,covariance", EMISSIONS)
def test_impute_fills_gaps_from_the_posterior(emission, covariance):
    x, params = ppgen.datasets.make_hmm(30, 40, 3, num_features=3, emission=emission,
                                        covariance=covariance, num_symbols=4, seed=7,
                                        stickiness=0.9)
    hmm = _model(emission, covariance, {k: v for k, v in params.items()
                                        if k not in ("states", "lengths")})
    holes = x.clone().double()
    gap = torch.zeros(holes.shape[:2], dtype=torch.bool)
    gap[:, 10:13] = True
    holes[gap] = float("nan")
    if holes.dim() == 3:
        holes[:, 20, 0] = float("nan")  # a partly observed frame
    filled = hmm.impute(holes)
    assert not torch.isnan(filled).any()
    observed = ~torch.isnan(holes)
    assert torch.equal(filled[observed], holes[observed])
    truth = x.double()
    # The posterior fill beats filling with the overall mean (mode for discrete data).
    if emission == "gaussian":
        naive = truth[~gap].mean(0)
        assert (filled[gap] - truth[gap]).square().mean() < (naive - truth[gap]).square().mean()
    else:
        naive = truth[~gap].mode(0).values
        assert (filled[gap] == truth[gap]).double().mean() >= (naive == truth[gap]).double().mean()
    with pytest.raises(ValueError, match="impute"):
        hmm.log_prob(holes)


def test_score_flags_an_anomalous_stretch():
    x, params = _truth("gaussian", "diag", n=10, t=40, seed=8)
    hmm = _model("gaussian", "diag", params)
    odd = x.clone()
    odd[3, 20:23] += 25.0
    steps = hmm.score(odd, per_step=True)
    assert steps[3].argmax() in (20, 21, 22)
    assert hmm.score(odd).argmax() == 3


# ------------------------------------------------------------------ SVI and MCMC
def test_svi_map_reaches_em():
    x, _ = ppgen.datasets.make_hmm(40, 30, 2, num_features=2, seed=9)
    em = ppgen.HiddenMarkovModel(2)
    ppgen.fit(em, x, "em", seed=0, progress=False)
    svi = ppgen.HiddenMarkovModel(2)
    ppgen.fit(svi, x, "svi", seed=0, num_steps=1500, lr=0.02, progress=False)
    ll_em, ll_svi = float(em.log_prob(x).sum()), float(svi.log_prob(x).sum())
    assert ll_svi > ll_em - 0.005 * abs(ll_em)


def test_svi_with_enumerated_states_uses_trace_enum_elbo():
    x, _ = ppgen.datasets.make_hmm(10, 12, 2, num_features=2, min_length=6, seed=10)
    hmm = ppgen.HiddenMarkovModel(2)
    fit = ppgen.fit(hmm, x, "svi", seed=0, num_steps=400, lr=0.03, progress=False,
                    model_kwargs={"enumerate_states": True})
    assert "state_0" in fit.info.discrete and "obs_0" in fit.info.observed
    em = ppgen.HiddenMarkovModel(2)
    ppgen.fit(em, x, "em", seed=0, progress=False)
    ll_em = float(em.log_prob(x).sum())
    assert float(hmm.log_prob(x).sum()) > ll_em - 0.02 * abs(ll_em)


def test_mcmc_relabels_states_and_gives_per_sequence_loo():
    x, truth = ppgen.datasets.make_hmm(12, 20, 2, num_features=1, seed=12, separation=4.0)
    hmm = ppgen.HiddenMarkovModel(2)
    fit = ppgen.fit(hmm, x, "mcmc", seed=0, num_samples=60, num_warmup=60, num_chains=2,
                    max_tree_depth=5, progress=False)
    locs = fit.posterior["locs"]  # (chains, draws, K, D), relabelled
    assert locs.shape == (2, 60, 2, 1)
    chain_means = locs.mean(1)
    assert_close(chain_means[0], chain_means[1], atol=0.3, rtol=0)  # no switched chain
    order = torch.cdist(truth["locs"], hmm.locs).argmin(1)
    assert_close(hmm.locs[order], truth["locs"], atol=0.5, rtol=0)
    idata = fit.to_arviz()
    assert idata.log_likelihood["obs"].shape == (2, 60, 12)
    import arviz as az

    loo = az.loo(idata)
    assert math.isfinite(loo.elpd_loo)
    ll = fit.model.log_likelihood(fit.data, {k: v.reshape(-1, *v.shape[2:])
                                             for k, v in fit.posterior.items()},
                                  **{"lengths": fit.model_kwargs["lengths"]})["obs"]
    hmm_draw = ppgen.HiddenMarkovModel(2)
    hmm_draw.prepare_inputs(x, {})
    hmm_draw.set_point_estimate({k: v[0, 5] for k, v in fit.posterior.items()})
    assert_close(ll[5], hmm_draw.log_prob(x), atol=1e-4, rtol=1e-6)


# ----------------------------------------------------------------------- data
def test_jsb_chorales_loader():
    data = ppgen.datasets.load_jsb_chorales()
    sizes = {k: (v[0].shape[0], int(v[1].sum())) for k, v in data.items()}
    assert sizes == {"train": (229, 13807), "valid": (76, 4602), "test": (77, 4725)}
    rolls, lengths = data["test"]
    assert rolls.shape == (77, 160, 88)
    mask = torch.arange(160) < lengths.unsqueeze(-1)
    assert rolls[~mask].sum() == 0
    assert set(rolls.unique().tolist()) == {0.0, 1.0}
    keys = rolls.sum((0, 1)).nonzero().squeeze(-1)
    assert int(keys.min()) >= 43 - 21 and int(keys.max()) <= 96 - 21
    with pytest.raises(ValueError, match="split"):
        ppgen.datasets.load_jsb_chorales("dev")


# ------------------------------------------------------------------- bad input
def test_bad_input_is_refused_clearly():
    x, params = _truth("gaussian", "diag", n=4, t=6)
    hmm = _model("gaussian", "diag", params)
    with pytest.raises(TypeError, match="ragged"):
        hmm.log_prob(np.array([np.zeros((3, 2)), np.zeros((5, 2))], dtype=object))
    with pytest.raises(ValueError, match=r"lengths.*<= the padded length 6.*lengths\[1\] = 9"):
        hmm.log_prob(x, lengths=[6, 9, 2, 3])
    with pytest.raises(ValueError, match="lengths: expected a 1-D array of 4"):
        hmm.log_prob(x, lengths=[6, 6])
    with pytest.raises(ValueError, match="lengths: expected lengths >= 1"):
        hmm.log_prob(x, lengths=[6, 0, 2, 3])
    with pytest.raises(ValueError, match="3 dimensions"):
        hmm.log_prob(x[0])
    with pytest.raises(ValueError, match=r"data\[1\]: expected a sequence of shape"):
        hmm.log_prob([x[0], x[1, :, 0]])
    with pytest.raises(ValueError, match="same number of features"):
        hmm.log_prob([x[0], torch.zeros(3, 5)])
    nan = x.clone()
    nan[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="lengths=.*impute"):
        hmm.log_prob(nan)
    cat = _model("categorical", "diag", _truth("categorical")[1])
    with pytest.raises(ValueError, match=r"symbols in 0\.\.3"):
        cat.log_prob(torch.tensor([[0, 1, 7]]))
    with pytest.raises(ValueError, match="integer symbols"):
        cat.log_prob(torch.tensor([[0.5, 1.0]]))
    bern = _model("bernoulli", "diag", _truth("bernoulli")[1])
    with pytest.raises(ValueError, match="bits"):
        bern.log_prob(torch.full((1, 3, 2), 2.0))
    pois = _model("poisson", "diag", _truth("poisson")[1])
    with pytest.raises(ValueError, match="non-negative integer counts"):
        pois.log_prob(torch.full((1, 3, 2), -1.0))
    with pytest.raises(ppgen.NotFittedError, match="ppgen.fit"):
        ppgen.HiddenMarkovModel(2).predict(x)
    with pytest.raises(ValueError, match=r"params\['transition_probs'\].*summing to 1"):
        ppgen.HiddenMarkovModel(2).set_params(transition_probs=[[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"params: expected names among initial_probs, trans"):
        ppgen.HiddenMarkovModel(2).set_params(rates=[[1.0], [2.0]])
    with pytest.raises(ValueError, match="transition_concentration: expected a value >= 1"):
        ppgen.fit(ppgen.HiddenMarkovModel(2, transition_concentration=0.5), x, "em",
                  progress=False)
    with pytest.raises(ValueError, match="emission: expected one of"):
        ppgen.HiddenMarkovModel(2, emission="normal")
    with pytest.raises(ValueError, match="lengths: expected an int >= 1"):
        hmm.sample(2, lengths=[3, 0])
    before = hmm.get_params()
    with pytest.raises(ValueError):
        ppgen.fit(hmm, x, "em", init={"locs": torch.zeros(5, 2)}, progress=False)
    for name, value in hmm.get_params().items():  # a failed fit leaves the model as it was
        assert torch.equal(value, before[name])


def test_relabel_undoes_permuted_states():
    _, params = _truth("poisson", k=3, seed=13)
    hmm = _model("poisson", "diag", params)
    hmm.prepare_inputs(hmm.sample(5, lengths=10, seed=0), {})
    g = torch.Generator().manual_seed(0)
    draws = {"initial_probs": params["initial_probs"].expand(2, 50, 3).clone(),
             "transition_probs": params["transition_probs"].expand(2, 50, 3, 3).clone(),
             "rates": (params["rates"] * (1 + 0.01 * torch.randn(2, 50, 3, 2, generator=g,
                                                                  dtype=torch.float64)))}
    perms = torch.stack([torch.randperm(3, generator=g) for _ in range(100)]).view(2, 50, 3)
    switched = {
        "initial_probs": torch.gather(draws["initial_probs"], -1, perms),
        "rates": torch.gather(draws["rates"], -2, perms.unsqueeze(-1).expand(2, 50, 3, 2)),
        "transition_probs": torch.stack([torch.stack([
            draws["transition_probs"][c, s][perms[c, s]][:, perms[c, s]] for s in range(50)])
            for c in range(2)]),
    }
    fixed = hmm.relabel(switched)
    # Up to one common permutation of the labels, every draw is back in place.
    common = torch.cdist(fixed["rates"][0, 0], draws["rates"][0, 0]).argmin(1)
    for name in ("initial_probs", "rates"):
        assert_close(fixed[name], torch.index_select(draws[name], 2, common), atol=0, rtol=0)
    expected = draws["transition_probs"][..., common, :][..., common]
    assert_close(fixed["transition_probs"], expected, atol=0, rtol=0)


def test_em_and_svi_fits_convert_to_arviz():
    x, _ = ppgen.datasets.make_hmm(8, 10, 2, num_features=2, min_length=4, seed=14)
    em = ppgen.fit(ppgen.HiddenMarkovModel(2), x, "em", seed=0, progress=False)
    idata = em.to_arviz()
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "sequence")
    assert idata.observed_data["obs"].shape == (8, max(len(s) for s in x), 2)
    svi = ppgen.fit(ppgen.HiddenMarkovModel(2), x, "svi", guide="normal", num_steps=300,
                    num_samples=50, seed=0, progress=False)
    assert svi.posterior["transition_probs"].shape == (1, 50, 2, 2)
    kinds = {d.code for d in svi.diagnose()}
    assert "nan" not in kinds
    assert svi.to_arviz().log_likelihood["obs"].shape == (1, 50, 8)


@pytest.mark.parametrize("enumerate_states", [False, True])
def test_plain_pyro_svi_on_the_model_guide_pair(enumerate_states):
    x, _ = ppgen.datasets.make_hmm(15, 12, 2, num_features=2, emission="gaussian",
                                   covariance="full", seed=15)
    em = ppgen.HiddenMarkovModel(2, covariance="full")
    ppgen.fit(em, x, "em", seed=0, progress=False)
    hmm = ppgen.HiddenMarkovModel(2, covariance="full")
    padded, kw = hmm.prepare_inputs(x, {})
    kw["enumerate_states"] = enumerate_states
    pyro.clear_param_store()
    svi = pyro.infer.SVI(config_enumerate(hmm.model), hmm.guide, pyro.optim.Adam({"lr": 0.05}),
                         TraceEnum_ELBO(max_plate_nesting=1))
    for _ in range(200 if enumerate_states else 400):
        svi.step(padded, **kw)
    store = pyro.get_param_store()
    hmm.set_point_estimate({k[len("hmm_"):]: store[k] for k in store.keys()})
    pyro.clear_param_store()
    ll_em = float(em.log_prob(x).sum())
    assert float(hmm.log_prob(x).sum()) > ll_em - 0.01 * abs(ll_em)


@pytest.mark.parametrize("emission", ["bernoulli", "poisson", "categorical"])
def test_an_impossible_frame_has_log_likelihood_minus_infinity(emission):
    _, params = _truth(emission, k=2, seed=16)
    name = "rates" if emission == "poisson" else "probs"
    p = params[name].clone()
    if emission == "categorical":
        p[:, 3] = 0
        p = p / p.sum(-1, keepdim=True)
        x = torch.tensor([[0, 1, 3], [0, 1, 2]])
    else:
        p[:, 1] = 0
        x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
    params[name] = p
    hmm = _model(emission, "diag", params)
    for dtype in (torch.float64, torch.float32):  # no dtype-dependent finite floor
        lp = hmm.to(dtype).log_prob(x)
        assert lp[0] == -math.inf and torch.isfinite(lp[1])
    assert not torch.isnan(hmm.predict_proba(x)).any()


def test_steps_far_below_an_unreachable_state_stay_exact():
    """The reachable states emit the frame hundreds of nats below an unreachable one: the
    scaled recursion underflows there and must redo the step (review finding)."""
    params = {"initial_probs": torch.tensor([1.0, 0.0]),
              "transition_probs": torch.tensor([[0.9, 0.1], [0.0, 1.0]]),
              "locs": torch.tensor([[0.0], [20.0]]), "covariances": torch.ones(2, 1)}
    for dtype, x0 in ((torch.float32, 16.0), (torch.float64, 60.0)):
        hmm = ppgen.HiddenMarkovModel(2, dtype=dtype)
        hmm.set_params(**params)
        x = torch.tensor([[[x0], [20.0]]], dtype=dtype)
        exact = _brute_force("gaussian", "diag", {k: v.double() for k, v in params.items()},
                             x[0].double())
        assert_close(hmm.log_prob(x).double(), exact.reshape(1), rtol=1e-5)
        steps = hmm.score(x, per_step=True)
        assert torch.isfinite(steps).all()
        assert_close(hmm.predict_proba(x).sum(-1), torch.ones(1, 2, dtype=dtype), rtol=1e-5)
        assert hmm.sample_states(x, seed=0).shape == (1, 2)
        mask = torch.ones(1, 2, dtype=torch.bool)
        fb = forward_backward(hmm._log_b(x, mask), hmm.initial_probs, hmm.transition_probs,
                              mask)
        assert_close(fb["log_lik"].double(), exact.reshape(1), rtol=1e-5)


def test_review_findings_on_input_handling():
    x, params = _truth("categorical", n=4, t=6)
    ref = ppgen.HiddenMarkovModel(2, emission="categorical")
    ppgen.fit(ref, x, "em", seed=0, progress=False)
    for dtype in (torch.int32, torch.int16, torch.uint8):  # any integer type of symbols
        assert torch.equal(ref.log_prob(x.to(dtype)), ref.log_prob(x))
    ppgen.fit(ppgen.HiddenMarkovModel(2, emission="categorical"), x.to(torch.int32), "em",
              progress=False)
    g, gp = _truth("gaussian", "diag", n=3, t=5)
    hmm = _model("gaussian", "diag", gp)
    with pytest.raises(ValueError, match="2 features per step"):
        hmm.log_prob(torch.zeros(1, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="one number of features"):
        hmm.set_params(locs=torch.zeros(3, 3, dtype=torch.float64))
    mixed = ppgen.HiddenMarkovModel(2)
    mixed.set_params(initial_probs=[0.5, 0.5], transition_probs=[[0.9, 0.1], [0.1, 0.9]],
                     locs=torch.zeros(2, 1), covariances=torch.ones(2, 1, dtype=torch.float64))
    assert {v.dtype for v in mixed.get_params().values()} == {torch.float64}
    assert torch.isfinite(mixed.log_prob(torch.zeros(1, 3, 1))).all()
    bern = _model("bernoulli", "diag", _truth("bernoulli")[1])
    with pytest.raises(ValueError, match="bits"):  # observed entries of partly missing frames
        bern.impute(torch.tensor([[[float("nan"), 7.0]]]))
    with pytest.raises(TypeError, match="model_kwargs.*length"):
        ppgen.fit(ppgen.HiddenMarkovModel(2), g, "em", model_kwargs={"length": [5, 5, 5]},
                  progress=False)
    with pytest.raises(ValueError, match=r"init\['locs'\]"):
        ppgen.fit(ppgen.HiddenMarkovModel(2), g, "em", init={"locs": torch.zeros(3, 2)},
                  progress=False)
    with pytest.raises(ppgen.NotFittedError):
        ppgen.HiddenMarkovModel(2, emission="categorical").bic(x)
    # NaN padding gives finite gradients in plain Pyro SVI.
    padded, kw = hmm.prepare_inputs([s[:n] for s, n in zip(g, [5, 3, 2])], {})
    nan_pad = padded.clone()
    nan_pad[torch.arange(5) >= kw["lengths"].unsqueeze(-1)] = float("nan")
    pyro.clear_param_store()
    svi = pyro.infer.SVI(hmm.model, hmm.guide, pyro.optim.Adam({"lr": 0.01}),
                         TraceEnum_ELBO(max_plate_nesting=1))
    for _ in range(2):
        assert math.isfinite(svi.step(nan_pad, **kw))
    assert all(torch.isfinite(v).all() for v in pyro.get_param_store().values())
    pyro.clear_param_store()


def test_float32_gaussian_em_far_from_the_origin():
    x, _ = ppgen.datasets.make_hmm(20, 50, 2, num_features=2, seed=0)
    results = []
    for dtype in (torch.float32, torch.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            fit = ppgen.fit(ppgen.HiddenMarkovModel(2), (x + 1e4).to(dtype), "em", seed=0,
                            num_steps=50, progress=False)
        results.append(fit.history["objective"][-1])
    assert results[0] == pytest.approx(results[1], rel=1e-4)


def test_fit_with_the_models_own_guide():
    x, _ = ppgen.datasets.make_hmm(15, 12, 2, num_features=2, seed=17)
    hmm = ppgen.HiddenMarkovModel(2)
    fit = ppgen.fit(hmm, x, "svi", guide="model", num_steps=300, lr=0.05, seed=0,
                    progress=False)
    assert hmm.is_fitted and fit.posterior is None
    em = ppgen.HiddenMarkovModel(2)
    ppgen.fit(em, x, "em", seed=0, progress=False)
    ll_em = float(em.log_prob(x).sum())
    assert float(hmm.log_prob(x).sum()) > ll_em - 0.01 * abs(ll_em)
