"""The deep Boltzmann machine with two and three hidden layers: AIS log Z (odd layers summed
out) against brute-force enumeration of every (v, h1, h2[, h3]) on tiny DBMs and against
enumeration of the odd layers on a trained one, the mean-field bound below the exact
log-likelihood, training stages, checkpoint/resume of the persistent chains, and the
applications."""

import math

import pytest
import torch
import torch.nn.functional as F

import ppgen
from ppgen._random import seeded
from ppgen.inference.loop import train
from ppgen.models.energy import DBMObjective
from ppgen.models.energy.ais import betas
from ppgen.models.energy.dbm_ops import activation, dbm_ais, dbm_raise, log_f, mean_field
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


# ------------------------------------------------------------------------------ RAISE
def _bernoulli_table(probs, states):
    """P[i, j] = prod_u Bernoulli(states[j, u]; probs[i, u])."""
    return torch.exp(probs.log() @ states.T + (-probs).log1p() @ (1 - states).T)


@pytest.mark.parametrize("sizes", [TWO, THREE])
def test_raise_weights_are_unbiased_for_the_annealing_models_marginal(sizes):
    """The mean RAISE weight is p_ann(v) = sum_h2 (p_0 T_1 .. T_K)(v, h2): the annealing
    chain over the even layers, built here by enumerating every even state (v, h2) and odd
    state (h1[, h3]) and the tempered conditionals between them."""
    dbm = _tiny(5, scale=1.2, sizes=sizes)
    weights, biases = dbm._weights(), dbm._biases()
    a = biases[0]
    depth = len(biases)
    num_v, num_h2 = 5, sizes[1]
    even = _states(num_v + num_h2)          # columns: v, then h2
    odd_sizes = [sizes[k - 1] for k in range(1, depth, 2)]
    odd = _states(sum(odd_sizes))           # columns: h1[, h3]
    e_states: list = [None] * depth
    e_states[0], e_states[2] = even[:, :num_v], even[:, num_v:]
    o_states: list = [None] * depth
    cols = torch.split(odd, odd_sizes, 1)
    for i, k in enumerate(range(1, depth, 2)):
        o_states[k] = cols[i]
    path = betas(3, "linear")

    def transition(beta):  # T_beta[e, e'] = sum_o p(o | e) p(e' | o)
        p_odd = torch.cat([torch.sigmoid(beta * activation(k, e_states, weights, biases))
                           for k in range(1, depth, 2)], 1)
        p_v = torch.sigmoid((1 - beta) * a + beta * activation(0, o_states, weights, biases))
        p_h2 = torch.sigmoid(beta * activation(2, o_states, weights, biases))
        return _bernoulli_table(p_odd, odd) @ _bernoulli_table(torch.cat([p_v, p_h2], 1),
                                                               even)

    p0 = torch.sigmoid(a)
    p_ann = _bernoulli_table(torch.cat([p0, torch.full((num_h2,), 0.5,
                                                       dtype=torch.float64)])[None],
                             even)[0]
    for k in range(1, 4):
        p_ann = p_ann @ transition(float(path[k]))
    p_ann_v = p_ann.reshape(2 ** num_h2, 2 ** num_v).sum(0)  # enumerate_states: v low bits
    v = _states(num_v)
    q = torch.sigmoid(torch.randn(2 ** num_v, num_h2, generator=torch.Generator()
                                  .manual_seed(0), dtype=torch.float64))
    lp, se = dbm_raise(v, weights, biases, a, q, num_samples=20000, beta_path=path,
                       generator=torch.Generator().manual_seed(0))
    assert torch.all((lp - p_ann_v.log()).abs() < 4 * se + 1e-3)
    # p_ann is a distribution, and on so short a path it differs from p by more than the
    # tolerance above (so the check tells the two apart)
    _, _, log_p = _brute_force(dbm)
    assert float(p_ann_v.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.any((p_ann_v.log() - log_p).abs() > 4 * se + 1e-3)


def _maximum_likelihood_dbm(x, sizes=(10, 6), *, num_steps=150, lr=0.05, seed=0):
    """A two-layer DBM fitted by exact maximum likelihood (full-batch Adam, autograd): log p(v)
    = log sum_h2 f(v, h2) - log Z with h1 summed out of f, and log Z by enumerating h1 with
    v and h2 summed out. A reference trainer for small DBMs, independent of ppgen's."""
    g = torch.Generator().manual_seed(seed)
    h1s, h2s = _states(sizes[0]), _states(sizes[1])
    p_on = x.mean(0).clamp(0.01, 0.99)
    w1 = (0.01 * torch.randn(x.shape[1], sizes[0], generator=g, dtype=x.dtype))
    w2 = (0.01 * torch.randn(*sizes, generator=g, dtype=x.dtype))
    b = p_on.log() - (-p_on).log1p()
    c1, c2 = torch.zeros(sizes[0], dtype=x.dtype), torch.zeros(sizes[1], dtype=x.dtype)
    params = [t.requires_grad_() for t in (w1, w2, b, c1, c2)]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(num_steps):
        log_z = torch.logsumexp(h1s @ c1 + F.softplus(b + h1s @ w1.T).sum(-1)
                                + F.softplus(c2 + h1s @ w2).sum(-1), 0)
        act = (c1 + x @ w1)[:, None, :] + (h2s @ w2.T)[None]
        log_f = torch.logsumexp((x @ b)[:, None] + (h2s @ c2)[None] + F.softplus(act).sum(-1),
                                1)
        loss = log_z - log_f.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dbm = ppgen.DBM(sizes)
    dbm.set_params(**dict(zip(("weights_0", "weights_1", "visible_bias", "hidden_bias_0",
                               "hidden_bias_1"), (t.detach() for t in params), strict=True)))
    return dbm


def _exact_log_prob_two_layers(dbm, v):
    """Exact log p(v) of a two-layer DBM: h2 enumerated per row, h1 summed out, log Z by
    enumerating h1 (v and h2 summed out)."""
    weights, biases = dbm._weights(), dbm._biases()
    h1s, h2s = _states(dbm.layer_sizes[0]), _states(dbm.layer_sizes[1])
    log_z = torch.logsumexp(h1s @ biases[1] + F.softplus(biases[0] + h1s @ weights[0].T)
                            .sum(-1) + F.softplus(biases[2] + h1s @ weights[1]).sum(-1), 0)
    states = [v.repeat_interleave(len(h2s), 0), None, h2s.repeat(len(v), 1)]
    log_f_v = torch.logsumexp(log_f(states, weights, biases, biases[0], 1.0)
                              .reshape(len(v), len(h2s)), 1)
    return log_f_v - log_z, float(log_z)


def test_raise_and_ais_bracket_the_exact_log_likelihood_of_a_small_dbm():
    """As for the RBM (tests/test_rbm.py): on a DBM near its maximum likelihood (layers
    (10, 6) fitted by the exact gradient to 500 binarised digits: held-out exact -19.7 to
    -19.8 nats over training seeds 0-3, against the base rate's -23.9 and ppgen's own
    20-epoch (24, 12) fit's -22.1 bound), RAISE is low and AIS high in expectation, and the
    bracket closes as the path grows. Measured over training seeds 0-3 and estimator seeds
    0-1 (297 held-out images; RAISE 5 chains per image, AIS 400 one-chain runs): at 100
    betas RAISE -0.06 to -0.30 nats (2.9-6.8 se), AIS +0.18 to +0.51 (6.4-12 se); at 1000
    betas RAISE -0.01 to -0.09, AIS +0.02 to +0.08."""
    x = _digits()
    dbm = _maximum_likelihood_dbm(x[:500])
    test = x[1500:]
    exact, log_z = _exact_log_prob_two_layers(dbm, test)
    assert float(exact.mean()) < -15
    raise_diff = dbm.log_prob(test, method="raise", num_samples=5, num_betas=100,
                              seed=0) - exact
    raise_gap = float(raise_diff.mean())
    raise_se = float(raise_diff.std()) / len(test) ** 0.5
    # AIS: 400 one-chain runs (one run of 400 chains, its log-weights one by one); with one
    # chain each, Jensen's bias stands out furthest from the noise
    _, _, log_w = dbm_ais(dbm._weights(), dbm._biases(), dbm.visible_bias, num_samples=400,
                          beta_path=betas(100, "linear"),
                          generator=torch.Generator().manual_seed(0))
    log_z0 = float(F.softplus(dbm.visible_bias).sum()) + sum(dbm.layer_sizes) * math.log(2)
    runs = log_w + log_z0
    ais_gap, ais_se = log_z - float(runs.mean()), float(runs.std()) / 20
    assert raise_gap < -2 * raise_se
    assert ais_gap > 2 * ais_se
    assert ais_gap - raise_gap < 1.5
    # and at 1000 betas RAISE is within 0.2 nats of exact
    assert abs(float((dbm.log_prob(test[:100], method="raise", num_samples=5,
                                   num_betas=1000, seed=0) - exact[:100]).mean())) < 0.2


@pytest.fixture(scope="module", params=[(24, 12), (24, 12, 8)], ids=["two", "three"])
def trained(request):
    x = _digits()
    dbm = ppgen.DBM(request.param)
    fit = ppgen.fit(dbm, x[:1500], "svi", num_epochs=60, batch_size=50, seed=0,
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
    # after 60 short epochs (the learning rate decayed to a tenth): two layers -19.7 to
    # -20.1, three -20.1 to -20.6 over seeds 0-2 (AIS 100 x 500), against the base-rate
    # model's -24.0 nats
    assert float(dbm.log_prob(test).mean()) > base_ll + 2.5


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
    x = test  # all 297 held-out images (on 50 the margin over the means is within noise)
    missing = torch.zeros_like(x, dtype=torch.bool)
    missing[:, 32:] = True
    given = torch.where(missing, torch.full_like(x, float("nan")), x)
    filled = dbm.impute(given, num_steps=100, num_burnin=20)
    assert torch.equal(filled[~missing], x[~missing])
    assert bool(((filled[missing] > 0) & (filled[missing] < 1)).all())
    acc = float(((filled[missing] > 0.5).double() == x[missing]).double().mean())
    # the mean-field completion: a fixed point of its equations (the residual of one more
    # sweep is within the tolerance), close to the Gibbs one
    mf = dbm.impute(given, method="mean_field", num_steps=5000, tol=1e-7)
    assert torch.equal(mf[~missing], x[~missing])
    weights, biases = dbm._weights(), dbm._biases()
    states = [mf, *mean_field(mf, weights, biases, 0)]  # the hidden means of the fixed point
    for _ in range(2000):  # (re-converged from v = mf: unique here, as observed)
        for k in range(1, len(states)):
            states[k] = torch.sigmoid(activation(k, states, weights, biases))
    residual = torch.sigmoid(activation(0, states, weights, biases))[missing] - mf[missing]
    assert float(residual.abs().max()) < 1e-4
    mf_acc = float(((mf[missing] > 0.5).double() == x[missing]).double().mean())
    assert abs(mf_acc - acc) < 0.02
    # both beat the pixel means (0.788): Gibbs 0.829-0.841 for two layers, 0.818-0.841 for
    # three, mean field within 0.006 of Gibbs, over seeds 0-2
    mean_acc = float(((train_x.mean(0).expand_as(x)[missing] > 0.5).double()
                      == x[missing]).double().mean())
    assert acc > mean_acc + 0.02 and mf_acc > mean_acc + 0.02
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
