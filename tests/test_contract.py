"""The common contract every registered model must pass (as sklearn's estimator_checks)."""

import pytest
import torch

import ppgen
from ppgen.models import MODEL_REGISTRY


def _digits(n=60):
    return ppgen.datasets.load_digits()[0][:n]


def _digit_labels(n=60):
    return ppgen.datasets.load_digits()[1][:n]


def _digit_images(n=20):
    return _digits(n).reshape(n, 8, 8)


# One case per registered model: a constructor and training data. A model that is registered
# but not listed here fails test_every_registered_model_has_a_case.
CASES = {
    "gmm": (lambda: ppgen.GaussianMixture(2), lambda: ppgen.datasets.load_old_faithful()),
    "hmm": (lambda: ppgen.HiddenMarkovModel(2, emission="gaussian"),
            lambda: ppgen.datasets.make_hmm(30, 20, 2, num_features=2, seed=0)[0]),
    "lda": (lambda: ppgen.LDA(3),
            lambda: ppgen.datasets.make_corpus(40, 60, 3, doc_length=50, seed=0)[0]),
    "prodlda": (lambda: ppgen.ProdLDA(3, hidden_size=20),
                lambda: ppgen.datasets.make_corpus(40, 60, 3, doc_length=50, seed=0)[0]),
    "vae": (lambda: ppgen.VAE(64, latent_dim=2, hidden_dims=(16,)), _digits),
    "cvae": (lambda: ppgen.ConditionalVAE(64, 10, latent_dim=2, hidden_dims=(16,)), _digits),
    "gan": (lambda: ppgen.GAN(64, latent_dim=2, hidden_dims=(16,), pack=2, output="sigmoid"),
            lambda: _digits(20)),
    "cgan": (lambda: ppgen.ConditionalGAN(64, 10, latent_dim=2, hidden_dims=(16,), pack=2,
                                          output="sigmoid", projection=True),
             lambda: _digits(20)),
    # Convolutional GANs on the 8x8 digits as images, with tiny networks (AIS on them is
    # cheap only with few chains and temperatures: ESTIMATES below).
    "dcgan": (lambda: ppgen.DCGAN((8, 8), latent_dim=2, width=4), _digit_images),
    "fccgan": (lambda: ppgen.FCCGAN((8, 8), latent_dim=2, width=4, fc_dims=(8,)),
               _digit_images),
    "stackgan": (lambda: ppgen.StackGAN((8, 8), 10, noise_dim=2, cond_dim=1, embed_dim=4,
                                        width=4, num_residual=1), _digit_images),
    "rbm": (lambda: ppgen.RBM(8), lambda: (_digits() > 0.5).float()),
    "dbn": (lambda: ppgen.DBN((8, 4)), lambda: (_digits() > 0.5).float()),
    "dbm": (lambda: ppgen.DBM((8, 4)), lambda: (_digits() > 0.5).float()),
    "dbm3": (lambda: ppgen.DBM((8, 4, 4)), lambda: (_digits() > 0.5).float()),
}
# Further cases of a registered model in another configuration: case -> registered name.
VARIANTS = {"dbm3": "dbm"}
_NET = {"num_steps": 30, "batch_size": 20, "tol": 0}
METHODS = {"gmm": ("em", {}), "hmm": ("em", {}), "lda": ("em", {}),
           "prodlda": ("svi", {"num_steps": 100, "lr": 0.05, "batch_size": 20, "tol": 0}),
           "vae": ("svi", _NET), "cvae": ("svi", _NET), "gan": ("svi", _NET),
           "cgan": ("svi", _NET), "dcgan": ("svi", _NET), "fccgan": ("svi", _NET),
           "stackgan": ("svi", _NET), "rbm": ("svi", _NET), "dbn": ("svi", _NET),
           "dbm": ("svi", _NET), "dbm3": ("svi", _NET)}
