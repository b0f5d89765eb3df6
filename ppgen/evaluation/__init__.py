"""Evaluation of fitted generative models on one scale, one module per topic.

- :mod:`ppgen.evaluation.topics`: held-out document completion, perplexity and NPMI
  coherence for anything that ends in a topic-word matrix.
- :mod:`ppgen.evaluation.likelihood`: importance-sampled log-likelihood (the IWAE bound) for
  any model with a proposal q(z | x) and a joint density p(x, z).
"""

from .likelihood import importance_log_prob
from .topics import document_completion, npmi_coherence, perplexity, split_documents

__all__ = ["importance_log_prob", "split_documents", "document_completion", "perplexity",
           "npmi_coherence"]
