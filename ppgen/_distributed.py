"""Several processes, one fit: the ``torch.distributed`` helpers of ppgen's EM.

Under ``torchrun`` (the ``RANK`` and ``WORLD_SIZE`` variables set) or with a process group
the program initialised itself, :func:`world` reports this process's rank and the number of
processes; a fit then shards the data by rank and sums the E-step's statistics over the
processes with one ``all_reduce`` per iteration (:func:`all_reduce_sum`), so that every rank
holds the same parameters as a single process would. Without either, ``world()`` is
``(0, 1)`` and nothing here touches ``torch.distributed``.

A process group that ppgen starts itself (torchrun's variables, none initialised) uses gloo
on the CPU and NCCL when CUDA is available, with a collective timeout of
``PPGEN_DISTRIBUTED_TIMEOUT`` seconds (default 600), so a rank that hangs makes the others
fail with :class:`DistributedError` instead of waiting forever; a rank that dies closes its
connections and the others fail at their next collective.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch

__all__ = ["world", "is_main_process", "shard_rows", "all_reduce_sum", "broadcast_state",
           "DistributedError"]


class DistributedError(RuntimeError):
    """A collective of a multi-process fit failed: another process stopped or timed out."""


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a distributed job.

    Under torchrun without an initialised process group, one is initialised here (gloo, or
    NCCL with CUDA)."""
    dist = _dist()
    if dist is None:
        return 0, 1
    if not dist.is_initialized():
        size = os.environ.get("WORLD_SIZE")
        if size is None or "RANK" not in os.environ or int(size) <= 1:
            return 0, 1
        timeout = float(os.environ.get("PPGEN_DISTRIBUTED_TIMEOUT", "600"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that prints and writes files."""
    return world()[0] == 0


def shard_rows(num_rows: int, rank: int, size: int) -> slice:
    """The contiguous block of rows of ``rank`` among ``size`` (sizes differ by at most 1)."""
    base, extra = divmod(num_rows, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def _flatten(value: Any, out: list[torch.Tensor]) -> Any:
    """The structure of ``value`` with every number and tensor replaced by its index."""
    if isinstance(value, torch.Tensor):
        out.append(value)
        return ("tensor", len(out) - 1)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return ("const", value)
    if isinstance(value, int | float):
        out.append(torch.tensor(float(value), dtype=torch.float64))
        return ("number", len(out) - 1)
    if isinstance(value, tuple | list):
        return (type(value).__name__, [_flatten(v, out) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: _flatten(v, out) for k, v in value.items()})
    raise TypeError(f"all_reduce_sum: cannot sum a {type(value).__name__}")


def _rebuild(spec: Any, values: list[Any]) -> Any:
    kind, body = spec
    if kind == "tensor":
        return values[body]
    if kind == "number":
        return float(values[body])
    if kind == "const":
        return body
    if kind in ("tuple", "list"):
        items = [_rebuild(s, values) for s in body]
        return tuple(items) if kind == "tuple" else items
    return {k: _rebuild(s, values) for k, s in body.items()}


def _collective(what: str, call) -> None:
    dist = _dist()
    assert dist is not None
    try:
        call()
    except RuntimeError as exc:  # gloo/NCCL errors, timeouts (DistError is a RuntimeError)
        rank, size = dist.get_rank(), dist.get_world_size()
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DistributedError(
            f"{what} across {size} processes failed on rank {rank} ({why}): another process "
            "of the job has stopped or is not responding. The fit was abandoned and the model "
            "left as it was; fix or restart the failed process and run the job again "
            "(training loops resume from their last checkpoint with resume=).") from exc


def all_reduce_sum(value: Any, *, what: str = "EM") -> Any:
    """``value`` (a number, tensor, or tuple/list/dict of them) summed over the processes,
    in one collective (every entry packed into one float64 vector)."""
    tensors: list[torch.Tensor] = []
    spec = _flatten(value, tensors)
    if not tensors:
        return value
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    flat = torch.cat([t.detach().to(device, torch.float64).reshape(-1) for t in tensors])
    dist = _dist()
    assert dist is not None
    _collective(what, lambda: dist.all_reduce(flat))
    out: list[Any] = []
    offset = 0
    for t in tensors:
        n = t.numel()
        out.append(flat[offset:offset + n].view(t.shape).to(t.device, t.dtype))
        offset += n
    return _rebuild(spec, out)


def broadcast_state(state: dict[str, torch.Tensor | None], *,
                    what: str = "EM") -> dict[str, torch.Tensor | None]:
    """Rank 0's tensors of ``state`` (same keys and shapes on every rank), on every rank."""
    dist = _dist()
    assert dist is not None
    out: dict[str, torch.Tensor | None] = {}
    for name, v in state.items():
        if v is None:
            out[name] = None
            continue
        buf = v.detach().clone().contiguous()
        _collective(what, lambda buf=buf: dist.broadcast(buf, src=0))
        out[name] = buf
    return out
