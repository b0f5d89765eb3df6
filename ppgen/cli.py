"""The ``ppgen`` command: fit a model, then sample from it or score new data with it.

::

    ppgen fit gmm [--data old-faithful|FILE.csv|FILE.npy] [--method em|svi|mcmc] ...
    ppgen fit hmm [--data jsb-chorales|FILE.npz|FILE.npy] [--num-states K] [--emission E] ...
    ppgen fit lda [--data ap|FILE.npz] [--vocab FILE.txt] [--num-topics K] [--method em|svi] ...
    ppgen sample DIR -n N [--length T] [--seed S] [--out FILE.csv|FILE.npz]
    ppgen score DIR FILE [--out FILE.csv]

``ppgen fit gmm`` writes into ``--out DIR``: ``report.md``, ``mixture.png``, ``history.png``
(EM, SVI) or ``trace.png`` (MCMC), ``model.pt`` (:func:`ppgen.save`), ``inference_data.nc``
(ArviZ InferenceData as netCDF) and ``run.json`` (the command, data source and column names).
``ppgen fit hmm`` writes ``report.md``, ``state_posterior.png``, ``transition_matrix.png``,
``history.png``, ``model.pt``, ``inference_data.nc`` and ``run.json``. ``ppgen fit lda``
holds out ``--heldout-fraction`` of the documents (drawn with ``--seed``), fits on the rest
and writes ``report.md`` (top words and NPMI coherence per topic, held-out perplexity by
document completion), ``topics.png``, ``history.png``, ``model.pt`` and ``run.json`` (with
the held-out document indices). ``ppgen sample`` and ``ppgen score`` read every kind of run
(a hidden Markov model draws and scores whole sequences: ``--length`` steps each, one score
per sequence; a topic model whole documents: ``--length`` words each, one score per
document).
Files are written only after the fit succeeded, each one atomically (a temporary file renamed
into place). User errors print one line starting with ``ppgen: error:`` on stderr and exit
with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

__all__ = ["main", "load_table", "load_sequences", "load_corpus", "CLIError"]

PROG = "ppgen"
DATASETS = ("old-faithful",)
#: Sequence data sets of ``ppgen fit hmm``.
SEQUENCE_DATASETS = ("jsb-chorales",)
#: Corpora of ``ppgen fit lda``.
CORPUS_DATASETS = ("ap",)
#: SVI defaults of ``ppgen fit lda`` (minibatches: a full-batch step on AP costs ~0.5 s;
#: Srivastava & Sutton train ProdLDA on batches of up to 200 documents).
LDA_SVI_DEFAULTS = {"batch_size": 200}
#: MCMC defaults of the command (modest, so that a laptop finishes in minutes).
MCMC_DEFAULTS = {"num_samples": 500, "num_warmup": 500, "num_chains": 4}
_MISSING = {"", "nan", "na", "n/a", "null", "none"}


class CLIError(Exception):
    """A user error: printed as ``ppgen: error: <message>``, exit status 2."""


# --------------------------------------------------------------------------- data input
@dataclass
class Table:
    """Numeric data read by the command, with its column names and where it came from."""

    values: np.ndarray  # (rows, columns) float64
    names: list[str]
    source: str
    lines: list[int] | None = None  # the file line of each row (CSV)

    def check_complete(self) -> None:
        """Refuse missing (NaN) or infinite entries, naming the first one's line and column."""
        bad = ~np.isfinite(self.values)
        if not bad.any():
            return
        i, j = (int(v) for v in np.argwhere(bad)[0])
        where = f"line {self.lines[i]}" if self.lines else f"row {i} (0-based)"
        kind = "a missing value" if np.isnan(self.values[i, j]) else "an infinite value"
        total = _count(int(bad.sum()), "bad entry", "bad entries")
        raise CLIError(f"{self.source}, {where}, column {j + 1} ({self.names[j]!r}): expected "
                       f"a number, got {kind} ({total} in all). Drop or fill those rows first.")


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def _parse_float(cell: str) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    return float(text)


