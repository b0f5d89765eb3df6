"""The time-parallel HMM recursions (ppgen.models.sequence.parallel) equal the sequential
ones to round-off: log-likelihoods, marginals, expected counts, Viterbi paths, gradients;
on ragged padded batches and every emission; and the models choose them by shape."""

import math

import numpy as np
import pytest
import torch

import ppgen
from ppgen.models.sequence import compiled, ops, parallel
from tests.common import assert_close

EMISSIONS = [("gaussian", "diag"), ("gaussian", "full"), ("gaussian", "spherical"),
             ("categorical", "diag"), ("bernoulli", "diag"), ("poisson", "diag")]


def _fitted(emission, covariance, n=7, t=60, k=3, seed=0):
    """A ragged batch and an HMM with fitted (not true) parameters, float64."""
    x, _ = ppgen.datasets.make_hmm(n, t, k, num_features=3, emission=emission,
                                   covariance=covariance, num_symbols=5, min_length=1,
                                   seed=seed)
    hmm = ppgen.HiddenMarkovModel(k, emission=emission, covariance=covariance,
                                  dtype=torch.float64)
    ppgen.fit(hmm, x, "em", num_steps=3, tol=0, seed=seed, progress=False)
    padded, lengths, mask, _ = hmm._apply_inputs(x, None)
    return hmm, hmm._log_b(padded, mask), mask


def _both(fn, *args, length, **kw):
    return (fn(*args, algorithm="sequential", **kw),
            fn(*args, algorithm="parallel", block_length=length, **kw))


@pytest.mark.parametrize("emission,covariance", EMISSIONS)
@pytest.mark.parametrize("length", [1, 4, 7, 64])
def test_parallel_equals_sequential_on_ragged_batches(emission, covariance, length):
    hmm, log_b, mask = _fitted(emission, covariance)
    init, trans = hmm.initial_probs, hmm.transition_probs
    seq, par = _both(ops.forward_backward, log_b, init, trans, mask, length=length)
    for key in ("log_lik", "gamma", "trans_counts", "start_counts"):
        assert_close(par[key], seq[key], atol=1e-10, rtol=0, msg=key)
    assert (par["gamma"][~mask] == 0).all()
    lp_seq, lp_par = _both(ops.forward_log_prob, log_b, init, trans, mask, length=length)
    assert_close(lp_par, lp_seq, atol=1e-10, rtol=0)
    (path_s, score_s), (path_p, score_p) = _both(ops.viterbi, log_b, init, trans, mask,
                                                 length=length)
    assert torch.equal(path_s, path_p)
    assert_close(score_p, score_s, atol=1e-10, rtol=0)


def test_parallel_log_likelihood_is_differentiable_with_posterior_draws():
    """Leading parameter dimensions (posterior draws) and gradients, as NUTS uses them."""
    g = torch.Generator().manual_seed(3)
    draws, n, t, k = 4, 3, 50, 3
    log_b = torch.randn(draws, n, t, k, generator=g, dtype=torch.float64)
    logits_a = torch.randn(draws, k, k, generator=g, dtype=torch.float64)
    logits_pi = torch.randn(draws, k, generator=g, dtype=torch.float64)
    mask = torch.arange(t) < torch.tensor([50, 31, 9]).unsqueeze(-1)
    grads = []
    for algorithm in ("sequential", "parallel"):
        leaves = [v.clone().requires_grad_() for v in (log_b, logits_a, logits_pi)]
        lp = ops.forward_log_prob(leaves[0], leaves[2].softmax(-1), leaves[1].softmax(-1),
                                  mask, algorithm=algorithm, block_length=6)
        assert lp.shape == (draws, n)
        lp.sum().backward()
        grads.append((lp.detach(), [v.grad for v in leaves]))
    assert_close(grads[1][0], grads[0][0], atol=1e-10, rtol=0)
    for gp, gs in zip(grads[1][1], grads[0][1]):
        assert torch.isfinite(gp).all()
        assert_close(gp, gs, atol=1e-10, rtol=0)


def test_left_to_right_and_impossible_frames_fall_back_exactly():
    """Rows of a block product that underflow (a left-to-right chain started late, a frame
    impossible under every reachable state) hand the call to the exact sequential code."""
    k = 3
    trans = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
    init = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    hmm = ppgen.HiddenMarkovModel(k, dtype=torch.float64)
    hmm.set_params(initial_probs=init, transition_probs=trans,
                   locs=torch.tensor([[0.0], [30.0], [60.0]], dtype=torch.float64),
                   covariances=torch.ones(k, 1, dtype=torch.float64))
    x, states = hmm.sample(3, lengths=300, seed=1, return_states=True)
    mask = torch.ones(3, 300, dtype=torch.bool)
    log_b = hmm._log_b(x, mask)
    seq, par = _both(ops.forward_backward, log_b, init, trans, mask, length=16)
    for key in seq:
        assert_close(par[key], seq[key], atol=1e-10, rtol=0, msg=key)
    assert torch.equal(*[p[0] for p in _both(ops.viterbi, log_b, init, trans, mask,
                                                 length=16)])
    assert torch.equal(hmm.predict(x), states)
    impossible = log_b.clone()
    impossible[1, 100] = -math.inf
    lp = ops.forward_log_prob(impossible, init, trans, mask, algorithm="parallel",
                              block_length=16)
    assert lp[1] == -math.inf and torch.isfinite(lp[[0, 2]]).all()


