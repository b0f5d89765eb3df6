"""What hmmlearn users look for first (issue 15): parameters held fixed, sampling from a
given state, the stationary distribution, the too-little-data warning, and exact Gaussian
log-densities (no EM "decrease" warning when means are far apart), against hmmlearn."""

import math
import warnings

import numpy as np
import pytest
import torch

import ppgen
from ppgen.models.gaussian import cholesky, log_gaussian_exact
from ppgen.models.sequence import compiled
from tests.common import assert_close

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")


def _start(k, d, truth, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"initial_probs": torch.full((k,), 1 / k, dtype=torch.float64),
            "transition_probs": torch.full((k, k), 0.5 / k, dtype=torch.float64)
            + 0.5 * torch.eye(k, dtype=torch.float64),
            "locs": truth["locs"] + torch.randn(k, d, generator=g, dtype=torch.float64),
            "covariances": torch.ones(k, d, dtype=torch.float64)}


def _peer(start, params, n_iter):
    k, d = start["locs"].shape
    peer = hmmlearn_hmm.GaussianHMM(k, "diag", covars_prior=0, covars_weight=1, means_weight=0,
                                    init_params="", params=params, n_iter=n_iter,
                                    tol=-np.inf)
    peer.startprob_, peer.transmat_ = start["initial_probs"].numpy(), \
        start["transition_probs"].numpy()
    peer.means_, peer.covars_ = start["locs"].numpy(), start["covariances"].numpy()
    return peer


# ---------------------------------------------------------------- fixed parameters
@pytest.mark.parametrize("fixed,params", [(("transition_probs",), "smc"),
                                          (("covariances", "initial_probs"), "tm")])
def test_fixed_parameters_match_hmmlearn_params(fixed, params):
    k, d = 3, 2
    x, truth = ppgen.datasets.make_hmm(20, 30, k, num_features=d, seed=3)
    start = _start(k, d, truth)
    peer = _peer(start, params, 10)
    flat, lengths = x.reshape(-1, d).numpy(), [30] * 20
    peer.fit(flat, lengths)
    hmm = ppgen.HiddenMarkovModel(k, reg_covar=0, dtype=torch.float64)
    fit = ppgen.fit(hmm, x, "em", init=start, fixed=fixed, num_steps=10, tol=0, seed=0,
                    progress=False)
    for name in fixed:
        assert torch.equal(getattr(hmm, name), start[name]), name
    assert float(hmm.log_prob(x).sum()) == pytest.approx(peer.score(flat, lengths), rel=1e-10)
    assert_close(hmm.transition_probs, torch.as_tensor(peer.transmat_), atol=1e-10, rtol=0)
    assert_close(hmm.covariances, torch.as_tensor(peer._covars_), atol=1e-10, rtol=0)
    assert np.all(np.diff(fit.history["objective"]) >= 0)


def test_fixed_means_give_the_exact_covariance_m_step():
    """With the means held, one M-step sets each covariance to the posterior-weighted scatter
    around those means (hmmlearn's params without "m" diverges here, so this is checked
    from the E-step's marginals directly)."""
    k, d = 3, 2
    x, truth = ppgen.datasets.make_hmm(10, 40, k, num_features=d, seed=4)
    start = _start(k, d, truth)
    ref = ppgen.HiddenMarkovModel(k, reg_covar=0, dtype=torch.float64)
    ref.set_params(**start)
    gamma = ref.predict_proba(x).reshape(-1, k)
    frames = x.reshape(-1, d)
    diff = frames.unsqueeze(1) - start["locs"]  # (M, K, D)
    expected = (gamma.unsqueeze(-1) * diff.square()).sum(0) / gamma.sum(0).unsqueeze(-1)
    for dtype in (torch.float64, torch.float32):
        hmm = ppgen.HiddenMarkovModel(k, reg_covar=0, dtype=dtype)
        ppgen.fit(hmm, x.to(dtype), "em", init=start, fixed=("locs",), num_steps=1, tol=0,
                  seed=0, progress=False)
        assert torch.equal(hmm.locs, start["locs"].to(dtype))
        rtol = 1e-10 if dtype == torch.float64 else 1e-4
        assert_close(hmm.covariances.double(), expected, rtol=rtol)


