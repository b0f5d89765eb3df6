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

__all__ = ["load_old_faithful", "load_jsb_chorales", "data_dir"]


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


#: MIDI pitch of the lowest key of the 88-key piano roll (A0).
LOWEST_PITCH = 21


def load_jsb_chorales(split: str | None = None, *, dtype: torch.dtype = torch.float32):
    """JSB chorales (Boulanger-Lewandowski et al. 2012) as 88-key piano rolls.

    382 four-part Bach chorales in quarter-note steps; train 229, valid 76, test 77 sequences
    of 25 to 160 steps. Shipped inside the package (42 KB; the same file as
    ``../shared/data/jsb_chorales.json.gz``). Key ``j`` is MIDI pitch ``j + 21``, as in
    Pyro's ``examples/hmm.py``.

    Parameters
    ----------
    split : {"train", "valid", "test"}, optional
        One split, or None for all three in a dict.
    dtype : torch.dtype
        Floating type of the rolls.

    Returns
    -------
    (rolls, lengths) with ``rolls`` a Tensor of shape (num_sequences, max length, 88) of 0/1
    (zero past each sequence's end) and ``lengths`` a long Tensor (num_sequences,); or a dict
    split -> (rolls, lengths) when ``split`` is None.

    Examples
    --------
    >>> rolls, lengths = load_jsb_chorales("train")
    >>> tuple(rolls.shape), int(lengths.sum())
    ((229, 129, 88), 13807)
    """
    import gzip
    import json

    splits = ("train", "valid", "test")
    if split is not None and split not in splits:
        from .._validation import bad_value

        raise bad_value("split", "'train', 'valid', 'test' or None", repr(split))
    raw = resources.files("ppgen.datasets").joinpath("data/jsb_chorales.json.gz").read_bytes()
    data = json.loads(gzip.decompress(raw))
    out = {}
    for name in splits if split is None else (split,):
        seqs = data[name]
        lengths = torch.tensor([len(s) for s in seqs])
        rolls = torch.zeros(len(seqs), int(lengths.max()), 88, dtype=dtype)
        seq_idx, step_idx, key_idx = [], [], []
        for i, seq in enumerate(seqs):  # parsing the JSON lists (not a numeric loop)
            for t, chord in enumerate(seq):
                for pitch in chord:
                    seq_idx.append(i)
                    step_idx.append(t)
                    key_idx.append(pitch - LOWEST_PITCH)
        rolls[seq_idx, step_idx, key_idx] = 1
        out[name] = (rolls, lengths)
    return out if split is None else out[split]
