"""The two-layer DBM: AIS log Z (h1 summed out) against brute-force enumeration of (v, h1, h2)
on a tiny DBM, the mean-field bound below the exact log-likelihood, training stages, and the
applications."""

import pytest
import torch

import ppgen
from ppgen.models.energy.ops import enumerate_states

CPU = torch.device("cpu")


def _tiny(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    dbm = ppgen.DBM((4, 3))
    dbm.set_params(weights_0=r(5, 4), weights_1=r(4, 3), visible_bias=r(5),
                   hidden_bias_0=r(4), hidden_bias_1=r(3))
    return dbm


def _brute_force(dbm):
    """log Z and log p(v) for every v, from the energies of all (v, h1, h2)."""
    w1, w2, b, c1, c2 = dbm._tensors5()
    v, h1, h2 = (enumerate_states(n, 0, 2 ** n, dtype=torch.float64, device=CPU)
                 for n in (5, 4, 3))
    neg_e = ((v @ b)[:, None, None] + (h1 @ c1)[None, :, None] + (h2 @ c2)[None, None, :]
             + (v @ w1 @ h1.T)[:, :, None] + (h1 @ w2 @ h2.T)[None])
    log_z = torch.logsumexp(neg_e.flatten(), 0)
    return v, float(log_z), torch.logsumexp(neg_e, (1, 2)) - log_z


@pytest.mark.parametrize("seed", [0, 1])
def test_ais_log_z_matches_brute_force_enumeration(seed):
    dbm = _tiny(seed, scale=1.5)
    _, log_z, _ = _brute_force(dbm)
    est, se = dbm.log_partition(num_samples=1000, num_betas=1000, seed=0)
    assert abs(est - log_z) < 3 * se + 1e-3
    assert abs(est - log_z) < 0.1


def test_mean_field_bound_is_below_the_exact_log_likelihood():
    dbm = _tiny(2)
    v, _, exact = _brute_force(dbm)
    bound, se = dbm.log_prob(v, num_samples=1000, return_stderr=True)
    assert torch.all(bound <= exact + 3 * se + 1e-3)
    assert float((exact - bound).mean()) > 0.0


@pytest.fixture(scope="module")
def trained():
    x = (ppgen.datasets.load_digits(dtype=torch.float64)[0] > 0.5).double()
    dbm = ppgen.DBM((24, 12))
    fit = ppgen.fit(dbm, x[:1500], "svi", num_epochs=20, batch_size=50, seed=0,
                    progress=False, tol=0)
    return dbm, fit, x[:1500], x[1500:]


def test_stages_and_held_out_bound(trained):
    dbm, fit, train, test = trained
    stages = list(fit.history["stage"])
    assert stages == sorted(stages) and set(stages) == {0.0, 1.0, 2.0}
    p = train.mean(0).clamp(1e-3, 1 - 1e-3)
    base_ll = float((test * p.log() + (1 - test) * (1 - p).log()).sum(1).mean())
    # about -23.6 against the base-rate model's -24.0 nats after 20 short epochs
    assert float(dbm.log_prob(test).mean()) > base_ll


def test_applications_and_bad_input(trained):
    dbm, _, train, test = trained
    a = dbm.sample(6, seed=0, num_burnin=50)
    assert a.shape == (6, 64) and torch.equal(a, dbm.sample(6, seed=0, num_burnin=50))
    assert dbm.transform(test).shape == (len(test), 12)
    assert dbm.reconstruct(test).shape == test.shape
    x = test[:50]
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[:, 32:] = True
    filled = dbm.impute(torch.where(missing, torch.full_like(x, float("nan")), x),
                        num_steps=100, num_burnin=20)
    assert torch.equal(filled[~missing], x[~missing])
    acc = float(((filled[missing] > 0.5).double() == x[missing]).double().mean())
    mean_acc = float(((train.mean(0).expand_as(x)[missing] > 0.5).double()
                      == x[missing]).double().mean())
    assert acc > mean_acc
    with pytest.raises(TypeError, match="two hidden-layer sizes"):
        ppgen.DBM((4, 3, 2))
    with pytest.raises(ValueError, match="layer_sizes"):
        ppgen.DBM((4, 0))
    with pytest.raises(ValueError, match="binary values"):
        dbm.log_prob(test * 0.5)
