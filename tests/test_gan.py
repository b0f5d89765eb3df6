"""The adversarial family: the two-player objective through the shared loop, the GAN as a
Pyro model, sample metrics, the AIS generator likelihood against a closed form, and the
applications (inpainting against mean imputation)."""

import math

import pytest
import torch
from pyro.infer import Predictive

import ppgen
from ppgen.evaluation import ais_log_prob, choose_observation_scale, mixture_metrics
from ppgen.models.adversarial.losses import discriminator_loss, generator_loss, pack


def _ring(n=512, seed=0):
    return ppgen.datasets.make_ring(n, seed=seed)


def _fit(gan, x, **kw):
    options = {"num_steps": 30, "batch_size": 64, "lr": 1e-3, "tol": 0, "progress": False,
               "seed": 0, **kw}
    return ppgen.fit(gan, x, "svi", **options)


# ------------------------------------------------------------------------- objective
def test_two_parameter_groups_with_their_own_adam_and_num_critic():
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    obj = gan.default_objective(num_critic=3, lr=1e-3)
    from ppgen.training import Batch
    state = obj.init(gan, Batch(x[:64].float(), None, 512), seed=0)
    assert set(state.optimizers) == {"generator", "discriminator"}
    assert state.optimizers["generator"].defaults["betas"] == (0.5, 0.999)
    gen_ids = {id(p) for p in gan.generator.parameters()}
    assert {id(p) for p in state.params["generator"]} == gen_ids
    assert not gen_ids & {id(p) for p in state.params["discriminator"]}
    before = [p.detach().clone() for p in gan.generator.parameters()]
    for step in range(3):
        state.step = step
        obj.step(gan, state, Batch(x[:64].float(), None, 512))
        changed = any(not torch.equal(a, p) for a, p in zip(before, gan.generator.parameters()))
        assert changed == (step == 2)  # the generator moves after the third critic step
    assert float(state.extra["g_updates"]) == 1


@pytest.mark.parametrize("loss", ["minimax", "wgan-gp", "hinge"])
def test_every_loss_trains_and_records_both_players(loss):
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2, spectral_norm=loss == "hinge")
    fit = _fit(gan, x, gan_loss=loss, r1_weight=1.0 if loss == "minimax" else 0.0)
    for key in ("objective", "g_loss", "d_real", "d_fake", "grad_norm"):
        assert len(fit.history[key]) == 30 and all(math.isfinite(v) for v in fit.history[key])
    assert math.isfinite(float(gan.obs_scale))  # chosen after the last step
    assert gan.sample(4, seed=0).shape == (4, 2)


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    assert torch.allclose(discriminator_loss("minimax", real, fake),
                          sp(-real).mean() + sp(fake).mean())
    assert torch.allclose(discriminator_loss("hinge", real, fake),
                          torch.tensor((0 + 2 + 1.5 + 0) / 2))
    assert torch.allclose(discriminator_loss("wgan-gp", real, fake), fake.mean() - real.mean())
    assert torch.allclose(generator_loss("minimax", fake), sp(-fake).mean())
    assert torch.equal(pack(torch.arange(8.0).reshape(4, 2), 2),
                       torch.tensor([[0.0, 1, 2, 3], [4, 5, 6, 7]]))


def test_moving_average_lags_the_generator_and_is_what_sample_uses():
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    _fit(gan, x, ema_decay=0.9)
    g = list(gan.generator.parameters())[0]
    e = list(gan.generator_ema.parameters())[0]
    assert not torch.equal(g, e)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(gan.sample(5, seed=0), gan.generator_ema(z))
    plain = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    _fit(plain, x, ema_decay=0.0)
    for a, b in zip(plain.generator.parameters(), plain.generator_ema.parameters()):
        assert torch.equal(a, b)


def test_moving_average_update_is_the_stated_lerp():
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(8,), pack=2)
    obj = gan.default_objective(ema_decay=0.5)
    from ppgen.training import Batch
    state = obj.init(gan, Batch(x[:64].float(), None, 512), seed=0)
    state.extra["g_updates"] = torch.tensor(100.0, dtype=torch.float64)  # past the warm-up
    before = [p.detach().clone() for p in gan.generator_ema.parameters()]
    obj.step(gan, state, Batch(x[:64].float(), None, 512))
    for old, avg, p in zip(before, gan.generator_ema.parameters(), gan.generator.parameters()):
        assert torch.allclose(avg, 0.5 * old + 0.5 * p)  # decay min(0.5, 101 / 110)


