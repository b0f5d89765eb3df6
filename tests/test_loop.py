"""The training loop: minibatch epochs, the non-finite guard, checkpoints and resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference.checkpoint import checkpoint_file
from ppgen.inference.loop import train
from ppgen.training import TrainState, guarded_update, make_adam

ROOT = Path(__file__).resolve().parents[1]


def _gmm_fit(x, **kw):
    gmm = ppgen.GaussianMixture(2, covariance="diag")
    fit = ppgen.fit(gmm, x, method="svi", guide="map", seed=0, lr=0.05, tol=0,
                    progress=False, **kw)
    return gmm, fit


def _states_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        if a[k] is None:
            assert b[k] is None, k
        else:
            assert torch.equal(a[k], b[k]), k


class _Count:
    """A toy objective: fits a mean by Adam, records the minibatch rows it saw."""

    monitor = "loss"

    def __init__(self):
        self.seen = []

    def init(self, model, batch, seed):
        self.w = torch.zeros((), requires_grad=True)
        return TrainState(params={"w": [self.w]}, optimizers={"w": make_adam([self.w], lr=0.1)})

    def step(self, model, state, batch):
        self.seen.append(batch.index.clone())
        loss = ((batch.data - self.w) ** 2).mean()
        loss.backward()
        norm = guarded_update(state.optimizers["w"], state.params["w"], 10.0)
        return {"loss": loss.detach(), "grad_norm": norm}


def test_epochs_visit_every_row_once_per_epoch():
    data = torch.arange(10.0)
    objective = _Count()
    out = train(objective, None, data, seed=0, num_epochs=3, batch_size=4, tol=0,
                progress=False)
    assert out.num_steps == 9  # ceil(10 / 4) = 3 steps per epoch
    for epoch in range(3):
        rows = torch.cat(objective.seen[3 * epoch:3 * epoch + 3])
        assert torch.equal(rows.sort().values, torch.arange(10))
    assert not torch.equal(objective.seen[0], objective.seen[3])  # reshuffled per epoch
    assert len(out.history["objective"]) == 9


def test_guard_skips_non_finite_steps_without_touching_parameters():
    w = torch.ones(3, requires_grad=True)
    opt = make_adam([w], lr=0.1)
    (w * torch.tensor([1.0, float("nan"), 1.0])).sum().backward()
    named = []
    norm = guarded_update(opt, [w], 1.0, on_skip=lambda ps: named.append(ps[0].grad.clone()))
    assert not torch.isfinite(norm)
    assert torch.equal(w.detach(), torch.ones(3))
    assert named and torch.isnan(named[0][1])
    assert w.grad is None and not opt.state  # cleared, and Adam's moments never started
    (w * 2).sum().backward()
    norm = guarded_update(opt, [w], 1.0)
    assert float(norm) == pytest.approx(2 * 3 ** 0.5)
    assert not torch.equal(w.detach(), torch.ones(3))


def test_guard_counts_skipped_steps_and_training_goes_on():
    data = torch.randn(50) + 2
    elbo = pyro.infer.Trace_ELBO()
    calls = {"n": 0}

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    def flaky_loss(model, guide, *args, **kwargs):  # NaN on two isolated steps
        calls["n"] += 1
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        return loss * float("nan") if calls["n"] in (10, 30) else loss

    fit = ppgen.fit(model, data, method="svi", loss=flaky_loss, seed=0, num_steps=60, tol=0,
                    progress=False)
    assert len(fit.history["objective"]) == 58
    assert np.isfinite(fit.history["objective"]).all()
    (nan,) = [d for d in fit.diagnose() if d.code == "nan"]
    assert nan.value == 2 and "training went on" in nan.message
    assert all(torch.isfinite(p).all() for p in fit.guide.parameters())


def test_checkpoint_and_resume_in_process_equal_an_uninterrupted_run(old_faithful, tmp_path):
    class Interrupt(Exception):
        pass

    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    calls = {"n": 0, "limit": 10**9}

    def interruptible(model, guide, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > calls["limit"]:
            raise Interrupt
        return elbo.differentiable_loss(model, guide, *args, **kwargs)

    full, _ = _gmm_fit(old_faithful, num_steps=60, batch_size=100, loss=interruptible)
    calls.update(n=0, limit=45)
    gmm = ppgen.GaussianMixture(2, covariance="diag")
    ckpt = tmp_path / "run"
    with pytest.raises(Interrupt):
        ppgen.fit(gmm, old_faithful, method="svi", guide="map", seed=0, lr=0.05, tol=0,
                  num_steps=60, batch_size=100, loss=interruptible, checkpoint=ckpt,
                  checkpoint_every=20, progress=False)
    assert not gmm.is_fitted  # the failed fit left the model as it was
    saved = torch.load(checkpoint_file(ckpt), weights_only=True)
    assert saved["step"] == 40
    calls.update(n=0, limit=10**9)
    resumed, fit = _gmm_fit(old_faithful, num_steps=60, batch_size=100, loss=interruptible,
                            resume=ckpt)
    assert calls["n"] == 20  # steps 40..59 only
    _states_equal(resumed.get_state(), full.get_state())
    assert len(fit.history["objective"]) == 60
    assert list(ckpt.iterdir()) == [checkpoint_file(ckpt)]  # no temporary files left


def test_resume_refuses_corrupt_truncated_and_foreign_checkpoints(old_faithful, tmp_path):
    ckpt = tmp_path / "run"
    _gmm_fit(old_faithful, num_steps=20, checkpoint=ckpt)
    path = checkpoint_file(ckpt)
    good = path.read_bytes()

    def refused(match, **kw):
        gmm = ppgen.GaussianMixture(kw.pop("k", 2), covariance="diag")
        with pytest.raises(ValueError, match=match):
            ppgen.fit(gmm, kw.pop("x", old_faithful), method="svi", guide="map", seed=0,
                      lr=0.05, tol=0, num_steps=20, resume=ckpt, progress=False)
        assert not gmm.is_fitted  # never half-loaded

    path.write_bytes(good[: len(good) // 2])
    refused("truncated or corrupt")
    path.write_bytes(b"not a checkpoint at all")
    refused("truncated or corrupt")
    torch.save({"format": "something-else"}, path)
    refused("a file of another format")
    torch.save({"format": "ppgen-checkpoint", "version": 1, "evil": _Pickled()}, path)
    refused("truncated or corrupt")  # weights_only refuses arbitrary objects
    path.write_bytes(good)
    refused("another fit", k=3)  # another configuration
    refused("another fit", x=old_faithful * 2)  # other data
    with pytest.raises(ValueError, match="resume: expected a directory holding"):
        ppgen.fit(ppgen.GaussianMixture(2), old_faithful, method="svi", num_steps=5,
                  resume=tmp_path / "nowhere", progress=False)


class _Pickled:
    pass


_KILL_SCRIPT = textwrap.dedent("""
    import sys, torch, ppgen
    torch.set_num_threads(1)
    kind, out, ckpt, resume = sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4] or None
    x = ppgen.datasets.load_digits()[0][:300]
    if kind == "vae":
        model = ppgen.VAE((64,), latent_dim=3, hidden_dims=(32,))
        options = dict(batch_size=50, lr=1e-3)
    else:
        model = ppgen.GaussianMixture(3, covariance="diag")
        x = x[:, :4].double()
        options = dict(batch_size=50, lr=0.02, guide="map")
    ppgen.fit(model, x, "svi", num_steps=200, tol=0, seed=0, progress=False,
              checkpoint=ckpt, checkpoint_every=25, resume=resume, **options)
    torch.save(model.get_state(), out)
