"""Matplotlib figures for fitted models and fits.

Every function returns a :class:`matplotlib.figure.Figure`. Figures are built with the
object-oriented API (``matplotlib.figure.Figure``), never through ``pyplot``'s global state, so
the functions work under any backend (Agg in scripts and the ``ppgen`` command, inline in
notebooks) and nothing needs closing. Save with ``fig.savefig("name.png")``; in a notebook make
the figure the cell's last expression, or pass ``ax=`` to draw into an axes of your own.

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

__all__ = ["plot_mixture", "plot_history", "plot_trace", "plot_scores"]

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
        fig = Figure(figsize=figsize, layout="constrained")
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


def plot_history(fit: Any, ax: Axes | None = None) -> Figure:
    """The objective per EM iteration or SVI step.

    EM fits show the total log-likelihood (nats; iteration 0 is the initialisation), SVI fits
    the loss (the negative ELBO, or the model's custom loss). A loss that spans more than two
    orders of magnitude is drawn on a log scale.

    Parameters
    ----------
    fit : ppgen.Fit
        An EM or SVI fit.
    ax : matplotlib Axes, optional
        Draw into this axes; by default a new figure is made.

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
                        f"a {method} fit without one", hint.strip() or None)
    fig, ax = _new_axes(ax, (6.4, 4.0))
    if method == "em":
        steps = np.arange(len(values))
        ylabel, xlabel, what = "log-likelihood (nats)", "iteration", "EM log-likelihood"
    else:
        steps = np.arange(1, len(values) + 1)
        ylabel, xlabel, what = "loss", "step", f"{method.upper()} loss"
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
        The most rows (elements) drawn; the title says how many were left out.

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
                        "guide='normal')", f"a {method} fit without draws",
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
    rows = rows[:max_rows]
    num_chains, num_draws = rows[0][1].shape
    fig = Figure(figsize=(10.0, 1.55 * len(rows) + 0.9), layout="constrained")
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
    fig.suptitle(f"{method.upper()} posterior: {num_chains} chain{'s' * (num_chains != 1)} "
                 f"x {num_draws} draws ({shown})")
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
