"""Held-out log-likelihood of generators (GANs, decoders) in nats: annealed importance
sampling under a Gaussian observation model (Wu, Burda, Salakhutdinov & Grosse 2017), with
the observation scale chosen on validation data. The implementation lives in
:mod:`ppgen._ais` (below the model families, so a GAN's ``log_prob`` uses it); this is its
public home. See :func:`ais_log_prob` and :func:`choose_observation_scale`.
"""

from .._ais import ais_log_prob, choose_observation_scale, sigmoid_schedule

__all__ = ["ais_log_prob", "choose_observation_scale", "sigmoid_schedule"]
