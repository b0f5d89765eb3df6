"""Findings about the scale of real-valued data fed to networks (VAE, Gaussian RBM, GAN).

Networks start at unit scale: initial weights, biases and outputs of order 1, and optimiser
steps (Adam's learning rate) of fixed size. Data whose features sit far from that (scaled or
shifted by 1e6, pixels in 0..255, all values below 1e-2) are fitted slowly and badly without
any error: finite losses, samples and log-likelihoods at the wrong scale. These findings say
so, with the remedy; ``ppgen.fit`` turns them into warnings and diagnostics."""

from __future__ import annotations

import torch

from ._blocks import column_moments, row_blocks

__all__ = ["LARGE", "SMALL", "unit_scale_warnings", "output_range_warnings"]

#: A feature whose absolute mean or standard deviation exceeds this is far from unit scale.
LARGE = 100.0
#: Data whose every feature has absolute mean plus standard deviation below this, too.
SMALL = 1e-2

_REMEDY = ("standardise the data, z = (x - x.mean(0)) / x.std(0) (features of standard "
           "deviation 0: leave the division out), fit z, and map draws back with "
           "z * std + mean.")


def unit_scale_warnings(x: torch.Tensor, name: str) -> list[tuple[str, str]]:
    """``("data_scale", message)`` when the training data (N, D) are far from unit scale:
    a feature with ``|mean|`` or standard deviation above :data:`LARGE`, or every feature
    within :data:`SMALL` of zero (and not all zero). Column moments are taken in row
    blocks (a memory-mapped file is not copied)."""
    if not x.is_floating_point() or x.dim() != 2 or x.shape[0] < 2 or x.shape[1] == 0:
        return []
    mean, var = column_moments(x, unbiased=False)
    mean, std = mean.double(), var.double().sqrt()
    size = torch.maximum(mean.abs(), std)
    j = int(size.argmax())
    if float(size[j]) > LARGE:
        return [("data_scale", (
            f"{name}: feature {j} has mean {float(mean[j]):.3g} and standard deviation "
            f"{float(std[j]):.3g}, far from the unit scale the networks start at (weights, "
            f"outputs and optimiser steps of order 1; |mean| or std above {LARGE:g}), so the "
            "fit moves slowly and its samples (and log-likelihoods) miss the data without an "
            f"error; {_REMEDY}"))]
    reach = float((mean.abs() + std).max())
    if 0 < reach < SMALL:
        return [("data_scale", (
            f"{name}: every feature lies within {reach:.3g} of zero (|mean| + std below "
            f"{SMALL:g}), far below the unit scale the networks start at, so the fit's "
            f"samples (and log-likelihoods) miss the data's scale without an error; "
            f"{_REMEDY}"))]
    return []


def output_range_warnings(x: torch.Tensor, name: str, output: str, low: float,
                          high: float) -> list[tuple[str, str]]:
    """``("data_range", message)`` when data (N, D) reach outside ``[low, high]``, the range
    of a generator's bounded ``output`` activation, which can then never produce them."""
    if x.numel() == 0:
        return []
    blocks = row_blocks(x.shape[0], max(1, x[0].numel()))
    lo = min(float(x[b].min()) for b in blocks)
    hi = max(float(x[b].max()) for b in blocks)
    if lo >= low and hi <= high:
        return []
    return [("data_range", (
        f"{name}: output={output!r} generates values in [{low:g}, {high:g}], but the data run "
        f"from {lo:.4g} to {hi:.4g}, so the generator can never match them; scale the data "
        f"into [{low:g}, {high:g}] (e.g. pixels / 255) or use output='linear'."))]
