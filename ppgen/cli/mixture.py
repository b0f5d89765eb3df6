"""``ppgen fit gmm``: a Gaussian mixture on a table (Old Faithful, a CSV or a .npy file), by
EM, SVI or MCMC."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ._fit import (
    Figure,
    FitCommand,
    FitRun,
    add_num_steps,
    fit_command,
    given_options,
    nonnegative_int,
    positive_int,
    probability,
)
from ._io import CLIError, Table, load_table
from ._report import Report, convergence_text, fmt, posterior_summary

__all__ = ["MixtureFit", "MCMC_DEFAULTS", "MAPPED_INFERENCE_DATA_VALUES", "PLOT_ROWS"]

#: MCMC defaults of the command (modest, so that a laptop finishes in minutes).
MCMC_DEFAULTS = {"num_samples": 500, "num_warmup": 500, "num_chains": 4}
#: A memory-mapped file of more values than this gets no inference_data.nc (it would hold the
#: data twice over: observed_data and posterior_predictive), and ...
MAPPED_INFERENCE_DATA_VALUES = 1_000_000
#: ... mixture.png draws at most this many rows (a seeded sample of them).
PLOT_ROWS = 10_000
_MCMC_FLAGS = {"num_samples": "--num-samples", "num_warmup": "--num-warmup",
               "num_chains": "--num-chains", "target_accept_prob": "--target-accept-prob",
               "max_tree_depth": "--max-tree-depth"}


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
                 [[str(c), fmt(weights[c], 4)] + [fmt(v) for v in locs[c]]
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
                     [[str(c)] + [fmt(v) for v in cov[c]] for c in range(k)])
    else:
        report.both("Covariances (spherical: one variance shared by all columns):")
        report.both("")
        report.table(["component", "variance"], [[str(c), fmt(cov[c])] for c in range(k)])


@fit_command
class MixtureFit(FitCommand):
    name = "gmm"
    help = "Gaussian mixture"
    description = (
        "Fit a Gaussian mixture by EM, SVI or MCMC. Prints the fitted parameters, the\n"
        "log-likelihood, BIC/AIC and diagnostics, and writes report.md, mixture.png,\n"
        "history.png (EM, SVI) or trace.png (MCMC), model.pt, inference_data.nc and\n"
        "run.json into --out (only once the fit succeeded).")
    epilog = (
        "examples:\n"
        "  ppgen fit gmm --data old-faithful --method em --num-components 2 --out runs/demo\n"
        "  ppgen fit gmm --data points.csv --method mcmc --num-chains 2 --out runs/mcmc\n"
        "  ppgen sample runs/demo -n 5\n"
        "  ppgen score runs/demo points.csv")
    data_default = "old-faithful"
    data_help = ("'old-faithful' (embedded), a .csv file (numbers, comma separated, optional "
                 "header row) or a .npy array; a float32/float64 .npy file is memory-mapped, "
                 "and EM streams it block by block (default: %(default)s)")
    model_names = ("gmm",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--method", choices=("em", "svi", "mcmc"), default="em",
                            help="inference method (default: %(default)s)")
        parser.add_argument("--num-components", type=positive_int, default=2, metavar="K",
                            help="number of mixture components (default: %(default)s)")
        parser.add_argument("--covariance", choices=("full", "diag", "spherical"),
                            default="full", help="covariance structure (default: %(default)s)")
        add_num_steps(parser)
        parser.add_argument("--num-samples", type=positive_int, metavar="N",
                            help=f"MCMC: draws kept per chain (default "
                            f"{MCMC_DEFAULTS['num_samples']})")
        parser.add_argument("--num-warmup", type=nonnegative_int, metavar="N",
                            help=f"MCMC: warm-up steps per chain (default "
                            f"{MCMC_DEFAULTS['num_warmup']})")
        parser.add_argument("--num-chains", type=positive_int, metavar="C",
                            help=f"MCMC: chains (default {MCMC_DEFAULTS['num_chains']})")
        parser.add_argument("--target-accept-prob", type=probability, metavar="P",
                            help="MCMC: NUTS target acceptance probability (default 0.8; raise "
                            "it, e.g. to 0.95, when there are divergences)")
        parser.add_argument("--max-tree-depth", type=positive_int, metavar="N",
                            help="MCMC: NUTS maximum tree depth (default 10)")

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        method = args.method
        if method != "mcmc":
            given = [flag for key, flag in _MCMC_FLAGS.items() if getattr(args, key) is not None]
            if given:
                raise CLIError(f"{', '.join(given)}: these options apply to --method mcmc, "
                               f"got --method {method}. Use --num-steps for EM and SVI.")
            return given_options(args, "num_steps")
        if args.num_steps is not None:
            raise CLIError("--num-steps: applies to --method em and svi, got --method mcmc. "
                           "Use --num-samples, --num-warmup and --num-chains.")
        return {**MCMC_DEFAULTS, **given_options(args, *_MCMC_FLAGS)}

    def load_data(self, args: argparse.Namespace) -> Table:
        table = load_table(args.data, mmap=True)
        table.check_complete()
        return table

    def writes_inference_data(self, data: Table) -> bool:
        return not (data.mapped and data.values.size > MAPPED_INFERENCE_DATA_VALUES)

    def build_model(self, args: argparse.Namespace, data: Table) -> Any:
        import ppgen

        return ppgen.GaussianMixture(args.num_components, covariance=args.covariance)

    def fit_inputs(self, args: argparse.Namespace, data: Table) -> tuple[Any, dict[str, Any]]:
        import torch

        # A memory-mapped file goes to ppgen.fit as it is, which streams it (no copy).
        return (data.values if data.mapped else torch.as_tensor(data.values)), {}

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        model, x = run.model, run.fit.data
        log_lik = model.log_prob(x)
        total, n = float(log_lik.sum()), int(log_lik.shape[0])
        del log_lik  # one row-sized vector at a time (a memory-mapped file's rows are many)
        return {"total": total, "n": n, "bic": model.bic(x), "aic": model.aic(x),
                "num_params": model.num_parameters()}

    def title(self, run: FitRun) -> str:
        args = run.args
        return (f"ppgen fit gmm: {args.num_components} components, {args.covariance} "
                f"covariance, method {args.method}")

    def data_lines(self, run: FitRun) -> list[str]:
        table = run.data
        lines = [f"{run.results['n']} rows x {table.values.shape[1]} columns "
                 f"({', '.join(table.names)}) from {table.source}"]
        if table.mapped:
            lines.append(f"memory-mapped ({table.values.dtype}), read from disk block by block")
        if not self.writes_inference_data(table):
            lines.append(f"no inference_data.nc: for more than {MAPPED_INFERENCE_DATA_VALUES:,} "
                         "mapped values it would hold the data twice (observed_data, "
                         "posterior_predictive); in Python, fit.to_arviz() builds it")
        return lines

    def report(self, report: Report, run: FitRun) -> None:
        method, res = run.args.method, run.results
        _parameter_report(report, run.model, run.data.names, method)
        if method == "mcmc":
            posterior_summary(report, run.fit)
        report.section("Fit")
        at = " at the posterior mean" if method == "mcmc" else ""
        total, n = res["total"], res["n"]
        report.table(["quantity", "value"], [
            ["log-likelihood" + at, f"{total:.3f} nats (total over {n} rows)"],
            ["mean log-likelihood", f"{total / n:.4f} nats per row"],
            ["BIC", f"{res['bic']:.3f} (lower is better)"],
            ["AIC", f"{res['aic']:.3f} (lower is better)"],
            ["free parameters", str(res["num_params"])],
            ["convergence", convergence_text(run.fit)],
        ], numeric=False)

    def figures(self, run: FitRun) -> list[Figure]:
        import torch

        from .. import plots

        x, n = run.fit.data, len(run.fit.data)
        what = "data"
        if n > PLOT_ROWS:  # a seeded sample of the rows, in file order
            rows = np.random.default_rng(run.fit.seed).choice(n, PLOT_ROWS, replace=False)
            x = x[torch.from_numpy(np.sort(rows))]
            what = f"a sample of {PLOT_ROWS:,} of the {n:,} rows"
        mixture = Figure("mixture.png", plots.plot_mixture(run.model, x, names=run.data.names),
                         f"{what} coloured by component, means, 1- and 2-sigma ellipses")
        if run.args.method == "mcmc":
            return [mixture, Figure("trace.png", plots.plot_trace(run.fit),
                                    "trace and marginal density per chain")]
        return [mixture, Figure("history.png", plots.plot_history(run.fit),
                                "objective per iteration/step")]

    def run_info(self, run: FitRun) -> dict[str, Any]:
        args, res = run.args, run.results
        return {"data": run.data.source, "columns": run.data.names, "seed": run.fit.seed,
                "num_components": args.num_components, "covariance": args.covariance,
                "options": run.options, "log_likelihood": res["total"], "bic": res["bic"],
                "aic": res["aic"]}
