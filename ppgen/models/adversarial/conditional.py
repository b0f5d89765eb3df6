"""The conditional GAN (Mirza & Osindero 2014): the one-hot label y conditions both players,
g(z, y) and D(x, y); optionally with a projection discriminator (Miyato & Koyama 2018),
D(x, y) = psi(phi(x)) + <V y, phi(x)>, instead of feeding y to D's input."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..._validation import bad_type, bad_value, check_positive_int, one_hot_labels
from ..base import register
from .gan import GAN
from .networks import MLPDiscriminator, MLPGenerator, Output, _sn

__all__ = ["ConditionalGAN", "ProjectionDiscriminator"]


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = psi(phi(x)) + <V y, phi(x)> over packed rows: x (B, pack*D), y one-hot
    (B, pack*C); phi the MLP body, V a linear map without bias."""

    def __init__(self, in_features: int, cond_features: int, hidden_dims: tuple[int, ...], *,
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.mlp = MLPDiscriminator(in_features, hidden_dims, spectral_norm=spectral_norm)
        width = hidden_dims[-1] if hidden_dims else in_features
        embed = nn.Linear(cond_features, width, bias=False)
        self.embed = _sn(embed) if spectral_norm else embed

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.mlp.features(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self.mlp.features(x)
        return self.mlp.head(phi).squeeze(-1) + (self.embed(y) * phi).sum(-1)


@register("cgan")
class ConditionalGAN(GAN):
    """Conditional GAN with MLP players: x = g(z, y), D(x, y).

    Parameters
    ----------
    data_shape : int or tuple of int
    num_classes : int
        Label values C (labels 0..C-1 or one-hot rows).
    latent_dim, hidden_dims, discriminator_dims, pack, spectral_norm, output, batch_norm
        As for :class:`~ppgen.GAN`.
    projection : bool
        Projection discriminator (Miyato & Koyama 2018) instead of concatenating the label
        to the discriminator's input.

    Notes
    -----
    Labels are a model keyword argument: ``fit(cgan, x, "svi", model_kwargs={"labels":
    y})``, ``cgan.sample(n, labels=3)``, ``cgan.log_prob(x, labels=y)`` (log p(x | y)),
    ``cgan.impute(x, labels=y)``.

    Examples
    --------
    >>> import torch, ppgen
    >>> x, y = ppgen.datasets.load_digits()
    >>> cgan = ppgen.ConditionalGAN(64, 10, latent_dim=4, hidden_dims=(32,), pack=2)
    >>> fit = ppgen.fit(cgan, x[:200], "svi", model_kwargs={"labels": y[:200]}, num_steps=5,
    ...                 batch_size=50, tol=0, progress=False)
    >>> cgan.sample(4, labels=torch.tensor([0, 1, 2, 3]), seed=0).shape
    torch.Size([4, 64])
    """

    data_kwargs = ("labels",)

    def __init__(self, data_shape: int | tuple[int, ...], num_classes: int, *,
                 latent_dim: int = 8, hidden_dims: tuple[int, ...] = (128, 128),
                 discriminator_dims: tuple[int, ...] | None = None, pack: int = 4,
                 spectral_norm: bool = False, output: Output = "linear",
                 projection: bool = False, batch_norm: bool = False) -> None:
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        if not isinstance(projection, bool):
            raise bad_type("projection", "True or False", repr(projection))
        self.projection = projection
        super().__init__(data_shape, latent_dim=latent_dim, hidden_dims=hidden_dims,
                         discriminator_dims=discriminator_dims, pack=pack,
                         spectral_norm=spectral_norm, output=output, batch_norm=batch_norm)

    def _num_cond_features(self) -> int:
        return self.num_classes

    def _build(self) -> None:
        c = self.num_classes
        self.generator = MLPGenerator(self.latent_dim + c, self.hidden_dims,
                                      self.num_features, self.output,
                                      batch_norm=self.batch_norm)
        if self.projection:
            self.discriminator = ProjectionDiscriminator(
                self.pack * self.num_features, self.pack * c, self.discriminator_dims,
                spectral_norm=self.spectral_norm)
        else:
            self.discriminator = MLPDiscriminator(self.pack * (self.num_features + c),
                                                  self.discriminator_dims,
                                                  spectral_norm=self.spectral_norm)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        return {"data_shape": config.pop("data_shape"), "num_classes": self.num_classes,
                **config, "projection": self.projection}

    # ------------------------------------------------------------------------ labels
    def check_labels(self, labels: Any, num_data: int, *, arg: str = "labels") -> torch.Tensor:
        """Class indices (N,) in 0..C-1 or one-hot rows (N, C) -> one-hot (N, C) in the
        model's dtype and device."""
        return one_hot_labels(labels, self.num_classes, num_data, arg=arg, dtype=self.dtype,
                              device=self.device)

    def prepare_inputs(self, data: Any, model_kwargs: dict[str, Any]):
        """Validate the data and ``labels`` (returned one-hot (N, C))."""
        x = self.prepare(data)
        kwargs = dict(model_kwargs)
        labels = kwargs.pop("labels", None)
        if kwargs:
            raise bad_type("model_kwargs", "only 'labels'", ", ".join(sorted(kwargs)))
        return x, {"labels": self.check_labels(labels, len(x))}

    def _conditions(self, kwargs: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        labels = kwargs.get("labels")
        if labels is None:
            raise bad_value("labels", "the labels of the minibatch (model keyword argument "
                            "'labels')", "none", "Pass model_kwargs={'labels': y} to fit.")
        if labels.dim() == 1:
            labels = F.one_hot(labels.long(), self.num_classes)
        return (labels.to(x.dtype),)

    def _check_kwargs(self, kwargs: dict[str, Any], n: int) -> tuple[torch.Tensor, ...]:
        kwargs = dict(kwargs)
        labels = kwargs.pop("labels", None)
        super()._check_kwargs(kwargs, n)
        return (self.check_labels(labels, n),)

    # ------------------------------------------------------------------------- Pyro
    def model(self, data: torch.Tensor | None = None, *, labels: Any = None,
              num_data: int | None = None) -> torch.Tensor:
        """The generative process given ``labels`` (one datum per label)."""
        if labels is None:
            raise bad_value("labels", "labels (class indices or one-hot rows)", "None")
        t = torch.as_tensor(labels, device=self.device)
        onehot = F.one_hot(t.long(), self.num_classes).to(self.dtype) if t.dim() == 1 \
            else t.to(self.dtype)
        return self._model(data, (onehot,), onehot.shape[0] if data is None else None)

    # ------------------------------------------------------------------ applications
    def sample(self, num_samples: int, *, labels: Any = None,
               seed: int | None = None) -> torch.Tensor:
        """Generate data of the given classes: z ~ N(0, I), x = g(z, y).

        Parameters
        ----------
        num_samples : int
        labels : int, class indices (num_samples,) or one-hot rows (num_samples, C)
            One int gives every draw that class.
        seed : int, optional

        Returns
        -------
        Tensor of shape (num_samples, *data_shape)
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.full((num_samples,), labels)
        return self._sample(num_samples, (self.check_labels(labels, num_samples),), seed)
