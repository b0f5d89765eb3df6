"""EM on a user's Pyro model function (ppgen.inference.generic_em), checked against ppgen's
closed-form EM (Gaussian mixture, Baum-Welch), a tied-start Baum-Welch written here, and
Pyro's own TraceEnum_ELBO."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from common import assert_close
from pyro.distributions import constraints
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch.distributions import biject_to

import ppgen
from ppgen._validation import NotSupportedError
from ppgen.models.sequence.ops import forward_backward

F64 = torch.float64


# ----------------------------------------------------------------- the Pyro models
def gmm_params(data, K=2):
    """Pyro's GMM tutorial model (https://pyro.ai/examples/gmm.html) with its global sites
    as pyro.param and one scale per component (ppgen's 1-D spherical mixture)."""
    weights = pyro.param("weights", torch.ones(K, dtype=data.dtype) / K,
                         constraint=constraints.simplex)
    scale = pyro.param("scale", torch.ones(K, dtype=data.dtype), constraint=constraints.positive)
    locs = pyro.param("locs", torch.linspace(float(data.min()), float(data.max()), K,
                                             dtype=data.dtype))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale[assignment]), obs=data)


K_TUTORIAL = 2


@config_enumerate
def gmm_tutorial(data):
    """Pyro's GMM tutorial model, as Pyro wrote it (MAP of its global sites)."""
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K_TUTORIAL)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K_TUTORIAL):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def hmm_model_1(sequences, lengths, args, batch_size=None, include_prior=True):
    """``model_1`` of Pyro's examples/hmm.py as Pyro wrote it (the constants in the data's
    dtype): the first state is drawn from row 0 of the transition matrix."""
    num_sequences, max_length, data_dim = map(int, sequences.shape)
    assert lengths.shape == (num_sequences,)
    dtype = sequences.dtype
    with poutine.mask(mask=include_prior):
        probs_x = pyro.sample(
            "probs_x",
            dist.Dirichlet(0.9 * torch.eye(args.hidden_dim, dtype=dtype) + 0.1).to_event(1))
        probs_y = pyro.sample(
            "probs_y",
            dist.Beta(torch.tensor(0.1, dtype=dtype), torch.tensor(0.9, dtype=dtype))
            .expand([args.hidden_dim, data_dim]).to_event(2))
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    for i in pyro.plate("sequences", len(sequences), batch_size):
        length = lengths[i]
        sequence = sequences[i, :length]
        x = 0
        for t in pyro.markov(range(length)):
            x = pyro.sample(f"x_{i}_{t}", dist.Categorical(probs_x[x]),
                            infer={"enumerate": "parallel"})
            with tones_plate:
                pyro.sample(f"y_{i}_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                            obs=sequence[t])


def hmm_model_init(sequences, lengths, args, include_prior=True):
    """``model_1`` with its own initial-state distribution (``probs_init``), the HMM of
    ppgen.HiddenMarkovModel."""
    num_sequences, max_length, data_dim = map(int, sequences.shape)
    dtype = sequences.dtype
    k = args.hidden_dim
    with poutine.mask(mask=include_prior):
        probs_init = pyro.sample("probs_init", dist.Dirichlet(torch.ones(k, dtype=dtype)))
        probs_x = pyro.sample(
            "probs_x", dist.Dirichlet(0.9 * torch.eye(k, dtype=dtype) + 0.1).to_event(1))
        probs_y = pyro.sample(
            "probs_y",
            dist.Beta(torch.tensor(0.1, dtype=dtype), torch.tensor(0.9, dtype=dtype))
            .expand([k, data_dim]).to_event(2))
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    for i in pyro.plate("sequences", len(sequences)):
        sequence = sequences[i, :lengths[i]]
        x = None
        for t in pyro.markov(range(lengths[i])):
            probs = probs_init if x is None else probs_x[x]
            x = pyro.sample(f"x_{i}_{t}", dist.Categorical(probs),
                            infer={"enumerate": "parallel"})
            with tones_plate:
                pyro.sample(f"y_{i}_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]),
                            obs=sequence[t])


# ------------------------------------------------------------------------ data
def faithful_1d():
    return ppgen.datasets.load_old_faithful(dtype=F64)[:, 0]


def binary_sequences(num=4, steps=9, dim=3, seed=0):
    """Bits from a 2-state sticky chain; lengths from ``steps - 3`` to ``steps``."""
    g = torch.Generator().manual_seed(seed)
    probs_y = torch.tensor([[0.8, 0.2, 0.6], [0.1, 0.7, 0.3]], dtype=F64)[:, :dim]
    trans = torch.tensor([[0.85, 0.15], [0.25, 0.75]], dtype=F64)
    x = torch.zeros(num, steps, dim, dtype=F64)
    for n in range(num):
        z = int(torch.randint(2, (), generator=g))
        for t in range(steps):
            x[n, t] = torch.bernoulli(probs_y[z], generator=g)
            z = int(torch.multinomial(trans[z], 1, generator=g))
    lengths = torch.tensor([steps - (n % 4) for n in range(num)])
    return x, lengths


HMM_START = {
    "probs_init": torch.tensor([0.6, 0.4], dtype=F64),
    "probs_x": torch.tensor([[0.7, 0.3], [0.4, 0.6]], dtype=F64),
    "probs_y": torch.tensor([[0.6, 0.4, 0.5], [0.3, 0.6, 0.4]], dtype=F64),
}


def _increasing(history, dtype=F64):
    h = np.asarray(history)
    slack = 1e3 * torch.finfo(dtype).eps * np.abs(h[:-1]).clip(1)
    return bool(np.all(np.diff(h) >= -slack))


# --------------------------------------------------------------- (a) Gaussian mixture
def test_gmm_tutorial_matches_closed_form_em_iteration_by_iteration():
    x = faithful_1d()
    fit = ppgen.fit(gmm_params, x, method="em", seed=0, progress=False, num_steps=300,
                    tol=1e-12)
    gmm = ppgen.GaussianMixture(2, covariance="spherical", reg_covar=0.0)
    start = {"weights": torch.full((2,), 0.5, dtype=F64),
             "locs": torch.linspace(float(x.min()), float(x.max()), 2, dtype=F64)[:, None],
             "covariances": torch.ones(2, dtype=F64)}
    ref = ppgen.fit(gmm, x[:, None], method="em", seed=0, progress=False, init=start,
                    num_steps=300, tol=1e-12)
    h, r = fit.history["objective"], ref.history["objective"]
    assert fit.method == "em" and fit.converged and ref.converged
    # The same path from the same start (the M-step is exact to L-BFGS's tolerance) ...
    assert_close(h[:10], r[:10], rtol=1e-6)
    # ... to the same maximum, 1e-6 relative (in fact ~1e-11).
    assert_close(h[-1], r[-1], rtol=1e-6)
    assert_close(fit.params["weights"], gmm.weights, rtol=1e-4)
    assert_close(fit.params["locs"], gmm.locs[:, 0], rtol=1e-4)
    assert_close(fit.params["scale"] ** 2, gmm.covariances, rtol=1e-4)
    assert _increasing(h)
    assert not any(m.code == "em_decrease" for m in fit.messages)


def gmm_closed_form(posterior, data, K=2):
    """The mixture's closed-form M-step from the posterior of ``assignment`` (K, N)."""
    r = posterior["assignment"]
    nk = r.sum(-1)
    locs = (r * data).sum(-1) / nk
    var = (r * (data - locs[:, None]) ** 2).sum(-1) / nk
    return {"weights": nk / nk.sum(), "locs": locs, "scale": var.sqrt()}


def test_a_declared_closed_form_m_step_is_used_and_exact():
    x = faithful_1d()
    fit = ppgen.fit(gmm_params, x, method="em", seed=0, progress=False, num_steps=300,
                    tol=1e-12, m_step=gmm_closed_form)
    gmm = ppgen.GaussianMixture(2, covariance="spherical", reg_covar=0.0)
    start = {"weights": torch.full((2,), 0.5, dtype=F64),
             "locs": torch.linspace(float(x.min()), float(x.max()), 2, dtype=F64)[:, None],
             "covariances": torch.ones(2, dtype=F64)}
    ref = ppgen.fit(gmm, x[:, None], method="em", seed=0, progress=False, init=start,
                    num_steps=300, tol=1e-12)
    h, r = fit.history["objective"], ref.history["objective"]
    assert len(h) == len(r)
    assert_close(h, r, rtol=1e-12)
    assert fit.options["m_step"] == "gmm_closed_form"


def test_a_wrong_closed_form_is_undone_with_a_message():
    def bad(posterior, data, K=2):
        return {"locs": torch.tensor([100.0, 200.0], dtype=data.dtype)}

    with pytest.warns(RuntimeWarning, match="undone"):
        fit = ppgen.fit(gmm_params, faithful_1d(), method="em", seed=0, progress=False,
                        num_steps=5, tol=0, m_step=bad)
    assert _increasing(fit.history["objective"])
    assert any(m.code == "m_step_undone" for m in fit.messages)


def test_gmm_tutorial_as_written_reaches_a_stationary_point_of_pyros_objective():
    """The tutorial's model and data, its global sites at their MAP: EM's objective is
    Pyro's TraceEnum_ELBO with a point-mass (AutoDelta-like) guide, never decreases, and
    its gradient vanishes at EM's answer."""
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    fit = ppgen.fit(gmm_tutorial, data, method="em", seed=0, progress=False, num_steps=200,
                    tol=1e-7)
    h = fit.history["objective"]
    assert _increasing(h, torch.float32)
    assert len(h) > 2 and h[-1] > h[0]
    assert sorted(fit.params) == ["locs", "scale", "weights"]
    sites = {"weights": constraints.simplex, "scale": constraints.positive,
             "locs": constraints.real}
    free = {k: biject_to(c).inv(fit.params[k].double()).requires_grad_(True)
            for k, c in sites.items()}

    def guide(data):
        v = {k: biject_to(sites[k])(u).float() for k, u in free.items()}
        pyro.sample("weights", dist.Delta(v["weights"], event_dim=1))
        pyro.sample("scale", dist.Delta(v["scale"]))
        with pyro.plate("components", K_TUTORIAL):
            pyro.sample("locs", dist.Delta(v["locs"]))

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(gmm_tutorial, guide, data)
    assert_close(-float(loss.detach()), h[-1], rtol=1e-5)
    grads = torch.autograd.grad(loss, list(free.values()))
    assert max(float(g.abs().max()) for g in grads) < 1e-2
    # the two clusters are found (the Normal(0, 10) prior pulls the locs a little to 0)
    assert_close(torch.sort(fit.params["locs"]).values, torch.tensor([0.5, 11.0]), atol=0.05)


# ------------------------------------------------------------------- (b) HMM
def test_pyro_hmm_with_initial_distribution_matches_baum_welch():
    x, lengths = binary_sequences()
    args = SimpleNamespace(hidden_dim=2)
    fit = ppgen.fit(hmm_model_init, x, method="em", seed=0, progress=False,
                    model_kwargs={"lengths": lengths, "args": args, "include_prior": False},
                    init=HMM_START, num_steps=10, tol=0)
    hmm = ppgen.HiddenMarkovModel(2, emission="bernoulli", dtype=F64)
    ref = ppgen.fit(hmm, x, method="em", seed=0, progress=False,
                    model_kwargs={"lengths": lengths}, num_steps=10, tol=0,
                    init={"initial_probs": HMM_START["probs_init"],
                          "transition_probs": HMM_START["probs_x"],
                          "probs": HMM_START["probs_y"]})
    h, r = fit.history["objective"], ref.history["objective"]
    # Every iteration's log-likelihood, the first (the start) to the last, 1e-6 relative.
    assert len(h) == len(r) == 11
    assert_close(h, r, rtol=1e-6)
    assert_close(fit.params["probs_init"], hmm.initial_probs, atol=1e-4)
    assert_close(fit.params["probs_x"], hmm.transition_probs, atol=1e-4)
    assert_close(fit.params["probs_y"], hmm.probs, atol=1e-4)
    assert _increasing(h)


def _tied_baum_welch(x, lengths, trans, probs_y, num_steps):
    """Baum-Welch for model_1: the first state is drawn from row 0 of the transition
    matrix, so row 0's expected counts include the first states'."""
    mask = torch.arange(x.shape[1]) < lengths[:, None]
    history = []
    for _ in range(num_steps):
        log_b = (x[:, :, None, :] * probs_y.log() + (1 - x[:, :, None, :])
                 * (1 - probs_y).log()).sum(-1).masked_fill(~mask[..., None], 0.0)
        fb = forward_backward(log_b, trans[0], trans, mask, algorithm="sequential")
        history.append(float(fb["log_lik"].sum()))
        counts = fb["trans_counts"].clone()
        counts[0] += fb["start_counts"]
        trans = counts / counts.sum(-1, keepdim=True)
        gamma = fb["gamma"] * mask[..., None]
        probs_y = torch.einsum("ntk,ntd->kd", gamma, x) / gamma.sum((0, 1))[:, None]
    return np.asarray(history)


def test_pyro_hmm_model_1_as_written_matches_tied_baum_welch():
    x, lengths = binary_sequences(seed=1)
    args = SimpleNamespace(hidden_dim=2)
    start = {k: v for k, v in HMM_START.items() if k != "probs_init"}
    fit = ppgen.fit(hmm_model_1, x, method="em", seed=0, progress=False,
                    model_kwargs={"lengths": lengths, "args": args, "include_prior": False},
                    init=start, num_steps=8, tol=0)
    ref = _tied_baum_welch(x, lengths, start["probs_x"], start["probs_y"], 9)
    assert_close(fit.history["objective"], ref, rtol=1e-6)
    assert fit.converged is None  # tol=0 runs every step


# ----------------------------------------------------------- (c) monotone objective
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objective_never_decreases_from_random_starts(seed):
    x = faithful_1d()
    g = torch.Generator().manual_seed(seed)

    def model(data, K=3):
        weights = pyro.param("weights", torch.ones(K, dtype=data.dtype) / K,
                             constraint=constraints.simplex)
        scale = pyro.param("scale", 0.5 + torch.rand(K, generator=g, dtype=data.dtype),
                           constraint=constraints.positive)
        locs = pyro.param("locs", data[torch.randperm(len(data), generator=g)[:K]])
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[z], scale[z]), obs=data)

    fit = ppgen.fit(model, x, method="em", seed=seed, progress=False, num_steps=25, tol=0)
    h = fit.history["objective"]
    assert len(h) == 26 and _increasing(h)
    assert not any(m.code in ("em_decrease", "m_step_undone") for m in fit.messages)


