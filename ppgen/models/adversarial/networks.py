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

__all__ = ["MLPGenerator", "MLPDiscriminator", "ConvGenerator", "ConvDiscriminator", "OUTPUTS",
           "Output"]

Output = Literal["linear", "sigmoid", "tanh"]
OUTPUTS: tuple[str, ...] = ("linear", "sigmoid", "tanh")


def _concat(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)


class MLPGenerator(nn.Module):
    """z (..., L) [+ conditions] -> x (..., D): ReLU hidden layers, then ``output``.

    ``batch_norm`` puts batch normalisation before each hidden ReLU (the generators of the
    VEEGAN and PacGAN 2-D experiments)."""

    def __init__(self, in_features: int, hidden_dims: tuple[int, ...], out_features: int,
                 output: str = "linear", *, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_dims:
            layers += [nn.Linear(width, h), *([nn.BatchNorm1d(h)] if batch_norm else []),
                       nn.ReLU()]
            width = h
        self.batch_norm = batch_norm
        layers.append(nn.Linear(width, out_features))
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        z = _concat(inputs)
        if not self.batch_norm or z.dim() == 2:
            return self.net(z)
        out = self.net(z.reshape(-1, z.shape[-1]))  # BatchNorm1d wants (B, F)
        return out.reshape(*z.shape[:-1], out.shape[-1])


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


def _up_layers(size: int) -> int:
    """Stride-2 stages between the base grid and an image side of ``size``: 3 for sides
    divisible by 8 from 32 on (4x4 base for 32x32), else 2 (7x7 base for 28x28)."""
    return 3 if size % 8 == 0 and size >= 32 else 2


class ConvGenerator(nn.Module):
    """z (B, L) [+ conditions] -> images flattened (B, C*H*W), as DCGAN (Radford et al. 2016):
    a projection to a (width * 2^(n-1), H / 2^n, W / 2^n) grid, then n stride-2 transposed
    convolutions (kernel 4) with batch norm and ReLU, the last to C channels and ``output``.
    ``fc_dims`` puts fully connected ReLU layers before the projection (FCC-GAN, Barua et
    al. 2019)."""

    def __init__(self, in_features: int, image: tuple[int, int, int], width: int,
                 output: str, fc_dims: tuple[int, ...] = ()) -> None:
        super().__init__()
        c, h, w = image
        n = _up_layers(h)
        self.base = (width * 2 ** (n - 1), h // 2 ** n, w // 2 ** n)
        layers: list[nn.Module] = []
        feat = in_features
        for d in fc_dims:
            layers += [nn.Linear(feat, d), nn.ReLU()]
            feat = d
        layers += [nn.Linear(feat, self.base[0] * self.base[1] * self.base[2]),
                   nn.Unflatten(1, self.base), nn.BatchNorm2d(self.base[0]), nn.ReLU()]
        ch = self.base[0]
        for i in range(n):
            last = i == n - 1
            out_ch = c if last else ch // 2
            layers.append(nn.ConvTranspose2d(ch, out_ch, 4, 2, 1))
            if not last:
                layers += [nn.BatchNorm2d(out_ch), nn.ReLU()]
            ch = out_ch
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output == "tanh":
            layers.append(nn.Tanh())
        layers.append(nn.Flatten(1))
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        z = _concat(inputs)
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, out.shape[-1])


def strided_convs(in_channels: int, width: int, num: int, *, spectral_norm: bool = False
                  ) -> tuple[list[nn.Module], int]:
    """A discriminator's downsampling stack: ``num`` stride-2 convolutions (kernel 4, width *
    2^i channels) with LeakyReLU 0.2, batch norm after all but the first (spectral
    normalisation of every convolution instead, with ``spectral_norm``). Returns the layers
    and the channels they end with."""
    wrap = _sn if spectral_norm else (lambda m: m)
    layers: list[nn.Module] = []
    ch = in_channels
    for i in range(num):
        out = width * 2 ** i
        layers.append(wrap(nn.Conv2d(ch, out, 4, 2, 1)))
        if i > 0 and not spectral_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.LeakyReLU(0.2))
        ch = out
    return layers, ch


class ConvDiscriminator(nn.Module):
    """Packed flattened images (B, pack*C*H*W) -> logits (B,), as DCGAN: n stride-2
    convolutions (kernel 4) with LeakyReLU 0.2 (batch norm after all but the first, or
    spectral normalisation instead), then a linear head. The ``pack`` images lie side by side
    along the channels. ``fc_dims`` puts fully connected LeakyReLU layers after the
    convolutions (FCC-GAN). ``features(x)`` is the last hidden layer (B, F)."""

    def __init__(self, image: tuple[int, int, int], pack: int, width: int, *,
                 spectral_norm: bool = False, fc_dims: tuple[int, ...] = ()) -> None:
        super().__init__()
        c, h, w = image
        n = _up_layers(h)
        wrap = _sn if spectral_norm else (lambda m: m)
        self.shape = (pack * c, h, w)
        convs, ch = strided_convs(pack * c, width, n, spectral_norm=spectral_norm)
        layers: list[nn.Module] = [nn.Unflatten(1, self.shape), *convs, nn.Flatten(1)]
        feat = ch * (h // 2 ** n) * (w // 2 ** n)
        for d in fc_dims:
            layers += [wrap(nn.Linear(feat, d)), nn.LeakyReLU(0.2)]
            feat = d
        self.body = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(feat, 1))

    def features(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.body(_concat(inputs))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(*inputs)).squeeze(-1)
