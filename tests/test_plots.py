"""Figures of ppgen.plots: what they draw, their labels, and their errors."""

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

import ppgen  # noqa: E402
from ppgen.plots import plot_history, plot_mixture, plot_scores, plot_trace  # noqa: E402


@pytest.fixture(scope="module")
def faithful():
    return ppgen.datasets.load_old_faithful(return_names=True)


@pytest.fixture(scope="module")
def em_fit(faithful):
    x, _ = faithful
    gmm = ppgen.GaussianMixture(2)
    fit = ppgen.fit(gmm, x, method="em", seed=0, progress=False)
    return gmm, fit


def _set_gmm(covariance, covariances, locs=((0.0, 0.0), (5.0, 5.0)), weights=(0.5, 0.5)):
    gmm = ppgen.GaussianMixture(len(weights), covariance=covariance)
    gmm.set_params(weights=torch.tensor(weights, dtype=torch.float64),
                   locs=torch.tensor(locs, dtype=torch.float64),
                   covariances=torch.tensor(covariances, dtype=torch.float64))
    return gmm


def _ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def _fake_mcmc_fit(num_chains=2, num_draws=30, diverging=None, seed=0):
    g = np.random.default_rng(seed)
    posterior = {
        "weights": torch.tensor(g.dirichlet([5, 5], size=(num_chains, num_draws))),
        "locs": torch.tensor(g.normal(size=(num_chains, num_draws, 2, 3))),
        "corr_chol": torch.eye(2).expand(num_chains, num_draws, 2, 2, 2).clone(),
        "assignment": torch.zeros(num_chains, num_draws, 10, dtype=torch.long),
    }
    stats = {}
    if diverging is not None:
        stats["diverging"] = diverging
    info = SimpleNamespace(continuous=("weights", "locs", "corr_chol"))
    return SimpleNamespace(method="mcmc", posterior=posterior, sample_stats=stats, info=info,
                           history={}, converged=None)


# ----------------------------------------------------------------------- plot_mixture
def test_plot_mixture_old_faithful(em_fit, faithful, tmp_path):
    gmm, _ = em_fit
    x, names = faithful
    fig = plot_mixture(gmm, x, names=names)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "eruptions"
    assert ax.get_ylabel() == "waiting"
    assert "2 components" in ax.get_title()
    # One scatter per component plus one mean marker per component.
    assert len(ax.collections) == 4
    assert sum(len(c.get_offsets()) for c in ax.collections[::2]) == len(x)
    # 1- and 2-sigma ellipses per component, centred on the means.
    ells = _ellipses(ax)
    assert len(ells) == 4
    locs = gmm.locs.numpy()
    centres = sorted(tuple(np.round(e.center, 6)) for e in ells)
    assert centres == sorted(tuple(np.round(m, 6)) for m in locs for _ in range(2))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("component 0") for t in legend)
    assert any(t.startswith("component 1") for t in legend)
    assert "1-sigma ellipse" in legend and "2-sigma ellipse" in legend
    fig.savefig(tmp_path / "mixture.png")
    assert (tmp_path / "mixture.png").stat().st_size > 1000


