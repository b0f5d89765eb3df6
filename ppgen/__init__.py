"""ppgen: classic generative models as Pyro model/guide pairs, fitted by one inference layer.

>>> import ppgen
>>> x = ppgen.datasets.load_old_faithful()
>>> gmm = ppgen.GaussianMixture(num_components=2)
>>> fit = ppgen.fit(gmm, x, method="em", seed=0, progress=False)
"""

from . import datasets, evaluation
from ._distributed import DistributedError, single_process
from ._validation import NotFittedError, NotSupportedError
from .inference import ConvergenceWarning, Diagnostic, Fit, PointEstimateWarning, fit
from .io import load, save
from .models import (
    DBM,
    DBN,
    DCGAN,
    FCCGAN,
    GAN,
    LDA,
    RBM,
    VAE,
    ConditionalGAN,
    ConditionalVAE,
    GaussianMixture,
    GenerativeModel,
    HiddenMarkovModel,
    ProdLDA,
    StackGAN,
)

__version__ = "0.1.0"


def compare(fits, **kwargs):
    """Rank fits by PSIS-LOO (see :func:`ppgen.diagnostics.compare`)."""
    from .diagnostics import compare as _compare

    return _compare(fits, **kwargs)


def loo(fit, **kwargs):
    """PSIS-LOO of one fit; refuses point estimates (see :func:`ppgen.diagnostics.loo`)."""
    from .diagnostics import loo as _loo

    return _loo(fit, **kwargs)


__all__ = ["fit", "Fit", "Diagnostic", "ConvergenceWarning", "PointEstimateWarning",
           "NotFittedError", "NotSupportedError", "DistributedError", "single_process",
           "compare", "loo", "save", "load",
           "GaussianMixture", "HiddenMarkovModel", "LDA", "ProdLDA", "VAE", "ConditionalVAE",
           "GAN", "DCGAN", "FCCGAN", "ConditionalGAN", "StackGAN",
           "RBM", "DBN", "DBM",
           "GenerativeModel", "datasets", "evaluation", "__version__"]
