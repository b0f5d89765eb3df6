"""Intra-op threads chosen by the size of the work.

torch splits every CPU op over ``torch.get_num_threads()`` threads (by default one per
physical core). For the small tensors of most ppgen fits (an HMM's forward recursion over
(num_sequences, num_states) slices, NUTS on a mixture of a few hundred points) the split
costs more than it saves, and when another process keeps a core busy it is far worse: the
threads of every op wait for the one that lost its core. Measured on a 2-core machine with
one core busy elsewhere (benchmarks/RESULTS.md, "Threads"): HMM EM on 1,000 sequences of
100 steps took 63.8 s on torch's default two threads against 0.41 s on one.

The rule (:func:`threads_for`): work below :data:`SMALL_WORK` elements runs on one thread;
larger work runs on torch's default count. :func:`work_threads` applies it to a block and
restores the previous setting afterwards. The size passed is the number of floating-point
elements of the block's data (``data.numel()`` for EM and MCMC; the minibatch for a training
step), a proxy for the size of its ops.

An explicit choice of the user always wins: when ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``
is set, or ``torch.get_num_threads()`` is not torch's default, nothing is changed. torch's
default is taken as the count seen when ppgen was imported, provided it equals the number
of physical cores (what torch picks by itself); a ``torch.set_num_threads(n)`` before
``import ppgen`` therefore also counts as a choice, unless ``n`` happens to be that number.
When in doubt ppgen leaves the threads alone. The module attribute :data:`user_choice`
overrides the detection (the test suite, which runs on one thread by its own choice, sets
it to False to exercise the automatic rule).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["work_threads", "threads_for", "user_chose_threads", "default_threads",
           "num_elements", "SMALL_WORK", "user_choice"]

#: Work of fewer floating-point elements than this runs on one intra-op thread. On the 2-core
#: project machine under outside load, two threads first beat one at 1e7-element elementwise
#: ops (0.86x; 1.95x slower at 1e6, 7x on a VAE-sized matmul, 4-6x on GMM EM at 3.2M data
#: elements): benchmarks/RESULTS.md, "Threads".
SMALL_WORK = 8_000_000

#: None: detect the user's choice (environment variables, torch.set_num_threads); True:
#: treat the current setting as the user's and never change it; False: always apply the
#: automatic rule (tests).
user_choice: bool | None = None

_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _physical_cores() -> int | None:
    """Physical cores (distinct (package, core) pairs, Linux sysfs), or None if unknown."""
    cores = set()
    for topology in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return None
    return len(cores) or None


def _torch_default() -> int | None:
    """The count torch picks by itself with no environment variable: the physical cores
    where known, else the logical CPUs (torch does the same through cpuinfo)."""
    return _physical_cores() or os.cpu_count()


#: torch's intra-op threads when ppgen was imported (before ppgen changed anything).
_IMPORT_THREADS = torch.get_num_threads()
#: Whether that count is torch's own default (not set by the user before the import).
_IMPORT_IS_DEFAULT = (not any(os.environ.get(v) for v in _ENV_VARS)
                      and _IMPORT_THREADS == _torch_default())


def default_threads() -> int:
    """torch's default intra-op thread count on this machine (used for large work)."""
    return _IMPORT_THREADS if _IMPORT_IS_DEFAULT else (_torch_default() or _IMPORT_THREADS)


def user_chose_threads() -> bool:
    """Whether the thread count is the user's explicit choice, which ppgen keeps.

    True when :data:`user_choice` says so, when ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``
    is set, or when ``torch.get_num_threads()`` is not torch's default (see the module
    docstring). Inside a :func:`work_threads` block it is True too, so nested blocks keep the
    outer block's count.
    """
    if user_choice is not None:
        return bool(user_choice)
    if any(os.environ.get(v) for v in _ENV_VARS):
        return True
    return not _IMPORT_IS_DEFAULT or torch.get_num_threads() != _IMPORT_THREADS


def threads_for(work_size: int) -> int:
    """The intra-op thread count for work of ``work_size`` floating-point elements: 1 below
    :data:`SMALL_WORK`, else :func:`default_threads`."""
    return 1 if work_size < SMALL_WORK else default_threads()


def num_elements(*tensors) -> int:
    """Floating-point elements of the tensors (dense: ``numel``; sparse: stored values),
    ignoring anything that is not a tensor."""
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            total += t._nnz() if t.layout != torch.strided else t.numel()
    return total


@contextmanager
def work_threads(work_size: int, *, device: torch.device | str | None = None) -> Iterator[int]:
    """Run the block on the intra-op thread count that suits ``work_size``, then restore.

    Parameters
    ----------
    work_size : int
        Floating-point elements of the block's data (e.g. ``data.numel()``).
    device : torch.device or str, optional
        The device the work runs on; threads are only chosen for the CPU.

    Yields
    ------
    int
        The thread count in effect inside the block.

    Nothing changes when the user chose the count (:func:`user_chose_threads`) or the work
    runs on another device. The previous count comes back even when the block raises.

    Examples
    --------
    >>> import torch
    >>> with work_threads(1_000) as n:  # doctest: +SKIP
    ...     torch.get_num_threads() == n == 1
    True
    """
    previous = torch.get_num_threads()
    if (device is not None and torch.device(device).type != "cpu") or user_chose_threads():
        yield previous
        return
    wanted = threads_for(int(work_size))
    if wanted == previous:
        yield previous
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)
