"""Validation at the door: one message template for every bad argument.

Every error names the argument, what was expected, what came, and what to do.
Never ``assert`` on user input (it vanishes under ``python -O``).
"""

from __future__ import annotations

import math
import mmap
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["datum_rows", "one_hot_labels", "bad_value", "bad_type", "not_numeric",
           "ragged_rows", "first_text", "check_data",
           "check_positive_int", "check_choice", "check_nonnegative_float",
           "check_positive_float", "NotFittedError", "NotSupportedError", "not_supported",
           "INTEGER_DATA_DTYPE", "tensor_from_array", "column_names", "all_rows"]


#: The floating dtype that integer (and boolean) data become when no ``dtype`` says otherwise:
#: parameters fitted to integer data are float64, as in scikit-learn.
INTEGER_DATA_DTYPE = torch.float64


class NotFittedError(RuntimeError):
    """Raised when a model that has not been fitted is asked for something that needs fitting."""


class NotSupportedError(ValueError):
    """A model was asked for something it does not declare (a method, an application, a kind
    of log-likelihood); the message names what to use instead."""


def not_supported(model: Any, what: str, instead: str) -> NotSupportedError:
    """The one message for a capability a model lacks: ``<Model> does not support <what>;
    <instead>.``"""
    name = model if isinstance(model, str) else type(model).__name__
    return NotSupportedError(f"{name} does not support {what}; {instead}.")


def _message(arg: str, expected: str, got: Any, remedy: str | None) -> str:
    msg = f"{arg}: expected {expected}, got {got}."
    if remedy:
        msg += f" {remedy}"
    return msg


def bad_value(arg: str, expected: str, got: Any, remedy: str | None = None) -> ValueError:
    """A ``ValueError`` in the project's one template (return it, then ``raise``)."""
    return ValueError(_message(arg, expected, got, remedy))


def bad_type(arg: str, expected: str, got: Any, remedy: str | None = None) -> TypeError:
    """A ``TypeError`` in the project's one template (return it, then ``raise``)."""
    return TypeError(_message(arg, expected, got, remedy))


