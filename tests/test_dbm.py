"""The deep Boltzmann machine with two and three hidden layers: AIS log Z (odd layers summed
out) against brute-force enumeration of every (v, h1, h2[, h3]) on tiny DBMs and against
enumeration of the odd layers on a trained one, the mean-field bound below the exact
log-likelihood, training stages, checkpoint/resume of the persistent chains, and the
applications."""

import pytest
import torch
import torch.nn.functional as F

import ppgen
from ppgen._random import seeded
from ppgen.inference.loop import train
from ppgen.models.energy import DBMObjective
from ppgen.models.energy.dbm_ops import mean_field
from ppgen.models.energy.ops import enumerate_states

CPU = torch.device("cpu")
TWO, THREE = (4, 3), (4, 3, 3)


def _digits():
    return (ppgen.datasets.load_digits(dtype=torch.float64)[0] > 0.5).double()


def _states(n):
    return enumerate_states(n, 0, 2 ** n, dtype=torch.float64, device=CPU)


def _tiny(seed=0, scale=1.0, sizes=TWO, num_visible=5):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    n = (num_visible, *sizes)
    dbm = ppgen.DBM(sizes)
    dbm.set_params(**{f"weights_{i}": r(n[i], n[i + 1]) for i in range(len(sizes))},
                   visible_bias=r(num_visible),
                   **{f"hidden_bias_{i}": r(n[i + 1]) for i in range(len(sizes))})
    return dbm


def _brute_force(dbm):
    """log Z and log p(v) for every v, from the energies of all (v, h1, ..., hL): -E on the
    grid of all layers' states, one axis per layer."""
    names = ["visible_bias", *(f"hidden_bias_{i}" for i in range(len(dbm.layer_sizes)))]
    biases = [getattr(dbm, n) for n in names]
    states = [_states(len(b)) for b in biases]
    depth = len(states)

    def on_axes(t, axes):  # place t's dimensions on the grid axes ``axes``
        shape = [1] * depth
        for a, size in zip(axes, t.shape, strict=True):
            shape[a] = size
        return t.reshape(shape)

    neg_e = sum(on_axes(s @ b, (k,)) for k, (s, b) in enumerate(zip(states, biases,
                                                                     strict=True)))
    for i in range(depth - 1):
        w = getattr(dbm, f"weights_{i}")
        neg_e = neg_e + on_axes(states[i] @ w @ states[i + 1].T, (i, i + 1))
    log_z = torch.logsumexp(neg_e.flatten(), 0)
    log_p = torch.logsumexp(neg_e.reshape(len(states[0]), -1), 1) - log_z
    return states[0], float(log_z), log_p


@pytest.mark.parametrize("sizes, seed", [(TWO, 0), (TWO, 1), (THREE, 0), (THREE, 1)])
def test_ais_log_z_matches_brute_force_enumeration(sizes, seed):
    dbm = _tiny(seed, scale=1.5, sizes=sizes)
    _, log_z, _ = _brute_force(dbm)
    est, se = dbm.log_partition(num_samples=1000, num_betas=1000, seed=0)
    assert abs(est - log_z) < 3 * se + 1e-3
    assert abs(est - log_z) < 0.1


@pytest.mark.parametrize("sizes", [TWO, THREE])
def test_mean_field_bound_is_below_the_exact_log_likelihood(sizes):
    dbm = _tiny(2, sizes=sizes)
    v, _, exact = _brute_force(dbm)
    bound, se = dbm.log_prob(v, num_samples=1000, return_stderr=True)
    assert torch.all(bound <= exact + 3 * se + 1e-3)
    assert float((exact - bound).mean()) > 0.0


