"""Adversarial losses, penalties and PacGAN packing, as pure torch functions.

With D the discriminator's logit (critic value for WGAN), x real, x~ = G(z) generated:

``"minimax"`` (non-saturating, Goodfellow et al. 2014)
    D: softplus(-D(x)) + softplus(D(x~));  G: softplus(-D(x~)).
``"wgan-gp"`` (Gulrajani et al. 2017)
    D: D(x~) - D(x) + lambda (||grad D(x^)|| - 1)^2 at x^ = eps x + (1 - eps) x~;  G: -D(x~).
``"hinge"`` (Lim & Ye 2017; Miyato et al. 2018)
    D: relu(1 - D(x)) + relu(1 + D(x~));  G: -D(x~).

R1 (Mescheder et al. 2018): gamma / 2 E ||grad_x D(x)||^2 on real data, added to D's loss.
Packing (PacGAN, Lin et al. 2018): the discriminator judges ``pack`` samples at once,
concatenated along the features, all real or all generated.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "Loss", "discriminator_loss", "generator_loss", "gradient_penalty",
           "r1_penalty", "pack"]

Loss = Literal["minimax", "wgan-gp", "hinge"]
LOSSES: tuple[str, ...] = ("minimax", "wgan-gp", "hinge")


def pack(x: torch.Tensor, num: int) -> torch.Tensor:
    """Rows (B, F) -> (B / num, num * F): ``num`` consecutive rows side by side (B must be
    a multiple of ``num``)."""
    return x.reshape(x.shape[0] // num, num * x.shape[1]) if num > 1 else x


def discriminator_loss(loss: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss (0-d) from its outputs on real and generated inputs."""
    if loss == "minimax":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss == "wgan-gp":
        return fake.mean() - real.mean()
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def generator_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss (0-d) from the discriminator's outputs on generated inputs."""
    if loss == "minimax":
        return F.softplus(-fake).mean()
    return -fake.mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's E (||grad critic(x^)||_2 - 1)^2 on random interpolates (0-d)."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), dtype=real.dtype,
                     device=real.device, generator=generator)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def r1_penalty(out_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over real inputs (0-d); ``real`` must require grad."""
    (grad,) = torch.autograd.grad(out_real.sum(), real, create_graph=True)
    return grad.flatten(1).square().sum(1).mean()
