"""Warnings name the user's line (ppgen._warnings), and EM decreases come as one summary."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen import GaussianMixture
from ppgen._warnings import warn_user
from ppgen.inference.em import run_em


def _record(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, caught


def test_em_convergence_warning_points_at_the_callers_line(old_faithful):
    with pytest.warns(ppgen.ConvergenceWarning) as caught:
        ppgen.fit(GaussianMixture(3), old_faithful, method="em", seed=0, num_steps=2,
                  tol=1e-12, progress=False)
    (w,) = [w for w in caught if w.category is ppgen.ConvergenceWarning]
    assert w.filename == __file__
    assert "ppgen" not in w.filename.split("tests")[-1]


def test_svi_convergence_warning_points_at_the_callers_line():
    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    # Three steps are too few for the trend rule to judge (issue 10); it says so, and the
    # warning is what this test follows to the caller's line.
    with pytest.warns(ppgen.ConvergenceWarning, match="SVI ran 3 steps, too few to judge"
                      ) as caught:
        ppgen.fit(model, torch.randn(20), method="svi", num_steps=3, tol=1e-12, seed=0,
                  progress=False)
    assert [w.filename for w in caught if w.category is ppgen.ConvergenceWarning] == [__file__]


def test_svi_nan_warning_points_at_the_callers_line():
    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)

    def nan_loss(model, guide, *args, **kwargs):
        return pyro.infer.Trace_ELBO().differentiable_loss(model, guide, *args) * math.nan

    with pytest.warns(RuntimeWarning, match="loss became nan") as caught:
        ppgen.fit(model, torch.randn(20), method="svi", loss=nan_loss, num_steps=20, seed=0,
                  progress=False)
    assert [w.filename for w in caught if w.category is RuntimeWarning] == [__file__]


def _nested_warn():
    warn_user("from inside", UserWarning)


def test_warn_user_outside_the_package_names_the_calling_frame():
    # Called from code outside ppgen, the warning names the function that called warn_user.
    _, caught = _record(_nested_warn)
    (w,) = caught
    assert w.filename == __file__
    assert w.lineno == _nested_warn.__code__.co_firstlineno + 1


class _ScriptedEM:
    """A stand-in model whose EM objective follows a script, to drive run_em's checks."""

    dtype = torch.float64

    def __init__(self, objectives):
        self.objectives = objectives

    def em_initialize(self, data, *, init, seed):
        self.step = 0

    def e_step(self, data):
        ll = self.objectives[min(self.step, len(self.objectives) - 1)]
        return ll, ()

    def m_step(self, data, stats):
        self.step += 1

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = state["step"]


def test_repeated_em_decreases_collapse_into_one_summary_warning():
    # Each restart replays the script: decreases at iterations 2 (by 1.0) and 4 (by 3.0).
    model = _ScriptedEM([-10.0, -5.0, -6.0, -2.0, -5.0, -1.0, -0.5])
    out, caught = _record(lambda: run_em(model, torch.zeros(3, dtype=torch.float64),
                                         init=None, seed=0, progress=False, num_steps=6,
                                         tol=0.0, num_restarts=2))
    runtime = [w for w in caught if w.category is RuntimeWarning]
    assert len(runtime) == 1
    text = str(runtime[0].message)
    assert "decreased at 4 iterations (in 2 of 2 restarts)" in text
    assert "the largest drop was at iteration 4 of restart 0, from -2 to -5 (-3)" in text
    assert "use fewer components" in text
    assert runtime[0].filename == __file__
    (diag,) = [d for d in out["messages"] if d.code == "em_decrease"]
    assert diag.value == pytest.approx(-3.0)


def test_a_single_em_decrease_is_reported_once():
    model = _ScriptedEM([-10.0, -5.0, -6.0, -4.0, -4.0])
    _, caught = _record(lambda: run_em(model, torch.zeros(3, dtype=torch.float64), init=None,
                                       seed=0, progress=False, num_steps=5, tol=1e-9))
    (w,) = [w for w in caught if w.category is RuntimeWarning]
    assert "decreased at iteration 2 of restart 0, from -5 to -6 (-1)" in str(w.message)


def test_degenerate_gmm_fit_warns_once_about_decreases(old_faithful):
    # Six points, three full-covariance components, five restarts: components collapse and
    # the objective drops at several iterations (four separate warnings before).
    fit, caught = _record(lambda: ppgen.fit(GaussianMixture(3), old_faithful[:6], method="em",
                                            seed=0, num_restarts=5, progress=False))
    runtime = [w for w in caught if w.category is RuntimeWarning]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    assert runtime[0].filename == __file__
    assert "EM log-likelihood decreased at" in str(runtime[0].message)
    assert [d.code for d in fit.diagnose()].count("em_decrease") == 1