# Model keyword arguments per datum (labels) and extra arguments of sample().
MODEL_KWARGS = {"cvae": lambda: {"labels": _digit_labels()},
                "cgan": lambda: {"labels": _digit_labels(20)},
                "stackgan": lambda: {"labels": _digit_labels(20)}}
SAMPLE_KWARGS = {"hmm": {"lengths": 20}, "cvae": {"labels": 3}, "cgan": {"labels": 3},
                 "stackgan": {"labels": 3}}
# Cheap settings of the estimators of models whose log_prob is an estimate (default
# ESTIMATE; per case where the estimator's default temperatures are expensive: AIS through
# convolutional generators, 100 temperatures x 5 leapfrog steps by default).
ESTIMATE = {"num_samples": 50}
_CHEAP_AIS = {"num_samples": 4, "num_steps": 10}
ESTIMATES = {"dcgan": _CHEAP_AIS, "fccgan": _CHEAP_AIS, "stackgan": _CHEAP_AIS}


def test_every_registered_model_has_a_case():
    assert set(MODEL_REGISTRY) == set(CASES) - set(VARIANTS), \
        "add the new model to CASES in this file"
    for case, name in VARIANTS.items():
        assert type(CASES[case][0]()) is MODEL_REGISTRY[name], case


class Case:
    """A fitted model with its case's extra arguments for sample, log_prob and friends."""

    def __init__(self, name):
        make_model, make_data = CASES[name]
        self.name, self.model, self.data = name, make_model(), make_data()
        self.kwargs = MODEL_KWARGS.get(name, lambda: {})()
        method, options = METHODS[name]
        self.fit = ppgen.fit(self.model, self.data, method=method, seed=0, progress=False,
                             model_kwargs=self.kwargs or None, **options)
        self.caps = self.model.capabilities()
        self.estimate = ESTIMATES.get(name, ESTIMATE) if self.caps.log_prob == "estimate" \
            else {}

    def sample(self, num, **kw):
        extra = dict(SAMPLE_KWARGS.get(self.name, {}))
        if "labels" in extra:
            extra["labels"] = torch.full((num,), extra["labels"])
        return self.model.sample(num, **extra, **kw)

    def log_prob(self, data, seed=0):
        est = dict(self.estimate, seed=seed) if self.estimate else {}
        return self.model.log_prob(data, **self._rows(len(data)), **est)

    def _rows(self, n):
        return {k: v[:n] for k, v in self.kwargs.items()}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    return Case(request.param)


@pytest.fixture
def fitted(case):
    return case.model, case.data


def test_declared_capabilities_are_consistent(case):
    caps = case.caps
    assert caps.methods and set(caps.methods) <= {"em", "svi", "mcmc"}
    assert caps.log_prob in ("exact", "estimate", "bound", "none")
    assert (caps.estimator is not None) == (caps.log_prob in ("estimate", "bound"))
    assert METHODS[case.name][0] in caps.methods


def test_undeclared_methods_are_refused_with_the_alternative(case):
    for method in {"em", "svi", "mcmc"} - set(case.caps.methods):
        with pytest.raises(ppgen.NotSupportedError, match="use method="):
            ppgen.fit(CASES[case.name][0](), case.data, method=method, progress=False)


def test_estimated_log_prob_takes_num_samples_and_seed(case):
    if case.caps.log_prob != "estimate":
        pytest.skip(f"{case.name}: log_prob is {case.caps.log_prob}")
    x = case.data[:8]
    a = case.log_prob(x, seed=1)
    assert torch.equal(a, case.log_prob(x, seed=1))
    assert not torch.equal(a, case.log_prob(x, seed=2))


def test_sample_and_log_prob_shapes(case):
    model, data = case.model, case.data
    x = case.sample(7, seed=0)
    assert x.shape == (7, *data.shape[1:])
    if case.caps.log_prob == "none":
        return
    lp = case.log_prob(data, seed=0)
    assert lp.shape == (len(data),)
    assert torch.isfinite(lp).all()
    est = dict(case.estimate, seed=0) if case.estimate else {}
    assert torch.equal(model.score(data, **case._rows(len(data)), **est), -lp)


