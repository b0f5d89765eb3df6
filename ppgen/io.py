"""Save and load fitted models: atomic writes, and a safe format that is never unpickled.

A file holds only tensors, strings and numbers (``torch.save`` of a plain dict), and is read
with ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from ._validation import bad_type, bad_value
from .models.base import GenerativeModel, get_model_class

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "ppgen-model"
VERSION = 1


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _temp_prefix(path: Path) -> str:
    """``.NAME.HOST-PID.``: hidden, and naming its writer, so that a later write can remove
    the temporary file of a writer that was killed (SIGKILL, power loss) before renaming."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32]
    return f".{path.name}.{host}-{os.getpid()}."


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of ``path`` left by dead writers on this host."""
    mine = _temp_prefix(path)
    head = mine[: mine.rindex("-") + 1]  # .NAME.HOST-
    try:
        names = [p for p in path.parent.iterdir() if p.name.startswith(head)
                 and p.name.endswith(".tmp")]
    except OSError:
        return
    for p in names:
        pid = p.name[len(head):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # that writer is gone
            with contextlib.suppress(OSError):
                p.unlink()
        except OSError:  # alive (another user's process) or unknown: leave it
            pass


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The process's umask, read once at import (reading it means setting it, which would
#: race with other threads creating files if done on every write).
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)``, flush it to disk (fsync) and rename it onto ``path``.

    The temporary file is hidden and in the same directory, so the rename is atomic: a
    process killed at any moment leaves either the previous file or the new one, complete.
    On any error the temporary file is removed and the previous file is untouched; a full
    disk (ENOSPC, EDQUOT) gets an ``OSError`` naming the path and what to do. Temporary files
    of writers killed earlier (SIGKILL) are removed by the next write of the same path.
    """
    path = Path(path)
    if path.is_dir():
        raise bad_value("path", "a file name", f"the directory {str(path)!r}",
                        "Add a file name such as model.pt.")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            kept = "the previous file is unchanged" if path.exists() else "nothing was written"
            raise OSError(exc.errno, f"could not write {str(path)!r}: the disk is full "
                          f"({os.strerror(exc.errno or errno.ENOSPC)}); "
                          f"{kept}. Free some space on that disk, "
                          "or write to another directory.", str(path)) from exc
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        _fsync(path.parent, directory=True)
    return path


def torch_writer(obj: Any) -> Any:
    """A ``write(tmp)`` for :func:`atomic_write` that ``torch.save``s ``obj``: serialised in
    memory first, then written with plain file writes, so that a full disk raises
    ``OSError(ENOSPC)`` (torch's own file writer reports it as a bare ``RuntimeError``)."""

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()

    return write


def _check_path(path: Any) -> str | os.PathLike:
    if not isinstance(path, str | os.PathLike):
        raise bad_type("path", "a file path (str or os.PathLike)",
                       f"{path!r} ({type(path).__name__})",
                       "Pass a file name such as 'model.pt' or a pathlib.Path.")
    return path


def save(model: GenerativeModel, path: str | os.PathLike) -> Path:
    """Save a fitted built-in model (its configuration and fitted parameters) to ``path``."""
    if not isinstance(model, GenerativeModel):
        raise bad_type("model", "a ppgen GenerativeModel", type(model).__name__,
                       "For a model function save Fit.params with torch.save.")
    _check_path(path)
    model.check_fitted("be saved")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.registry_name,
        "config": json.dumps(model.get_config()),
        "state": {k: v.detach().cpu() for k, v in model.get_state(training=False).items()
                  if v is not None},
    }
    return atomic_write(path, torch_writer(payload))


def read_payload(path: Path, *, arg: str, expected: str, fmt: str, version: int,
                 unreadable: str, foreign: str,
                 map_location: str | torch.device | None = None) -> dict[str, Any]:
    """Read a ppgen file of format ``fmt`` with ``torch.load(weights_only=True)`` (tensors,
    numbers and strings only: never an arbitrary object). An unreadable (truncated, corrupt,
    pickled-object) file, one of another format and one of a newer version each get an error
    naming ``arg``, with the remedy given."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise bad_value(arg, expected, f"{str(path)!r}, which could not be read "
                        f"({type(exc).__name__})", unreadable) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise bad_value(arg, expected, f"{str(path)!r}, a file of another format", foreign)
    if not isinstance(payload.get("version"), int) or payload["version"] > version:
        raise bad_value(arg, f"format version <= {version}", payload.get("version"),
                        "Upgrade ppgen to read this file.")
    return payload


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> GenerativeModel:
    """Load a model saved by :func:`save`; a corrupt or foreign file gives a clear error."""
    path = Path(_check_path(path))
    if path.is_dir() and (path / "model.pt").is_file():
        path = path / "model.pt"  # a run directory written by the ppgen command
    elif path.is_dir():
        held = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        what = (f"which holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''}"
                if held else "which is empty")
        remedy = ("Pass a file written by ppgen.save, or the --out directory of a "
                  "'ppgen fit' run (it holds model.pt).")
        if "checkpoint.pt" in held:
            remedy = ("checkpoint.pt is a training checkpoint, not a saved model: continue "
                      "the run with ppgen.fit(model, data, method='svi', resume=path), then "
                      "ppgen.save the model.")
        raise bad_value("path", "a ppgen model file, or a run directory with model.pt",
                        f"the directory {str(path)!r}, {what} but no model.pt", remedy)
    if not path.is_file():
        raise FileNotFoundError(f"path: expected a ppgen model file, got {str(path)!r}, which "
                                "does not exist.")
    payload = read_payload(path, arg="path", expected="a ppgen model file written by "
                           "ppgen.save", fmt=FORMAT, version=VERSION, map_location=map_location,
                           unreadable="The file is corrupt or from another program; save the "
                           "model again.", foreign="Load it with the program that wrote it.")
    try:
        cls = get_model_class(payload["model"])
        model = cls(**json.loads(payload["config"]))
        state = dict(payload["state"])
        model.set_state({**{n: None for n in model.param_names + model.state_names}, **state})
        model.set_params(**{n: state[n] for n in model.active_param_names})
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
        raise bad_value("path", "a complete ppgen model file", f"{str(path)!r} ({what})",
                        "The file is damaged; save the model again.") from None
    return model
