"""The ``ppgen`` command: fit a model, then sample from it or score new data with it.

::

    ppgen fit gmm [--data old-faithful|FILE.csv|FILE.npy] [--method em|svi|mcmc] ...
    ppgen sample DIR -n N [--seed S] [--out FILE.csv]
    ppgen score DIR FILE [--out FILE.csv]

``ppgen fit`` writes into ``--out DIR``: ``report.md``, ``mixture.png``, ``history.png`` (EM,
SVI) or ``trace.png`` (MCMC), ``model.pt`` (:func:`ppgen.save`), ``inference_data.nc``
(ArviZ InferenceData as netCDF) and ``run.json`` (the command, data source and column names).
Files are written only after the fit succeeded, each one atomically (a temporary file renamed
into place). User errors print one line starting with ``ppgen: error:`` on stderr and exit
with status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

__all__ = ["main", "load_table", "CLIError"]

PROG = "ppgen"
DATASETS = ("old-faithful",)
#: MCMC defaults of the command (modest, so that a laptop finishes in minutes).
MCMC_DEFAULTS = {"num_samples": 500, "num_warmup": 500, "num_chains": 4}
_MISSING = {"", "nan", "na", "n/a", "null", "none"}


class CLIError(Exception):
    """A user error: printed as ``ppgen: error: <message>``, exit status 2."""


# --------------------------------------------------------------------------- data input
@dataclass
class Table:
    """Numeric data read by the command, with its column names and where it came from."""

    values: np.ndarray  # (rows, columns) float64
    names: list[str]
    source: str
    lines: list[int] | None = None  # the file line of each row (CSV)

    def check_complete(self) -> None:
        """Refuse missing (NaN) or infinite entries, naming the first one's line and column."""
        bad = ~np.isfinite(self.values)
        if not bad.any():
            return
        i, j = (int(v) for v in np.argwhere(bad)[0])
        where = f"line {self.lines[i]}" if self.lines else f"row {i} (0-based)"
        kind = "a missing value" if np.isnan(self.values[i, j]) else "an infinite value"
        total = _count(int(bad.sum()), "bad entry", "bad entries")
        raise CLIError(f"{self.source}, {where}, column {j + 1} ({self.names[j]!r}): expected "
                       f"a number, got {kind} ({total} in all). Drop or fill those rows first.")


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def _parse_float(cell: str) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    return float(text)


