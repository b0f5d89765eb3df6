"""A chain-batched potential energy: U(q) and grad U(q) for q of shape (num_chains, dim).

Built from Pyro's own potential (``pyro.infer.mcmc.util.initialize_model``: the negative log
joint over the unconstrained values, discrete sites enumerated and summed out, Jacobians of
the transforms included), flattened to one vector per chain, and evaluated for all chains in
one call with ``torch.func.vmap(torch.func.grad_and_value(...))``. The model then runs once
per call, not once per chain, so the cost of C chains grows far slower than C.

The first call checks the vectorised result against a per-chain loop of ordinary autograd;
a model that ``vmap`` cannot run (a value read into Python, an in-place write into a captured
tensor, an op without a batching rule), or that it runs to a different answer, gets a
one-line :class:`VmapFallbackWarning` and the per-chain loop from then on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.ops.einsum.torch_log as _torch_log
import torch
from torch.func import grad_and_value, vmap

from .._warnings import warn_user

__all__ = ["BatchedPotential", "FlatSpec", "VmapFallbackWarning", "no_validation",
           "vmap_ready"]

#: Chains compared against the per-chain loop on the first call.
_CHECK_CHAINS = 4


class VmapFallbackWarning(UserWarning):
    """The model's potential could not be vectorised over chains with ``torch.func.vmap``
    (or gave a different value): it is evaluated one chain after another (same posterior,
    slower with many chains)."""


@dataclass(frozen=True)
class FlatSpec:
    """How the unconstrained sites of a model pack into one flat vector per chain:
    ``names[i]`` holds ``shapes[i]`` in ``[offsets[i], offsets[i] + sizes[i])``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_values(cls, values: dict[str, torch.Tensor]) -> FlatSpec:
        """The spec of one chain's unconstrained values (site -> Tensor)."""
        return cls(tuple(values), tuple(tuple(v.shape) for v in values.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def pack(self, values: dict[str, torch.Tensor], lead: tuple[int, ...] = ()) -> torch.Tensor:
        """site -> Tensor of shape (*lead, *shape)  ->  Tensor of shape (*lead, dim)."""
        return torch.cat([values[n].reshape((*lead, -1)) for n in self.names], dim=-1)

    def unpack(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Tensor of shape (*lead, dim)  ->  site -> Tensor of shape (*lead, *shape)."""
        lead = flat.shape[:-1]
        out = {}
        start = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = flat[..., start:start + size].reshape((*lead, *shape))
            start += size
        return out


class _SafeLog(torch.autograd.Function):
    """Pyro's ``pyro.ops.special.safe_log`` (log with the gradient at 0 clamped to 1 / eps)
    in the form torch.func transforms accept (``setup_context``, a generated vmap rule)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):  # type: ignore[override]
        return x.log()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad / x.clamp(min=torch.finfo(x.dtype).eps)


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    return _SafeLog.apply(x)


@contextmanager
def vmap_ready() -> Iterator[None]:
    """For the block: distribution checks off (:func:`no_validation`) and Pyro's log-space
    einsum (the sum over enumerated discrete sites) using :class:`_SafeLog`, whose old-style
    ``autograd.Function`` vmap refuses; both put back afterwards."""
    previous = _torch_log.safe_log
    try:
        _torch_log.safe_log = _safe_log
        with no_validation():
            yield
    finally:
        _torch_log.safe_log = previous


@contextmanager
def no_validation() -> Iterator[None]:
    """Pyro's and torch's distribution argument checks off for the block (they test values
    with data-dependent Python ``if``s, which ``vmap`` cannot run), then back as they were."""
    torch_default = torch.distributions.Distribution._validate_args
    try:
        with pyro.validation_enabled(False):
            torch.distributions.Distribution.set_default_validate_args(False)
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(torch_default)


class BatchedPotential:
    """U and grad U of a Pyro potential for many chains at once.

    Parameters
    ----------
    potential_fn : callable
        Pyro's potential, ``{site: unconstrained Tensor} -> scalar Tensor``.
    spec : FlatSpec
        How the sites pack into the flat vector.
    vectorize : bool
        Try ``torch.func.vmap`` (checked on the first call); False: the per-chain loop.

    Calling it with ``q`` of shape (num_chains, dim) returns ``(potential, grad)`` of shapes
    (num_chains,) and (num_chains, dim), detached. :attr:`vectorized` says which way it ran
    (None before the first call).
    """

    def __init__(self, potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                 spec: FlatSpec, *, vectorize: bool = True):
        self.potential_fn = potential_fn
        self.spec = spec
        self.vectorized: bool | None = None if vectorize else False
        self._batched = vmap(grad_and_value(self.flat_potential))
        self.fallback_reason: str | None = None

    def flat_potential(self, q: torch.Tensor) -> torch.Tensor:
        """U of one chain's flat vector ``q`` of shape (dim,)."""
        return self.potential_fn(self.spec.unpack(q))

    def loop(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """U and grad U chain by chain (ordinary autograd): the reference and the fallback."""
        values, grads = [], []
        for q_c in q:
            with torch.enable_grad():
                x = q_c.detach().requires_grad_(True)
                u = self.flat_potential(x)
                (g,) = torch.autograd.grad(u, x)
            values.append(u.detach())
            grads.append(g.detach())
        return torch.stack(values).to(q.dtype), torch.stack(grads)

    def vectorized_call(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with vmap_ready():
            grads, values = self._batched(q.detach())
        return values.detach(), grads.detach()

    def __call__(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if q.dim() != 2 or q.shape[-1] != self.spec.dim:
            raise ValueError(f"q: expected shape (num_chains, {self.spec.dim}), got "
                             f"{tuple(q.shape)}.")
        if self.vectorized:
            return self.vectorized_call(q)
        if self.vectorized is None:
            return self._first_call(q)
        return self.loop(q)

    def _first_call(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vmap, checked against the loop on the first chains; the loop where it fails."""
        reference = self.loop(q[:_CHECK_CHAINS])
        try:
            values, grads = self.vectorized_call(q)
        except Exception as exc:  # vmap refused the model
            why = (str(exc).splitlines() or [""])[0][:200]
            return self._fall_back(q, f"{type(exc).__name__}: {why}")
        k = min(len(q), _CHECK_CHAINS)
        if not (_close(values[:k], reference[0]) and _close(grads[:k], reference[1])):
            return self._fall_back(q, "its value or gradient differs from the per-chain loop")
        self.vectorized = True
        return values, grads

    def _fall_back(self, q: torch.Tensor, reason: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.vectorized = False
        self.fallback_reason = reason
        warn_user(f"kernel='chees': the model's potential cannot be vectorised over chains "
                  f"with torch.func.vmap ({reason}); it runs one chain after another (same "
                  "posterior, slower with many chains).", VmapFallbackWarning)
        return self.loop(q)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.detach().abs().nan_to_num(0.0, 0.0, 0.0).max()) if b.numel() else 0.0
    tol = 1e-4 if a.dtype == torch.float32 else 1e-8
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * max(scale, 1.0), equal_nan=True))
