"""Hidden Markov models: the forward-backward ops, the emission distributions, the model."""

from .emissions import Emission, make_emission
from .hmm import HiddenMarkovModel

__all__ = ["HiddenMarkovModel", "Emission", "make_emission"]
