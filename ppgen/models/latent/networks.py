"""The default encoder and decoder networks of the VAE family: multilayer perceptrons.

Both concatenate their inputs along the last axis (broadcasting the leading axes), so the same
classes serve the VAE (``encoder(x)``, ``decoder(z)``) and the conditional VAE
(``encoder(x, y)``, ``decoder(z, y)`` with one-hot labels y), and a decoder takes latent draws
with leading particle axes, z of shape (S, B, L), against labels of shape (B, C).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["MLP", "Encoder", "Decoder", "ACTIVATIONS"]

Activation = Literal["relu", "tanh", "softplus", "elu", "gelu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh,
                                            "softplus": nn.Softplus, "elu": nn.ELU,
                                            "gelu": nn.GELU}
#: Floor of the encoder's standard deviations (keeps log q finite in float32).
MIN_SCALE = 1e-4


def concat(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenate along the last axis after broadcasting the leading axes."""
    if len(inputs) == 1:
        return inputs[0]
    lead = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
    return torch.cat([t.expand(*lead, t.shape[-1]) for t in inputs], -1)


class MLP(nn.Module):
    """Linear layers with an activation between them (none after the last).

    Parameters
    ----------
    in_features : int
    hidden_dims : tuple of int
        Widths of the hidden layers (empty: one linear map).
    out_features : int
    activation : {"relu", "tanh", "softplus", "elu", "gelu"}
    """

    def __init__(self, in_features: int, hidden_dims: tuple[int, ...], out_features: int,
                 activation: Activation = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_dims:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs : Tensors of shape (..., F_i) -> Tensor of shape (..., out_features)."""
        return self.net(concat(inputs))


class Encoder(nn.Module):
    """q(z | x) = Normal(loc, diag(scale^2)): an MLP from the flattened datum (and labels) to
    2 L numbers, the means and softplus(.) + 1e-4 the standard deviations."""

    def __init__(self, in_features: int, hidden_dims: tuple[int, ...], latent_dim: int,
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.mlp = MLP(in_features, hidden_dims, 2 * latent_dim, activation)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x : Tensor of shape (..., D) (then labels (..., C)) -> loc, scale (..., L)."""
        out = self.mlp(*inputs)
        loc, raw = out[..., :self.latent_dim], out[..., self.latent_dim:]
        return loc, nn.functional.softplus(raw) + MIN_SCALE


class Decoder(nn.Module):
    """p(x | z): an MLP from z (and labels) to the likelihood's parameters.

    For the Bernoulli and continuous Bernoulli likelihoods it returns the logits (..., D).
    For the Gaussian likelihood it returns ``(loc, log_scale)``: the mean from the MLP and a
    learned per-feature log standard deviation (one parameter per feature, shared by all
    data, ``self.log_scale`` of shape (D,)), broadcast to the mean's shape. A per-feature
    scale is the homoscedastic choice: a per-datum scale predicted by the network lets the
    likelihood grow without bound on data with (near-)constant features.
    """

    def __init__(self, latent_features: int, hidden_dims: tuple[int, ...], out_features: int,
                 activation: Activation = "relu", *, gaussian: bool = False) -> None:
        super().__init__()
        self.mlp = MLP(latent_features, hidden_dims, out_features, activation)
        self.log_scale = nn.Parameter(torch.zeros(out_features)) if gaussian else None

    def forward(self, *inputs: torch.Tensor):
        """z : Tensor of shape (..., L) (then labels (..., C)) -> logits (..., D), or
        (loc, log_scale) both (..., D) for the Gaussian likelihood."""
        out = self.mlp(*inputs)
        if self.log_scale is None:
            return out
        return out, self.log_scale.expand_as(out)
