"""Benchmark: image GANs on MNIST (DCGAN, FCC-GAN, conditional GAN, StackGAN) and DCGAN on
Stacked MNIST, measured by a locally trained digit classifier, with ppgen's training time
against a plain PyTorch loop of the same networks.

Run directly::

    .venv/bin/python benchmarks/gan_mnist.py            # the default run (tens of minutes)
    .venv/bin/python benchmarks/gan_mnist.py --quick    # smoke run (tiny subset, a minute)

Data: the first ``--train-images`` of MNIST's train split (28x28 intensities in [0, 1]);
held-out: the first ``--test-images`` of its test split. Every model trains ``--epochs``
epochs of minibatches of ``--batch-size`` with its ppgen defaults (Adam, beta1 = 0.5, the
non-saturating loss, the generator's moving average used for sampling), seed 0.

Measured per model (``ppgen.evaluation.images``, the classifier trained once on MNIST train
and cached): the Fréchet distance between ``--num-samples`` samples and the held-out images
in the classifier's 128 features, class coverage (classes with at least half their uniform
share), KL of the predicted class frequencies to uniform, and the held-out log-likelihood in
nats per image by AIS under a Gaussian observation model (``model.log_prob``, Wu et al.
2017; ``--ais-images`` images, ``--ais-samples`` chains, ``--ais-steps`` temperatures; a
density over pixel intensities, so values are comparable among these models only). Stacked
MNIST (VEEGAN, Srivastava et al. 2017): DCGAN on ``--train-images`` triples of digits as
channels; modes (of 1,000) with at least one of ``--stacked-samples`` samples and the KL to
uniform (published: DCGAN 99 modes, KL 3.4; VEEGAN 150, KL 2.95, with longer training).

Timing: ppgen's DCGAN epoch (the difference of a two-epoch and a one-epoch fit, so the
fit's one-time work cancels: initialisation and the observation scale chosen for
``log_prob`` after the last step, reported beside it) against one epoch of a plain PyTorch
loop of the same networks (the same initial weights, Adam settings, loss, minibatch size
and moving-average update; no ppgen code in the loop), interleaved over
``--timing-rounds`` rounds, median, on ``--threads`` threads. Goal: ppgen at most 1.1x.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F

import ppgen
from ppgen.evaluation import images


def _threads(n: int):
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    return threadpool_limits(n)


def plain_epoch(model, x, *, batch_size: int, seed: int, ema_decay: float = 0.999) -> float:
    """One epoch of a plain PyTorch DCGAN loop over ``x`` on copies of ``model``'s freshly
    drawn networks: the discriminator step then the generator step per minibatch, the
    non-saturating loss on logits, Adam(lr 2e-4, betas (0.5, 0.999)), the generator's moving
    average. Returns its wall seconds."""
    torch.manual_seed(seed)
    model.reset_networks(seed)
    gen, disc = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
    ema = copy.deepcopy(gen)
    gen.train()
    disc.train()
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    flat = x.reshape(len(x), -1)
    t = time.perf_counter()
    for u, idx in enumerate(torch.randperm(len(flat)).split(batch_size)):
        real = flat[idx]
        z = torch.randn(len(real), model.latent_dim)
        with torch.no_grad():
            fake = gen(z)
        d_loss = F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        for p in disc.parameters():
            p.requires_grad_(False)
        g_loss = F.softplus(-disc(gen(torch.randn(len(real), model.latent_dim)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in disc.parameters():
            p.requires_grad_(True)
        decay = min(ema_decay, (1 + u) / (10 + u))
        with torch.no_grad():
            for a, p in zip(ema.parameters(), gen.parameters(), strict=True):
                a.lerp_(p, 1 - decay)
            for a, b in zip(ema.buffers(), gen.buffers(), strict=True):
                a.copy_(b)
    return time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--stacked-samples", type=int, default=26000)
    p.add_argument("--ais-images", type=int, default=50)
    p.add_argument("--ais-samples", type=int, default=8, help="AIS chains per image")
    p.add_argument("--ais-steps", type=int, default=100, help="AIS temperatures")
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="dcgan,fccgan,cgan,stackgan")
    p.add_argument("--width", type=int, default=32,
                   help="channels of the convolutional players (DCGAN, FCC-GAN, StackGAN)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.quick:
        a.train_images, a.test_images, a.epochs, a.num_samples = 256, 256, 1, 500
        a.stacked_samples, a.ais_images, a.ais_steps, a.timing_rounds = 1000, 4, 5, 1
        a.ais_samples, a.width = 2, 4
    limits = _threads(a.threads)
    x, y = ppgen.datasets.load_mnist("train")
    x, y = x.reshape(-1, 28, 28), y
    test = ppgen.datasets.load_mnist("test")[0][:a.test_images].reshape(-1, 28, 28)
    # (--quick: a classifier of 2,000 images, not cached, so a smoke run trains nothing big)
    classifier = images.train_digit_classifier(x[:2000], y[:2000], num_epochs=1) \
        if a.quick else images.digit_classifier()
    x, y = x[:a.train_images], y[:a.train_images]
    common = dict(num_epochs=a.epochs, batch_size=a.batch_size, seed=0, progress=False, tol=0)
    builders = {
        "dcgan": lambda: (ppgen.DCGAN((28, 28), width=a.width), {}),
        "fccgan": lambda: (ppgen.FCCGAN((28, 28), width=a.width), {}),
        "cgan": lambda: (ppgen.ConditionalGAN((28, 28), 10, latent_dim=32,
                                              hidden_dims=(256, 256), output="sigmoid",
                                              pack=1), {"labels": y}),
    }
    if hasattr(ppgen, "StackGAN"):
        builders["stackgan"] = lambda: (ppgen.StackGAN((28, 28), 10, width=a.width),
                                        {"labels": y})
    rows = []
    for name in a.models.split(","):
        if name not in builders:
            print(f"{name}: not available in this ppgen; skipped")
            continue
        model, kwargs = builders[name]()
        t = time.perf_counter()
        ppgen.fit(model, x, "svi", model_kwargs=kwargs or None, **common)
        secs = (time.perf_counter() - t) / a.epochs
        sampler = model
        if kwargs:  # conditional models: the same number of samples of every class
            labels = torch.arange(a.num_samples) % 10
            sampler = model.sample(a.num_samples, labels=labels, seed=0)
        m = images.image_metrics(sampler, classifier, test, num_samples=a.num_samples)
        lp_kwargs = {"labels": ppgen.datasets.load_mnist("test")[1][:a.ais_images]} \
            if kwargs else {}
        lp, se = model.log_prob(test[:a.ais_images], num_samples=a.ais_samples,
                                num_steps=a.ais_steps, seed=0, return_stderr=True,
                                **lp_kwargs)
        rows.append({"model": name, "sec_per_epoch": secs, **m.as_dict(),
                     "heldout_nats": float(lp.double().mean()),
                     "heldout_se": float(se.double().mean())})
        print(rows[-1], flush=True)
    # Stacked MNIST
    stacked, _ = images.make_stacked_mnist(x, y, a.train_images, seed=0)
    dc3 = ppgen.DCGAN((3, 28, 28), width=a.width)
    t = time.perf_counter()
    ppgen.fit(dc3, stacked, "svi", **common)
    st = images.stacked_mnist_metrics(dc3, classifier, num_samples=a.stacked_samples)
    stacked_row = {"model": "dcgan (Stacked MNIST)",
                   "sec_per_epoch": (time.perf_counter() - t) / a.epochs, **st.as_dict()}
    print(stacked_row, flush=True)
    # Timing against the plain loop: ppgen's marginal epoch (a two-epoch fit minus a one-epoch
    # fit, so the fit's one-time work, the networks' initialisation and the observation
    # scale chosen for log_prob after the last step, cancels) against one plain epoch.
    ours, once, plain = [], [], []
    for r in range(a.timing_rounds):
        for which in (["ppgen", "plain"] if r % 2 == 0 else ["plain", "ppgen"]):
            if which == "ppgen":
                t = []
                for epochs in (1, 2):
                    start = time.perf_counter()
                    ppgen.fit(ppgen.DCGAN((28, 28), width=a.width), x, "svi",
                              **dict(common, num_epochs=epochs))
                    t.append(time.perf_counter() - start)
                ours.append(t[1] - t[0])
                once.append(2 * t[0] - t[1])
            else:
                plain.append(plain_epoch(ppgen.DCGAN((28, 28), width=a.width), x,
                                         batch_size=a.batch_size, seed=0))
    limits.unregister() if hasattr(limits, "unregister") else None
    t_ours, t_plain = sorted(ours)[len(ours) // 2], sorted(plain)[len(plain) // 2]
    t_once = sorted(once)[len(once) // 2]
    print(f"MNIST GANs: {a.train_images} training images, {a.epochs} epochs, batch "
          f"{a.batch_size}, {a.threads} thread(s); metrics on {a.num_samples} samples "
          f"against {a.test_images} test images")
    print("| model | s / epoch | classifier FD | class coverage | class KL | held-out nats "
          "(AIS) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['sec_per_epoch']:.1f} | {r['frechet_distance']:.2f} | "
              f"{r['class_coverage']:.0f}/10 | {r['class_kl']:.3f} | "
              f"{r['heldout_nats']:.1f} ± {r['heldout_se']:.1f} |")
    print(f"Stacked MNIST, DCGAN: {stacked_row['modes']:.0f} of 1000 modes, KL "
          f"{stacked_row['mode_kl']:.2f} ({a.stacked_samples} samples; published DCGAN 99 "
          "modes, KL 3.4; VEEGAN 150, 2.95)")
    print(f"one DCGAN epoch: ppgen {t_ours:.2f} s (marginal; plus {t_once:.2f} s once per "
          f"fit), plain PyTorch loop {t_plain:.2f} s: {t_ours / t_plain:.2f}x (goal <= 1.1x)")
    out = {"args": vars(a), "rows": rows, "stacked": stacked_row,
           "epoch_seconds": {"ppgen": ours, "plain": plain, "ppgen_once_per_fit": once},
           "ratio": t_ours / t_plain}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
