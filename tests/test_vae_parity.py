"""ppgen's VAE training against a plain Pyro SVI loop (Pyro's VAE example) given the same draws.

With the same initial weights, the same minibatch order and the same Bernoulli and
reparameterisation draws, ``ppgen.fit(vae, data, "svi", iwae=True, num_particles=1)`` and
``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())`` are one algorithm, and so are ppgen's
default objective (analytic KL) and ``TraceMeanField_ELBO``: their per-step losses and final
weights agree up to floating-point rounding. This is what makes the benchmark's
(``benchmarks/vae_parity.py``) paired comparison a comparison of implementations."""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

import ppgen
from ppgen.datasets import DynamicBinarized


def _pyro_losses(encoder, decoder, source, *, seed, batch_size, num_steps, lr, latent_dim,
                 skip_init_batch=True, loss=Trace_ELBO):
    """Pyro's VAE example on ``source``: the minibatch order of ppgen's loop (one
    ``randperm`` per epoch from ``Generator().manual_seed(seed)``) and its use of the global
    stream (seeded with ``seed``; one minibatch of rows 0..B-1 taken for ``objective.init``
    before the first step). Returns the losses per datum and restores the global stream."""

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], latent_dim),
                                                  x.new_ones(x.shape[0], latent_dim)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))

    saved = torch.random.get_rng_state()
    pyro.clear_param_store()
    try:
        torch.manual_seed(seed)
        if skip_init_batch:
            source.take(torch.arange(batch_size))  # the loop's init batch
        svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=loss())
        generator = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        n = len(source)
        while len(losses) < num_steps:
            perm = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                if len(losses) == num_steps:
                    break
                x = source.take(perm[start:start + batch_size])
                losses.append(svi.step(x) / x.shape[0])  # Pyro sums over the minibatch
    finally:
        pyro.clear_param_store()
        torch.random.set_rng_state(saved)
    return torch.tensor(losses)


@pytest.mark.parametrize(("seed", "objective"), [(0, "pyro"), (7, "pyro"), (0, "analytic")])
def test_vae_fit_is_pyros_svi_step_for_step(seed, objective):
    """(pyro) ``iwae=True, num_particles=1`` (log p(x, z) - log q(z | x) at one draw) against
    ``Trace_ELBO``; (analytic) ppgen's default objective (analytic Gaussian KL) against
    ``TraceMeanField_ELBO``, which takes the KL in closed form too."""
    x, _ = ppgen.datasets.load_digits()
    source = DynamicBinarized(x[:320])
    kw = {"latent_dim": 4, "hidden_dims": (16,), "activation": "tanh"}
    vae = ppgen.VAE(64, **kw)
    vae.reset_networks(seed)  # what fit(seed=seed) starts an untrained VAE from
    encoder, decoder = copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder)
    vae = ppgen.VAE(64, **kw)
    steps = 25  # 2.5 epochs of 10 minibatches: the permutation is redrawn twice
    options = {"iwae": True, "num_particles": 1} if objective == "pyro" else {}
    fit = ppgen.fit(vae, source, "svi", batch_size=32, num_steps=steps, lr=1e-2, tol=0.0,
                    seed=seed, progress=False, **options)
    ours = torch.as_tensor(fit.history["objective"], dtype=torch.float32)
    theirs = _pyro_losses(encoder, decoder, source, seed=seed, batch_size=32,
                          num_steps=steps, lr=1e-2, latent_dim=4,
                          loss=Trace_ELBO if objective == "pyro" else TraceMeanField_ELBO)
    assert ours.shape == theirs.shape == (steps,)
    assert float(ours[-1]) < float(ours[0]) - 5  # it trained (about 45 nats -> 29-30)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-3)
    for mine, peer in ((vae.encoder, encoder), (vae.decoder, decoder)):
        for (name, a), b in zip(mine.state_dict().items(), peer.state_dict().values(),
                                strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_parity_needs_the_same_draws():
    """The check above is not vacuous: a Pyro run that does not skip the loop's init batch
    (the benchmark before ``--draws shared``) starts from the same weights and takes the same
    minibatches, but other pixels and noise, and its first loss differs."""
    x, _ = ppgen.datasets.load_digits()
    source = DynamicBinarized(x[:320])
    kw = {"latent_dim": 4, "hidden_dims": (16,), "activation": "tanh"}
    vae = ppgen.VAE(64, **kw)
    vae.reset_networks(0)
    encoder, decoder = copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder)
    fit = ppgen.fit(ppgen.VAE(64, **kw), source, "svi", iwae=True, num_particles=1,
                    batch_size=32, num_steps=3, lr=1e-2, tol=0.0, seed=0, progress=False)
    theirs = _pyro_losses(encoder, decoder, source, seed=0, batch_size=32, num_steps=3,
                          lr=1e-2, latent_dim=4, skip_init_batch=False)
    assert abs(float(fit.history["objective"][0]) - float(theirs[0])) > 1e-2
