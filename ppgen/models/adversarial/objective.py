"""The adversarial training objective: two players, two parameter groups, two optimisers.

:class:`AdversarialObjective` implements :class:`ppgen.training.Objective` for any model of
this family (``generator``, ``discriminator``, ``generator_ema``, ``latent_dim``, ``pack``,
``_conditions``), so ``ppgen.fit(gan, x, "svi")`` runs it through the shared loop
(:func:`ppgen.inference.loop.train`): minibatches, history, the non-finite guard,
checkpoints and resume come from there.

One loop step is one discriminator update on the minibatch; every ``num_critic``-th step is
followed by one generator update (so ``num_critic`` discriminator steps per generator step).
Each player has its own Adam (``betas=(0.5, 0.999)`` by default, as Radford et al. 2016) in
``state.optimizers["discriminator"]`` and ``["generator"]``. A model may define
``generator_penalty(*conditions) -> 0-d tensor``, a regulariser added to the generator's loss
at each generator update (StackGAN's KL term of conditioning augmentation); ``g_loss``
reports the adversarial part alone. After every generator update the
exponential moving average of the generator's weights (``model.generator_ema``, the network
that ``sample`` and ``log_prob`` use) moves by ``ema_decay``; with ``ema_decay=0`` it is a copy
of the generator. Losses and penalties: :mod:`ppgen.models.adversarial.losses`.

The monitored metric is not an adversarial loss (those say little about sample quality): with
``validation_data`` the loop calls :meth:`AdversarialObjective.evaluate` every ``eval_every``
steps, which reports ``val_frechet``, the Fréchet distance between 2,000 generated samples
and the validation data in data space (lower is better).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..._frechet import frechet_distance
from ..._random import seeded
from ..._validation import (
    bad_value,
    check_choice,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ...training import Batch, TrainState, guarded_update
from .losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pack,
    r1_penalty,
)

__all__ = ["AdversarialObjective"]


def _adam(params: list[torch.Tensor], *, lr: float,
          betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the multi-tensor (foreach) update on every device: torch picks it for CUDA
    only, and the players of a small GAN are many small tensors, whose one-by-one update
    was about a tenth of a CPU step (measured on the ring benchmark's networks)."""
    return torch.optim.Adam(list(params), lr=lr, betas=betas, foreach=True)


