"""Matplotlib figures for fitted models and fits.

Every function returns a :class:`matplotlib.figure.Figure`. Figures are built with the
object-oriented API (``matplotlib.figure.Figure``), never through ``pyplot``'s global state, so
the functions work under any backend (Agg in scripts and the ``ppgen`` command, inline in
notebooks) and nothing needs closing. Save with ``fig.savefig("name.png")``; in a notebook make
the figure the cell's last expression (the figures render themselves as PNG, also before
pyplot has been used), or pass ``ax=`` to draw into an axes of your own.

This module never imports ArviZ; it reads draws straight from :attr:`ppgen.Fit.posterior`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse
from matplotlib.ticker import MaxNLocator

from ._validation import bad_type, bad_value, check_data, check_positive_int

__all__ = ["plot_mixture", "plot_history", "plot_trace", "plot_scores", "plot_state_posterior",
           "plot_transition_matrix", "plot_topics", "plot_image_grid", "plot_latent_space",
           "plot_elbo_history"]

class _Figure(Figure):
    """A ``Figure`` that shows itself in Jupyter without pyplot: IPython displays a plain
    ``Figure`` as an image only once the inline backend has been activated (by a first pyplot
    figure), and as the text ``<Figure size ...>`` before that."""

    def _repr_png_(self) -> bytes:
        from io import BytesIO

        buf = BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


#: Component / chain colours (matplotlib's qualitative "tab10" cycle).
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
           "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig = _Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    if not isinstance(ax, Axes):
        raise bad_type("ax", "a matplotlib Axes or None", type(ax).__name__)
    try:
        return ax.get_figure(root=True), ax  # matplotlib >= 3.10: the top figure
    except TypeError:
        return ax.figure, ax


def _full_covariances(model: Any) -> np.ndarray:
    """The model's covariances as (K, D, D) whatever its covariance type."""
    cov = _np(model.covariances).astype(float)
    k = len(_np(model.weights))
    d = _np(model.locs).shape[-1]
    if cov.ndim == 3:
        return cov
    if cov.ndim == 2:  # diag: (K, D)
        return cov[:, :, None] * np.eye(d)
    return cov.reshape(k)[:, None, None] * np.eye(d)  # spherical: (K,)


def _names(names: Sequence[str] | None, num_features: int) -> list[str]:
    if names is None:
        return [f"x[{i}]" for i in range(num_features)]
    names = [str(n) for n in names]
    if len(names) != num_features:
        raise bad_value("names", f"{num_features} column names (one per feature)",
                        f"{len(names)} names")
    return names


