"""What the command reads and writes: the error type, numeric tables (CSV/NPY), the checks
shared by the binary readers (magic bytes, numpy's errors), and atomic output files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import NotSupportedError

__all__ = ["CLIError", "value_errors", "Table", "load_table", "existing_file", "check_magic",
           "numpy_file_errors", "count", "atomic", "atomic_text", "atomic_bytes", "png_bytes",
           "npz_bytes", "csv_text", "csv_cell", "emit", "output_file", "column_names",
           "DATASETS"]

#: Tables of ``ppgen fit gmm`` (and of ``ppgen score`` for row models).
DATASETS = ("old-faithful",)
_MISSING = {"", "nan", "na", "n/a", "null", "none"}
#: Values per block when a table is scanned for NaN and infinities.
_SCAN_ELEMENTS = 1_000_000


class CLIError(Exception):
    """A user error: printed as ``ppgen: error: <message>``, exit status 2."""


@contextlib.contextmanager
def value_errors(prefix: str, suffix: str = "") -> Iterator[None]:
    """Turn a ValueError of the library into ``CLIError(prefix + message + suffix)``; a
    ``NotSupportedError`` passes unchanged (its message names what to do)."""
    try:
        yield
    except NotSupportedError:
        raise
    except ValueError as exc:
        raise CLIError(f"{prefix}{exc}{suffix}") from None


def count(n: int, singular: str, plural: str) -> str:
    """``"1 document"``, ``"3 documents"``."""
    return f"{n} {singular if n == 1 else plural}"


# ------------------------------------------------------------------------------ input
def existing_file(spec: str, datasets: Sequence[str], kinds: Sequence[str], *,
                  lead: str | None = None, also: Sequence[str] = ()) -> Path:
    """The path of a data file named by ``spec``, refused when it is missing or a directory.

    ``kinds`` are the file endings the option reads (``also``: further endings that mark
    ``spec`` as a file name); ``datasets`` the embedded data sets it names instead; ``lead``
    starts the message for a name that is neither (default: ``spec``).
    """
    path = Path(spec)
    if not path.exists():
        if path.suffix.lower() in (*kinds, *also) or os.sep in spec or "/" in spec:
            raise CLIError(f"{spec}: no such file.")
        raise CLIError(f"{lead or spec}: expected {' or '.join(repr(d) for d in datasets)} or "
                       f"a {'/'.join(kinds)} file, got {spec!r} (no data set or file of that "
                       "name).")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a {' or '.join(kinds)} file, got a directory.")
    return path


def check_magic(path: Path, what: str, suffix: str) -> None:
    """Refuse a file whose first bytes are not those of a .npz archive or a .npy array."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(b"PK" if suffix == ".npz" else b"\x93NUMPY"):
        kind = "an empty file" if not head else (
            "a .npy array" if head.startswith(b"\x93NUMPY") else
            "a .npz archive" if head.startswith(b"PK") else "a file in another format")
        raise CLIError(f"{path}: expected {what}, got {kind}.")


@contextlib.contextmanager
def numpy_file_errors(path: Path, what: str) -> Iterator[None]:
    """Turn numpy's errors on reading ``path`` into a CLIError naming the file and ``what``
    was expected (pickled objects are refused, never loaded)."""
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


