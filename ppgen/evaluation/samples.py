"""Sample-quality metrics for any sampler: a tensor of samples, or a model with
``sample(num, seed=)`` (GANs, VAEs, Boltzmann machines, mixtures alike).

2-D mixtures (the ring of 8 and grid of 25 Gaussians of VEEGAN, Srivastava et al. 2017, and
PacGAN, Lin et al. 2018): each of ``num_samples`` (2,500) samples goes to its nearest mode;
it is *high quality* when it lies within 3 standard deviations of that mode. A mode is
*captured* when at least ``min_count`` high-quality samples (1 by default) fall on it. The
reverse KL is KL(q || uniform) over the modes, q the distribution of the high-quality samples
over modes (0 when q is uniform; log K when all sit on one mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .._frechet import frechet_distance
from .._validation import bad_value, check_positive_float, check_positive_int

__all__ = ["MixtureMetrics", "mixture_metrics", "frechet_distance", "draw_samples"]


@dataclass(frozen=True)
class MixtureMetrics:
    """What :func:`mixture_metrics` measures.

    Attributes
    ----------
    modes_captured : int
        Modes with at least ``min_count`` high-quality samples.
    num_modes : int
    high_quality : float
        Percentage (0-100) of samples within 3 standard deviations of their nearest mode.
    reverse_kl : float
        KL(q || uniform over modes) in nats, q over the high-quality samples (inf when there
        are none).
    counts : Tensor of shape (num_modes,)
        High-quality samples per mode.
    """

    modes_captured: int
    num_modes: int
    high_quality: float
    reverse_kl: float
    counts: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        return {"modes": float(self.modes_captured), "high_quality": self.high_quality,
                "reverse_kl": self.reverse_kl}


def draw_samples(sampler: Any, num_samples: int, seed: int | None = 0) -> torch.Tensor:
    """``sampler`` itself when it is a tensor, else ``sampler.sample(num_samples, seed=)``."""
    if isinstance(sampler, torch.Tensor):
        return sampler
    if not hasattr(sampler, "sample"):
        raise bad_value("sampler", "a Tensor of samples or a model with sample(num, seed=)",
                        type(sampler).__name__)
    return sampler.sample(check_positive_int("num_samples", num_samples), seed=seed)


def mixture_metrics(sampler: Any, modes: Any, std: float, *, num_samples: int = 2500,
                    min_count: int = 1, seed: int | None = 0) -> MixtureMetrics:
    """Modes captured, % high-quality samples and reverse KL over modes (module docstring).

    Parameters
    ----------
    sampler : Tensor of shape (S, F), or a model with ``sample(num, seed=)``
    modes : Tensor of shape (K, F)
        The mixture's centres (e.g. ``make_ring(...)[1]["modes"]``).
    std : float
        The components' standard deviation.
    num_samples : int
        Samples drawn from a model (2,500 as in VEEGAN and PacGAN).
    min_count : int
        High-quality samples a mode needs to count as captured.
    seed : int, optional
        Seed of the model's draws.

    Examples
    --------
    >>> import ppgen
    >>> x, p = ppgen.datasets.make_ring(2500, seed=1)
    >>> m = mixture_metrics(x, p["modes"], p["std"])
    >>> m.modes_captured, m.high_quality > 99, m.reverse_kl < 0.01
    (8, True, True)
    """
    std = check_positive_float("std", std)
    min_count = check_positive_int("min_count", min_count)
    centres = torch.as_tensor(modes, dtype=torch.float64)
    x = draw_samples(sampler, num_samples, seed).detach().double().cpu()
    x = x.reshape(x.shape[0], -1)
    if centres.dim() != 2 or x.shape[1] != centres.shape[1]:
        raise bad_value("modes", f"a (K, {x.shape[1]}) tensor of centres",
                        f"shape {tuple(centres.shape)}")
    dist = torch.cdist(x, centres)
    nearest = dist.min(1)
    good = nearest.values <= 3 * std
    k = centres.shape[0]
    counts = torch.bincount(nearest.indices[good], minlength=k)
    total = int(counts.sum())
    if total == 0:
        kl = math.inf
    else:
        q = counts.double() / total
        q = q[q > 0]
        kl = float((q * (q * k).log()).sum())
    return MixtureMetrics(modes_captured=int((counts >= min_count).sum()), num_modes=k,
                          high_quality=100.0 * float(good.double().mean()), reverse_kl=kl,
                          counts=counts)