@pytest.mark.parametrize("sizes", [TWO, THREE])
def test_bound_is_the_elbo_of_a_mean_field_fixed_point(sizes):
    """log_prob + log Z = E_q[-E(v, h)] + H(q), summed over every h by enumeration, for the
    mean-field q, which is a fixed point of mu_k = sigmoid(c_k + mu_{k-1} W + W mu_{k+1})."""
    dbm = _tiny(3, sizes=sizes)
    names = ["visible_bias", *(f"hidden_bias_{i}" for i in range(len(sizes)))]
    c = [getattr(dbm, n) for n in names]
    w = [getattr(dbm, f"weights_{i}") for i in range(len(sizes))]
    v = _states(5)
    mus = mean_field(v, w, c, 30)
    layers = [v, *mus]
    for k in range(1, len(layers)):
        act = c[k] + layers[k - 1] @ w[k - 1]
        if k < len(w):
            act = act + layers[k + 1] @ w[k].T
        torch.testing.assert_close(layers[k], torch.sigmoid(act), atol=1e-6, rtol=0)
    # every hidden configuration h = (h1, ..., hL) at once
    hidden = _states(sum(sizes))
    hs = list(torch.split(hidden, list(sizes), dim=1))
    neg_e = (v @ c[0])[:, None] + (v @ w[0] @ hs[0].T)
    log_q = 0.0
    for k, h in enumerate(hs):
        neg_e = neg_e + (h @ c[k + 1])[None]
        if k + 1 < len(hs):
            neg_e = neg_e + ((h @ w[k + 1]) * hs[k + 1]).sum(-1)[None]
        mu = mus[k].clamp(1e-7, 1 - 1e-7)
        log_q = log_q + h @ mu.log().T + (1 - h) @ (1 - mu).log().T  # (2^H, N)
    q = log_q.T.exp()
    elbo = (q * (neg_e - log_q.T)).sum(1)
    log_z, _ = dbm.log_partition(num_samples=10, num_betas=10)
    torch.testing.assert_close(dbm.log_prob(v, num_samples=10, num_betas=10) + log_z, elbo,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("sizes", [TWO, THREE])
def test_gibbs_sampling_and_imputation_match_the_exact_distribution(sizes):
    dbm = _tiny(4, scale=1.5, sizes=sizes)
    v, _, log_p = _brute_force(dbm)
    p = log_p.exp()
    draws = dbm.sample(20000, seed=0, num_burnin=100)
    codes = (draws * 2 ** torch.arange(5, dtype=draws.dtype)).sum(1).long()
    freq = torch.bincount(codes, minlength=32).double() / len(draws)
    # state numbers as enumerate_states writes them; the total variation distance is
    # about 0.007-0.014 for tiny DBMs of seeds 4-8 (sampling error)
    assert float((freq - p).abs().sum() / 2) < 0.025
    # v_3, v_4 missing: the clamped Gibbs average against E[v_missing | v_0..2] from p(v)
    observed = v[:8, :3]  # the 8 patterns of v_0..2 (the low bits)
    exact = torch.stack([(p[:, None] * v[:, 3:])[(v[:, :3] == o).all(1)].sum(0)
                         / p[(v[:, :3] == o).all(1)].sum() for o in observed])
    x = torch.cat([observed, torch.full((8, 2), float("nan"), dtype=torch.float64)], 1)
    filled = dbm.impute(x.repeat(100, 1), num_steps=300, num_burnin=100, seed=0)
    assert torch.equal(filled[:, :3], observed.repeat(100, 1))
    # errors up to about 0.006 for seeds 4-8
    torch.testing.assert_close(filled[:, 3:].reshape(100, 8, 2).mean(0), exact, atol=0.015,
                               rtol=0)


def _exact_log_z_over_odd_layers(dbm):
    """log Z of a three-layer DBM by enumerating the odd layers (h1, h3), the even ones (v,
    h2) summed out: log f(h1, h3) = h1.c1 + h3.c3 + sum softplus(b + W1 h1) + sum
    softplus(c2 + h1 W2 + W3 h3) (the other way round from the AIS path)."""
    w1, w2, w3 = dbm.weights_0, dbm.weights_1, dbm.weights_2
    b, c1, c2, c3 = dbm.visible_bias, dbm.hidden_bias_0, dbm.hidden_bias_1, dbm.hidden_bias_2
    h1, h3 = _states(len(c1)), _states(len(c3))
    h1, h3 = h1.repeat_interleave(len(h3), 0), h3.repeat(len(h1), 1)
    log_f = (h1 @ c1 + h3 @ c3 + F.softplus(b + h1 @ w1.T).sum(-1)
             + F.softplus(c2 + h1 @ w2 + h3 @ w3.T).sum(-1))
    return float(torch.logsumexp(log_f, 0))


def test_ais_matches_exact_log_z_of_a_trained_three_layer_dbm():
    x = _digits()
    dbm = ppgen.DBM((12, 8, 4))  # odd layers: 2^16 states
    ppgen.fit(dbm, x[:1500], "svi", num_epochs=20, batch_size=50, seed=0, progress=False,
              tol=0)
    exact = _exact_log_z_over_odd_layers(dbm)
    est, se = dbm.log_partition(num_samples=200, num_betas=1000, seed=0)
    # about 48.570 +- 0.008 against 48.573
    assert abs(est - exact) < 3 * se + 1e-3
    assert abs(est - exact) < 0.1


@pytest.fixture(scope="module", params=[(24, 12), (24, 12, 8)], ids=["two", "three"])
def trained(request):
    x = _digits()
    dbm = ppgen.DBM(request.param)
    fit = ppgen.fit(dbm, x[:1500], "svi", num_epochs=20, batch_size=50, seed=0,
                    progress=False, tol=0)
    return dbm, fit, x[:1500], x[1500:]


def test_stages_and_held_out_bound(trained):
    dbm, fit, train_x, test = trained
    stages = list(fit.history["stage"])
    depth = len(dbm.layer_sizes)
    assert stages == sorted(stages) and set(stages) == set(map(float, range(depth + 1)))
    # pretraining stages share the first half, joint training the second
    assert stages.count(float(depth)) == len(stages) // 2
    p = train_x.mean(0).clamp(1e-3, 1 - 1e-3)
    base_ll = float((test * p.log() + (1 - test) * (1 - p).log()).sum(1).mean())
    # two layers about -22.1, three about -22.7 (-23.5 to -21.8 for seeds 0-7), against
    # the base-rate model's -24.0 nats after 20 short epochs
    assert float(dbm.log_prob(test).mean()) > base_ll + 0.3


def test_applications_and_bad_input(trained):
    dbm, _, train_x, test = trained
    a = dbm.sample(6, seed=0, num_burnin=50)
    assert a.shape == (6, 64) and torch.equal(a, dbm.sample(6, seed=0, num_burnin=50))
    assert not torch.equal(a, dbm.sample(6, seed=1, num_burnin=50))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    p = dbm.sample(6, seed=0, num_burnin=50, mean=True)
    assert p.shape == (6, 64) and bool(((p > 0) & (p < 1)).all())
    assert dbm.transform(test).shape == (len(test), dbm.layer_sizes[-1])
    assert dbm.reconstruct(test).shape == test.shape
    assert torch.equal(dbm.score(test[:5]), -dbm.log_prob(test[:5]))
    x = test[:50]
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[:, 32:] = True
    filled = dbm.impute(torch.where(missing, torch.full_like(x, float("nan")), x),
                        num_steps=100, num_burnin=20)
    assert torch.equal(filled[~missing], x[~missing])
    assert bool(((filled[missing] > 0) & (filled[missing] < 1)).all())
    if len(dbm.layer_sizes) == 2:
        # (after 20 epochs the three-layer DBM completes the bottom halves about as well
        # as the pixel means, 0.78-0.81 against 0.79 on all held-out images: no claim)
        acc = float(((filled[missing] > 0.5).double() == x[missing]).double().mean())
        mean_acc = float(((train_x.mean(0).expand_as(x)[missing] > 0.5).double()
                          == x[missing]).double().mean())
        assert acc > mean_acc
    with pytest.raises(ValueError, match="binary values"):
        dbm.log_prob(test * 0.5)


def test_three_layer_chains_resume_exactly_from_a_checkpoint(tmp_path):
    x = _digits()[:300]
    total = 60  # 15 steps an epoch; steps 30.. are joint training with the chains

    def run(model, num_steps, **kw):  # the loop with the run's length fixed at ``total``
        with seeded(3):  # as ppgen.fit: the step's draws come from the seeded global RNG
            return train(DBMObjective(total_steps=total), model, x, seed=3,
                         num_steps=num_steps, batch_size=20, tol=0, progress=False, **kw)

    straight = ppgen.DBM((16, 8, 4))
    out = run(straight, total)
    first = ppgen.DBM((16, 8, 4))
    half = run(first, 40, checkpoint=tmp_path)
    resumed = ppgen.DBM((16, 8, 4))
    again = run(resumed, total, resume=tmp_path)
    assert again.resumed_from == 40
    for name in straight.param_names:
        assert torch.equal(getattr(resumed, name), getattr(straight, name)), name
    for key in ("chains_v", "chains_h2"):
        assert torch.equal(again.state.extra[key], out.state.extra[key]), key
        assert not torch.equal(half.state.extra[key], out.state.extra[key]), key
    assert not torch.equal(first.weights_2, straight.weights_2)


def test_layer_sizes_and_parameter_shapes_are_checked():
    for bad in [(4,), (4, 3, 2, 1)]:
        with pytest.raises(ValueError, match=r"layer_sizes: expected two or three "
                                             r"hidden-layer sizes.*got \(4,"):
            ppgen.DBM(bad)
    for bad in [(4, 0), (4, 3, 0), (-1, 3, 2)]:
        with pytest.raises(ValueError, match="layer_sizes.*sizes >= 1"):
            ppgen.DBM(bad)
    with pytest.raises(TypeError, match="layer_sizes"):
        ppgen.DBM((4, 3.0, 2))
    dbm = _tiny(0, sizes=THREE)
    assert dbm.param_names == ("weights_0", "weights_1", "weights_2", "visible_bias",
                               "hidden_bias_0", "hidden_bias_1", "hidden_bias_2")
    cases = [("weights_2", (3, 4), r"weights_2: expected shape \(3, 3\) \(layer 2 to layer "
              r"3; layer_sizes=\(4, 3, 3\)\), got shape \(3, 4\)"),
             ("weights_1", (4,), r"weights_1: expected shape \(4, 3\)"),
             ("weights_0", (5, 3), r"weights_0: expected shape \(5, 4\)"),
             ("hidden_bias_2", (4,), r"hidden_bias_2: expected shape \(3,\) \(one per unit "
              r"of hidden layer 3"),
             ("visible_bias", (6,), r"visible_bias: expected shape \(5,\)")]
    for name, shape, message in cases:
        with pytest.raises(ValueError, match=message):
            dbm.set_params(**{name: torch.zeros(shape, dtype=torch.float64)})
    with pytest.raises(ValueError, match="weights_2: expected finite values"):
        dbm.set_params(weights_2=torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="params: expected names among"):
        ppgen.DBM(TWO).set_params(weights_2=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="visible_bias: expected shape .*together with "
                                         "weights_0"):
        dbm.set_params(weights_0=torch.zeros(7, 4, dtype=torch.float64))
    # new visible width: weights and visible bias together
    dbm.set_params(weights_0=torch.zeros(7, 4, dtype=torch.float64),
                   visible_bias=torch.zeros(7, dtype=torch.float64))
    assert dbm.num_visible == 7