def test_same_seed_same_samples(case):
    assert torch.equal(case.sample(5, seed=3), case.sample(5, seed=3))
    assert not torch.equal(case.sample(5, seed=3), case.sample(5, seed=4))


def test_save_load_round_trip(case, tmp_path):
    model, data = case.model, case.data
    path = ppgen.save(model, tmp_path / "model.pt")
    loaded = ppgen.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    est = case.estimate
    rows = case._rows(len(data))
    assert torch.equal(loaded.log_prob(data, **rows, **est), model.log_prob(data, **rows, **est))
    extra = dict(SAMPLE_KWARGS.get(case.name, {}))
    if "labels" in extra:
        extra["labels"] = torch.full((4,), extra["labels"])
    assert torch.equal(loaded.sample(4, seed=1, **extra), model.sample(4, seed=1, **extra))


def test_dtype_move_invalidates_caches(case):
    model, data = case.model, case.data
    try:
        model.to(torch.float32)
        assert model.dtype == torch.float32
        lp = case.log_prob(data.float(), seed=0)
        assert lp.dtype == torch.float32
        model.to(torch.float64)
        assert model.dtype == torch.float64
        assert case.log_prob(data.double(), seed=0).dtype == torch.float64
    finally:
        model.to(data.dtype if data.is_floating_point() else torch.float64)


def test_fit_is_a_snapshot_of_its_own_parameters(case):
    fit = case.fit
    assert fit.state is not None
    before = {k: v.clone() for k, v in fit.params.items()}
    with fit.fitted_model() as model:
        for k, v in model.get_state().items():
            if v is not None:
                assert torch.equal(v, fit.state[k]), k
    assert all(torch.equal(before[k], fit.params[k]) for k in before)


def test_impute_fills_every_nan(case):
    model, data = case.model, case.data
    x = data[:10].clone()
    x[::2, 0] = float("nan")
    out = model.impute(x, **case._rows(10))
    assert not torch.isnan(out).any()
    assert torch.equal(out[1::2], x[1::2])


def test_bad_input_is_refused_clearly(case):
    model, data = case.model, case.data
    bad = data.clone()
    bad[0, 0] = float("nan")
    rows = case._rows(len(data))
    if case.caps.log_prob != "none":
        with pytest.raises(ValueError, match="impute"):
            model.log_prob(bad, **rows)
        with pytest.raises(ValueError, match="dimensions"):
            model.log_prob(data[0], **case._rows(1))
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1"):
        case.sample(0)


@pytest.mark.gpu
def test_cuda_fit_matches_cpu():
    for name in CASES:
        cpu = Case(name)
        make_model, _ = CASES[name]
        gpu = make_model()
        method, options = METHODS[name]
        kw = {k: v.cuda() for k, v in cpu.kwargs.items()} or None
        ppgen.fit(gpu, cpu.data, method=method, seed=0, device="cuda", progress=False,
                  model_kwargs=kw, **options)
        assert gpu.device.type == "cuda"
        rows = {k: v.cuda() for k, v in cpu._rows(len(cpu.data)).items()}
        est = dict(cpu.estimate, seed=0) if cpu.estimate else {}
        lp = gpu.log_prob(cpu.data.cuda(), **rows, **est)
        assert lp.device.type == "cuda" and torch.isfinite(lp).all()
        if method == "svi":
            # SVI draws from the device's own RNG stream, so the two fits differ; the
            # applications of the same state must not.
            gpu.set_state({k: None if v is None else v.cuda()
                           for k, v in cpu.model.get_state().items()})
            lp = gpu.log_prob(cpu.data.cuda(), **rows, **est)
        expected = cpu.model.log_prob(cpu.data, **cpu._rows(len(cpu.data)), **est)
        torch.testing.assert_close(lp.cpu(), expected, rtol=1e-5, atol=1e-6)
