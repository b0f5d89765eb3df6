"""Faults: SIGKILL while writing, a full disk, Ctrl-C during a fit, corrupt files.

(Corrupt, truncated and foreign model files and checkpoints: tests/test_io.py and
tests/test_loop.py; SIGKILL during a fit, then resume: tests/test_loop.py.)
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import ppgen
from ppgen.cli._io import atomic_text
from ppgen.inference.checkpoint import checkpoint_file, read_checkpoint, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gmm(old_faithful):
    model = ppgen.GaussianMixture(2, covariance="diag")
    ppgen.fit(model, old_faithful, method="em", seed=0, progress=False)
    return model


# A child that rewrites PATH (a model file, or a checkpoint directory) through ppgen's own
# atomic write, but writes only half the bytes, says so, and hangs: the parent SIGKILLs it.
_CHILD = textwrap.dedent("""
    import io, os, sys, time, torch, ppgen
    import ppgen.io as pio
    from ppgen.inference.checkpoint import read_checkpoint, write_checkpoint

    def slow_writer(obj):
        def write(tmp):
            buf = io.BytesIO()
            torch.save(obj, buf)
            data = buf.getvalue()
            with open(tmp, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            print("writing", flush=True)
            time.sleep(120)
        return write

    pio.torch_writer = slow_writer
    import ppgen.inference.checkpoint as ck
    ck.torch_writer = slow_writer
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "model":
        model = ppgen.load(path)
        model.weights.data = model.weights.flip(0)  # a different model, never written
        ppgen.save(model, path)
    else:
        payload = read_checkpoint(path, {"fit": 1})
        payload["step"] = 999
        write_checkpoint(path, payload, {"fit": 1})
""")


def _kill_mid_write(kind, path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = child.stdout.readline()  # blocks until the child is half-way through its write
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert line == b"writing\n", child.stderr.read().decode()[-2000:]


def _temps(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp"))


def test_sigkill_while_saving_keeps_the_previous_model(gmm, tmp_path):
    path = ppgen.save(gmm, tmp_path / "m.pt")
    good = path.read_bytes()
    _kill_mid_write("model", path)
    assert path.read_bytes() == good
    assert torch.equal(ppgen.load(path).weights, gmm.weights)
    # The killed writer's half file is hidden (a dot file) and never read ...
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(".m.pt.")
    assert os.path.getsize(tmp_path / left[0]) > 0
    # ... and the next save of that path removes it (its writer is dead).
    ppgen.save(gmm, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_sigkill_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    state = {"step": 7, "model": {"w": torch.arange(5.0)}, "train_state": {}, "loop": {},
             "rng": {}}
    write_checkpoint(tmp_path, state, {"fit": 1})
    good = checkpoint_file(tmp_path).read_bytes()
    _kill_mid_write("checkpoint", tmp_path)
    assert checkpoint_file(tmp_path).read_bytes() == good
    payload = read_checkpoint(tmp_path, {"fit": 1})
    assert payload["step"] == 7 and torch.equal(payload["model"]["w"], torch.arange(5.0))
    assert len(_temps(tmp_path)) == 1
    write_checkpoint(tmp_path, {**state, "step": 8}, {"fit": 1})
    assert _temps(tmp_path) == []
    assert read_checkpoint(tmp_path, {"fit": 1})["step"] == 8


def test_a_live_writers_temporary_file_is_not_removed(gmm, tmp_path):
    # Another process (here: this test's parent, alive) writing the same path keeps its file.
    import socket

    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32]
    other = tmp_path / f".m.pt.{host}-{os.getppid()}.abc123.tmp"
    other.write_bytes(b"in progress")
    ppgen.save(gmm, tmp_path / "m.pt")
    assert other.read_bytes() == b"in progress"


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_full(real_open):
    """``open`` whose files accept a few bytes, then fail as a full disk does."""

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[:10] if isinstance(data, str) else bytes(data[:10]))
            self.fh.flush()
            _disk_full()

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return Full(fh) if "w" in mode else fh

    return fake_open


def test_full_disk_while_saving(gmm, tmp_path, monkeypatch):
    import builtins

    path = ppgen.save(gmm, tmp_path / "m.pt")
    good = path.read_bytes()
    monkeypatch.setattr(builtins, "open", _half_then_full(builtins.open))
    with pytest.raises(OSError, match=r"m\.pt'.*disk is full.*previous file is unchanged.*"
                       "Free some space") as info:
        ppgen.save(gmm, path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    # a new file: nothing at all is left
    monkeypatch.setattr(builtins, "open", _half_then_full(builtins.open))
    with pytest.raises(OSError, match="disk is full.*nothing was written"):
        ppgen.save(gmm, tmp_path / "new.pt")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_full_disk_while_checkpointing_and_writing_cli_output(tmp_path, monkeypatch):
    write_checkpoint(tmp_path, {"step": 1}, {})
    good = checkpoint_file(tmp_path).read_bytes()
    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(OSError, match=r"checkpoint\.pt'.*disk is full"):
        write_checkpoint(tmp_path, {"step": 2}, {})
    assert checkpoint_file(tmp_path).read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    import builtins

    out = tmp_path / "samples.csv"
    atomic_text(out, "old\n")
    monkeypatch.setattr(builtins, "open", _half_then_full(builtins.open))
    with pytest.raises(OSError, match=r"samples\.csv'.*disk is full"):
        atomic_text(out, "new\n" * 100)
    monkeypatch.undo()
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "samples.csv"]


def test_full_disk_in_the_cli_is_a_clean_error(tmp_path, monkeypatch, capsys):
    from ppgen.cli import main

    monkeypatch.setattr(torch, "save", _disk_full)
    out = tmp_path / "run"
    code = main(["fit", "gmm", "--data", "old-faithful", "--num-components", "2",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert "disk is full" in err and "Traceback" not in err
    assert not (out / "model.pt").exists()
    assert _temps(out) == [] if out.exists() else True


# ------------------------------------------------------------------------------ Ctrl-C
def _ctrl_c_at(n):
    """A function that, on its n-th call, sends this process SIGINT (as Ctrl-C does)."""
    calls = {"n": 0}

    def hit():
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGINT)

    return hit


def _svi(x, num_steps, **kw):
    model = ppgen.GaussianMixture(2, covariance="diag")
    fit = ppgen.fit(model, x, method="svi", guide="map", seed=0, lr=0.05, tol=0,
                    num_steps=num_steps, batch_size=100, progress=False, **kw)
    return model, fit


def _loss_with(hook):
    import pyro

    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)

    def loss(model, guide, *args, **kwargs):
        value = elbo.differentiable_loss(model, guide, *args, **kwargs)
        loss.hook()
        return value

    loss.hook = hook  # one loss object per test: resume checks it is the same
    return loss


def _same_state(a, b):
    assert set(a) == set(b)
    for k in a:
        assert (a[k] is None and b[k] is None) or torch.equal(a[k], b[k]), k


def test_ctrl_c_during_svi_stops_after_the_step_in_progress(old_faithful, tmp_path):
    # (The learning-rate schedule follows num_steps, so the reference runs all 60 steps.)
    loss = _loss_with(lambda: None)
    full, full_fit = _svi(old_faithful, 60, loss=loss)
    loss.hook = _ctrl_c_at(13)
    with pytest.warns(RuntimeWarning, match="interrupted.*after step 13 of 60.*resume="):
        model, fit = _svi(old_faithful, 60, loss=loss, checkpoint=tmp_path / "ck")
    assert fit.interrupted and not full_fit.interrupted
    # the step in progress was completed, and the run stopped there
    np.testing.assert_array_equal(fit.history["objective"], full_fit.history["objective"][:13])
    assert torch.load(checkpoint_file(tmp_path / "ck"), weights_only=True)["step"] == 13
    assert model.is_fitted and not torch.equal(model.locs, full.locs)
    # the default handler is back: a later Ctrl-C interrupts as usual
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # resuming the interrupted run ends where the uninterrupted one did, bit for bit
    loss.hook = lambda: None
    resumed, resumed_fit = _svi(old_faithful, 60, loss=loss, resume=tmp_path / "ck")
    assert not resumed_fit.interrupted and len(resumed_fit.history["objective"]) == 60
    _same_state(resumed.get_state(), full.get_state())


def test_keyboard_interrupt_raised_inside_a_step_drops_that_step(old_faithful, tmp_path):
    loss = _loss_with(lambda: None)
    full, full_fit = _svi(old_faithful, 60, loss=loss)
    calls = {"n": 0}

    def raise_on_6th():
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted.*after step 5 of 60"):
        loss.hook = raise_on_6th
        model, fit = _svi(old_faithful, 60, loss=loss, checkpoint=tmp_path / "ck")
    assert fit.interrupted
    np.testing.assert_array_equal(fit.history["objective"], full_fit.history["objective"][:5])
    loss.hook = lambda: None
    resumed, _ = _svi(old_faithful, 60, loss=loss, resume=tmp_path / "ck")
    _same_state(resumed.get_state(), full.get_state())


def test_ctrl_c_during_em(old_faithful, monkeypatch):
    reference = ppgen.GaussianMixture(2)
    ref_fit = ppgen.fit(reference, old_faithful, method="em", seed=0, num_steps=4, tol=0,
                        progress=False)
    model = ppgen.GaussianMixture(2)
    hit = _ctrl_c_at(3)
    m_step = type(model).m_step

    def interrupted_m_step(self, *args, **kwargs):
        hit()
        return m_step(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "m_step", interrupted_m_step)
    with pytest.warns(RuntimeWarning, match="EM was interrupted"):
        fit = ppgen.fit(model, old_faithful, method="em", seed=0, num_steps=100,
                        progress=False)
    assert fit.interrupted and fit.converged is False
    # the iteration in progress (the 3rd M-step) finished; the 4th never started
    np.testing.assert_array_equal(fit.history["objective"], ref_fit.history["objective"][:4])
    assert torch.equal(model.locs, _em_after(old_faithful, 3).locs)


def _em_after(x, steps):
    model = ppgen.GaussianMixture(2)
    ppgen.fit(model, x, method="em", seed=0, num_steps=steps, tol=0, progress=False)
    return model


def test_keyboard_interrupt_inside_an_m_step_restores_the_parameters(old_faithful,
                                                                     monkeypatch):
    model = ppgen.GaussianMixture(2)
    calls = {"n": 0}
    m_step = type(model).m_step

    def half_m_step(self, data, stats, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            self.locs.data = self.locs + 1e3  # half-updated, then interrupted
            raise KeyboardInterrupt
        return m_step(self, data, stats, **kwargs)

    monkeypatch.setattr(type(model), "m_step", half_m_step)
    with pytest.warns(RuntimeWarning, match="EM was interrupted"):
        fit = ppgen.fit(model, old_faithful, method="em", seed=0, num_steps=100,
                        progress=False)
    assert fit.interrupted and len(fit.history["objective"]) == 3
    after_two = _em_after(old_faithful, 2)
    assert torch.equal(model.locs, after_two.locs)
    assert torch.equal(model.covariances, after_two.covariances)


def test_keyboard_interrupt_before_any_em_iteration_propagates(old_faithful, monkeypatch):
    model = ppgen.GaussianMixture(2)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "em_initialize", stop)
    with pytest.raises(KeyboardInterrupt):
        ppgen.fit(model, old_faithful, method="em", seed=0, progress=False)
    assert not model.is_fitted
