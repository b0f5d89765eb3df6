"""Numerical robustness: data scaled or shifted by 1e6, float32 and float64, duplicate rows,
a component that loses its data. Gaussian EM is equivariant (the fit to a * x + b is the fit
to x, moved; the log-likelihood shifts by -N D log a), so these are exact checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ppgen


@pytest.fixture(scope="module")
def faithful():
    return torch.as_tensor(np.asarray(ppgen.datasets.load_old_faithful()), dtype=torch.float64)


def _gmm(x, **kw):
    model = ppgen.GaussianMixture(2, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ppgen.fit(model, x, method="em", seed=0, progress=False, num_steps=40, tol=0)
    return float(model.log_prob(x).double().sum()), fit, caught


def _hmm(x):
    model = ppgen.HiddenMarkovModel(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppgen.fit(model, x, method="em", seed=0, progress=False, num_steps=30, tol=0)
    return float(model.log_prob(x).double().sum())


@pytest.mark.parametrize("scale, shift", [(1e6, 0.0), (1.0, 1e6), (1e6, 1e6)])
def test_mixture_fit_moves_with_the_data(faithful, scale, shift):
    base, _, _ = _gmm(faithful)
    got, fit, caught = _gmm(faithful * scale + shift)
    expected = base - faithful.numel() * math.log(scale)
    assert got == pytest.approx(expected, rel=1e-9)
    assert not [w for w in caught if issubclass(w.category, UserWarning)
                and "reg_covar" in str(w.message)]


@pytest.mark.parametrize("scale, shift", [(1e6, 0.0), (1.0, 1e6)])
def test_hmm_fit_moves_with_the_data(scale, shift):
    x, _ = ppgen.datasets.make_hmm(20, 50, 3, num_features=2, seed=0, dtype=torch.float64)
    assert _hmm(x * scale + shift) == pytest.approx(_hmm(x) - x.numel() * math.log(scale),
                                                    rel=1e-9)


def test_float32_data_far_from_zero_warn_of_rounding_and_stay_finite(faithful):
    got, fit, caught = _gmm((faithful + 1e6).float())
    assert math.isfinite(got)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert any("float32" in m and "centre the data" in m for m in messages), messages
    assert "precision_loss" in [d.code for d in fit.messages]
    # centred float32 data: no warning, and the float64 fit's log-likelihood to float32's
    # precision
    centred, fit, caught = _gmm((faithful - faithful.mean(0)).float())
    assert "precision_loss" not in [d.code for d in fit.messages]
    base, _, _ = _gmm(faithful)
    assert centred == pytest.approx(base, rel=1e-5)


def test_a_covariance_floor_large_against_the_data_is_reported(faithful):
    """Data scaled by 1e-6 have variances of 1e-12: the default reg_covar (1e-6, as
    scikit-learn's) then dominates the covariances, and the fit says so."""
    _, fit, caught = _gmm(faithful * 1e-6)
    assert "reg_covar_large" in [d.code for d in fit.messages]
    assert any("reg_covar=1e-06" in str(w.message) and "standardise" in str(w.message)
               for w in caught)
    # a constant feature (variance 0) does not hide the others
    with_constant = torch.cat([faithful * 1e-6, torch.zeros(len(faithful), 1,
                                                            dtype=torch.float64)], 1)
    _, fit, _ = _gmm(with_constant)
    assert "reg_covar_large" in [d.code for d in fit.messages]
    small, fit, _ = _gmm(faithful * 1e-6, reg_covar=1e-18)  # a floor to the data's scale
    assert "reg_covar_large" not in [d.code for d in fit.messages]
    base, _, _ = _gmm(faithful)
    assert small == pytest.approx(base + faithful.numel() * math.log(1e6), rel=1e-9)


def test_duplicate_rows_and_a_component_left_without_data_stay_finite(faithful):
    dup = torch.cat([faithful, faithful[:1].repeat(300, 1)])
    ll, fit, _ = _gmm(dup)
    assert math.isfinite(ll)
    # five components on two distinct points: most lose all their data
    two = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64).repeat(50, 1)
    model = ppgen.GaussianMixture(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppgen.fit(model, two, method="em", seed=0, progress=False)
    assert torch.isfinite(model.log_prob(two)).all()
    assert torch.isfinite(model.weights).all() and float(model.weights.sum()) == \
        pytest.approx(1.0)
