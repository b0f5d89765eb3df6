"""Latent-variable models with an amortized guide: the VAE and the conditional VAE, their
networks, likelihoods, training objectives (ELBO, IWAE, DReG) and imputation samplers."""

from .networks import MLP, Decoder, Encoder
from .objectives import VAEObjective, gaussian_kl
from .vae import VAE, ConditionalVAE

__all__ = ["VAE", "ConditionalVAE", "VAEObjective", "Encoder", "Decoder", "MLP",
           "gaussian_kl"]
