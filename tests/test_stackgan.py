"""StackGAN: two stages of one fit (stage I frozen during stage II), the Pyro model with the
stage-I image as a site, label conditioning measured by a classifier of real digits, save /
load, and bad input."""

import math

import pytest
import torch
from pyro.infer import Predictive

import ppgen
from ppgen.training import Batch


def _digits():
    x, y = ppgen.datasets.load_digits()
    return x.reshape(-1, 8, 8), y


def _tiny(**kw):
    return ppgen.StackGAN((8, 8), 10, **{"noise_dim": 2, "cond_dim": 1, "embed_dim": 4,
                                         "width": 4, "num_residual": 1, **kw})


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_stages_split_the_steps_and_stage_one_is_frozen_in_stage_two():
    x, y = _digits()
    gan = _tiny()
    obj = gan.default_objective(total_steps=8, stage_fraction=0.25, lr=1e-3)
    assert [obj.stage(s) for s in range(8)] == [0, 0, 1, 1, 1, 1, 1, 1]
    batch = Batch(x[:32].reshape(32, 64), None, 32, kwargs={"labels": y[:32]})
    state = obj.init(gan, batch, seed=0)
    assert set(state.optimizers) == {"generator_1", "discriminator_1", "generator_2",
                                     "discriminator_2"}
    assert {id(p) for p in state.params["generator_1"]} == \
        {id(p) for p in gan.generator.stage1.parameters()}
    assert {id(p) for p in state.params["discriminator_2"]} == \
        {id(p) for p in gan.discriminator.parameters()}
    stage1 = (gan.generator.stage1, gan.generator_ema.stage1, gan.discriminator_low)
    stage2 = (gan.generator.stage2, gan.generator_ema.stage2, gan.discriminator)
    before1 = [_state(m) for m in stage1]
    before2 = [_state(m) for m in stage2]
    for step in range(2):  # stage I moves stage I only
        state.step = step
        out = obj.step(gan, state, batch)
        assert out["stage"] == 0 and math.isfinite(out["kl"])
    assert all(_equal(a, m.state_dict()) for a, m in zip(before2, stage2))
    assert not any(_equal(a, m.state_dict()) for a, m in zip(before1, stage1))
    after1 = [_state(m) for m in stage1]
    for step in range(2, 8):  # stage II moves stage II only, validation included
        state.step = step
        out = obj.step(gan, state, batch)
        assert out["stage"] == 1 and math.isfinite(out["kl"])
        if step == 4:
            state.step = 5
            assert math.isfinite(obj.evaluate(gan, state, batch)["val_frechet"])
    assert all(_equal(a, m.state_dict()) for a, m in zip(after1, stage1))
    assert not any(_equal(a, m.state_dict()) for a, m in zip(before2, stage2))
    assert float(state.extra["g_updates_1"]) == 2 and float(state.extra["g_updates_2"]) == 6


def test_fit_records_the_stages_and_the_kl_term():
    x, y = _digits()
    gan = _tiny()
    fit = ppgen.fit(gan, x[:100], "svi", model_kwargs={"labels": y[:100]}, num_steps=10,
                    batch_size=25, tol=0, progress=False, seed=0, stage_fraction=0.3,
                    validation_data=(x[100:150], {"labels": y[100:150]}), eval_every=5)
    assert list(fit.history["stage"]) == [0.0] * 3 + [1.0] * 7
    assert all(v >= 0 for v in fit.history["kl"])
    low, full = fit.history["eval_val_frechet_low"], fit.history["eval_val_frechet"]
    assert len(low) == len(full) == 2 and all(v >= 0 for v in low) and full[1] >= 0
    assert math.isfinite(float(gan.obs_scale))  # chosen on the full-resolution images


