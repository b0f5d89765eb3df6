"""Convolutional GANs: DCGAN (Radford, Metz & Chintala 2016) and FCC-GAN (Barua et al.
2019), the same Pyro model, objective and applications as :class:`~ppgen.GAN` with
convolutional players (:class:`~ppgen.models.adversarial.networks.ConvGenerator`,
:class:`~ppgen.models.adversarial.networks.ConvDiscriminator`)."""

from __future__ import annotations

from typing import Any, ClassVar

from ..._validation import bad_value, check_positive_int
from ..base import register
from .gan import GAN, _hidden
from .networks import ConvDiscriminator, ConvGenerator, Output

__all__ = ["DCGAN", "FCCGAN"]


def image_shape(value: Any) -> tuple[int, int, int]:
    """``image_shape`` checked and as (C, H, W): (H, W) or (C, H, W) of positive ints."""
    shape = tuple(value) if isinstance(value, tuple | list) else (value,)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                  for v in shape):
        raise bad_value("image_shape", "(H, W) or (C, H, W) with positive ints",
                        repr(value))
    return shape  # type: ignore[return-value]


def _image(value: Any) -> tuple[int, int, int]:
    c, h, w = image_shape(value)
    if h % 4 or w % 4:
        raise bad_value("image_shape", "a height and width divisible by 4 (two stride-2 "
                        "stages; 28x28 and 32x32 images fit)", repr(value),
                        "Pad or crop the images.")
    return c, h, w


@register("dcgan")
class DCGAN(GAN):
    """Deep convolutional GAN (Radford et al. 2016): strided (transposed) convolutions, batch
    norm, ReLU in the generator and LeakyReLU in the discriminator, no pooling.

    Parameters
    ----------
    image_shape : tuple of int
        (H, W) or (C, H, W); H and W divisible by 4 (two stride-2 stages from a 7x7 grid for
        28x28, three from 4x4 for 32x32).
    latent_dim : int
    width : int
        Channels of the discriminator's first convolution (doubled per stage) and of the
        generator's last hidden stage.
    pack : int
        PacGAN packing (images stacked along the channels); 1 is the plain DCGAN.
    spectral_norm : bool
        Spectral normalisation instead of batch norm in the discriminator.
    output : {"sigmoid", "tanh", "linear"}
        Pixel range: (0, 1) by default.

    Examples
    --------
    >>> import ppgen
    >>> x = ppgen.datasets.load_digits()[0][:64].reshape(64, 8, 8)
    >>> gan = ppgen.DCGAN((8, 8), latent_dim=4, width=8)
    >>> fit = ppgen.fit(gan, x, "svi", num_steps=2, batch_size=32, tol=0, progress=False)
    >>> gan.sample(3, seed=0).shape
    torch.Size([3, 8, 8])
    """

    objective_defaults: ClassVar[dict[str, Any]] = {"lr": 2e-4}
    _fc_generator: tuple[int, ...] = ()
    _fc_discriminator: tuple[int, ...] = ()

    def __init__(self, image_shape: tuple[int, ...], *, latent_dim: int = 64, width: int = 32,
                 pack: int = 1, spectral_norm: bool = False,
                 output: Output = "sigmoid") -> None:
        self.image = _image(image_shape)
        self.width = check_positive_int("width", width)
        super().__init__(tuple(image_shape), latent_dim=latent_dim, hidden_dims=(),
                         pack=pack, spectral_norm=spectral_norm, output=output)

    def _build(self) -> None:
        self.generator = ConvGenerator(self.latent_dim, self.image, self.width, self.output,
                                       self._fc_generator)
        self.discriminator = ConvDiscriminator(self.image, self.pack, self.width,
                                               spectral_norm=self.spectral_norm,
                                               fc_dims=self._fc_discriminator)

    def get_config(self) -> dict[str, Any]:
        return {"image_shape": list(self.data_shape), "latent_dim": self.latent_dim,
                "width": self.width, "pack": self.pack, "spectral_norm": self.spectral_norm,
                "output": self.output}


@register("fccgan")
class FCCGAN(DCGAN):
    """Fully connected + convolutional GAN (Barua et al. 2019): fully connected layers before
    the generator's convolutional stack and after the discriminator's.

    Parameters
    ----------
    image_shape, latent_dim, width, pack, spectral_norm, output
        As for :class:`DCGAN`.
    fc_dims : tuple of int
        Widths of the generator's fully connected layers (ReLU); the discriminator uses them
        reversed after its convolutions (LeakyReLU). Default (64, 512) as in Barua et al.'s
        MNIST generator (their discriminator: 512, 64).
    """

    def __init__(self, image_shape: tuple[int, ...], *, latent_dim: int = 64, width: int = 32,
                 fc_dims: tuple[int, ...] = (64, 512), pack: int = 1,
                 spectral_norm: bool = False, output: Output = "sigmoid") -> None:
        self.fc_dims = _hidden("fc_dims", fc_dims)
        self._fc_generator = self.fc_dims
        self._fc_discriminator = tuple(reversed(self.fc_dims))
        super().__init__(image_shape, latent_dim=latent_dim, width=width, pack=pack,
                         spectral_norm=spectral_norm, output=output)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fc_dims": list(self.fc_dims)}