def test_ellipse_geometry_from_covariance():
    cov = [[[4.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]
    gmm = _set_gmm("full", cov)
    x = gmm.sample(50, seed=0)
    ax = plot_mixture(gmm, x).axes[0]
    first = [e for e in _ellipses(ax) if np.allclose(e.center, (0.0, 0.0))]
    sizes = sorted((sorted((e.width, e.height)) for e in first), key=lambda s: s[0])
    # 1 sigma: full axes 2*sqrt(eig) = (2, 4); 2 sigma: (4, 8).
    np.testing.assert_allclose(sizes, [[2.0, 4.0], [4.0, 8.0]])
    major = max(first, key=lambda e: e.width)
    # The long axis lies along the first feature.
    assert abs(np.cos(np.radians(major.angle))) == pytest.approx(1.0)


@pytest.mark.parametrize("covariance, covariances", [
    ("diag", [[4.0, 1.0], [1.0, 1.0]]),
    ("spherical", [2.0, 1.0]),
])
def test_plot_mixture_diag_and_spherical(covariance, covariances):
    gmm = _set_gmm(covariance, covariances)
    x = gmm.sample(60, seed=1)
    ax = plot_mixture(gmm, x, names=["a", "b"]).axes[0]
    ells = _ellipses(ax)
    assert len(ells) == 4
    for e in ells:
        if covariance == "spherical":
            assert e.width == pytest.approx(e.height)
    one_sigma_first = min((e for e in ells if np.allclose(e.center, 0)), key=lambda e: e.width
                          * e.height)
    expected = [2.0, 4.0] if covariance == "diag" else [2 * np.sqrt(2)] * 2
    np.testing.assert_allclose(sorted((one_sigma_first.width, one_sigma_first.height)),
                               expected)
    assert covariance in ax.get_title()


def test_plot_mixture_dims_ax_and_three_features():
    gmm = _set_gmm("diag", [[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]],
                   locs=((0.0, 0.0, 0.0), (4.0, 4.0, 4.0)))
    x = gmm.sample(40, seed=2)
    own = Figure()
    ax = own.add_subplot()
    fig = plot_mixture(gmm, x, dims=(2, 0), ax=ax, names=["u", "v", "w"])
    assert fig is own
    assert ax.get_xlabel() == "w" and ax.get_ylabel() == "u"
    # Default names when none are given.
    ax2 = plot_mixture(gmm, x, dims=(0, 1)).axes[0]
    assert ax2.get_xlabel() == "x[0]" and ax2.get_ylabel() == "x[1]"


def test_plot_mixture_one_feature_draws_densities():
    gmm = _set_gmm("full", [[[1.0]], [[0.5]]], locs=((0.0,), (4.0,)))
    x = gmm.sample(100, seed=3)
    fig = plot_mixture(gmm, x, names=["height"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "height"
    assert len(ax.get_lines()) == 3  # two components and the mixture
    assert len(ax.patches) > 0  # the histogram


@pytest.mark.parametrize("dims", [(0, 0), (0, 5), (0,), "ab", (0.0, 1.0)])
def test_plot_mixture_bad_dims(em_fit, faithful, dims):
    gmm, _ = em_fit
    x, _ = faithful
    with pytest.raises(ValueError, match="dims"):
        plot_mixture(gmm, x, dims=dims)


def test_plot_mixture_bad_names_and_unfitted(em_fit, faithful):
    gmm, _ = em_fit
    x, _ = faithful
    with pytest.raises(ValueError, match="names"):
        plot_mixture(gmm, x, names=["only one"])
    with pytest.raises(ppgen.NotFittedError, match="fit"):
        plot_mixture(ppgen.GaussianMixture(2), x)
    with pytest.raises(TypeError, match="Axes"):
        plot_mixture(gmm, x, ax="not an axes")


# ----------------------------------------------------------------------- plot_history
def test_plot_history_em(em_fit):
    _, fit = em_fit
    fig = plot_history(fit)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "log-likelihood" in ax.get_ylabel()
    assert ax.get_xlabel() == "iteration"
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), fit.history["objective"])
    assert line.get_xdata()[0] == 0  # iteration 0 is the initialisation
    assert "converged" in ax.get_title()


def test_plot_history_svi(faithful):
    x, _ = faithful
    fit = ppgen.fit(ppgen.GaussianMixture(2), x, method="svi", seed=0, progress=False,
                    num_steps=20, tol=0)
    ax = plot_history(fit).axes[0]
    assert ax.get_ylabel() == "loss"
    assert ax.get_xlabel() == "step"
    (line,) = ax.get_lines()
    assert len(line.get_ydata()) == 20


def test_plot_history_log_scale_for_wide_losses():
    fake = SimpleNamespace(method="svi", history={"objective": np.geomspace(1e5, 10, 50)},
                           converged=False)
    ax = plot_history(fake).axes[0]
    assert ax.get_yscale() == "log"
    assert "not converged" in ax.get_title()


def test_plot_history_without_history():
    fake = _fake_mcmc_fit()
    with pytest.raises(ValueError, match="plot_trace"):
        plot_history(fake)


# ------------------------------------------------------------------------- plot_trace
def test_plot_trace_layout_and_constant_elements_skipped():
    fake = _fake_mcmc_fit(num_chains=3, num_draws=25)
    fig = plot_trace(fake)
    assert isinstance(fig, Figure)
    # weights: 2 elements, locs: 6; corr_chol is constant and assignment discrete.
    assert len(fig.axes) == 2 * 8
    labels = [ax.get_ylabel() for ax in fig.axes[::2]]
    assert labels[:3] == ["weights[0]", "weights[1]", "locs[0, 0]"]
    assert not any(lab.startswith(("corr_chol", "assignment")) for lab in labels)
    trace_ax = fig.axes[1]
    assert len(trace_ax.get_lines()) == 3  # one line per chain
    assert len(trace_ax.get_lines()[0].get_xdata()) == 25
    assert len(fig.axes[0].get_lines()) == 3  # one density per chain
    assert "3 chains x 25 draws" in fig.get_suptitle()


def test_plot_trace_caps_rows_and_selects_sites():
    fake = _fake_mcmc_fit()
    fig = plot_trace(fake, max_rows=3)
    assert len(fig.axes) == 6
    assert "3 of 8 elements" in fig.get_suptitle()
    fig = plot_trace(fake, var_names=["locs"])
    assert len(fig.axes) == 12
    assert all(ax.get_ylabel().startswith("locs") for ax in fig.axes[::2])
    with pytest.raises(ValueError, match="var_names"):
        plot_trace(fake, var_names=["nope"])


def test_plot_trace_marks_divergences():
    diverging = np.zeros((2, 30), dtype=bool)
    diverging[1, [3, 7]] = True
    fig = plot_trace(_fake_mcmc_fit(diverging=diverging))
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "divergence (2)" in legend
    assert len(fig.axes[1].get_lines()) == 3  # two chains and the divergence ticks


def test_plot_trace_needs_draws(em_fit):
    _, fit = em_fit
    with pytest.raises(ValueError, match="posterior draws"):
        plot_trace(fit)


def test_plot_trace_real_mcmc_fit(faithful, tmp_path):
    x, _ = faithful
    gmm = ppgen.GaussianMixture(2, covariance="spherical")
    fit = ppgen.fit(gmm, x, method="mcmc", seed=0, progress=False, num_samples=10,
                    num_warmup=5, num_chains=2, max_tree_depth=3)
    fig = plot_trace(fit)
    # weights 2 + locs 4 + scales 2 = 8 elements; the discrete assignment is left out.
    assert len(fig.axes) == 16
    assert not any(ax.get_ylabel().startswith("assignment") for ax in fig.axes)
    fig.savefig(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 1000


# ------------------------------------------------------------------------ plot_scores
def test_plot_scores(em_fit, faithful):
    gmm, _ = em_fit
    x, _ = faithful
    fig = plot_scores(gmm, x)
    ax = fig.axes[0]
    assert len(ax.patches) > 3  # histogram bars
    assert sum(p.get_height() for p in ax.patches) == len(x)
    (threshold,) = ax.get_lines()
    q = float(np.quantile(gmm.score(x).numpy(), 0.99))
    assert threshold.get_xdata()[0] == pytest.approx(q)
    assert "nats" in ax.get_xlabel()
    assert len(plot_scores(gmm, x, quantile=None).axes[0].get_lines()) == 0
    with pytest.raises(ValueError, match="quantile"):
        plot_scores(gmm, x, quantile=1.5)