def _is_numeric_row(row: Sequence[str]) -> bool:
    try:
        for cell in row:
            _parse_float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> Table:
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CLIError(f"{path}: expected a text CSV file, got bytes that are not UTF-8 "
                       "text. Pass a comma-separated file, or a .npy array.") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1)
            if r and any(c.strip() for c in r)]
    if not rows:
        raise CLIError(f"{path}: expected comma-separated numbers, got an empty file.")
    header: list[str] | None = None
    if not _is_numeric_row(rows[0][1]):
        header = [c.strip().strip('"') for c in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise CLIError(f"{path}: expected data rows after the header, got none.")
    width = len(header) if header is not None else len(rows[0][1])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise CLIError(f"{path}, line {line}: expected {width} comma-separated values "
                           f"(as in the {'header' if header else 'first row'}), got "
                           f"{len(row)}.")
        for j, cell in enumerate(row):
            try:
                values[i, j] = _parse_float(cell)
            except ValueError:
                column = f"column {j + 1}" + (f" ({header[j]!r})" if header else "")
                raise CLIError(
                    f"{path}, line {line}, {column}: expected a number, got {cell.strip()!r}. "
                    "Every column must be numeric: drop text columns (ids, labels) first."
                ) from None
    names = header if header is not None else [f"x{j}" for j in range(width)]
    return Table(values, names, str(path), [line for line, _ in rows])


def _read_npy(path: Path) -> Table:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CLIError(f"{path}: expected a numeric .npy array, got an array of Python "
                           "objects (refused: loading it would run pickled code). Save a "
                           "numeric array with np.save.") from None
        raise CLIError(f"{path}: expected a .npy file written by np.save, got a file numpy "
                       f"cannot read ({exc}).") from None
    except (OSError, EOFError) as exc:
        raise CLIError(f"{path}: expected a .npy file written by np.save, got a file numpy "
                       f"cannot read ({exc}).") from None
    if not isinstance(arr, np.ndarray):
        raise CLIError(f"{path}: expected a single array (.npy), got {type(arr).__name__}.")
    if arr.dtype.kind not in "biuf":
        raise CLIError(f"{path}: expected numeric values, got an array of dtype {arr.dtype}. "
                       "Convert it with arr.astype(float) first.")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise CLIError(f"{path}: expected a 2-D array (rows, columns), got shape "
                       f"{arr.shape}. Reshape it, e.g. arr.reshape(len(arr), -1).")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CLIError(f"{path}: expected at least one row and one column, got shape "
                       f"{arr.shape}.")
    return Table(arr.astype(np.float64), [f"x{j}" for j in range(arr.shape[1])], str(path))


def load_table(spec: str) -> Table:
    """Read ``old-faithful`` (the embedded data set), a ``.csv`` or a ``.npy`` file.

    A CSV file is comma separated and numeric; its first row is taken as a header when it does
    not parse as numbers. Empty cells, ``NA`` and ``nan`` read as NaN (missing).
    """
    if spec in DATASETS:
        import ppgen

        x, names = ppgen.datasets.load_old_faithful(return_names=True)
        return Table(x.numpy().astype(np.float64), list(names), spec)
    path = Path(spec)
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix in (".csv", ".npy", ".txt") or os.sep in spec or "/" in spec:
            raise CLIError(f"{spec}: no such file.")
        raise CLIError(f"--data: expected {' or '.join(repr(d) for d in DATASETS)} or a "
                       f".csv/.npy file, got {spec!r} (no data set or file of that name).")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a .csv or .npy file, got a directory.")
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in (".csv", ".txt"):
        return _read_csv(path)
    raise CLIError(f"{spec}: expected a .csv or .npy file, got a file ending in "
                   f"{suffix or '(no extension)'!r}.")


@dataclass
class SequenceData:
    """Padded sequences read by the command: ``values`` (N, T, D), or (N, T) for
    categorical symbols, with the real length of each sequence."""

    values: np.ndarray
    lengths: np.ndarray  # (N,) int64
    names: list[str]
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def describe(self) -> str:
        n, t = self.values.shape[:2]
        width = "1 symbol" if self.values.ndim == 2 else _count(
            self.values.shape[2], "feature", "features")
        return (f"{_count(n, 'sequence', 'sequences')}, {self.num_frames} frames (lengths "
                f"{int(self.lengths.min())} to {int(self.lengths.max())}), {width} per frame, "
                f"from {self.source}")


def _check_magic(path: Path, what: str, suffix: str) -> None:
    """Refuse a file whose first bytes are not those of a .npz archive or a .npy array."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(b"PK" if suffix == ".npz" else b"\x93NUMPY"):
        kind = "an empty file" if not head else (
            "a .npy array" if head.startswith(b"\x93NUMPY") else
            "a .npz archive" if head.startswith(b"PK") else "a file in another format")
        raise CLIError(f"{path}: expected {what}, got {kind}.")


@contextlib.contextmanager
def _numpy_file_errors(path: Path, what: str):
    """Turn numpy's errors on reading ``path`` into a CLIError naming the file and ``what``
    was expected (pickled objects are refused, never loaded)."""
    import zipfile

    try:
        yield
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise CLIError(f"{path}: expected {what} with numeric arrays, got Python objects "
                           "(refused: loading them would run pickled code).") from None
        raise CLIError(f"{path}: expected {what}, got a file numpy cannot read "
                       f"({exc}).") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CLIError(f"{path}: expected {what}, got a file numpy cannot read "
                       f"({type(exc).__name__}: {exc}).") from None


def _read_npz_or_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The padded array and the lengths (None when not given) of a .npz or .npy file."""
    suffix = path.suffix.lower()
    what = ("a .npz file written by np.savez (arrays 'x' and optionally 'lengths')"
            if suffix == ".npz" else "a .npy file written by np.save")
    _check_magic(path, what, suffix)
    with _numpy_file_errors(path, what):
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:
            names = list(loaded.files)
            if "x" not in names:
                raise CLIError(f"{path}: expected an array named 'x' (padded sequences) and "
                               "optionally 'lengths', got "
                               + (", ".join(repr(n) for n in names) or "no arrays")
                               + ". Save with np.savez(path, x=x, lengths=lengths).")
            x = loaded["x"]
            lengths = loaded["lengths"] if "lengths" in names else None
        return x, lengths


def _check_sequences(x: np.ndarray, lengths: np.ndarray | None, source: str,
                     emission: str) -> tuple[np.ndarray, np.ndarray]:
    """Shape, lengths, finiteness and support of padded sequences for ``emission``."""
    if x.dtype.kind not in "biuf":
        raise CLIError(f"{source}: expected numeric sequences, got an array of dtype "
                       f"{x.dtype}. Convert it with x.astype(float) first.")
    categorical = emission == "categorical"
    if categorical and x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if not categorical and x.ndim == 2:
        x = x[:, :, None]  # one feature per step
    want = 2 if categorical else 3
    if x.ndim != want:
        shape = ("(sequences, steps)" if categorical
                 else "(sequences, steps, features) or (sequences, steps)")
        hint = (" --emission categorical needs one symbol per step; use --emission "
                "bernoulli, poisson or gaussian for vectors." if categorical and x.ndim == 3
                else "")
        raise CLIError(f"{source}: expected padded sequences of shape {shape} for --emission "
                       f"{emission}, got shape {x.shape}.{hint}")
    if 0 in x.shape:
        raise CLIError(f"{source}: expected at least one sequence of at least one step, got "
                       f"shape {x.shape}.")
    n, t = x.shape[:2]
    if lengths is None:
        lengths = np.full(n, t, dtype=np.int64)
    else:
        lengths = np.asarray(lengths)
        if lengths.dtype.kind not in "biuf" or lengths.shape != (n,):
            raise CLIError(f"{source}: expected 'lengths' to hold {n} integers (one per "
                           f"sequence of x), got shape {lengths.shape} and dtype "
                           f"{lengths.dtype}.")
        if not np.isfinite(lengths).all() or (lengths != np.round(lengths)).any():
            raise CLIError(f"{source}: expected whole numbers in 'lengths', got "
                           f"{lengths[~np.isfinite(lengths) | (lengths != np.round(lengths))][0]}.")
        lengths = lengths.astype(np.int64)
        bad = (lengths < 1) | (lengths > t)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise CLIError(f"{source}: expected 'lengths' between 1 and the padded length {t}, "
                           f"got lengths[{i}] = {int(lengths[i])}.")
    mask = np.arange(t) < lengths[:, None]
    x = np.array(x, dtype=np.float64)
    x[~mask] = 0  # padding: ignored by the model (0 is valid for every emission)

    def refuse(bad: np.ndarray, expected: str, remedy: str) -> NoReturn:
        idx = tuple(int(v) for v in np.argwhere(bad)[0])
        where = f"sequence {idx[0]}, step {idx[1]}" + (
            f", feature {idx[2]}" if len(idx) == 3 else "")
        raise CLIError(f"{source}, {where} (0-based): expected {expected}, got "
                       f"{float(x[idx]):g} ({_count(int(bad.sum()), 'such entry', 'such entries')}"
                       f" in all). {remedy}")

    finite = np.isfinite(x)
    if not finite.all():
        refuse(~finite, "finite numbers inside each sequence's length",
               "Fill or drop them; values past a sequence's length are ignored.")
    if emission == "bernoulli":
        bad = (x != 0) & (x != 1)
        if bad.any():
            refuse(bad, "bits (0 or 1) for --emission bernoulli",
                   "Binarise the data, or use --emission gaussian or poisson.")
    elif emission in ("poisson", "categorical"):
        bad = (x < 0) | (x != np.round(x))
        if bad.any():
            what = "counts" if emission == "poisson" else "symbols"
            refuse(bad, f"non-negative integer {what} for --emission {emission}",
                   "Use --emission gaussian for real-valued data.")
    if categorical:
        x = x.astype(np.int64)
    return x, lengths


def load_sequences(spec: str, emission: str, *, split: str = "train",
                   option: str | None = None) -> SequenceData:
    """Read ``jsb-chorales`` (its ``split``), a ``.npz`` (arrays ``x``, optional ``lengths``)
    or a ``.npy`` padded array, checked for the ``emission``. Errors start with ``option``
    (e.g. ``--data``) when given."""
    try:
        return _load_sequences(spec, emission, split)
    except CLIError as exc:
        message = str(exc)
        if option is None or message.startswith(option):
            raise
        raise CLIError(f"{option} {message}") from None


def _load_sequences(spec: str, emission: str, split: str) -> SequenceData:
    if spec in SEQUENCE_DATASETS:
        import torch

        import ppgen
        from ppgen.datasets.loaders import LOWEST_PITCH

        rolls, lengths = ppgen.datasets.load_jsb_chorales(split, dtype=torch.float64)
        names = [f"pitch{j + LOWEST_PITCH}" for j in range(rolls.shape[-1])]
        x, lens = _check_sequences(rolls.numpy(), lengths.numpy(), f"{spec} ({split})",
                                   emission)
        return SequenceData(x, lens, names, f"{spec} ({split} split)")
    path = Path(spec)
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix in (".npz", ".npy") or os.sep in spec or "/" in spec:
            raise CLIError(f"{spec}: no such file.")
        raise CLIError(f"{spec}: expected {' or '.join(repr(d) for d in SEQUENCE_DATASETS)} "
                       f"or a .npz/.npy file, got {spec!r} (no data set or file of that "
                       "name).")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a .npz or .npy file, got a directory.")
    if suffix not in (".npz", ".npy"):
        raise CLIError(f"{spec}: expected a .npz file (arrays 'x' and 'lengths') or a .npy "
                       f"padded array, got a file ending in {suffix or '(no extension)'!r}.")
    raw, lengths = _read_npz_or_npy(path)
    x, lens = _check_sequences(raw, lengths, str(path), emission)
    names = ["symbol"] if x.ndim == 2 else [f"x{j}" for j in range(x.shape[2])]
    return SequenceData(x, lens, names, str(path))


@dataclass
class CorpusData:
    """Document-term counts read by the command, with their vocabulary and sources."""

    counts: Any  # scipy.sparse.csr_matrix (documents, vocabulary), float32 (float64 if huge)
    vocabulary: list[str] | None  # None: no vocabulary given (columns shown as w0, w1, ...)
    source: str
    vocab_source: str | None

    @property
    def num_docs(self) -> int:
        return int(self.counts.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_tokens(self) -> int:
        return int(round(float(self.counts.sum())))

    def words(self) -> list[str]:
        """The word of each column (``w<j>`` without a vocabulary)."""
        if self.vocabulary is not None:
            return self.vocabulary
        return [f"w{j}" for j in range(self.vocab_size)]


_CSR_ARRAYS = ("data", "indices", "indptr", "shape")
_CSR_WHAT = ("a .npz file holding a CSR count matrix (arrays 'data', 'indices', 'indptr' and "
             "'shape', as scipy.sparse.save_npz writes)")


def _read_csr_npz(path: Path) -> Any:
    """A scipy CSR matrix of whole, non-negative counts from a .npz file, checked."""
    import scipy.sparse

    _check_magic(path, _CSR_WHAT, ".npz")
    with _numpy_file_errors(path, _CSR_WHAT):
        with np.load(path, allow_pickle=False) as loaded:
            names = list(loaded.files)
            missing = [n for n in _CSR_ARRAYS if n not in names]
            if missing:
                hint = (" A dense matrix x converts with scipy.sparse.save_npz(path, "
                        "scipy.sparse.csr_matrix(x)).")
                raise CLIError(f"{path}: expected {_CSR_WHAT}, got arrays "
                               + (", ".join(repr(n) for n in names) or "(none)")
                               + f" (missing {', '.join(repr(n) for n in missing)}).{hint}")
            arrays = {n: loaded[n] for n in _CSR_ARRAYS}
            fmt = loaded["format"] if "format" in names else None
    if fmt is not None:
        text = fmt.item() if fmt.ndim == 0 else fmt
        text = text.decode() if isinstance(text, bytes) else str(text)
        if text != "csr":
            raise CLIError(f"{path}: expected a CSR matrix (format 'csr'), got format "
                           f"{text!r}. Convert it with matrix.tocsr() before saving.")
    data, indices, indptr, shape = (arrays[n] for n in _CSR_ARRAYS)
    for name, arr, kinds in (("data", data, "biuf"), ("indices", indices, "iu"),
                             ("indptr", indptr, "iu"), ("shape", shape, "iu")):
        if arr.dtype.kind not in kinds:
            what = "numbers" if name == "data" else "integers"
            raise CLIError(f"{path}: expected array '{name}' to hold {what}, got dtype "
                           f"{arr.dtype}.")
    if shape.shape != (2,) or (shape < 0).any():
        raise CLIError(f"{path}: expected 'shape' to hold two sizes (documents, vocabulary), "
                       f"got {shape.tolist()}.")
    rows, cols = (int(n) for n in shape)
    if rows == 0 or cols == 0:
        raise CLIError(f"{path}: expected at least one document and one word, got shape "
                       f"({rows}, {cols}).")
    if data.ndim != 1 or indices.shape != data.shape:
        raise CLIError(f"{path}: expected 'data' and 'indices' to be 1-D arrays of one length "
                       f"(one entry per non-zero), got shapes {data.shape} and "
                       f"{indices.shape}.")
    if (indptr.shape != (rows + 1,) or indptr[0] != 0 or indptr[-1] != len(data)
            or (np.diff(indptr) < 0).any()):
        raise CLIError(f"{path}: expected 'indptr' to hold {rows + 1} non-decreasing offsets "
                       f"from 0 to {len(data)} (one per document, then the number of "
                       "non-zeros); the CSR matrix is inconsistent.")
    if len(indices) and (indices.min() < 0 or indices.max() >= cols):
        bad = int(np.nonzero((indices < 0) | (indices >= cols))[0][0])
        raise CLIError(f"{path}: expected column indices in 0..{cols - 1}, got "
                       f"indices[{bad}] = {int(indices[bad])}.")
    values = data.astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        doc = int(np.searchsorted(indptr, i, side="right") - 1)
        raise CLIError(f"{path}: expected word counts (whole numbers >= 0), got "
                       f"{values[i]:g} for document {doc}, column {int(indices[i])} "
                       f"(0-based; {_count(int(bad.sum()), 'such entry', 'such entries')} "
                       "in all).")
    dtype = np.float32 if (not len(values) or values.max() < 2**24) else np.float64
    counts = scipy.sparse.csr_matrix((values.astype(dtype), indices.astype(np.int64),
                                      indptr.astype(np.int64)), shape=(rows, cols))
    counts.sum_duplicates()
    counts.eliminate_zeros()
    return counts


def _read_vocabulary(spec: str, vocab_size: int) -> list[str]:
    path = Path(spec)
    if not path.exists():
        raise CLIError(f"{spec}: no such file.")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a text file of words (one per line), got a "
                       "directory.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CLIError(f"{spec}: expected a UTF-8 text file of words (one per line), got "
                       "bytes that are not UTF-8 text.") from None
    words = text.splitlines()
    while words and not words[-1].strip():  # trailing blank lines
        words.pop()
    if len(words) != vocab_size:
        raise CLIError(f"{spec}: expected {vocab_size} words, one per line (one per column of "
                       f"the counts), got {len(words)} lines.")
    blank = [i for i, w in enumerate(words, start=1) if not w.strip()]
    if blank:
        raise CLIError(f"{spec}, line {blank[0]}: expected a word, got an empty line.")
    return [w.strip() for w in words]


def load_corpus(spec: str, vocab: str | None = None) -> CorpusData:
    """Read ``ap`` (the embedded AP corpus and its vocabulary) or a ``.npz`` CSR count matrix
    with an optional vocabulary file (one word per line, one per column). Errors start with
    the option they concern (``--data`` or ``--vocab``)."""
    if spec in CORPUS_DATASETS:
        if vocab is not None:
            raise CLIError(f"--vocab: applies to --data FILE.npz, got --data {spec} (which "
                           "has its own vocabulary).")
        import ppgen

        counts, vocabulary = ppgen.datasets.load_ap_corpus()
        return CorpusData(counts, list(vocabulary), "ap (embedded Associated Press "
                          "articles)", "ap")
    try:
        counts = _load_corpus_file(spec)
    except CLIError as exc:
        raise CLIError(f"--data {exc}") from None
    vocabulary = None
    if vocab is not None:
        try:
            vocabulary = _read_vocabulary(vocab, int(counts.shape[1]))
        except CLIError as exc:
            raise CLIError(f"--vocab {exc}") from None
    return CorpusData(counts, vocabulary, spec, vocab)


def _load_corpus_file(spec: str) -> Any:
    path = Path(spec)
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix == ".npz" or os.sep in spec or "/" in spec:
            raise CLIError(f"{spec}: no such file.")
        raise CLIError(f"{spec}: expected {' or '.join(repr(d) for d in CORPUS_DATASETS)} or "
                       f"a .npz file, got {spec!r} (no data set or file of that name).")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a .npz file, got a directory.")
    if suffix != ".npz":
        raise CLIError(f"{spec}: expected {_CSR_WHAT}, got a file ending in "
                       f"{suffix or '(no extension)'!r}.")
    return _read_csr_npz(path)


# ------------------------------------------------------------------------------ output
def _fmt(v: float, digits: int = 6) -> str:
    return f"{v:.{digits}g}"


def _text_table(header: list[str], rows: list[list[str]], indent: str = "  ",
                numeric: bool = True) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned (numbers) or
    left-aligned (``numeric=False``)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(c.rjust(w) if i and numeric else c.ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows])