def _add_ellipse(ax: Axes, mean: np.ndarray, cov: np.ndarray, nsigma: float, color: str,
                 **kwargs: Any) -> Ellipse:
    """Ellipse {x : (x - mean)^T cov^-1 (x - mean) = nsigma^2} of a 2x2 covariance."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))  # direction of the major axis
    ell = Ellipse(xy=(float(mean[0]), float(mean[1])), width=2 * nsigma * math.sqrt(vals[1]),
                  height=2 * nsigma * math.sqrt(vals[0]), angle=angle, facecolor="none",
                  edgecolor=color, **kwargs)
    ax.add_patch(ell)
    return ell


def plot_mixture(model: Any, data: Any, *, dims: tuple[int, int] = (0, 1),
                 ax: Axes | None = None, names: Sequence[str] | None = None) -> Figure:
    """Scatter of the data coloured by component, with component means and covariance ellipses.

    Each point takes the colour of its most probable component (``model.predict``); each
    component's mean is marked with a cross, and its 1- and 2-sigma ellipses (Mahalanobis
    distance 1 and 2 of the component's marginal Gaussian in the two chosen features) are drawn
    solid and dashed. Diagonal and spherical covariances are drawn as the full matrices they
    stand for. One-feature data get a histogram with the weighted component densities instead.

    Parameters
    ----------
    model : GaussianMixture
        A fitted mixture (anything with ``weights``, ``locs``, ``covariances`` and
        ``predict``).
    data : array-like of shape (num_data, num_features)
        The points to draw (usually the training data).
    dims : tuple of two ints
        The two features (columns) to plot.
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.
    names : sequence of str, optional
        Feature names, one per column, for the axis labels (e.g. ``["eruptions",
        "waiting"]``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import ppgen
    >>> from ppgen.plots import plot_mixture
    >>> x, names = ppgen.datasets.load_old_faithful(return_names=True)
    >>> gmm = ppgen.GaussianMixture(2)
    >>> _ = ppgen.fit(gmm, x, method="em", seed=0, progress=False)
    >>> fig = plot_mixture(gmm, x, names=names)
    """
    if hasattr(model, "check_fitted"):
        model.check_fitted("be plotted")
    for attr in ("weights", "locs", "covariances", "predict"):
        if not hasattr(model, attr):
            raise bad_type("model", "a fitted Gaussian mixture (weights, locs, covariances, "
                           "predict)", type(model).__name__)
    x = check_data(data, arg="data")
    num_features = x.shape[1]
    labels_all = _names(names, num_features)
    weights = _np(model.weights).astype(float)
    locs = _np(model.locs).astype(float)
    covs = _full_covariances(model)
    k = len(weights)
    cov_type = getattr(model, "covariance", "full")
    z = _np(model.predict(x))
    xs = _np(x).astype(float)
    title = f"Gaussian mixture: {k} component{'s' if k != 1 else ''}, {cov_type} covariance"

    if num_features == 1:
        fig, ax = _new_axes(ax, (6.4, 4.4))
        _plot_mixture_1d(ax, xs[:, 0], weights, locs[:, 0], covs[:, 0, 0])
        ax.set_xlabel(labels_all[0])
        ax.set_ylabel("density")
        ax.set_title(title)
        ax.legend(loc="best", fontsize="small")
        return fig

    if (not isinstance(dims, Sequence) or len(dims) != 2
            or not all(isinstance(i, int | np.integer) and not isinstance(i, bool)
                       for i in dims)
            or not all(-num_features <= i < num_features for i in dims)
            or dims[0] % num_features == dims[1] % num_features):
        raise bad_value("dims", f"two different feature indices in 0..{num_features - 1}",
                        repr(dims))
    i, j = (int(d) % num_features for d in dims)
    fig, ax = _new_axes(ax, (6.8, 5.2))
    handles = []
    for c in range(k):
        pts = xs[z == c]
        color = _color(c)
        ax.scatter(pts[:, i], pts[:, j], s=14, color=color, alpha=0.6, linewidths=0,
                   zorder=2)
        sub = covs[c][np.ix_([i, j], [i, j])]
        mean = locs[c, [i, j]]
        _add_ellipse(ax, mean, sub, 1.0, color, linewidth=2.0, zorder=3)
        _add_ellipse(ax, mean, sub, 2.0, color, linewidth=1.4, linestyle="--", zorder=3)
        ax.scatter([mean[0]], [mean[1]], marker="X", s=110, color=color, edgecolors="black",
                   linewidths=1.0, zorder=4)
        handles.append(Line2D([], [], marker="o", linestyle="", color=color,
                              label=f"component {c} (weight {weights[c]:.2f}, "
                                    f"{int((z == c).sum())} points)"))
    handles += [
        Line2D([], [], marker="X", linestyle="", color="gray", markeredgecolor="black",
               markersize=9, label="component mean"),
        Line2D([], [], color="gray", linewidth=2.0, label="1-sigma ellipse"),
        Line2D([], [], color="gray", linewidth=1.4, linestyle="--", label="2-sigma ellipse"),
    ]
    ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.85)
    ax.set_xlabel(labels_all[i])
    ax.set_ylabel(labels_all[j])
    ax.set_title(title)
    ax.grid(True, alpha=0.3, zorder=0)
    # Keep the 2-sigma ellipses in view as well as the data.
    lo = np.minimum(xs[:, [i, j]].min(0), (locs[:, [i, j]] - 2.2 * np.sqrt(
        np.stack([covs[:, i, i], covs[:, j, j]], -1))).min(0))
    hi = np.maximum(xs[:, [i, j]].max(0), (locs[:, [i, j]] + 2.2 * np.sqrt(
        np.stack([covs[:, i, i], covs[:, j, j]], -1))).max(0))
    pad = 0.03 * np.where(hi > lo, hi - lo, 1.0)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    return fig


def _plot_mixture_1d(ax: Axes, x: np.ndarray, weights: np.ndarray, locs: np.ndarray,
                     variances: np.ndarray) -> None:
    ax.hist(x, bins="auto", density=True, color="0.8", edgecolor="0.6", label="data")
    lo = min(x.min(), (locs - 3 * np.sqrt(variances)).min())
    hi = max(x.max(), (locs + 3 * np.sqrt(variances)).max())
    grid = np.linspace(lo, hi, 400)
    sd = np.sqrt(variances)
    comps = weights[:, None] * np.exp(-0.5 * ((grid - locs[:, None]) / sd[:, None]) ** 2) / (
        sd[:, None] * math.sqrt(2 * math.pi))
    ax.plot(grid, comps.sum(0), color="black", linewidth=1.2, label="mixture density")
    for c in range(len(weights)):  # dashed on top, so that they show where they match the sum
        ax.plot(grid, comps[c], color=_color(c), linewidth=2.0, linestyle="--",
                label=f"component {c} (weight {weights[c]:.2f})")


def plot_history(fit: Any, ax: Axes | None = None, *,
                 objective_label: str | None = None) -> Figure:
    """The objective per EM iteration or SVI step.

    EM fits show the model's EM objective (the total log-likelihood, plus the log prior for
    an HMM, the evidence lower bound for LDA; nats; iteration 0 is the initialisation), SVI fits
    the loss (the negative ELBO, or the model's custom loss). A loss that spans more than two
    orders of magnitude is drawn on a log scale.

    Parameters
    ----------
    fit : ppgen.Fit
        An EM or SVI fit.
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.
    objective_label : str, optional
        Name of the objective on the y axis and in the title, for models whose EM objective
        is not the log-likelihood. Default: for EM the model's ``em_objective``
        ("log-likelihood (nats)" for a Gaussian mixture, "log-likelihood + log prior (nats)"
        for an HMM, "evidence lower bound (nats)" for LDA's variational EM), "loss" for SVI.

    Returns
    -------
    matplotlib.figure.Figure
    """
    history = getattr(fit, "history", None)
    method = getattr(fit, "method", None)
    if history is None or method is None:
        raise bad_type("fit", "a ppgen.Fit", type(fit).__name__)
    values = np.asarray(history.get("objective", []), dtype=float)
    if values.size == 0:
        hint = " Use plot_trace for MCMC fits." if method == "mcmc" else ""
        raise bad_value("fit", "a fit with an objective history (EM or SVI)",
                        f"a fit by method={method!r} without one", hint.strip() or None)
    if objective_label is not None and not isinstance(objective_label, str):
        raise bad_type("objective_label", "a string or None", type(objective_label).__name__)
    fig, ax = _new_axes(ax, (6.4, 4.0))
    if method == "em":
        steps = np.arange(len(values))
        label = getattr(getattr(fit, "model", None), "em_objective", "log-likelihood (nats)")
        ylabel, xlabel, what = label, "iteration", f"EM {label.split(' (')[0]}"
    else:
        steps = np.arange(1, len(values) + 1)
        ylabel, xlabel, what = "loss", "step", f"{method.upper()} loss"
    if objective_label:
        ylabel = objective_label
        what = f"{method.upper()} {objective_label.split(' (')[0]}"
    ax.plot(steps, values, color=_color(0), linewidth=1.2,
            marker="o" if len(values) <= 30 else None, markersize=4)
    finite = values[np.isfinite(values)]
    if (method != "em" and finite.size and finite.min() > 0
            and finite.max() / finite.min() > 100):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    converged = getattr(fit, "converged", None)
    state = {True: "converged", False: "not converged", None: "no stopping rule"}[converged]
    ax.set_title(f"{what} per {xlabel}\n{state} after {len(values) - (method == 'em')} "
                 f"{xlabel}s; final value {values[-1]:.6g}", fontsize="medium")
    ax.grid(True, alpha=0.3)
    return fig


#: Left-out elements named in plot_trace's title (the rest are counted).
_LISTED = 6


def _element_label(name: str, idx: tuple[int, ...]) -> str:
    return name if not idx else f"{name}[{', '.join(map(str, idx))}]"


def plot_trace(fit: Any, var_names: Sequence[str] | None = None, *,
               max_rows: int = 12) -> Figure:
    """Trace and marginal density of each posterior element, one colour per chain.

    One row per scalar element of the chosen sites (``locs[1, 0]`` and so on): on the left a
    kernel density estimate of each chain's draws, on the right the draws against the draw
    index. Elements that never change (the fixed entries of a Cholesky factor) are skipped;
    divergent transitions, when recorded, are marked as ticks under the traces.

    Parameters
    ----------
    fit : ppgen.Fit
        A fit with posterior draws (MCMC, or SVI with a guide that is not a point mass).
    var_names : sequence of str, optional
        Sites to show; by default every continuous latent site (discrete sites such as the
        recovered ``assignment`` are left out).
    max_rows : int
        The most rows (elements) drawn; the title says how many were left out and names
        them (the first few), and how to show them (``var_names=``, ``max_rows=``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the fit holds no posterior draws (EM fits, SVI fits with a MAP guide).
    """
    max_rows = check_positive_int("max_rows", max_rows)
    posterior = getattr(fit, "posterior", None)
    method = getattr(fit, "method", "?")
    if posterior is None or not posterior:
        raise bad_value("fit", "a fit with posterior draws (method='mcmc', or 'svi' with "
                        "guide='normal')", f"a fit by method={method!r} without draws",
                        "Use plot_history for EM and MAP fits.")
    info = getattr(fit, "info", None)
    continuous = tuple(getattr(info, "continuous", ()) or ())
    if var_names is None:
        names = [n for n in continuous if n in posterior] or list(posterior)
    else:
        if isinstance(var_names, str):
            var_names = [var_names]
        names = list(var_names)
        missing = [n for n in names if n not in posterior]
        if missing:
            raise bad_value("var_names", "sites among " + ", ".join(posterior),
                            ", ".join(missing))
    rows: list[tuple[str, np.ndarray]] = []  # (label, draws (chains, draws))
    for name in names:
        draws = _np(posterior[name]).astype(float)
        if draws.ndim < 2:
            raise bad_value(f"fit.posterior[{name!r}]", "draws of shape (chains, draws, ...)",
                            f"shape {draws.shape}")
        for idx in np.ndindex(draws.shape[2:]):
            values = draws[(slice(None), slice(None)) + idx]
            if np.ptp(values) == 0:
                continue  # a constant entry, e.g. corr_chol[k, 0, 0] == 1
            rows.append((_element_label(name, idx), values))
    total = len(rows)
    if total == 0:
        raise bad_value("var_names", "sites whose draws vary", ", ".join(names))
    left_out = [label for label, _ in rows[max_rows:]]
    rows = rows[:max_rows]
    num_chains, num_draws = rows[0][1].shape
    fig = _Figure(figsize=(10.0, 1.55 * len(rows) + 0.9), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2]})
    diverging = None
    stats = getattr(fit, "sample_stats", None) or {}
    if "diverging" in stats:
        diverging = np.asarray(stats["diverging"], dtype=bool)
    for r, (label, values) in enumerate(rows):
        ax_kde, ax_trace = axes[r]
        for c in range(num_chains):
            color = _color(c)
            _density(ax_kde, values[c], color)
            ax_trace.plot(np.arange(num_draws), values[c], color=color, linewidth=0.8,
                          alpha=0.85)
            if diverging is not None and diverging.shape == values.shape and diverging[c].any():
                where = np.nonzero(diverging[c])[0]
                ax_trace.plot(where, np.full(len(where), values.min()), "|", color="black",
                              markersize=8, zorder=5)
        ax_kde.set_ylabel(label, fontsize="small")
        ax_kde.set_yticks([])
        ax_kde.tick_params(labelsize="small")
        ax_trace.tick_params(labelsize="small")
        ax_trace.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_trace.grid(True, alpha=0.3)
        if r == 0:
            ax_kde.set_title("marginal density per chain", fontsize="medium")
            ax_trace.set_title("trace per chain", fontsize="medium")
        if r == len(rows) - 1:
            ax_kde.set_xlabel("value")
            ax_trace.set_xlabel("draw (after warm-up)")
    handles = [Line2D([], [], color=_color(c), label=f"chain {c}") for c in range(num_chains)]
    if diverging is not None and diverging.any():
        handles.append(Line2D([], [], marker="|", linestyle="", color="black",
                              markersize=8, label=f"divergence ({int(diverging.sum())})"))
    axes[0, 1].legend(handles=handles, loc="upper right", fontsize="x-small",
                      ncol=min(len(handles), 5), framealpha=0.85)
    shown = f"{len(rows)} of {total} elements" if total > len(rows) else f"{total} elements"
    title = (f"{method.upper()} posterior: {num_chains} chain{'s' * (num_chains != 1)} "
             f"x {num_draws} draws ({shown})")
    if left_out:
        listed = ", ".join(left_out[:_LISTED])
        more = f" and {len(left_out) - _LISTED} more" if len(left_out) > _LISTED else ""
        title += (f"\nnot shown: {listed}{more} (choose with var_names=, or raise "
                  f"max_rows={max_rows})")
    fig.suptitle(title)
    return fig


def _density(ax: Axes, values: np.ndarray, color: str) -> None:
    """A Gaussian KDE of one chain's draws, or a histogram when a KDE is ill-defined."""
    values = values[np.isfinite(values)]
    if values.size >= 5 and np.ptp(values) > 0:
        try:
            from scipy.stats import gaussian_kde

            kde = gaussian_kde(values)
            pad = 0.1 * np.ptp(values)
            grid = np.linspace(values.min() - pad, values.max() + pad, 200)
            ax.plot(grid, kde(grid), color=color, linewidth=1.0)
            return
        except (np.linalg.LinAlgError, ValueError):
            pass
    if values.size:
        ax.hist(values, bins=min(20, max(1, values.size)), density=True, histtype="step",
                color=color)


def plot_scores(model: Any, data: Any, ax: Axes | None = None, *,
                quantile: float | None = 0.99) -> Figure:
    """Histogram of the anomaly scores (``model.score``: negative log-likelihood in nats).

    Parameters
    ----------
    model : GenerativeModel
        A fitted model with ``score``.
    data : array-like of shape (num_data, num_features)
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.
    quantile : float or None
        Mark this quantile of the scores (a common anomaly threshold) with a dashed line;
        None draws no line.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if quantile is not None and not (isinstance(quantile, int | float)
                                     and 0 < float(quantile) < 1):
        raise bad_value("quantile", "a number in (0, 1) or None", repr(quantile))
    scores = _np(model.score(data)).astype(float).reshape(-1)
    fig, ax = _new_axes(ax, (6.4, 4.0))
    ax.hist(scores, bins="auto", color=_color(0), alpha=0.75, edgecolor="white")
    if quantile is not None and scores.size:
        q = float(np.quantile(scores, quantile))
        ax.axvline(q, color="black", linestyle="--", linewidth=1.2,
                   label=f"{100 * quantile:g}th percentile ({q:.3g})")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("anomaly score (negative log-likelihood, nats)")
    ax.set_ylabel("count")
    ax.set_title(f"Anomaly scores of {scores.size} rows (higher = more unusual)")
    ax.grid(True, alpha=0.3)
    return fig


# ------------------------------------------------------------------ hidden Markov models
def _float_array(x: Any, arg: str) -> np.ndarray:
    """Numeric array-like (tensor, array, nested lists) as float64, or a named TypeError."""
    try:
        arr = _np(x)
    except (TypeError, ValueError) as exc:
        raise bad_type(arg, "a numeric array", type(x).__name__) from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise bad_type(arg, "a numeric array", f"dtype {arr.dtype}")
    return arr.astype(float)


def _check_matrix_rows(arr: np.ndarray, arg: str, shape_text: str, remedy: str | None) -> None:
    """Finite, non-negative rows that sum to 1."""
    if not np.isfinite(arr).all():
        raise bad_value(arg, "finite probabilities", "NaN or infinite entries")
    if (arr < 0).any():
        raise bad_value(arg, "non-negative probabilities", f"a minimum of {arr.min():.3g}")
    sums = arr.sum(-1)
    bad = np.abs(sums - 1) > 1e-3
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise bad_value(arg, f"{shape_text} whose rows sum to 1",
                        f"row {i} summing to {sums[i]:.6g}", remedy)


def _axes_pair(ax: Any) -> tuple[Figure, Axes, Axes]:
    """Two axes given as a sequence (observations, posterior), on one figure."""
    if isinstance(ax, np.ndarray):  # as returned by fig.subplots(2, 1)
        ax = list(ax.ravel())
    if not (isinstance(ax, Sequence) and len(ax) == 2
            and all(isinstance(a, Axes) for a in ax)):
        raise bad_type("ax", "None or a sequence of two matplotlib Axes (observations panel, "
                       "posterior panel) when observations are given", type(ax).__name__,
                       "Pass ax=None to let the function make both panels.")
    fig, _ = _new_axes(ax[1], (0, 0))
    return fig, ax[0], ax[1]


def plot_state_posterior(probs: Any, *, observations: Any = None, states: Any = None,
                         ax: Axes | Sequence[Axes] | None = None,
                         kind: str | None = None, names: Sequence[str] | None = None,
                         observations_label: str | None = None,
                         states_label: str = "state path", title: str | None = None) -> Figure:
    """Posterior state probabilities of one sequence over time, optionally under its data.

    ``kind="area"`` stacks the K marginals p(z_t = k | x) as coloured areas (they sum to 1 at
    every step); ``kind="heatmap"`` draws them as a K x T image (the default for more than 10
    states, where the ten area colours would repeat). A state path (the true states
    of synthetic data, or the Viterbi path of ``model.predict``) is drawn as a colour strip
    above the areas, or as a line over the heat map. With ``observations`` the data are drawn
    in a panel above, sharing the time axis: a few features (at most 10) as one line each,
    more (such as the 88 keys of a piano roll) as an image.

    Trailing all-zero rows of ``probs`` are padding (``predict_proba`` of a padded batch
    returns zeros there) and are dropped, with the same steps of ``observations`` and
    ``states``.

    Parameters
    ----------
    probs : array-like of shape (num_steps, num_states)
        State marginals of one sequence, e.g. ``model.predict_proba(x, lengths)[0]``; each
        row sums to 1.
    observations : array-like of shape (num_steps, num_features) or (num_steps,), optional
        The sequence's frames (for categorical data its symbols), drawn in a panel above.
    states : array-like of shape (num_steps,), optional
        A state path in 0..K-1 (-1 marks padded steps), e.g. ``model.predict(x, lengths)[0]``.
    ax : matplotlib Axes, or a sequence of two Axes with ``observations``, optional
        Draw into this axes (the posterior panel); with ``observations`` pass two axes
        (observations, posterior). By default a new figure is made.
    kind : {"area", "heatmap"}, optional
        How the marginals are drawn; by default "area" for at most 10 states, "heatmap"
        otherwise.
    names : sequence of str, optional
        Feature names for the legend of the observations panel (line mode).
    observations_label : str, optional
        Y label of the observations panel (default "observation" for lines, "feature" for
        an image).
    states_label : str
        Legend text of the state path (e.g. "Viterbi path" or "true states").
    title : str, optional
        Figure title (default: a description of what is drawn).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import ppgen
    >>> from ppgen.plots import plot_state_posterior
    >>> x, truth = ppgen.datasets.make_hmm(20, 60, num_states=3, seed=0)
    >>> hmm = ppgen.HiddenMarkovModel(3)
    >>> _ = ppgen.fit(hmm, x, method="em", seed=0, progress=False)
    >>> fig = plot_state_posterior(hmm.predict_proba(x)[0], observations=x[0],
    ...                            states=hmm.predict(x)[0], states_label="Viterbi path")
    """
    if kind not in (None, "area", "heatmap"):
        raise bad_value("kind", "'area', 'heatmap' or None", repr(kind))
    p = _float_array(probs, "probs")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        remedy = ("Select one sequence, e.g. probs[i, :lengths[i]]." if p.ndim == 3 else
                  None)
        raise bad_value("probs", "a (num_steps, num_states) matrix of one sequence",
                        f"shape {p.shape}", remedy)
    num_steps, k = p.shape
    kind = kind or ("area" if k <= len(_COLORS) else "heatmap")
    filled = np.nonzero(p.sum(-1) != 0)[0]
    length = int(filled[-1]) + 1 if filled.size else 0
    if length == 0:
        raise bad_value("probs", "at least one step with probabilities", "only zero rows")
    p = p[:length]
    _check_matrix_rows(p, "probs", "a (num_steps, num_states) matrix",
                       "Pass posterior marginals such as model.predict_proba(x)[i].")
    obs = None
    if observations is not None:
        obs = _float_array(observations, "observations")
        if obs.ndim == 1:
            obs = obs[:, None]
        if obs.ndim != 2 or obs.shape[0] != num_steps:
            raise bad_value("observations", f"an array of shape ({num_steps}, num_features) "
                            f"or ({num_steps},): one frame per row of probs",
                            f"shape {_np(observations).shape}")
        obs = obs[:length]
    path = None
    if states is not None:
        path = _float_array(states, "states")
        if path.shape != (num_steps,):
            raise bad_value("states", f"an array of shape ({num_steps},): one state per row "
                            "of probs", f"shape {path.shape}")
        path = path[:length]
        if not np.isfinite(path).all() or (path != np.round(path)).any() \
                or (path < 0).any() or (path >= k).any():
            bad = path[~np.isfinite(path) | (path != np.round(path)) | (path < 0) | (path >= k)]
            raise bad_value("states", f"states in 0..{k - 1} at the steps of the sequence",
                            f"{bad[0]:g}")
        path = path.astype(int)

    if obs is None:
        if ax is not None and not isinstance(ax, Axes) and isinstance(ax, Sequence):
            raise bad_type("ax", "a matplotlib Axes or None (two axes only with "
                           "observations=)", type(ax).__name__)
        fig, ax_post = _new_axes(ax, (9.0, 3.6))
        ax_obs = None
    elif ax is None:
        fig = _Figure(figsize=(9.0, 6.0), layout="constrained")
        ax_obs, ax_post = fig.subplots(2, 1, sharex=True,
                                       gridspec_kw={"height_ratios": [1.0, 1.0]})
    else:
        fig, ax_obs, ax_post = _axes_pair(ax)

    steps = np.arange(length)
    colors = [_color(i) for i in range(k)]
    if kind == "area":
        # One flat band per step (cell edges at t -/+ 0.5), aligned with the state strip.
        edges = np.arange(length + 1) - 0.5
        ax_post.stackplot(edges, np.vstack([p, p[-1:]]).T, colors=colors, alpha=0.85,
                          linewidth=0, step="post", labels=[f"state {i}" for i in range(k)])
        top = 1.0
        if path is not None:
            # The path as a colour strip above the areas, in the states' colours.
            for i in range(k):
                runs = _runs(path == i)
                if runs:
                    ax_post.broken_barh([(a - 0.5, b - a) for a, b in runs], (1.03, 0.09),
                                        facecolors=colors[i], linewidth=0)
            ax_post.text(-0.01, 1.075, states_label, transform=ax_post.get_yaxis_transform(),
                         ha="right", va="center", fontsize="small")
            top = 1.14
        ax_post.set_ylim(0, top)
        ax_post.set_yticks([0, 0.5, 1])
        ax_post.set_ylabel("p(state | data)")
        if k <= 20:
            ax_post.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                           framealpha=0.85, ncol=1 if k <= 10 else 2)
    else:
        image = ax_post.imshow(p.T, aspect="auto", origin="lower", cmap="viridis", vmin=0,
                               vmax=1, interpolation="nearest",
                               extent=(-0.5, length - 0.5, -0.5, k - 0.5))
        fig.colorbar(image, ax=ax_post, label="p(state | data)", pad=0.01)
        if path is not None:
            ax_post.step(steps, path, where="mid", color="white", linewidth=1.4,
                         label=states_label)
            ax_post.legend(loc="upper right", fontsize="small", framealpha=0.85)
        ax_post.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(k, 10)))
        ax_post.set_ylabel("state")
    ax_post.set_xlim(-0.5, length - 0.5)
    ax_post.set_xlabel("time step")
    ax_post.xaxis.set_major_locator(MaxNLocator(integer=True))

    if ax_obs is not None:
        num_features = obs.shape[1]
        if num_features <= 10:
            labels = _names(names, num_features)
            for j in range(num_features):
                ax_obs.plot(steps, obs[:, j], color="0.2" if num_features == 1 else _color(j),
                            linewidth=1.0, marker="." if length <= 200 else None,
                            markersize=3, label=labels[j])
            if num_features > 1 or names is not None:
                ax_obs.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                              framealpha=0.85)
            ax_obs.set_ylabel(observations_label or "observation")
            ax_obs.grid(True, alpha=0.3)
        else:
            if names is not None:
                _names(names, num_features)  # checks the count
            binary = bool(np.isin(obs, (0.0, 1.0)).all())
            ax_obs.imshow(obs.T, aspect="auto", origin="lower", interpolation="nearest",
                          cmap="Greys" if binary else "viridis",
                          extent=(-0.5, length - 0.5, -0.5, num_features - 0.5))
            ax_obs.set_ylabel(observations_label or "feature")
        ax_obs.tick_params(labelbottom=False)
        ax_obs.set_xlim(-0.5, length - 0.5)
        ax_obs.set_title("observations", fontsize="medium")

    what = "stacked" if kind == "area" else "heat map"
    text = title or (f"Posterior state probabilities p(z_t = k | x) ({what}): {k} state"
                     f"{'s' * (k != 1)}, {length} steps")
    if ax_obs is not None and ax is None:
        fig.suptitle(text)
    else:
        ax_post.set_title(text, fontsize="medium")
    return fig


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges [start, stop) where ``flags`` is True."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    edges = np.diff(padded)
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def plot_transition_matrix(transition_probs: Any, *, ax: Axes | None = None,
                           annotate: bool = True, title: str | None = None) -> Figure:
    """Heat map of a K x K transition matrix, with its values written in the cells.

    Row i is the distribution of the next state given state i (``from state`` on the y axis,
    ``to state`` on the x axis); the colour scale runs from 0 to 1 and a colour bar shows it.

    Parameters
    ----------
    transition_probs : array-like of shape (num_states, num_states)
        Rows sum to 1, e.g. ``model.transition_probs`` of a fitted
        :class:`ppgen.HiddenMarkovModel`.
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.
    annotate : bool
        Write each probability (two decimals) in its cell.
    title : str, optional
        Axes title (default "Transition matrix (K states)").

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from ppgen.plots import plot_transition_matrix
    >>> fig = plot_transition_matrix([[0.9, 0.1], [0.2, 0.8]])
    """
    if not isinstance(annotate, bool | np.bool_):
        raise bad_type("annotate", "True or False", type(annotate).__name__)
    a = _float_array(transition_probs, "transition_probs")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise bad_value("transition_probs", "a square (num_states, num_states) matrix",
                        f"shape {a.shape}")
    _check_matrix_rows(a, "transition_probs", "a transition matrix", None)
    k = a.shape[0]
    size = min(2.4 + 0.55 * k, 12.0)
    fig, ax = _new_axes(ax, (size + 1.2, size))
    image = ax.imshow(a, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="transition probability", fraction=0.046, pad=0.04)
    ticks = np.arange(k)
    if k > 20:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    ax.set_title(title or f"Transition matrix ({k} state{'s' * (k != 1)})", fontsize="medium")
    if annotate:
        fontsize = max(5.0, min(10.0, 80.0 / k))
        for i in range(k):
            for j in range(k):
                v = a[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if v > 0.6 else "black")
    return fig


# --------------------------------------------------------------------------- topic models
def _topic_indices(topics: Any, k: int) -> list[int]:
    """The topics to draw: all of them, or distinct indices in 0..k-1."""
    if topics is None:
        return list(range(k))
    if isinstance(topics, int | np.integer) and not isinstance(topics, bool):
        topics = [topics]
    if isinstance(topics, torch.Tensor | np.ndarray):
        topics = np.asarray(_np(topics)).reshape(-1).tolist()
    if isinstance(topics, str) or not isinstance(topics, Sequence):
        raise bad_type("topics", f"None or a sequence of topic indices in 0..{k - 1}",
                       type(topics).__name__)
    if not topics:
        raise bad_value("topics", f"at least one topic index in 0..{k - 1}", "an empty list")
    out = []
    for t in topics:
        if isinstance(t, bool) or not isinstance(t, int | np.integer):
            raise bad_type("topics", f"integer topic indices in 0..{k - 1}", repr(t))
        if not 0 <= t < k:
            raise bad_value("topics", f"topic indices in 0..{k - 1}", int(t))
        out.append(int(t))
    if len(set(out)) != len(out):
        raise bad_value("topics", "distinct topic indices", out)
    return out


def plot_topics(topic_word: Any, *, vocabulary: Sequence[str] | None = None,
                num_words: int = 10, topics: Sequence[int] | None = None, ncols: int = 5,
                titles: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Topic-word bars: one horizontal bar chart per topic of its most probable words.

    Each panel lists a topic's ``num_words`` most probable words, the most probable at the
    top, with bars as long as their probabilities p(word | topic). Panels are laid out in a
    grid of ``ncols`` columns, in the order of ``topics``; each panel has its own probability
    axis, so that flat and peaked topics both stay readable (read the values off the axis).

    Parameters
    ----------
    topic_word : array-like of shape (num_topics, vocab_size), or a fitted topic model
        Each row a probability vector over the vocabulary, e.g. ``lda.topic_word`` of a
        fitted :class:`ppgen.LDA`; for scikit-learn pass ``components_ /
        components_.sum(axis=1, keepdims=True)``. A fitted model (anything with a
        ``topic_word`` attribute) is accepted too, its ``vocabulary`` then being the default.
    vocabulary : sequence of str, optional
        The word of each column (``vocab_size`` of them); by default the column indices are
        shown.
    num_words : int
        Words per topic (at most the vocabulary size; larger values are capped).
    topics : sequence of int, optional
        The topics to draw, as distinct row indices (default: all, in order).
    ncols : int
        Panels per row of the grid (fewer when fewer topics are drawn).
    titles : sequence of str, optional
        One panel title per drawn topic (default ``"topic k"``).
    title : str, optional
        Figure title (default: a description of what is drawn).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per drawn topic, in the order of ``topics``.

    Raises
    ------
    ValueError
        ``topic_word`` not a matrix of probability rows, a ``vocabulary`` of another length,
        ``topics`` out of range or repeated, ``titles`` of another length.
    TypeError
        Arguments of the wrong type.

    Examples
    --------
    >>> import ppgen
    >>> from ppgen.plots import plot_topics
    >>> counts, truth = ppgen.datasets.make_corpus(100, 40, 4, seed=0)
    >>> fig = plot_topics(truth["topic_word"], num_words=5, ncols=2)
    >>> len(fig.axes)
    4
    """
    if not isinstance(topic_word, torch.Tensor | np.ndarray | Sequence) and hasattr(
            topic_word, "topic_word"):
        model = topic_word
        if hasattr(model, "check_fitted"):
            model.check_fitted("be plotted")
        if vocabulary is None:
            vocabulary = getattr(model, "vocabulary", None)
        topic_word = model.topic_word
    num_words = check_positive_int("num_words", num_words)
    ncols = check_positive_int("ncols", ncols)
    a = _float_array(topic_word, "topic_word")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise bad_value("topic_word", "a (num_topics, vocab_size) matrix", f"shape {a.shape}",
                        "For a single topic use topic_word.reshape(1, -1).")
    _check_matrix_rows(a, "topic_word", "a (num_topics, vocab_size) matrix",
                       "Normalise the rows first, e.g. components_ / "
                       "components_.sum(axis=1, keepdims=True).")
    k, v = a.shape
    if vocabulary is not None:
        if isinstance(vocabulary, str) or not isinstance(vocabulary, Sequence | np.ndarray):
            raise bad_type("vocabulary", "a sequence of words (str), one per column",
                           type(vocabulary).__name__)
        words = [str(w) for w in vocabulary]
        if len(words) != v:
            raise bad_value("vocabulary", f"{v} words (one per column of topic_word)",
                            f"{len(words)} words")
    else:
        words = [str(j) for j in range(v)]
    shown = _topic_indices(topics, k)
    if titles is not None:
        if isinstance(titles, str) or not isinstance(titles, Sequence):
            raise bad_type("titles", "a sequence of str, one per drawn topic",
                           type(titles).__name__)
        if len(titles) != len(shown):
            raise bad_value("titles", f"{len(shown)} titles (one per drawn topic)",
                            f"{len(titles)} titles")
        panel_titles = [str(t) for t in titles]
    else:
        panel_titles = [f"topic {t}" for t in shown]
    n = min(num_words, v)
    cols = min(ncols, len(shown))
    rows = math.ceil(len(shown) / cols)
    longest = max(len(words[j]) for t in shown for j in np.argsort(-a[t], kind="stable")[:n])
    width = cols * (1.6 + 0.075 * min(longest, 30) + 1.2)
    height = rows * (0.6 + 0.2 * n) + 0.5
    fig = _Figure(figsize=(max(width, 4.0), height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(shown):]:
        fig.delaxes(ax)
    for ax, t, panel_title in zip(axes, shown, panel_titles):
        top = np.argsort(-a[t], kind="stable")[:n]  # ties: lower column first
        probs = a[t, top]
        positions = np.arange(n)
        ax.barh(positions, probs, height=0.75, color=_color(t), alpha=0.85)
        ax.set_yticks(positions, labels=[words[j] for j in top])
        ax.set_ylim(n - 0.5, -0.5)  # the most probable word at the top
        ax.set_xlim(0, max(float(probs.max()), 1e-12) * 1.08)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
        ax.tick_params(axis="y", length=0, labelsize="small")
        ax.tick_params(axis="x", labelsize="x-small")
        ax.set_xlabel("p(word | topic)", fontsize="small")
        ax.set_title(panel_title, fontsize="medium")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    which = (f"of {'the only topic' if k == 1 else f'each of the {k} topics'}"
             if len(shown) == k else f"of {len(shown)} of the {k} topics")
    fig.suptitle(title or f"Top {n} word{'s' * (n != 1)} {which} (p(word | topic))")
    return fig


# ------------------------------------------------------------------------ images, latents
def _image_shape(image_shape: Any) -> tuple[int, int]:
    if isinstance(image_shape, int | np.integer) and not isinstance(image_shape, bool):
        image_shape = (1, int(image_shape))
    if (not isinstance(image_shape, Sequence) or len(image_shape) != 2
            or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1
                       for v in image_shape)):
        raise bad_value("image_shape", "(height, width), two positive ints", repr(image_shape))
    return int(image_shape[0]), int(image_shape[1])


def plot_image_grid(images: Any, image_shape: tuple[int, int], *, ncols: int | None = None,
                    row_labels: Sequence[str] | None = None, title: str | None = None,
                    cmap: str = "gray_r", vmin: float = 0.0, vmax: float = 1.0,
                    missing_color: str = "tab:red", ax: Axes | None = None) -> Figure:
    """A grid of images (samples, reconstructions, completions), drawn as one picture.

    The images are laid out row by row, ``ncols`` per row, with a thin grey line between
    them; pixel values are mapped to ``cmap`` from ``vmin`` to ``vmax`` (by default ink is
    black on white for intensities in [0, 1]) and NaN pixels (missing entries) are drawn in
    ``missing_color``.

    Parameters
    ----------
    images : array-like of shape (num_images, height, width) or (num_images, height * width)
        E.g. ``vae.sample(16)`` or rows of ``ppgen.datasets.load_digits()``.
    image_shape : (int, int)
        Height and width of one image (rows are reshaped row-major).
    ncols : int, optional
        Images per row (default: ``num_images / len(row_labels)`` with ``row_labels``, else
        about the square root of ``num_images``, at most 16).
    row_labels : sequence of str, optional
        A label at the left of each row of the grid (e.g. ``["original", "reconstruction"]``);
        there must be as many rows as labels.
    title : str, optional
        Axes title (default: none).
    cmap : str
        A matplotlib colormap name.
    vmin, vmax : float
        The pixel values at the two ends of the colormap.
    missing_color : str
        Colour of NaN pixels.
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import ppgen
    >>> from ppgen.plots import plot_image_grid
    >>> x, _ = ppgen.datasets.load_digits()
    >>> fig = plot_image_grid(x[:20], (8, 8), ncols=10, row_labels=["a", "b"])
    """
    import matplotlib as mpl
    from matplotlib.colors import to_rgba

    h, w = _image_shape(image_shape)
    arr = _float_array(images, "images")
    if arr.ndim == 3 and arr.shape[1:] == (h, w):
        arr = arr.reshape(arr.shape[0], h * w)
    if arr.ndim != 2 or arr.shape[1] != h * w or arr.shape[0] == 0:
        raise bad_value("images", f"shape (num_images, {h}, {w}) or (num_images, {h * w})",
                        f"shape {arr.shape}", "Pass image_shape=(height, width) of one image.")
    if np.isinf(arr).any():
        raise bad_value("images", "finite pixel values (NaN marks a missing pixel)",
                        "infinite entries")
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise bad_value("vmin, vmax", "finite numbers with vmin < vmax", (vmin, vmax))
    n = arr.shape[0]
    if row_labels is not None:
        if isinstance(row_labels, str) or not isinstance(row_labels, Sequence):
            raise bad_type("row_labels", "a sequence of str, one per row of the grid",
                           type(row_labels).__name__)
        if not row_labels:
            raise bad_value("row_labels", "at least one label", "an empty sequence")
    if ncols is None:
        ncols = (math.ceil(n / len(row_labels)) if row_labels is not None
                 else min(16, max(1, math.ceil(math.sqrt(n)))))
    cols = min(check_positive_int("ncols", ncols), n)
    rows = math.ceil(n / cols)
    if row_labels is not None and len(row_labels) != rows:
        raise bad_value("row_labels", f"{rows} labels (one per row of {cols} images)",
                        f"{len(row_labels)} labels")
    try:
        colormap = mpl.colormaps[cmap]
    except KeyError:
        raise bad_value("cmap", "a matplotlib colormap name", repr(cmap)) from None
    pad = 1
    height, width = rows * (h + pad) + pad, cols * (w + pad) + pad
    mosaic = np.empty((height, width, 4))
    mosaic[:] = (0.8, 0.8, 0.8, 1.0)  # the lines between images
    bad = np.asarray(to_rgba(missing_color))
    for i in range(n):
        r, c = divmod(i, cols)
        img = arr[i].reshape(h, w)
        rgba = colormap(np.clip((img - vmin) / (vmax - vmin), 0.0, 1.0))
        rgba[np.isnan(img)] = bad
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        mosaic[top:top + h, left:left + w] = rgba
    cell = min(0.75, 12.0 / cols)
    fig, ax = _new_axes(ax, (cols * cell * w / max(h, w) + (1.4 if row_labels else 0.3),
                             rows * cell * h / max(h, w) + (0.5 if title else 0.2)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(rows)],
                      labels=[str(label) for label in row_labels])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def plot_latent_space(z: Any, labels: Any = None, *, ax: Axes | None = None,
                      title: str | None = None, label_name: str = "label") -> Figure:
    """Scatter of latent codes (e.g. ``vae.transform(x)``), coloured by label.

    Two-dimensional codes are drawn as they are; longer codes are projected on their first
    two principal components (the axes then say how much of the variance each explains);
    one-dimensional codes are drawn against a small random vertical jitter.

    Parameters
    ----------
    z : array-like of shape (num_data, latent_dim)
    labels : array-like of shape (num_data,), optional
        Integer classes (one colour each, with a legend) or None (one colour).
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.
    title : str, optional
        Axes title (default: a description of what is drawn).
    label_name : str
        What the labels are, in the legend title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import torch
    >>> from ppgen.plots import plot_latent_space
    >>> fig = plot_latent_space(torch.randn(50, 5), torch.arange(50) % 3)
    """
    a = _float_array(z, "z")
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[0] == 0:
        raise bad_value("z", "shape (num_data, latent_dim)", f"shape {a.shape}")
    if not np.isfinite(a).all():
        raise bad_value("z", "finite latent codes", "NaN or infinite entries")
    n, dim = a.shape
    lab = None
    if labels is not None:
        lab = _np(labels).reshape(-1)
        if lab.shape[0] != n:
            raise bad_value("labels", f"one label per row of z ({n})", f"{lab.shape[0]} labels")
        if lab.dtype.kind == "f" and not np.all(lab == np.round(lab)):
            raise bad_value("labels", "integer classes", "fractional values")
    if dim == 1:
        xy = np.column_stack([a[:, 0], np.random.default_rng(0).uniform(-1, 1, n)])
        xlabel, ylabel, what = "z", "jitter (no meaning)", "1-D latent codes"
    elif dim == 2:
        xy, xlabel, ylabel, what = a, "z[0]", "z[1]", "latent codes"
    else:
        centred = a - a.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        share = s**2 / max(float((s**2).sum()), 1e-300)
        xlabel = f"PC 1 ({100 * share[0]:.0f}% of variance)"
        ylabel = f"PC 2 ({100 * share[1]:.0f}% of variance)"
        what = f"{dim}-D latent codes, first two principal components"
    fig, ax = _new_axes(ax, (6.0, 5.0))
    size = 12 if n > 500 else 20
    if lab is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, color=_color(0), alpha=0.7, linewidths=0)
    else:
        classes = np.unique(lab)
        for i, c in enumerate(classes):
            rows = lab == c
            name = f"{int(c)}" if lab.dtype.kind in "biuf" else str(c)
            ax.scatter(xy[rows, 0], xy[rows, 1], s=size, color=_color(i), alpha=0.7,
                       linewidths=0, label=name)
        ax.legend(title=label_name, fontsize="small", markerscale=1.5,
                  loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{what} of {n} data", fontsize="medium")
    ax.grid(True, alpha=0.3)
    return fig


def plot_elbo_history(fit: Any, ax: Axes | None = None, *,
                      train_label: str = "training ELBO (minibatch)") -> Figure:
    """The training bound per step and, when the fit had validation data, the validation
    ELBO per evaluation (every epoch by default), in nats per datum.

    The training curve is minus the loss of each step (``fit.history["objective"]``, the
    negative bound of the minibatch), drawn faintly, with its running mean over an epoch's
    worth of steps on top; the validation ELBO (``fit.history["eval_val_elbo"]``, at
    ``fit.history["eval_step"]``) is drawn with markers.

    Parameters
    ----------
    fit : ppgen.Fit
        An SVI fit whose loss is a negative bound per datum (a VAE's objective).
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.
    train_label : str
        Legend entry of the training curve (e.g. ``"training IWAE-5 bound"``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    history = getattr(fit, "history", None)
    if history is None or not hasattr(fit, "method"):
        raise bad_type("fit", "a ppgen.Fit", type(fit).__name__)
    losses = np.asarray(history.get("objective", []), dtype=float)
    if losses.size == 0:
        raise bad_value("fit", "an SVI fit with a loss history", f"a {fit.method} fit "
                        "without one")
    steps = np.asarray(history.get("step", np.arange(losses.size)), dtype=float) + 1
    val = np.asarray(history.get("eval_val_elbo", []), dtype=float)
    val_steps = np.asarray(history.get("eval_step", []), dtype=float)
    fig, ax = _new_axes(ax, (6.4, 4.0))
    bound = -losses
    ax.plot(steps, bound, color=_color(0), alpha=0.3, linewidth=0.8)
    window = int(val_steps[0]) if val_steps.size else max(1, losses.size // 20)
    window = max(1, min(window, losses.size))
    smooth = np.convolve(bound, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1:], smooth, color=_color(0), linewidth=1.5,
            label=f"{train_label}, running mean of {window} step{'s' * (window != 1)}")
    final = f"final training {bound[-window:].mean():.4g}"
    if val.size:
        ax.plot(val_steps, val, color=_color(1), marker="o", markersize=3.5, linewidth=1.2,
                label="validation ELBO")
        final += f", validation {val[-1]:.4g}"
    # Early steps can be far below the rest: keep the range of the last 90% readable.
    tail = bound[losses.size // 10:]
    tail = tail[np.isfinite(tail)]
    if tail.size:
        low = min(float(tail.min()), float(val.min()) if val.size else np.inf)
        high = max(float(tail.max()), float(val.max()) if val.size else -np.inf)
        margin = 0.05 * max(high - low, 1e-9)
        ax.set_ylim(low - margin, high + margin)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("nats per datum")
    ax.set_title(f"Evidence lower bound per step ({final})", fontsize="medium")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig
