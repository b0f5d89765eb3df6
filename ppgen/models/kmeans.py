"""The k-means++ start shared by the Gaussian mixture and the HMM emissions."""

from __future__ import annotations

import torch

__all__ = ["kmeans"]


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, num_iters: int = 10):
    """k-means++ seeding followed by a few vectorised Lloyd iterations; returns labels."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator, device=x.device))
    centers = x[first:first + 1]
    closest = (x - centers).square().sum(-1)
    for _ in range(1, k):
        probs = closest / closest.sum() if float(closest.sum()) > 0 else torch.ones_like(closest)
        idx = torch.multinomial(probs, 1, generator=generator)
        centers = torch.cat([centers, x[idx]])
        closest = torch.minimum(closest, (x - x[idx]).square().sum(-1))
    for _ in range(num_iters):
        dist2 = torch.cdist(x, centers).square()
        labels = dist2.argmin(1)
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        counts = onehot.sum(0)
        new = (onehot.T @ x) / counts.clamp_min(1).unsqueeze(-1)
        centers = torch.where(counts.unsqueeze(-1) > 0, new, centers)
    return torch.cdist(x, centers).argmin(1)
