"""Ctrl-C during a fit: finish the step in progress, then stop cleanly.

While a fit runs, the first SIGINT (Ctrl-C in a terminal, "interrupt kernel" in a notebook)
only sets a flag: the loop finishes its current step or EM iteration, so no parameter is left
half-updated, and returns a ``Fit`` marked as interrupted (:attr:`ppgen.Fit.interrupted`).
A second Ctrl-C raises ``KeyboardInterrupt`` at once, as usual. Outside the main thread, or
when the program installed its own SIGINT handler, nothing is changed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Interrupt", "deferred_interrupt"]


class Interrupt:
    """Whether Ctrl-C was pressed while :func:`deferred_interrupt` was active."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    flag = Interrupt()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield flag
        return
    previous: Any = signal.default_int_handler

    def handler(signum: int, frame: Any) -> None:
        flag.requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
