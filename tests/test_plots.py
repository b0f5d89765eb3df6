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
from ppgen.plots import (  # noqa: E402
    plot_elbo_history,
    plot_history,
    plot_image_grid,
    plot_latent_space,
    plot_mixture,
    plot_scores,
    plot_state_posterior,
    plot_topics,
    plot_trace,
    plot_transition_matrix,
)


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


def test_plot_history_objective_label(em_fit):
    _, fit = em_fit
    ax = plot_history(fit, objective_label="evidence lower bound (nats)").axes[0]
    assert ax.get_ylabel() == "evidence lower bound (nats)"
    assert ax.get_title().startswith("EM evidence lower bound per iteration")
    with pytest.raises(TypeError, match="objective_label"):
        plot_history(fit, objective_label=3)


def test_plot_history_labels_the_models_em_objective():
    seqs, _ = ppgen.datasets.make_hmm(6, 10, 2, num_features=1, seed=3)
    hmm = ppgen.HiddenMarkovModel(2, transition_concentration=2.0)
    fit = ppgen.fit(hmm, seqs, method="em", seed=0, num_steps=4, progress=False)
    ax = plot_history(fit).axes[0]
    # the HMM's EM maximises log-likelihood + log prior, not the log-likelihood alone
    assert ax.get_ylabel() == "log-likelihood + log prior (nats)"
    assert ax.get_title().startswith("EM log-likelihood + log prior per iteration")
    assert ppgen.LDA.em_objective == "evidence lower bound (nats)"
    assert ppgen.GaussianMixture.em_objective == "log-likelihood (nats)"


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
    # ... and names the ones left out, with how to show them
    assert ("not shown: locs[0, 1], locs[0, 2], locs[1, 0], locs[1, 1], locs[1, 2] (choose "
            "with var_names=, or raise max_rows=3)") in fig.get_suptitle()
    assert "and 1 more" in plot_trace(fake, max_rows=1).get_suptitle()
    assert "not shown" not in plot_trace(fake).get_suptitle()
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


# ---------------------------------------------------------------- plot_state_posterior
def _posterior(num_steps=12, k=3, seed=0):
    g = np.random.default_rng(seed)
    return g.dirichlet(np.ones(k), size=num_steps)


def _state_polys(ax):
    """The stacked areas (labelled "state i"), in stacking order."""
    return [c for c in ax.collections if c.get_label().startswith("state ")]


def test_plot_state_posterior_stacked_areas_and_path_strip():
    probs = _posterior(12, 3)
    states = np.array([0, 0, 1, 1, 1, 2, 0, 0, 2, 2, 1, 0])
    fig = plot_state_posterior(probs, states=states, states_label="Viterbi path")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    polys = _state_polys(ax)
    assert [p.get_label() for p in polys] == ["state 0", "state 1", "state 2"]
    # The first area's upper edge runs through p(state 0) at every step, the last one's at 1.
    top0 = np.round(polys[0].get_paths()[0].vertices[:, 1], 9)
    assert np.isin(np.round(probs[:, 0], 9), top0).all()
    np.testing.assert_allclose(polys[-1].get_paths()[0].vertices[:, 1].max(), 1.0)
    # The path strip: one bar per run of a state (0: 3 runs, 1: 2 runs, 2: 2 runs).
    strips = [c for c in ax.collections if c not in polys]
    assert sum(len(c.get_paths()) for c in strips) == 7
    widths = sorted(round(float(np.ptp(p.vertices[:, 0]))) for c in strips
                    for p in c.get_paths())
    assert widths == [1, 1, 1, 2, 2, 2, 3]
    assert any(t.get_text() == "Viterbi path" for t in ax.texts)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["state 0", "state 1",
                                                                   "state 2"]
    assert ax.get_xlabel() == "time step" and "state" in ax.get_ylabel()
    assert ax.get_xlim() == (-0.5, 11.5)


def test_plot_state_posterior_heatmap_with_path_line():
    probs = _posterior(20, 4, seed=1)
    states = probs.argmax(-1)
    fig = plot_state_posterior(torch.tensor(probs), states=torch.tensor(states),
                               kind="heatmap", states_label="true states")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the posterior and its colour bar
    assert fig.axes[1].get_ylabel() == "p(state | data)"
    (image,) = ax.get_images()
    np.testing.assert_allclose(image.get_array(), probs.T)
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), states)
    assert line.get_label() == "true states"
    assert ax.get_ylabel() == "state"
    # More states than colours: a heat map by default.
    many = plot_state_posterior(_posterior(8, 12)).axes[0]
    assert len(many.get_images()) == 1 and not _state_polys(many)