""")


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kind", ["gmm", "vae"])
def test_sigkilled_fit_resumes_to_the_uninterrupted_result(kind, tmp_path):
    if kind == "vae" and not hasattr(ppgen, "VAE"):
        pytest.skip("no VAE yet")
    ckpt = tmp_path / "ckpt"
    victim = _run(kind, tmp_path / "never.pt", ckpt, "")
    reference = _run(kind, tmp_path / "full.pt", "", "")
    step, deadline = 0, time.monotonic() + 600
    while step < 50 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            step = torch.load(checkpoint_file(ckpt), weights_only=True)["step"]
        except Exception:  # not written yet (the rename is atomic: never half a file)
            continue
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, victim.stderr.read().decode()[-2000:]
    killed_at = torch.load(checkpoint_file(ckpt), weights_only=True)["step"]
    assert 50 <= killed_at < 200
    resumed = _run(kind, tmp_path / "resumed.pt", ckpt, ckpt)
    for proc in (reference, resumed):
        assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    _states_equal(torch.load(tmp_path / "resumed.pt"), torch.load(tmp_path / "full.pt"))


def test_a_finished_run_resumes_with_more_epochs(tmp_path):
    x = ppgen.datasets.load_digits()[0][:100]
    ckpt = tmp_path / "run"

    def run(epochs, **kw):
        vae = ppgen.VAE(64, latent_dim=2, hidden_dims=(8,))
        fit = ppgen.fit(vae, x, "svi", num_epochs=epochs, batch_size=50, tol=0, seed=0,
                        progress=False, **kw)
        return vae, fit

    run(1, checkpoint=ckpt)
    longer, fit = run(3, resume=ckpt, checkpoint=ckpt)
    assert len(fit.history["objective"]) == 6  # 2 steps per epoch, 3 epochs in all
    full, _ = run(3)
    _states_equal(longer.get_state(), full.get_state())


def test_validation_with_labels_drives_early_stopping_of_a_conditional_vae():
    x, y = ppgen.datasets.load_digits()
    cvae = ppgen.ConditionalVAE(64, 10, latent_dim=2, hidden_dims=(16,))
    fit = ppgen.fit(cvae, x[:300], "svi", num_epochs=40, batch_size=100, seed=0, lr=1e-2,
                    tol=0.05, patience=2, progress=False, model_kwargs={"labels": y[:300]},
                    validation_data=(x[300:400], {"labels": y[300:400]}))
    val = fit.history["eval_val_elbo"]
    assert len(val) == len(fit.history["eval_step"]) >= 3
    assert np.isfinite(val).all() and val.max() > val[0]
    assert cvae.elbo(x[300:400], labels=y[300:400], seed=0).mean() > -60
    # It stopped early: `patience` evaluations without a 5% improvement of the best.
    assert fit.converged is True and len(fit.history["objective"]) < 40 * 3


def test_resume_after_skipped_steps_reports_them(tmp_path):
    data = torch.randn(50) + 2
    elbo = pyro.infer.Trace_ELBO()
    calls = {"n": 0, "stop": 35, "nan": 10}

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    def flaky(model, guide, *args, **kwargs):  # NaN once, then interrupted
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        return loss * float("nan") if calls["n"] == calls["nan"] else loss

    with pytest.warns(RuntimeWarning, match="interrupt"):  # the step is dropped, the fit ends
        first = ppgen.fit(model, data, method="svi", loss=flaky, seed=0, num_steps=60, tol=0,
                          checkpoint=tmp_path, checkpoint_every=20, progress=False)
    assert first.interrupted and len(first.history["objective"]) == 33
    calls.update(n=0, stop=-1, nan=-1)  # the resumed run meets no bad step itself
    fit = ppgen.fit(model, data, method="svi", loss=flaky, seed=0, num_steps=60, tol=0,
                    resume=tmp_path, progress=False)
    (nan,) = [d for d in fit.diagnose() if d.code == "nan"]
    assert nan.value == 1 and "training went on" in nan.message
    assert len(fit.history["objective"]) == 59


@pytest.mark.parametrize("kind", ["rbm", "dbn", "dbm", "gan"])
def test_contrastive_and_adversarial_losses_are_not_judged_for_convergence(kind):
    """Their training loss is no convergence signal: with the default tol and no validation
    data the loop neither stops them early nor warns (the VAE's ELBO rule would fire on
    them); with validation data their own metric judges them."""
    x = ppgen.datasets.load_digits()[0][:100]
    if kind in ("rbm", "dbn", "dbm"):
        x = (x > 0.5).float()
        model = {"rbm": lambda: ppgen.RBM(8), "dbn": lambda: ppgen.DBN((8, 4)),
                 "dbm": lambda: ppgen.DBM((8, 4))}[kind]()
    else:
        model = ppgen.GAN(64, latent_dim=2, hidden_dims=(8,), output="sigmoid")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppgen.ConvergenceWarning)
        fit = ppgen.fit(model, x, "svi", num_steps=250, batch_size=20, seed=0, progress=False)
    assert fit.converged is None
    assert len(fit.history["objective"]) == 250  # no early stop on the loss
