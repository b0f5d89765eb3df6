"""The inference layer: ``fit`` with the EM, SVI and MCMC runners, and the ``Fit`` result.

It never imports a concrete model: models and inference meet only through
:class:`ppgen.models.GenerativeModel` and plain Pyro functions.
"""

from .api import fit
from .result import ConvergenceWarning, Diagnostic, Fit, PointEstimateWarning

__all__ = ["fit", "Fit", "Diagnostic", "ConvergenceWarning", "PointEstimateWarning"]
