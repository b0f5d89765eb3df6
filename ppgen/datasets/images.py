"""Image data: scikit-learn's 8x8 digits (shipped) and MNIST (read from the shared data folder).

MNIST is too large to ship (11 MB); :func:`load_mnist` reads ``mnist.npz`` and
``binarized_mnist_packed.npz`` from ``data_dir``, else from the folder named by the
environment variable ``PPGEN_DATA_DIR``, else from ``../shared/data`` next to the repository
(see its MANIFEST.md, sections 1a and 1b). Nothing is ever downloaded.

Dynamic binarization (a fresh Bernoulli draw of every pixel each time a minibatch is taken,
Salakhutdinov & Murray 2008) is a :class:`DynamicBinarized` object: it holds the intensities
and implements the minibatch protocol of ppgen's training loop (``len(data)`` and
``data.take(index, generator)``).
"""

from __future__ import annotations

import gzip
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .._validation import bad_type, bad_value

__all__ = ["load_digits", "load_mnist", "DynamicBinarized"]

#: Pixels of one MNIST image (28 x 28, row-major).
MNIST_PIXELS = 784
#: Rows of MNIST train that make the "train" split; the rest are "valid".
MNIST_TRAIN_SIZE = 50_000


def _float_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise bad_type("dtype", "a floating torch dtype such as torch.float32", repr(dtype))
    return dtype


# ---------------------------------------------------------------------------------- digits


