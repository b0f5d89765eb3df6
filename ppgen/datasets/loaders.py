"""Loaders of real data sets.

Small files ship inside the package (``ppgen/datasets/data``). Larger ones are read from the
directory named by the environment variable ``PPGEN_DATA_DIR``, or from ``../shared/data``
next to the repository. Nothing is ever downloaded.
"""

from __future__ import annotations

import csv
import os
from importlib import resources
from pathlib import Path

import torch

__all__ = ["load_old_faithful", "data_dir"]


def data_dir() -> Path:
    """The directory with the large shared data files (``PPGEN_DATA_DIR`` or ../shared/data)."""
    env = os.environ.get("PPGEN_DATA_DIR")
    if env:
        path = Path(env)
    else:
        path = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"PPGEN_DATA_DIR: expected a directory with the shared data sets, got {str(path)!r} "
            "which does not exist. Set PPGEN_DATA_DIR to the folder holding MANIFEST.md."
        )
    return path


def load_old_faithful(*, dtype: torch.dtype = torch.float64,
                      return_names: bool = False):
    """Old Faithful geyser eruptions: 272 rows of (eruption minutes, waiting minutes).

    Shipped inside the package (R's ``datasets::faithful``; Azzalini & Bowman 1990).

    Returns
    -------
    Tensor of shape (272, 2), and the column names if ``return_names``.
    """
    text = resources.files("ppgen.datasets").joinpath("data/old_faithful.csv").read_text()
    rows = list(csv.reader(text.splitlines()))
    names = [h.strip('"') for h in rows[0]]
    x = torch.tensor([[float(v) for v in r] for r in rows[1:] if r], dtype=dtype)
    return (x, names) if return_names else x
