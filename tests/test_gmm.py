"""Gaussian mixture: against scikit-learn, scipy and closed forms."""

import math
import warnings

import numpy as np
import pytest
import torch
from common import assert_close
from scipy.stats import multivariate_normal

import ppgen
from ppgen import GaussianMixture, NotFittedError
from ppgen.models.gaussian import full_covariances


def _sklearn_start(x, k, covariance, seed):
    """Start parameters from random responsibilities (numpy, independent of ppgen)."""
    rng = np.random.default_rng(seed)
    resp = rng.random((len(x), k))
    resp /= resp.sum(1, keepdims=True)
    nk = resp.sum(0)
    w = nk / nk.sum()
    m = resp.T @ x / nk[:, None]
    cov = np.stack([(resp[:, j, None] * (x - m[j])).T @ (x - m[j]) / nk[j] for j in range(k)])
    cov += 1e-6 * np.eye(x.shape[1])
    if covariance == "diag":
        cov = np.stack([np.diag(c) for c in cov])
    elif covariance == "spherical":
        cov = np.stack([np.diag(c).mean() for c in cov])
    return w, m, cov


def test_old_faithful_maximum_likelihood(old_faithful):
    gmm = GaussianMixture(2)
    fit = ppgen.fit(gmm, old_faithful, method="em", seed=0, num_restarts=3, progress=False)
    total = float(gmm.log_prob(old_faithful).sum())
    assert abs(total - (-1130.264)) < 0.01
    assert abs(gmm.bic(old_faithful) - 2322.19) < 0.01
    assert fit.converged is True
    assert_close(fit.history["objective"][-1], total, rtol=1e-9)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_em_matches_sklearn_from_same_start(covariance):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGMM

    x, _ = ppgen.datasets.make_mixture(2000, 4, 3, covariance=covariance, separation=2.0,
                                       seed=1)
    xn = x.numpy()
    w, m, cov = _sklearn_start(xn, 4, covariance, seed=2)
    prec = np.linalg.inv(cov) if covariance == "full" else 1.0 / cov
    sk = SkGMM(4, covariance_type=covariance, reg_covar=1e-6, tol=0, max_iter=20,
               weights_init=w, means_init=m, precisions_init=prec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(xn)
    gmm = GaussianMixture(4, covariance=covariance, reg_covar=1e-6)
    fit = ppgen.fit(gmm, x, method="em", init={"weights": w, "locs": m, "covariances": cov},
                    num_steps=20, tol=0.0, progress=False)
    ours = float(gmm.log_prob(x).mean())
    assert_close(ours, sk.score(xn), rtol=1e-6)
    assert_close(fit.history["objective"][-1] / len(x), sk.score(xn), rtol=1e-6)
    assert_close(gmm.locs, sk.means_, rtol=1e-5, atol=1e-8)
    assert_close(gmm.covariances, sk.covariances_, rtol=1e-5, atol=1e-8)
    assert_close(gmm.bic(x), sk.bic(xn), rtol=1e-6)
    assert_close(gmm.aic(x), sk.aic(xn), rtol=1e-6)
    assert (gmm.predict(x).numpy() == sk.predict(xn)).mean() > 0.999
    assert len(fit.history["objective"]) == 21


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_em_log_likelihood_never_decreases(seed, covariance):
    x, _ = ppgen.datasets.make_mixture(500, 5, 2, covariance=covariance, separation=1.0,
                                       seed=seed)
    gmm = GaussianMixture(6, covariance=covariance, init_method="random")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the driver warns on a decrease
        fit = ppgen.fit(gmm, x, method="em", seed=seed, num_steps=60, tol=0, progress=False)
    hist = fit.history["objective"]
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[:-1]))


