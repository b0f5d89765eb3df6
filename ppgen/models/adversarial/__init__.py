"""Adversarial models: the GAN with its two-player objective (non-saturating minimax,
WGAN-GP, hinge; R1; PacGAN packing; spectral normalisation; a moving average of the
generator), StackGAN's two stages, latent search for imputation and reconstruction, and
AIS log-likelihoods."""

from .conditional import ConditionalGAN, ProjectionDiscriminator
from .dcgan import DCGAN, FCCGAN
from .gan import GAN
from .losses import LOSSES
from .networks import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from .objective import AdversarialObjective
from .stackgan import StackGAN, StagedAdversarialObjective

__all__ = ["GAN", "DCGAN", "FCCGAN", "ConditionalGAN", "ProjectionDiscriminator", "StackGAN",
           "StagedAdversarialObjective", "AdversarialObjective", "MLPGenerator",
           "MLPDiscriminator", "ConvGenerator", "ConvDiscriminator", "LOSSES"]