def test_plot_state_posterior_observations_panels():
    probs = _posterior(15, 2)
    obs = np.random.default_rng(0).normal(size=(15, 2))
    fig = plot_state_posterior(probs, observations=obs, names=["pitch", "volume"])
    ax_obs, ax_post = fig.axes
    assert len(ax_obs.get_lines()) == 2
    np.testing.assert_allclose(ax_obs.get_lines()[1].get_ydata(), obs[:, 1])
    assert [t.get_text() for t in ax_obs.get_legend().get_texts()] == ["pitch", "volume"]
    assert ax_obs.get_ylabel() == "observation"
    assert ax_obs.get_shared_x_axes().joined(ax_obs, ax_post)
    assert len(_state_polys(ax_post)) == 2
    # Many features (a piano roll) are drawn as an image, features on the y axis.
    roll = (np.random.default_rng(1).random((15, 88)) < 0.1).astype(float)
    fig = plot_state_posterior(probs, observations=roll, observations_label="key")
    (image,) = fig.axes[0].get_images()
    np.testing.assert_array_equal(image.get_array(), roll.T)
    assert fig.axes[0].get_ylabel() == "key"
    # One feature given as a 1-D array; two axes of the caller's own.
    own = Figure()
    axes = own.subplots(2, 1)
    assert plot_state_posterior(probs, observations=obs[:, 0], ax=axes) is own
    assert len(axes[0].get_lines()) == 1


def test_plot_state_posterior_drops_padding():
    probs = np.zeros((10, 3))
    probs[:6] = _posterior(6, 3)
    states = np.array([0, 1, 2, 2, 1, 0, -1, -1, -1, -1])
    obs = np.arange(10.0)
    fig = plot_state_posterior(probs, observations=obs, states=states, kind="heatmap")
    ax_post = fig.axes[1]
    assert ax_post.get_images()[0].get_array().shape == (3, 6)
    assert ax_post.get_xlim() == (-0.5, 5.5)
    np.testing.assert_array_equal(ax_post.get_lines()[0].get_ydata(), states[:6])
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_ydata(), obs[:6])


def test_plot_state_posterior_from_a_fitted_hmm():
    x, _ = ppgen.datasets.make_hmm(6, 30, num_states=2, seed=0)
    hmm = ppgen.HiddenMarkovModel(2)
    ppgen.fit(hmm, x, method="em", seed=0, progress=False, num_steps=5)
    fig = plot_state_posterior(hmm.predict_proba(x)[0], observations=x[0],
                               states=hmm.predict(x)[0])
    assert len(_state_polys(fig.axes[1])) == 2
    assert len(fig.axes[0].get_lines()) == 2


@pytest.mark.parametrize("kwargs, error, match", [
    ({"probs": np.full((1, 5, 2), 0.5)}, ValueError, "probs.*one sequence"),
    ({"probs": np.full((5, 2), 0.4)}, ValueError, "probs.*sum to 1"),
    ({"probs": np.zeros((5, 2))}, ValueError, "probs"),
    ({"probs": [[1.5, -0.5]]}, ValueError, "probs.*non-negative"),
    ({"probs": [["a", "b"]]}, TypeError, "probs"),
    ({"observations": np.zeros((4, 2))}, ValueError, "observations"),
    ({"states": np.zeros(4)}, ValueError, "states"),
    ({"states": [0, 1, 2, 0, 1]}, ValueError, "states.*0..1"),
    ({"kind": "bars"}, ValueError, "kind"),
    ({"ax": "not an axes"}, TypeError, "ax"),
    ({"observations": np.zeros(5), "ax": Figure().add_subplot()}, TypeError, "two"),
    ({"names": ["a", "b"], "observations": np.zeros((5, 3))}, ValueError, "names"),
])
def test_plot_state_posterior_bad_input(kwargs, error, match):
    args = {"probs": np.full((5, 2), 0.5), **kwargs}
    probs = args.pop("probs")
    with pytest.raises(error, match=match):
        plot_state_posterior(probs, **args)


