"""Latent search: the z whose generated datum best fits the observed entries of x under the
prior (Yeh et al. 2017's inpainting; AnoGAN's reconstruction, Schlegl et al. 2017).

For each row, minimise over z

    sum_j m_j (x_j - g(z)_j)^2 / (2 sigma^2) + ||z||^2 / 2

(m the mask of observed entries, sigma the observation scale: the negative log joint density
of the Gaussian observation model up to constants) with Adam, from ``num_restarts`` prior
draws per row, all rows and restarts at once; the restart with the lowest final objective is
kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["latent_search"]


def latent_search(x: torch.Tensor, observed: torch.Tensor,
                  generator: Callable[[torch.Tensor], torch.Tensor], *, latent_dim: int,
                  obs_scale: float, num_steps: int, num_restarts: int, lr: float,
                  generator_rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The best latent per row (N, L) and its objective (N,) (module docstring).

    ``x`` (N, D) with anything in unobserved entries, ``observed`` a bool mask (N, D)."""
    n, d = x.shape
    r = num_restarts
    target = x.unsqueeze(0).expand(r, n, d).reshape(r * n, d)
    mask = observed.unsqueeze(0).expand(r, n, d).reshape(r * n, d).to(x.dtype)
    target = target * mask
    z = torch.randn(r * n, latent_dim, dtype=x.dtype, device=x.device,
                    generator=generator_rng).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    inv = 0.5 / obs_scale ** 2

    def objective(zz: torch.Tensor) -> torch.Tensor:
        resid = (generator(zz) - target) * mask
        return inv * resid.square().sum(-1) + 0.5 * zz.square().sum(-1)

    with torch.enable_grad():
        for _ in range(num_steps):
            opt.zero_grad(set_to_none=True)
            objective(z).sum().backward()
            opt.step()
    with torch.no_grad():
        final = objective(z).reshape(r, n)
        best = final.argmin(0)
        zs = z.detach().reshape(r, n, latent_dim)
        rows = torch.arange(n, device=x.device)
        return zs[best, rows], final[best, rows]
