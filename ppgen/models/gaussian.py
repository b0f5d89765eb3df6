"""Gaussian algebra shared by the Gaussian mixture and the HMM's Gaussian emissions.

Covariance parameters come in scikit-learn's shapes: (K, D, D) for ``"full"``, (K, D) for
``"diag"`` and (K,) for ``"spherical"``; "components" below are mixture components or HMM
states.
"""

from __future__ import annotations

import math

import torch

__all__ = ["LOG_2PI", "full_covariances", "cholesky", "ill_defined_covariances", "outer_rows",
           "log_gaussian", "log_gaussian_exact", "cancellation_risk", "sufficient_statistics",
           "estimate_parameters"]

LOG_2PI = math.log(2 * math.pi)


def full_covariances(cov: torch.Tensor, covariance: str, num_features: int) -> torch.Tensor:
    """Public covariance parameter (sklearn shapes) -> (..., K, D, D)."""
    if covariance == "full":
        return cov
    eye = torch.eye(num_features, dtype=cov.dtype, device=cov.device)
    if covariance == "diag":
        return cov.unsqueeze(-1) * eye
    return cov[..., None, None] * eye


def cholesky(cov: torch.Tensor, covariance: str) -> torch.Tensor:
    """Cholesky factor (full) or standard deviations (diag/spherical), with a clear error."""
    if covariance == "full":
        chol, info = torch.linalg.cholesky_ex(cov)
        bad = bool((info != 0).any())
    else:
        bad = bool((cov <= 0).any())
        chol = cov.clamp_min(0).sqrt()
    if bad or not bool(torch.isfinite(chol).all()):
        raise ill_defined_covariances()
    return chol


def ill_defined_covariances() -> ValueError:
    """The error for covariances that are not positive definite or not finite."""
    return ValueError(
        "covariances: some components (states) have an ill-defined covariance, "
        "collapsed onto a few identical points. Try fewer components or states, a larger "
        "reg_covar, or scaling the input data."
    )


def outer_rows(x: torch.Tensor) -> torch.Tensor:
    """Row-wise outer products x_n x_n^T flattened: shape (N, D*D)."""
    return (x.unsqueeze(-1) * x.unsqueeze(-2)).reshape(x.shape[0], -1)


def log_gaussian(x: torch.Tensor, locs: torch.Tensor, chol: torch.Tensor,
                  covariance: str, x2: torch.Tensor | None = None) -> torch.Tensor:
    """log N(x_n | locs_k, cov_k) for all n, k: shape (N, K), via a few large matmuls.

    With ``x2`` (the rows' outer products, float64 only) the full-covariance quadratic form
    is x2 @ vec(precision) - 2 x @ (precision mu) + mu' precision mu: one GEMM with inner
    dimension D*D instead of a thin whitening GEMM, and the same ``x2`` serves the M-step.
    """
    n, d = x.shape
    k = locs.shape[0]
    if covariance == "full" and x2 is not None:
        eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(k, d, d)
        inv_chol = torch.linalg.solve_triangular(chol, eye, upper=False)
        prec = inv_chol.transpose(-1, -2) @ inv_chol
        prec_mu = (prec @ locs.unsqueeze(-1)).squeeze(-1)  # (K, D)
        maha = x2 @ prec.reshape(k, d * d).T - 2 * x @ prec_mu.T + (locs * prec_mu).sum(-1)
        log_det = -chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (d * LOG_2PI + maha) + log_det
    if covariance == "full":
        eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(k, d, d)
        # P_k = L_k^{-T}, so that (x - mu)^T cov^{-1} (x - mu) = |(x - mu) P_k|^2.
        prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
        y = (x @ prec_chol.transpose(0, 1).reshape(d, k * d)).view(n, k, d)
        y = y - torch.einsum("kd,kde->ke", locs, prec_chol)
        maha = y.square().sum(-1)
        log_det = -chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    elif covariance == "diag":
        prec = chol.square().reciprocal()  # (K, D)
        maha = (x.square() @ prec.T - 2 * x @ (locs * prec).T
                + (locs.square() * prec).sum(-1))
        log_det = -chol.log().sum(-1)
    else:
        prec = chol.square().reciprocal()  # (K,)
        maha = (x.square().sum(-1, keepdim=True) - 2 * x @ locs.T
                + locs.square().sum(-1)) * prec
        log_det = -d * chol.log()
    return -0.5 * (d * LOG_2PI + maha) + log_det