# -------------------------------------------------------------- plot_transition_matrix
def test_plot_transition_matrix_annotations_labels_colour_bar():
    a = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.333, 0.333, 0.334]])
    fig = plot_transition_matrix(a)
    assert isinstance(fig, Figure)
    ax, bar = fig.axes
    assert bar.get_ylabel() == "transition probability"
    assert ax.get_xlabel() == "to state" and ax.get_ylabel() == "from state"
    np.testing.assert_allclose(ax.get_images()[0].get_array(), a)
    texts = ax.texts
    assert len(texts) == 9
    for t in texts:
        col, row = (int(round(v)) for v in t.get_position())
        assert float(t.get_text()) == pytest.approx(a[row, col], abs=0.005)
        assert t.get_text() == f"{a[row, col]:.2f}"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0", "1", "2"]
    assert "3 states" in ax.get_title()
    # Dark cells get white text.
    assert {t.get_color() for t in texts if float(t.get_text()) > 0.6} == {"white"}


def test_plot_transition_matrix_fitted_model_no_annotation_and_ax():
    x, _ = ppgen.datasets.make_hmm(6, 30, num_states=2, seed=0)
    hmm = ppgen.HiddenMarkovModel(2)
    ppgen.fit(hmm, x, method="em", seed=0, progress=False, num_steps=5)
    own = Figure()
    ax = own.add_subplot()
    assert plot_transition_matrix(hmm.transition_probs, ax=ax, annotate=False) is own
    assert len(ax.texts) == 0
    np.testing.assert_allclose(ax.get_images()[0].get_array(), hmm.transition_probs.numpy())


@pytest.mark.parametrize("matrix, match", [
    (np.full((2, 3), 1 / 3), "square"),
    (np.ones(3), "square"),
    ([[0.5, 0.6], [0.5, 0.5]], "sum to 1"),
    ([[1.5, -0.5], [0.5, 0.5]], "non-negative"),
    ([[np.nan, 1.0], [0.5, 0.5]], "finite"),
])
def test_plot_transition_matrix_bad_input(matrix, match):
    with pytest.raises(ValueError, match=f"transition_probs.*{match}"):
        plot_transition_matrix(matrix)
    with pytest.raises(TypeError, match="annotate"):
        plot_transition_matrix(np.eye(2), annotate="yes")


# ------------------------------------------------------------------------ plot_topics
def _bars(ax):
    """(widths, y positions) of the bars of a panel, top to bottom."""
    patches = sorted(ax.patches, key=lambda p: p.get_y())
    return np.array([p.get_width() for p in patches]), np.array([p.get_y() for p in patches])


