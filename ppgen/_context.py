"""The one context every fit and every diagnostic runs in: seeded RNGs, an empty Pyro param
store, module-local PyroModule parameters, and Pyro's argument checks as configured; the
user's RNG states and param store are put back afterwards.

It sits below :mod:`ppgen.inference` and :mod:`ppgen.diagnostics`, which both use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pyro

from ._random import seeded

__all__ = ["isolated", "VALIDATE"]

#: Pyro's distribution argument checks cost 5x on small models; tests switch them on with
#: the environment variable PPGEN_VALIDATE=1.
VALIDATE = os.environ.get("PPGEN_VALIDATE", "0") == "1"


@contextmanager
def isolated(seed: int) -> Iterator[None]:
    """Seeded RNGs, an empty global param store and module-local PyroModule parameters for
    the block; the user's RNG states and param store are put back afterwards."""
    store = pyro.get_param_store()
    saved = store.get_state()
    store.clear()
    try:
        with seeded(seed), pyro.settings.context(module_local_params=True), \
                pyro.validation_enabled(VALIDATE):
            yield
    finally:
        store.clear()
        store.set_state(saved)