def test_fixed_weights_of_a_mixture_and_fixed_sites_under_svi_and_mcmc():
    x = ppgen.datasets.load_old_faithful()
    weights = torch.tensor([0.3, 0.7], dtype=x.dtype)
    gmm = ppgen.GaussianMixture(2)
    fit = ppgen.fit(gmm, x, "em", init={"weights": weights}, fixed=("weights",), seed=0,
                    progress=False)
    assert torch.equal(gmm.weights, weights)
    assert np.all(np.diff(fit.history["objective"]) >= -1e-9 * abs(fit.history["objective"][0]))
    k, d = 3, 2
    seqs, truth = ppgen.datasets.make_hmm(5, 20, k, num_features=d, seed=3)
    start = _start(k, d, truth)
    hmm = ppgen.HiddenMarkovModel(k, dtype=torch.float64)
    fit = ppgen.fit(hmm, seqs, "svi", init=start, fixed=("transition_probs",), num_steps=30,
                    seed=0, tol=0, progress=False)
    assert "transition_probs" not in fit.info.continuous  # a constant, not a latent site
    assert torch.equal(hmm.transition_probs, start["transition_probs"])
    hmm = ppgen.HiddenMarkovModel(k, dtype=torch.float64)
    fit = ppgen.fit(hmm, seqs, "mcmc", init=start, fixed=("transition_probs", "initial_probs"),
                    num_samples=10, num_warmup=10, seed=0, progress=False)
    assert_close(hmm.transition_probs, start["transition_probs"], atol=1e-12, rtol=0)
    assert fit.posterior["transition_probs"].shape[1] == 10  # (chains, draws, K, K)
    assert (fit.posterior["transition_probs"] == start["transition_probs"]).all()


def test_bad_fixed_names_are_refused():
    x, _ = ppgen.datasets.make_hmm(4, 10, 2, num_features=2, seed=0)
    hmm = ppgen.HiddenMarkovModel(2)
    with pytest.raises(ValueError, match="fixed: expected names among the parameters of "
                                         "HiddenMarkovModel.*got weights"):
        ppgen.fit(hmm, x, "em", fixed=("weights",), progress=False)
    with pytest.raises(ValueError, match="fixed: expected parameters with a value.*init="):
        ppgen.fit(hmm, x, "em", fixed=("transition_probs",), progress=False)
    with pytest.raises(TypeError, match="fixed: expected a tuple of parameter names"):
        ppgen.fit(hmm, x, "em", fixed=3, progress=False)
    assert hmm.transition_probs is None  # nothing written half-way


# ------------------------------------------------------------ sampling, structure
def test_sampling_from_a_given_state_as_hmmlearn_currstate():
    k = 3
    _, truth = ppgen.datasets.make_hmm(1, 5, k, num_features=2, seed=1)
    hmm = ppgen.HiddenMarkovModel(k, dtype=torch.float64)
    hmm.set_params(**{n: v for n, v in truth.items() if n not in ("states", "lengths")})
    _, z = hmm.sample(2000, lengths=2, initial_state=2, seed=0, return_states=True)
    assert (z[:, 0] == 2).all()  # hmmlearn: the first sample is drawn from currstate
    freq = torch.bincount(z[:, 1], minlength=k).double() / 2000
    assert (freq - hmm.transition_probs[2]).abs().max() < 5 * math.sqrt(0.25 / 2000)
    peer = hmmlearn_hmm.GaussianHMM(k)
    peer.startprob_, peer.transmat_ = hmm.initial_probs.numpy(), hmm.transition_probs.numpy()
    peer.means_, peer._covars_ = hmm.locs.numpy(), hmm.covariances.numpy()
    _, states = peer.sample(3, random_state=0, currstate=2)
    assert states[0] == 2
    _, z = hmm.sample(3, lengths=4, initial_state=[0, 1, 2], seed=0, return_states=True)
    assert z[:, 0].tolist() == [0, 1, 2]
    for bad in (3, -1, [0, 1], 1.5, True):
        with pytest.raises((ValueError, TypeError), match="initial_state: expected"):
            hmm.sample(3, initial_state=bad)