def _bn_stats_by_hand(gan, num=4096, size=512):
    """Running statistics of the moving average's two batch norms, computed directly: the
    draws of seed 0, batch by batch in train mode, the mean of batch means and of unbiased
    batch variances (what a cumulative running average over equal batches holds)."""
    net = gan.generator_ema.net
    lin1, bn1, lin2, bn2 = net[0], net[1], net[3], net[4]
    torch.manual_seed(0)
    z = torch.randn(num, gan.latent_dim)
    stats = [[], [], [], []]
    with torch.no_grad():
        for b in z.split(size):
            a = lin1(b)
            stats[0].append(a.mean(0))
            stats[1].append(a.var(0))
            h = torch.relu((a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + bn1.eps)
                           * bn1.weight + bn1.bias)
            c = lin2(h)
            stats[2].append(c.mean(0))
            stats[3].append(c.var(0))
    return [torch.stack(v).mean(0) for v in stats], (bn1, bn2)


def test_batch_norm_generator_and_the_statistics_of_its_moving_average(tmp_path):
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(16, 16), pack=1, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in gan.generator.modules()) == 2
    _fit(gan, x, ema_decay=0.9)
    # after the last step the average's statistics are its own, not the generator's
    (m1, v1, m2, v2), (bn1, bn2) = _bn_stats_by_hand(gan)
    for got, want in ((bn1.running_mean, m1), (bn1.running_var, v1),
                      (bn2.running_mean, m2), (bn2.running_var, v2)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    gen_bn = gan.generator.net[1]
    assert not torch.allclose(gen_bn.running_mean, bn1.running_mean, atol=1e-3)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(gan.sample(5, seed=0), gan.generator_ema(z))  # eval mode
    assert not gan.generator_ema.training
    loaded = ppgen.load(ppgen.save(gan, tmp_path / "gan.pt"))
    assert loaded.batch_norm and torch.equal(loaded.sample(5, seed=0), gan.sample(5, seed=0))
    assert ppgen.GAN(2).batch_norm is False
    with pytest.raises(TypeError, match="batch_norm"):
        ppgen.GAN(2, batch_norm=1)
    cgan = ppgen.ConditionalGAN(2, 2, latent_dim=2, hidden_dims=(8,), batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in cgan.generator.modules())


def test_refreshing_statistics_leaves_a_generator_without_batch_norm_alone():
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(8,))
    before = {k: v.clone() for k, v in gan.generator_ema.state_dict().items()}
    state = torch.random.get_rng_state()
    gan.default_objective().refresh_ema_statistics(gan)
    assert all(torch.equal(v, before[k]) for k, v in gan.generator_ema.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    x, _ = _ring()
    full = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    _fit(full, x, num_steps=20)
    part = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    _fit(part, x, num_steps=12, checkpoint=tmp_path / "run", checkpoint_every=4)
    resumed = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    fit = _fit(resumed, x, num_steps=20, resume=tmp_path / "run")
    assert len(fit.history["objective"]) == 20
    for k, v in full.get_state().items():
        assert torch.equal(v, resumed.get_state()[k]), k


def test_validation_data_is_monitored_by_the_frechet_distance():
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    fit = _fit(gan, x, validation_data=_ring(256, seed=1)[0], eval_every=10)
    assert len(fit.history["eval_val_frechet"]) == 3
    assert all(v >= 0 for v in fit.history["eval_val_frechet"])


def test_bad_options_are_refused():
    x, _ = _ring()
    with pytest.raises(ValueError, match="gan_loss: expected one of"):
        _fit(ppgen.GAN(2, latent_dim=2, hidden_dims=(8,)), x, gan_loss="wasserstein")
    with pytest.raises(ValueError, match="ema_decay"):
        _fit(ppgen.GAN(2, latent_dim=2, hidden_dims=(8,)), x, ema_decay=1.0)
    with pytest.raises(ValueError, match="pack"):
        ppgen.GAN(2, pack=0)
    with pytest.raises(ValueError, match="batch_size"):
        _fit(ppgen.GAN(2, latent_dim=2, hidden_dims=(8,), pack=8), x, batch_size=4)


# ----------------------------------------------------------------------------- Pyro
def test_predictive_draws_the_latent_and_the_generated_data():
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=3, hidden_dims=(16,), pack=2)
    _fit(gan, x, num_steps=5)
    draws = Predictive(gan.model, num_samples=6)(num_data=4)
    assert draws["z"].shape == (6, 4, 3)
    assert draws["x"].shape == (6, 4, 2)
    with torch.no_grad():
        assert torch.allclose(draws["x"], gan.generator_ema(draws["z"]))