def load_digits(*, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The scikit-learn 8x8 handwritten digits: 1797 images of 64 pixels, with their labels.

    Shipped inside the package (57 KB): a byte-for-byte copy of scikit-learn's
    ``sklearn/datasets/data/digits.csv.gz`` (also ``../shared/data/sklearn_digits.csv.gz``,
    MANIFEST.md section 5). The data are the test set of the UCI "Optical Recognition of
    Handwritten Digits" data set (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0), as shipped in
    scikit-learn (BSD-3-Clause). Each pixel counts the set pixels of a 4x4 block of a 32x32
    bitmap (0 to 16); here it is divided by 16. Class counts are 178, 182, 177, 183, 181, 182,
    181, 179, 174, 180 for digits 0 to 9.

    Parameters
    ----------
    dtype : torch.dtype
        Floating type of the images.

    Returns
    -------
    images : Tensor of shape (1797, 64)
        Pixel intensities in [0, 1] (``pixel / 16``), each row a row-major 8x8 image.
    labels : LongTensor of shape (1797,)
        The digit, 0 to 9.

    Examples
    --------
    >>> images, labels = load_digits()
    >>> tuple(images.shape), float(images.max()), labels[:5].tolist()
    ((1797, 64), 1.0, [0, 1, 2, 3, 4])
    """
    dtype = _float_dtype(dtype)
    raw = resources.files("ppgen.datasets").joinpath("data/sklearn_digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",",
                       dtype=np.float64)
    images = torch.from_numpy(table[:, :64] / 16.0).to(dtype)
    labels = torch.from_numpy(table[:, 64].astype(np.int64))
    return images, labels


# ----------------------------------------------------------------------------------- MNIST


class DynamicBinarized:
    """Binary images drawn afresh from their intensities each time rows are taken.

    Pixel ``j`` of row ``i`` is a Bernoulli draw with probability ``probs[i, j]`` (the
    intensity); every call of :meth:`take` draws new values, so a model trained on
    minibatches taken this way never sees the same binary image twice (dynamic
    binarization). This is the minibatch protocol of ppgen's training loop: any object with
    ``__len__`` and ``take(index, generator)`` can stand in for a data tensor.

    Parameters
    ----------
    probs : Tensor of shape (num_data, num_features)
        Probabilities in [0, 1], floating.

    Examples
    --------
    >>> data = DynamicBinarized(torch.tensor([[0.0, 1.0, 0.5]]))
    >>> len(data), data.shape, data.take([0]).shape
    (1, torch.Size([1, 3]), torch.Size([1, 3]))
    >>> bool((data.fixed(seed=0) == data.fixed(seed=0)).all())
    True
    """

    def __init__(self, probs: torch.Tensor):
        if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
            raise bad_type("probs", "a floating Tensor of probabilities",
                           type(probs).__name__ if not isinstance(probs, torch.Tensor)
                           else f"Tensor of dtype {probs.dtype}")
        if probs.dim() < 1:
            raise bad_value("probs", "a Tensor with a leading data dimension",
                            f"shape {tuple(probs.shape)}")
        if probs.numel() and not bool(((probs >= 0) & (probs <= 1)).all()):
            raise bad_value("probs", "values in [0, 1]", f"values from {float(probs.min())} "
                            f"to {float(probs.max())}", "Scale the intensities to [0, 1].")
        self.probs = probs

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def shape(self) -> torch.Size:
        """Shape of the data (the same as ``probs``)."""
        return self.probs.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.probs.dtype

    @property
    def device(self) -> torch.device:
        return self.probs.device

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> DynamicBinarized:
        """A copy on ``device`` and/or with floating type ``dtype`` (the same object if
        nothing changes), as ``Tensor.to``."""
        probs = self.probs.to(device=device, dtype=dtype)
        return self if probs is self.probs else DynamicBinarized(probs)

    def take(self, index, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh binary draws of the rows ``index``.

        Parameters
        ----------
        index : int, slice, sequence of int or LongTensor
            The rows, indexed as ``probs[index]``.
        generator : torch.Generator, optional
            The random stream (on the device of ``probs``); the global one when None. The same
            generator state gives the same draws.

        Returns
        -------
        Tensor of shape ``probs[index].shape``, 0/1 values in ``dtype``, on ``device``.
        """
        if isinstance(index, torch.Tensor):
            index = index.to(self.probs.device)
        return torch.bernoulli(self.probs[index], generator=generator)

    def fixed(self, seed: int) -> torch.Tensor:
        """One binarization of every row, the same for the same ``seed`` (for evaluation);
        the global random state is not touched.

        Returns
        -------
        Tensor of shape ``shape``, 0/1 values in ``dtype``, on ``device``.
        """
        from .._random import resolve_seed

        if seed is None:
            raise bad_type("seed", "a non-negative integer", "None",
                           "Pass a seed: fixed() is the reproducible binarization.")
        generator = torch.Generator(device=self.probs.device)
        generator.manual_seed(resolve_seed(seed))
        return torch.bernoulli(self.probs, generator=generator)

    def __repr__(self) -> str:
        return (f"DynamicBinarized(shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"device={self.device})")


def _mnist_dir(data_dir) -> tuple[Path, str]:
    """The folder to read from and where that choice came from (for error messages)."""
    if data_dir is not None:
        if not isinstance(data_dir, str | os.PathLike):
            raise bad_type("data_dir", "a path (str or os.PathLike) or None",
                           type(data_dir).__name__)
        return Path(data_dir), "the data_dir argument"
    env = os.environ.get("PPGEN_DATA_DIR")
    if env:
        return Path(env), "the PPGEN_DATA_DIR environment variable"
    # Same default as ppgen.datasets.data_dir(): the shared folder beside the repository.
    return Path(__file__).resolve().parents[3] / "shared" / "data", "the default ../shared/data"


def _read_npz(name: str, data_dir, arrays: dict[str, tuple[tuple[int, ...], str]]):
    """The named arrays of ``name``, checked against the expected shapes and types."""
    folder, origin = _mnist_dir(data_dir)
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}: not found in {str(folder)!r} (searched: {origin}; data_dir, else "
            "PPGEN_DATA_DIR, else ../shared/data beside the repository). Pass data_dir= or "
            "set PPGEN_DATA_DIR to the folder holding it (the shared data folder; its "
            "MANIFEST.md describes the file). ppgen never downloads data.")
    out = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key, (shape, kind) in arrays.items():
                value = z[key]
                if value.dtype != np.dtype(kind) or (shape and value.shape != shape):
                    raise ValueError(f"array {key!r} has shape {value.shape} and dtype "
                                     f"{value.dtype}, not {shape} {kind}")
                out[key] = value
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{name}: expected a numpy .npz file with arrays "
            + ", ".join(f"{k} {s} {t}" for k, (s, t) in arrays.items())
            + f", got a file at {str(path)!r} that cannot be read as one ({exc}). Replace it "
            "with the file described in the shared data folder's MANIFEST.md.") from exc
    return out


