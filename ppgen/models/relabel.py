"""Label switching: relabel posterior draws of mixture components or HMM states so that
slot j means the same component in every draw (pivot reordering, Stephens 2000)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["pivot_permutations", "permute_components", "best_permutations"]


def pivot_permutations(feats: torch.Tensor, max_rounds: int = 20) -> torch.Tensor:
    """Label-switching permutations of draws described by per-component features.

    ``feats`` (S, K, F): draw ``s``'s component ``k`` described by F numbers. Returns
    ``perms`` (S, K) with ``perms[s, j]`` the draw component placed in slot ``j``. The
    reference starts as the first draw (the pivot) and becomes the mean of the relabelled
    draws until no permutation changes (Stephens 2000; Marin, Mengersen & Robert 2005).
    """
    ref = feats[0]
    perms = None
    for _ in range(max_rounds):
        cost = (feats.unsqueeze(-2) - ref).square().sum(-1)  # (S, K_draw, K_ref)
        new = best_permutations(cost)
        if perms is not None and bool((new == perms).all()):
            break
        perms = new
        ref = torch.gather(feats, 1, perms.unsqueeze(-1).expand_as(feats)).mean(0)
    return perms


def permute_components(values: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Draws (S, K, ...) with their components reordered: out[s, j] = values[s, perms[s, j]]."""
    idx = perms.view(perms.shape + (1,) * (values.dim() - 2)).expand(values.shape)
    return torch.gather(values, 1, idx)


def best_permutations(cost: torch.Tensor) -> torch.Tensor:
    """For each draw, the assignment of draw components to reference slots of least cost.

    cost : (S, K, K) with cost[s, i, j] = distance of draw component i to reference slot j.
    Returns (S, K) long: perm[s, j] = the draw component placed in slot j.
    """
    s, k, _ = cost.shape
    if k <= 6:
        perms = torch.tensor(list(itertools.permutations(range(k))), device=cost.device)
        slots = torch.arange(k, device=cost.device)
        total = cost[:, perms, slots].sum(-1)  # (S, P)
        return perms[total.argmin(-1)]
    from scipy.optimize import linear_sum_assignment

    out = np.empty((s, k), dtype=np.int64)
    c = cost.detach().cpu().numpy()
    for i in range(s):  # one small assignment problem per draw (not per data point)
        rows, cols = linear_sum_assignment(c[i])
        out[i, cols] = rows
    return torch.as_tensor(out, device=cost.device)