def test_the_model_chooses_the_parallel_path_for_long_sequences(monkeypatch):
    """Where a gradient is wanted (SVI, NUTS) a long sequence takes the parallel path; where
    none is (log_prob, predict_proba, predict on the CPU) the compiled kernels, when numba
    is installed (tests/test_hmm_compiled.py), else the parallel path too."""
    x, truth = ppgen.datasets.make_hmm(1, 3000, 4, num_features=2, seed=5)
    assert parallel.use_parallel(1, 3000, 4) and not parallel.use_parallel(1000, 100, 8)
    hmm = ppgen.HiddenMarkovModel(4, dtype=torch.float64)
    hmm.set_params(**{k: v for k, v in truth.items() if k not in ("states", "lengths")})
    monkeypatch.setattr(compiled, "AVAILABLE", False)  # as without numba
    calls = []
    for name in ("log_likelihood", "forward_backward", "viterbi"):
        real = getattr(parallel, name)
        monkeypatch.setattr(parallel, name, lambda *a, _real=real, _name=name, **kw:
                            calls.append(_name) or _real(*a, **kw))
    lp, proba, path = hmm.log_prob(x), hmm.predict_proba(x), hmm.predict(x)
    assert calls == ["log_likelihood", "forward_backward", "viterbi"]
    mask = torch.ones(1, 3000, dtype=torch.bool)
    log_b = hmm._log_b(x, mask)
    args = (log_b, hmm.initial_probs, hmm.transition_probs, mask)
    assert_close(lp, ops.forward_log_prob(*args, algorithm="sequential"), atol=1e-9, rtol=0)
    assert_close(proba, ops.forward_backward(*args, algorithm="sequential")["gamma"],
                 atol=1e-10, rtol=0)
    assert torch.equal(path, ops.viterbi(*args, algorithm="sequential")[0])
    monkeypatch.setattr(compiled, "AVAILABLE", True)
    calls.clear()
    ops.forward_log_prob(log_b.clone().requires_grad_(), *args[1:]).backward()
    assert calls == ["log_likelihood"]  # a gradient is wanted: never the compiled kernels


def test_em_on_one_long_sequence_matches_hmmlearn():
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    k, d = 3, 2
    x, truth = ppgen.datasets.make_hmm(1, 2000, k, num_features=d, seed=7)
    g = torch.Generator().manual_seed(0)
    start = {"initial_probs": torch.full((k,), 1 / k, dtype=torch.float64),
             "transition_probs": torch.full((k, k), 0.5 / k, dtype=torch.float64)
             + 0.5 * torch.eye(k, dtype=torch.float64),
             "locs": truth["locs"] + torch.randn(k, d, generator=g, dtype=torch.float64),
             "covariances": torch.ones(k, d, dtype=torch.float64)}
    peer = hmmlearn.GaussianHMM(k, covariance_type="diag", covars_prior=0, covars_weight=1,
                                means_weight=0, init_params="", n_iter=15, tol=-np.inf)
    peer.startprob_, peer.transmat_ = start["initial_probs"].numpy(), \
        start["transition_probs"].numpy()
    peer.means_, peer.covars_ = start["locs"].numpy(), start["covariances"].numpy()
    peer.fit(x[0].numpy())
    hmm = ppgen.HiddenMarkovModel(k, reg_covar=0, dtype=torch.float64)
    ppgen.fit(hmm, x, "em", init=start, num_steps=15, tol=0, seed=0, progress=False)
    assert float(hmm.log_prob(x)) == pytest.approx(peer.score(x[0].numpy()), rel=1e-9)
    assert np.array_equal(hmm.predict(x)[0].numpy(), peer.predict(x[0].numpy()))
    assert_close(hmm.transition_probs, torch.as_tensor(peer.transmat_), atol=1e-7, rtol=0)


def test_parallel_posterior_sampling_draws_from_the_posterior():
    """Forward filtering, backward sampling with the backward pass made parallel: the
    frequencies of many draws match the marginals, and no draw takes an impossible step."""
    k = 3
    trans = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]],
                         dtype=torch.float64)
    init = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 150, k, generator=g, dtype=torch.float64)
    mask = torch.arange(150) < torch.tensor([150, 97, 40]).unsqueeze(-1)
    copies = 400
    log_b, big_mask = base.repeat(copies, 1, 1), mask.repeat(copies, 1)
    gamma = ops.forward_backward(base, init, trans, mask, algorithm="sequential")["gamma"]
    draws = ops.sample_posterior(log_b, init, trans, big_mask, torch.Generator().manual_seed(0),
                                 algorithm="parallel", block_length=8)
    assert ((draws == -1) == ~big_mask).all()
    draws = draws.view(copies, 3, 150)
    freq = torch.nn.functional.one_hot(draws.clamp_min(0), k).double().mean(0)
    real = mask.unsqueeze(-1).expand_as(gamma)
    assert (freq - gamma)[real].abs().max() < 5 * math.sqrt(0.25 / copies)
    steps = draws[..., :-1].clamp_min(0), draws[..., 1:].clamp_min(0)
    used = mask[:, 1:].expand(copies, 3, 149)
    assert (trans[steps[0], steps[1]][used] > 0).all()
    assert (init[draws[..., 0]] > 0).all()


def test_bad_algorithm_is_refused():
    log_b = torch.zeros(1, 3, 2)
    with pytest.raises(ValueError, match="algorithm: expected"):
        ops.forward_backward(log_b, torch.full((2,), 0.5), torch.full((2, 2), 0.5),
                             torch.ones(1, 3, dtype=torch.bool), algorithm="fast")
