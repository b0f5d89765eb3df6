"""The k-means++ start shared by the Gaussian mixture and the HMM emissions."""

from __future__ import annotations

import torch

from ._blocks import row_blocks

__all__ = ["kmeans", "kmeans_centers", "nearest"]


def nearest(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest center of every row, block by block."""
    blocks = row_blocks(x.shape[0], max(centers.shape[0], x.shape[1]))
    return torch.cat([torch.cdist(x[b], centers).argmin(1) for b in blocks])


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, num_iters: int = 10):
    """k-means++ seeding followed by a few vectorised Lloyd iterations; returns labels."""
    return nearest(x, kmeans_centers(x, k, generator, num_iters))


def kmeans_centers(x: torch.Tensor, k: int, generator: torch.Generator,
                   num_iters: int = 10) -> torch.Tensor:
    """The centers of :func:`kmeans` (k, d).

    Data of more than one row block (:func:`ppgen.models._blocks.row_blocks`, e.g. a
    memory-mapped file) are read block by block: besides the data, memory holds one vector of
    N distances and block-sized temporaries. Smaller data take the unblocked computation."""
    n, d = x.shape
    blocks = row_blocks(n, max(k, d))
    first = int(torch.randint(n, (1,), generator=generator, device=x.device))
    centers = x[first:first + 1]
    if len(blocks) == 1:
        closest = (x - centers).square().sum(-1)
        for _ in range(1, k):
            probs = closest / closest.sum() if float(closest.sum()) > 0 else \
                torch.ones_like(closest)
            idx = torch.multinomial(probs, 1, generator=generator)
            centers = torch.cat([centers, x[idx]])
            closest = torch.minimum(closest, (x - x[idx]).square().sum(-1))
        for _ in range(num_iters):
            dist2 = torch.cdist(x, centers).square()
            onehot = torch.nn.functional.one_hot(dist2.argmin(1), k).to(x.dtype)
            counts = onehot.sum(0)
            new = (onehot.T @ x) / counts.clamp_min(1).unsqueeze(-1)
            centers = torch.where(counts.unsqueeze(-1) > 0, new, centers)
        return centers
    closest = torch.empty(n, dtype=x.dtype, device=x.device)
    for b in blocks:
        closest[b] = (x[b] - centers).square().sum(-1)
    for _ in range(1, k):
        idx = _draw_row(closest, blocks, generator)
        centers = torch.cat([centers, x[idx:idx + 1]])
        for b in blocks:
            torch.minimum(closest[b], (x[b] - x[idx]).square().sum(-1), out=closest[b])
    for _ in range(num_iters):
        counts = x.new_zeros(k)
        sums = x.new_zeros(k, d)
        for b in blocks:
            xb = x[b]
            onehot = torch.nn.functional.one_hot(torch.cdist(xb, centers).argmin(1),
                                                 k).to(x.dtype)
            counts += onehot.sum(0)
            sums += onehot.T @ xb
        new = sums / counts.clamp_min(1).unsqueeze(-1)
        centers = torch.where(counts.unsqueeze(-1) > 0, new, centers)
    return centers


def _draw_row(weights: torch.Tensor, blocks: list[slice], generator: torch.Generator) -> int:
    """A row drawn with probability proportional to ``weights`` (uniform when all are 0):
    the block first, from the blocks' totals, then the row within it."""
    totals = torch.stack([weights[b].double().sum() for b in blocks])
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if float(totals.sum()) <= 0:
        return min(int(u * weights.shape[0]), weights.shape[0] - 1)
    cdf = totals.cumsum(0)
    j = min(int(torch.searchsorted(cdf, torch.tensor([u * float(cdf[-1])],
                                                     dtype=torch.float64))), len(blocks) - 1)
    before = float(cdf[j - 1]) if j > 0 else 0.0
    inner = weights[blocks[j]].to(torch.float64).cumsum(0)
    i = int(torch.searchsorted(inner, torch.tensor([u * float(cdf[-1]) - before],
                                                   dtype=torch.float64)))
    return blocks[j].start + min(i, inner.shape[0] - 1)
