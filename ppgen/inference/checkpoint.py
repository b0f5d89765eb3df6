"""Checkpoints of the training loop: one file, written atomically, read without unpickling.

A checkpoint is ``DIR/checkpoint.pt``: a ``torch.save`` of a plain dict of tensors, numbers and
strings (the model's ``state_dict``, the objective's optimiser and scheduler states, the loop's
position and history, and every RNG state), read back with ``torch.load(weights_only=True)``.
The new file is written beside the old one and renamed over it, so the previous checkpoint
stays complete until the new one is.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import bad_value
from ..io import atomic_write, read_payload, torch_writer

__all__ = ["FORMAT", "VERSION", "checkpoint_file", "write_checkpoint", "read_checkpoint",
           "rng_state", "set_rng_state"]

FORMAT = "ppgen-checkpoint"
VERSION = 1
FILE_NAME = "checkpoint.pt"


def checkpoint_file(directory: str | os.PathLike) -> Path:
    return Path(directory) / FILE_NAME


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and numbers (torch, CUDA, numpy, python)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.random.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()),
                     p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(directory: str | os.PathLike, payload: dict[str, Any],
                     fingerprint: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors, numbers, strings) atomically to ``DIR/checkpoint.pt``."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    full = {"format": FORMAT, "version": VERSION,
            "fingerprint": json.dumps(fingerprint, sort_keys=True), **payload}
    return atomic_write(checkpoint_file(directory), torch_writer(full))


def read_checkpoint(directory: str | os.PathLike, fingerprint: dict[str, Any], *,
                    map_location: torch.device | str | None = None) -> dict[str, Any]:
    """Read ``DIR/checkpoint.pt`` and check it belongs to this fit: the same model class and
    configuration, method, objective and data. Corrupt, truncated and foreign files are
    refused with a clear error; nothing is loaded from them."""
    path = checkpoint_file(directory)
    if not path.is_file():
        raise bad_value("resume", "a directory holding a ppgen checkpoint (checkpoint.pt)",
                        repr(str(directory)), "Pass the directory given as checkpoint= to the "
                        "interrupted fit, or drop resume= to start afresh.")
    payload = read_payload(path, arg="resume", expected="a complete ppgen checkpoint",
                           fmt=FORMAT, version=VERSION, map_location=map_location,
                           unreadable="The file is truncated or corrupt, or was written by "
                           "another program; delete it and start afresh.",
                           foreign="Pass a directory written by ppgen.fit(..., "
                           "checkpoint=DIR).")
    try:
        theirs = json.loads(payload["fingerprint"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise bad_value("resume", "a complete ppgen checkpoint", f"{str(path)!r} without its "
                        "fingerprint", "The file is damaged; start afresh.") from None
    mine = json.loads(json.dumps(fingerprint, sort_keys=True))
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        shown = "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, this fit {mine.get(k)!r}"
                          for k in diff[:3])
        raise bad_value("resume", "a checkpoint of this model, method, objective and data",
                        f"one of another fit ({shown})", "Resume with the same settings, or "
                        "start afresh with another checkpoint directory.")
    missing = [k for k in ("step", "model", "train_state", "loop", "rng") if k not in payload]
    if missing:
        raise bad_value("resume", "a complete ppgen checkpoint",
                        f"{str(path)!r} without {', '.join(missing)}",
                        "The file is damaged; start afresh.")
    return payload