def _is_numeric_row(row: Sequence[str]) -> bool:
    try:
        for cell in row:
            _parse_float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> Table:
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CLIError(f"{path}: expected a text CSV file, got bytes that are not UTF-8 "
                       "text. Pass a comma-separated file, or a .npy array.") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(text.splitlines()), start=1)
            if r and any(c.strip() for c in r)]
    if not rows:
        raise CLIError(f"{path}: expected comma-separated numbers, got an empty file.")
    header: list[str] | None = None
    if not _is_numeric_row(rows[0][1]):
        header = [c.strip().strip('"') for c in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise CLIError(f"{path}: expected data rows after the header, got none.")
    width = len(header) if header is not None else len(rows[0][1])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise CLIError(f"{path}, line {line}: expected {width} comma-separated values "
                           f"(as in the {'header' if header else 'first row'}), got "
                           f"{len(row)}.")
        for j, cell in enumerate(row):
            try:
                values[i, j] = _parse_float(cell)
            except ValueError:
                column = f"column {j + 1}" + (f" ({header[j]!r})" if header else "")
                raise CLIError(
                    f"{path}, line {line}, {column}: expected a number, got {cell.strip()!r}. "
                    "Every column must be numeric: drop text columns (ids, labels) first."
                ) from None
    names = header if header is not None else [f"x{j}" for j in range(width)]
    return Table(values, names, str(path), [line for line, _ in rows])


def _read_npy(path: Path) -> Table:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CLIError(f"{path}: expected a numeric .npy array, got an array of Python "
                           "objects (refused: loading it would run pickled code). Save a "
                           "numeric array with np.save.") from None
        raise CLIError(f"{path}: expected a .npy file written by np.save, got a file numpy "
                       f"cannot read ({exc}).") from None
    except (OSError, EOFError) as exc:
        raise CLIError(f"{path}: expected a .npy file written by np.save, got a file numpy "
                       f"cannot read ({exc}).") from None
    if not isinstance(arr, np.ndarray):
        raise CLIError(f"{path}: expected a single array (.npy), got {type(arr).__name__}.")
    if arr.dtype.kind not in "biuf":
        raise CLIError(f"{path}: expected numeric values, got an array of dtype {arr.dtype}. "
                       "Convert it with arr.astype(float) first.")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise CLIError(f"{path}: expected a 2-D array (rows, columns), got shape "
                       f"{arr.shape}. Reshape it, e.g. arr.reshape(len(arr), -1).")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CLIError(f"{path}: expected at least one row and one column, got shape "
                       f"{arr.shape}.")
    return Table(arr.astype(np.float64), [f"x{j}" for j in range(arr.shape[1])], str(path))


def load_table(spec: str) -> Table:
    """Read ``old-faithful`` (the embedded data set), a ``.csv`` or a ``.npy`` file.

    A CSV file is comma separated and numeric; its first row is taken as a header when it does
    not parse as numbers. Empty cells, ``NA`` and ``nan`` read as NaN (missing).
    """
    if spec in DATASETS:
        import ppgen

        x, names = ppgen.datasets.load_old_faithful(return_names=True)
        return Table(x.numpy().astype(np.float64), list(names), spec)
    path = Path(spec)
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix in (".csv", ".npy", ".txt") or os.sep in spec or "/" in spec:
            raise CLIError(f"{spec}: no such file.")
        raise CLIError(f"--data: expected {' or '.join(repr(d) for d in DATASETS)} or a "
                       f".csv/.npy file, got {spec!r} (no data set or file of that name).")
    if path.is_dir():
        raise CLIError(f"{spec}: expected a .csv or .npy file, got a directory.")
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in (".csv", ".txt"):
        return _read_csv(path)
    raise CLIError(f"{spec}: expected a .csv or .npy file, got a file ending in "
                   f"{suffix or '(no extension)'!r}.")


# ------------------------------------------------------------------------------ output
def _fmt(v: float, digits: int = 6) -> str:
    return f"{v:.{digits}g}"


def _text_table(header: list[str], rows: list[list[str]], indent: str = "  ",
                numeric: bool = True) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned (numbers) or
    left-aligned (``numeric=False``)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(c.rjust(w) if i and numeric else c.ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header)] + [line(row) for row in rows])