# --------------------------------------------------------------------------- metrics
def test_mixture_metrics_count_modes_quality_and_reverse_kl():
    x, p = _ring(2500, seed=3)
    m = mixture_metrics(x, p["modes"], p["std"])
    assert m.modes_captured == 8 and m.high_quality > 98  # 1 - exp(-4.5) = 98.9 %
    assert m.reverse_kl < 0.01
    # All on two modes, a fifth of them far away: 2 modes, 80 % quality, KL = log 4.
    modes = p["modes"]
    collapsed = torch.cat([modes[0].expand(1000, 2), modes[1].expand(1000, 2),
                           torch.zeros(500, 2, dtype=modes.dtype)])
    m = mixture_metrics(collapsed, modes, p["std"])
    assert (m.modes_captured, m.high_quality) == (2, 80.0)
    assert m.reverse_kl == pytest.approx(math.log(4))
    grid, q = ppgen.datasets.make_grid(2500, seed=0)
    assert mixture_metrics(grid, q["modes"], q["std"]).modes_captured == 25


# ------------------------------------------------------------------------- likelihood
def test_ais_matches_the_probabilistic_pca_closed_form():
    g = torch.Generator().manual_seed(0)
    d, latent = 6, 2
    w = torch.randn(d, latent, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    sigma = 0.3
    cov = w @ w.T + sigma ** 2 * torch.eye(d, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(b, cov)
    x = mvn.sample((40,))
    est, se = ais_log_prob(x, lambda z: z @ w.T + b, latent_dim=latent, obs_scale=sigma,
                           num_steps=300, num_chains=16, seed=0)
    err = est - mvn.log_prob(x)
    mean_se = float(se.square().mean().sqrt()) / math.sqrt(len(x))
    assert abs(float(err.mean())) < 3 * mean_se + 1e-3
    assert abs(float(err.mean())) < 0.1
    assert float((err.abs() < 3 * se + 0.05).double().mean()) > 0.9


def test_observation_scale_is_chosen_on_validation_data():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 1, generator=g, dtype=torch.float64)
    sigma = 0.2
    z = torch.randn(200, 1, generator=g, dtype=torch.float64)
    val = z @ w.T + sigma * torch.randn(200, 4, generator=g, dtype=torch.float64)
    best, scales, scores = choose_observation_scale(
        val, lambda v: v @ w.T, latent_dim=1, scales=[0.05, 0.1, 0.2, 0.4, 0.8],
        num_steps=50, num_chains=4)
    assert best == 0.2 and scores.shape == (5,)


def test_log_prob_is_an_estimate_and_refuses_exact():
    x, _ = _ring()
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(16,), pack=2)
    _fit(gan, x)
    caps = gan.capabilities()
    assert caps.log_prob == "estimate" and "annealed importance" in caps.estimator
    lp, se = gan.log_prob(x[:5], num_samples=4, num_steps=20, return_stderr=True)
    assert lp.shape == se.shape == (5,) and torch.isfinite(lp).all()
    with pytest.raises(ppgen.NotSupportedError, match="annealed importance sampling"):
        gan.log_prob(x[:5], exact=True)


# ----------------------------------------------------------------------- applications
@pytest.fixture(scope="module")
def digits_gan():
    x = ppgen.datasets.load_digits()[0]
    gan = ppgen.GAN(64, latent_dim=8, hidden_dims=(128,), pack=2, output="sigmoid")
    ppgen.fit(gan, x[:1500], "svi", num_steps=1500, batch_size=64, lr=1e-3, tol=0,
              progress=False, seed=0)
    return gan, x[1500:1600]


def test_inpainting_by_latent_search_beats_mean_imputation(digits_gan):
    gan, test = digits_gan
    train_mean = ppgen.datasets.load_digits()[0][:1500].mean(0).expand_as(test)
    # Half of the pixels of each image hidden, a different random half per image.
    hide = torch.rand(test.shape, generator=torch.Generator().manual_seed(0)).argsort(1) < 32
    hidden = test.masked_fill(hide, float("nan"))
    out = gan.impute(hidden, seed=0)
    assert torch.equal(out[~hide], test[~hide])
    err_gan = (out[hide] - test[hide]).square().mean()
    err_mean = (train_mean[hide] - test[hide]).square().mean()
    assert err_gan < 0.9 * err_mean


def test_reconstruct_and_anogan_score(digits_gan):
    gan, test = digits_gan
    rec = gan.reconstruct(test[:10], num_steps=100)
    assert rec.shape == (10, 64)
    noise = torch.rand(10, 64, generator=torch.Generator().manual_seed(0))
    s_digits = gan.score(test[:10], method="anogan", num_search_steps=100)
    s_noise = gan.score(noise, method="anogan", num_search_steps=100)
    assert s_digits.mean() < s_noise.mean()


def test_applications_refuse_bad_input_and_unfitted_models():
    gan = ppgen.GAN(2, latent_dim=2, hidden_dims=(8,))
    with pytest.raises(ppgen.NotFittedError):
        gan.sample(3)
    x, _ = _ring()
    _fit(gan, x, num_steps=5)
    with pytest.raises(ValueError, match="shape"):
        gan.impute(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="num_samples"):
        gan.sample(0)
    with pytest.raises(ValueError, match="method"):
        gan.score(x[:3], method="bogus")


