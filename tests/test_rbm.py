"""Restricted Boltzmann machines: exact log Z against brute force, AIS and RAISE against the
exact answer on RBMs trained on binarized MNIST and 8x8 digits, contrastive divergence
through ppgen.fit (checkpoint/resume included), and the applications."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ppgen
from ppgen.models.energy import ops
from ppgen.models.energy.ais import (
    _path,
    ais_log_partition,
    base_rate_bias,
    betas,
    raise_log_prob,
)
from ppgen.models.energy.ops import enumerate_states, exact_log_partition, free_energy

CPU = torch.device("cpu")


def _mnist(n_train=2000, n_test=200):
    x, _ = ppgen.datasets.load_mnist("train", binarize="fixed", dtype=torch.float64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:n_train]], x[perm[n_train:n_train + n_test]]


def _digits():
    x = (ppgen.datasets.load_digits(dtype=torch.float64)[0] > 0.5).double()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1500]], x[perm[1500:]]


@pytest.fixture(scope="module")
def mnist_rbm():
    train, test = _mnist()
    rbm = ppgen.RBM(15)
    ppgen.fit(rbm, train, "svi", num_epochs=10, batch_size=50, seed=0, progress=False, tol=0)
    return rbm, train, test, rbm.log_partition("exact").estimate


@pytest.fixture(scope="module")
def digits_rbm():
    train, test = _digits()
    rbm = ppgen.RBM(20)
    ppgen.fit(rbm, train, "svi", num_epochs=20, batch_size=50, seed=0, progress=False, tol=0)
    return rbm, train, test, rbm.log_partition("exact").estimate


def _maximum_likelihood_rbm(train, num_hidden, *, num_steps=200, lr=0.03, seed=0):
    """An RBM fitted by exact maximum likelihood: full-batch Adam on the exact gradient,
    E_data[v p(h | v)^T] - E_model[v h^T], with the model term from enumerating all 2^H
    hidden states (p(h) from the visible units summed out). A reference trainer for small
    RBMs, independent of ppgen's contrastive divergence; float32, then stored as float64."""
    g = torch.Generator().manual_seed(seed)
    x = train.float()
    w = 0.01 * torch.randn(x.shape[1], num_hidden, generator=g)
    p_on = x.mean(0).clamp(0.01, 0.99)
    b, c = (p_on.log() - (-p_on).log1p()), torch.zeros(num_hidden)
    hs = enumerate_states(num_hidden, 0, 2 ** num_hidden, dtype=torch.float32, device=CPU)
    params = (w, b, c)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(num_steps):
        ph = torch.sigmoid(x @ w + c)
        act = hs @ w.T + b
        p_h = torch.softmax(hs @ c + F.softplus(act).sum(1), 0)
        p_v = torch.sigmoid(act)
        grads = (x.T @ ph / len(x) - p_v.T @ (p_h[:, None] * hs), x.mean(0) - p_v.T @ p_h,
                 ph.mean(0) - hs.T @ p_h)
        for t, grad in zip(params, grads, strict=True):
            t.grad = -grad  # ascent on the log-likelihood
        opt.step()
    rbm = ppgen.RBM(num_hidden)
    rbm.set_params(weights=w.double(), visible_bias=b.double(), hidden_bias=c.double())
    rbm.base_rate_bias = base_rate_bias(train, "bernoulli")
    return rbm


@pytest.fixture(scope="module")
def ml_rbm():
    train, test = _mnist()
    rbm = _maximum_likelihood_rbm(train, 10)
    return rbm, test, rbm.log_partition("exact").estimate


