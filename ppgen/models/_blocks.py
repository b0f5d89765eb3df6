"""Row blocks: statistics of data of any size (a memory-mapped file) without full-size
temporaries. Data that fit in one block take exactly the unblocked computation."""

from __future__ import annotations

import torch

__all__ = ["BLOCK_ELEMENTS", "row_blocks", "column_moments"]

#: Rows per block are chosen so that a block's (rows, width) temporaries hold about this
#: many elements.
BLOCK_ELEMENTS = 1_000_000


def row_blocks(num_rows: int, width: int) -> list[slice]:
    """Consecutive row slices whose (rows, width) temporaries hold ~:data:`BLOCK_ELEMENTS`."""
    size = max(1, BLOCK_ELEMENTS // max(1, width))
    return [slice(i, min(i + size, num_rows)) for i in range(0, num_rows, size)]


def column_moments(x: torch.Tensor, *, unbiased: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and variances of ``x`` (N, D), as ``x.mean(0)`` and ``x.var(0)`` (two
    passes over the rows block by block: the mean, then the squared deviations)."""
    blocks = row_blocks(x.shape[0], x.shape[1])
    if len(blocks) == 1:
        return x.mean(0), x.var(0, unbiased=unbiased)
    n = x.shape[0]
    mean = sum(x[b].sum(0) for b in blocks) / n
    sq = sum((x[b] - mean).square().sum(0) for b in blocks)
    return mean, sq / max(n - 1 if unbiased else n, 1)