def cancellation_risk(sq_radius: float, locs: torch.Tensor, chol: torch.Tensor,
                      covariance: str) -> float:
    """Bound on the round-off (nats) of :func:`log_gaussian`'s expanded quadratic form for
    data within ``sq_radius`` (largest squared norm of the centred rows) of the centre:
    eps x (|x|^2 + |mu|^2) x the largest precision. Above ~1e-11 use log_gaussian_exact."""
    if covariance == "full":
        inv = torch.linalg.solve_triangular(
            chol, torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand(
                chol.shape), upper=False)
        prec = float(inv.square().sum((-2, -1)).max())  # trace of the precision
    else:
        prec = float(chol.square().reciprocal().max())
    mu = float(locs.square().sum(-1).max())
    return torch.finfo(chol.dtype).eps * 4 * (sq_radius + mu) * prec


def log_gaussian_exact(x: torch.Tensor, locs: torch.Tensor, chol: torch.Tensor,
                       covariance: str, observed: torch.Tensor | None = None) -> torch.Tensor:
    """log N(x_n | locs_k, cov_k): shape (N, K), from the differences x_n - locs_k.

    Unlike :func:`log_gaussian`, which expands the quadratic form into matrix products (one
    GEMM, but its terms x'Px and mu'Pmu cancel, leaving a round-off of eps times their
    size: 1e-8 relative when means lie hundreds of standard deviations apart), every
    Mahalanobis distance is summed from its own (whitened) differences, as hmmlearn does;
    costs N x K x D memory. ``observed`` (N, D) bool (diag/spherical): coordinates that are
    missing drop out of the density.
    """
    d = x.shape[-1]
    if observed is not None:
        diff = x.unsqueeze(-2) - locs  # (N, K, D)
    if covariance == "full":
        k = locs.shape[0]
        eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(k, d, d)
        prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
        # Whitened differences (x - mu_k) P_k as x P_k - mu_k P_k: one GEMM; its round-off
        # is eps |x| |P| (first order), not the quadratic form's eps |x|^2 |P|^2.
        white = (x @ prec_chol.transpose(0, 1).reshape(d, k * d)).view(-1, k, d)
        white = white - torch.einsum("kd,kde->ke", locs, prec_chol)
        maha = white.square().sum(-1)
        log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (d * LOG_2PI + maha) - log_det
    var = chol.square()
    if covariance == "spherical":
        var = var.unsqueeze(-1).expand(-1, d)
    log_var = var.log()
    if observed is None:
        # One feature at a time: (N, K) passes on contiguous memory (a reduction over the
        # short feature axis of an (N, K, D) tensor is several times slower).
        prec = var.reciprocal()
        xt = x.T.contiguous()
        maha = None
        for j in range(d):
            term = (xt[j].unsqueeze(-1) - locs[:, j]).square_().mul_(prec[:, j])
            maha = term if maha is None else maha.add_(term)
        return -0.5 * (maha + (d * LOG_2PI + log_var.sum(-1)))
    sq = diff.square_().div_(var)
    o = observed.to(x.dtype)
    sq = sq.masked_fill_(~observed.unsqueeze(-2), 0.0)
    return -0.5 * (sq.sum(-1) + o @ (LOG_2PI + log_var).T)


