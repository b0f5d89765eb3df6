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

import atexit
import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["world", "single_process", "check_same_data", "broadcast_tensors",
           "is_main_process", "shard_rows", "all_reduce_sum", "broadcast_state",
           "broadcast_seed", "owned", "gather_owned", "DistributedError", "BatchShare",
           "data_parallel", "batch_share", "reduce_gradients", "randn_rows"]


class DistributedError(RuntimeError):
    """A collective of a multi-process fit failed: another process stopped or timed out."""


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


_LOCAL = [0]


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Inside, ``ppgen.fit`` ignores the process group and fits in this process alone (a fit
    on rank 0 only, say, which would otherwise wait for the other ranks)."""
    _LOCAL[0] += 1
    try:
        yield
    finally:
        _LOCAL[0] -= 1


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a distributed job and
    inside :func:`single_process`.

    Under torchrun without an initialised process group, one is initialised here: gloo for
    CPU tensors and, with CUDA, NCCL for CUDA tensors (on the device ``LOCAL_RANK``)."""
    dist = _dist()
    if dist is None or _LOCAL[0]:
        return 0, 1
    if not dist.is_initialized():
        size = os.environ.get("WORLD_SIZE")
        if size is None or "RANK" not in os.environ or int(size) <= 1:
            return 0, 1
        timeout = float(os.environ.get("PPGEN_DISTRIBUTED_TIMEOUT", "600"))
        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "cpu:gloo,cuda:nccl"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        atexit.register(_close_group)
    return dist.get_rank(), dist.get_world_size()


def _close_group() -> None:
    """At exit, the group ppgen started is destroyed (left alive, a rank whose peers have
    already exited can abort in gloo's threads)."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()


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
        text = str(exc).lower()
        lost = isinstance(exc, getattr(dist, "DistError", ())) or any(
            w in text for w in ("timed out", "timeout", "closed", "connection", "reset by"))
        if not lost:
            raise  # a wrong device, dtype or size: the error as it is
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


def broadcast_state(state: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """Rank 0's tensors of ``state`` (same keys and shapes on every rank), on every rank, as
    copies (:func:`broadcast_tensors`)."""
    out = {name: None if v is None else v.detach().clone() for name, v in state.items()}
    broadcast_tensors([v for v in out.values() if v is not None])
    return out


def broadcast_seed(seed: int) -> int:
    """Rank 0's seed on every rank (a seed drawn from OS entropy differs between processes),
    unchanged outside a distributed job."""
    if world()[1] == 1:
        return seed
    box = torch.tensor([seed], dtype=torch.int64)
    dist = _dist()
    assert dist is not None
    _collective("the seed's broadcast", lambda: dist.broadcast(box, src=0))
    return int(box)


def owned(num_items: int) -> list[int]:
    """The items (chains) this rank runs: ``i`` with ``i % world_size == rank``."""
    rank, size = world()
    return [i for i in range(num_items) if i % size == rank]


def gather_owned(mine: dict[int, Any], num_items: int, *, what: str = "MCMC") -> list[Any]:
    """Every rank's items (``{index: picklable object}`` of :func:`owned`), in index order,
    on every rank."""
    rank, size = world()
    if size == 1:
        return [mine[i] for i in range(num_items)]
    dist = _dist()
    assert dist is not None
    out = []
    for i in range(num_items):
        box = [mine.get(i)]
        _collective(what, lambda box=box, i=i: dist.broadcast_object_list(box, src=i % size))
        out.append(box[0])
    return out


# ------------------------------------------------------------------ data-parallel training
@dataclass(frozen=True)
class BatchShare:
    """This rank's part of a global minibatch of ``total`` rows: ``rows`` (a slice)."""

    total: int
    rows: slice

    @property
    def weight(self) -> float:
        """The fraction of the global batch this rank holds."""
        return (self.rows.stop - self.rows.start) / self.total


_SHARE: list[BatchShare | None] = [None]


@contextlib.contextmanager
def data_parallel(share: BatchShare) -> Iterator[None]:
    """Inside, a training step is one rank's part of a global step: ``guarded_update``
    sums the gradients over the ranks (weighted by :attr:`BatchShare.weight`), and
    :func:`randn_rows` draws the global batch's noise and keeps this rank's rows."""
    previous, _SHARE[0] = _SHARE[0], share
    try:
        yield
    finally:
        _SHARE[0] = previous


def batch_share() -> BatchShare | None:
    """The share of the data-parallel step in progress (None outside one)."""
    return _SHARE[0]


def reduce_gradients(params: list[torch.Tensor]) -> None:
    """In a data-parallel step, every gradient becomes the global batch's: this rank's,
    weighted by its share of the batch, summed over the ranks (one collective)."""
    share = _SHARE[0]
    if share is None:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(share.weight)
    dist = _dist()
    assert dist is not None
    _collective("the training step", lambda: dist.all_reduce(flat))
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def randn_rows(shape: tuple[int, ...], dim: int, **like: Any) -> torch.Tensor:
    """``torch.randn(shape)``; in a data-parallel step, drawn for the global batch (size
    ``total`` along ``dim``) and narrowed to this rank's rows, so that every row gets the
    noise it gets in one process and the ranks' random states stay equal."""
    share = _SHARE[0]
    if share is None:
        return torch.randn(shape, **like)
    full = list(shape)
    full[dim] = share.total
    return torch.randn(full, **like).narrow(dim, share.rows.start,
                                            share.rows.stop - share.rows.start)


def check_same_data(x: Any, *, arg: str = "data") -> None:
    """Every rank must pass the same data set (each takes its own rows of it): the row count
    and a checksum of rank 0 are compared on every rank, and all raise together when any
    differs."""
    rows = int(x.shape[0]) if hasattr(x, "shape") else len(x)
    total = 0.0
    if isinstance(x, torch.Tensor) and x.numel():
        step = max(1, 1_000_000 // max(1, x[0].numel()))
        total = float(sum(x[i:i + step].double().sum() for i in range(0, rows, step)))
    mine = torch.tensor([float(rows), total], dtype=torch.float64)
    ref = mine.clone()
    dist = _dist()
    assert dist is not None
    _collective("the data check", lambda: dist.broadcast(ref, src=0))
    differs = torch.tensor([0.0 if torch.allclose(mine, ref, rtol=1e-12, atol=0.0)
                            else 1.0], dtype=torch.float64)
    _collective("the data check", lambda: dist.all_reduce(differs))
    if float(differs) > 0:
        raise ValueError(
            f"{arg}: expected the same data set on every rank (each rank fits its own rows "
            f"of it), got {int(float(differs))} rank(s) whose data differ from rank 0's "
            f"(this rank: {rows} rows, checksum {total:.17g}; rank 0: {int(ref[0])} rows, "
            f"checksum {float(ref[1]):.17g}). Pass the whole data set on every rank, e.g. "
            "np.load(path, mmap_mode='r').")


def broadcast_tensors(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values copied into ``tensors`` (same shapes on every rank), in place."""
    dist = _dist()
    assert dist is not None
    for t in tensors:
        buf = t.detach().clone().contiguous()
        _collective("the start's broadcast", lambda buf=buf: dist.broadcast(buf, src=0))
        with torch.no_grad():
            t.copy_(buf)
