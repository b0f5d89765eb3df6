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


# ------------------------------------------------------------ fused Gaussian E-step
def _gaussian_batch(covariance, seed=0):
    """A ragged batch with a far-away outlier frame, a frame whose reachable states'
    densities all underflow (the rescue: left-to-right chain, a frame at the unreachable
    state's mean, variances 0.01), and an HMM with those parameters."""
    k, d = 3, 2
    g = torch.Generator().manual_seed(seed)
    locs = torch.tensor([[0.0, 0.0], [5.0, 1.0], [10.0, -2.0]], dtype=torch.float64)
    cov = {"diag": torch.full((k, d), 0.01, dtype=torch.float64) * torch.tensor([1.0, 2.0]),
           "spherical": torch.tensor([0.01, 0.02, 0.015], dtype=torch.float64),
           "full": torch.tensor([[[0.01, 0.004], [0.004, 0.02]]] * k, dtype=torch.float64)
           }[covariance]
    trans = torch.tensor([[0.8, 0.2, 0.0], [0.0, 0.7, 0.3], [0.1, 0.0, 0.9]],
                         dtype=torch.float64)
    init = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    hmm = ppgen.HiddenMarkovModel(k, covariance=covariance, dtype=torch.float64)
    hmm.set_params(initial_probs=init, transition_probs=trans, locs=locs, covariances=cov)
    seqs = list(hmm.sample(4, lengths=[30, 1, 17, 9], seed=seed).unbind(0))
    seqs = [s[:n] for s, n in zip(seqs, [30, 1, 17, 9])]
    # Three frames at state 0's mean, then state 2's: at step 3 the chain can only be in
    # states 0 or 1, which emit the frame thousands of nats below state 2 (the rescue).
    seqs[0] = torch.cat([locs[0].expand(3, d), locs[2].expand(12, d)]) + 0.05 * torch.randn(
        15, d, generator=g, dtype=torch.float64)
    seqs[2][5] = torch.tensor([400.0, -300.0])  # far-away outlier: every density underflows
    seqs[3] = seqs[3] + 0.3 * torch.randn(seqs[3].shape, generator=g, dtype=torch.float64)
    x, lengths = hmm.prepare_inputs(seqs, {})
    return hmm, x, lengths["lengths"]


def _e_step(hmm, x, lengths, fused, monkeypatch):
    monkeypatch.setattr(compiled, "FUSED_EM", fused)
    hmm.em_finalize()  # the path is chosen by em_initialize's plan: choose it again
    hmm._em_plan = hmm._em_plan_of(x, lengths)
    ll, stats = hmm.e_step(x, lengths=lengths)
    c = hmm._em_frames(x, lengths)
    assert c["fused"] is fused
    if not fused:  # the sufficient statistics from the posteriors, centred as the fused
        mask = c["mask"]
        gamma = stats["gamma"][mask]  # (frames, K)
        xc = x[mask] - c["emission"]._shift
        stats = dict(stats, counts=gamma.sum(0), sums=gamma.T @ xc,
                     squares=torch.einsum("mk,md,me->kde", gamma, xc, xc))
    return ll, stats


@pytest.mark.parametrize("covariance", ["diag", "spherical", "full"])
def test_fused_gaussian_e_step_equals_the_unfused_one(covariance, monkeypatch):
    hmm, x, lengths = _gaussian_batch(covariance)
    ll_f, fused = _e_step(hmm, x, lengths, True, monkeypatch)
    ll_u, plain = _e_step(hmm, x, lengths, False, monkeypatch)
    assert math.isfinite(ll_f) and "gamma" not in fused
    assert_close(torch.tensor(ll_f), torch.tensor(ll_u), atol=1e-10 * abs(ll_u), rtol=0)
    assert_close(fused["log_lik"], plain["log_lik"], atol=1e-10 * abs(ll_u), rtol=0)
    assert fused["objective_scale"] == pytest.approx(plain["objective_scale"], rel=1e-10)
    diag = covariance != "full"
    for key in ("counts", "sums", "squares", "trans_counts", "start_counts"):
        want = plain[key]
        if key == "squares" and diag:  # the fused step accumulates the diagonal only
            want = torch.diag_embed(want.diagonal(dim1=-2, dim2=-1))
        assert_close(fused[key], want, atol=1e-10 * max(1.0, float(want.abs().max())),
                     rtol=0, msg=key)
    for key in ("counts", "sums", "squares", "trans_counts", "start_counts"):
        assert bool(torch.isfinite(fused[key]).all()), key
    # the data do reach the rescue: at step 3 of sequence 0 the reachable states' densities
    # are more than 745 nats (exp's underflow) below the largest, and the outlier's spread
    # over the states is wider still
    padded, _, mask, _ = hmm._apply_inputs(x, lengths)
    log_b = hmm._log_b(padded, mask)
    assert float((log_b[0, 3, :2] - log_b[0, 3].max()).max()) < -745
    assert float(log_b[2, 5].max() - log_b[2, 5].min()) > 745


