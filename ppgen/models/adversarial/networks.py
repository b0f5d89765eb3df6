"""Networks of the adversarial family: multilayer perceptrons for tabular and 2-D data.

The discriminator returns its logit and the features of its last hidden layer (AnoGAN's
feature residual uses them); it sees ``pack`` data at once (PacGAN) and can have spectral
normalisation on every linear layer (Miyato et al. 2018).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

__all__ = ["MLPGenerator", "MLPDiscriminator", "OUTPUTS", "Output"]

Output = Literal["linear", "sigmoid", "tanh"]
OUTPUTS: tuple[str, ...] = ("linear", "sigmoid", "tanh")


def _concat(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)


class MLPGenerator(nn.Module):
    """z (..., L) [+ conditions] -> x (..., D): ReLU hidden layers, then ``output``."""

    def __init__(self, in_features: int, hidden_dims: tuple[int, ...], out_features: int,
                 output: str = "linear") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(_concat(inputs))


class MLPDiscriminator(nn.Module):
    """Packed data (B, pack * D) [+ conditions] -> logits (B,); LeakyReLU(0.2) hidden layers.

    ``features(x)`` returns the last hidden layer's activations (B, H)."""

    def __init__(self, in_features: int, hidden_dims: tuple[int, ...], *,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        wrap = _sn if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_dims:
            layers += [wrap(nn.Linear(width, h)), nn.LeakyReLU(0.2)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(width, 1))

    def features(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.body(_concat(inputs))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(*inputs)).squeeze(-1)
