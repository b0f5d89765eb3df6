"""Generative model families; each is a Pyro model/guide pair (see :mod:`ppgen.models.base`)."""

from .adversarial import DCGAN, FCCGAN, GAN, ConditionalGAN, StackGAN
from .base import MODEL_REGISTRY, GenerativeModel, get_model_class, register
from .energy import DBM, DBN, RBM
from .latent import VAE, ConditionalVAE
from .mixture import GaussianMixture
from .sequence import HiddenMarkovModel
from .topic import LDA, ProdLDA

__all__ = ["GenerativeModel", "GaussianMixture", "HiddenMarkovModel", "LDA", "ProdLDA",
           "VAE", "ConditionalVAE", "GAN", "DCGAN", "FCCGAN",
           "ConditionalGAN", "StackGAN", "RBM", "DBN", "DBM",
           "MODEL_REGISTRY", "get_model_class", "register"]