def _md_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    align = "---:" if numeric else ":---"
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + [align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _umask_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """``ppgen.io.atomic_write``, leaving the file with the usual permissions (the temporary
    file from ``mkstemp`` is private, 0o600)."""
    from .io import atomic_write

    def write_with_mode(tmp: str) -> None:
        write(tmp)
        os.chmod(tmp, _umask_mode())

    atomic_write(path, write_with_mode)


def _atomic_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    _atomic(path, write)


def _atomic_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    _atomic(path, write)


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _csv_text(values: np.ndarray, names: list[str] | None) -> str:
    out = io.StringIO()
    if names:
        out.write(",".join(names) + "\n")
    for row in np.asarray(values, dtype=float):
        out.write(",".join(repr(float(v)) for v in row) + "\n")
    return out.getvalue()


# --------------------------------------------------------------------------- fit gmm
@dataclass
class Report:
    text: list[str]
    markdown: list[str]

    def section(self, title: str) -> None:
        self.text += ["", title]
        self.markdown += ["", f"## {title}", ""]

    def both(self, text: str, markdown: str | None = None) -> None:
        self.text.append(f"  {text}" if text else text)
        self.markdown.append(text if markdown is None else markdown)

    def bullets(self, lines: list[str]) -> None:
        """Indented lines in the text report, a bulleted list in report.md."""
        self.text += [f"  {line}" for line in lines]
        self.markdown += [f"- {line}" for line in lines]

    def diagnostics(self, diagnostics: list[Any]) -> None:
        """The Diagnostics section: one line per finding of ``fit.diagnose()``."""
        self.section("Diagnostics")
        if not diagnostics:
            self.both("none: no warnings", "None: no warnings.")
        for d in diagnostics:
            self.text.append(f"  {d}")
            self.markdown.append(f"- **{d.code}**: {d.message}")

    def table(self, header: list[str], rows: list[list[str]], numeric: bool = True) -> None:
        self.text.append(_text_table(header, rows, numeric=numeric))
        self.markdown.append(_md_table(header, rows, numeric=numeric))


def _settings_line(fit: Any, device: str | None, extra: str, options: dict[str, Any]) -> str:
    """The report's line of run settings: seed, device, model settings, fit options, time."""
    run_settings = ", ".join(f"{key}={val}" for key, val in options.items())
    return (f"seed {fit.seed}, device {device}{extra}"
            + (f", {run_settings}" if run_settings else "")
            + f", fitted in {fit.elapsed:.2f} s")


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    method = args.method
    mcmc_only = {"--num-samples": args.num_samples, "--num-warmup": args.num_warmup,
                 "--num-chains": args.num_chains,
                 "--target-accept-prob": args.target_accept_prob,
                 "--max-tree-depth": args.max_tree_depth}
    if method != "mcmc":
        given = [flag for flag, v in mcmc_only.items() if v is not None]
        if given:
            raise CLIError(f"{', '.join(given)}: these options apply to --method mcmc, got "
                           f"--method {method}. Use --num-steps for EM and SVI.")
    if method == "mcmc" and args.num_steps is not None:
        raise CLIError("--num-steps: applies to --method em and svi, got --method mcmc. Use "
                       "--num-samples, --num-warmup and --num-chains.")
    options: dict[str, Any] = {}
    if method in ("em", "svi") and args.num_steps is not None:
        options["num_steps"] = args.num_steps
    if method == "mcmc":
        options = dict(MCMC_DEFAULTS)
        for key in (*MCMC_DEFAULTS, "target_accept_prob", "max_tree_depth"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
    return options


def _parameter_report(report: Report, model: Any, names: list[str], method: str) -> None:
    weights = model.weights.detach().cpu().numpy()
    locs = model.locs.detach().cpu().numpy()
    cov = model.covariances.detach().cpu().numpy()
    k = len(weights)
    what = "posterior means" if method == "mcmc" else "point estimates"
    report.section(f"Fitted parameters ({what})")
    report.both("Weights and means (one row per component):")
    report.both("")
    report.table(["component", "weight"] + [f"mean {n}" for n in names],
                 [[str(c), _fmt(weights[c], 4)] + [_fmt(v) for v in locs[c]]
                  for c in range(k)])
    report.both("")
    if model.covariance == "full":
        report.both(f"Covariances (full; rows and columns: {', '.join(names)}):")
        for c in range(k):
            matrix = np.array2string(cov[c], precision=5, suppress_small=True,
                                     max_line_width=100)
            pad = " " * len(f"  component {c}: ")
            report.text.append(f"  component {c}: " + matrix.replace("\n", "\n" + pad))
            report.markdown += ["", f"Component {c}:", "", "```", matrix, "```"]
    elif model.covariance == "diag":
        report.both("Covariances (diagonal: one variance per column):")
        report.both("")
        report.table(["component"] + [f"var {n}" for n in names],
                     [[str(c)] + [_fmt(v) for v in cov[c]] for c in range(k)])
    else:
        report.both("Covariances (spherical: one variance shared by all columns):")
        report.both("")
        report.table(["component", "variance"], [[str(c), _fmt(cov[c])] for c in range(k)])


def _posterior_summary(report: Report, fit: Any) -> None:
    import pandas as pd

    table = fit.summary()
    cols = [c for c in ("mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat")
            if c in table.columns]
    table = table[cols]
    # corr_chol holds fixed entries (1 on the diagonal, 0 above): leave them out.
    if "sd" in table.columns:
        table = table[~((table["sd"] == 0) & table.index.str.startswith("corr_chol"))]
    report.section("Posterior summary (ArviZ)")
    rows = [[str(idx)] + [("nan" if pd.isna(v) else _fmt(float(v), 4)) for v in row]
            for idx, row in zip(table.index, table.itertuples(index=False))]
    report.table(["parameter"] + cols, rows)


def _cmd_fit_gmm(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import ppgen
    from ppgen.inference import ConvergenceWarning

    from . import plots

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: expected a directory, got {str(out_dir)!r}, which is a file.")
    options = _fit_options(args)
    table = load_table(args.data)
    table.check_complete()
    x_np = table.values
    import torch

    x = torch.as_tensor(x_np)
    model = ppgen.GaussianMixture(args.num_components, covariance=args.covariance)
    progress = not args.quiet and sys.stderr.isatty()
    with warnings.catch_warnings():
        # Convergence problems are reported once, as diagnostics, below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"arviz\..*")
        fit = ppgen.fit(model, x, method=args.method, seed=args.seed, device=args.device,
                        progress=progress, **options)
        diagnostics = fit.diagnose()
        idata = fit.to_arviz()
        x_fit = fit.data
        log_lik = model.log_prob(x_fit)
        total = float(log_lik.sum())
        n = int(log_lik.shape[0])
        bic, aic = model.bic(x_fit), model.aic(x_fit)
        num_params = model.num_parameters()
        report = Report([], [])
        command = " ".join(shlex.quote(str(a)) for a in [PROG, *argv])
        title = (f"ppgen fit gmm: {args.num_components} components, {args.covariance} "
                 f"covariance, method {args.method}")
        report.text.append(title)
        report.markdown += [f"# {title}", "", "Command:", "", "```", command, "```"]
        report.section("Data")
        data_line = (f"{n} rows x {x_np.shape[1]} columns ({', '.join(table.names)}) from "
                     f"{table.source}")
        settings = ", ".join(f"{k}={v}" for k, v in options.items())
        run_line = (f"seed {fit.seed}, device {args.device}"
                    + (f", {settings}" if settings else "") + f", fitted in {fit.elapsed:.2f} s")
        report.text += [f"  {data_line}", f"  {run_line}"]
        report.markdown += [f"- {data_line}", f"- {run_line}"]
        _parameter_report(report, model, table.names, args.method)
        if args.method == "mcmc":
            _posterior_summary(report, fit)
        report.section("Fit")
        at = " at the posterior mean" if args.method == "mcmc" else ""
        rows = [
            ["log-likelihood" + at, f"{total:.3f} nats (total over {n} rows)"],
            ["mean log-likelihood", f"{total / n:.4f} nats per row"],
            ["BIC", f"{bic:.3f} (lower is better)"],
            ["AIC", f"{aic:.3f} (lower is better)"],
            ["free parameters", str(num_params)],
            ["convergence", _convergence_text(fit)],
        ]
        report.table(["quantity", "value"], rows, numeric=False)
        report.diagnostics(diagnostics)
        # Figures are drawn in memory before anything is written.
        fig_mix = plots.plot_mixture(model, x_fit, names=table.names)
        if args.method == "mcmc":
            second_name, fig_second = "trace.png", plots.plot_trace(fit)
        else:
            second_name, fig_second = "history.png", plots.plot_history(fit)
        figures = {"mixture.png": _png_bytes(fig_mix), second_name: _png_bytes(fig_second)}
    report.section("Files")
    files = ["report.md", "mixture.png", second_name, "model.pt", "inference_data.nc",
             "run.json"]
    report.text.append(f"  {out_dir}/: " + ", ".join(files))
    report.markdown += [
        "- [mixture.png](mixture.png): data coloured by component, means, 1- and 2-sigma "
        "ellipses",
        f"- [{second_name}]({second_name}): "
        + ("trace and marginal density per chain" if second_name == "trace.png"
           else "objective per iteration/step"),
        "- [model.pt](model.pt): the fitted model (`ppgen.load`)",
        "- [inference_data.nc](inference_data.nc): ArviZ InferenceData "
        "(`arviz.from_netcdf`)",
        "", "![mixture](mixture.png)", "", f"![{second_name[:-4]}]({second_name})", "",
    ]
    run_info = {"command": command, "model": "gmm", "method": args.method,
                "data": table.source, "columns": table.names, "seed": fit.seed,
                "num_components": args.num_components, "covariance": args.covariance,
                "options": options, "log_likelihood": total, "bic": bic, "aic": aic,
                "ppgen_version": ppgen.__version__}

    return _write_run(out_dir, model, figures, json.dumps(run_info, indent=2), report,
                      quiet=args.quiet, idata=idata)


# --------------------------------------------------------------------------- fit hmm
def _hmm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Model settings and fit options of ``ppgen fit hmm``, with dataset-dependent defaults;
    refuses options that do not apply to the chosen emission or method."""
    jsb = args.data in SEQUENCE_DATASETS
    emission = args.emission or ("bernoulli" if jsb else "gaussian")
    if args.covariance is not None and emission != "gaussian":
        raise CLIError(f"--covariance: applies to --emission gaussian, got --emission "
                       f"{emission}.")
    if args.emission_concentration is not None and emission not in ("bernoulli",
                                                                    "categorical"):
        raise CLIError(f"--emission-concentration: applies to --emission bernoulli and "
                       f"categorical, got --emission {emission}.")
    concentration = args.emission_concentration
    if concentration is None:
        concentration = 2.0 if jsb else 1.0
    if (args.method == "em" and emission in ("bernoulli", "categorical")
            and concentration < 1):
        raise CLIError(f"--emission-concentration: expected a value >= 1 with --method em "
                       f"(EM finds the posterior mode), got {concentration:g}. Use --method "
                       "svi for a sparse prior.")
    if args.num_restarts is not None and args.method != "em":
        raise CLIError(f"--num-restarts: applies to --method em, got --method {args.method}.")
    options: dict[str, Any] = {}
    for key in ("num_steps", "tol", "num_restarts"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return {"emission": emission, "covariance": args.covariance or "diag",
            "emission_concentration": concentration, "options": options}


def _per_state_report(report: Report, model: Any, names: list[str],
                      occupancy: np.ndarray) -> None:
    """One row per state: start and stay probabilities, expected dwell time, occupancy and
    the emission parameters (all of them for a few features, the largest ones otherwise)."""
    init = model.initial_probs.detach().cpu().double().numpy()
    trans = model.transition_probs.detach().cpu().double().numpy()
    k = len(init)
    stay = np.diag(trans)
    header = ["state", "initial", "stay", "mean dwell (steps)", "occupancy"]
    rows = [[str(i), _fmt(init[i], 4), _fmt(stay[i], 4),
             "inf" if stay[i] >= 1 else _fmt(1 / (1 - stay[i]), 4), _fmt(occupancy[i], 4)]
            for i in range(k)]
    if model.emission == "categorical":
        probs = model.probs.detach().cpu().double().numpy()
        header.append("most probable symbols (probability)")
        for i in range(k):
            top = np.argsort(-probs[i])[:4]
            rows[i].append(", ".join(f"{s} ({probs[i, s]:.3f})" for s in top))
    else:
        key = {"gaussian": "locs", "bernoulli": "probs", "poisson": "rates"}[model.emission]
        label = {"locs": "mean", "probs": "p", "rates": "rate"}[key]
        values = getattr(model, key).detach().cpu().double().numpy()
        if len(names) <= 6:
            header += [f"{label} {n}" for n in names]
            if model.emission == "gaussian":
                cov = model.covariances.detach().cpu().double().numpy()
                var = {"full": lambda c: np.diagonal(c, axis1=-2, axis2=-1),
                       "diag": lambda c: c,
                       "spherical": lambda c: np.repeat(c[:, None], len(names), 1)}[
                    model.covariance](cov)
                header += [f"var {n}" for n in names]
            for i in range(k):
                rows[i] += [_fmt(v, 4) for v in values[i]]
                if model.emission == "gaussian":
                    rows[i] += [_fmt(v, 4) for v in var[i]]
        else:
            header.append(f"largest {label} (feature: value)")
            for i in range(k):
                top = np.argsort(-values[i])[:4]
                rows[i].append(", ".join(f"{names[j]}: {values[i, j]:.3g}" for j in top))
    report.both("One row per state: initial probability, probability of staying, mean dwell "
                "time 1/(1 - stay), share of the training frames (posterior), emission.")
    report.both("")
    report.table(header, rows)
    if k <= 12:
        report.both("")
        report.both("Transition matrix (row: from state, column: to state):")
        report.both("")
        report.table(["from \\ to"] + [str(j) for j in range(k)],
                     [[str(i)] + [f"{trans[i, j]:.4f}" for j in range(k)] for i in range(k)])


def _cmd_fit_hmm(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import torch

    import ppgen
    from ppgen.inference import ConvergenceWarning

    from . import plots

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: expected a directory, got {str(out_dir)!r}, which is a file.")
    settings = _hmm_settings(args)
    emission, options = settings["emission"], settings["options"]
    train = load_sequences(args.data, emission, split="train", option="--data")
    test = (load_sequences(args.data, emission, split="test", option="--data")
            if args.data in SEQUENCE_DATASETS else None)
    x = torch.as_tensor(train.values)
    lengths = torch.as_tensor(train.lengths)
    model = ppgen.HiddenMarkovModel(args.num_states, emission=emission,
                                    covariance=settings["covariance"],
                                    emission_concentration=settings["emission_concentration"])
    progress = not args.quiet and sys.stderr.isatty()
    with warnings.catch_warnings():
        # Convergence problems are reported once, as diagnostics, below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"arviz\..*")
        fit = ppgen.fit(model, x, method=args.method, seed=args.seed, device=args.device,
                        progress=progress, model_kwargs={"lengths": lengths}, **options)
        diagnostics = fit.diagnose()
        idata = fit.to_arviz()
        x_fit, lengths_fit = fit.data, fit.model_kwargs["lengths"]
        total = float(model.log_prob(x_fit, lengths_fit).sum())
        frames = train.num_frames
        bic = model.bic(x_fit, lengths_fit)
        num_params = model.num_parameters()
        held_out = None
        if test is not None:
            try:
                test_total = float(model.log_prob(torch.as_tensor(test.values),
                                                  torch.as_tensor(test.lengths)).sum())
            except ValueError as exc:  # e.g. a categorical symbol never seen in training
                raise CLIError(f"{test.source}: cannot score the held-out split: {exc}") from None
            held_out = (test_total, test.num_frames)
        # Posterior marginals of the training frames: state occupancy and the first sequence.
        gamma = model.predict_proba(x_fit, lengths_fit)
        occupancy = (gamma.sum((0, 1)) / frames).detach().cpu().double().numpy()
        first = int(train.lengths[0])
        probs0 = gamma[0, :first]
        path0 = model.predict(x_fit[:1], lengths_fit[:1])[0, :first]

    k = args.num_states
    command = " ".join(shlex.quote(str(a)) for a in [PROG, *argv])
    cov = f", {settings['covariance']} covariance" if emission == "gaussian" else ""
    title = (f"ppgen fit hmm: {_count(k, 'state', 'states')}, {emission} emission{cov}, "
             f"method {args.method}")
    report = Report([title], [f"# {title}", "", "Command:", "", "```", command, "```"])
    report.section("Data")
    data_lines = [f"train: {train.describe()}"]
    if test is not None:
        data_lines.append(f"test (held out): {test.describe()}")
    prior = (f", emission concentration {settings['emission_concentration']:g}"
             if emission in ("bernoulli", "categorical") else "")
    data_lines.append(_settings_line(fit, args.device, prior, options))
    report.bullets(data_lines)
    report.section("Fit")
    rows = [
        ["log-likelihood (train)", f"{total:.3f} nats (total over {frames} frames)"],
        ["NLL per frame (train)", f"{-total / frames:.4f} nats"],
    ]
    if held_out is not None:
        rows.append(["NLL per frame (test)",
                     f"{-held_out[0] / held_out[1]:.4f} nats (log-likelihood "
                     f"{held_out[0]:.3f} over {held_out[1]} frames)"])
    final = float(fit.history["objective"][-1])
    if args.method == "em":
        flat = emission not in ("bernoulli", "categorical") or \
            settings["emission_concentration"] == 1
        rows.append(["final EM objective", f"{final:.3f} (" + (
            "the log-likelihood: flat priors" if flat else "log-likelihood + log prior of "
            "the emission probabilities") + ")"])
    else:
        rows.append(["final SVI loss", f"{final:.3f} (negative ELBO)"])
    rows += [
        ["BIC", f"{bic:.3f} (lower is better)"],
        ["free parameters", str(num_params)],
        ["convergence", _convergence_text(fit)],
        ["elapsed", f"{fit.elapsed:.2f} s"],
    ]
    report.table(["quantity", "value"], rows, numeric=False)
    what = "point estimates" if args.method == "em" else "MAP estimates"
    report.section(f"States ({what})")
    _per_state_report(report, model, train.names, occupancy)
    report.diagnostics(diagnostics)

    # Figures are drawn in memory before anything is written.
    jsb = args.data in SEQUENCE_DATASETS
    fig_post = plots.plot_state_posterior(
        probs0, observations=x_fit[0, :first].detach().cpu(), states=path0,
        states_label="Viterbi path", names=None if len(train.names) > 10 else train.names,
        observations_label="piano key (0 = A0)" if jsb else None,
        title=f"Sequence 0 of the training data ({first} steps): posterior state "
        f"probabilities and Viterbi path")
    fig_trans = plots.plot_transition_matrix(model.transition_probs, annotate=k <= 15)
    figures = {"state_posterior.png": _png_bytes(fig_post),
               "transition_matrix.png": _png_bytes(fig_trans),
               "history.png": _png_bytes(plots.plot_history(fit))}
    report.section("Files")
    files = ["report.md", *figures, "model.pt", "inference_data.nc", "run.json"]
    report.text.append(f"  {out_dir}/: " + ", ".join(files))
    report.markdown += [
        "- [state_posterior.png](state_posterior.png): the first training sequence, its "
        "posterior state probabilities over time and its Viterbi path",
        "- [transition_matrix.png](transition_matrix.png): the fitted transition matrix",
        "- [history.png](history.png): objective per iteration/step",
        "- [model.pt](model.pt): the fitted model (`ppgen.load`)",
        "- [inference_data.nc](inference_data.nc): ArviZ InferenceData "
        "(`arviz.from_netcdf`)",
        "", "![state posterior](state_posterior.png)", "",
        "![transition matrix](transition_matrix.png)", "", "![history](history.png)", "",
    ]
    run_info = {"command": command, "model": "hmm", "method": args.method,
                "data": train.source, "columns": train.names, "seed": fit.seed,
                "num_states": k, "emission": emission,
                "covariance": settings["covariance"] if emission == "gaussian" else None,
                "emission_concentration": settings["emission_concentration"],
                "options": options, "num_sequences": int(len(train.lengths)),
                "num_frames": frames, "log_likelihood": total,
                "nll_per_frame": -total / frames,
                "test_nll_per_frame": None if held_out is None else -held_out[0] / held_out[1],
                "bic": bic, "converged": fit.converged, "elapsed": fit.elapsed,
                "ppgen_version": ppgen.__version__}

    return _write_run(out_dir, model, figures, json.dumps(run_info, indent=2), report,
                      quiet=args.quiet, idata=idata)


# --------------------------------------------------------------------------- fit lda
#: Top words per topic in the report, the figure and the coherence.
LDA_TOP_WORDS = 10
#: Document completion: share of each held-out document's tokens that is observed.
COMPLETION_OBSERVED_FRACTION = 0.5


def _lda_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Fit options of ``ppgen fit lda``, with the method resolved into ``args.method`` (EM
    for LDA, SVI for ProdLDA by default); refuses options that do not apply."""
    model_name = getattr(args, "topic_model", "lda")
    if args.method is None:
        args.method = "svi" if model_name == "prodlda" else "em"
    if model_name == "prodlda":
        if args.method != "svi":
            raise CLIError(f"--method: --model prodlda is fitted by svi only (its topics are "
                           f"network weights, with no closed-form EM), got --method "
                           f"{args.method}. Use --method svi, or --model lda.")
        if args.topic_word_prior is not None:
            raise CLIError("--topic-word-prior: applies to --model lda (ProdLDA's topics have "
                           "no Dirichlet prior).")
        if args.num_topics < 2:
            raise CLIError(f"--num-topics: expected at least 2 topics for --model prodlda, got "
                           f"{args.num_topics}.")
    if args.method != "svi":
        given = [flag for flag, v in (("--batch-size", args.batch_size), ("--lr", args.lr))
                 if v is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise CLIError(f"{', '.join(given)}: {verb} to --method svi, got --method "
                           f"{args.method}.")
    options: dict[str, Any] = {}
    for key in ("num_steps", "tol"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.method == "svi":
        options.update(LDA_SVI_DEFAULTS)
        for key in ("batch_size", "lr"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
    return options


def _heldout_split(num_docs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training and held-out documents: round(fraction * D) documents
    (at least one) drawn without replacement by ``numpy.random.default_rng(seed)``."""
    if fraction == 0:
        return np.arange(num_docs), np.arange(0)
    num_held = max(1, int(round(fraction * num_docs)))
    if num_held >= num_docs:
        raise CLIError(f"--heldout-fraction: holding out {fraction:g} of "
                       f"{_count(num_docs, 'document', 'documents')} leaves none to fit on. "
                       "Use a smaller fraction (0 holds none out) or more documents.")
    held = np.sort(np.random.default_rng(seed).permutation(num_docs)[:num_held])
    train = np.setdiff1d(np.arange(num_docs), held)
    return train, held


def _top_word_ids(topic_word: np.ndarray, num_words: int) -> np.ndarray:
    """Each topic's most probable columns, ties broken by column (as ``plot_topics``)."""
    return np.argsort(-topic_word, axis=1, kind="stable")[:, :num_words]


def _cmd_fit_lda(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import ppgen
    from ppgen.inference import ConvergenceWarning

    from . import plots

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: expected a directory, got {str(out_dir)!r}, which is a file.")
    options = _lda_settings(args)
    corpus = load_corpus(args.data, args.vocab)
    train_idx, held_idx = _heldout_split(corpus.num_docs, args.heldout_fraction, args.seed)
    train_counts = corpus.counts[train_idx]
    held_counts = corpus.counts[held_idx] if len(held_idx) else None
    train_tokens = int(round(float(train_counts.sum())))
    if train_tokens == 0:
        raise CLIError(f"--data {corpus.source}: expected words in the training documents, got "
                       f"{_count(len(train_idx), 'document', 'documents')} without any.")
    k = args.num_topics
    model_name = getattr(args, "topic_model", "lda")
    if model_name == "lda":
        model = ppgen.LDA(k, doc_topic_prior=args.doc_topic_prior,
                          topic_word_prior=args.topic_word_prior, vocabulary=corpus.vocabulary)
    else:
        model = ppgen.ProdLDA(k, doc_topic_prior=args.doc_topic_prior,
                              vocabulary=corpus.vocabulary)
    topic_word_prior = getattr(model, "topic_word_prior", None)
    progress = not args.quiet and sys.stderr.isatty()
    with warnings.catch_warnings():
        # Convergence problems are reported once, as diagnostics, below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        fit = ppgen.fit(model, train_counts, method=args.method, seed=args.seed,
                        device=args.device, progress=progress, **options)
        diagnostics = fit.diagnose()
    topic_word = model.topic_word.detach()
    tw = topic_word.cpu().double().numpy()
    v = corpus.vocab_size
    words = corpus.words()
    num_top = min(LDA_TOP_WORDS, v)
    top_ids = _top_word_ids(tw, num_top)
    top_words = [[words[j] for j in row] for row in top_ids]
    npmi = None
    if num_top >= 2:
        npmi = ppgen.evaluation.npmi_coherence(topic_word, train_counts, top_n=num_top)
        npmi = npmi.cpu().numpy()
    completion = None
    if held_counts is not None:
        try:
            completion = ppgen.evaluation.document_completion(
                topic_word, held_counts, doc_topic_prior=model.doc_topic_prior,
                observed_fraction=COMPLETION_OBSERVED_FRACTION, seed=args.seed)
        except ValueError as exc:
            raise CLIError(f"--heldout-fraction: cannot evaluate the "
                           f"{_count(len(held_idx), 'held-out document', 'held-out documents')}"
                           f" ({exc}) Hold out more documents.") from None
    held_tokens = int(round(float(held_counts.sum()))) if held_counts is not None else 0

    command = " ".join(shlex.quote(str(a)) for a in [PROG, *argv])
    label = "LDA" if model_name == "lda" else "ProdLDA"
    title = f"ppgen fit lda: {label}, {_count(k, 'topic', 'topics')}, method {args.method}"
    report = Report([title], [f"# {title}", "", "Command:", "", "```", command, "```"])
    report.section("Data")
    vocab_text = ("no --vocab: words shown as w0, w1, ..." if corpus.vocab_source is None
                  else "the corpus's own" if args.data in CORPUS_DATASETS
                  else f"words from {corpus.vocab_source}")
    data_lines = [f"{_count(corpus.num_docs, 'document', 'documents')}, vocabulary of "
                  f"{_count(v, 'word', 'words')} ({vocab_text}), {corpus.num_tokens} tokens, "
                  f"from {corpus.source}",
                  f"train: {_count(len(train_idx), 'document', 'documents')}, "
                  f"{train_tokens} tokens"]
    if completion is not None:
        data_lines.append(f"held out: {_count(len(held_idx), 'document', 'documents')}, "
                          f"{held_tokens} tokens ({args.heldout_fraction:g} of the documents, "
                          f"drawn with seed {args.seed}; their indices are in run.json)")
    else:
        data_lines.append("held out: none (--heldout-fraction 0)")
    priors = f", doc_topic_prior {model.doc_topic_prior:g}" + (
        "" if topic_word_prior is None else f", topic_word_prior {topic_word_prior:g}")
    data_lines.append(_settings_line(fit, args.device, priors, options))
    report.bullets(data_lines)

    report.section("Fit")
    rows = []
    if completion is not None:
        ppl, ll, n_tok = completion["perplexity"], completion["log_lik"], completion["num_tokens"]
        rows += [
            ["held-out perplexity", f"{ppl:.4f} (document completion: the held-out half of "
             f"the tokens of {_count(len(held_idx), 'document', 'documents')} given the "
             "other half; lower is better"
             + ("; the topics folded in and scored as a mixture, the rule shared by every "
                "topic model" if model_name == "prodlda" else "") + ")"],
            ["held-out log-likelihood", f"{ll:.3f} nats over {n_tok} tokens "
             f"({ll / n_tok:.4f} per token)"],
        ]
    else:
        rows.append(["held-out perplexity", "not computed (--heldout-fraction 0)"])
    if npmi is not None:
        rows.append(["mean NPMI coherence", f"{float(npmi.mean()):.4f} (top {num_top} words "
                     f"of each topic, co-occurrence in the {len(train_idx)} training "
                     "documents; -1 to 1, higher is better)"])
    final = float(fit.history["objective"][-1])
    if args.method == "em":
        rows.append(["final EM objective", f"{final:.3f} (evidence lower bound, nats)"])
    else:
        batch = options.get("batch_size")
        how = (f", estimated from minibatches of {min(batch, len(train_idx))} documents"
               if batch is not None and batch < len(train_idx) else "")
        rows.append(["final SVI loss", f"{final:.3f} (negative ELBO{how})"])
    rows += [["convergence", _convergence_text(fit)], ["elapsed", f"{fit.elapsed:.2f} s"]]
    report.table(["quantity", "value"], rows, numeric=False)

    what = ("point estimates" if args.method == "em" else
            "softmax of the decoder weights" if model_name == "prodlda" else
            "posterior means of the topics")
    report.section(f"Topics ({what})")
    report.both(f"The {num_top} most probable words of each topic, most probable first, and "
                "the topic's NPMI coherence on the training documents.")
    report.both("")
    report.table(["topic", "NPMI", f"top {num_top} words"],
                 [[str(t), "n/a" if npmi is None else f"{npmi[t]:.3f}", ", ".join(top_words[t])]
                  for t in range(k)], numeric=False)
    report.diagnostics(diagnostics)

    # Figures are drawn in memory before anything is written.
    titles = [f"topic {t}" + ("" if npmi is None else f" (NPMI {npmi[t]:.2f})")
              for t in range(k)]
    fig_topics = plots.plot_topics(tw, vocabulary=words, num_words=num_top, ncols=5,
                                   titles=titles)
    fig_history = plots.plot_history(
        fit, objective_label="evidence lower bound (nats)" if args.method == "em" else None)
    figures = {"topics.png": _png_bytes(fig_topics), "history.png": _png_bytes(fig_history)}
    report.section("Files")
    files = ["report.md", *figures, "model.pt", "run.json"]
    report.text.append(f"  {out_dir}/: " + ", ".join(files))
    report.markdown += [
        "- [topics.png](topics.png): the top words of each topic and their probabilities",
        "- [history.png](history.png): objective per iteration/step",
        "- [model.pt](model.pt): the fitted model (`ppgen.load`)",
        "- [run.json](run.json): the command, settings, results and held-out documents",
        "", "![topics](topics.png)", "", "![history](history.png)", "",
    ]
    run_info = {
        "command": command, "model": model_name, "method": args.method,
        "data": corpus.source, "vocabulary": corpus.vocab_source,
        "num_documents": corpus.num_docs, "vocab_size": v, "num_tokens": corpus.num_tokens,
        "seed": fit.seed, "num_topics": k, "doc_topic_prior": model.doc_topic_prior,
        "topic_word_prior": topic_word_prior, "options": options,
        "heldout_fraction": args.heldout_fraction,
        "heldout_documents": [int(i) for i in held_idx],
        "heldout_seed": args.seed,
        "completion": None if completion is None else {
            "observed_fraction": COMPLETION_OBSERVED_FRACTION, "seed": args.seed,
            "perplexity": completion["perplexity"], "log_lik": completion["log_lik"],
            "num_tokens": completion["num_tokens"]},
        "npmi_top_n": num_top if npmi is not None else None,
        "npmi": None if npmi is None else [float(x) for x in npmi],
        "mean_npmi": None if npmi is None else float(npmi.mean()),
        "top_words": top_words,
        "final_objective": final, "converged": fit.converged,
        "num_steps_run": len(fit.history["objective"]) - (args.method == "em"),
        "elapsed": fit.elapsed, "ppgen_version": ppgen.__version__,
    }

    return _write_run(out_dir, model, figures, _json_text(run_info), report, quiet=args.quiet)


def _write_run(out_dir: Path, model: Any, figures: dict[str, bytes], run_json: str, report: Any,
               *, quiet: bool, idata: Any = None) -> int:
    """Everything succeeded: write the run's files, each atomically, and print the report."""
    import ppgen

    out_dir.mkdir(parents=True, exist_ok=True)
    ppgen.save(model, out_dir / "model.pt")
    if idata is not None:
        _atomic(out_dir / "inference_data.nc", lambda tmp: idata.to_netcdf(tmp))
    for name, data in figures.items():
        _atomic_bytes(out_dir / name, data)
    _atomic_text(out_dir / "run.json", run_json + "\n")
    _atomic_text(out_dir / "report.md", "\n".join(report.markdown).rstrip() + "\n")
    if not quiet:
        print("\n".join(report.text))
    return 0


def _json_text(obj: Any, indent: int = 0) -> str:
    """JSON indented by 2 like ``json.dumps(obj, indent=2)``, but with each list of plain
    values (document indices, a topic's words) on one line."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_json_text(v, indent + 2)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list | tuple) and any(isinstance(v, dict | list | tuple) for v in obj):
        items = [f"{inner}{_json_text(v, indent + 2)}" for v in obj]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(obj)


def _convergence_text(fit: Any) -> str:
    steps = len(fit.history.get("objective", []))
    if fit.method == "em":
        iters = max(steps - 1, 0)
        state = {True: "converged", False: "NOT converged", None: "ran all"}[fit.converged]
        return f"{state} after {iters} EM iterations"
    if fit.method == "svi":
        state = {True: "converged", False: "NOT converged", None: "ran all"}[fit.converged]
        return f"{state} after {steps} SVI steps"
    return "n/a for MCMC: see R-hat, ESS and divergences under Diagnostics"


# ------------------------------------------------------------------- sample / score
def _load_model(path_arg: str) -> Any:
    import ppgen

    path = Path(path_arg)
    if not path.exists():
        raise CLIError(f"{path_arg}: expected a run directory written by 'ppgen fit' (with "
                       "model.pt), got a path that does not exist.")
    model_path = path / "model.pt" if path.is_dir() else path
    if not model_path.is_file():
        raise CLIError(f"{path_arg}: expected a run directory written by 'ppgen fit', but it "
                       "has no model.pt. Run 'ppgen fit gmm --out DIR' first.")
    try:
        model = ppgen.load(model_path)
    except (ValueError, TypeError) as exc:
        message = str(exc).removeprefix("path: ")
        raise CLIError(f"cannot load the model from {model_path}: {message}") from None
    if not model.is_fitted:
        raise CLIError(f"{model_path}: the model is not fitted; run 'ppgen fit' again.")
    return model


def _column_names(path_arg: str, num_features: int, default: str | None = None) -> list[str]:
    path = Path(path_arg)
    info = path / "run.json" if path.is_dir() else path.with_name("run.json")
    try:
        names = json.loads(info.read_text(encoding="utf-8")).get("columns")
    except (OSError, ValueError, AttributeError):
        names = None
    if isinstance(names, list) and len(names) == num_features:
        return [str(n) for n in names]
    if default is not None and num_features == 1:
        return [default]
    return [f"x{j}" for j in range(num_features)]


def _emit(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    path = Path(out)
    if path.is_dir():
        raise CLIError(f"--out: expected a file name, got the directory {out!r}.")
    _atomic_text(path, text)


def _is_hmm(model: Any) -> bool:
    return getattr(model, "registry_name", "") == "hmm"


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _sample_sequences(args: argparse.Namespace, model: Any) -> int:
    if args.length is None:
        raise CLIError("--length: required when sampling from a hidden Markov model (the "
                       "number of steps of each sequence), e.g. --length 50.")
    x = model.sample(args.num_samples, lengths=args.length, seed=args.seed)
    x = x.detach().cpu().numpy()
    if args.out is not None and args.out.lower().endswith(".npz"):
        path = Path(args.out)
        if path.is_dir():
            raise CLIError(f"--out: expected a file name, got the directory {args.out!r}.")
        lengths = np.full(args.num_samples, args.length, dtype=np.int64)
        _atomic_bytes(path, _npz_bytes(x=x, lengths=lengths))
        return 0
    frames = x.reshape(x.shape[0], x.shape[1], -1)
    names = None
    if not args.no_header:
        names = ["sequence", "step"] + _column_names(args.dir, frames.shape[2],
                                                     "symbol" if x.ndim == 2 else None)
    discrete = model.emission != "gaussian"
    out = io.StringIO()
    if names:
        out.write(",".join(names) + "\n")
    for i in range(frames.shape[0]):
        for t in range(frames.shape[1]):
            cells = (str(int(v)) if discrete else repr(float(v)) for v in frames[i, t])
            out.write(f"{i},{t}," + ",".join(cells) + "\n")
    _emit(out.getvalue(), args.out)
    return 0


def _is_topic_model(model: Any) -> bool:
    return getattr(model, "registry_name", "") in ("lda", "prodlda")


#: Words per drawn document of ``ppgen sample`` for topic models.
DEFAULT_DOC_LENGTH = 100


def _sample_documents(args: argparse.Namespace, model: Any) -> int:
    length = DEFAULT_DOC_LENGTH if args.length is None else args.length
    counts = model.sample(args.num_samples, doc_length=length, seed=args.seed)
    counts = np.rint(counts.detach().cpu().double().numpy()).astype(np.int64)
    if args.out is not None and args.out.lower().endswith(".npz"):
        import scipy.sparse

        path = Path(args.out)
        if path.is_dir():
            raise CLIError(f"--out: expected a file name, got the directory {args.out!r}.")
        m = scipy.sparse.csr_matrix(counts)
        _atomic_bytes(path, _npz_bytes(data=m.data, indices=m.indices, indptr=m.indptr,
                                       shape=np.array(m.shape, dtype=np.int64)))
        return 0
    out = io.StringIO()
    if not args.no_header:
        vocabulary = getattr(model, "vocabulary", None)
        words = vocabulary or [f"w{j}" for j in range(counts.shape[1])]
        out.write(",".join(_csv_cell(w) for w in words) + "\n")
    for row in counts:
        out.write(",".join(str(int(c)) for c in row) + "\n")
    _emit(out.getvalue(), args.out)
    return 0


def _csv_cell(text: str) -> str:
    if any(c in text for c in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def _score_documents(args: argparse.Namespace, model: Any) -> int:
    spec = args.file
    if spec in CORPUS_DATASETS:
        counts = load_corpus(spec).counts
    elif spec.lower().endswith(".npz"):
        counts = _load_corpus_file(spec)
    else:
        table = load_table(spec)
        table.check_complete()
        counts = table.values
    vocab_size = model.vocab_size
    if vocab_size is not None and counts.shape[1] != vocab_size:
        raise CLIError(f"{spec}: expected {vocab_size} columns (the vocabulary the model was "
                       f"fitted with), got {counts.shape[1]}.")
    try:
        scores = model.score(counts).detach().cpu().numpy()
    except ValueError as exc:  # e.g. fractional or negative counts in a CSV file
        raise CLIError(f"{spec}: {exc}") from None
    _emit("".join(f"{float(s)!r}\n" for s in scores), args.out)
    return 0


def _cmd_sample(args: argparse.Namespace, argv: Sequence[str]) -> int:
    model = _load_model(args.dir)
    if _is_hmm(model):
        return _sample_sequences(args, model)
    if _is_topic_model(model):
        return _sample_documents(args, model)
    if args.length is not None:
        raise CLIError(f"--length: applies to sequence models (ppgen fit hmm) and topic "
                       f"models (ppgen fit lda), got a "
                       f"{type(model).__name__} in {args.dir}.")
    if args.out is not None and args.out.lower().endswith(".npz"):
        raise CLIError("--out: a .npz file holds sequences (hidden Markov models) or word "
                       "counts (topic models); write the "
                       f"rows of a {type(model).__name__} to a .csv file.")
    draws = model.sample(args.num_samples, seed=args.seed).detach().cpu().numpy()
    names = None if args.no_header else _column_names(args.dir, draws.shape[1])
    _emit(_csv_text(draws, names), args.out)
    return 0


def _score_sequences(args: argparse.Namespace, model: Any) -> int:
    data = load_sequences(args.file, model.emission, split="test")
    width = None if data.values.ndim == 2 else data.values.shape[2]
    if model.num_features is not None and width != model.num_features:
        raise CLIError(f"{args.file}: expected {model.num_features} features per step, as the "
                       f"model was fitted with, got {width}.")
    import torch

    try:
        scores = model.score(torch.as_tensor(data.values), torch.as_tensor(data.lengths))
    except ValueError as exc:  # e.g. symbols outside the fitted alphabet
        raise CLIError(f"{data.source}: {exc}") from None
    _emit("".join(f"{float(s)!r}\n" for s in scores.detach().cpu().numpy()), args.out)
    return 0


def _cmd_score(args: argparse.Namespace, argv: Sequence[str]) -> int:
    model = _load_model(args.dir)
    if _is_hmm(model):
        return _score_sequences(args, model)
    if _is_topic_model(model):
        return _score_documents(args, model)
    table = load_table(args.file)
    table.check_complete()
    if model.num_features is not None and table.values.shape[1] != model.num_features:
        raise CLIError(f"{args.file}: expected {model.num_features} columns, as the model was "
                       f"fitted with, got {table.values.shape[1]}.")
    scores = model.score(table.values).detach().cpu().numpy()
    _emit("".join(f"{float(s)!r}\n" for s in scores), args.out)
    return 0


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with errors in the command's format: ``ppgen: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        self.print_usage(sys.stderr)
        self.exit(2)


def _checked(convert, ok, expected: str):
    """An argparse type: ``convert`` the text, then require ``ok(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_probability = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
_positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_nonnegative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
_fraction = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _add_lda_parser(models: Any) -> None:
    """The ``ppgen fit lda`` sub-command."""
    import ppgen

    prodlda = hasattr(ppgen, "ProdLDA")
    lda = models.add_parser(
        "lda", help="topic model (latent Dirichlet allocation"
        + (", or ProdLDA)" if prodlda else ")"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a topic model (LDA by variational EM or SVI"
        + (";\n--model prodlda: ProdLDA by SVI" if prodlda else "") + ") on all documents "
        "but a held-out fraction.\nPrints the top words and NPMI coherence of each topic and "
        "the held-out\nperplexity by document completion, and writes report.md, topics.png,\n"
        "history.png, model.pt and run.json into --out (only once the fit succeeded).",
        epilog="data files:\n"
        "  FILE.npz  a CSR matrix of word counts (documents x vocabulary): arrays 'data',\n"
        "            'indices', 'indptr' and 'shape', as scipy.sparse.save_npz writes\n"
        "  --vocab   a UTF-8 text file with one word per line, one per column\n"
        "\nevaluation:\n"
        "  --heldout-fraction of the documents (drawn with --seed) are left out of the fit;\n"
        "  half of each one's tokens are observed, the topic proportions folded in on\n"
        "  them, and the other half scored (ppgen.evaluation.document_completion).\n"
        "\nexamples:\n"
        "  ppgen fit lda --data ap --num-topics 20 --out runs/ap\n"
        "  ppgen fit lda --data counts.npz --vocab words.txt --num-topics 10 --method svi "
        "\\\n      --num-steps 500 --out runs/svi")
    lda.add_argument("--data", default="ap", metavar="NAME|FILE",
                     help="'ap' (embedded: 2246 Associated Press articles, 10473 words) or a "
                     ".npz CSR count matrix (default: %(default)s)")
    lda.add_argument("--vocab", metavar="FILE",
                     help="with --data FILE.npz: a text file of words, one per line (default: "
                     "columns shown as w0, w1, ...)")
    if prodlda:
        lda.add_argument("--model", dest="topic_model", choices=("lda", "prodlda"),
                         default="lda", help="lda (Dirichlet topic proportions) or prodlda "
                         "(logistic-normal, product of experts; --method svi only) (default: "
                         "%(default)s)")
    lda.add_argument("--num-topics", type=_positive_int, default=10, metavar="K",
                     help="number of topics (default: %(default)s)")
    lda.add_argument("--method", choices=("em", "svi"),
                     help="inference method (default: em" + (" for lda, svi for prodlda)"
                                                               if prodlda else ")"))
    lda.add_argument("--num-steps", type=_positive_int, metavar="N",
                     help="EM: most iterations (default 100); SVI: most steps (default 2000)")
    lda.add_argument("--tol", type=_nonnegative_float, metavar="TOL",
                     help="stop when the relative change of the objective falls below TOL; "
                     "0 runs all --num-steps (default: EM 1e-6, SVI 1e-5)")
    lda.add_argument("--batch-size", type=_positive_int, metavar="B",
                     help=f"SVI: documents per step (default {LDA_SVI_DEFAULTS['batch_size']},"
                     " or all of them when fewer)")
    lda.add_argument("--lr", type=_positive_float, metavar="LR",
                     help="SVI: learning rate of Adam (default 0.01)")
    lda.add_argument("--doc-topic-prior", type=_positive_float, metavar="ALPHA",
                     help="concentration of the Dirichlet prior of each document's topic "
                     "proportions (default 1/K for lda" + ("; prodlda: 1, through its "
                                                           "logistic-normal approximation)"
                                                           if prodlda else ")"))
    lda.add_argument("--topic-word-prior", type=_positive_float, metavar="ETA",
                     help="LDA: concentration of the Dirichlet prior of each topic's words "
                     "(default 1/K)")
    lda.add_argument("--heldout-fraction", type=_fraction, default=0.1, metavar="F",
                     help="share of the documents held out of the fit and scored by document "
                     "completion; 0 holds none out (default: %(default)s)")
    lda.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where to fit (default: %(default)s)")
    lda.add_argument("--seed", type=_nonnegative_int, default=0,
                     help="random seed of the fit and of the held-out documents (default: "
                     "%(default)s)")
    lda.add_argument("--out", default="runs/lda", metavar="DIR",
                     help="output directory, created if needed (default: %(default)s)")
    lda.add_argument("--quiet", action="store_true",
                     help="no progress bar and no report on stdout (files are still written)")
    lda.set_defaults(handler=_cmd_fit_lda)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ppgen`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description="Fit generative models (Pyro/PyTorch), then "
                     "sample from them or score new data with them.",
                     epilog="Run 'ppgen COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    fit = commands.add_parser("fit", help="fit a model and write a report, figures and the "
                              "model into a directory", description="Fit a model.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", required=True,
                                parser_class=_Parser)
    gmm = models.add_parser(
        "gmm", help="Gaussian mixture", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a Gaussian mixture by EM, SVI or MCMC. Prints the fitted parameters, "
        "the\nlog-likelihood, BIC/AIC and diagnostics, and writes report.md, mixture.png,\n"
        "history.png (EM, SVI) or trace.png (MCMC), model.pt, inference_data.nc and\n"
        "run.json into --out (only once the fit succeeded).",
        epilog="examples:\n"
        "  ppgen fit gmm --data old-faithful --method em --num-components 2 --out runs/demo\n"
        "  ppgen fit gmm --data points.csv --method mcmc --num-chains 2 --out runs/mcmc\n"
        "  ppgen sample runs/demo -n 5\n"
        "  ppgen score runs/demo points.csv")
    gmm.add_argument("--data", default="old-faithful", metavar="NAME|FILE",
                     help="'old-faithful' (embedded), a .csv file (numbers, comma separated, "
                     "optional header row) or a .npy array (default: %(default)s)")
    gmm.add_argument("--method", choices=("em", "svi", "mcmc"), default="em",
                     help="inference method (default: %(default)s)")
    gmm.add_argument("--num-components", type=_positive_int, default=2, metavar="K",
                     help="number of mixture components (default: %(default)s)")
    gmm.add_argument("--covariance", choices=("full", "diag", "spherical"), default="full",
                     help="covariance structure (default: %(default)s)")
    gmm.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where to fit (default: %(default)s)")
    gmm.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default: "
                     "%(default)s)")
    gmm.add_argument("--num-steps", type=_positive_int, metavar="N",
                     help="EM: most iterations (default 100); SVI: most steps (default 2000)")
    gmm.add_argument("--num-samples", type=_positive_int, metavar="N",
                     help=f"MCMC: draws kept per chain (default {MCMC_DEFAULTS['num_samples']})")
    gmm.add_argument("--num-warmup", type=_nonnegative_int, metavar="N",
                     help=f"MCMC: warm-up steps per chain (default "
                     f"{MCMC_DEFAULTS['num_warmup']})")
    gmm.add_argument("--num-chains", type=_positive_int, metavar="C",
                     help=f"MCMC: chains (default {MCMC_DEFAULTS['num_chains']})")
    gmm.add_argument("--target-accept-prob", type=_probability, metavar="P",
                     help="MCMC: NUTS target acceptance probability (default 0.8; raise it, "
                     "e.g. to 0.95, when there are divergences)")
    gmm.add_argument("--max-tree-depth", type=_positive_int, metavar="N",
                     help="MCMC: NUTS maximum tree depth (default 10)")
    gmm.add_argument("--out", default="runs/gmm", metavar="DIR",
                     help="output directory, created if needed (default: %(default)s)")
    gmm.add_argument("--quiet", action="store_true",
                     help="no progress bar and no report on stdout (files are still written)")
    gmm.set_defaults(handler=_cmd_fit_gmm)

    hmm = models.add_parser(
        "hmm", help="hidden Markov model", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a hidden Markov model by EM (Baum-Welch) or SVI. Prints the\n"
        "log-likelihood, the negative log-likelihood per frame (train, and the test split\n"
        "of jsb-chorales), BIC, the states and diagnostics, and writes report.md,\n"
        "state_posterior.png, transition_matrix.png, history.png, model.pt,\n"
        "inference_data.nc and run.json into --out (only once the fit succeeded).",
        epilog="data files:\n"
        "  FILE.npz  arrays 'x' (padded sequences: (N, T, D), or (N, T) for one feature or\n"
        "            categorical symbols) and optionally 'lengths' (N,); steps past a\n"
        "            sequence's length are ignored\n"
        "  FILE.npy  one padded array (N, T[, D]) of full-length sequences\n"
        "\nexamples:\n"
        "  ppgen fit hmm --data jsb-chorales --num-states 8 --out runs/jsb\n"
        "  ppgen fit hmm --data seqs.npz --num-states 3 --covariance full --out runs/seqs\n"
        "  ppgen sample runs/seqs -n 5 --length 40 --out draws.npz\n"
        "  ppgen score runs/seqs draws.npz")
    hmm.add_argument("--data", default="jsb-chorales", metavar="NAME|FILE",
                     help="'jsb-chorales' (embedded piano rolls: trains on the train split, "
                     "reports the test split as held out), a .npz or a .npy file (default: "
                     "%(default)s)")
    hmm.add_argument("--num-states", type=_positive_int, default=4, metavar="K",
                     help="number of hidden states (default: %(default)s)")
    hmm.add_argument("--emission", choices=("gaussian", "categorical", "bernoulli", "poisson"),
                     help="distribution of a frame given its state (default: bernoulli for "
                     "jsb-chorales, gaussian otherwise)")
    hmm.add_argument("--covariance", choices=("diag", "full", "spherical"),
                     help="Gaussian emissions: covariance structure (default: diag)")
    hmm.add_argument("--emission-concentration", type=_positive_float, metavar="A",
                     help="Bernoulli: Beta(A, A) prior of each bit; categorical: Dirichlet(A) "
                     "prior of the symbols; EM finds the posterior mode, so A > 1 keeps "
                     "unseen values from getting probability 0 (default: 2 for "
                     "jsb-chorales, 1 otherwise)")
    hmm.add_argument("--method", choices=("em", "svi"), default="em",
                     help="inference method (default: %(default)s)")
    hmm.add_argument("--num-steps", type=_positive_int, metavar="N",
                     help="EM: most iterations (default 100); SVI: most steps (default 2000)")
    hmm.add_argument("--tol", type=_nonnegative_float, metavar="TOL",
                     help="stop when the relative change of the objective falls below TOL; "
                     "0 runs all --num-steps (default: EM 1e-6, SVI 1e-5)")
    hmm.add_argument("--num-restarts", type=_positive_int, metavar="R",
                     help="EM: independent starts, the best one is kept (default 1)")
    hmm.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where to fit (default: %(default)s)")
    hmm.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default: "
                     "%(default)s)")
    hmm.add_argument("--out", default="runs/hmm", metavar="DIR",
                     help="output directory, created if needed (default: %(default)s)")
    hmm.add_argument("--quiet", action="store_true",
                     help="no progress bar and no report on stdout (files are still written)")
    hmm.set_defaults(handler=_cmd_fit_hmm)

    _add_lda_parser(models)

    sample = commands.add_parser("sample", help="draw new rows (or sequences) from a fitted "
                                 "model (CSV)",
                                 description="Draw rows from the model in DIR/model.pt and "
                                 "print them as CSV (a header row with the column names, then "
                                 "one row per draw). A hidden Markov model draws N sequences "
                                 "of --length steps: one CSV row per step, led by the "
                                 "sequence and step numbers, or a .npz file (arrays x and "
                                 "lengths, as 'ppgen fit hmm --data' and 'ppgen score' read) "
                                 "with --out FILE.npz. A topic model draws N documents of "
                                 "--length words: one CSV row of word counts per document "
                                 "(a header row with the vocabulary), or a .npz CSR count "
                                 "matrix (as 'ppgen fit lda --data' and 'ppgen score' read) "
                                 "with --out FILE.npz.")
    sample.add_argument("dir", metavar="DIR", help="run directory written by 'ppgen fit'")
    sample.add_argument("-n", "--num-samples", type=_positive_int, required=True,
                        metavar="N", help="number of rows (sequences) to draw")
    sample.add_argument("--length", type=_positive_int, metavar="T",
                        help="hidden Markov models: steps per sequence (required for them); "
                        f"topic models: words per document (default {DEFAULT_DOC_LENGTH})")
    sample.add_argument("--seed", type=_nonnegative_int, default=None,
                        help="random seed (default: fresh randomness)")
    sample.add_argument("--out", metavar="FILE.csv",
                        help="write the CSV to this file instead of stdout (hidden Markov "
                        "models: FILE.npz writes x and lengths; topic models: FILE.npz writes "
                        "a CSR count matrix)")
    sample.add_argument("--no-header", action="store_true", help="omit the header row")
    sample.set_defaults(handler=_cmd_sample)

    score = commands.add_parser("score", help="anomaly score of each row of a file",
                                description="Print the anomaly score (negative "
                                "log-likelihood in nats; higher = more unusual) of each row "
                                "of FILE under the model in DIR/model.pt, one per line. For "
                                "a hidden Markov model: one score per sequence of a .npz or "
                                ".npy file (as 'ppgen fit hmm --data' reads), or of the test "
                                "split of 'jsb-chorales'. For a topic model: one score per "
                                "document (importance-sampled estimate) of a .npz CSR count "
                                "matrix (as 'ppgen fit lda --data' reads), a .csv or .npy "
                                "matrix of counts, or 'ap'.")
    score.add_argument("dir", metavar="DIR", help="run directory written by 'ppgen fit'")
    score.add_argument("file", metavar="FILE", help="data to score: .csv or .npy (or "
                       "'old-faithful'); hidden Markov models: .npz or .npy (or "
                       "'jsb-chorales'); topic models: .npz, .csv or .npy counts (or 'ap')")
    score.add_argument("--out", metavar="FILE.csv",
                       help="write the scores to this file instead of stdout")
    score.set_defaults(handler=_cmd_score)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ppgen`` command; returns the exit status (0 ok, 2 user error).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).
    """
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from ._validation import NotFittedError

    handler: Callable[[argparse.Namespace, Sequence[str]], int] = args.handler
    try:
        return handler(args, argv)
    except CLIError as exc:
        return _fail(str(exc))
    except (ValueError, TypeError, NotFittedError, FloatingPointError) as exc:
        if os.environ.get("PPGEN_DEBUG"):  # PPGEN_DEBUG=1 shows the traceback
            raise
        return _fail(str(exc))
    except FileNotFoundError as exc:
        return _fail(str(exc) if not exc.filename else f"{exc.filename}: no such file.")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