def _md_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    align = "---:" if numeric else ":---"
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + [align] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _umask_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file (0o666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """``ppgen.io.atomic_write``, leaving the file with the usual permissions (the temporary
    file from ``mkstemp`` is private, 0o600)."""
    from .io import atomic_write

    def write_with_mode(tmp: str) -> None:
        write(tmp)
        os.chmod(tmp, _umask_mode())

    atomic_write(path, write_with_mode)


def _atomic_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    _atomic(path, write)


def _atomic_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    _atomic(path, write)


def _png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _csv_text(values: np.ndarray, names: list[str] | None) -> str:
    out = io.StringIO()
    if names:
        out.write(",".join(names) + "\n")
    for row in np.asarray(values, dtype=float):
        out.write(",".join(repr(float(v)) for v in row) + "\n")
    return out.getvalue()


# --------------------------------------------------------------------------- fit gmm
@dataclass
class Report:
    text: list[str]
    markdown: list[str]

    def section(self, title: str) -> None:
        self.text += ["", title]
        self.markdown += ["", f"## {title}", ""]

    def both(self, text: str, markdown: str | None = None) -> None:
        self.text.append(f"  {text}" if text else text)
        self.markdown.append(text if markdown is None else markdown)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.text.append(_text_table(header, rows))
        self.markdown.append(_md_table(header, rows))


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    method = args.method
    mcmc_only = {"--num-samples": args.num_samples, "--num-warmup": args.num_warmup,
                 "--num-chains": args.num_chains,
                 "--target-accept-prob": args.target_accept_prob,
                 "--max-tree-depth": args.max_tree_depth}
    if method != "mcmc":
        given = [flag for flag, v in mcmc_only.items() if v is not None]
        if given:
            raise CLIError(f"{', '.join(given)}: these options apply to --method mcmc, got "
                           f"--method {method}. Use --num-steps for EM and SVI.")
    if method == "mcmc" and args.num_steps is not None:
        raise CLIError("--num-steps: applies to --method em and svi, got --method mcmc. Use "
                       "--num-samples, --num-warmup and --num-chains.")
    options: dict[str, Any] = {}
    if method in ("em", "svi") and args.num_steps is not None:
        options["num_steps"] = args.num_steps
    if method == "mcmc":
        options = dict(MCMC_DEFAULTS)
        for key in (*MCMC_DEFAULTS, "target_accept_prob", "max_tree_depth"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
    return options


def _parameter_report(report: Report, model: Any, names: list[str], method: str) -> None:
    weights = model.weights.detach().cpu().numpy()
    locs = model.locs.detach().cpu().numpy()
    cov = model.covariances.detach().cpu().numpy()
    k = len(weights)
    what = "posterior means" if method == "mcmc" else "point estimates"
    report.section(f"Fitted parameters ({what})")
    report.both("Weights and means (one row per component):")
    report.both("")
    report.table(["component", "weight"] + [f"mean {n}" for n in names],
                 [[str(c), _fmt(weights[c], 4)] + [_fmt(v) for v in locs[c]]
                  for c in range(k)])
    report.both("")
    if model.covariance == "full":
        report.both(f"Covariances (full; rows and columns: {', '.join(names)}):")
        for c in range(k):
            matrix = np.array2string(cov[c], precision=5, suppress_small=True,
                                     max_line_width=100)
            pad = " " * len(f"  component {c}: ")
            report.text.append(f"  component {c}: " + matrix.replace("\n", "\n" + pad))
            report.markdown += ["", f"Component {c}:", "", "```", matrix, "```"]
    elif model.covariance == "diag":
        report.both("Covariances (diagonal: one variance per column):")
        report.both("")
        report.table(["component"] + [f"var {n}" for n in names],
                     [[str(c)] + [_fmt(v) for v in cov[c]] for c in range(k)])
    else:
        report.both("Covariances (spherical: one variance shared by all columns):")
        report.both("")
        report.table(["component", "variance"], [[str(c), _fmt(cov[c])] for c in range(k)])


def _posterior_summary(report: Report, fit: Any) -> None:
    import pandas as pd

    table = fit.summary()
    cols = [c for c in ("mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat")
            if c in table.columns]
    table = table[cols]
    # corr_chol holds fixed entries (1 on the diagonal, 0 above): leave them out.
    if "sd" in table.columns:
        table = table[~((table["sd"] == 0) & table.index.str.startswith("corr_chol"))]
    report.section("Posterior summary (ArviZ)")
    rows = [[str(idx)] + [("nan" if pd.isna(v) else _fmt(float(v), 4)) for v in row]
            for idx, row in zip(table.index, table.itertuples(index=False))]
    report.table(["parameter"] + cols, rows)


def _cmd_fit_gmm(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import ppgen
    from ppgen.inference import ConvergenceWarning

    from . import plots

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: expected a directory, got {str(out_dir)!r}, which is a file.")
    options = _fit_options(args)
    table = load_table(args.data)
    table.check_complete()
    x_np = table.values
    import torch

    x = torch.as_tensor(x_np)
    model = ppgen.GaussianMixture(args.num_components, covariance=args.covariance)
    progress = not args.quiet and sys.stderr.isatty()
    with warnings.catch_warnings():
        # Convergence problems are reported once, as diagnostics, below.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"arviz\..*")
        fit = ppgen.fit(model, x, method=args.method, seed=args.seed, device=args.device,
                        progress=progress, **options)
        diagnostics = fit.diagnose()
        idata = fit.to_arviz()
        x_fit = fit.data
        log_lik = model.log_prob(x_fit)
        total = float(log_lik.sum())
        n = int(log_lik.shape[0])
        bic, aic = model.bic(x_fit), model.aic(x_fit)
        num_params = model.num_parameters()
        report = Report([], [])
        command = " ".join(shlex.quote(str(a)) for a in [PROG, *argv])
        title = (f"ppgen fit gmm: {args.num_components} components, {args.covariance} "
                 f"covariance, method {args.method}")
        report.text.append(title)
        report.markdown += [f"# {title}", "", "Command:", "", "```", command, "```"]
        report.section("Data")
        data_line = (f"{n} rows x {x_np.shape[1]} columns ({', '.join(table.names)}) from "
                     f"{table.source}")
        settings = ", ".join(f"{k}={v}" for k, v in options.items())
        run_line = (f"seed {fit.seed}, device {args.device}"
                    + (f", {settings}" if settings else "") + f", fitted in {fit.elapsed:.2f} s")
        report.text += [f"  {data_line}", f"  {run_line}"]
        report.markdown += [f"- {data_line}", f"- {run_line}"]
        _parameter_report(report, model, table.names, args.method)
        if args.method == "mcmc":
            _posterior_summary(report, fit)
        report.section("Fit")
        at = " at the posterior mean" if args.method == "mcmc" else ""
        rows = [
            ["log-likelihood" + at, f"{total:.3f} nats (total over {n} rows)"],
            ["mean log-likelihood", f"{total / n:.4f} nats per row"],
            ["BIC", f"{bic:.3f} (lower is better)"],
            ["AIC", f"{aic:.3f} (lower is better)"],
            ["free parameters", str(num_params)],
            ["convergence", _convergence_text(fit)],
        ]
        report.text.append(_text_table(["quantity", "value"], rows, numeric=False))
        report.markdown.append(_md_table(["quantity", "value"], rows, numeric=False))
        report.section("Diagnostics")
        if diagnostics:
            for d in diagnostics:
                report.text.append(f"  {d}")
                report.markdown.append(f"- **{d.code}**: {d.message}")
        else:
            report.both("none: no warnings", "None: no warnings.")
        # Figures are drawn in memory before anything is written.
        fig_mix = plots.plot_mixture(model, x_fit, names=table.names)
        if args.method == "mcmc":
            second_name, fig_second = "trace.png", plots.plot_trace(fit)
        else:
            second_name, fig_second = "history.png", plots.plot_history(fit)
        figures = {"mixture.png": _png_bytes(fig_mix), second_name: _png_bytes(fig_second)}
    report.section("Files")
    files = ["report.md", "mixture.png", second_name, "model.pt", "inference_data.nc",
             "run.json"]
    report.text.append(f"  {out_dir}/: " + ", ".join(files))
    report.markdown += [
        "- [mixture.png](mixture.png): data coloured by component, means, 1- and 2-sigma "
        "ellipses",
        f"- [{second_name}]({second_name}): "
        + ("trace and marginal density per chain" if second_name == "trace.png"
           else "objective per iteration/step"),
        "- [model.pt](model.pt): the fitted model (`ppgen.load`)",
        "- [inference_data.nc](inference_data.nc): ArviZ InferenceData "
        "(`arviz.from_netcdf`)",
        "", "![mixture](mixture.png)", "", f"![{second_name[:-4]}]({second_name})", "",
    ]
    run_info = {"command": command, "model": "gmm", "method": args.method,
                "data": table.source, "columns": table.names, "seed": fit.seed,
                "num_components": args.num_components, "covariance": args.covariance,
                "options": options, "log_likelihood": total, "bic": bic, "aic": aic,
                "ppgen_version": ppgen.__version__}

    # Everything succeeded: write the files, each atomically.
    out_dir.mkdir(parents=True, exist_ok=True)
    ppgen.save(model, out_dir / "model.pt")
    _atomic(out_dir / "inference_data.nc", lambda tmp: idata.to_netcdf(tmp))
    for name, data in figures.items():
        _atomic_bytes(out_dir / name, data)
    _atomic_text(out_dir / "run.json", json.dumps(run_info, indent=2) + "\n")
    _atomic_text(out_dir / "report.md", "\n".join(report.markdown).rstrip() + "\n")
    if not args.quiet:
        print("\n".join(report.text))
    return 0


def _convergence_text(fit: Any) -> str:
    steps = len(fit.history.get("objective", []))
    if fit.method == "em":
        iters = max(steps - 1, 0)
        state = {True: "converged", False: "NOT converged", None: "ran all"}[fit.converged]
        return f"{state} after {iters} EM iterations"
    if fit.method == "svi":
        state = {True: "converged", False: "NOT converged", None: "ran all"}[fit.converged]
        return f"{state} after {steps} SVI steps"
    return "n/a for MCMC: see R-hat, ESS and divergences under Diagnostics"


# ------------------------------------------------------------------- sample / score
def _load_model(path_arg: str) -> Any:
    import ppgen

    path = Path(path_arg)
    if not path.exists():
        raise CLIError(f"{path_arg}: expected a run directory written by 'ppgen fit' (with "
                       "model.pt), got a path that does not exist.")
    model_path = path / "model.pt" if path.is_dir() else path
    if not model_path.is_file():
        raise CLIError(f"{path_arg}: expected a run directory written by 'ppgen fit', but it "
                       "has no model.pt. Run 'ppgen fit gmm --out DIR' first.")
    try:
        model = ppgen.load(model_path)
    except (ValueError, TypeError) as exc:
        message = str(exc).removeprefix("path: ")
        raise CLIError(f"cannot load the model from {model_path}: {message}") from None
    if not model.is_fitted:
        raise CLIError(f"{model_path}: the model is not fitted; run 'ppgen fit' again.")
    return model


def _column_names(path_arg: str, num_features: int) -> list[str]:
    path = Path(path_arg)
    info = path / "run.json" if path.is_dir() else path.with_name("run.json")
    try:
        names = json.loads(info.read_text(encoding="utf-8")).get("columns")
    except (OSError, ValueError, AttributeError):
        names = None
    if isinstance(names, list) and len(names) == num_features:
        return [str(n) for n in names]
    return [f"x{j}" for j in range(num_features)]


def _emit(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    path = Path(out)
    if path.is_dir():
        raise CLIError(f"--out: expected a file name, got the directory {out!r}.")
    _atomic_text(path, text)


def _cmd_sample(args: argparse.Namespace, argv: Sequence[str]) -> int:
    model = _load_model(args.dir)
    draws = model.sample(args.num_samples, seed=args.seed).detach().cpu().numpy()
    names = None if args.no_header else _column_names(args.dir, draws.shape[1])
    _emit(_csv_text(draws, names), args.out)
    return 0


def _cmd_score(args: argparse.Namespace, argv: Sequence[str]) -> int:
    model = _load_model(args.dir)
    table = load_table(args.file)
    table.check_complete()
    if model.num_features is not None and table.values.shape[1] != model.num_features:
        raise CLIError(f"{args.file}: expected {model.num_features} columns, as the model was "
                       f"fitted with, got {table.values.shape[1]}.")
    scores = model.score(table.values).detach().cpu().numpy()
    _emit("".join(f"{float(s)!r}\n" for s in scores), args.out)
    return 0


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with errors in the command's format: ``ppgen: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        self.print_usage(sys.stderr)
        self.exit(2)


def _checked(convert, ok, expected: str):
    """An argparse type: ``convert`` the text, then require ``ok(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_probability = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ppgen`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description="Fit generative models (Pyro/PyTorch), then "
                     "sample from them or score new data with them.",
                     epilog="Run 'ppgen COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    fit = commands.add_parser("fit", help="fit a model and write a report, figures and the "
                              "model into a directory", description="Fit a model.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", required=True,
                                parser_class=_Parser)
    gmm = models.add_parser(
        "gmm", help="Gaussian mixture", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a Gaussian mixture by EM, SVI or MCMC. Prints the fitted parameters, "
        "the\nlog-likelihood, BIC/AIC and diagnostics, and writes report.md, mixture.png,\n"
        "history.png (EM, SVI) or trace.png (MCMC), model.pt, inference_data.nc and\n"
        "run.json into --out (only once the fit succeeded).",
        epilog="examples:\n"
        "  ppgen fit gmm --data old-faithful --method em --num-components 2 --out runs/demo\n"
        "  ppgen fit gmm --data points.csv --method mcmc --num-chains 2 --out runs/mcmc\n"
        "  ppgen sample runs/demo -n 5\n"
        "  ppgen score runs/demo points.csv")
    gmm.add_argument("--data", default="old-faithful", metavar="NAME|FILE",
                     help="'old-faithful' (embedded), a .csv file (numbers, comma separated, "
                     "optional header row) or a .npy array (default: %(default)s)")
    gmm.add_argument("--method", choices=("em", "svi", "mcmc"), default="em",
                     help="inference method (default: %(default)s)")
    gmm.add_argument("--num-components", type=_positive_int, default=2, metavar="K",
                     help="number of mixture components (default: %(default)s)")
    gmm.add_argument("--covariance", choices=("full", "diag", "spherical"), default="full",
                     help="covariance structure (default: %(default)s)")
    gmm.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                     help="where to fit (default: %(default)s)")
    gmm.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default: "
                     "%(default)s)")
    gmm.add_argument("--num-steps", type=_positive_int, metavar="N",
                     help="EM: most iterations (default 100); SVI: most steps (default 2000)")
    gmm.add_argument("--num-samples", type=_positive_int, metavar="N",
                     help=f"MCMC: draws kept per chain (default {MCMC_DEFAULTS['num_samples']})")
    gmm.add_argument("--num-warmup", type=_nonnegative_int, metavar="N",
                     help=f"MCMC: warm-up steps per chain (default "
                     f"{MCMC_DEFAULTS['num_warmup']})")
    gmm.add_argument("--num-chains", type=_positive_int, metavar="C",
                     help=f"MCMC: chains (default {MCMC_DEFAULTS['num_chains']})")
    gmm.add_argument("--target-accept-prob", type=_probability, metavar="P",
                     help="MCMC: NUTS target acceptance probability (default 0.8; raise it, "
                     "e.g. to 0.95, when there are divergences)")
    gmm.add_argument("--max-tree-depth", type=_positive_int, metavar="N",
                     help="MCMC: NUTS maximum tree depth (default 10)")
    gmm.add_argument("--out", default="runs/gmm", metavar="DIR",
                     help="output directory, created if needed (default: %(default)s)")
    gmm.add_argument("--quiet", action="store_true",
                     help="no progress bar and no report on stdout (files are still written)")
    gmm.set_defaults(handler=_cmd_fit_gmm)

    sample = commands.add_parser("sample", help="draw new rows from a fitted model (CSV)",
                                 description="Draw rows from the model in DIR/model.pt and "
                                 "print them as CSV (a header row with the column names, then "
                                 "one row per draw).")
    sample.add_argument("dir", metavar="DIR", help="run directory written by 'ppgen fit'")
    sample.add_argument("-n", "--num-samples", type=_positive_int, required=True,
                        metavar="N", help="number of rows to draw")
    sample.add_argument("--seed", type=_nonnegative_int, default=None,
                        help="random seed (default: fresh randomness)")
    sample.add_argument("--out", metavar="FILE.csv",
                        help="write the CSV to this file instead of stdout")
    sample.add_argument("--no-header", action="store_true", help="omit the header row")
    sample.set_defaults(handler=_cmd_sample)

    score = commands.add_parser("score", help="anomaly score of each row of a file",
                                description="Print the anomaly score (negative "
                                "log-likelihood in nats; higher = more unusual) of each row "
                                "of FILE under the model in DIR/model.pt, one per line.")
    score.add_argument("dir", metavar="DIR", help="run directory written by 'ppgen fit'")
    score.add_argument("file", metavar="FILE", help="data to score: .csv or .npy (or "
                       "'old-faithful')")
    score.add_argument("--out", metavar="FILE.csv",
                       help="write the scores to this file instead of stdout")
    score.set_defaults(handler=_cmd_score)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ppgen`` command; returns the exit status (0 ok, 2 user error).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).
    """
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from ._validation import NotFittedError

    handler: Callable[[argparse.Namespace, Sequence[str]], int] = args.handler
    try:
        return handler(args, argv)
    except CLIError as exc:
        return _fail(str(exc))
    except (ValueError, TypeError, NotFittedError, FloatingPointError) as exc:
        if os.environ.get("PPGEN_DEBUG"):  # PPGEN_DEBUG=1 shows the traceback
            raise
        return _fail(str(exc))
    except FileNotFoundError as exc:
        return _fail(str(exc) if not exc.filename else f"{exc.filename}: no such file.")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
