"""Sample metrics for image generators from a small digit classifier trained locally (no
downloaded weights): the Fréchet distance in its feature space, class coverage and the KL
of the predicted class distribution to uniform, and the Stacked MNIST modes of VEEGAN
(Srivastava et al. 2017): three digits as the channels of one image, 1,000 modes.

The classifier (:class:`DigitClassifier`) is a multilayer perceptron 784-512-128-10 (ReLU),
trained by :func:`train_digit_classifier` with Adam on 28x28 digits in [0, 1]; its
128-unit layer gives the features of the Fréchet distance (the role Inception's pool layer
plays in FID, Heusel et al. 2017; numbers on this scale are comparable only with each
other). :func:`digit_classifier` trains it once on MNIST's train split and caches the weights in
``PPGEN_CACHE_DIR`` (default ``~/.cache/ppgen``), keyed by the data file's size and time.

Definitions, for ``N`` samples with predicted classes (the classifier's argmax):

- ``class_coverage``: classes predicted for at least half their uniform share of the samples
  (N / (2 K)), out of K = 10;
- ``class_kl``: KL(p || uniform) of the predicted class frequencies p, in nats (0 when every
  class is as frequent, log K when all samples are one class);
- Stacked MNIST: each channel classified, the mode the triple (c_R, c_G, c_B) = 100 c_R +
  10 c_G + c_B; ``modes`` the modes with at least one sample, ``mode_kl`` KL(p || uniform
  over 1,000) (VEEGAN: 26,000 samples; DCGAN 99 modes, KL 3.4).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._frechet import frechet_distance
from .._random import seeded
from .._validation import bad_type, bad_value, check_positive_float, check_positive_int
from ..io import atomic_write
from .samples import draw_samples

__all__ = ["DigitClassifier", "train_digit_classifier", "digit_classifier", "ImageMetrics",
           "image_metrics", "StackedMetrics", "stacked_mnist_metrics", "make_stacked_mnist"]

#: Bump when the architecture or training recipe changes (cached weights are keyed by it).
_VERSION = 1
_SIDE = 28


class DigitClassifier(nn.Module):
    """784-512-128-10 perceptron over 28x28 digits in [0, 1] (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(_SIDE * _SIDE, 512), nn.ReLU(),
                                    nn.Linear(512, 128), nn.ReLU())
        self.out = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128 features of images ``x`` (N, 28, 28), (N, 1, 28, 28) or (N, 784)."""
        return self.hidden(x.reshape(x.shape[0], -1).to(self.out.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10)."""
        return self.out(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(-1)


def _images(x: Any, arg: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    if t.dim() < 2 or t[0].numel() != _SIDE * _SIDE:
        raise bad_value(arg, "28x28 digit images, shape (N, 28, 28), (N, 1, 28, 28) or "
                        "(N, 784)", f"shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise bad_value(arg, "finite pixel values in [0, 1]", "NaN or infinite values")
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
        raise bad_value(arg, "pixel values in [0, 1]",
                        f"values from {float(t.min()):g} to {float(t.max()):g}",
                        "Scale the images to [0, 1] (e.g. divide 8-bit images by 255).")
    return t.reshape(t.shape[0], -1).float()


def _digit_labels(labels: Any, num: int) -> torch.Tensor:
    y = torch.as_tensor(labels).reshape(-1)
    if y.is_floating_point() or y.dtype == torch.bool:
        raise bad_type("labels", "integer digit classes 0..9", f"dtype {y.dtype}")
    y = y.long()
    if len(y) != num:
        raise bad_value("labels", f"one label per image ({num})", f"{len(y)} labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
        raise bad_value("labels", "digit classes 0..9",
                        f"values {int(y.min())}..{int(y.max())}")
    return y


def _classifier(value: Any) -> DigitClassifier:
    if not isinstance(value, DigitClassifier):
        raise bad_type("classifier", "a DigitClassifier (ppgen.evaluation.images."
                       "digit_classifier() or train_digit_classifier(...))",
                       type(value).__name__)
    return value


def train_digit_classifier(images: Any, labels: Any, *, num_epochs: int = 3,
                           batch_size: int = 128, lr: float = 1e-3, seed: int = 0
                           ) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on ``images`` (N, 28, 28) in [0, 1] with ``labels``
    (N,) in 0..9: Adam, cross-entropy, ``num_epochs`` shuffled epochs; seeded, the global RNG
    untouched. Returns it in eval mode."""
    x = _images(images, "images")
    y = _digit_labels(labels, len(x))
    num_epochs = check_positive_int("num_epochs", num_epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive_float("lr", lr)
    seed = check_positive_int("seed", seed, minimum=0)
    with seeded(seed):
        net = DigitClassifier()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(num_epochs):
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


def _cache_dir() -> Path:
    env = os.environ.get("PPGEN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ppgen"


def digit_classifier(*, data_dir: str | Path | None = None,
                     cache_dir: str | Path | None = None) -> DigitClassifier:
    """The :class:`DigitClassifier` of MNIST's train split (``load_mnist("train")``: 50,000
    images, 3 epochs), from the cache when it holds one for this data file, else trained now
    (under a minute on one CPU core) and cached (written to a temporary file, then renamed,
    so an interrupted run leaves no half-written file)."""
    from ..datasets import data_dir as find_data_dir
    from ..datasets import load_mnist

    folder = Path(data_dir) if data_dir is not None else find_data_dir()
    source = folder / "mnist.npz"
    stat = source.stat()
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    path = cache / f"digit_classifier_v{_VERSION}_{stat.st_size}_{int(stat.st_mtime)}.pt"
    net = DigitClassifier()
    if path.is_file():
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        except Exception:  # noqa: BLE001  (unpickling errors vary): a corrupt cache file
            pass  # is trained again and replaced
    x, y = load_mnist("train", data_dir=folder)
    net = train_digit_classifier(x, y)
    state = net.state_dict()
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return net


def _kl_to_uniform(counts: torch.Tensor) -> float:
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    return float((nz * (nz * len(counts)).log()).sum())


@dataclass(frozen=True)
class ImageMetrics:
    """What :func:`image_metrics` measures (module docstring).

    Attributes
    ----------
    frechet_distance : float
        Between the samples' and the reference images' classifier features (nan without a
        reference).
    class_coverage : int
        Classes predicted for at least half their uniform share.
    class_kl : float
    class_counts : Tensor of shape (10,)
    """

    frechet_distance: float
    class_coverage: int
    class_kl: float
    class_counts: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        return {"frechet_distance": self.frechet_distance,
                "class_coverage": float(self.class_coverage), "class_kl": self.class_kl}


@torch.no_grad()
def image_metrics(sampler: Any, classifier: DigitClassifier, reference: Any = None, *,
                  num_samples: int = 10000, seed: int | None = 0) -> ImageMetrics:
    """Classifier metrics of ``sampler`` (a tensor of images, or a model with
    ``sample(num, seed=)``) against ``reference`` images (held-out real digits; the Fréchet
    distance is nan without them; with fewer than 129 images on either side its 128-feature
    covariances are singular and it is biased upwards: use thousands)."""
    classifier = _classifier(classifier)
    x = _images(draw_samples(sampler, check_positive_int("num_samples", num_samples), seed),
                "samples")
    counts = torch.bincount(classifier.predict(x), minlength=10)
    coverage = int((counts >= len(x) / 20).sum())
    fd = math.nan
    if reference is not None:
        fd = frechet_distance(classifier.features(x).double(),
                              classifier.features(_images(reference, "reference")).double())
    return ImageMetrics(fd, coverage, _kl_to_uniform(counts), counts)


def make_stacked_mnist(images: Any, labels: Any, num: int, *, seed: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked MNIST (VEEGAN): ``num`` images of shape (3, 28, 28), each channel a digit drawn
    uniformly from ``images`` (seeded), and their modes 100 c_R + 10 c_G + c_B (num,)."""
    x = _images(images, "images").reshape(-1, _SIDE, _SIDE)
    y = _digit_labels(labels, len(x))
    g = torch.Generator().manual_seed(check_positive_int("seed", seed, minimum=0))
    idx = torch.randint(len(x), (check_positive_int("num", num), 3), generator=g)
    return x[idx], (y[idx] * torch.tensor([100, 10, 1])).sum(1)


@dataclass(frozen=True)
class StackedMetrics:
    """Stacked MNIST modes (module docstring): ``modes`` with at least one sample of
    ``num_modes`` (1,000), ``mode_kl`` KL(p || uniform) in nats, ``counts`` (1000,)."""

    modes: int
    num_modes: int
    mode_kl: float
    counts: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        return {"modes": float(self.modes), "mode_kl": self.mode_kl}


@torch.no_grad()
def stacked_mnist_metrics(sampler: Any, classifier: DigitClassifier, *,
                          num_samples: int = 26000, seed: int | None = 0) -> StackedMetrics:
    """Modes captured and KL to uniform of 3-channel digit samples (N, 3, 28, 28) (or a
    model drawing them), each channel classified by ``classifier``."""
    classifier = _classifier(classifier)
    x = torch.as_tensor(draw_samples(sampler, check_positive_int("num_samples", num_samples),
                                     seed))
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, _SIDE, _SIDE):
        raise bad_value("samples", "Stacked MNIST images of shape (N, 3, 28, 28)",
                        f"shape {tuple(x.shape)}")
    digits = classifier.predict(_images(x.reshape(-1, _SIDE, _SIDE), "samples"))
    modes = (digits.reshape(-1, 3) * torch.tensor([100, 10, 1])).sum(1)
    counts = torch.bincount(modes, minlength=1000)
    return StackedMetrics(int((counts > 0).sum()), 1000, _kl_to_uniform(counts), counts)
