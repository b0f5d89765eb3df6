"""Warnings that point at the user's line, not at ppgen's internals.

``warnings.warn(..., stacklevel=n)`` with a fixed ``n`` is right for one call path only: a
convergence warning raised three calls below ``ppgen.fit`` would name
``ppgen/inference/api.py`` when reached through another entry point. :func:`warn_user`
computes the level from the call stack instead: the warning is attributed to the frame that
called into ppgen from outside (the user's ``ppgen.fit(...)`` line, a test, a notebook cell).
Python 3.12's ``skip_file_prefixes`` would stop at the first frame outside ppgen, which is
Pyro's code when ppgen warns from inside a callback that Pyro runs; walking to the outermost
ppgen frame avoids that, and works on 3.10 and 3.11 too.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn_user", "user_stacklevel"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _in_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _is_internal(filename: str) -> bool:
    # CPython's warnings module skips importlib's bootstrap frames when counting stacklevel.
    return "importlib" in filename and "_bootstrap" in filename


def user_stacklevel(skip: int = 1) -> int:
    """The ``stacklevel`` for a ``warnings.warn`` call made in the frame ``skip`` levels up
    (1: the function calling this one) that names the frame outside ppgen which made the
    outermost call into ppgen. Frames are counted as ``warnings.warn`` counts them
    (importlib's bootstrap frames are skipped)."""
    frame = sys._getframe(skip)
    frames = []
    while frame is not None:
        filename = frame.f_code.co_filename
        if not frames or not _is_internal(filename):
            frames.append(filename)
        frame = frame.f_back
    outermost = max((i for i, f in enumerate(frames) if _in_package(f)), default=-1)
    return outermost + 2  # the frame just outside it, as a 1-based stacklevel


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the user's line (see the module
    docstring)."""
    warnings.warn(message, category, stacklevel=user_stacklevel())
