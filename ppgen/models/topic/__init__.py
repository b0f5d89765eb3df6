"""Topic models: LDA and ProdLDA, their shared base and the corpus operations."""

from .base import BagOfWords, TopicModel
from .lda import LDA
from .prodlda import ProdLDA

__all__ = ["LDA", "ProdLDA", "TopicModel", "BagOfWords"]