def test_pyro_model_has_the_latent_the_stage_one_image_and_the_image():
    x, y = _digits()
    gan = _tiny()
    ppgen.fit(gan, x[:40], "svi", model_kwargs={"labels": y[:40]}, num_steps=4,
              batch_size=20, tol=0, progress=False, seed=0)
    assert gan.latent_dim == 2 + 2 * 1
    draws = Predictive(gan.model, num_samples=3)(labels=torch.tensor([1, 7]))
    assert draws["z"].shape == (3, 2, 4)
    assert draws["x_low"].shape == (3, 2, 4, 4) and draws["x"].shape == (3, 2, 8, 8)
    with torch.no_grad():
        y1 = torch.nn.functional.one_hot(torch.tensor([1, 7]), 10).float()
        torch.testing.assert_close(draws["x"][0].reshape(2, 64),
                                   gan.generator_ema(draws["z"][0], y1))


def test_sample_shapes_seeds_and_the_stage_one_draws():
    x, y = _digits()
    gan = _tiny()
    ppgen.fit(gan, x[:40], "svi", model_kwargs={"labels": y[:40]}, num_steps=4,
              batch_size=20, tol=0, progress=False, seed=0)
    labels = torch.tensor([0, 3, 3, 9, 1])
    s = gan.sample(5, labels=labels, seed=2)
    assert s.shape == (5, 8, 8) and bool(((s >= 0) & (s <= 1)).all())
    assert torch.equal(s, gan.sample(5, labels=labels, seed=2))
    assert not torch.equal(s, gan.sample(5, labels=labels, seed=3))
    assert gan.sample(4, labels=2, seed=0).shape == (4, 8, 8)
    low = gan.sample_low(5, labels=labels, seed=2)
    assert low.shape == (5, 4, 4)
    # the full image is stage II applied to the same stage-I draw
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, gan.latent_dim, generator=g)
    with torch.no_grad():
        y1 = torch.nn.functional.one_hot(labels, 10).float()
        torch.testing.assert_close(low.reshape(5, 16), gan.generator_ema.low(z, y1))
        full = gan.generator_ema.stage2(low.reshape(5, 16), z[:, 3:], y1)
    torch.testing.assert_close(s.reshape(5, 64), full)


def test_default_stage_one_resolution_follows_the_image():
    assert _tiny().low_image == (1, 4, 4)
    mnist = ppgen.StackGAN((28, 28), 10, width=4, noise_dim=2, cond_dim=1)
    assert mnist.low_image == (1, 14, 14)
    assert mnist.generator(torch.randn(3, mnist.latent_dim),
                           torch.eye(10)[:3]).shape == (3, 784)
    big = ppgen.StackGAN((3, 32, 32), 10, width=4, low_resolution=8, noise_dim=2, cond_dim=1)
    assert big.low_image == (3, 8, 8) and big.num_up == 2
    z, y1 = torch.randn(2, big.latent_dim), torch.eye(10)[:2]
    assert big.generator.low(z, y1).shape == (2, 3 * 8 * 8)
    assert big.generator(z, y1).shape == (2, 3 * 32 * 32)
    assert big.discriminator(torch.rand(2, 3 * 32 * 32), y1).shape == (2,)


def test_bad_input_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        ppgen.StackGAN((8, 8), 0)
    with pytest.raises(ValueError, match="num_classes"):
        ppgen.StackGAN((8, 8), -3)
    with pytest.raises(ValueError, match="image_shape"):
        ppgen.StackGAN((7, 7), 10)
    with pytest.raises(ValueError, match="image_shape"):
        ppgen.StackGAN((1, 2, 8, 8), 10)
    with pytest.raises(ValueError, match="low_resolution"):
        ppgen.StackGAN((8, 8), 10, low_resolution=3)
    with pytest.raises(ValueError, match="stage_fraction"):
        _tiny().default_objective(total_steps=10, stage_fraction=1.0)
    with pytest.raises(TypeError, match="options"):
        _tiny().default_objective(total_steps=10, projection=True)
    x, y = _digits()
    gan = _tiny()
    with pytest.raises(ValueError, match="data"):  # wrong image shape
        ppgen.fit(gan, torch.rand(40, 6, 6), "svi", model_kwargs={"labels": y[:40]},
                  num_steps=2, progress=False)
    ppgen.fit(gan, x[:40], "svi", model_kwargs={"labels": y[:40]}, num_steps=2,
              batch_size=20, tol=0, progress=False, seed=0)
    with pytest.raises(ValueError, match="labels"):
        gan.sample(2, labels=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="labels"):
        gan.sample(2, labels=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="labels"):
        gan.sample(2)
    with pytest.raises(ValueError, match="labels"):
        gan.log_prob(x[:3], labels=y[:2], num_samples=2, num_steps=2)
    with pytest.raises(ValueError, match="data"):
        gan.log_prob(torch.rand(3, 6, 6), labels=y[:3], num_samples=2, num_steps=2)
    with pytest.raises(ppgen.NotSupportedError, match="annealed importance sampling"):
        gan.log_prob(x[:3], labels=y[:3], exact=True)