def test_plot_topics_bars_are_the_top_probabilities():
    counts, truth = ppgen.datasets.make_corpus(50, 30, 4, seed=0)
    topic_word = truth["topic_word"]
    vocabulary = [f"term{j}" for j in range(30)]
    fig = plot_topics(topic_word, vocabulary=vocabulary, num_words=6, ncols=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # the unused fifth and sixth cells of the 2 x 3 grid are gone
    tw = topic_word.numpy()
    for k, ax in enumerate(fig.axes):
        order = np.argsort(-tw[k])[:6]
        widths, _ = _bars(ax)
        np.testing.assert_allclose(widths, tw[k, order], rtol=1e-12)  # most probable on top
        assert [t.get_text() for t in ax.get_yticklabels()] == [vocabulary[j] for j in order]
        assert ax.get_title() == f"topic {k}"
        assert ax.get_xlabel() == "p(word | topic)"
        assert ax.get_ylim()[0] > ax.get_ylim()[1]  # inverted: first word at the top
    # Grid: three panels on the first row, one on the second.
    rows = sorted({round(ax.get_position().y0, 3) for ax in fig.axes})
    assert len(rows) == 2
    assert "Top 6 words of each of the 4 topics" in fig._suptitle.get_text()


def test_plot_topics_subset_titles_ids_and_caps():
    tw = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    fig = plot_topics(tw, topics=[2, 1], num_words=10, titles=["flat", "rising"], ncols=5)
    assert [ax.get_title() for ax in fig.axes] == ["flat", "rising"]
    flat, rising = fig.axes
    # No vocabulary: the column indices; ties keep column order; num_words capped at V.
    assert [t.get_text() for t in flat.get_yticklabels()] == ["0", "1", "2", "3"]
    assert [t.get_text() for t in rising.get_yticklabels()] == ["3", "2", "1", "0"]
    np.testing.assert_allclose(_bars(rising)[0], [0.4, 0.3, 0.2, 0.1])
    assert "of 2 of the 3 topics" in fig._suptitle.get_text()
    fig = plot_topics(torch.tensor(tw, dtype=torch.float32), topics=0, num_words=2,
                      title="mine")
    assert len(fig.axes) == 1 and fig._suptitle.get_text() == "mine"
    np.testing.assert_allclose(_bars(fig.axes[0])[0], [0.5, 0.3], rtol=1e-6)


def test_plot_topics_from_a_fitted_lda():
    counts, _ = ppgen.datasets.make_corpus(60, 20, 2, seed=1)
    vocabulary = [f"w{j:02d}" for j in range(20)]
    lda = ppgen.LDA(2, vocabulary=vocabulary)
    ppgen.fit(lda, counts, "em", seed=0, num_steps=5, tol=0, progress=False)
    fig = plot_topics(lda, num_words=5)
    top = lda.top_words(5)
    for k, ax in enumerate(fig.axes):
        assert [t.get_text() for t in ax.get_yticklabels()] == top[k]
        np.testing.assert_allclose(_bars(ax)[0], lda.topic_word[k].sort(descending=True)
                                   .values[:5].numpy(), rtol=1e-6)
    with pytest.raises(ppgen.NotFittedError):
        plot_topics(ppgen.LDA(2))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"topic_word": [0.5, 0.5]}, ValueError, "topic_word: expected a .num_topics, vocab_size"),
    ({"topic_word": [[0.5, 0.6]]}, ValueError, "row 0 summing to 1.1"),
    ({"topic_word": [[1.5, -0.5]]}, ValueError, "topic_word: expected non-negative"),
    ({"topic_word": [[np.nan, 1.0]]}, ValueError, "topic_word: expected finite"),
    ({"topic_word": [["a", "b"]]}, TypeError, "topic_word: expected a numeric array"),
    ({"vocabulary": ["a", "b"]}, ValueError, "vocabulary: expected 3 words"),
    ({"vocabulary": "abc"}, TypeError, "vocabulary"),
    ({"num_words": 0}, ValueError, "num_words"),
    ({"num_words": 2.5}, TypeError, "num_words"),
    ({"ncols": 0}, ValueError, "ncols"),
    ({"topics": [0, 2]}, ValueError, r"topics: expected topic indices in 0\.\.1, got 2"),
    ({"topics": [1, 1]}, ValueError, "topics: expected distinct"),
    ({"topics": []}, ValueError, "topics: expected at least one"),
    ({"topics": [0.0]}, TypeError, "topics: expected integer"),
    ({"topics": [True]}, TypeError, "topics"),
    ({"titles": ["one"]}, ValueError, "titles: expected 2 titles"),
])
def test_plot_topics_bad_input(kwargs, error, match):
    args = {"topic_word": [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], **kwargs}
    with pytest.raises(error, match=match):
        plot_topics(args.pop("topic_word"), **args)


def test_figures_render_as_png_in_a_notebook_without_pyplot():
    """Jupyter shows a bare Figure as text until pyplot's inline backend is active; ppgen's
    figures carry their own PNG representation."""
    counts, truth = ppgen.datasets.make_corpus(50, 20, 2, seed=0)
    fig = ppgen.plots.plot_topics(truth["topic_word"], num_words=4)
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


# ------------------------------------------------------------------ images and latent codes
def test_plot_image_grid_lays_images_out_row_by_row():
    images = np.zeros((6, 2, 3))
    images[4] = 1.0  # the fifth image: second row, first column
    images[5, 0, 0] = np.nan
    fig = plot_image_grid(images, (2, 3), ncols=4, row_labels=["a", "b"], title="t",
                          missing_color="red")
    ax = fig.axes[0]
    mosaic = ax.get_images()[0].get_array()
    assert mosaic.shape[:2] == (2 * 3 + 1, 4 * 4 + 1)  # 1-pixel lines between images
    # gray_r: 0 is white and 1 black; the lines are light grey, NaN red.
    np.testing.assert_allclose(mosaic[1, 1, :3], 1.0)
    np.testing.assert_allclose(mosaic[4:6, 1:4, :3], 0.0)
    np.testing.assert_allclose(mosaic[0, 0, :3], 0.8)
    np.testing.assert_allclose(mosaic[4, 5, :3], (1.0, 0.0, 0.0))
    np.testing.assert_allclose(mosaic[4, 6, :3], 1.0)
    np.testing.assert_allclose(mosaic[4:6, 9:16, :3], 0.8)  # no seventh and eighth image
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert ax.get_title() == "t"
    flat = plot_image_grid(torch.rand(5, 6), (2, 3)).axes[0]
    assert flat.get_images()[0].get_array().shape[:2] == (2 * 3 + 1, 3 * 4 + 1)  # 3 columns