@pytest.mark.parametrize("covariance", ["diag", "spherical", "full"])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_fused_e_step_refuses_ill_defined_covariances_as_the_unfused_one(covariance, bad,
                                                                        monkeypatch):
    hmm, x, lengths = _gaussian_batch(covariance)
    cov = hmm.covariances.clone()
    if covariance == "full":
        cov[1, 1, 1] = bad
    elif covariance == "diag":
        cov[1, 0] = bad
    else:
        cov[1] = bad
    hmm.covariances = cov
    messages = []
    for fused in (True, False):
        monkeypatch.setattr(compiled, "FUSED_EM", fused)
        hmm.em_finalize()
        hmm._em_plan = hmm._em_plan_of(x, lengths)
        with pytest.raises(ValueError, match="ill-defined covariance") as err:
            hmm.e_step(x, lengths=lengths)
        assert hmm._em_frames(x, lengths)["fused"] is fused
        messages.append(str(err.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("covariance,fixed", [("diag", ()), ("spherical", ()),
                                              ("full", ()),
                                              ("diag", ("transition_probs",)),
                                              ("full", ("transition_probs",)),
                                              ("spherical", ("locs", "initial_probs"))])
def test_em_fit_with_the_fused_e_step_equals_the_unfused_fit(covariance, fixed, monkeypatch):
    x, _ = ppgen.datasets.make_hmm(9, 70, 3, num_features=2, covariance=covariance,
                                   min_length=5, seed=4)
    calls = []
    real = compiled.gaussian_e_step
    monkeypatch.setattr(compiled, "gaussian_e_step",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    held = {"transition_probs": torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2],
                                              [0.0, 0.3, 0.7]], dtype=torch.float64),
            "initial_probs": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
            "locs": torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=torch.float64)}
    init = {name: held[name] for name in fixed}
    fits = []
    for fused in (True, False):
        monkeypatch.setattr(compiled, "FUSED_EM", fused)
        hmm = ppgen.HiddenMarkovModel(3, covariance=covariance, dtype=torch.float64)
        fit = ppgen.fit(hmm, x, "em", num_steps=200, tol=1e-9, seed=1, fixed=fixed,
                        init=init, progress=False)
        fits.append((hmm.get_params(), fit.history["objective"]))
        assert bool(calls) is fused
        calls.clear()
    (p_f, h_f), (p_u, h_u) = fits
    assert len(h_f) == len(h_u) > 5
    assert_close(torch.tensor(h_f), torch.tensor(h_u), atol=1e-8 * abs(h_u[-1]), rtol=0)
    for name, value in p_f.items():
        assert_close(value, p_u[name], atol=1e-8, rtol=0, msg=name)
    for name in fixed:  # held at their start values
        assert torch.equal(p_f[name], held[name]), name