# ------------------------------------------------------------------- convolutional GANs
@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (3, 32, 32)])
def test_dcgan_and_fccgan_networks_fit_28_and_32_pixel_images(shape):
    z = torch.randn(4, 16)
    for gan in (ppgen.DCGAN(shape, latent_dim=16, width=8, pack=2),
                ppgen.FCCGAN(shape, latent_dim=16, width=8, fc_dims=(16, 32), pack=2)):
        out = gan.generator(z)
        assert out.shape == (4, math.prod(shape))
        assert gan.discriminator(out.reshape(2, -1)).shape == (2,)
    fcc = ppgen.FCCGAN(shape, latent_dim=16, width=8, fc_dims=(16, 32))
    assert isinstance(fcc.generator.net[0], torch.nn.Linear)
    assert fcc.generator.net[0].out_features == 16
    assert any(isinstance(m, torch.nn.Linear) and m.out_features == 16
               for m in fcc.discriminator.body)


def test_dcgan_trains_on_digit_images_and_keeps_their_shape():
    x = ppgen.datasets.load_digits()[0][:128].reshape(128, 8, 8)
    gan = ppgen.DCGAN((8, 8), latent_dim=4, width=8)
    fit = ppgen.fit(gan, x, "svi", num_steps=4, batch_size=32, tol=0, progress=False, seed=0)
    assert len(fit.history["g_loss"]) == 4
    s = gan.sample(5, seed=0)
    assert s.shape == (5, 8, 8) and bool(((s >= 0) & (s <= 1)).all())
    with pytest.raises(ValueError, match="divisible by 4"):
        ppgen.DCGAN((30, 30))


# ------------------------------------------------------------------------ conditional
def test_conditional_gan_draws_the_classes_it_is_asked_for():
    # Two classes far apart in the plane: each label's samples must land near its own mode.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(512) % 2
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    x = centres[y] + 0.3 * torch.randn(512, 2, generator=g, dtype=torch.float64)
    cgan = ppgen.ConditionalGAN(2, 2, latent_dim=2, hidden_dims=(32,), pack=2)
    ppgen.fit(cgan, x, "svi", model_kwargs={"labels": y}, num_steps=600, batch_size=64,
              tol=0, progress=False, seed=0)
    for label in (0, 1):
        s = cgan.sample(200, labels=label, seed=1)
        near = ((s - centres[label].float()).norm(dim=1) < 1.5).double().mean()
        assert near > 0.8, (label, float(near))
    with pytest.raises(ValueError, match="labels"):
        cgan.sample(3)
    with pytest.raises(ValueError, match="class indices"):
        cgan.sample(2, labels=torch.tensor([0, 5]))
    assert cgan.log_prob(x[:4], labels=y[:4], num_samples=2, num_steps=5).shape == (4,)


def test_projection_discriminator_adds_the_label_embedding_inner_product():
    cgan = ppgen.ConditionalGAN(2, 3, latent_dim=2, hidden_dims=(8,), pack=2, projection=True)
    d = cgan.discriminator
    x, y = torch.randn(5, 4), torch.nn.functional.one_hot(torch.arange(5) % 3, 3).repeat(1, 2)
    phi = d.mlp.features(x)
    expected = d.mlp.head(phi).squeeze(-1) + (d.embed(y.float()) * phi).sum(-1)
    assert torch.allclose(d(x, y.float()), expected)
    assert d.embed.in_features == 6  # the packed one-hot labels


def test_ais_agrees_with_importance_sampling_on_a_vae_decoder():
    # A Gaussian VAE's decoder is a generator with a per-feature observation scale: the AIS
    # estimate and the VAE's own importance-sampling estimate (encoder proposal) of the same
    # log p(x) must agree within their errors.
    x = ppgen.datasets.load_digits()[0]
    vae = ppgen.VAE(64, latent_dim=2, hidden_dims=(32,), likelihood="gaussian")
    ppgen.fit(vae, x[:1000], "svi", num_steps=200, batch_size=100, lr=1e-2, tol=0,
              progress=False, seed=0)
    test = x[1000:1020]
    is_est, is_se = vae.log_prob(test, num_samples=2000, seed=0, return_stderr=True)
    scale = vae.decoder.log_scale.detach().exp()
    ais_est, ais_se = ais_log_prob(test, lambda z: vae.decoder(z)[0], latent_dim=2,
                                   obs_scale=scale, num_steps=200, num_chains=8, seed=0)
    diff = ais_est - is_est
    se = (ais_se.square() + is_se.square()).sqrt()
    mean_se = float(se.square().mean().sqrt()) / math.sqrt(len(test))
    assert abs(float(diff.mean())) < 3 * mean_se + 0.01
    assert bool((diff.abs() < 4 * se + 0.02).all())
