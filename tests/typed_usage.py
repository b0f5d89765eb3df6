"""What an editor sees of ppgen's public API, checked by mypy in ``make typecheck``.

This file is type-checked, not run (it fits nothing). ``assert_type`` fails the check when a
public signature loses its types (for example when a decorator hides a class's constructor);
each ``# type: ignore[...]`` marks a call that must be rejected, and ``warn_unused_ignores``
fails the check if mypy ever accepts it (which it would if ppgen were seen as untyped).
"""

from __future__ import annotations

from pathlib import Path

import torch
from typing_extensions import assert_type

import ppgen
from ppgen import (
    LDA,
    VAE,
    ConditionalVAE,
    Fit,
    GaussianMixture,
    GenerativeModel,
    HiddenMarkovModel,
    ProdLDA,
)
from ppgen.models.base import register


def constructors() -> None:
    # Decorated with @register, the classes keep their own constructors.
    assert_type(GaussianMixture(num_components=2), GaussianMixture)
    assert_type(GaussianMixture(2, covariance="diag"), GaussianMixture)
    assert_type(HiddenMarkovModel(3), HiddenMarkovModel)
    assert_type(HiddenMarkovModel(3, emission="bernoulli"), HiddenMarkovModel)
    assert_type(LDA(20), LDA)
    assert_type(ProdLDA(20), ProdLDA)
    assert_type(VAE(64, latent_dim=8, hidden_dims=(128,)), VAE)
    assert_type(ConditionalVAE(64, 10, latent_dim=8), ConditionalVAE)


def rejected() -> None:
    GaussianMixture(num_componentz=2)  # type: ignore[call-arg]
    GaussianMixture(2, covariance="diagonal")  # type: ignore[arg-type]
    HiddenMarkovModel(3, "bernoulli")  # type: ignore[call-arg]
    ppgen.fit(GaussianMixture(2), None, method="gibbs")  # type: ignore[arg-type]


def fitting(x: torch.Tensor) -> None:
    gmm = GaussianMixture(num_components=2)
    fit = ppgen.fit(gmm, x, method="em", seed=0, progress=False)
    assert_type(fit, Fit)
    assert_type(fit.converged, "bool | None")
    assert_type(fit.diagnose(), list[ppgen.Diagnostic])
    assert_type(gmm.log_prob(x), torch.Tensor)
    assert_type(gmm.bic(x), float)
    assert_type(ppgen.save(gmm, "gmm.pt"), Path)
    assert_type(ppgen.load("gmm.pt"), GenerativeModel)


def own_model(data: torch.Tensor | None = None) -> None:
    """A user's Pyro function is accepted by fit."""


def user_functions(x: torch.Tensor) -> None:
    assert_type(ppgen.fit(own_model, x, method="svi", num_steps=10), Fit)


@register("typing-usage-example")
class MyModel(GenerativeModel):
    def __init__(self, width: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.width = width
        self.scale = scale


def registered_user_class() -> None:
    assert_type(MyModel(3, scale=2.0), MyModel)
    # mypy ignores what a class decorator returns, so check register's type as a call too
    # (pyright applies it to the decorated class: a register typed to return
    # type[GenerativeModel] erased every model's constructor there).
    assert_type(register("typing-usage-call")(MyModel), type[MyModel])
    MyModel(3, 2.0)  # type: ignore[call-arg]
