"""Explicit randomness: seeds in, derived seeds documented, global RNG state restored.

Derivation rule (documented, stable): the seeds of restarts and chains are
``numpy.random.SeedSequence(seed).spawn(n)[i].generate_state(1)[0]``, so chain ``i``
of a fit with seed ``s`` always sees the same stream, whatever the number of chains.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["resolve_seed", "derive_seeds", "seeded"]


def resolve_seed(seed: int | None) -> int:
    """Return ``seed``, or a fresh one drawn from OS entropy (never from the global RNG)."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise TypeError(f"seed: expected a non-negative integer or None, got {seed!r}.")
    return int(seed)


def derive_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 32-bit seeds derived from ``seed`` (per restart or per chain)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and python RNGs for the block, then put the previous states back."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
