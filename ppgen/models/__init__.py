"""Generative model families; each is a Pyro model/guide pair (see :mod:`ppgen.models.base`)."""

from .base import MODEL_REGISTRY, GenerativeModel, get_model_class, register
from .gmm import GaussianMixture
from .hmm import HiddenMarkovModel
from .lda import LDA
from .prodlda import ProdLDA

__all__ = ["GenerativeModel", "GaussianMixture", "HiddenMarkovModel", "LDA", "ProdLDA",
           "MODEL_REGISTRY", "get_model_class", "register"]
