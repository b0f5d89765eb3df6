"""StackGAN (Zhang et al. 2017) with a class label in place of the text embedding: two
stacked conditional GANs, trained as the two stages of one fit.

The generator, for a label y (one-hot, C classes) and z = (u, e_1, e_2) ~ N(0, I_L) with
u the noise (``noise_dim``) and e_1, e_2 the draws of conditioning augmentation
(``cond_dim`` each), so L = ``noise_dim`` + 2 ``cond_dim``::

    c_s = mu_s(y) + sigma_s(y) * e_s                  conditioning augmentation, s = 1, 2
    x_low = G_1(u, c_1)                              stage I: the low-resolution image
    x = G_2(x_low, c_2)                              stage II: the full-resolution image

mu_s, log sigma_s^2 are linear maps of a learned label embedding (the paper's text
embedding phi_t); each stage has its own. G_1 projects (u, c_1) to a small grid and
upsamples it (nearest neighbour, 3x3 convolution, batch norm, ReLU) to the stage-I
resolution; G_2 encodes x_low by 3x3 convolutions, joins c_2 replicated over the grid,
refines by residual blocks and upsamples to full resolution (the paper's encoder also
downsamples; at the 4x4 to 16x16 stage-I grids used here it keeps the grid). The
discriminators D_1 (stage-I resolution, real images average-pooled to it) and D_2 (full
resolution) downsample by stride-2 convolutions (LeakyReLU 0.2, batch norm or spectral
normalisation), join a compressed label embedding replicated over the grid, and end in a
1x1 convolution and a linear head, as the paper's.

Training (:class:`StagedAdversarialObjective`): stage I, the first ``stage_fraction`` of the
steps, trains (G_1, D_1) on the pooled images; stage II trains (G_2, D_2) with stage I frozen
(its moving-average generator, which draws the stage-I images, in evaluation mode). Each stage
is one :class:`~ppgen.models.adversarial.AdversarialObjective` game (same losses, penalties,
optimisers and moving average) plus the KL regulariser of conditioning augmentation,
``kl_weight`` * KL(N(mu_s(y), sigma_s(y)^2) || N(0, I)) in the generator's loss. The paper
uses lambda = 1 with text embeddings; with a class label :class:`StackGAN` defaults to 0.1,
measured on the 8x8 digits (600 steps, noise 8, codes 4, width 8, lr 2e-3): the share of
samples a classifier of real digits gives their own label was 0.30-0.41 over seeds 0-4 at
lambda = 1 and 0.67-0.79 at 0.1 (chance 0.10; tests/test_stackgan.py).
``fit.history["stage"]`` records the stage of every step, ``["kl"]`` the KL term. The
discriminators have a projection term (Miyato & Koyama 2018) on top of the paper's joined
label; the paper's mismatched-label pairs in the discriminator's loss are not used.

The Pyro model is the GAN's (:class:`~ppgen.GAN`) with z as above, the stage-I image as the
deterministic site ``"x_low"`` and the full image as ``"x"``; the generator is deterministic
given (z, y), so ``log_prob`` is the same AIS estimate of log p_sigma(x | y) under a
Gaussian observation model as for the other GANs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from ..._random import resolve_seed, seeded
from ..._validation import (
    bad_type,
    bad_value,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ...training import Batch, TrainState
from ..base import register
from .conditional import ConditionalGAN
from .dcgan import image_shape as image_shape_of
from .gan import _OBJECTIVE_OPTIONS
from .networks import Output, _sn, strided_convs
from .objective import AdversarialObjective

__all__ = ["StackGAN", "StagedAdversarialObjective", "ConditioningAugmentation",
           "StageIGenerator", "StageIIGenerator", "StackGenerator",
           "ConditionalConvDiscriminator"]

_STAGED_OPTIONS = (*_OBJECTIVE_OPTIONS, "stage_fraction", "kl_weight")


def _output(layers: list[nn.Module], output: str) -> None:
    if output == "sigmoid":
        layers.append(nn.Sigmoid())
    elif output == "tanh":
        layers.append(nn.Tanh())


def _halvings(side: int, smallest: int, most: int) -> int:
    """How often ``side`` halves exactly while the half is at least ``smallest``."""
    n = 0
    while n < most and side % 2 == 0 and side // 2 >= smallest:
        side //= 2
        n += 1
    return n


def _up(ch_in: int, ch_out: int) -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch_in, ch_out, 3, 1, 1),
            nn.BatchNorm2d(ch_out), nn.ReLU()]


class ConditioningAugmentation(nn.Module):
    """c = mu(y) + sigma(y) * e from a learned embedding of the one-hot label y (B, C):
    ``embed_dim`` features, then a linear map to (mu, log sigma^2), each ``cond_dim``."""

    def __init__(self, num_classes: int, embed_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(num_classes, embed_dim, bias=False)
        self.fc = nn.Linear(embed_dim, 2 * cond_dim)
        self.cond_dim = cond_dim

    def moments(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu (B, cond_dim) and log sigma^2 (B, cond_dim)."""
        h = F.leaky_relu(self.embed(y), 0.2)
        mu, log_var = self.fc(h).chunk(2, -1)
        return mu, log_var

    def forward(self, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.moments(y)
        return mu + (0.5 * log_var).exp() * eps

    def kl(self, y: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) per row (B,)."""
        mu, log_var = self.moments(y)
        return 0.5 * (mu.square() + log_var.exp() - 1 - log_var).sum(-1)


class StageIGenerator(nn.Module):
    """(u, e_1) (B, noise_dim + cond_dim) and y (B, C) -> stage-I images flattened
    (B, C_img * s * s): a linear projection of (u, c_1) to a (width * 2^m, s / 2^m, s / 2^m)
    grid (m halvings of s down to at least 4), m upsampling blocks halving the channels, a 3x3
    convolution to the image channels and ``output``."""

    def __init__(self, noise_dim: int, num_classes: int, embed_dim: int, cond_dim: int,
                 image: tuple[int, int, int], width: int, output: str) -> None:
        super().__init__()
        c, h, w = image
        self.noise_dim = noise_dim
        self.ca = ConditioningAugmentation(num_classes, embed_dim, cond_dim)
        m = min(_halvings(h, 4, 3), _halvings(w, 4, 3))
        ch = width * 2 ** m
        base = (ch, h // 2 ** m, w // 2 ** m)
        layers: list[nn.Module] = [nn.Linear(noise_dim + cond_dim, math.prod(base)),
                                   nn.Unflatten(1, base), nn.BatchNorm2d(ch), nn.ReLU()]
        for _ in range(m):
            layers += _up(ch, ch // 2)
            ch //= 2
        layers.append(nn.Conv2d(ch, c, 3, 1, 1))
        _output(layers, output)
        layers.append(nn.Flatten(1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        u, eps = z[:, :self.noise_dim], z[:, self.noise_dim:]
        return self.net(torch.cat([u, self.ca(y, eps)], -1))


class _Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch), nn.ReLU(),
                                   nn.Conv2d(ch, ch, 3, 1, 1), nn.BatchNorm2d(ch))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h + self.block(h))


class StageIIGenerator(nn.Module):
    """Stage-I images (B, C_img * s * s), e_2 (B, cond_dim) and y (B, C) -> full images
    flattened (B, C_img * H * W), H = s * 2^k: encoder (two 3x3 convolutions), c_2
    replicated over the grid and joined by a 3x3 convolution, ``num_residual`` residual
    blocks, k upsampling blocks, a 3x3 convolution to the image channels and ``output``."""

    def __init__(self, low: tuple[int, int, int], num_up: int, num_classes: int,
                 embed_dim: int, cond_dim: int, width: int, num_residual: int,
                 output: str) -> None:
        super().__init__()
        c, s_h, s_w = low
        self.low = low
        self.ca = ConditioningAugmentation(num_classes, embed_dim, cond_dim)
        self.encoder = nn.Sequential(nn.Unflatten(1, low), nn.Conv2d(c, width, 3, 1, 1),
                                     nn.ReLU(), nn.Conv2d(width, width, 3, 1, 1),
                                     nn.BatchNorm2d(width), nn.ReLU())
        self.joint = nn.Sequential(nn.Conv2d(width + cond_dim, width, 3, 1, 1),
                                   nn.BatchNorm2d(width), nn.ReLU(),
                                   *[_Residual(width) for _ in range(num_residual)])
        layers: list[nn.Module] = []
        for _ in range(num_up):
            layers += _up(width, width)
        layers.append(nn.Conv2d(width, c, 3, 1, 1))
        _output(layers, output)
        layers.append(nn.Flatten(1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, low: torch.Tensor, eps: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.encoder(low)
        cond = self.ca(y, eps)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.decoder(self.joint(torch.cat([h, cond], 1)))


class StackGenerator(nn.Module):
    """The whole generator: z = (u, e_1, e_2) (..., L) and y (..., C) -> full images
    flattened (..., C_img * H * W); :meth:`low` gives the stage-I images."""

    def __init__(self, stage1: StageIGenerator, stage2: StageIIGenerator, split: int) -> None:
        super().__init__()
        self.stage1, self.stage2, self.split = stage1, stage2, split

    def _flat(self, z: torch.Tensor, y: torch.Tensor):
        lead = z.shape[:-1]
        y = y.expand(*lead, y.shape[-1]) if y.dim() < z.dim() else y
        return lead, z.reshape(-1, z.shape[-1]), y.reshape(-1, y.shape[-1])

    def low(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lead, z2, y2 = self._flat(z, y)
        out = self.stage1(z2[:, :self.split], y2)
        return out.reshape(*lead, out.shape[-1])

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lead, z2, y2 = self._flat(z, y)
        out = self.stage2(self.stage1(z2[:, :self.split], y2), z2[:, self.split:], y2)
        return out.reshape(*lead, out.shape[-1])


class ConditionalConvDiscriminator(nn.Module):
    """Packed flattened images (B, pack * C_img * h * w) and packed one-hot labels
    (B, pack * C) -> logits (B,), as StackGAN's: stride-2 convolutions (kernel 4, LeakyReLU
    0.2; batch norm after all but the first, or spectral normalisation) down to a grid of
    side >= 2, the label compressed to ``embed_dim`` features replicated over the grid and
    joined by a 1x1 convolution, then a linear head plus the projection term <V y, phi>
    (Miyato & Koyama 2018) of the joined features phi. ``features(x, y)`` is phi (B, F)."""

    def __init__(self, image: tuple[int, int, int], pack: int, num_classes: int, width: int,
                 embed_dim: int, *, spectral_norm: bool = False) -> None:
        super().__init__()
        c, h, w = image
        wrap = _sn if spectral_norm else (lambda m: m)
        n = min(_halvings(h, 2, 3), _halvings(w, 2, 3))
        convs, ch = strided_convs(pack * c, width, n, spectral_norm=spectral_norm)
        self.body = nn.Sequential(nn.Unflatten(1, (pack * c, h, w)), *convs)
        self.embed = wrap(nn.Linear(pack * num_classes, embed_dim))
        self.joint = wrap(nn.Conv2d(ch + embed_dim, ch, 1))
        self.grid = (h // 2 ** n, w // 2 ** n)
        feat = ch * self.grid[0] * self.grid[1]
        self.head = wrap(nn.Linear(feat, 1))
        self.project = wrap(nn.Linear(pack * num_classes, feat, bias=False))

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        e = F.leaky_relu(self.embed(y), 0.2)[:, :, None, None].expand(-1, -1, *self.grid)
        return F.leaky_relu(self.joint(torch.cat([h, e], 1)), 0.2).flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self.features(x, y)
        return self.head(phi).squeeze(-1) + (self.project(y) * phi).sum(-1)


# --------------------------------------------------------------------------- training
class _FrozenThenTrained:
    """Stage II's generator as the adversarial objective sees it: the frozen stage I
    (evaluation mode, no gradient) followed by a stage-II network, whose parameters and
    buffers alone it exposes (so the moving average pairs stage II's with its average's)."""

    def __init__(self, stage1: StageIGenerator, stage2: StageIIGenerator, split: int) -> None:
        self.stage1, self.stage2, self.split = stage1, stage2, split

    def parameters(self):
        return self.stage2.parameters()

    def buffers(self):
        return self.stage2.buffers()

    def modules(self):
        return self.stage2.modules()

    @property
    def training(self) -> bool:
        return self.stage2.training

    def train(self, mode: bool = True) -> _FrozenThenTrained:
        """Stage II's mode (stage I always runs in evaluation mode)."""
        self.stage2.train(mode)
        return self

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was = self.stage1.training
        self.stage1.eval()
        try:
            with torch.no_grad():
                low = self.stage1(z[:, :self.split], y)
        finally:
            self.stage1.train(was)
        return self.stage2(low, z[:, self.split:], y)


