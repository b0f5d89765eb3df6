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

__all__ = ["load_old_faithful", "load_jsb_chorales", "load_ap_corpus", "data_dir"]


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


def load_ap_corpus(*, dtype: torch.dtype = torch.float32):
    """Blei's AP corpus: 2246 Associated Press news articles as bags of words over 10473 terms.

    The example data of ``lda-c`` (Blei, Ng & Jordan 2003), shipped inside the package
    (0.8 MB; the same files as ``../shared/data/ap_corpus.npz`` and ``ap_vocab.txt``, see
    section 4 of its MANIFEST.md). The tokenisation and stop-word removal are Blei's own;
    nothing else was done to the counts. 302031 non-zero entries, 435838 tokens, documents of
    2 to 620 tokens, none empty.

    Parameters
    ----------
    dtype : torch.dtype
        Type of the stored counts: a floating type (default float32, what topic models
        compute in) or an integer one (``torch.int64`` for exact integer arithmetic). The
        counts are whole numbers from 1 to 36, exact in every one of these types.

    Returns
    -------
    counts : scipy.sparse.csr_matrix of shape (2246, 10473)
        Document-term counts, one row per document (in ``ap.dat`` order), with the numpy
        type matching ``dtype`` (``numpy.float32`` for ``torch.float32``).
    vocabulary : list of str
        The 10473 terms; ``vocabulary[j]`` is the word of column ``j``.

    Examples
    --------
    >>> counts, vocabulary = load_ap_corpus()
    >>> counts.shape, counts.nnz, int(counts.sum()), vocabulary[:3]
    ((2246, 10473), 302031, 435838, ['i', 'new', 'percent'])
    """
    import numpy as np
    import scipy.sparse

    np_dtype = _numpy_dtype("dtype", dtype)
    files = resources.files("ppgen.datasets")
    with files.joinpath("data/ap_corpus.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            data, indices, indptr = z["data"], z["indices"], z["indptr"]
            shape = tuple(int(n) for n in z["shape"])
    counts = scipy.sparse.csr_matrix((data.astype(np_dtype), indices, indptr), shape=shape)
    vocabulary = files.joinpath("data/ap_vocab.txt").read_text(encoding="utf-8").splitlines()
    if len(vocabulary) != shape[1]:  # a damaged install, not a user error
        raise RuntimeError(f"ap_vocab.txt has {len(vocabulary)} terms for {shape[1]} columns; "
                           "reinstall ppgen.")
    return counts, vocabulary


def _numpy_dtype(arg: str, dtype):
    """The numpy type of a real torch dtype (floating or integer), or a TypeError."""
    from .._validation import bad_type

    if not isinstance(dtype, torch.dtype) or dtype.is_complex or dtype == torch.bool:
        raise bad_type(arg, "a real torch dtype such as torch.float32 or torch.int64",
                       repr(dtype))
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError as exc:  # bfloat16 and the like have no numpy counterpart
        raise bad_type(arg, "a torch dtype with a numpy counterpart (float16/32/64, int*)",
                       repr(dtype), "Load with torch.float32 and convert afterwards.") from exc
