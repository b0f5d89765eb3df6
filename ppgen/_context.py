"""The one context every fit and every diagnostic runs in: seeded RNGs, an empty Pyro param
store, module-local PyroModule parameters, and Pyro's argument checks as configured; the
user's RNG states and param store are put back afterwards.

It sits below :mod:`ppgen.inference` and :mod:`ppgen.diagnostics`, which both use it.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyro
from pyro.nn import PyroModule

from ._random import seeded

__all__ = ["isolated", "prepare_modules", "VALIDATE"]

#: Pyro's distribution argument checks cost 5x on small models; tests switch them on with
#: the environment variable PPGEN_VALIDATE=1.
VALIDATE = os.environ.get("PPGEN_VALIDATE", "0") == "1"


def _reachable_modules(obj: Any, depth: int = 2, seen: set[int] | None = None
                       ) -> Iterator[PyroModule]:
    """The PyroModules a model reaches: the model itself, a bound method's module, a
    partial's function and arguments, and the modules a function names (closure cells and
    globals), following called functions ``depth`` levels deep."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, PyroModule):
        yield obj
        return
    if isinstance(obj, functools.partial):
        for value in (obj.func, *obj.args, *obj.keywords.values()):
            yield from _reachable_modules(value, depth, seen)
        return
    owner = getattr(obj, "__self__", None)
    if owner is not None and inspect.ismethod(obj):
        yield from _reachable_modules(owner, depth, seen)
        obj = obj.__func__
    if not inspect.isfunction(obj) or depth < 0:
        return
    try:
        names = inspect.getclosurevars(obj)
    except (TypeError, ValueError):  # a builtin or an unusual code object
        return
    for value in (*names.nonlocals.values(), *names.globals.values()):
        if isinstance(value, PyroModule) or inspect.isfunction(value) or \
                isinstance(value, functools.partial):
            yield from _reachable_modules(value, depth - 1, seen)


def prepare_modules(model: Any) -> None:
    """Make the PyroModules a model reaches work with module-local parameters.

    Pyro prepares a module's shared call context for ``module_local_params`` only when the
    setting is on at construction; a module built the ordinary way (setting off) raises
    ``AttributeError: '_Context' object has no attribute 'param_state'`` on its first call
    under the setting. Giving the context the empty local parameter state that construction
    would have given it is what building the module under the setting does; its own
    parameters (``PyroParam``, ``nn.Parameter``) stay where they are, on the module.
    """
    for module in _reachable_modules(model):
        for sub in module.modules():
            context = getattr(sub, "_pyro_context", None)
            if context is not None and not hasattr(context, "param_state"):
                context.param_state = {"params": {}, "constraints": {}}


@contextmanager
def isolated(seed: int, model: Any = None) -> Iterator[None]:
    """Seeded RNGs, an empty global param store and module-local PyroModule parameters for
    the block; the user's RNG states and param store are put back afterwards.

    ``model``: the PyroModules it reaches are prepared for module-local parameters
    (:func:`prepare_modules`), however they were built.
    """
    if model is not None:
        prepare_modules(model)
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
