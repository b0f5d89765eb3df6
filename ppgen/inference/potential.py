"""A chain-batched potential energy: U(q) and grad U(q) for q of shape (num_chains, dim).

Built from Pyro's own potential (``pyro.infer.mcmc.util.initialize_model``: the negative log
joint over the unconstrained values, discrete sites enumerated and summed out, Jacobians of
the transforms included), flattened to one vector per chain, and evaluated for all chains in
one call with ``torch.func.vmap(torch.func.grad_and_value(...))``. The model then runs once
per call, not once per chain, so the cost of C chains grows far slower than C.

For a model without discrete sites a faster form comes first (:func:`chain_plate_potential`):
the model runs once with the chains along an extra outermost ``pyro.plate`` (values of shape
(C, ...)), its per-chain log density summed site by site, compiled by the PyTorch JIT for the
run's number of chains (about 5x faster per call than ``vmap`` on eight schools; the
uncompiled form where the trace warns of values read into Python or disagrees at a second
point).

The first call checks the vectorised result against a per-chain loop of ordinary autograd;
a model that neither form can run (a value read into Python, an in-place write into a
captured tensor, an op without a batching rule, shapes that ignore the chain plate), or runs
to a different answer, gets a one-line :class:`VmapFallbackWarning` and the per-chain loop
from then on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.ops.einsum.torch_log as _torch_log
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.subsample_messenger import _Subsample
from torch.func import grad_and_value, vmap

from .._warnings import warn_user

__all__ = ["BatchedPotential", "FlatSpec", "VmapFallbackWarning", "no_validation",
           "vmap_ready", "chain_plate_potential", "CHAIN_PLATE"]

#: The name of the plate of chains of :func:`chain_plate_potential`.
CHAIN_PLATE = "_ppgen_chains"

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


def chain_plate_potential(model_fn: Callable, args: tuple, kwargs: dict, spec: FlatSpec,
                          transforms: dict, batch_dims: dict[str, int],
                          max_plate_nesting: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """U for q of shape (C, dim) from one run of a model without discrete latent sites, the
    chains along a plate left of the model's own plates: each latent value is conditioned
    to shape (C, 1, ..., 1, *site shape) and every site's log density (scaled and masked as
    Pyro scores it) is summed per chain, plus the log Jacobians of the transforms to the
    constrained values. ``batch_dims`` holds the number of batch dimensions of each site
    (:class:`~ppgen.inference.tracing.ModelInfo`). A model whose shapes ignore the plate
    raises or disagrees with the per-chain loop, which :class:`BatchedPotential` checks."""
    dim = -max_plate_nesting - 1

    def potential(q: torch.Tensor) -> torch.Tensor:
        num = q.shape[0]
        values = spec.unpack(q)
        log_joint = q.new_zeros(num)
        conditioned = {}
        for name in spec.names:
            to_constrained = transforms[name].inv
            value = to_constrained(values[name])
            jacobian = to_constrained.log_abs_det_jacobian(values[name], value)
            log_joint = log_joint + jacobian.reshape(num, -1).sum(-1)
            pad = max_plate_nesting - batch_dims.get(name, 0)
            conditioned[name] = value.reshape(num, *(1,) * pad, *value.shape[1:])
        model = poutine.condition(model_fn, data=conditioned)
        with pyro.plate(CHAIN_PLATE, num, dim=dim):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or name == CHAIN_PLATE or \
                    isinstance(site["fn"], _Subsample) or site["infer"].get("_deterministic"):
                continue
            log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"],
                                      site["mask"])
            if not isinstance(log_prob, torch.Tensor):
                log_prob = q.new_tensor(log_prob)
            if log_prob.dim() == -dim and log_prob.shape[0] == num:
                log_joint = log_joint + log_prob.reshape(num, -1).sum(-1)
            else:  # the site does not depend on the chain
                log_joint = log_joint + log_prob.sum()
        return -log_joint

    return potential


class BatchedPotential:
    """U and grad U of a Pyro potential for many chains at once.

    Parameters
    ----------
    potential_fn : callable
        Pyro's potential, ``{site: unconstrained Tensor} -> scalar Tensor``.
    spec : FlatSpec
        How the sites pack into the flat vector.
    vectorize : bool
        Try the vectorised forms (checked on the first call); False: the per-chain loop.
    plate_fn : callable, optional
        The chain-plate potential (:func:`chain_plate_potential`), tried first (compiled,
        then uncompiled) before ``torch.func.vmap``.

    Calling it with ``q`` of shape (num_chains, dim) returns ``(potential, grad)`` of shapes
    (num_chains,) and (num_chains, dim), detached. :attr:`mode` says which form runs
    (``"plate-jit"``, ``"plate"``, ``"vmap"`` or ``"loop"``; None before the first call).
    The forms agree to float rounding; which one runs is decided the same way every time,
    so a seeded fit is reproducible (draws from different forms part ways after many
    iterations, as rounding differences grow along trajectories; the posterior does not).
    """

    def __init__(self, potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                 spec: FlatSpec, *, vectorize: bool = True,
                 plate_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.potential_fn = potential_fn
        self.spec = spec
        self.plate_fn = plate_fn
        #: How the chains are evaluated: "plate-jit", "plate", "vmap" or "loop" (None
        #: before the first call).
        self.mode: str | None = None if vectorize else "loop"
        self._batched = vmap(grad_and_value(self.flat_potential))
        self._compiled: tuple[int, Callable] | None = None
        self.fallback_reason: str | None = None

    @property
    def vectorized(self) -> bool | None:
        """Whether all chains run in one call (None before the first call)."""
        return None if self.mode is None else self.mode != "loop"

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
        """U and grad U of all chains by ``torch.func.vmap``."""
        with vmap_ready():
            grads, values = self._batched(q.detach())
        return values.detach(), grads.detach()

    def plate_call(self, q: torch.Tensor, fn: Callable | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """U and grad U of all chains from one run of the chain-plate potential ``fn``
        (default :attr:`plate_fn`) and one backward pass (the chains are independent)."""
        fn = fn if fn is not None else self.plate_fn
        with torch.enable_grad(), no_validation():
            x = q.detach().requires_grad_(True)
            u = fn(x)
            (g,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), g.detach()

    def _compile(self, q: torch.Tensor) -> Callable:
        """The chain-plate potential traced by the PyTorch JIT for ``len(q)`` chains; raises
        where the tracer warns of values read into Python (which a trace freezes)."""
        with no_validation(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            traced = torch.jit.trace(self.plate_fn, (q.detach(),), check_trace=False)
        # This module's own shape tests are constants for the traced number of chains.
        frozen = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
                  and "Converting a tensor to a Python" in str(w.message)
                  and w.filename != __file__]
        if frozen:
            raise RuntimeError("the JIT tracer froze a value read into Python")
        return traced

    def __call__(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if q.dim() != 2 or q.shape[-1] != self.spec.dim:
            raise ValueError(f"q: expected shape (num_chains, {self.spec.dim}), got "
                             f"{tuple(q.shape)}.")
        if self.mode is None:
            return self._first_call(q)
        if self.mode == "plate-jit":
            if self._compiled is not None and self._compiled[0] == len(q):
                return self.plate_call(q, self._compiled[1])
            return self.plate_call(q)  # another number of chains: uncompiled
        if self.mode == "plate":
            return self.plate_call(q)
        if self.mode == "vmap":
            return self.vectorized_call(q)
        return self.loop(q)

    def _agrees(self, out: tuple[torch.Tensor, torch.Tensor],
                reference: tuple[torch.Tensor, torch.Tensor]) -> bool:
        k = len(reference[0])
        return _close(out[0][:k], reference[0]) and _close(out[1][:k], reference[1])

    def _first_call(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fastest form that agrees with the per-chain loop on the first chains: the
        compiled chain plate (checked at ``q`` and at a second, perturbed point, where a
        trace that froze a branch or shape disagrees), the uncompiled chain plate, vmap;
        else the loop, with a :class:`VmapFallbackWarning`."""
        reference = self.loop(q[:_CHECK_CHAINS])
        reasons = []
        if self.plate_fn is not None:
            try:
                out = self.plate_call(q)
                plate_ok = self._agrees(out, reference)
            except Exception as exc:  # the model ignores the plate of chains
                plate_ok = False
                reasons.append(f"chain plate: {_first_line(exc)}")
            if plate_ok:
                try:
                    compiled = self._compile(q)
                    other = q + 0.3 * torch.randn(q.shape, dtype=q.dtype, device=q.device,
                                                  generator=_fixed_generator(q.device))
                    if self._agrees(self.plate_call(q, compiled), reference) and \
                            self._agrees(self.plate_call(other, compiled),
                                         self.loop(other[:_CHECK_CHAINS])):
                        self._compiled = (len(q), compiled)
                        self.mode = "plate-jit"
                        return self.plate_call(q, compiled)
                except Exception:  # the tracer refused the model: uncompiled
                    pass
                self.mode = "plate"
                return out
            if not reasons:
                reasons.append("chain plate: differs from the per-chain loop")
        try:
            out = self.vectorized_call(q)
        except Exception as exc:  # vmap refused the model
            reasons.append(f"vmap: {_first_line(exc)}")
            return self._fall_back(q, "; ".join(reasons))
        if not self._agrees(out, reference):
            reasons.append("vmap: its value or gradient differs from the per-chain loop")
            return self._fall_back(q, "; ".join(reasons))
        self.mode = "vmap"
        return out

    def _fall_back(self, q: torch.Tensor, reason: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.mode = "loop"
        self.fallback_reason = reason
        warn_user(f"kernel='chees': the model's potential cannot be vectorised over chains "
                  f"({reason}); it runs one chain after another (same posterior, slower "
                  "with many chains).", VmapFallbackWarning)
        return self.loop(q)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"


def _fixed_generator(device: torch.device) -> torch.Generator:
    """A generator of its own for the check's second point (the run's RNGs stay as they
    are, so a fit's draws do not depend on which form was chosen)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(0)
    return generator


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.detach().abs().nan_to_num(0.0, 0.0, 0.0).max()) if b.numel() else 0.0
    tol = 1e-4 if a.dtype == torch.float32 else 1e-8
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * max(scale, 1.0), equal_nan=True))