def test_fixed_and_restarts():
    x = faithful_1d()
    start = {"weights": torch.tensor([0.3, 0.7], dtype=F64)}
    fit = ppgen.fit(gmm_params, x, method="em", seed=0, progress=False, num_steps=20,
                    init=start, fixed=("weights",), num_restarts=2)
    assert_close(fit.params["weights"], start["weights"])
    assert fit.options["fixed"] == ("weights",)
    assert len(set(fit.history["restart"])) == 1


# ------------------------------------------------------------------ (d) bad input
def _no_discrete(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def _poisson_latent(data):
    n = pyro.sample("n", dist.Poisson(3.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(n, 1.0), obs=data)


def _subsampled(data):
    w = pyro.param("w", torch.tensor(0.5), constraint=constraints.unit_interval)
    with pyro.plate("data", len(data), subsample_size=2) as idx:
        z = pyro.sample("z", dist.Bernoulli(w))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=data[idx])


@pytest.mark.parametrize("model, options, error, words", [
    (_no_discrete, {}, NotSupportedError, ["discrete latent sites", "guide='map'", "mcmc"]),
    (_poisson_latent, {}, ValueError, ["'n'", "finite support"]),
    (_subsampled, {}, NotSupportedError, ["subsample_size"]),
    (gmm_params, {"m_step_iter": 0}, ValueError, ["m_step_iter"]),
    (gmm_params, {"m_step_tol": -1.0}, ValueError, ["m_step_tol"]),
    (gmm_params, {"num_steps": 0}, ValueError, ["num_steps"]),
    (gmm_params, {"lr": 0.1}, TypeError, ["lr", "m_step_iter"]),
    (gmm_params, {"init": {"nope": 1.0}}, ValueError, ["init", "nope", "weights"]),
    (gmm_params, {"init": {"locs": torch.zeros(3, dtype=F64)}}, ValueError, ["locs",
                                                                             "shape"]),
    (gmm_params, {"fixed": ("nope",)}, ValueError, ["fixed", "nope", "locs"]),
    (gmm_params, {"fixed": 3}, TypeError, ["fixed"]),
    (gmm_params, {"m_step": "closed"}, TypeError, ["m_step", "callable"]),
    (gmm_params, {"m_step": lambda p, d: {"nope": 1.0}}, ValueError, ["m_step", "nope"]),
    (gmm_params, {"m_step": lambda p, d: 3}, TypeError, ["m_step", "dict"]),
])
def test_bad_input(model, options, error, words):
    options = dict(options)
    init = options.pop("init", None)
    with pytest.raises(error) as info:
        ppgen.fit(model, faithful_1d()[:20], method="em", seed=0, progress=False, init=init,
                  **options)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_global_state_is_left_alone():
    pyro.clear_param_store()
    pyro.param("user_param", torch.tensor(1.0))
    ppgen.fit(gmm_params, faithful_1d()[:30], method="em", seed=0, progress=False,
              num_steps=3, tol=0)
    assert list(pyro.get_param_store()) == ["user_param"]
    pyro.clear_param_store()


class _ModuleMixture(pyro.nn.PyroModule):
    """The mixture as a PyroModule: its parameters live on the module."""

    def __init__(self, locs):
        super().__init__()
        self.locs = pyro.nn.PyroParam(locs)
        self.scale = pyro.nn.PyroParam(torch.ones_like(locs), constraint=constraints.positive)
        self.weights = pyro.nn.PyroParam(torch.ones_like(locs) / len(locs),
                                         constraint=constraints.simplex)

    def forward(self, data):
        with pyro.plate("data", len(data)):
            z = pyro.sample("assignment", dist.Categorical(self.weights))
            pyro.sample("obs", dist.Normal(self.locs[z], self.scale[z]), obs=data)


def test_pyro_module_model_matches_the_param_store_model_and_restarts_from_its_start():
    x = faithful_1d()
    locs = torch.linspace(float(x.min()), float(x.max()), 2, dtype=F64)
    module = _ModuleMixture(locs.clone())
    fit = ppgen.fit(module, x, method="em", seed=0, progress=False, num_steps=8, tol=0,
                    num_restarts=2)
    ref = ppgen.fit(gmm_params, x, method="em", seed=0, progress=False, num_steps=8, tol=0)
    # both restarts start from the module's own values: the same path as the store's model
    assert_close(fit.history["objective"], ref.history["objective"], rtol=1e-6)
    assert_close(fit.params["locs"], ref.params["locs"], rtol=1e-6)