def test_log_prob_matches_scipy(old_faithful):
    gmm = GaussianMixture(3)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    x = old_faithful.numpy()
    dens = sum(w * multivariate_normal(m, c).pdf(x) for w, m, c in
               zip(gmm.weights.numpy(), gmm.locs.numpy(), gmm.covariances.numpy()))
    assert_close(gmm.log_prob(old_faithful), np.log(dens), rtol=1e-10)
    assert_close(gmm.score(old_faithful), -np.log(dens), rtol=1e-10)
    assert_close(gmm.predict_proba(old_faithful).sum(-1), np.ones(len(x)), rtol=1e-12)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_log_prob_follows_a_dtype_change(old_faithful, covariance):
    """The cached Cholesky factors follow ``.to(dtype)`` (they were kept in float64)."""
    gmm = GaussianMixture(2, covariance=covariance)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    x = torch.as_tensor(old_faithful, dtype=torch.float64)
    expected = gmm.log_prob(x)  # fills the cache in float64
    gmm.to(torch.float32)
    got = gmm.log_prob(x.float())
    assert got.dtype == torch.float32
    assert_close(got.double(), expected, rtol=1e-4)


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_sample_moments_match_the_mixture(covariance):
    gmm = GaussianMixture(3, covariance=covariance)
    x, _ = ppgen.datasets.make_mixture(300, 3, 2, covariance=covariance, seed=3)
    ppgen.fit(gmm, x, method="em", seed=0, progress=False)
    n = 200_000
    draws = gmm.sample(n, seed=5)
    full = full_covariances(gmm.covariances, covariance, 2)
    mean = gmm.weights @ gmm.locs
    second = torch.einsum("k,kij->ij", gmm.weights, full + gmm.locs[:, :, None] *
                          gmm.locs[:, None, :])
    cov = second - torch.outer(mean, mean)
    se = (cov.diagonal() / n).sqrt()
    assert torch.all((draws.mean(0) - mean).abs() < 5 * se)
    assert_close(torch.cov(draws.T), cov, rtol=0.03, atol=0.03 * float(cov.diagonal().max()))
    assert torch.equal(gmm.sample(10, seed=1), gmm.sample(10, seed=1))
    x2, z = gmm.sample(10, seed=1, return_labels=True)
    assert z.shape == (10,) and x2.shape == (10, 2)


def test_impute_is_the_conditional_mean(old_faithful):
    gmm = GaussianMixture(2)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    x = old_faithful[:6].clone()
    x[0, 0] = float("nan")
    x[1, 1] = float("nan")
    x[2, :] = float("nan")
    out = gmm.impute(x)
    assert torch.equal(out[3:], x[3:])
    assert out[0, 1] == x[0, 1] and out[1, 0] == x[1, 0]
    # brute-force reference for row 0 (feature 0 missing given feature 1), with scipy
    w, mu, cov = (t.numpy() for t in (gmm.weights, gmm.locs, gmm.covariances))
    xo = float(x[0, 1])
    post = np.array([w[k] * multivariate_normal(mu[k, 1], cov[k, 1, 1]).pdf(xo)
                     for k in range(2)])
    post /= post.sum()
    cond = [mu[k, 0] + cov[k, 0, 1] / cov[k, 1, 1] * (xo - mu[k, 1]) for k in range(2)]
    assert_close(out[0, 0], post @ np.array(cond), rtol=1e-10)
    assert_close(out[2], w @ mu, rtol=1e-10)
    assert not torch.isnan(out).any()


def test_impute_recovers_correlated_values_better_than_the_mean():
    x, _ = ppgen.datasets.make_mixture(2000, 3, 4, seed=7)
    gmm = GaussianMixture(3)
    ppgen.fit(gmm, x, method="em", seed=0, progress=False)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(x.shape, generator=g) < 0.2
    mask[:, 0] = False  # keep one observed value per row
    holed = x.masked_fill(mask, float("nan"))
    filled = gmm.impute(holed)
    err = (filled - x)[mask].square().mean()
    base = (x.mean(0).expand_as(x) - x)[mask].square().mean()
    assert err < 0.5 * base


def test_a_collapsed_component_does_not_produce_nan():
    x = torch.cat([torch.randn(50, 2, dtype=torch.float64), torch.zeros(5, 2,
                                                                      dtype=torch.float64)])
    gmm = GaussianMixture(4, reg_covar=1e-3)
    ppgen.fit(gmm, x, method="em", seed=0, progress=False, num_steps=50)
    assert torch.isfinite(gmm.log_prob(x)).all()