@dataclass
class Table:
    """Numeric data read by the command, with its column names and where it came from."""

    values: np.ndarray  # (rows, columns) float64, or a memory-mapped float32/float64 file
    names: list[str]
    source: str
    lines: list[int] | None = None  # the file line of each row (CSV)

    @property
    def mapped(self) -> bool:
        """Whether the values are a memory-mapped file (read from disk as they are used)."""
        return isinstance(self.values, np.memmap)

    def check_complete(self) -> None:
        """Refuse missing (NaN) or infinite entries, naming the first one's line and column
        (scanned in blocks of rows: a memory-mapped file is never held in memory)."""
        rows = max(1, _SCAN_ELEMENTS // max(1, self.values.shape[1]))
        first: tuple[int, int] | None = None
        total = 0
        for start in range(0, self.values.shape[0], rows):
            bad = ~np.isfinite(self.values[start:start + rows])
            found = int(bad.sum())
            if found and first is None:
                i, j = (int(v) for v in np.argwhere(bad)[0])
                first = (start + i, j)
            total += found
        if first is None:
            return
        i, j = first
        where = f"line {self.lines[i]}" if self.lines else f"row {i} (0-based)"
        kind = "a missing value" if np.isnan(self.values[i, j]) else "an infinite value"
        raise CLIError(f"{self.source}, {where}, column {j + 1} ({self.names[j]!r}): expected "
                       f"a number, got {kind} ({count(total, 'bad entry', 'bad entries')} in "
                       "all). Drop or fill those rows first.")


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


def _truncation(path: Path) -> str | None:
    """The error for a .npy file shorter than its header says (a copy or a save that did not
    finish), or None when the file is not that."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            if version not in read:
                return None
            shape, _, dtype = read[version](fh)
            offset = fh.tell()
    except Exception:  # not a .npy header numpy can parse: reported as unreadable
        return None
    need = offset + math.prod(shape) * dtype.itemsize
    have = path.stat().st_size
    if have >= need:
        return None
    return (f"{path}: expected a .npy file of {need} bytes (shape {tuple(shape)}, dtype "
            f"{dtype}, as its header says), got {have} bytes: the file is truncated, a copy "
            "or np.save that did not finish. Write or copy it again.")


def _read_npy(path: Path, *, mmap: bool = False) -> Table:
    """A .npy file as a table: read into memory (float64), or, with ``mmap``, opened with
    ``np.load(path, mmap_mode="r")``, so that a float32 or float64 file stays on disk and a
    fit streams it (a 1-D file is mapped again as one column; other dtypes are converted
    into memory, as ``ppgen.fit`` would)."""
    def unreadable(exc: BaseException) -> CLIError:
        truncated = _truncation(path)
        if truncated is not None:
            return CLIError(truncated)
        return CLIError(f"{path}: expected a .npy file written by np.save, got a file numpy "
                        f"cannot read ({type(exc).__name__}: {exc}). Write it again with "
                        "np.save.")

    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise CLIError(f"{path}: expected a numeric .npy array, got an array of Python "
                           "objects (refused: loading it would run pickled code). Save a "
                           "numeric array with np.save.") from None
        raise unreadable(exc) from None
    except Exception as exc:  # OSError, EOFError; a garbled header: tokenize's, ast's errors
        raise unreadable(exc) from None
    if not isinstance(arr, np.ndarray):
        raise CLIError(f"{path}: expected a single array (.npy), got {type(arr).__name__}.")
    if arr.dtype.kind not in "biuf":
        raise CLIError(f"{path}: expected numeric values, got an array of dtype {arr.dtype}. "
                       "Convert it with arr.astype(float) first.")
    if arr.ndim == 1:
        if isinstance(arr, np.memmap) and arr.size:
            # reshape would give a view, which ppgen.fit copies: map the file as one column
            arr = np.memmap(path, dtype=arr.dtype, mode="r", offset=arr.offset,
                            shape=(arr.shape[0], 1))
        else:
            arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise CLIError(f"{path}: expected a 2-D array (rows, columns), got shape "
                       f"{arr.shape}. Reshape it, e.g. arr.reshape(len(arr), -1).")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CLIError(f"{path}: expected at least one row and one column, got shape "
                       f"{arr.shape}.")
    names = [f"x{j}" for j in range(arr.shape[1])]
    if isinstance(arr, np.memmap) and arr.dtype in (np.float32, np.float64):
        return Table(arr, names, str(path))
    return Table(arr.astype(np.float64), names, str(path))


def load_table(spec: str, *, mmap: bool = False) -> Table:
    """Read ``old-faithful`` (the embedded data set), a ``.csv`` or a ``.npy`` file.

    A CSV file is comma separated and numeric; its first row is taken as a header when it does
    not parse as numbers. Empty cells, ``NA`` and ``nan`` read as NaN (missing). With
    ``mmap``, a float32 or float64 ``.npy`` file is memory-mapped, not read (its
    :attr:`Table.values` a read-only ``np.memmap`` in the file's dtype).
    """
    if spec in DATASETS:
        import ppgen

        x, names = ppgen.datasets.load_old_faithful(return_names=True)
        return Table(x.numpy().astype(np.float64), list(names), spec)
    path = existing_file(spec, DATASETS, (".csv", ".npy"), lead="--data", also=(".txt",))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, mmap=mmap)
    if suffix in (".csv", ".txt"):
        return _read_csv(path)
    raise CLIError(f"{spec}: expected a .csv or .npy file, got a file ending in "
                   f"{suffix or '(no extension)'!r}.")


def column_names(path_arg: str, num_features: int, default: str | None = None) -> list[str]:
    """The column names a run's ``run.json`` recorded, when they fit ``num_features``."""
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


# ----------------------------------------------------------------------------- output
def _umask_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic(path: Path, write: Callable[[str], None]) -> None:
    """``ppgen.io.atomic_write``, leaving the file with the usual permissions (the temporary
    file from ``mkstemp`` is private, 0o600)."""
    from ..io import atomic_write

    def write_with_mode(tmp: str) -> None:
        write(tmp)
        os.chmod(tmp, _umask_mode())

    atomic_write(path, write_with_mode)


def atomic_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    atomic(path, write)


def atomic_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic(path, write)


def png_bytes(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)  # type: ignore[attr-defined]
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def csv_text(values: np.ndarray, names: list[str] | None) -> str:
    out = io.StringIO()
    if names:
        out.write(",".join(names) + "\n")
    for row in np.asarray(values, dtype=float):
        out.write(",".join(repr(float(v)) for v in row) + "\n")
    return out.getvalue()


def csv_cell(text: str) -> str:
    if any(c in text for c in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def output_file(out: str) -> Path:
    """The path of ``--out FILE``, refused when it names a directory."""
    path = Path(out)
    if path.is_dir():
        raise CLIError(f"--out: expected a file name, got the directory {out!r}.")
    return path


def emit(text: str, out: str | None) -> None:
    """Print ``text``, or write it atomically to ``--out`` when given."""
    if out is None:
        sys.stdout.write(text)
        return
    atomic_text(output_file(out), text)