def sufficient_statistics(x: torch.Tensor, resp: torch.Tensor, covariance: str,
                           x2: torch.Tensor | None = None):
    """Responsibility-weighted counts, sums and (uncentred) second moments of one chunk."""
    n, d = x.shape
    k = resp.shape[1]
    nk = resp.sum(0)
    sx = resp.T @ x
    if covariance == "full" and x2 is not None:
        sxx = (resp.T @ x2).view(k, d, d)
    elif covariance == "full":
        sxx = ((resp.unsqueeze(-1) * x.unsqueeze(1)).reshape(n, k * d).T @ x).view(k, d, d)
    elif covariance == "diag":
        sxx = resp.T @ x.square()
    else:
        sxx = resp.T @ x.square().sum(-1)
    return nk, sx, sxx


def estimate_parameters(nk, sx, sxx, num_data, covariance, reg_covar, locs=None):
    """M-step from sufficient statistics (data centred), as scikit-learn estimates them.

    With ``locs`` (centred as the data; held fixed by the fit) the covariances are the
    responsibility-weighted scatter around them, the exact M-step given those means.
    """
    eps = 10 * torch.finfo(nk.dtype).eps
    nk = nk + eps
    weights = nk / nk.sum()
    if locs is None:  # the weighted means
        locs = sx / nk.unsqueeze(-1)
        centre = locs
    else:  # the scatter around the given means: sxx/n - m mu' - mu m' + mu mu'
        centre = 2 * sx / nk.unsqueeze(-1) - locs
    if covariance == "full":
        d = locs.shape[-1]
        if centre is locs:
            cov = sxx / nk[:, None, None] - locs.unsqueeze(-1) * locs.unsqueeze(-2)
        else:
            cross = (sx / nk.unsqueeze(-1)).unsqueeze(-1) * locs.unsqueeze(-2)
            cov = (sxx / nk[:, None, None] - cross - cross.transpose(-1, -2)
                   + locs.unsqueeze(-1) * locs.unsqueeze(-2))
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        cov = cov + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)
    elif covariance == "diag":
        cov = sxx / nk.unsqueeze(-1) - centre * locs + reg_covar
    else:
        d = locs.shape[-1]
        cov = (sxx / nk - (centre * locs).sum(-1)) / d + reg_covar
    return weights, locs, cov


def scale_warnings(x: torch.Tensor, reg_covar: float, name: str) -> list[tuple[str, str]]:
    """Findings about the scale of Gaussian data (N, D), as ``(code, message)``: a
    ``reg_covar`` that is not small against the smallest feature variance (it then shapes
    the covariances more than the data do), and float32 features whose mean is so large
    against their spread that float32's 7 digits round them visibly."""
    from ._blocks import column_moments

    if not x.is_floating_point() or x.dim() != 2 or x.shape[0] < 2:
        return []
    mean, var = column_moments(x, unbiased=False)
    found = []
    positive = torch.where(var > 0, var, torch.full_like(var, math.inf))  # constant: skip
    smallest = float(positive.min())
    if reg_covar > 0 and math.isfinite(smallest) and reg_covar > 1e-2 * smallest:
        j = int(positive.argmin())
        found.append(("reg_covar_large", (
            f"{name}: reg_covar={reg_covar:g} is {reg_covar / smallest:.3g} times the variance "
            f"of feature {j} ({smallest:.3g}), so it shapes the covariances more than the data "
            "do; standardise the data ((x - x.mean(0)) / x.std(0)) or lower reg_covar.")))
    if x.dtype == torch.float32:
        ratio = mean.abs() / var.sqrt().clamp_min(torch.finfo(torch.float64).tiny)
        bad = [int(j) for j in torch.nonzero(ratio > 1e4).flatten()]
        if bad:
            worst = bad[int(ratio[bad].argmax())]
            found.append(("precision_loss", (
                f"{name}: float32 data whose feature {worst} has a mean {float(ratio[worst]):.3g} "
                f"times its standard deviation ({len(bad)} feature(s) above 1e4): float32 keeps "
                "about 7 significant digits, so these values are visibly rounded; centre the "
                "data (x - x.mean(0)) or pass float64.")))
    return found
