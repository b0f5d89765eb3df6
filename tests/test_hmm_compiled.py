"""The compiled HMM kernels (ppgen.models.sequence.compiled, numba) equal the torch
recursions to round-off on ragged padded batches and every emission, take over exactly where
no gradient is wanted on the CPU, and keep EM's result."""

import math

import pytest
import torch

import ppgen
from ppgen.models.sequence import compiled, ops
from tests.common import assert_close

pytest.importorskip("numba")

EMISSIONS = [("gaussian", "diag"), ("gaussian", "full"), ("gaussian", "spherical"),
             ("categorical", "diag"), ("bernoulli", "diag"), ("poisson", "diag")]


def _fitted(emission, covariance, dtype=torch.float64, n=7, t=60, k=3, seed=0):
    """A ragged batch (lengths from 1 to t) and an HMM with fitted (not true) parameters."""
    x, _ = ppgen.datasets.make_hmm(n, t, k, num_features=3, emission=emission,
                                   covariance=covariance, num_symbols=5, min_length=1,
                                   seed=seed)
    hmm = ppgen.HiddenMarkovModel(k, emission=emission, covariance=covariance, dtype=dtype)
    ppgen.fit(hmm, x, "em", num_steps=3, tol=0, seed=seed, progress=False)
    padded, _, mask, _ = hmm._apply_inputs(x, None)
    return hmm, hmm._log_b(padded, mask), mask


@pytest.mark.parametrize("emission,covariance", EMISSIONS)
def test_compiled_equals_sequential_on_ragged_batches(emission, covariance):
    hmm, log_b, mask = _fitted(emission, covariance)
    args = (log_b, hmm.initial_probs, hmm.transition_probs, mask)
    seq = ops.forward_backward(*args, algorithm="sequential")
    com = ops.forward_backward(*args, algorithm="compiled")
    for key in ("log_lik", "gamma", "trans_counts", "start_counts"):
        assert com[key].dtype == seq[key].dtype
        assert_close(com[key], seq[key], atol=1e-10, rtol=0, msg=key)
    assert (com["gamma"][~mask] == 0).all()
    assert_close(ops.forward_log_prob(*args, algorithm="compiled"), seq["log_lik"],
                 atol=1e-10, rtol=0)
    (path_s, score_s), (path_c, score_c) = (ops.viterbi(*args, algorithm=a)
                                            for a in ("sequential", "compiled"))
    assert torch.equal(path_c, path_s)
    assert_close(score_c, score_s, atol=1e-10, rtol=0)


def test_float32_and_underflowing_steps_are_exact():
    """float32 agrees with float64 to float32 round-off; a step whose reachable states all
    emit hundreds of nats below an unreachable one (the rescue) and an impossible frame
    give what the sequential torch code gives."""
    hmm, log_b, mask = _fitted("gaussian", "diag", dtype=torch.float32)
    args32 = (log_b, hmm.initial_probs, hmm.transition_probs, mask)
    com = ops.forward_backward(*args32, algorithm="compiled")
    ref = ops.forward_backward(*(a.double() if a.is_floating_point() else a for a in args32),
                               algorithm="sequential")
    assert com["log_lik"].dtype == torch.float32
    assert_close(com["log_lik"].double(), ref["log_lik"], atol=1e-3, rtol=1e-5)
    assert_close(com["gamma"].double(), ref["gamma"], atol=1e-4, rtol=0)
    trans = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
    init = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    lb = torch.randn(2, 40, 3, generator=g, dtype=torch.float64)
    lb[:, 1, 2] = 800.0  # state 2 is unreachable at step 1 and emits 800 nats higher
    lb[1, 30] = -math.inf  # impossible under every state
    m = torch.ones(2, 40, dtype=torch.bool)
    seq = ops.forward_backward(lb, init, trans, m, algorithm="sequential")
    com = ops.forward_backward(lb, init, trans, m, algorithm="compiled")
    assert math.isfinite(float(com["log_lik"][0])) and com["log_lik"][1] == -math.inf
    assert_close(com["log_lik"][0], seq["log_lik"][0], atol=1e-10, rtol=0)
    assert_close(com["gamma"][0], seq["gamma"][0], atol=1e-10, rtol=0)


def test_compiled_path_is_taken_only_without_gradients_on_the_cpu(monkeypatch):
    hmm, log_b, mask = _fitted("gaussian", "diag")
    init, trans = hmm.initial_probs, hmm.transition_probs
    calls = []
    for name in ("forward_log_prob", "forward_backward", "viterbi"):
        real = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *a, _real=real, _name=name, **kw:
                            calls.append(_name) or _real(*a, **kw))
    x = hmm.sample(3, lengths=50, seed=0)
    hmm.log_prob(x), hmm.predict_proba(x), hmm.predict(x)
    assert calls == ["forward_log_prob", "forward_backward", "viterbi"]
    calls.clear()
    leaf = log_b.clone().requires_grad_()
    lp = ops.forward_log_prob(leaf, init, trans, mask)
    lp.sum().backward()  # differentiable: the torch path
    assert calls == [] and torch.isfinite(leaf.grad).all()
    assert not compiled.preferred(10, 100, compiled.MAX_STATES + 1)
    with pytest.raises(ValueError, match="algorithm='compiled' needs numba"):
        ops.forward_backward(log_b.unsqueeze(0).expand(2, -1, -1, -1), init, trans, mask,
                             algorithm="compiled")
    with pytest.raises(ValueError, match="algorithm: expected 'auto'"):
        ops.viterbi(log_b, init, trans, mask, algorithm="numba")


def test_em_is_unchanged_by_the_compiled_kernels(monkeypatch):
    """The same EM fit with and without the kernels: equal parameters and log-likelihoods."""
    x, _ = ppgen.datasets.make_hmm(20, 80, 3, num_features=2, min_length=10, seed=3)
    fits = []
    for available in (True, False):
        monkeypatch.setattr(compiled, "AVAILABLE", available)
        hmm = ppgen.HiddenMarkovModel(3, dtype=torch.float64)
        fit = ppgen.fit(hmm, x, "em", num_steps=15, tol=0, seed=0, progress=False)
        fits.append((hmm.get_params(), fit.history["objective"]))
    for name, value in fits[0][0].items():
        assert_close(value, fits[1][0][name], atol=1e-9, rtol=0, msg=name)
    assert_close(torch.tensor(fits[0][1]), torch.tensor(fits[1][1]), atol=1e-8, rtol=1e-12)