def test_relabel_undoes_switched_chains(old_faithful):
    gmm = GaussianMixture(2)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    values = gmm.init_values(old_faithful, init=gmm.get_params(), seed=0)
    draws = {k: v.expand(2, 50, *v.shape).clone() for k, v in values.items()}
    draws["locs"] = draws["locs"] + 0.01 * torch.randn(draws["locs"].shape,
                                                       dtype=torch.float64)
    swapped = {k: v.clone() for k, v in draws.items()}
    for k in swapped:
        swapped[k][1] = swapped[k][1].flip(1)  # chain 1 has the labels the other way round
    swapped["assignment"] = torch.zeros(2, 50, 3, dtype=torch.long)
    out = gmm.relabel(swapped)
    assert_close(out["locs"][1], draws["locs"][1], rtol=1e-12)
    assert_close(out["weights"], draws["weights"], rtol=1e-12)
    assert torch.equal(out["assignment"][0], torch.zeros(50, 3, dtype=torch.long))
    assert torch.equal(out["assignment"][1], torch.ones(50, 3, dtype=torch.long))


# ------------------------------------------------------------------------ bad input
def test_nan_in_data_points_to_impute(old_faithful):
    x = old_faithful.clone()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"data: expected no missing values.*impute"):
        ppgen.fit(GaussianMixture(2), x, method="em", progress=False)


def test_inf_in_data_is_refused(old_faithful):
    x = old_faithful.clone()
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"data: expected finite values.*row 0"):
        ppgen.fit(GaussianMixture(2), x, method="em", progress=False)


@pytest.mark.parametrize("shape", [(272,), (10, 2, 2)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=r"data: expected 2 dimensions.*got shape"):
        ppgen.fit(GaussianMixture(2), torch.randn(shape), method="em", progress=False)


def test_more_components_than_rows():
    with pytest.raises(ValueError, match=r"num_components: expected at most the number of "
                                         r"rows of data \(5\), got 6"):
        ppgen.fit(GaussianMixture(6), torch.randn(5, 2), method="em", progress=False)


def test_non_numeric_data():
    x = np.array([["a", "b"], ["c", "d"]])
    with pytest.raises(TypeError, match=r"data: expected a numeric array.*got text \(dtype "
                       r"<U1, e\.g\. 'a'\)"):
        ppgen.fit(GaussianMixture(1), x, method="em", progress=False)
    with pytest.raises(TypeError, match="data: expected a numeric"):
        ppgen.fit(GaussianMixture(1), [[1.0, 2.0], [3.0]], method="em", progress=False)


@pytest.mark.parametrize("action", ["sample", "score", "log_prob", "impute", "predict"])
def test_unfitted_model_says_fit_first(action, old_faithful):
    gmm = GaussianMixture(2)
    with pytest.raises(NotFittedError, match="not fitted.*ppgen.fit"):
        getattr(gmm, action)(10 if action == "sample" else old_faithful)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_components": 0}, "num_components: expected an integer >= 1, got 0"),
    ({"num_components": 2.5}, "num_components: expected an integer"),
    ({"num_components": 2, "covariance": "tied"}, "covariance: expected one of"),
    ({"num_components": 2, "reg_covar": -1.0}, "reg_covar: expected a finite number >= 0"),
    ({"num_components": 2, "weight_concentration": 0.0}, "weight_concentration"),
])
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianMixture(**kwargs)


def test_bad_init_and_features(old_faithful):
    with pytest.raises(ValueError, match=r"params\['locs'\]: expected shape \(2, num_features"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="em", init={"locs": np.zeros((3, 2))},
                  progress=False)
    with pytest.raises(ValueError, match="init: expected keys among"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="em", init={"means": 0},
                  progress=False)
    gmm = GaussianMixture(2)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    with pytest.raises(ValueError, match=r"data: expected 2 features.*shape \(4, 3\)"):
        gmm.log_prob(torch.zeros(4, 3))


def test_failed_fit_leaves_the_model_as_it_was(old_faithful):
    gmm = GaussianMixture(2)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    before = gmm.get_params()
    with pytest.raises(ValueError):
        ppgen.fit(gmm, old_faithful, method="em", init={"locs": np.zeros((3, 2))},
                  progress=False)
    after = gmm.get_params()
    for k in before:
        assert torch.equal(before[k], after[k])
    assert math.isfinite(float(gmm.log_prob(old_faithful).sum()))