def _random_rbm(num_visible, num_hidden, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    rbm = ppgen.RBM(num_hidden)
    rbm.set_params(weights=scale * torch.randn(num_visible, num_hidden, generator=g,
                                               dtype=torch.float64),
                   visible_bias=torch.randn(num_visible, generator=g, dtype=torch.float64),
                   hidden_bias=torch.randn(num_hidden, generator=g, dtype=torch.float64))
    return rbm


# ------------------------------------------------------------------------- exact log Z
@pytest.mark.parametrize("shape", [(5, 4), (3, 6)])
def test_exact_log_partition_matches_the_joint_enumeration(shape):
    rbm = _random_rbm(*shape)
    w, b, c = rbm.weights, rbm.visible_bias, rbm.hidden_bias
    v = enumerate_states(shape[0], 0, 2 ** shape[0], dtype=torch.float64, device=CPU)
    h = enumerate_states(shape[1], 0, 2 ** shape[1], dtype=torch.float64, device=CPU)
    neg_energy = (v @ b)[:, None] + (h @ c)[None, :] + v @ w @ h.T
    expected = torch.logsumexp(neg_energy.flatten(), 0)
    assert rbm.log_partition("exact").estimate == pytest.approx(float(expected), abs=1e-10)
    # and p(v) sums to one
    assert float(torch.logsumexp(rbm.log_prob(v, method="exact"), 0)) == pytest.approx(
        0.0, abs=1e-10)


def test_gaussian_exact_log_partition_matches_numerical_integration():
    rbm = ppgen.RBM(3, visible="gaussian")
    rbm.set_params(weights=torch.tensor([[0.8, -0.5, 1.2]], dtype=torch.float64),
                   visible_bias=torch.tensor([0.3], dtype=torch.float64),
                   hidden_bias=torch.tensor([0.1, -0.4, 0.2], dtype=torch.float64))
    grid = torch.linspace(-40, 40, 200001, dtype=torch.float64)[:, None]
    f = torch.exp(-free_energy(grid, rbm.weights, rbm.visible_bias, rbm.hidden_bias,
                               "gaussian"))
    numeric = math.log(float(torch.trapezoid(f, grid[:, 0])))
    assert rbm.log_partition("exact").estimate == pytest.approx(numeric, abs=1e-8)


# --------------------------------------------------- AIS and RAISE: unbiased weights
def _transition(path, beta, states, hiddens):
    """The block-Gibbs kernel T_beta[v, v'] by enumeration."""
    ph = torch.sigmoid(beta * path.act(states))
    p_h = torch.where(hiddens[None] == 1, ph[:, None], 1 - ph[:, None]).prod(-1)
    pv = torch.sigmoid((1 - beta) * path.base_bias + beta * (hiddens @ path.weights.T
                                                             + path.visible_bias))
    p_v = torch.where(states[None] == 1, pv[:, None], 1 - pv[:, None]).prod(-1)
    return p_h @ p_v


def test_ais_weights_are_unbiased_for_z_and_raise_for_the_annealing_model():
    rbm = _random_rbm(4, 3, seed=1, scale=1.5)
    base = torch.tensor([0.2, -0.5, 0.4, 0.0], dtype=torch.float64)
    rbm.base_rate_bias = base
    path = _path(rbm.weights, rbm.visible_bias, rbm.hidden_bias, base, "bernoulli")
    v = enumerate_states(4, 0, 16, dtype=torch.float64, device=CPU)
    h = enumerate_states(3, 0, 8, dtype=torch.float64, device=CPU)
    beta_path = betas(3, "linear")
    # Forward AIS: mean weight = Z / Z_0, so exp(log Z_hat) is unbiased for Z.
    log_z = float(exact_log_partition(rbm.weights, rbm.visible_bias, rbm.hidden_bias,
                                      "bernoulli"))
    est = rbm.log_partition("ais", num_samples=40000, num_betas=3, seed=0)
    assert abs(est.estimate - log_z) < 4 * est.stderr
    # RAISE: the weight's mean is p_ann(v), the annealing chain's marginal.
    p_ann = torch.exp(v @ base - F.softplus(base).sum())
    for k in range(1, 4):
        p_ann = p_ann @ _transition(path, float(beta_path[k]), v, h)
    lp, se = raise_log_prob(v, rbm.weights, rbm.visible_bias, rbm.hidden_bias, base,
                            "bernoulli", num_samples=20000, beta_path=beta_path,
                            generator=torch.Generator().manual_seed(0))
    assert torch.all((lp - p_ann.log()).abs() < 4 * se + 1e-3)


# ------------------------------------------- AIS against exact on trained RBMs (Done when)
@pytest.mark.parametrize("which", ["mnist_rbm", "digits_rbm"])
def test_ais_agrees_with_exact_log_partition_on_trained_rbms(which, request):
    rbm, _, _, exact = request.getfixturevalue(which)
    est = rbm.log_partition("ais", num_samples=100, num_betas=1000, seed=0)
    assert abs(est.estimate - exact) < 3 * est.stderr
    assert abs(est.estimate - exact) < 0.1
    assert est.stderr < 0.05


def test_ais_is_low_in_expectation_and_raise_above_exact_on_a_cd1_rbm(mnist_rbm):
    rbm, _, test, exact = mnist_rbm
    x = test[:100]
    # AIS: exp(log Z_hat) is unbiased for Z, so log Z_hat is
    # low in expectation (Jensen) and the log-likelihood from it high: the mean of 100
    # independent small runs sits below the exact log Z by far more than its noise.
    runs = torch.tensor([rbm.log_partition("ais", num_samples=2, num_betas=10,
                                           seed=s).estimate for s in range(100)])
    assert float(runs.mean()) + 3 * float(runs.std()) / 10 < exact
    # RAISE is a lower bound (in expectation) on log p_ann(v), the annealing chain's own
    # model (exact: the test above), not on log p(v). On this CD-1-trained RBM p_ann is the
    # better model of the data (a 10-step path gave about -184.9 against the exact -191.4
    # nats; short chains are what CD trains), so RAISE lands *above* log p(v), by about 0.5
    # nats at 1000 betas: it is conservative only for models near their maximum likelihood
    # (the next test). Checked here: above, and within a nat.
    ais = rbm.log_partition("ais", num_samples=100, num_betas=1000, seed=1)
    assert abs(ais.estimate - exact) < max(3 * ais.stderr, 0.1)
    raise_ll = rbm.log_prob(x[:40], method="raise", num_samples=5, num_betas=1000)
    exact40 = float(rbm.log_prob(x[:40], method="exact").mean())
    assert 0 < float(raise_ll.mean()) - exact40 < 1.0


@pytest.mark.parametrize("num_betas", [100, 1000])
def test_raise_and_ais_bracket_the_exact_log_likelihood(ml_rbm, num_betas):
    """Burda, Grosse & Salakhutdinov (2015): on an RBM near its maximum likelihood (10 hidden
    units fitted by the exact gradient to 2,000 MNIST images: -161 to -165 nats on the 200
    test images over training seeds 0-3, where CD-1 with 15 units reaches -184), RAISE
    under-estimates the held-out log-likelihood and AIS over-estimates it, both in
    expectation, and the bracket closes as the path grows. RAISE: 5 reverse chains for each
    of 100 test images; AIS: the mean of 100 runs of 2 chains (one run of 200 chains, its
    log-weights taken in pairs), which shows AIS's Jensen bias at a quick run's size.
    Measured over training seeds 0-3 and estimator seeds 0-1 (nats from the exact value):
    RAISE -1.6 to -2.5 at 100 betas (6.6-8.9 se), -0.37 to -1.00 at 1000 (2.7-6.1 se); AIS
    +1.9 to +2.2 at 100 (9-13 se), +0.37 to +0.97 at 1000 (3.9-8.2 se); bracket width
    3.6-4.6 nats at 100 betas, 0.74-1.97 at 1000."""
    rbm, test, log_z = ml_rbm
    x = test[:100]
    exact_per = rbm.log_prob(x, method="exact")
    exact = float(exact_per.mean())
    assert -175 < exact < -155  # a model near its maximum likelihood, not a CD-1 one
    raise_per = rbm.log_prob(x, method="raise", num_samples=5, num_betas=num_betas, seed=0)
    diff = raise_per - exact_per
    raise_gap, raise_se = float(diff.mean()), float(diff.std()) / 10
    _, _, log_w = ais_log_partition(rbm.weights, rbm.visible_bias, rbm.hidden_bias,
                                    rbm.base_rate_bias, "bernoulli", num_samples=200,
                                    beta_path=betas(num_betas, "linear"),
                                    generator=torch.Generator().manual_seed(0))
    log_z0 = _path(rbm.weights, rbm.visible_bias, rbm.hidden_bias, rbm.base_rate_bias,
                   "bernoulli").log_z0()
    runs = torch.logsumexp(log_w.reshape(100, 2), 1) - math.log(2) + log_z0
    ais_gap, ais_se = log_z - float(runs.mean()), float(runs.std()) / 10
    assert raise_gap < -2 * raise_se  # RAISE below exact, beyond its noise
    assert ais_gap > 2 * ais_se       # AIS above exact, beyond its noise
    assert ais_gap - raise_gap < (6.0 if num_betas == 100 else 2.5)  # and the bracket closes


# ----------------------------------------------------------------------------- training
def test_contrastive_divergence_beats_the_base_rate_model(mnist_rbm):
    rbm, train, test, _ = mnist_rbm
    p = train.mean(0).clamp(1e-3, 1 - 1e-3)
    base_ll = float((test * p.log() + (1 - test) * (1 - p).log()).sum(1).mean())
    ll = float(rbm.log_prob(test, method="exact").mean())
    assert ll > base_ll + 15  # about -184 against -208 nats


def test_pcd_checkpoint_resume_continues_identically(tmp_path):
    train, _ = _digits()
    options = dict(persistent=True, lr=0.01, batch_size=100, seed=3, progress=False, tol=0)
    straight = ppgen.RBM(8)
    ppgen.fit(straight, train, "svi", num_epochs=4, **options)
    first = ppgen.RBM(8)
    ppgen.fit(first, train, "svi", num_epochs=2, checkpoint=tmp_path, **options)
    resumed = ppgen.RBM(8)
    fit = ppgen.fit(resumed, train, "svi", num_epochs=4, resume=tmp_path, **options)
    for name in ("weights", "visible_bias", "hidden_bias"):
        assert torch.equal(getattr(resumed, name), getattr(straight, name)), name
    assert not torch.equal(first.weights, straight.weights)
    assert len(fit.history["objective"]) == 4 * 15


def test_validation_metrics_and_ais_curve():
    train, test = _digits()
    rbm = ppgen.RBM(6)
    fit = ppgen.fit(rbm, train, "svi", num_epochs=4, batch_size=100, seed=0, progress=False,
                    tol=0, validation_data=test, ais_every=2, ais_samples=20, ais_betas=100)
    assert len(fit.history["eval_reconstruction_error"]) == 4
    assert len(fit.history["eval_log_prob"]) == 2
    exact = float(rbm.log_prob(test, method="exact").mean())
    assert fit.history["eval_log_prob"][-1] == pytest.approx(exact, abs=1.0)


def test_gaussian_rbm_on_standardised_digits():
    x = ppgen.datasets.load_digits(dtype=torch.float64)[0]
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    rbm = ppgen.RBM(8, visible="gaussian")
    ppgen.fit(rbm, x[:1500], "svi", num_epochs=20, batch_size=50, seed=0, progress=False,
              tol=0)
    exact = rbm.log_partition("exact").estimate
    est = rbm.log_partition("ais", num_samples=100, num_betas=1000, seed=0)
    assert abs(est.estimate - exact) < max(3 * est.stderr, 0.1)
    # better than the standard normal it starts from (about -78.9 against -84.0 nats)
    held = x[1500:]
    std_normal = float((-0.5 * held.square() - 0.5 * math.log(2 * math.pi)).sum(1).mean())
    assert float(rbm.log_prob(held, method="exact").mean()) > std_normal + 3


# ------------------------------------------------------------------------- applications
def _conditional_log_lik(rbm, x, missing):
    """Exact log p(v_missing | v_observed) per row, by enumerating the hidden units."""
    w, b, c = rbm.weights, rbm.visible_bias, rbm.hidden_bias
    h = enumerate_states(rbm.num_hidden, 0, 2 ** rbm.num_hidden, dtype=w.dtype, device=CPU)
    act = h @ w.T + b  # (S, D)
    obs = (~missing).to(w.dtype)
    xo = torch.where(missing, torch.zeros_like(x), x)
    # log p(v_o, h) up to Z: h.c + v_o.(b + W h)_o + sum_missing softplus((b + W h)_m)
    log_joint_o = h @ c + xo @ act.T + (1 - obs) @ F.softplus(act).T
    return -free_energy(x, w, b, c, "bernoulli") - torch.logsumexp(log_joint_o, 1)


def test_clamped_gibbs_imputation_beats_mean_imputation(mnist_rbm):
    rbm, train, test, _ = mnist_rbm
    x = test[:100]
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[:, 392:] = True  # the bottom half of each image
    given = torch.where(missing, torch.full_like(x, float("nan")), x)
    filled = rbm.impute(given, num_steps=200, num_burnin=50, seed=0)
    assert torch.equal(filled[~missing], x[~missing])
    p_mean = train.mean(0).clamp(1e-3, 1 - 1e-3).expand_as(x)
    truth = x[missing]
    acc_rbm = float(((filled[missing] > 0.5).double() == truth).double().mean())
    acc_mean = float(((p_mean[missing] > 0.5).double() == truth).double().mean())
    assert acc_rbm > acc_mean  # about 0.865 against 0.855

    def bern(p):
        p = p.clamp(1e-4, 1 - 1e-4)
        return float((truth * p.log() + (1 - truth) * (1 - p).log()).sum() / len(x))

    mean_ll = bern(p_mean[missing])
    assert bern(filled[missing]) > mean_ll + 5  # per image, factorised predictive
    exact_cond = float(_conditional_log_lik(rbm, x, missing).mean())
    assert exact_cond > mean_ll + 5  # the RBM's exact conditional log-likelihood
    mean_field = rbm.impute(given, method="mean_field", num_steps=50)
    acc_mf = float(((mean_field[missing] > 0.5).double() == truth).double().mean())
    assert acc_mf > acc_mean


def test_sample_reconstruct_transform(mnist_rbm):
    rbm, train, test, _ = mnist_rbm
    state = torch.random.get_rng_state()
    a = rbm.sample(20, seed=1, num_burnin=50, num_chains=5, thinning=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.shape == (20, 784) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, rbm.sample(20, seed=1, num_burnin=50, num_chains=5, thinning=3))
    # samples look like digits: their pixel means follow the data's
    many = rbm.sample(500, seed=0, num_burnin=200)
    corr = np.corrcoef(many.mean(0).numpy(), train.mean(0).numpy())[0, 1]
    assert corr > 0.6  # about 0.73 after 200 sweeps
    assert rbm.transform(test).shape == (len(test), 15)
    noisy = test.clone()
    flip = torch.rand(test.shape, generator=torch.Generator().manual_seed(0)) < 0.1
    noisy[flip] = 1 - noisy[flip]
    rec = rbm.reconstruct(noisy)
    assert (rec - test).square().sum() < (noisy - test).square().sum()
    assert torch.equal(rbm.score(test, normalized=False), rbm.free_energy(test))


def test_log_z_cache_follows_the_parameters():
    rbm = _random_rbm(6, 4)
    x = (torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    lp = rbm.log_prob(x, num_samples=50)
    assert len(rbm._log_z_cache) == 1
    assert torch.equal(rbm.log_prob(x, num_samples=50), lp)
    rbm.set_params(hidden_bias=rbm.hidden_bias + 1.0)
    assert not rbm._log_z_cache
    lp2 = rbm.log_prob(x, method="exact")
    assert not torch.allclose(lp, lp2)
    with torch.no_grad():
        rbm.weights.add_(0.5)  # an in-place change is seen too
    assert not torch.equal(rbm.log_prob(x, method="exact"), lp2)


def test_scores_an_rbm_trained_by_scikit_learn():
    sklearn_rbm = pytest.importorskip("sklearn.neural_network").BernoulliRBM
    train, test = _digits()
    sk = sklearn_rbm(n_components=10, n_iter=3, learning_rate=0.05, random_state=0)
    sk.fit(train.numpy())
    rbm = ppgen.RBM(10)
    rbm.set_params(weights=torch.from_numpy(sk.components_.T),
                   visible_bias=torch.from_numpy(sk.intercept_visible_),
                   hidden_bias=torch.from_numpy(sk.intercept_hidden_))
    np.testing.assert_allclose(rbm.free_energy(test).numpy(), sk._free_energy(test.numpy()),
                               rtol=1e-10)
    ll = rbm.log_prob(test, method="exact")
    assert torch.isfinite(ll).all()


# ---------------------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors(mnist_rbm):
    rbm, _, test, _ = mnist_rbm
    with pytest.raises(ValueError, match="num_hidden: expected an integer >= 1"):
        ppgen.RBM(0)
    with pytest.raises(ValueError, match="visible"):
        ppgen.RBM(3, visible="poisson")
    with pytest.raises(ValueError, match="binary values"):
        rbm.log_prob(test * 0.5)
    with pytest.raises(ValueError, match="binary values"):
        ppgen.fit(ppgen.RBM(3), ppgen.datasets.load_digits()[0], "svi", num_steps=2,
                  progress=False)
    with pytest.raises(ValueError, match="784 features"):
        rbm.transform(test[:, :100])
    nan = test.clone()
    nan[0, 3] = float("nan")
    with pytest.raises(ValueError, match="impute"):
        rbm.free_energy(nan)
    with pytest.raises(ValueError, match="no missing values"):
        ppgen.fit(ppgen.RBM(3), nan, "svi", num_steps=2, progress=False)
    inf = test.clone()
    inf[1, 2] = float("inf")
    with pytest.raises(ValueError, match="1 infinite entries"):
        ppgen.fit(ppgen.RBM(3), inf, "svi", num_steps=2, progress=False)
    with pytest.raises(ValueError, match="weights: expected shape"):
        ppgen.RBM(4).set_params(weights=torch.zeros(6, 5))
    big = ppgen.RBM(30)
    big.set_params(weights=torch.zeros(40, 30), visible_bias=torch.zeros(40),
                   hidden_bias=torch.zeros(30))
    with pytest.raises(ValueError, match="'ais' or 'raise'"):
        big.log_partition("exact")
    with pytest.raises(ValueError, match="data"):
        rbm.log_partition("raise")
    with pytest.raises(ppgen.NotFittedError):
        ppgen.RBM(3).sample(2)
    with pytest.raises(TypeError, match="contrastive divergence"):
        ppgen.fit(ppgen.RBM(3), test, "svi", clip_norm=1.0, num_steps=2, progress=False)


def test_pyro_model_scores_data_by_minus_the_free_energy():
    import pyro.poutine as poutine

    rbm = _random_rbm(6, 4)
    x = (torch.rand(7, 6, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    trace = poutine.trace(rbm.model).get_trace(x)
    site = trace.nodes["obs"]
    assert site["is_observed"]
    torch.testing.assert_close(site["fn"].log_prob(x), -rbm.free_energy(x))
    torch.testing.assert_close(trace.log_prob_sum(), -rbm.free_energy(x).sum())
    assert rbm.guide(x) is None


# ------------------------------------------------------- sparse products with 0/1 sides
def _binary(shape, density, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).to(dtype)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
def test_binary_products_are_sums_of_rows(density):
    x = _binary((30, 17), density, 0)
    x[3] = 0  # an empty row (an empty bag)
    g = torch.Generator().manual_seed(1)
    w, bias, p = (torch.randn(*s, generator=g) for s in ((17, 9), (9,), (30, 9)))
    # the reference: the sums of rows, written out, in float64
    rows = torch.stack([w.double()[r.bool()].sum(0) for r in x]) + bias.double()
    cols = torch.stack([p.double()[c.bool()].sum(0) for c in x.T])
    for sparse in (False, True):
        out = ops.binary_matmul(x, w, bias, sparse=sparse)
        assert out.dtype == torch.float32 and out.shape == (30, 9)
        torch.testing.assert_close(out.double(), rows, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ops.binary_matmul(x, w, sparse=sparse).double(),
                                   rows - bias.double(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ops.binary_t_matmul(x, p, sparse=sparse).double(), cols,
                                   rtol=1e-5, atol=1e-5)


def test_sparse_path_is_chosen_by_density_and_width(monkeypatch):
    assert (ops.SPARSE_MAX_DENSITY, ops.SPARSE_MIN_WIDTH) == (0.05, 500)
    assert ops.use_sparse(_binary((100, 784), 0.02, 0), 500)
    assert not ops.use_sparse(_binary((100, 784), 0.02, 0), 250)  # the indices dominate
    assert not ops.use_sparse(_binary((100, 784), 0.13, 0), 500)  # binarized MNIST: dense
    monkeypatch.setattr(ops, "SPARSE_MAX_DENSITY", 0.0)
    assert not ops.use_sparse(_binary((10, 10), 0.0, 0), 1000)
    monkeypatch.setattr(ops, "SPARSE_MAX_DENSITY", 1.0)
    monkeypatch.setattr(ops, "SPARSE_MIN_WIDTH", 1)
    assert ops.use_sparse(_binary((10, 10), 0.9, 0), 1)


def _count_bags(monkeypatch):
    calls = []
    bag = F.embedding_bag

    def counting(*args, **kwargs):
        calls.append(1)
        return bag(*args, **kwargs)

    monkeypatch.setattr(ops.F, "embedding_bag", counting)
    return calls


@pytest.mark.parametrize("persistent", [False, True])
def test_sparse_cd_update_equals_the_dense_one(persistent, monkeypatch):
    from ppgen.models.energy.objectives import cd_update

    g = torch.Generator().manual_seed(3)
    x = _binary((40, 30), 0.15, 1)
    start = {"weights": 0.5 * torch.randn(30, 12, generator=g),
             "visible_bias": torch.randn(30, generator=g),
             "hidden_bias": torch.randn(12, generator=g)}
    vel0 = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    chains = _binary((40, 12), 0.5, 2) if persistent else None
    calls = _count_bags(monkeypatch)
    out = []
    monkeypatch.setattr(ops, "SPARSE_MIN_WIDTH", 1)
    for limit in (0.0, 1.0):  # never sparse, always sparse
        monkeypatch.setattr(ops, "SPARSE_MAX_DENSITY", limit)
        params = {k: v.clone() for k, v in start.items()}
        velocity = dict(vel0)
        torch.manual_seed(0)
        error, norm, new = cd_update(x, params, velocity, chains, "bernoulli",
                                     num_gibbs_steps=2, lr=0.1, momentum=0.5,
                                     weight_decay=1e-3, binary_data=True)
        out.append((params, velocity, error, norm, new))
        # x W, v W in each of the 2 sweeps, x^T p(h | x) and v^T p(h | v)
        assert len(calls) == (0 if limit == 0 else 5)
    (p0, v0, e0, n0, c0), (p1, v1, e1, n1, c1) = out
    for k in start:
        assert not torch.equal(p0[k], start[k])
        torch.testing.assert_close(p1[k], p0[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(v1[k], v0[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e1, e0, rtol=1e-5, atol=0)
    torch.testing.assert_close(n1, n0, rtol=1e-5, atol=0)
    if persistent:
        assert torch.equal(c0, c1) and not torch.equal(c0, chains)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("persistent", [False, True])
def test_fit_with_the_sparse_path_on_or_off_gives_the_same_weights(dtype, rtol, persistent,
                                                                    monkeypatch):
    train = _mnist(300, 0)[0].to(dtype)
    calls = _count_bags(monkeypatch)
    monkeypatch.setattr(ops, "SPARSE_MIN_WIDTH", 1)
    fitted = []
    for limit in (0.0, 1.0):
        monkeypatch.setattr(ops, "SPARSE_MAX_DENSITY", limit)
        rbm = ppgen.RBM(20)
        ppgen.fit(rbm, train, "svi", persistent=persistent, num_steps=12, batch_size=50,
                  seed=0, progress=False, tol=0)
        fitted.append(rbm.get_params())
        assert bool(calls) == (limit > 0)
    for k, v in fitted[0].items():
        torch.testing.assert_close(fitted[1][k], v, rtol=rtol, atol=rtol)


def test_cd_update_into_the_spare_buffer_is_the_same_update():
    from ppgen.models.energy.objectives import cd_update

    g = torch.Generator().manual_seed(4)
    x = _binary((20, 8), 0.4, 5)
    start = {"weights": 0.5 * torch.randn(8, 6, generator=g),
             "visible_bias": torch.randn(8, generator=g),
             "hidden_bias": torch.randn(6, generator=g)}
    out = []
    for spare in (None, {}):
        params = {k: v.clone() for k, v in start.items()}
        velocity = {k: torch.zeros_like(v) for k, v in start.items()}
        first = velocity["weights"]
        torch.manual_seed(0)
        for step in range(3):
            before = velocity["weights"]
            cd_update(x, params, velocity, None, "bernoulli", num_gibbs_steps=1, lr=0.1,
                      momentum=0.9, weight_decay=1e-2, spare=spare)
            if spare is not None:  # the replaced velocity is lent back, then written
                assert spare["weights"] is before and velocity["weights"] is not before
                if step == 1:
                    assert velocity["weights"] is first
        out.append((params, velocity))
    for k in start:
        assert torch.equal(out[0][0][k], out[1][0][k])
        assert torch.equal(out[0][1][k], out[1][1][k])
