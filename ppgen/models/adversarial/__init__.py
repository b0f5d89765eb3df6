"""Adversarial models: the GAN with its two-player objective (non-saturating minimax,
WGAN-GP, hinge; R1; PacGAN packing; spectral normalisation; a moving average of the
generator), latent search for imputation and reconstruction, and AIS log-likelihoods."""

from .conditional import ConditionalGAN, ProjectionDiscriminator
from .dcgan import DCGAN, FCCGAN
from .gan import GAN
from .losses import LOSSES
from .networks import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from .objective import AdversarialObjective

__all__ = ["GAN", "DCGAN", "FCCGAN", "ConditionalGAN", "ProjectionDiscriminator",
           "AdversarialObjective", "MLPGenerator", "MLPDiscriminator", "ConvGenerator",
           "ConvDiscriminator", "LOSSES"]