class AdversarialObjective:
    """Alternating two-player training of a GAN-family model (module docstring).

    Parameters
    ----------
    gan_loss : {"minimax", "wgan-gp", "hinge"}
        Non-saturating minimax, Wasserstein with gradient penalty, or hinge.
    lr : float
        The generator's Adam learning rate (and the discriminator's unless
        ``lr_discriminator`` is given).
    lr_discriminator : float, optional
    betas : tuple of float
        Adam's moment decay rates of both players (beta1 = 0.5 by default).
    num_critic : int
        Discriminator steps per generator step.
    gp_weight : float
        lambda of the WGAN gradient penalty (used with ``gan_loss="wgan-gp"`` only).
    r1_weight : float
        gamma of the R1 penalty on real data (0: none).
    ema_decay : float
        Decay in [0, 1) of the moving average of the generator's weights (0: the sampler is
        the generator itself). The decay used at generator update u is
        min(ema_decay, (1 + u) / (10 + u)), so short runs are not dominated by the start.
    lr_decay : float
        Factor in (0, 1] by which both learning rates decay over ``total_steps``.
    clip_norm : float, optional
        Clip each player's gradient norm (None: no clipping; non-finite steps are skipped
        either way).
    total_steps : int, optional
        Steps of the run (needed for ``lr_decay < 1``; the observation scale of
        ``log_prob`` is chosen after the last one).

    Notes
    -----
    ``step`` returns ``{"loss", "grad_norm", "d_loss", "g_loss", "d_real", "d_fake"}``:
    ``loss`` is the discriminator's loss of the step (what the loop records as
    ``"objective"``), ``g_loss`` the last generator loss, ``d_real``/``d_fake`` the mean
    discriminator outputs, ``grad_norm`` the norm of both players' gradients together (not
    finite when either update was skipped).
    """

    monitor = "val_frechet"
    loss_converges = False  # the surrogate loss is no convergence signal
    monitor_mode = "min"

    def __init__(self, *, gan_loss: str = "minimax", lr: float = 2e-4,
                 lr_discriminator: float | None = None,
                 betas: tuple[float, float] = (0.5, 0.999), num_critic: int = 1,
                 gp_weight: float = 10.0, r1_weight: float = 0.0, ema_decay: float = 0.999,
                 lr_decay: float = 1.0, clip_norm: float | None = None,
                 total_steps: int | None = None, num_particles: int = 1) -> None:
        self.gan_loss = check_choice("gan_loss", gan_loss, LOSSES)
        self.lr = check_positive_float("lr", lr)
        self.lr_discriminator = self.lr if lr_discriminator is None else \
            check_positive_float("lr_discriminator", lr_discriminator)
        if not (isinstance(betas, tuple | list) and len(betas) == 2
                and all(0 <= check_nonnegative_float("betas", b) < 1 for b in betas)):
            raise bad_value("betas", "two numbers in [0, 1)", repr(betas))
        self.betas = (float(betas[0]), float(betas[1]))
        self.num_critic = check_positive_int("num_critic", num_critic)
        self.gp_weight = check_nonnegative_float("gp_weight", gp_weight)
        self.r1_weight = check_nonnegative_float("r1_weight", r1_weight)
        self.ema_decay = check_nonnegative_float("ema_decay", ema_decay)
        if self.ema_decay >= 1:
            raise bad_value("ema_decay", "a decay in [0, 1)", ema_decay,
                            "Use 0 to sample from the generator itself.")
        self.lr_decay = check_positive_float("lr_decay", lr_decay)
        if self.lr_decay > 1:
            raise bad_value("lr_decay", "a factor in (0, 1]", lr_decay)
        self.clip_norm = None if clip_norm is None else check_positive_float("clip_norm",
                                                                             clip_norm)
        self.total_steps = None if total_steps is None else check_positive_int("total_steps",
                                                                               total_steps)
        if self.lr_decay < 1 and self.total_steps is None:
            raise bad_value("total_steps", "the number of steps of the run (the learning "
                            "rates decay over them)", "None",
                            "Pass total_steps=num_steps, or lr_decay=1.0.")
        if check_positive_int("num_particles", num_particles) != 1:
            raise bad_value("num_particles", "1 (an adversarial objective draws one "
                            "generated sample per datum)", num_particles)
        self._validation: Any = None

    def __repr__(self) -> str:
        return (f"AdversarialObjective(gan_loss={self.gan_loss!r}, lr={self.lr:g}, "
                f"lr_discriminator={self.lr_discriminator:g}, betas={self.betas}, "
                f"num_critic={self.num_critic}, r1_weight={self.r1_weight:g}, "
                f"ema_decay={self.ema_decay:g})")

    # ------------------------------------------------------------------------ protocol
    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        """Two Adams (generator, discriminator) and their schedules. A model that was never
        trained first redraws its networks from ``seed`` (global random state restored) and
        copies the generator into its moving average."""
        if not model.is_fitted:
            model.reset_networks(seed)
        model.train()
        groups = model.parameter_groups()
        optimizers = {
            "generator": _adam(groups["generator"], lr=self.lr, betas=self.betas),
            "discriminator": _adam(groups["discriminator"], lr=self.lr_discriminator,
                                   betas=self.betas)}
        gamma = self.lr_decay ** (1.0 / self.total_steps) if self.lr_decay < 1 else 1.0
        schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
                      for k, opt in optimizers.items()}
        extra = {"g_loss": torch.tensor(math.nan, dtype=torch.float64),
                 "g_updates": torch.zeros((), dtype=torch.float64)}
        return TrainState(params={k: list(v) for k, v in groups.items()},
                          optimizers=optimizers, schedulers=schedulers, extra=extra)

    def _fake(self, model: Any, n: int, cond: tuple[torch.Tensor, ...], x: torch.Tensor):
        z = torch.randn(n, model.latent_dim, dtype=x.dtype, device=x.device)
        return model.generator(z, *cond)

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        """One discriminator update, and a generator update every ``num_critic`` steps."""
        x = model._flat(batch.data)
        cond = model._conditions(batch.kwargs, x)
        k = model.pack
        n = (x.shape[0] // k) * k
        if n == 0:
            raise bad_value("batch_size", f"at least pack={k} rows per minibatch (the "
                            "discriminator judges pack samples at once)", x.shape[0])
        x, cond = x[:n], tuple(c[:n] for c in cond)
        disc = model.discriminator
        packed_cond = tuple(pack(c, k) for c in cond)
        # ---- discriminator
        with torch.no_grad():
            fake = self._fake(model, n, cond, x)
        real_in, fake_in = pack(x, k), pack(fake, k)
        if self.r1_weight > 0:
            real_in = real_in.detach().requires_grad_(True)
        out_real = disc(real_in, *packed_cond)
        out_fake = disc(fake_in, *packed_cond)
        d_loss = discriminator_loss(self.gan_loss, out_real, out_fake)
        total = d_loss
        if self.gan_loss == "wgan-gp" and self.gp_weight > 0:
            total = total + self.gp_weight * gradient_penalty(
                lambda v: disc(v, *packed_cond), real_in.detach(), fake_in)
        if self.r1_weight > 0:
            total = total + 0.5 * self.r1_weight * r1_penalty(out_real, real_in)
        total.backward()
        d_norm = guarded_update(state.optimizers["discriminator"], state.params["discriminator"],
                                self.clip_norm)
        norm = d_norm.double().square()
        # ---- generator
        if (state.step + 1) % self.num_critic == 0:
            for p in state.params["discriminator"]:
                p.requires_grad_(False)
            try:
                fake = self._fake(model, n, cond, x)
                g_loss = generator_loss(self.gan_loss, disc(pack(fake, k), *packed_cond))
                penalty = getattr(model, "generator_penalty", None)
                (g_loss if penalty is None else g_loss + penalty(*cond)).backward()
            finally:
                for p in state.params["discriminator"]:
                    p.requires_grad_(True)
            g_norm = guarded_update(state.optimizers["generator"], state.params["generator"],
                                    self.clip_norm)
            norm = norm + g_norm.double().square()
            state.extra["g_loss"] = g_loss.detach().double().cpu()
            if bool(torch.isfinite(g_norm)):
                self._update_ema(model, state)
        if self.lr_decay < 1:
            for sched in state.schedulers.values():
                sched.step()
        if state.step == 0:
            model.mark_fitted()
        if self.total_steps is not None and state.step + 1 == self.total_steps:
            self.refresh_ema_statistics(model, cond)
            model.eval()
            rows = self._validation if self._validation is not None else (x, cond)
            model._quick_calibrate(*rows)
            model.train()
        return {"loss": d_loss.detach(), "grad_norm": norm.sqrt(), "d_loss": d_loss.detach(),
                "g_loss": state.extra["g_loss"], "d_real": out_real.detach().mean(),
                "d_fake": out_fake.detach().mean()}

    def _update_ema(self, model: Any, state: TrainState) -> None:
        u = float(state.extra["g_updates"])
        state.extra["g_updates"] = state.extra["g_updates"] + 1
        decay = min(self.ema_decay, (1 + u) / (10 + u))
        with torch.no_grad():
            avgs = list(model.generator_ema.parameters())
            params = list(model.generator.parameters())
            if len(avgs) != len(params):
                raise ValueError("generator_ema must have the generator's parameters")
            if decay > 0:
                torch._foreach_lerp_(avgs, params, 1 - decay)  # one fused update
            else:
                torch._foreach_copy_(avgs, params)
            for avg, b in zip(model.generator_ema.buffers(), model.generator.buffers(),
                              strict=True):
                avg.copy_(b)

    @staticmethod
    def refresh_ema_statistics(model: Any, cond: tuple[torch.Tensor, ...] = (), *,
                               num_samples: int = 4096, batch_size: int = 512) -> None:
        """Re-estimate the batch-norm statistics of ``model.generator_ema`` for its own
        (averaged) weights: running means and variances over ``num_samples`` latent draws
        (seed 0, the global random state restored), ``batch_size`` at a time, as
        stochastic weight averaging does (Izmailov et al. 2018). The statistics the
        generator itself ran up belong to its current weights, not to their average: copied
        to the average they put its eval-mode samples off the modes. Nothing happens for a
        generator without batch norm. ``cond``: condition rows, cycled over the draws."""
        norms = [m for m in model.generator_ema.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        ema = model.generator_ema
        ref = next(ema.parameters())
        was_training = ema.training
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
        try:
            ema.train()
            with torch.no_grad(), seeded(0):
                for start in range(0, num_samples, batch_size):
                    n = min(batch_size, num_samples - start)
                    z = torch.randn(n, model.latent_dim, dtype=ref.dtype, device=ref.device)
                    rows = torch.arange(start, start + n, device=ref.device)
                    ema(z, *(c[rows % c.shape[0]] for c in cond))
        finally:
            for m, mom in zip(norms, momenta, strict=True):
                m.momentum = mom
            ema.train(was_training)

    def evaluate(self, model: Any, state: TrainState | None, data: Any) -> dict[str, float]:
        """``val_frechet``: the Fréchet distance between 2,000 generated samples (seed 0) and
        ``data`` in data space (module docstring). The data are kept, so the observation
        scale of ``log_prob`` is chosen on them after the last step (else on the last
        minibatch)."""
        kwargs: dict[str, Any] = {}
        if isinstance(data, Batch):
            data, kwargs = data.data, data.kwargs
        x = model._flat(torch.as_tensor(data).to(model.device))
        self._validation = (x, model._conditions(kwargs, x))
        self.refresh_ema_statistics(model, self._validation[1])
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), seeded(0):
                n = min(2000, max(x.shape[0], 2 * x.shape[1] + 2))
                cond = model._conditions(kwargs, x)
                if cond:
                    idx = torch.arange(n, device=x.device) % x.shape[0]
                    cond = tuple(c[idx] for c in cond)
                z = torch.randn(n, model.latent_dim, dtype=x.dtype, device=x.device)
                fake = model.generator_ema(z, *cond)
            value = frechet_distance(fake, x)
        finally:
            model.train(was_training)
        return {"val_frechet": value}
