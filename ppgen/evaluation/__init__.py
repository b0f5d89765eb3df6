"""Evaluation of fitted generative models on one scale, one module per topic.

- :mod:`ppgen.evaluation.topics`: held-out document completion, perplexity and NPMI
  coherence for anything that ends in a topic-word matrix.
"""

from .topics import document_completion, npmi_coherence, perplexity, split_documents

__all__ = ["split_documents", "document_completion", "perplexity", "npmi_coherence"]
