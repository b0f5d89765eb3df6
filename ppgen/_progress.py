"""Progress bars that appear only where someone is watching.

Every long loop of ppgen (EM, MCMC, the training loop) shows a ``tqdm.auto`` bar when asked
(``progress=True``) **and** the output is interactive: standard error is a terminal, or the
code runs inside a Jupyter kernel (where ``tqdm.auto`` draws a widget). Logs, CI runs, piped
scripts and subprocesses get no bar text at all, whatever ``progress`` says.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled", "interactive", "in_jupyter_kernel"]


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter (IPython) kernel."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # a broken or partial IPython install: not a kernel we can draw in
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def interactive() -> bool:
    """Whether a progress bar would be seen: standard error is a terminal, or this is a
    Jupyter kernel."""
    return _stderr_is_terminal() or in_jupyter_kernel()


def progress_enabled(enabled: bool) -> bool:
    """Whether to show a bar: asked for (``enabled``) and :func:`interactive`. Use it for
    bars ppgen does not draw itself (Pyro's ``MCMC(disable_progbar=...)``)."""
    return bool(enabled) and interactive()


def progress_bar(total: int | None = None, *, desc: str, enabled: bool,
                 leave: bool = False) -> tqdm:
    """A ``tqdm.auto`` bar, disabled unless ``enabled`` and the output is interactive.

    Parameters
    ----------
    total : int, optional
        Expected number of ``update(1)`` calls (None: unknown, a counter is shown).
    desc : str
        Label shown before the bar.
    enabled : bool
        The caller's wish (``progress=`` of ``ppgen.fit``); the bar is still disabled when
        standard error is not a terminal and no Jupyter kernel runs.
    leave : bool
        Keep the finished bar on screen.

    Returns
    -------
    tqdm.auto.tqdm
        Close it when done (``with progress_bar(...) as bar:`` or ``bar.close()``); a disabled
        bar accepts every call and prints nothing. ``bar.disable`` tells which it is.
    """
    return tqdm(total=total, desc=desc, leave=leave, disable=not progress_enabled(enabled))