# ------------------------------------------------------------------ label conditioning
def _classifier(x, y):
    """Multinomial logistic regression on the pixels of real digits (held-out accuracy
    0.90 on digits 1500-1796)."""
    w = torch.zeros(64, 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)
    flat = x.reshape(len(x), 64)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(flat @ w + b, y) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda v: (v.reshape(len(v), 64) @ w + b).argmax(1)


@pytest.fixture(scope="module")
def digits_stackgan():
    x, y = _digits()
    gan = ppgen.StackGAN((8, 8), 10, noise_dim=8, cond_dim=4, width=8, num_residual=1)
    ppgen.fit(gan, x[:1500], "svi", model_kwargs={"labels": y[:1500]}, num_steps=600,
              batch_size=64, lr=2e-3, tol=0, progress=False, seed=0)
    return gan


def test_samples_are_of_the_class_they_are_asked_for(digits_stackgan):
    # A classifier of real digits labels 50 samples of each class. Measured after this
    # fit (600 steps, seeds 0-4, the default kl_weight 0.1): 0.79, 0.71, 0.72, 0.67, 0.72
    # of the samples get their own label (chance 0.10, with a standard error of 0.013;
    # with the paper's kl_weight 1: 0.33, 0.41, 0.33, 0.31, 0.30).
    x, y = _digits()
    clf = _classifier(x[:1500], y[:1500])
    assert float((clf(x[1500:]) == y[1500:]).double().mean()) > 0.85
    labels = torch.arange(500) % 10
    s = digits_stackgan.sample(500, labels=labels, seed=0)
    accuracy = float((clf(s) == labels).double().mean())
    assert accuracy > 0.5, accuracy


def test_save_load_round_trip(digits_stackgan, tmp_path):
    gan = digits_stackgan
    loaded = ppgen.load(ppgen.save(gan, tmp_path / "stackgan.pt"))
    assert type(loaded) is ppgen.StackGAN and loaded.get_config() == gan.get_config()
    labels = torch.tensor([4, 2, 0])
    assert torch.equal(loaded.sample(3, labels=labels, seed=5),
                       gan.sample(3, labels=labels, seed=5))
    assert torch.equal(loaded.sample_low(3, labels=labels, seed=5),
                       gan.sample_low(3, labels=labels, seed=5))
    x, y = _digits()
    kw = {"labels": y[1500:1504], "num_samples": 2, "num_steps": 5}
    assert torch.equal(loaded.log_prob(x[1500:1504], **kw), gan.log_prob(x[1500:1504], **kw))
    assert float(loaded.obs_scale) == float(gan.obs_scale)


def test_impute_reconstruct_and_score_take_the_labels(digits_stackgan):
    gan = digits_stackgan
    x, y = _digits()
    test, labels = x[1500:1510], y[1500:1510]
    hidden = test.clone()
    hidden[:, :4] = float("nan")  # the top half of each image
    out = gan.impute(hidden, labels=labels, num_steps=50, num_restarts=2)
    assert out.shape == (10, 8, 8) and not torch.isnan(out).any()
    assert torch.equal(out[:, 4:], test[:, 4:])
    assert gan.reconstruct(test, labels=labels, num_steps=20).shape == (10, 8, 8)
    s = gan.score(test, labels=labels, method="anogan", num_search_steps=20)
    assert s.shape == (10,) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="labels"):
        gan.impute(hidden)