def load_mnist(split: Literal["train", "valid", "test"] = "train", *,
               binarize: Literal["dynamic", "fixed"] | None = None,
               dtype: torch.dtype = torch.float32, data_dir: str | os.PathLike | None = None):
    """MNIST handwritten digits as flat 784-pixel rows, intensities or binarized.

    Read from ``data_dir``, else from ``$PPGEN_DATA_DIR``, else from ``../shared/data``
    beside the repository (files ``mnist.npz`` and ``binarized_mnist_packed.npz``, MANIFEST.md
    sections 1a and 1b); never downloaded. Pixels are row-major 28x28.

    The splits have the sizes of the standard fixed binarized MNIST: "train" 50,000,
    "valid" 10,000, "test" 10,000.

    * ``binarize=None`` or ``"dynamic"``: "train" is the first 50,000 images of MNIST train
      (original order), "valid" its last 10,000, "test" MNIST test (original order; class
      counts 980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009).
    * ``binarize="fixed"``: Larochelle's fixed binarization (Larochelle & Murray 2011). Its
      train and valid together are a random permutation of MNIST train, so its "train" and
      "valid" are **not** the same images as the intensity splits of the same name, and its
      "test" is MNIST test sorted by class. Its rows are grouped, not shuffled: shuffle
      before minibatching. The labels are not stored with it, so ``None`` comes back.

    Parameters
    ----------
    split : {"train", "valid", "test"}
    binarize : {None, "dynamic", "fixed"}
        None: the intensities ``pixel / 255``. "dynamic": a :class:`DynamicBinarized` over
        those intensities, which draws fresh binary pixels each time rows are taken.
        "fixed": the fixed binarized images.
    dtype : torch.dtype
        Floating type of the images (and of the dynamic draws).
    data_dir : str or os.PathLike, optional
        The folder holding the files; overrides ``PPGEN_DATA_DIR``.

    Returns
    -------
    images : Tensor of shape (N, 784) or DynamicBinarized of that shape
        Intensities in [0, 1] (``binarize=None``), 0/1 values (``"fixed"``) or the dynamic
        data set (``"dynamic"``).
    labels : LongTensor of shape (N,), or None
        The digits 0 to 9; None for ``binarize="fixed"``.

    Raises
    ------
    FileNotFoundError
        When the file is not in the folder searched (the message names both).
    ValueError
        For a bad ``split``/``binarize``, or a file that is not the expected .npz.

    Examples
    --------
    >>> x, y = load_mnist("test")  # doctest: +SKIP
    >>> tuple(x.shape), y[:3].tolist()  # doctest: +SKIP
    ((10000, 784), [7, 2, 1])
    >>> train, _ = load_mnist("train", binarize="dynamic")  # doctest: +SKIP
    >>> batch = train.take(torch.arange(128))  # doctest: +SKIP
    """
    if split not in ("train", "valid", "test"):
        raise bad_value("split", "'train', 'valid' or 'test'", repr(split))
    if binarize not in (None, "dynamic", "fixed"):
        raise bad_value("binarize", "None, 'dynamic' or 'fixed'", repr(binarize))
    dtype = _float_dtype(dtype)
    if binarize == "fixed":
        size = MNIST_TRAIN_SIZE if split == "train" else 10_000
        arrays = _read_npz("binarized_mnist_packed.npz", data_dir,
                           {split: ((size, MNIST_PIXELS // 8), "uint8")})
        bits = np.unpackbits(arrays[split], axis=1)[:, :MNIST_PIXELS]
        # unpackbits keeps the packed array's memory order (column-major in the file): rows
        # must be contiguous, or every minibatch gather and product is strided
        return torch.from_numpy(np.ascontiguousarray(bits)).to(dtype), None
    source = "test" if split == "test" else "train"
    size = 10_000 if split == "test" else 60_000
    arrays = _read_npz("mnist.npz", data_dir, {f"x_{source}": ((size, 28, 28), "uint8"),
                                               f"y_{source}": ((size,), "uint8")})
    images, labels = arrays[f"x_{source}"].reshape(size, MNIST_PIXELS), arrays[f"y_{source}"]
    if split != "test":
        rows = slice(0, MNIST_TRAIN_SIZE) if split == "train" else slice(MNIST_TRAIN_SIZE, None)
        images, labels = images[rows], labels[rows]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dtype).div_(255)
    y = torch.from_numpy(labels.astype(np.int64))
    return (DynamicBinarized(x) if binarize == "dynamic" else x), y
