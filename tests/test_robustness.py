"""Numerical robustness: data scaled or shifted by 1e6, float32 and float64, duplicate rows,
a component that loses its data. Gaussian EM is equivariant (the fit to a * x + b is the fit
to x, moved; the log-likelihood shifts by -N D log a), so these are exact checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ppgen


@pytest.fixture(scope="module")
def faithful():
    return torch.as_tensor(np.asarray(ppgen.datasets.load_old_faithful()), dtype=torch.float64)


def _gmm(x, **kw):
    model = ppgen.GaussianMixture(2, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ppgen.fit(model, x, method="em", seed=0, progress=False, num_steps=40, tol=0)
    return float(model.log_prob(x).double().sum()), fit, caught


def _hmm(x):
    model = ppgen.HiddenMarkovModel(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppgen.fit(model, x, method="em", seed=0, progress=False, num_steps=30, tol=0)
    return float(model.log_prob(x).double().sum())


@pytest.mark.parametrize("scale, shift", [(1e6, 0.0), (1.0, 1e6), (1e6, 1e6)])
def test_mixture_fit_moves_with_the_data(faithful, scale, shift):
    base, _, _ = _gmm(faithful)
    got, fit, caught = _gmm(faithful * scale + shift)
    expected = base - faithful.numel() * math.log(scale)
    assert got == pytest.approx(expected, rel=1e-9)
    assert not [w for w in caught if issubclass(w.category, UserWarning)
                and "reg_covar" in str(w.message)]


@pytest.mark.parametrize("scale, shift", [(1e6, 0.0), (1.0, 1e6)])
def test_hmm_fit_moves_with_the_data(scale, shift):
    x, _ = ppgen.datasets.make_hmm(20, 50, 3, num_features=2, seed=0, dtype=torch.float64)
    assert _hmm(x * scale + shift) == pytest.approx(_hmm(x) - x.numel() * math.log(scale),
                                                    rel=1e-9)


def test_float32_data_far_from_zero_warn_of_rounding_and_stay_finite(faithful):
    got, fit, caught = _gmm((faithful + 1e6).float())
    assert math.isfinite(got)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert any("float32" in m and "centre the data" in m for m in messages), messages
    assert "precision_loss" in [d.code for d in fit.messages]
    # centred float32 data: no warning, and the float64 fit's log-likelihood to float32's
    # precision
    centred, fit, caught = _gmm((faithful - faithful.mean(0)).float())
    assert "precision_loss" not in [d.code for d in fit.messages]
    base, _, _ = _gmm(faithful)
    assert centred == pytest.approx(base, rel=1e-5)


def test_a_covariance_floor_large_against_the_data_is_reported(faithful):
    """Data scaled by 1e-6 have variances of 1e-12: the default reg_covar (1e-6, as
    scikit-learn's) then dominates the covariances, and the fit says so."""
    _, fit, caught = _gmm(faithful * 1e-6)
    assert "reg_covar_large" in [d.code for d in fit.messages]
    assert any("reg_covar=1e-06" in str(w.message) and "standardise" in str(w.message)
               for w in caught)
    # a constant feature (variance 0) does not hide the others
    with_constant = torch.cat([faithful * 1e-6, torch.zeros(len(faithful), 1,
                                                            dtype=torch.float64)], 1)
    _, fit, _ = _gmm(with_constant)
    assert "reg_covar_large" in [d.code for d in fit.messages]
    small, fit, _ = _gmm(faithful * 1e-6, reg_covar=1e-18)  # a floor to the data's scale
    assert "reg_covar_large" not in [d.code for d in fit.messages]
    base, _, _ = _gmm(faithful)
    assert small == pytest.approx(base + faithful.numel() * math.log(1e6), rel=1e-9)


def test_duplicate_rows_and_a_component_left_without_data_stay_finite(faithful):
    dup = torch.cat([faithful, faithful[:1].repeat(300, 1)])
    ll, fit, _ = _gmm(dup)
    assert math.isfinite(ll)
    # five components on two distinct points: most lose all their data
    two = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64).repeat(50, 1)
    model = ppgen.GaussianMixture(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppgen.fit(model, two, method="em", seed=0, progress=False)
    assert torch.isfinite(model.log_prob(two)).all()
    assert torch.isfinite(model.weights).all() and float(model.weights.sum()) == \
        pytest.approx(1.0)


# --------------------------------------------------------------------------------- LDA
@pytest.fixture(scope="module")
def corpus():
    out = ppgen.datasets.make_corpus(60, 30, 3, seed=0)
    return out[0] if isinstance(out, tuple) else out


def _lda(counts, num_topics=3, **kw):
    model = ppgen.LDA(num_topics, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ppgen.fit(model, counts, method="em", seed=0, progress=False, num_steps=30)
    return model, fit, caught


def _sane_topics(model):
    tw = model.topic_word
    assert torch.isfinite(tw).all() and (tw > 0).all()
    torch.testing.assert_close(tw.sum(1), torch.ones(len(tw), dtype=tw.dtype))


@pytest.mark.parametrize("how", ["duplicated", "times 1000", "times 1e6", "float32"])
def test_lda_on_scaled_counts_stays_finite(corpus, how):
    counts = {"duplicated": torch.cat([corpus, corpus]), "times 1000": corpus * 1000,
              "times 1e6": corpus * 1e6, "float32": corpus.float()}[how]
    model, fit, _ = _lda(counts)
    _sane_topics(model)
    ll = model.log_prob(counts)
    assert torch.isfinite(ll).all() and (ll < 0).all()
    assert fit.converged


def test_lda_words_never_seen_and_empty_documents(corpus):
    counts = corpus.clone()
    counts[:, [5, 7]] = 0  # two words that no document uses
    counts[:4] = 0  # four empty documents
    counts[4:8] = 0
    counts[4:8, 0] = 1  # four one-word documents
    model, fit, _ = _lda(counts)
    _sane_topics(model)
    # the unused words are alike to the model: exactly the same weight in every topic, the
    # prior's share alone, at most that of any word that occurs
    tw = model.topic_word
    assert torch.equal(tw[:, 5], tw[:, 7])
    used = [w for w in range(30) if w not in (5, 7)]
    assert (tw[:, 5] <= tw[:, used].min(1).values).all()
    ll = model.log_prob(counts)
    assert torch.isfinite(ll).all()
    assert torch.equal(ll[:4], torch.zeros(4, dtype=ll.dtype))  # no words: probability 1
    assert (ll[4:] < 0).all()


def test_lda_topics_left_without_words_say_why_the_bound_fell(corpus):
    """Ten topics for a three-topic corpus: most lose their words. The fit stays finite; the
    bound falls a little, and the message names LDA's inexact E-step and its remedy, not a
    mixture's covariance floor; with the remedy it does not fall."""
    model, fit, caught = _lda(corpus, 10)
    _sane_topics(model)
    assert torch.isfinite(model.log_prob(corpus)).all()
    (decrease,) = [d for d in fit.messages if d.code == "em_decrease"]
    assert "max_doc_iter=100" in decrease.message and "doc_tol=0.001" in decrease.message
    assert "raise max_doc_iter" in decrease.message and "reg_covar" not in decrease.message
    model, fit, _ = _lda(corpus, 10, max_doc_iter=1000, doc_tol=1e-8)
    assert "em_decrease" not in [d.code for d in fit.messages]


# ------------------------------------------------------------------ networks: VAE, RBM
def _fit_codes(model, x, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ppgen.fit(model, x, method="svi", seed=0, progress=False, **options)
    user = [str(w.message) for w in caught if w.category is UserWarning]
    return fit, [d.code for d in fit.messages], user


def _vae(x, likelihood="gaussian", num_steps=200):
    model = ppgen.VAE(x.shape[1], latent_dim=2, hidden_dims=(16,), likelihood=likelihood)
    fit, codes, user = _fit_codes(model, x, num_steps=num_steps, batch_size=50, lr=1e-2)
    history = np.asarray(fit.history["objective"])
    assert np.isfinite(history).all()
    ll = model.log_prob(x, num_samples=10, seed=0)
    assert torch.isfinite(ll).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return model, history, codes, user


@pytest.fixture(scope="module")
def normal6():
    return torch.randn(300, 6, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


def test_vae_float64_data_fit_as_float32(normal6):
    """The VAE's networks are float32: float64 data are converted, and fit exactly as the
    same data given in float32."""
    m64, h64, codes, _ = _vae(normal6)
    m32, h32, _, _ = _vae(normal6.float())
    assert "data_scale" not in codes
    np.testing.assert_array_equal(h64, h32)
    for (name, a), (_, b) in zip(m64.state_dict().items(), m32.state_dict().items()):
        assert torch.equal(a, b), name


def test_vae_near_duplicate_rows_and_constant_columns_stay_finite(normal6):
    near = normal6[:1].repeat(300, 1) + 1e-9 * normal6
    model, _, codes, _ = _vae(near)
    assert "data_scale" not in codes  # features of order 1, spread 1e-9: a fine scale
    assert float(model.log_prob(near, num_samples=10, seed=0).mean()) > \
        float(_vae(normal6)[0].log_prob(normal6, num_samples=10, seed=0).mean())
    constant = normal6.clone()
    constant[:, 2] = 3.0
    _, _, codes, _ = _vae(constant)
    assert "data_scale" not in codes
    bits = (normal6 > 0).double()
    bits[:, 1] = 1.0
    bits[:, 4] = 0.0
    model, _, codes, _ = _vae(bits, "bernoulli", num_steps=400)
    assert "data_scale" not in codes
    # the constant columns are learned: draws' means of those pixels near 1 and 0
    probs = model.sample(200, seed=0).mean(0)
    assert float(probs[1]) > 0.9 and float(probs[4]) < 0.1


@pytest.mark.parametrize("scale, shift", [(1e6, 0.0), (1.0, 1e6), (1e-6, 0.0)])
def test_vae_data_far_from_unit_scale_get_a_warning_with_the_remedy(normal6, scale, shift):
    """Networks start at unit scale: scaled or shifted by 1e6 (or shrunk by 1e-6), data are
    fitted badly without an error, so the fit says so and names the remedy; the
    standardised data fit well and get no such warning."""
    x = normal6 * scale + shift
    model, _, codes, user = _vae(x, num_steps=100)
    assert "data_scale" in codes
    assert any("standardise the data" in m and "VAE(likelihood='gaussian')" in m
               for m in user), user
    # the warning is right: the draws miss the data's spread by far
    ratio = float(model.sample(500, seed=0).std(0).mean() / x.std(0).mean())
    assert not 0.5 < ratio < 2, ratio
    z = (x - x.mean(0)) / x.std(0)
    model, _, codes, _ = _vae(z, num_steps=300)
    assert "data_scale" not in codes
    ratio = float(model.sample(500, seed=0).std(0).mean() / z.std(0).mean())
    assert 0.5 < ratio < 2, ratio


def _rbm(x, visible="bernoulli", num_epochs=20):
    model = ppgen.RBM(6, visible=visible)
    fit, codes, user = _fit_codes(model, x, num_epochs=num_epochs, batch_size=50, tol=0)
    assert np.isfinite(np.asarray(fit.history["objective"])).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.log_prob(x)).all()
    return model, codes, user


@pytest.fixture(scope="module")
def bits8():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(300, 8, generator=g, dtype=torch.float64) < 0.3).double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rbm_constant_columns_and_duplicate_rows_stay_finite(bits8, dtype):
    x = bits8.to(dtype).clone()
    x[:, 0], x[:, 1] = 1.0, 0.0
    model, codes, _ = _rbm(x, num_epochs=100)
    assert codes == []
    assert model.visible_bias.dtype == dtype
    # the always-on and always-off pixels are learned as such
    draws = model.sample(300, seed=0).mean(0)
    assert float(draws[0]) > 0.9 and float(draws[1]) < 0.1
    model, codes, _ = _rbm(x[:1].repeat(300, 1))  # one row, 300 times
    assert torch.isfinite(model.log_prob(x[:1])).all()
    # the one row is the most probable of all: above every other pattern in the data
    others = x[(x != x[0]).any(1)]
    assert len(others) > 200
    assert float(model.log_prob(x[:1])) > float(model.log_prob(others).max())


def test_gaussian_rbm_far_from_unit_scale_gets_a_warning(normal6):
    x = torch.cat([normal6, normal6[:, :2]], 1)
    _, codes, _ = _rbm(x, "gaussian")
    assert "data_scale" not in codes
    constant = x.clone()
    constant[:, 3] = 5.0
    _, codes, _ = _rbm(constant, "gaussian")
    assert "data_scale" not in codes
    _, codes, user = _rbm(x * 1e6, "gaussian")
    assert "data_scale" in codes
    assert any("RBM(visible='gaussian')" in m and "standardise" in m for m in user), user


# ------------------------------------------------------------------------------ GANs
def _gan(x, output="linear", num_steps=100):
    model = ppgen.GAN(x.shape[1], latent_dim=2, hidden_dims=(16,), output=output)
    fit, codes, user = _fit_codes(model, x, num_steps=num_steps, batch_size=32, tol=0)
    for name, values in fit.history.items():
        assert np.isfinite(np.asarray(values)).all(), name
    assert all(torch.isfinite(p).all() for p in model.parameters())
    draws = model.sample(200, seed=0)
    assert torch.isfinite(draws).all()
    return draws, codes, user


@pytest.mark.parametrize("value", [0.0, 2.0])
def test_gan_on_constant_data_stays_finite(value):
    x = torch.full((256, 3), value)
    draws, codes, _ = _gan(x, num_steps=300)
    assert codes == []
    # the generator moves towards the constant: its draws are nearer than at the start
    start = ppgen.GAN(3, latent_dim=2, hidden_dims=(16,))
    ppgen.fit(start, x, method="svi", seed=0, progress=False, num_steps=1, batch_size=32,
              tol=0)
    before = float((start.sample(200, seed=0) - value).abs().mean())
    assert float((draws - value).abs().mean()) < before


def test_gan_data_far_from_its_output_get_a_warning():
    x = torch.full((256, 3), 1e6)
    draws, codes, user = _gan(x)
    assert "data_scale" in codes and any("GAN: feature 0" in m for m in user), user
    assert float((draws - 1e6).abs().min()) > 1e5  # right: the fit is nowhere near
    pixels = torch.randint(0, 256, (256, 3), generator=torch.Generator().manual_seed(0))
    _, codes, user = _gan(pixels.float(), "sigmoid", num_steps=5)
    assert "data_range" in codes
    assert any("output='sigmoid' generates values in [0, 1]" in m and "pixels / 255" in m
               for m in user), user
    _, codes, _ = _gan(pixels.float() / 255, "sigmoid", num_steps=5)
    assert "data_range" not in codes and "data_scale" not in codes