def check_positive_int(arg: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise bad_type(arg, f"an integer >= {minimum}", f"{value!r} ({type(value).__name__})")
    if value < minimum:
        raise bad_value(arg, f"an integer >= {minimum}", value)
    return int(value)


def check_positive_float(arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_type(arg, "a positive number", f"{value!r} ({type(value).__name__})")
    if not np.isfinite(value) or value <= 0:
        raise bad_value(arg, "a finite number > 0", value)
    return float(value)


def check_nonnegative_float(arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_type(arg, "a number >= 0", f"{value!r} ({type(value).__name__})")
    if not np.isfinite(value) or value < 0:
        raise bad_value(arg, "a finite number >= 0", value)
    return float(value)


def check_choice(arg: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise bad_value(arg, "one of " + ", ".join(repr(c) for c in choices), repr(value))
    return value


def tensor_from_array(arr: np.ndarray) -> torch.Tensor:
    """``torch.as_tensor`` of a numpy array, copying a read-only one first (pandas gives
    read-only views under copy-on-write, on which torch warns "The given NumPy array is not
    writable"). A read-only memory-mapped file (``np.load(path, mmap_mode="r")``) is not
    copied but mapped again copy-on-write: the tensor reads the file page by page, and a
    write would change private pages, never the file."""
    # Only the file's own mapping (its base the mmap itself): numpy gives a slice such as
    # mm[k:] its parent's offset, so mapping a view again would read the wrong rows.
    if not arr.flags.writeable and isinstance(arr, np.memmap) and arr.filename is not None \
            and isinstance(arr.base, mmap.mmap) and arr.flags.c_contiguous:
        arr = np.memmap(arr.filename, dtype=arr.dtype, mode="c", offset=arr.offset,
                        shape=arr.shape, order="C")
    return torch.as_tensor(arr if arr.flags.writeable else arr.copy())


def column_names(data: Any) -> list[str] | None:
    """The column names of a 2-D pandas DataFrame (as strings), or None for other input."""
    columns = getattr(data, "columns", None)
    if columns is None or getattr(data, "ndim", 2) != 2 or not hasattr(data, "to_numpy"):
        return None
    return [str(c) for c in columns]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor | np.ndarray):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def ragged_rows(x: Any, *, depth: int = 3) -> str | None:
    """Where nested lists are not rectangular: ``"row 0 has 2 entries, row 2 has 1"`` (the
    first row whose length differs from row 0's), searched ``depth`` levels deep; None when
    every level is rectangular or ``x`` is not a list/tuple of sequences."""
    if depth == 0 or not isinstance(x, list | tuple | np.ndarray) or len(x) == 0:
        return None

    def size(row: Any) -> int | None:
        if isinstance(row, str | bytes):
            return None
        try:
            return len(row)
        except TypeError:
            return None

    sizes = [size(row) for row in x]
    for i, n in enumerate(sizes):
        if n != sizes[0]:
            def what(n):
                return "a scalar" if n is None else f"{n} entr{'y' if n == 1 else 'ies'}"
            return f"row 0 has {what(sizes[0])}, row {i} has {what(n)}"
    if sizes[0] is None:
        return None
    for i, row in enumerate(x):
        inner = ragged_rows(row, depth=depth - 1)
        if inner is not None:
            return f"in row {i}, {inner}"
    return None


def first_text(x: Any, *, depth: int = 4) -> str | None:
    """The first string in (nested) array-like input, for error messages; None if none."""
    if isinstance(x, str | bytes):
        return x if isinstance(x, str) else x.decode(errors="replace")
    if isinstance(x, np.ndarray) and x.dtype.kind in "USO" and x.size:
        x = x.reshape(-1)[:1000].tolist()
    if depth == 0 or not isinstance(x, list | tuple):
        return None
    for row in x[:1000]:
        found = first_text(row, depth=depth - 1)
        if found is not None:
            return found
    return None


def not_numeric(arg: str, x: Any, expected: str, remedy: str) -> TypeError:
    """The error for array-like input that is not a rectangular array of numbers: None, text,
    ragged nested lists or other objects, each named, with ``remedy`` for text and objects."""
    if x is None:
        return bad_type(arg, expected, "None", "Pass the data itself, e.g. "
                        "ppgen.fit(model, x, method=...) or model.log_prob(x).")
    text = first_text(x)
    if text is not None:
        dtype = getattr(x, "dtype", None)
        kind = f"dtype {dtype}, " if dtype is not None else ""
        return bad_type(arg, expected, f"text ({kind}e.g. {text[:40]!r})", remedy)
    ragged = ragged_rows(x)
    if ragged is not None:
        return bad_type(arg, expected, f"{type(x).__name__} with rows of different lengths "
                        f"({ragged})", "Pass a rectangular array: every row with the same "
                        "number of entries (mark missing entries with NaN).")
    return bad_type(arg, expected, _describe(x), remedy)


def as_tensor(x: Any, *, arg: str = "data", dtype: torch.dtype | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Turn array-like numeric input into a floating tensor, refusing non-numeric input.

    Floating input keeps its dtype unless ``dtype`` is given; integer and boolean input
    becomes :data:`INTEGER_DATA_DTYPE` (float64, as scikit-learn converts it), so that
    parameters fitted to counts are not rounded to float32."""
    expected = "a numeric array (numpy array, torch tensor or nested lists of numbers)"
    remedy = ("Convert the columns to numbers first, e.g. x.astype(float), and drop text "
              "columns.")
    if isinstance(x, torch.Tensor):
        t = x
    else:
        if x is None:
            raise not_numeric(arg, x, expected, remedy)
        try:  # a memory-mapped file stays one (tensor_from_array maps it, no copy)
            arr = x if isinstance(x, np.memmap) else np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise not_numeric(arg, x, expected, remedy) from exc
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise not_numeric(arg, x, expected, remedy)
        t = tensor_from_array(arr)
    if t.is_complex():
        raise bad_type(arg, "a real-valued tensor", f"dtype {t.dtype}",
                       "Take the real part or convert it with .to(torch.float64).")
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else INTEGER_DATA_DTYPE
    return t.to(device=device if device is not None else t.device, dtype=dtype)


#: Data with more elements than this are scanned for NaN and infinities block by block.
_SCAN_ELEMENTS = 1_000_000


def all_rows(t: torch.Tensor, test: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Whether ``test(rows)`` (elementwise, boolean) holds everywhere in ``t``, evaluated on
    blocks of rows of ~``_SCAN_ELEMENTS`` values: data of any size (a memory-mapped file)
    are scanned without data-sized temporaries (``torch.isfinite`` of a float32 tensor
    takes ~1.75 times its size)."""
    if t.dim() == 0 or t.numel() <= _SCAN_ELEMENTS:
        return bool(test(t).all())
    step = max(1, _SCAN_ELEMENTS // max(1, t[0].numel()))
    return all(bool(test(t[i:i + step]).all()) for i in range(0, t.shape[0], step))


def check_data(x: Any, *, arg: str = "data", ndim: int = 2, allow_nan: bool = False,
               num_features: int | None = None, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None, min_rows: int = 1,
               check_finite: bool = True) -> torch.Tensor:
    """Validate a data matrix and return it as a floating tensor.

    Parameters
    ----------
    x : array-like of shape (num_data, num_features)
    arg : str
        The argument's name, used in error messages.
    allow_nan : bool
        Whether NaN may mark missing entries (``impute``); infinities are always refused.
    num_features : int, optional
        The number of columns the fitted model expects.
    check_finite : bool
        Scan the values for NaN and infinities (a caller that checks a stricter condition
        that implies finiteness, such as exact 0/1 values, can skip the scan and call again
        with it for the message when its own check fails).
    """
    t = as_tensor(x, arg=arg, dtype=dtype, device=device)
    if t.dim() != ndim:
        remedy = None
        if ndim == 2 and t.dim() == 1:
            remedy = "For a single feature reshape with x.reshape(-1, 1)."
        elif ndim == 2 and t.dim() > 2:
            remedy = "Flatten the trailing dimensions, e.g. x.reshape(len(x), -1)."
        raise bad_value(arg, f"{ndim} dimensions (num_data, num_features)",
                        f"shape {tuple(t.shape)}", remedy)
    if t.shape[0] < min_rows:
        raise bad_value(arg, f"at least {min_rows} row(s)", f"shape {tuple(t.shape)}")
    if num_features is not None and t.shape[-1] != num_features:
        raise bad_value(arg, f"{num_features} features (columns), as the model was fitted with",
                        f"shape {tuple(t.shape)}", "Pass data with the same columns as in fit.")
    if not check_finite:
        return t
    if all_rows(t, torch.isfinite):  # large data: scanned block by block
        return t
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        nan = torch.isnan(t)
        inf = ~finite & ~nan
        if bool(inf.any()):
            row = int(inf.nonzero()[0, 0])
            raise bad_value(arg, "finite values", f"{int(inf.sum())} infinite entries "
                            f"(first in row {row})", "Replace them with NaN to mark them "
                            "missing and fill them with model.impute(data), or drop the rows.")
        if not allow_nan:
            row = int(nan.nonzero()[0, 0])
            raise bad_value(arg, "no missing values", f"{int(nan.sum())} NaN entries "
                            f"(first in row {row})", "Fill them with model.impute(data) "
                            "(a fitted model completes missing entries), or drop those rows.")
    return t


def datum_rows(data: Any, data_shape: tuple[int, ...], *, arg: str = "data",
               dtype: torch.dtype | None = None, device: Any = None
               ) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Data of a model of fixed-shape data (images, feature vectors) as (N, D) rows, and the
    shape to return per-datum results in: ``data_shape`` for (N, *data_shape) input, (D,)
    for flat (N, D) input. Values are not checked (the model knows what it accepts)."""
    t = as_tensor(data, arg=arg, dtype=dtype, device=device)
    num_features = math.prod(data_shape)
    flat = (num_features,)
    if t.dim() >= 1 and tuple(t.shape[1:]) == data_shape:
        out_shape = data_shape
    elif t.dim() == 2 and t.shape[1] == num_features:
        out_shape = flat
    else:
        expected = f"shape (N, {', '.join(map(str, data_shape))})"
        if len(data_shape) > 1:
            expected += f" or (N, {num_features})"
        expected += " (a leading data dimension, then the datum's dimensions)"
        remedy = ("For a single datum add a leading axis, e.g. x[None]."
                  if tuple(t.shape) in (data_shape, flat) else None)
        raise bad_value(arg, expected, f"shape {tuple(t.shape)}", remedy)
    if t.shape[0] < 1:
        raise bad_value(arg, "at least one row", f"shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], num_features), out_shape


def one_hot_labels(labels: Any, num_classes: int, num_data: int, *, arg: str = "labels",
                   dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    """Class labels of ``num_data`` data, given as indices (N,) in 0..C-1 or one-hot rows
    (N, C), as one-hot rows (N, C) in ``dtype`` (conditional models' ``labels``)."""
    if labels is None:
        raise bad_value(arg, f"labels for the {num_data} data (class indices 0.."
                        f"{num_classes - 1} or one-hot rows)", "None",
                        "Pass labels=... (fit: model_kwargs={'labels': y}).")
    t = as_tensor(labels, arg=arg, device=device)
    if t.dim() == 1:
        if t.is_floating_point() and not bool((t == t.round()).all()):
            raise bad_value(arg, "whole class numbers", "fractional values")
        bad = (t < 0) | (t >= num_classes)
        if bool(bad.any()):
            raise bad_value(arg, f"class indices in 0..{num_classes - 1}",
                            f"{t[bad][0].item():g} (and {int(bad.sum()) - 1} more)")
        onehot = torch.nn.functional.one_hot(t.long(), num_classes).to(
            dtype or torch.get_default_dtype())
    elif t.dim() == 2 and t.shape[1] == num_classes:
        if not bool(((t == 0) | (t == 1)).all() & (t.sum(-1) == 1).all()):
            raise bad_value(arg, "one-hot rows (a single 1 per row)",
                            "rows that are not one-hot")
        onehot = t.to(dtype or torch.get_default_dtype())
    else:
        raise bad_value(arg, f"shape ({num_data},) class indices or ({num_data}, "
                        f"{num_classes}) one-hot rows", f"shape {tuple(t.shape)}")
    if onehot.shape[0] != num_data:
        raise bad_value(arg, f"one label per datum ({num_data})",
                        f"{onehot.shape[0]} labels")
    return onehot