def test_fused_e_step_is_chosen_only_where_it_applies(monkeypatch):
    x, _ = ppgen.datasets.make_hmm(5, 40, 2, num_features=2, seed=0)
    calls = []
    real = compiled.gaussian_e_step
    monkeypatch.setattr(compiled, "gaussian_e_step",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for dtype, emission, want in ((torch.float64, "gaussian", True),
                                  (torch.float32, "gaussian", False),
                                  (torch.float64, "poisson", False)):
        data = x.round().abs() if emission == "poisson" else x
        hmm = ppgen.HiddenMarkovModel(2, emission=emission, dtype=dtype)
        ppgen.fit(hmm, data, "em", num_steps=3, tol=0, seed=0, progress=False)
        assert bool(calls) is want, (dtype, emission)
        calls.clear()
    assert not compiled.fused_usable(x.double(), num_sequences=1, num_steps=10,
                                     num_states=compiled.MAX_STATES + 1)
    assert not compiled.fused_usable(x.double().requires_grad_(), num_sequences=1,
                                     num_steps=10, num_states=2)


def test_em_does_not_format_the_postfix_of_a_disabled_progress_bar(monkeypatch):
    """Formatting tqdm's postfix costs ~0.5 ms per EM iteration even when nothing is shown."""
    from ppgen.inference import em

    real = em.progress_bar
    bars = []

    def bar(*args, **kwargs):
        b = real(*args, **kwargs)
        b.set_postfix = lambda *a, **kw: bars.append("postfix")
        bars.append(b)
        return b

    monkeypatch.setattr(em, "progress_bar", bar)
    x, _ = ppgen.datasets.make_hmm(3, 30, 2, num_features=2, seed=0)
    ppgen.fit(ppgen.HiddenMarkovModel(2), x, "em", num_steps=5, tol=0, seed=0, progress=False)
    assert len(bars) == 1 and bars[0].disable


def _log_space_posteriors(log_b, init, trans):
    """Independent reference: forward-backward in log space (logsumexp), float64, one
    unpadded batch; returns log-likelihood (N,), gamma (N, T, K), expected transitions."""
    log_b, log_a, log_pi = log_b.double(), trans.double().log(), init.double().log()
    n, steps, k = log_b.shape
    fw = [log_pi + log_b[:, 0]]
    for t in range(1, steps):
        fw.append(torch.logsumexp(fw[-1][:, :, None] + log_a, 1) + log_b[:, t])
    bw = [torch.zeros(n, k, dtype=torch.float64)]
    for t in range(steps - 1, 0, -1):
        bw.insert(0, torch.logsumexp(log_a + (log_b[:, t] + bw[0])[:, None, :], 2))
    log_lik = torch.logsumexp(fw[-1], -1)
    gamma = torch.stack([(f + b - log_lik[:, None]).exp() for f, b in zip(fw, bw)], 1)
    xi = sum((fw[t - 1][:, :, None] + log_a + (log_b[:, t] + bw[t])[:, None, :]
              - log_lik[:, None, None]).exp().sum(0) for t in range(1, steps))
    return log_lik, gamma, xi


LEFT_TO_RIGHT = [[0.9, 0.1, 0.0, 0.0], [0.0, 0.9, 0.1, 0.0], [0.0, 0.0, 0.9, 0.1],
                 [0.0, 0.0, 0.0, 1.0]]


@pytest.mark.parametrize("dtype,gap", [(torch.float32, 85.0), (torch.float64, 700.0)])
@pytest.mark.parametrize("algorithm", ["sequential", "parallel", "compiled"])
def test_likely_frames_of_unreachable_states_leave_the_posteriors_finite(dtype, gap,
                                                                         algorithm):
    """Left-to-right chain whose last state, three steps away, emits the first frames `gap`
    nats above the reachable ones, just short of exp's underflow (so no rescue): its
    backward messages used to grow as 1 / c_t per step and overflow, and 0 * inf made
    gamma and the counts NaN."""
    trans = torch.tensor(LEFT_TO_RIGHT, dtype=dtype)
    init = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype)
    g = torch.Generator().manual_seed(0)
    log_b = torch.randn(3, 48, 4, generator=g, dtype=torch.float64)
    log_b[:, :, 3] += gap
    log_b = log_b.to(dtype)
    assert float((log_b[:, 0, 0] - log_b[:, 0, 3]).max()) > math.log(torch.finfo(dtype).tiny)
    mask = torch.ones(3, 48, dtype=torch.bool)
    out = ops.forward_backward(log_b, init, trans, mask, algorithm=algorithm, block_length=8)
    log_lik, gamma, xi = _log_space_posteriors(log_b, init, trans)
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    for key in ("gamma", "trans_counts", "start_counts"):
        assert bool(torch.isfinite(out[key]).all()), key
    assert_close(out["log_lik"].double(), log_lik, atol=tol * log_lik.abs().max(), rtol=0)
    assert_close(out["gamma"].double(), gamma, atol=tol, rtol=0)
    assert_close(out["trans_counts"].double(), xi, atol=tol * 10, rtol=0)
    assert_close(out["start_counts"].double(), gamma[:, 0].sum(0), atol=tol, rtol=0)


def test_fused_e_step_stays_finite_on_likely_frames_of_unreachable_states(monkeypatch):
    """The fused Gaussian E-step on the same trap in float64: every frame sits at the mean
    of the last state, about 700 nats above the others, which the chain reaches at step 3."""
    trans = torch.tensor(LEFT_TO_RIGHT, dtype=torch.float64)
    hmm = ppgen.HiddenMarkovModel(4, covariance="diag", dtype=torch.float64)
    hmm.set_params(initial_probs=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64),
                   transition_probs=trans,
                   locs=torch.tensor([[37.4], [37.3], [37.2], [0.0]], dtype=torch.float64),
                   covariances=torch.ones(4, 1, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    x = 0.01 * torch.randn(1, 40, 1, generator=g, dtype=torch.float64)
    lengths = torch.tensor([40])
    ll, stats = _e_step(hmm, x, lengths, True, monkeypatch)
    padded, _, mask, _ = hmm._apply_inputs(x, lengths)
    log_b = hmm._log_b(padded, mask)
    assert -708 < float(log_b[0, 0, 0] - log_b[0, 0, 3]) < -690  # short of the rescue
    log_lik, gamma, xi = _log_space_posteriors(log_b, hmm.initial_probs, trans)
    assert ll == pytest.approx(float(log_lik[0]), rel=1e-10)
    assert_close(stats["trans_counts"], xi, atol=1e-8, rtol=0)
    assert_close(stats["counts"], gamma[0].sum(0), atol=1e-8, rtol=0)
