"""Evaluation of fitted generative models on one scale, one module per topic.

- :mod:`ppgen.evaluation.topics`: held-out document completion, perplexity and NPMI
  coherence for anything that ends in a topic-word matrix.
- :mod:`ppgen.evaluation.likelihood`: importance-sampled log-likelihood (the IWAE bound) for
  any model with a proposal q(z | x) and a joint density p(x, z).
- :mod:`ppgen.evaluation.generator_likelihood`: annealed importance sampling of a generator's
  log-likelihood under a Gaussian observation model (Wu et al. 2017).
- :mod:`ppgen.evaluation.samples`: sample metrics for any sampler (2-D mixture modes,
  high-quality samples, reverse KL; the Fréchet distance).
- :mod:`ppgen.evaluation.images`: digit-image metrics from a locally trained classifier
  (Fréchet distance in its features, class coverage and KL, Stacked MNIST modes).
"""

from .generator_likelihood import ais_log_prob, choose_observation_scale
from .images import digit_classifier, image_metrics, stacked_mnist_metrics
from .likelihood import importance_log_prob
from .samples import MixtureMetrics, frechet_distance, mixture_metrics
from .topics import document_completion, npmi_coherence, perplexity, split_documents

__all__ = ["importance_log_prob", "ais_log_prob", "choose_observation_scale",
           "mixture_metrics", "MixtureMetrics", "frechet_distance", "split_documents",
           "document_completion", "perplexity", "npmi_coherence", "digit_classifier",
           "image_metrics", "stacked_mnist_metrics"]
