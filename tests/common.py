"""Helpers shared by the tests (as pyro's tests/common.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def assert_close(actual, expected, *, rtol: float = 1e-7, atol: float = 0.0, msg: str = ""):
    """One closeness check for tensors, arrays and numbers, with a readable failure."""
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    e = expected.detach().cpu().numpy() if isinstance(expected, torch.Tensor) else np.asarray(
        expected)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=msg)


requires_cuda = __import__("pytest").mark.skipif(not torch.cuda.is_available(),
                                                 reason="needs CUDA")


def shared_file(name: str):
    """The path of ``name`` in the shared data folder (``../shared/data`` or
    ``PPGEN_DATA_DIR``), or skip the test: a clean clone may have no shared folder."""
    from ppgen.datasets import data_dir

    try:
        folder = data_dir()
    except FileNotFoundError:
        pytest.skip("no shared data directory (../shared/data or PPGEN_DATA_DIR)")
    if not (folder / name).exists():
        pytest.skip(f"{name} not in the shared data directory {folder}")
    return folder / name