@pytest.mark.parametrize("kwargs, error, match", [
    ({"images": np.zeros((2, 5)), "image_shape": (2, 3)}, ValueError, "images"),
    ({"images": np.zeros((2, 6)), "image_shape": (2, 0)}, ValueError, "image_shape"),
    ({"images": np.full((2, 6), np.inf), "image_shape": (2, 3)}, ValueError, "infinite"),
    ({"images": np.zeros((4, 6)), "image_shape": (2, 3), "ncols": 2, "row_labels": ["a"]},
     ValueError, "row_labels"),
    ({"images": np.zeros((2, 6)), "image_shape": (2, 3), "row_labels": "ab"}, TypeError,
     "row_labels"),
    ({"images": np.zeros((2, 6)), "image_shape": (2, 3), "vmin": 1.0, "vmax": 0.0},
     ValueError, "vmin"),
    ({"images": np.zeros((2, 6)), "image_shape": (2, 3), "cmap": "nope"}, ValueError, "cmap"),
    ({"images": [["a"]], "image_shape": (1, 1)}, TypeError, "images"),
])
def test_plot_image_grid_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_image_grid(**kwargs)


def test_plot_latent_space_two_dims_pca_and_one_dim():
    g = np.random.default_rng(0)
    z = g.normal(size=(30, 2))
    ax = plot_latent_space(z, np.arange(30) % 3, label_name="digit").axes[0]
    assert len(ax.collections) == 3
    np.testing.assert_allclose(ax.collections[0].get_offsets(), z[::3])
    assert ax.get_legend().get_title().get_text() == "digit"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    assert ax.get_xlabel() == "z[0]"
    # Five dimensions with all the variance along the first axis: PC 1 explains it all.
    wide = np.zeros((30, 5))
    wide[:, 3] = g.normal(size=30)
    ax = plot_latent_space(torch.tensor(wide), title="codes").axes[0]
    assert ax.get_xlabel() == "PC 1 (100% of variance)" and ax.get_title() == "codes"
    xy = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.abs(xy[:, 0]), np.abs(wide[:, 3] - wide[:, 3].mean()))
    assert ax.get_legend() is None
    ax = plot_latent_space(g.normal(size=10)).axes[0]
    assert ax.get_xlabel() == "z" and "jitter" in ax.get_ylabel()


@pytest.mark.parametrize("z, labels, match", [
    (np.zeros((0, 2)), None, "shape"),
    (np.full((3, 2), np.nan), None, "finite"),
    (np.zeros((3, 2)), [0, 1], "one label per row"),
    (np.zeros((3, 2)), [0.5, 1, 2], "integer"),
])
def test_plot_latent_space_bad_input(z, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_latent_space(z, labels)


def test_plot_elbo_history_training_and_validation_curves():
    losses = np.linspace(40.0, 20.0, 50)
    history = {"objective": losses, "step": np.arange(50.0),
               "eval_val_elbo": np.linspace(-35.0, -21.0, 5),
               "eval_step": np.arange(10.0, 51.0, 10)}
    fit = SimpleNamespace(method="svi", history=history, converged=None)
    ax = plot_elbo_history(fit, train_label="training IWAE-5 bound").axes[0]
    raw, smooth, val = ax.get_lines()
    np.testing.assert_allclose(raw.get_ydata(), -losses)
    np.testing.assert_allclose(raw.get_xdata(), np.arange(1, 51))
    assert len(smooth.get_xdata()) == 41  # running mean over an epoch (10 steps)
    np.testing.assert_allclose(val.get_xdata(), history["eval_step"])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("training IWAE-5 bound") and legend[1] == "validation ELBO"
    assert "validation -21" in ax.get_title()
    # Without validation data: the training curve only.
    fit = SimpleNamespace(method="svi", history={"objective": losses}, converged=None)
    assert len(plot_elbo_history(fit).axes[0].get_lines()) == 2


def test_plot_elbo_history_of_a_vae_fit_and_errors(em_fit):
    x, _ = ppgen.datasets.load_digits()
    vae = ppgen.VAE(64, latent_dim=2, hidden_dims=(8,))
    fit = ppgen.fit(vae, x[:200], "svi", num_epochs=2, batch_size=50, seed=0, progress=False,
                    validation_data=x[200:260], tol=0)
    ax = plot_elbo_history(fit).axes[0]
    assert len(ax.get_lines()) == 3 and len(ax.get_lines()[2].get_xdata()) == 2
    with pytest.raises(TypeError, match="fit"):
        plot_elbo_history(object())
    with pytest.raises(ValueError, match="loss history"):
        plot_elbo_history(SimpleNamespace(method="mcmc", history={}))