def test_stationary_distribution_matches_hmmlearn():
    _, truth = ppgen.datasets.make_hmm(1, 5, 4, num_features=2, seed=2)
    hmm = ppgen.HiddenMarkovModel(4, dtype=torch.float64)
    hmm.set_params(**{n: v for n, v in truth.items() if n not in ("states", "lengths")})
    peer = hmmlearn_hmm.GaussianHMM(4)
    peer.transmat_ = hmm.transition_probs.numpy()
    p = hmm.stationary_distribution()
    assert_close(p, torch.as_tensor(peer.get_stationary_distribution()), atol=1e-12, rtol=0)
    assert_close(p @ hmm.transition_probs, p, atol=1e-13, rtol=0)
    left_to_right = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]],
                                 dtype=torch.float64)
    hmm = ppgen.HiddenMarkovModel(3, dtype=torch.float64)
    hmm.set_params(transition_probs=left_to_right, initial_probs=torch.tensor([1.0, 0, 0]),
                   locs=torch.zeros(3, 1), covariances=torch.ones(3, 1))
    assert_close(hmm.stationary_distribution(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-12)


@pytest.mark.parametrize("emission", ["bernoulli", "gaussian", "categorical"])
def test_left_to_right_topology_stays_under_em(emission):
    k = 3
    trans = torch.tensor([[0.99, 0.01, 0.0], [0.0, 0.99, 0.01], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
    init = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    _, truth = ppgen.datasets.make_hmm(1, 5, k, num_features=3, emission=emission,
                                       num_symbols=5, seed=1)
    source = ppgen.HiddenMarkovModel(k, emission=emission, dtype=torch.float64)
    source.set_params(**{n: v for n, v in truth.items() if n not in ("states", "lengths")})
    source.set_params(transition_probs=trans, initial_probs=init)
    x = source.sample(10, lengths=300, seed=0)
    hmm = ppgen.HiddenMarkovModel(k, emission=emission, dtype=torch.float64)
    start = {"transition_probs": trans, "initial_probs": init}
    if emission == "gaussian":  # from k-means, EM fails on this data (reported separately)
        start.update(locs=source.locs + 0.3, covariances=source.covariances * 1.5)
    ppgen.fit(hmm, x, "em", init=start, num_steps=5, tol=0, seed=0, progress=False)
    assert (hmm.transition_probs[trans == 0] == 0).all()
    assert (hmm.initial_probs[1:] == 0).all()
    assert (hmm.transition_probs[trans > 0] > 0).all()
    # One sequence of 300 steps takes the parallel path; it agrees with the batch.
    assert_close(hmm.log_prob([x[0]]), hmm.log_prob(x)[:1], atol=1e-9, rtol=0)


# ------------------------------------------------------------------ warnings
def test_too_little_data_warns_as_hmmlearn():
    k, d = 4, 2
    x, _ = ppgen.datasets.make_hmm(2, 3, k, num_features=d, seed=0)
    hmm = ppgen.HiddenMarkovModel(k)
    with pytest.warns(UserWarning, match="31 free scalar parameters to only 12 observed"):
        fit = ppgen.fit(hmm, x, "em", num_steps=3, seed=0, progress=False)
    assert [m.code for m in fit.messages][0] == "too_little_data"
    # The same count as hmmlearn's (its n_fit_scalars for params="stmc").
    peer = hmmlearn_hmm.GaussianHMM(k, "diag")
    peer.n_features = d
    assert sum(peer._get_n_fit_scalars_per_param().values()) == hmm.num_parameters() == 31
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        big, _ = ppgen.datasets.make_hmm(10, 10, k, num_features=d, seed=0)
        ppgen.fit(ppgen.HiddenMarkovModel(k), big, "em", num_steps=2, tol=0, seed=0,
                  progress=False)


def _far_apart_data(covariance, seed):
    """hmmlearn's GaussianHMM test data: means 20 x randint(-20, 20), variances 0.01-0.04."""
    tests = pytest.importorskip("hmmlearn.tests")
    prng = np.random.RandomState(seed)
    k = d = 3
    startprob = tests.normalized(prng.rand(k))
    transmat = tests.normalized(prng.rand(k, k), axis=1)
    means = prng.randint(-20, 20, (k, d))
    covars = tests.make_covar_matrix(covariance, k, d, random_state=prng)
    h = hmmlearn_hmm.GaussianHMM(k, covariance)
    h.startprob_ = startprob
    h.transmat_ = tests.normalized(transmat + np.diag(prng.rand(k)), 1)
    h.means_, h.covars_ = 20 * means, covars
    frames, _ = h.sample(1000, random_state=prng)
    return torch.as_tensor(frames).reshape(100, 10, d), h


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_m_steps_on_far_apart_means_raise_no_decrease_warning(covariance, seed):
    x, _ = _far_apart_data(covariance, seed)
    hmm = ppgen.HiddenMarkovModel(3, covariance=covariance, reg_covar=0, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ppgen.fit(hmm, x, "em", num_steps=30, tol=0, seed=seed, num_restarts=2,
                  progress=False)


@pytest.mark.parametrize("covariance", ["diag", "full", "spherical"])
def test_gaussian_log_densities_are_exact_far_from_each_other(covariance, monkeypatch):
    x, peer = _far_apart_data(covariance, 10)
    frames = x.reshape(-1, 3)
    hmm = ppgen.HiddenMarkovModel(3, covariance=covariance, dtype=torch.float64)
    cov = peer._covars_
    hmm.set_params(initial_probs=torch.as_tensor(peer.startprob_),
                   transition_probs=torch.as_tensor(peer.transmat_),
                   locs=torch.as_tensor(peer.means_, dtype=torch.float64),
                   covariances=torch.as_tensor(cov))
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    ours = hmm._log_b(x, mask).reshape(-1, 3)
    # Reference in extended precision (numpy longdouble) from the differences.
    xl = frames.numpy().astype(np.longdouble)
    mu = peer.means_.astype(np.longdouble)
    full = peer.covars_.astype(np.longdouble)
    ref = np.empty((len(xl), 3), dtype=np.longdouble)
    for j in range(3):
        inv = np.linalg.inv(full[j].astype(np.float64)).astype(np.longdouble)
        diff = xl - mu[j]
        maha = np.einsum("nd,de,ne->n", diff, inv, diff)
        logdet = np.linalg.slogdet(full[j].astype(np.float64))[1]
        ref[:, j] = -0.5 * (3 * np.log(2 * np.pi) + logdet + maha)
    near = ref > np.max(ref, 1, keepdims=True) - 50  # the states that explain the frame
    err = np.abs(ours.numpy().astype(np.longdouble) - ref)[near]
    assert float(err.max()) < 1e-9  # was ~1e-6 with the expanded quadratic form
    # The unfused EM path (features of centred frames) gives the same values ...
    monkeypatch.setattr(compiled, "FUSED_EM", False)
    hmm._em_plan = hmm._em_plan_of(x, None)  # the path em_initialize would choose
    c = hmm._em_frames(x, None)
    em = c["emission"].em_log_prob(hmm._emission_params(), c["feats"])
    em = em.view(10, 100, 3).transpose(0, 1).reshape(-1, 3)
    assert_close(em, ours, atol=1e-10, rtol=1e-13)
    hmm.em_finalize()
    # ... and the fused E-step (its own exact densities) the same log-likelihoods.
    monkeypatch.setattr(compiled, "FUSED_EM", True)
    hmm._em_plan = hmm._em_plan_of(x, None)
    assert hmm._em_frames(x, None)["fused"]
    fused = hmm.e_step(x, lengths=None)[1]["log_lik"]
    assert_close(fused, hmm.log_prob(x), atol=1e-9, rtol=1e-13)
    hmm.em_finalize()
    direct = log_gaussian_exact(frames, hmm.locs, cholesky(hmm.covariances, covariance),
                                covariance)
    assert_close(direct, ours, atol=1e-9, rtol=1e-14)
