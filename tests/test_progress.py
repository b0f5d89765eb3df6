"""Progress bars (ppgen._progress): shown only when asked for and someone can see them."""

from __future__ import annotations

import io
import sys
import types

import pyro
import pyro.distributions as dist
import torch

import ppgen
import ppgen.inference.em as em_module
import ppgen.inference.loop as loop_module
import ppgen.inference.mcmc as mcmc_module
from ppgen._progress import interactive, progress_bar, progress_enabled


class FakeTerminal(io.StringIO):
    """A standard error that says it is a terminal (and keeps what is written)."""

    def isatty(self):
        return True


def fake_tty(monkeypatch):
    """Make ``sys.stderr`` a terminal for the rest of the test (set inside the test body:
    pytest's capture puts its own stream back between fixture set-up and the call)."""
    stream = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def _normal_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    pyro.sample("obs", dist.Normal(loc, 1.0).expand(data.shape).to_event(1), obs=data)


def test_bar_is_disabled_when_output_is_captured(capfd):
    assert not sys.stderr.isatty()  # pytest captures it
    assert not interactive() and not progress_enabled(True)
    bar = progress_bar(10, desc="work", enabled=True)
    assert bar.disable
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert capfd.readouterr().err == ""


def test_bar_is_enabled_on_a_terminal(monkeypatch):
    tty = fake_tty(monkeypatch)
    assert interactive() and progress_enabled(True) and not progress_enabled(False)
    bar = progress_bar(3, desc="work", enabled=True)
    assert not bar.disable
    bar.update(3)
    bar.close()
    assert "work" in tty.getvalue()
    off = progress_bar(3, desc="off", enabled=False)
    assert off.disable
    off.close()
    assert "off" not in tty.getvalue()


def test_jupyter_kernel_counts_as_interactive(monkeypatch):
    class Shell:
        kernel = object()

    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = lambda: Shell()
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not sys.stderr.isatty() and interactive()
    # A terminal IPython (no kernel) with captured output is not interactive.
    fake_ipython.get_ipython = lambda: types.SimpleNamespace()
    assert not interactive()
    fake_ipython.get_ipython = lambda: None
    assert not interactive()
    monkeypatch.delitem(sys.modules, "ipykernel")
    fake_ipython.get_ipython = lambda: Shell()
    assert not interactive()


def test_stderr_without_isatty_is_not_interactive(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    assert not interactive()
    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(write=lambda s: None))
    assert not interactive()


def _recording(monkeypatch, module, name):
    """Wrap ``module.name``; keep (keyword arguments, ``disable`` of what it made) per call.
    (``disable`` is read at once: tqdm sets it to True when the bar is closed.)"""
    made = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        obj = original(*args, **kwargs)
        made.append((kwargs, getattr(obj, "disable", None)))
        return obj

    monkeypatch.setattr(module, name, wrapper)
    return made


def test_em_fit_prints_nothing_when_captured(capfd, monkeypatch, old_faithful):
    bars = _recording(monkeypatch, em_module, "progress_bar")
    ppgen.fit(ppgen.GaussianMixture(2), old_faithful, method="em", seed=0, progress=True)
    assert len(bars) == 1 and bars[0][1] is True
    assert capfd.readouterr().err == ""


def test_em_fit_shows_a_bar_on_a_terminal(monkeypatch, old_faithful):
    tty = fake_tty(monkeypatch)
    bars = _recording(monkeypatch, em_module, "progress_bar")
    ppgen.fit(ppgen.GaussianMixture(2), old_faithful, method="em", seed=0, progress=True)
    assert len(bars) == 1 and bars[0][1] is False
    assert "EM" in tty.getvalue()
    ppgen.fit(ppgen.GaussianMixture(2), old_faithful, method="em", seed=0, progress=False)
    assert bars[1][1] is True


def test_mcmc_fit_prints_nothing_when_captured(capfd, monkeypatch):
    runs = _recording(monkeypatch, mcmc_module, "MCMC")
    data = torch.randn(20, generator=torch.Generator().manual_seed(0))
    ppgen.fit(_normal_model, data, method="mcmc", seed=0, progress=True, num_samples=5,
              num_warmup=5, num_chains=1)
    assert len(runs) == 1 and runs[0][0]["disable_progbar"] is True
    assert capfd.readouterr().err == ""


def test_mcmc_fit_shows_pyros_bar_on_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # Pyro hides its bar whenever CI is set
    tty = fake_tty(monkeypatch)
    runs = _recording(monkeypatch, mcmc_module, "MCMC")
    data = torch.randn(20, generator=torch.Generator().manual_seed(0))
    ppgen.fit(_normal_model, data, method="mcmc", seed=0, progress=True, num_samples=5,
              num_warmup=5, num_chains=2)
    assert [kw["disable_progbar"] for kw, _ in runs] == [False, False]
    assert "Sample" in tty.getvalue()  # Pyro's own bar


def test_mcmc_in_a_notebook_draws_one_tqdm_auto_bar_instead_of_pyros(monkeypatch):
    # In a Jupyter kernel Pyro's text bar leaves every redraw in the cell's output (an
    # executed tutorial kept hundreds of bar lines): ppgen draws one tqdm.auto bar (a widget
    # there) over all chains, and Pyro's stays off.
    import ppgen._progress as progress_module

    monkeypatch.setattr(progress_module, "in_jupyter_kernel", lambda: True)
    monkeypatch.setattr(mcmc_module, "in_jupyter_kernel", lambda: True)
    runs = _recording(monkeypatch, mcmc_module, "MCMC")
    made = []
    original = mcmc_module.progress_bar

    def recording_bar(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(mcmc_module, "progress_bar", recording_bar)
    data = torch.randn(20, generator=torch.Generator().manual_seed(0))
    ppgen.fit(_normal_model, data, method="mcmc", seed=0, progress=True, num_samples=5,
              num_warmup=4, num_chains=2)
    assert [kw["disable_progbar"] for kw, _ in runs] == [True, True]
    (bar,) = made
    assert bar.total == 18 and bar.n == 18  # (4 + 5) iterations x 2 chains, one bar
    assert bar.desc.startswith("NUTS chain 2/2")
    # without a notebook (captured output) no bar at all
    monkeypatch.setattr(progress_module, "in_jupyter_kernel", lambda: False)
    monkeypatch.setattr(mcmc_module, "in_jupyter_kernel", lambda: False)
    ppgen.fit(_normal_model, data, method="mcmc", seed=0, progress=True, num_samples=5,
              num_warmup=4, num_chains=1)
    assert made[-1].disable and runs[-1][0]["disable_progbar"] is True


def test_svi_loop_prints_nothing_when_captured(capfd, monkeypatch, old_faithful):
    bars = _recording(monkeypatch, loop_module, "progress_bar")
    ppgen.fit(ppgen.GaussianMixture(2), old_faithful, method="svi", seed=0, num_steps=20,
              tol=0, progress=True)
    assert len(bars) == 1 and bars[0][1] is True
    assert capfd.readouterr().err == ""


def test_svi_loop_shows_loss_and_epoch_on_a_terminal(monkeypatch, old_faithful):
    tty = fake_tty(monkeypatch)
    bars = _recording(monkeypatch, loop_module, "progress_bar")
    ppgen.fit(ppgen.GaussianMixture(2), old_faithful, method="svi", seed=0, num_steps=20,
              tol=0, batch_size=100, progress=True)
    assert len(bars) == 1 and bars[0][1] is False
    shown = tty.getvalue()
    assert "SVI" in shown and "loss=" in shown and "epoch=" in shown
