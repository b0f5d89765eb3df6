"""Synthetic generators: data together with the parameters that generated them."""

from __future__ import annotations

import torch

from .._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["make_mixture"]


def make_mixture(num_data: int, num_components: int, num_features: int, *,
                 covariance: str = "full", separation: float = 4.0, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
    """Draw data from a random Gaussian mixture.

    Parameters
    ----------
    separation : float
        Typical distance between component means, in units of the component scales.

    Returns
    -------
    data : Tensor of shape (num_data, num_features)
    params : dict with ``weights`` (K,), ``locs`` (K, D), ``covariances`` (sklearn shapes for
        ``covariance``) and ``labels`` (num_data,), the true component of each row.
    """
    n = check_positive_int("num_data", num_data)
    k = check_positive_int("num_components", num_components)
    d = check_positive_int("num_features", num_features)
    check_choice("covariance", covariance, ("full", "diag", "spherical"))
    separation = check_positive_float("separation", separation)
    g = torch.Generator().manual_seed(int(seed))
    weights = torch.rand(k, generator=g, dtype=dtype) + 0.5
    weights = weights / weights.sum()
    locs = torch.randn(k, d, generator=g, dtype=dtype) * separation
    if covariance == "full":
        a = torch.randn(k, d, d, generator=g, dtype=dtype) / d ** 0.5
        cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=dtype)
        tril = torch.linalg.cholesky(cov)
    elif covariance == "diag":
        cov = torch.rand(k, d, generator=g, dtype=dtype) + 0.5
        tril = torch.diag_embed(cov.sqrt())
    else:
        cov = torch.rand(k, generator=g, dtype=dtype) + 0.5
        tril = cov.sqrt()[:, None, None] * torch.eye(d, dtype=dtype)
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    eps = torch.randn(n, d, generator=g, dtype=dtype)
    x = locs[labels] + (tril[labels] @ eps.unsqueeze(-1)).squeeze(-1)
    return x, {"weights": weights, "locs": locs, "covariances": cov, "labels": labels}
