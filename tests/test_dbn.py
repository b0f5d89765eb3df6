"""Deep belief networks: the variational bound against the exact log-likelihood of a tiny DBN
(enumeration), greedy layer-wise training as stages of one fit, and the applications."""

import pytest
import torch

import ppgen
from ppgen.models.energy.ops import enumerate_states, exact_log_partition, free_energy

CPU = torch.device("cpu")


def _tiny_dbn(seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = (5, 4, 3)
    dbn = ppgen.DBN(sizes[1:])
    params = {}
    for layer in range(2):
        params[f"weights_{layer}"] = 1.5 * torch.randn(sizes[layer], sizes[layer + 1],
                                                       generator=g, dtype=torch.float64)
        params[f"visible_bias_{layer}"] = torch.randn(sizes[layer], generator=g,
                                                      dtype=torch.float64)
        params[f"hidden_bias_{layer}"] = torch.randn(sizes[layer + 1], generator=g,
                                                     dtype=torch.float64)
    dbn.set_params(**params)
    return dbn


def _exact_log_prob(dbn, v):
    """log p(v) = log sum_h1 p(v | h1) p_top(h1), by enumeration."""
    w0, b0, _ = dbn._layer(0)
    w1, b1, c1 = dbn._layer(1)
    h1 = enumerate_states(w0.shape[1], 0, 2 ** w0.shape[1], dtype=torch.float64, device=CPU)
    log_top = -free_energy(h1, w1, b1, c1, "bernoulli") - exact_log_partition(
        w1, b1, c1, "bernoulli")
    logits = h1 @ w0.T + b0  # (S, D)
    log_cond = (v[:, None] * logits - torch.nn.functional.softplus(logits)).sum(-1)
    return torch.logsumexp(log_cond + log_top, 1)


def test_bound_is_below_exact_and_tightens_to_it():
    dbn = _tiny_dbn()
    v = enumerate_states(5, 0, 32, dtype=torch.float64, device=CPU)
    exact = _exact_log_prob(dbn, v)
    assert float(torch.logsumexp(exact, 0)) == pytest.approx(0.0, abs=1e-9)
    settings = dict(ais_samples=2000, num_betas=1000)
    # 200 single-draw ELBOs of each datum (independent rows of one call)
    one = dbn.log_prob(v.repeat(200, 1), num_samples=1, **settings).reshape(200, 32)
    # the single-draw ELBO is below log p(v) in expectation (well below: the up pass is not
    # the posterior)
    assert float((one.mean(0) - exact).mean()) < -0.05
    many, se = dbn.log_prob(v, num_samples=4000, return_stderr=True, **settings)
    assert torch.all((many - exact).abs() < 4 * se + 0.02)
    assert torch.all(many <= exact + 4 * se + 0.02)


def _digits():
    x = (ppgen.datasets.load_digits(dtype=torch.float64)[0] > 0.5).double()
    return x[:1500], x[1500:]


@pytest.fixture(scope="module")
def trained():
    train, test = _digits()
    dbn = ppgen.DBN((24, 12))
    fit = ppgen.fit(dbn, train, "svi", num_epochs=20, batch_size=50, seed=0, progress=False,
                    tol=0)
    return dbn, fit, train, test


def test_greedy_stages_train_each_layer_in_turn(trained):
    dbn, fit, train, test = trained
    stages = fit.history["stage"]
    assert stages[0] == 0 and stages[-1] == 1
    assert list(stages) == sorted(stages) and len(set(stages)) == 2
    # The bound on held-out digits beats the base-rate model (independent pixels).
    p = train.mean(0).clamp(1e-3, 1 - 1e-3)
    base_ll = float((test * p.log() + (1 - test) * (1 - p).log()).sum(1).mean())
    # (about -22.6 against -24.0 nats)
    assert float(dbn.log_prob(test, num_samples=20).mean()) > base_ll + 1


def test_dbn_matches_its_first_rbm_when_trained_the_same_way():
    """Stage 0 of a DBN is CD on the data: with one layer, the same run as an RBM's."""
    train, _ = _digits()
    dbn = ppgen.DBN((10,))
    rbm = ppgen.RBM(10)
    options = dict(num_epochs=3, batch_size=100, seed=4, progress=False, tol=0)
    ppgen.fit(dbn, train, "svi", **options)
    ppgen.fit(rbm, train, "svi", **options)
    torch.testing.assert_close(dbn.weights_0, rbm.weights)
    torch.testing.assert_close(dbn.hidden_bias_0, rbm.hidden_bias)


def test_applications(trained):
    dbn, _, train, test = trained
    a = dbn.sample(10, seed=0, num_burnin=100)
    assert a.shape == (10, 64) and torch.equal(a, dbn.sample(10, seed=0, num_burnin=100))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert dbn.transform(test).shape == (len(test), 12)
    assert dbn.reconstruct(test).shape == test.shape
    x = test[:50].clone()
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[:, 32:] = True
    given = torch.where(missing, torch.full_like(x, float("nan")), x)
    filled = dbn.impute(given, num_steps=100, num_burnin=20)
    assert torch.equal(filled[~missing], x[~missing])
    mean_acc = float(((train.mean(0).expand_as(x)[missing] > 0.5).double()
                      == x[missing]).double().mean())
    acc = float(((filled[missing] > 0.5).double() == x[missing]).double().mean())
    assert acc > mean_acc
    # the mean-field completion: deterministic, a fixed point, about as good as Gibbs
    mf = dbn.impute(given, method="mean_field", num_steps=100)
    assert torch.equal(mf[~missing], x[~missing])
    torch.testing.assert_close(dbn.impute(given, method="mean_field", num_steps=101), mf,
                               atol=1e-6, rtol=0)
    mf_acc = float(((mf[missing] > 0.5).double() == x[missing]).double().mean())
    assert abs(mf_acc - acc) < 0.03
    with pytest.raises(ValueError, match="method"):
        dbn.impute(given, method="exact")


def test_bad_input():
    for bad in [(0,), (), (4, -1)]:
        with pytest.raises((ValueError, TypeError), match="layer_sizes"):
            ppgen.DBN(bad)
    with pytest.raises(TypeError, match="layer_sizes"):
        ppgen.DBN("big")
    with pytest.raises(ValueError, match="binary values"):
        ppgen.fit(ppgen.DBN((4,)), ppgen.datasets.load_digits()[0], "svi", num_steps=2,
                  progress=False)
    dbn = _tiny_dbn()
    with pytest.raises(ValueError, match="5 features"):
        dbn.log_prob(torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="weights_1"):
        dbn.set_params(weights_1=torch.zeros(4, 7))
