"""Likelihood estimators: the importance-sampled log-likelihood of any model with a proposal
(an encoder, an inference network) and a joint density, with its standard error.

The implementation lives in :mod:`ppgen._importance`, below the model families, so that a
model's ``log_prob`` can use it without models depending on evaluation; this is its public
home. See :func:`importance_log_prob` for the estimator and its error.
"""

from .._importance import importance_log_prob

__all__ = ["importance_log_prob"]
