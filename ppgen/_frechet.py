"""The Fréchet distance between two sets of vectors (the Gaussians fitted to them), below the
model families so that training objectives can monitor it; public in
:mod:`ppgen.evaluation.samples`."""

from __future__ import annotations

import torch

__all__ = ["frechet_distance"]


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of the Gaussians
    fitted (mean, covariance) to the rows of ``a`` (N, F) and ``b`` (M, F); in float64."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa = torch.atleast_2d(torch.cov(a.T))
    sb = torch.atleast_2d(torch.cov(b.T))
    root = _sqrtm_psd(sa)
    cross = _sqrtm_psd(root @ sb @ root)
    value = (mu_a - mu_b).square().sum() + torch.trace(sa) + torch.trace(sb) \
        - 2 * torch.trace(cross)
    return float(value.clamp_min(0))