class _Stage:
    """One stage of a :class:`StackGAN` presented to
    :class:`~ppgen.models.adversarial.AdversarialObjective` as a GAN of its own (the
    attributes and methods that objective uses)."""

    def __init__(self, model: StackGAN, stage: int, kl_weight: float) -> None:
        self.model, self.stage, self.kl_weight = model, stage, kl_weight
        self.pack = model.pack
        self.is_fitted = True  # the staged objective starts the networks itself
        self.last_kl = math.nan
        self.full_rows: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None
        split = model.noise_dim + model.cond_dim
        if stage == 0:
            self.generator: Any = model.generator.stage1
            self.generator_ema: Any = model.generator_ema.stage1
            self.discriminator = model.discriminator_low
            self.latent_dim = split
            self.ca = model.generator.stage1.ca
        else:
            self.generator = _FrozenThenTrained(model.generator_ema.stage1,
                                                model.generator.stage2, split)
            self.generator_ema = _FrozenThenTrained(model.generator_ema.stage1,
                                                    model.generator_ema.stage2, split)
            self.discriminator = model.discriminator
            self.latent_dim = model.latent_dim
            self.ca = model.generator.stage2.ca

    @property
    def training(self) -> bool:
        return self.model.training

    @property
    def device(self) -> torch.device:
        return self.model.device

    def train(self, mode: bool = True) -> _Stage:
        self.model.train(mode)
        return self

    def eval(self) -> _Stage:
        return self.train(False)

    def mark_fitted(self) -> None:
        self.model.mark_fitted()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.generator.parameters()),
                "discriminator": list(self.discriminator.parameters())}

    def _flat(self, data: torch.Tensor) -> torch.Tensor:
        x = self.model._flat(data)
        return x if self.stage == 1 else self.model._downsample(x)

    def _conditions(self, kwargs: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model._conditions(kwargs, x)

    def generator_penalty(self, y: torch.Tensor) -> torch.Tensor:
        kl = self.ca.kl(y).mean()
        self.last_kl = float(kl.detach())
        return self.kl_weight * kl

    def _quick_calibrate(self, x: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> None:
        # The observation scale is the full model's: stage-I rows are replaced by the
        # full-resolution rows of the same minibatch.
        if x.shape[1] != self.model.num_features and self.full_rows is not None:
            x, cond = self.full_rows
        self.model._quick_calibrate(x, cond)


class StagedAdversarialObjective(AdversarialObjective):
    """StackGAN's two stages as one run of the shared loop (module docstring).

    Parameters
    ----------
    stage_fraction : float
        Share in (0, 1) of the steps given to stage I (default 0.5); the rest train stage II.
    kl_weight : float
        Weight of the conditioning-augmentation KL term in each generator's loss (1, as
        Zhang et al.; :class:`StackGAN` passes 0.1, module docstring).
    total_steps : int
        Steps of the run (the stages are split by it).
    **options
        Those of :class:`~ppgen.models.adversarial.AdversarialObjective` (``gan_loss``,
        ``lr``, ``num_critic``, ``r1_weight``, ``ema_decay``, ...), the same for both stages.

    Notes
    -----
    Each stage has its own pair of Adams (``state.optimizers["generator_1"]``,
    ``["discriminator_1"]``, ``["generator_2"]``, ``["discriminator_2"]``). The stage follows
    from the step number, so checkpoints and resume work as for the other GANs (a resumed
    run with another ``num_steps`` moves the boundary). ``step`` returns the adversarial
    objective's metrics plus ``stage`` (0 or 1) and ``kl`` (the KL term at the step's
    generator update, NaN without one). ``evaluate`` reports ``val_frechet_low`` (stage-I
    samples against the pooled validation images) and ``val_frechet`` (full samples; NaN
    during stage I, so early stopping waits for stage II).
    """

    def __init__(self, *, stage_fraction: float = 0.5, kl_weight: float = 1.0,
                 total_steps: int | None = None, **options: Any) -> None:
        super().__init__(total_steps=total_steps, **options)
        self.stage_fraction = check_positive_float("stage_fraction", stage_fraction)
        if self.stage_fraction >= 1:
            raise bad_value("stage_fraction", "a share in (0, 1) of the steps for stage I",
                            stage_fraction)
        self.kl_weight = check_nonnegative_float("kl_weight", kl_weight)
        if self.total_steps is None:
            raise bad_value("total_steps", "the number of steps of the run (the stages are "
                            "split by it)", "None")

    @property
    def stage1_steps(self) -> int:
        """Steps of stage I: round(stage_fraction * total_steps), at least 1, and at most
        total_steps - 1 when the run has two steps or more."""
        total = int(self.total_steps or 1)
        return max(1, min(total - 1, round(self.stage_fraction * total))) if total > 1 else 1

    def stage(self, step: int) -> int:
        """The stage (0: stage I, 1: stage II) trained at ``step``."""
        return 0 if step < self.stage1_steps else 1

    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        """A pair of Adams per stage; a model that was never trained first redraws its
        networks from ``seed``."""
        if not model.is_fitted:
            model.reset_networks(seed)
        self._stages = (_Stage(model, 0, self.kl_weight), _Stage(model, 1, self.kl_weight))
        state = TrainState()
        for s, view in enumerate(self._stages, 1):
            sub = super().init(view, batch, seed)
            for kind in ("generator", "discriminator"):
                state.params[f"{kind}_{s}"] = sub.params[kind]
                state.optimizers[f"{kind}_{s}"] = sub.optimizers[kind]
                state.schedulers[f"{kind}_{s}"] = sub.schedulers[kind]
            for key, value in sub.extra.items():
                state.extra[f"{key}_{s}"] = value
        return state

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        """One step of the adversarial game of the step's stage."""
        s = self.stage(state.step)
        view = self._stages[s]
        view.last_kl = math.nan
        if s == 0:
            x = model._flat(batch.data)
            view.full_rows = (x, model._conditions(batch.kwargs, x))
        keys = {k: f"{k}_{s + 1}" for k in ("generator", "discriminator")}
        sub = TrainState(params={k: state.params[v] for k, v in keys.items()},
                         optimizers={k: state.optimizers[v] for k, v in keys.items()},
                         schedulers={k: state.schedulers[v] for k, v in keys.items()},
                         extra={k: state.extra[f"{k}_{s + 1}"] for k in ("g_loss",
                                                                         "g_updates")},
                         step=state.step)
        metrics = super().step(view, sub, batch)
        for key, value in sub.extra.items():
            state.extra[f"{key}_{s + 1}"] = value
        view.full_rows = None
        return {**metrics, "stage": float(s), "kl": view.last_kl}

    def evaluate(self, model: Any, state: TrainState | None, data: Any) -> dict[str, float]:
        """``val_frechet_low`` and ``val_frechet`` (class docstring)."""
        stage = 1 if state is None else self.stage(max(state.step - 1, 0))
        views = getattr(self, "_stages", None) or (_Stage(model, 0, self.kl_weight),)
        # Evaluating re-estimates the moving average's batch-norm statistics; during stage II
        # those of the frozen stage I feed the training, so they are put back afterwards.
        frozen = [b.clone() for b in model.generator_ema.stage1.buffers()] \
            if stage == 1 and state is not None else None
        try:
            low = super().evaluate(views[0], state, data)["val_frechet"]
            full = super().evaluate(model, state, data)["val_frechet"] if stage == 1 \
                else math.nan
        finally:
            if frozen is not None:
                with torch.no_grad():
                    for b, saved in zip(model.generator_ema.stage1.buffers(), frozen,
                                        strict=True):
                        b.copy_(saved)
        kwargs: dict[str, Any] = {}
        if isinstance(data, Batch):
            data, kwargs = data.data, data.kwargs
        x = model._flat(torch.as_tensor(data).to(model.device))
        self._validation = (x, model._conditions(kwargs, x))
        return {"val_frechet": full, "val_frechet_low": low}


# ------------------------------------------------------------------------------ model
@register("stackgan")
class StackGAN(ConditionalGAN):
    """StackGAN (Zhang et al. 2017) with class labels: a stage-I GAN draws a low-resolution
    image from noise and a conditioning-augmented label embedding, a stage-II GAN refines it
    to full resolution given the label (module docstring).

    Parameters
    ----------
    image_shape : tuple of int
        (H, W) or (C, H, W) of the full-resolution images.
    num_classes : int
        Label values C (>= 2; labels 0..C-1 or one-hot rows).
    noise_dim : int
        Dimension of stage I's noise u.
    cond_dim : int
        Dimension of each stage's conditioning-augmentation code c (the paper's N_g = 128;
        small images need few).
    embed_dim : int
        Features of the learned label embedding (each stage's own, and the discriminators'
        compressed label).
    width : int
        Channels of the stage-II generator and of the discriminators' first convolution (the
        stage-I generator starts from ``width * 2^m`` and halves per upsampling block).
    low_resolution : int, optional
        Side of the stage-I images; the full sides must be it times 2^k, k >= 1. Default:
        half the height when it is even (14x14 for 28x28 MNIST, 16x16 for 32x32, 4x4 for the
        8x8 digits), refused for odd sides.
    num_residual : int
        Residual blocks of the stage-II generator (the paper uses 4 at 256x256).
    pack : int
        PacGAN packing of both discriminators (1: none, as the paper).
    spectral_norm : bool
        Spectral normalisation instead of batch norm in the discriminators.
    output : {"sigmoid", "tanh", "linear"}
        Pixel range of both stages: (0, 1) by default.

    Attributes
    ----------
    latent_dim : int
        Dimension of the latent site ``"z"``: ``noise_dim + 2 * cond_dim`` (noise, then the
        two conditioning-augmentation draws).

    Notes
    -----
    Trained by ``ppgen.fit(model, x, "svi", model_kwargs={"labels": y}, ...)`` through
    :class:`StagedAdversarialObjective` (fit options: those of the GANs plus
    ``stage_fraction``, default 0.5, and ``kl_weight``, default 0.1 here); for early
    stopping pass ``validation_data=(x_val, {"labels": y_val})``. ``sample(n, labels=...)``,
    ``log_prob(x, labels=y)`` (AIS, an estimate), ``score``, ``impute`` and ``reconstruct``
    take the labels as :class:`~ppgen.ConditionalGAN` does; ``sample_low`` draws the stage-I
    images.

    Examples
    --------
    >>> import torch, ppgen
    >>> x, y = ppgen.datasets.load_digits()
    >>> gan = ppgen.StackGAN((8, 8), 10, noise_dim=4, cond_dim=2, width=8)
    >>> fit = ppgen.fit(gan, x[:200].reshape(200, 8, 8), "svi", model_kwargs={"labels": y[:200]},
    ...                 num_steps=4, batch_size=50, tol=0, progress=False)
    >>> fit.history["stage"].tolist()
    [0.0, 0.0, 1.0, 1.0]
    >>> gan.sample(3, labels=torch.tensor([0, 1, 2]), seed=0).shape
    torch.Size([3, 8, 8])
    """

    objective_options = (*ConditionalGAN.objective_options, "stage_fraction", "kl_weight")
    #: StackGAN's own defaults for the objective: DCGAN's learning rate, and a KL weight
    #: measured on the digits (module docstring); fit options override them.
    objective_defaults: ClassVar[dict[str, Any]] = {"lr": 2e-4, "kl_weight": 0.1}

    def __init__(self, image_shape: tuple[int, ...], num_classes: int, *,
                 noise_dim: int = 16, cond_dim: int = 8, embed_dim: int = 16,
                 width: int = 32, low_resolution: int | None = None, num_residual: int = 2,
                 pack: int = 1, spectral_norm: bool = False,
                 output: Output = "sigmoid") -> None:
        self.image = image_shape_of(image_shape)
        c, h, w = self.image
        if low_resolution is None:
            if h % 2:
                raise bad_value("image_shape", "an even height (stage I draws half of it; or "
                                "pass low_resolution)", repr(image_shape))
            low_resolution = h // 2
        self.low_resolution = check_positive_int("low_resolution", low_resolution)
        k = 0
        while self.low_resolution * 2 ** k < h:
            k += 1
        if k < 1 or self.low_resolution * 2 ** k != h or self.low_resolution * 2 ** k != w:
            raise bad_value("low_resolution", f"a side s with the image sides {h}x{w} both "
                            "s * 2^k for some k >= 1 (e.g. 14 for 28x28, 4 for 8x8)",
                            low_resolution)
        self.num_up = k
        self.factor = 2 ** k
        self.low_image = (c, self.low_resolution, self.low_resolution)
        self.noise_dim = check_positive_int("noise_dim", noise_dim)
        self.cond_dim = check_positive_int("cond_dim", cond_dim)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.width = check_positive_int("width", width)
        self.num_residual = check_positive_int("num_residual", num_residual, minimum=0)
        super().__init__(tuple(image_shape), num_classes,
                         latent_dim=self.noise_dim + 2 * self.cond_dim, hidden_dims=(),
                         pack=pack, spectral_norm=spectral_norm, output=output)

    def _build(self) -> None:
        c = self.num_classes
        stage1 = StageIGenerator(self.noise_dim, c, self.embed_dim, self.cond_dim,
                                 self.low_image, self.width, self.output)
        stage2 = StageIIGenerator(self.low_image, self.num_up, c, self.embed_dim,
                                  self.cond_dim, self.width, self.num_residual, self.output)
        self.generator = StackGenerator(stage1, stage2, self.noise_dim + self.cond_dim)
        self.discriminator = ConditionalConvDiscriminator(
            self.image, self.pack, c, self.width, self.embed_dim,
            spectral_norm=self.spectral_norm)
        self.discriminator_low = ConditionalConvDiscriminator(
            self.low_image, self.pack, c, self.width, self.embed_dim,
            spectral_norm=self.spectral_norm)

    def get_config(self) -> dict[str, Any]:
        return {"image_shape": list(self.data_shape), "num_classes": self.num_classes,
                "noise_dim": self.noise_dim, "cond_dim": self.cond_dim,
                "embed_dim": self.embed_dim, "width": self.width,
                "low_resolution": self.low_resolution, "num_residual": self.num_residual,
                "pack": self.pack, "spectral_norm": self.spectral_norm, "output": self.output}

    def reset_networks(self, seed: int | None = None) -> None:
        """Redraw the generator's and both discriminators' weights from ``seed`` (global
        random state restored) and copy the generator into its moving average."""
        seed = resolve_seed(seed)
        super().reset_networks(seed)
        with seeded(seed + 1):
            for m in self.discriminator_low.modules():
                if hasattr(m, "reset_parameters") and m is not self.discriminator_low:
                    m.reset_parameters()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Both stages' players: ``generator_1`` / ``discriminator_1`` (stage I) and
        ``generator_2`` / ``discriminator_2`` (stage II), each trained by its own Adam."""
        return {"generator_1": list(self.generator.stage1.parameters()),
                "discriminator_1": list(self.discriminator_low.parameters()),
                "generator_2": list(self.generator.stage2.parameters()),
                "discriminator_2": list(self.discriminator.parameters())}

    def default_objective(self, **options: Any) -> StagedAdversarialObjective:
        """The two-stage objective (:class:`StagedAdversarialObjective`) from the fit's
        options, on top of :attr:`objective_defaults`."""
        unknown = sorted(set(options) - set(_STAGED_OPTIONS))
        if unknown:
            raise bad_type("options", "options of the staged adversarial objective among " +
                           ", ".join(_STAGED_OPTIONS), ", ".join(unknown))
        return StagedAdversarialObjective(**{**self.objective_defaults, **options})

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        """Full images flattened (N, D) -> stage-I images flattened, by average pooling."""
        img = x.reshape(x.shape[0], *self.image)
        return F.avg_pool2d(img, self.factor).flatten(1)

    # ------------------------------------------------------------------------- Pyro
    def _intermediate_sites(self, z: torch.Tensor, cond: tuple[torch.Tensor, ...]) -> None:
        """The stage-I image as the deterministic site ``x_low``."""
        low = self.generator_ema.low(z, *cond)
        pyro.deterministic("x_low", low.reshape(*low.shape[:-1], *self.low_image[
            3 - len(self.data_shape):]), event_dim=len(self.data_shape))

    # ------------------------------------------------------------------ applications
    def sample_low(self, num_samples: int, *, labels: Any = None,
                   seed: int | None = None) -> torch.Tensor:
        """The stage-I images of the draws ``sample`` makes with the same arguments.

        Returns
        -------
        Tensor of shape (num_samples, [C,] s, s)
            s = ``low_resolution`` (the channel axis as in ``image_shape``).
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.full((num_samples,), labels)
        y = self.check_labels(labels, num_samples)
        g = self._rng(seed)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z = torch.randn(num_samples, self.latent_dim, generator=g, dtype=self.dtype,
                                device=self.device)
                low = self.generator_ema.low(z, y)
        finally:
            self.train(was_training)
        return low.reshape(num_samples, *self.low_image[3 - len(self.data_shape):])
