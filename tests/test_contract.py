"""The common contract every registered model must pass (as sklearn's estimator_checks)."""

import pytest
import torch

import ppgen
from ppgen.models import MODEL_REGISTRY

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
}
METHODS = {"gmm": ("em", {}), "hmm": ("em", {}), "lda": ("em", {}),
           "prodlda": ("svi", {"num_steps": 100, "lr": 0.05, "batch_size": 20, "tol": 0})}
# Extra arguments of sample(): sequence models need a length.
SAMPLE_KWARGS = {"hmm": {"lengths": 20}}


def test_every_registered_model_has_a_case():
    assert set(MODEL_REGISTRY) == set(CASES), "add the new model to CASES in this file"


class _Sampling:
    """A fitted model whose ``sample`` gets the case's extra arguments."""

    def __init__(self, model, kwargs):
        self.model, self.kwargs = model, kwargs

    def __call__(self, num, **kw):
        return self.model.sample(num, **self.kwargs, **kw)


@pytest.fixture(params=sorted(CASES))
def fitted(request):
    make_model, make_data = CASES[request.param]
    model, data = make_model(), make_data()
    method, options = METHODS[request.param]
    ppgen.fit(model, data, method=method, seed=0, progress=False, **options)
    model.sample_for_test = _Sampling(model, SAMPLE_KWARGS.get(request.param, {}))
    return model, data


def test_sample_and_log_prob_shapes(fitted):
    model, data = fitted
    x = model.sample_for_test(7, seed=0)
    assert x.shape == (7, *data.shape[1:])
    lp = model.log_prob(data)
    assert lp.shape == (len(data),)
    assert torch.isfinite(lp).all()
    assert torch.equal(model.score(data), -lp)


def test_same_seed_same_samples(fitted):
    model, _ = fitted
    draw = model.sample_for_test
    assert torch.equal(draw(5, seed=3), draw(5, seed=3))
    assert not torch.equal(draw(5, seed=3), draw(5, seed=4))


def test_save_load_round_trip(fitted, tmp_path):
    model, data = fitted
    path = ppgen.save(model, tmp_path / "model.pt")
    loaded = ppgen.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert torch.equal(loaded.log_prob(data), model.log_prob(data))
    kwargs = model.sample_for_test.kwargs
    assert torch.equal(loaded.sample(4, seed=1, **kwargs), model.sample(4, seed=1, **kwargs))


def test_device_and_dtype_move(fitted):
    model, data = fitted
    model32 = model.to(torch.float32)
    lp = model32.log_prob(data.float())
    assert lp.dtype == torch.float32
    model.to(torch.float64)


def test_impute_fills_every_nan(fitted):
    model, data = fitted
    x = data[:10].clone()
    x[::2, 0] = float("nan")
    out = model.impute(x)
    assert not torch.isnan(out).any()
    assert torch.equal(out[1::2], x[1::2])


def test_bad_input_is_refused_clearly(fitted):
    model, data = fitted
    bad = data.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="impute"):
        model.log_prob(bad)
    with pytest.raises(ValueError, match="dimensions"):
        model.log_prob(data[0])
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1"):
        model.sample_for_test(0)


@pytest.mark.gpu
def test_cuda_fit_matches_cpu():
    for name, (make_model, make_data) in CASES.items():
        cpu, gpu = make_model(), make_model()
        data = make_data()
        method, options = METHODS[name]
        ppgen.fit(cpu, data, method=method, seed=0, progress=False, **options)
        ppgen.fit(gpu, data, method=method, seed=0, device="cuda", progress=False, **options)
        assert gpu.device.type == "cuda"
        lp = gpu.log_prob(data.cuda())
        assert lp.device.type == "cuda"
        if method == "svi":
            # SVI draws from the device's own RNG stream, so the two fits differ; the
            # applications of the same parameters must not.
            assert torch.isfinite(lp).all()
            gpu.set_params(**{k: v.cuda() for k, v in cpu.get_params().items()})
            lp = gpu.log_prob(data.cuda())
        torch.testing.assert_close(lp.cpu(), cpu.log_prob(data), rtol=1e-6, atol=1e-8)
