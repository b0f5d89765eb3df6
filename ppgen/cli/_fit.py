"""The fit skeleton every ``ppgen fit <family>`` command shares, and its extension point.

A family is one module of ``ppgen.cli`` (found and imported by the package) holding one
:class:`FitCommand` subclass decorated with :func:`fit_command`::

    @fit_command
    class VAEFit(FitCommand):
        name = "vae"                      # ppgen fit vae
        help = "variational autoencoder"  # the line in 'ppgen fit --help'
        description = "Fit a VAE ..."     # and epilog: 'ppgen fit vae --help'
        data_default, data_help = "digits", "'mnist', 'digits' or a .npy array"
        model_names = ("vae",)            # registry_name of the models it fits

        def add_arguments(self, parser): ...   # --latent-dim, --num-epochs, --method ...
        def fit_options(self, args): ...       # check them; ppgen.fit's keyword options
        def load_data(self, args): ...         # read --data (raise CLIError when bad)
        def build_model(self, args, data): ...
        def evaluate(self, run): ...           # numbers for the report and run.json
        def title(self, run): ...
        def data_lines(self, run): ...
        def report(self, report, run): ...     # the sections between Data and Diagnostics
        def figures(self, run): ...            # [Figure("x.png", fig, "what it shows")]
        def run_info(self, run): ...           # run.json between "method" and the version
        # optional: fit_inputs (ppgen.fit's data and model_kwargs), settings_extra,
        # model_name, run_json, and sample / score (with length_help) when the family's
        # draws or scores are not rows of a table

:meth:`FitCommand.run` owns the rest, the same for every family: ``--data``, ``--device``,
``--seed``, ``--out`` and ``--quiet``; ``--out`` checked before any work; the fit with the
progress bar and convergence warnings kept for the report; the report's title, command,
Data, Diagnostics and Files sections; and, only once all succeeded, the run directory
(``report.md``, the figures, ``model.pt``, ``inference_data.nc``, ``run.json``), each file
written atomically. ``ppgen sample`` and ``ppgen score`` hand a model whose ``registry_name``
is in :attr:`FitCommand.model_names` to that command's :meth:`~FitCommand.sample` and
:meth:`~FitCommand.score` (by default: rows of a table).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

from ._io import (
    CLIError,
    atomic,
    atomic_bytes,
    atomic_text,
    column_names,
    csv_text,
    emit,
    load_table,
    png_bytes,
)
from ._report import Report, settings_line

__all__ = ["PROG", "FitCommand", "FitRun", "Figure", "fit_command", "FIT_COMMANDS",
           "command_for", "Parser", "positive_int", "nonnegative_int", "probability",
           "positive_float", "nonnegative_float", "fraction", "add_num_steps", "add_tol",
           "given_options", "only_with_method", "emit_scores", "write_run"]

PROG = "ppgen"


# ----------------------------------------------------------------------------- parser
class Parser(argparse.ArgumentParser):
    """argparse with errors in the command's format: ``ppgen: error: ...``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        self.print_usage(sys.stderr)
        self.exit(2)


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool],
             expected: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then require ``ok(value)``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
probability = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
positive_float = _checked(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
nonnegative_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
fraction = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def add_num_steps(parser: argparse.ArgumentParser) -> None:
    """``--num-steps`` of the EM and SVI runners."""
    parser.add_argument("--num-steps", type=positive_int, metavar="N",
                        help="EM: most iterations (default 100); SVI: most steps (default "
                        "2000)")


def add_tol(parser: argparse.ArgumentParser) -> None:
    """``--tol`` of the EM and SVI runners."""
    parser.add_argument("--tol", type=nonnegative_float, metavar="TOL",
                        help="stop when the relative change of the objective falls below "
                        "TOL; 0 runs all --num-steps (default: EM 1e-6, SVI 1e-5)")


def given_options(args: argparse.Namespace, *keys: str) -> dict[str, Any]:
    """The options among ``keys`` given on the command line (not None), by key."""
    return {key: getattr(args, key) for key in keys if getattr(args, key) is not None}


def only_with_method(args: argparse.Namespace, method: str, flags: dict[str, Any]) -> None:
    """Refuse the ``flags`` (option: value) that were given unless ``--method method``."""
    given = [flag for flag, value in flags.items() if value is not None]
    if given and args.method != method:
        verb = "applies" if len(given) == 1 else "apply"
        raise CLIError(f"{', '.join(given)}: {verb} to --method {method}, got --method "
                       f"{args.method}.")


# ------------------------------------------------------------------------- extension
@dataclass
class Figure:
    """A figure of a run: its file name in the run directory, the figure, and the line that
    describes it in report.md."""

    name: str
    figure: Any  # matplotlib Figure
    description: str


@dataclass
class FitRun:
    """What a fit command knows once the model is fitted, handed to the family's hooks."""

    args: argparse.Namespace
    command: str  # the command line, shell-quoted
    options: dict[str, Any]  # the keyword options given to ppgen.fit
    data: Any  # what FitCommand.load_data returned
    model: Any
    fit: Any  # ppgen.inference.Fit
    diagnostics: list[Any]
    results: dict[str, Any] = field(default_factory=dict)  # what FitCommand.evaluate returned


class FitCommand:
    """One ``ppgen fit <name>`` command: a family declares its arguments, data, model,
    report sections and figures; :meth:`run` is the skeleton they share."""

    #: The sub-command: ``ppgen fit <name>``; the default ``--out`` is ``runs/<name>``.
    name: ClassVar[str] = ""
    #: Its line in ``ppgen fit --help``, and the description and epilog of its own help.
    help: ClassVar[str] = ""
    description: ClassVar[str] = ""
    epilog: ClassVar[str | None] = None
    #: ``--data``: its default and help.
    data_default: ClassVar[str] = ""
    data_help: ClassVar[str] = ""
    seed_help: ClassVar[str] = "random seed (default: %(default)s)"
    #: ``registry_name`` of the models this command fits (for ``ppgen sample`` / ``score``).
    model_names: ClassVar[tuple[str, ...]] = ()
    #: What ``ppgen sample --length`` means for this family's models (None: not used).
    length_help: ClassVar[str | None] = None
    #: Whether the run writes ``inference_data.nc`` (``fit.to_arviz()``).
    inference_data: ClassVar[bool] = True
    #: The line describing ``run.json`` among the files of report.md (None: not listed).
    run_json_description: ClassVar[str | None] = None

    # -- what a family declares
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The family's own options (``--data``, ``--device``, ``--seed``, ``--out`` and
        ``--quiet`` are added around them)."""

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        """Check the options (raise :class:`CLIError`), resolve defaults that depend on
        others into ``args``, and return the keyword options of :func:`ppgen.fit`."""
        return {}

    def load_data(self, args: argparse.Namespace) -> Any:
        raise NotImplementedError

    def build_model(self, args: argparse.Namespace, data: Any) -> Any:
        raise NotImplementedError

    def fit_inputs(self, args: argparse.Namespace, data: Any) -> tuple[Any, dict[str, Any]]:
        """The data and the extra keyword arguments (e.g. ``model_kwargs``) of ``ppgen.fit``."""
        return data, {}

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        """Numbers computed from the fitted model, kept in ``run.results``."""
        return {}

    def model_name(self, args: argparse.Namespace) -> str:
        """The ``model`` of run.json."""
        return self.name

    def title(self, run: FitRun) -> str:
        return f"{PROG} fit {self.name}: method {run.args.method}"

    def data_lines(self, run: FitRun) -> list[str]:
        """The Data section's lines about the data (the settings line follows them)."""
        return []

    def settings_extra(self, run: FitRun) -> str:
        """Model settings on the settings line, after the device (e.g. ``", prior 2"``)."""
        return ""

    def report(self, report: Report, run: FitRun) -> None:
        """The sections between Data and Diagnostics."""

    def figures(self, run: FitRun) -> list[Figure]:
        return []

    def run_info(self, run: FitRun) -> dict[str, Any]:
        """run.json's entries between ``method`` and ``ppgen_version``."""
        return {}

    def run_json(self, info: dict[str, Any]) -> str:
        return json.dumps(info, indent=2)

    def writes_inference_data(self, data: Any) -> bool:
        """Whether this run writes ``inference_data.nc`` (by default :attr:`inference_data`;
        a family can leave it out for data too large to copy into it)."""
        return self.inference_data

    def sample(self, args: argparse.Namespace, model: Any) -> int:
        """``ppgen sample`` of a model of this family (default: rows of a CSV table)."""
        if args.length is not None:
            raise CLIError(f"--length: applies to sequence models (ppgen fit hmm) and topic "
                           f"models (ppgen fit lda), got a "
                           f"{type(model).__name__} in {args.dir}.")
        if args.out is not None and args.out.lower().endswith(".npz"):
            raise CLIError("--out: a .npz file holds sequences (hidden Markov models) or word "
                           "counts (topic models); write the "
                           f"rows of a {type(model).__name__} to a .csv file.")
        draws = model.sample(args.num_samples, seed=args.seed).detach().cpu().numpy()
        names = None if args.no_header else column_names(args.dir, draws.shape[1])
        emit(csv_text(draws, names), args.out)
        return 0

    def score(self, args: argparse.Namespace, model: Any) -> int:
        """``ppgen score`` of a model of this family (default: one score per table row)."""
        table = load_table(args.file)
        table.check_complete()
        if model.num_features is not None and table.values.shape[1] != model.num_features:
            raise CLIError(f"{args.file}: expected {model.num_features} columns, as the model "
                           f"was fitted with, got {table.values.shape[1]}.")
        emit_scores(model.score(table.values), args.out, header=not args.no_header)
        return 0

    # -- the skeleton
    def add_parser(self, commands: Any) -> None:
        """Add ``ppgen fit <name>`` to the sub-parsers ``commands``."""
        parser = commands.add_parser(self.name, help=self.help, description=self.description,
                                     epilog=self.epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--data", default=self.data_default, metavar="NAME|FILE",
                            help=self.data_help)
        self.add_arguments(parser)
        parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                            help="where to fit (default: %(default)s)")
        parser.add_argument("--seed", type=nonnegative_int, default=0, help=self.seed_help)
        parser.add_argument("--out", default=f"runs/{self.name}", metavar="DIR",
                            help="output directory, created if needed (default: %(default)s)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar and no "
                            "report on stdout (files are still written)")
        parser.set_defaults(handler=self.run)

    def run(self, args: argparse.Namespace, argv: Sequence[str]) -> int:
        """Fit, report, and write the run directory (only once everything succeeded)."""
        import ppgen
        from ppgen.inference import ConvergenceWarning, PointEstimateWarning

        out_dir = Path(args.out)
        check_out_dir(out_dir)
        options = self.fit_options(args)
        data = self.load_data(args)
        model = self.build_model(args, data)
        x, fit_kwargs = self.fit_inputs(args, data)
        progress = not args.quiet and sys.stderr.isatty()
        with warnings.catch_warnings():
            # Convergence problems are reported once, as diagnostics, below.
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"arviz\..*")
            # inference_data.nc of a point estimate says so in its attrs and in the report.
            warnings.simplefilter("ignore", PointEstimateWarning)
            fit = ppgen.fit(model, x, method=args.method, seed=args.seed, device=args.device,
                            progress=progress, **fit_kwargs, **options)
            command = " ".join(shlex.quote(str(a)) for a in [PROG, *argv])
            run = FitRun(args, command, options, data, model, fit, fit.diagnose())
            write_idata = self.writes_inference_data(data)
            idata = fit.to_arviz() if write_idata else None
            run.results = self.evaluate(run)
            report = self._report(run)
            # Figures are drawn in memory before anything is written.
            figures = self.figures(run)
            self._files_section(report, out_dir, figures, point=fit.is_point_estimate,
                                idata=write_idata)
            pngs = {f.name: png_bytes(f.figure) for f in figures}
        info = {"command": command, "model": self.model_name(args), "method": args.method,
                **self.run_info(run), "ppgen_version": ppgen.__version__}
        write_run(out_dir, model, pngs, self.run_json(info), report, idata=idata)
        if not args.quiet:
            print("\n".join(report.text))
        return 0

    def _report(self, run: FitRun) -> Report:
        title = self.title(run)
        report = Report([title], [f"# {title}", "", "Command:", "", "```", run.command, "```"])
        report.section("Data")
        report.bullets([*self.data_lines(run), settings_line(
            run.fit, run.args.device, self.settings_extra(run), run.options)])
        self.report(report, run)
        report.diagnostics(run.diagnostics)
        return report

    def _files_section(self, report: Report, out_dir: Path, figures: list[Figure], *,
                       point: bool = False, idata: bool = True) -> None:
        names = [f.name for f in figures]
        data_file = ["inference_data.nc"] if idata else []
        report.section("Files")
        report.text.append(f"  {out_dir}/: " + ", ".join(
            ["report.md", *names, "model.pt", *data_file, "run.json"]))
        report.markdown += [f"- [{f.name}]({f.name}): {f.description}" for f in figures]
        report.markdown.append("- [model.pt](model.pt): the fitted model (`ppgen.load`)")
        if data_file:
            report.markdown.append("- [inference_data.nc](inference_data.nc): ArviZ "
                                   "InferenceData (`arviz.from_netcdf`)" + (
                                       "; a point estimate, stored as 1 chain x 1 draw"
                                       if point else ""))
        if self.run_json_description is not None:
            report.markdown.append(f"- [run.json](run.json): {self.run_json_description}")
        report.markdown.append("")
        for name in names:
            report.markdown += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})", ""]


#: The header row of the CSV file ``ppgen score --out`` writes.
SCORE_HEADER = "score"


def emit_scores(scores: Any, out: str | None, *, header: bool = True) -> None:
    """One score per line (``repr`` of the float), on stdout, or into ``--out`` as a CSV file
    with the header row ``score`` (unless ``header`` is False, ``--no-header``)."""
    lines = "".join(f"{float(s)!r}\n" for s in scores.detach().cpu().numpy())
    emit((SCORE_HEADER + "\n" if out is not None and header else "") + lines, out)


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` the run could not be written to, before the fit: a file, a path
    under a file, or a place where no folder can be made (read-only, /proc). Nothing is
    left behind (the probe folder is removed)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: expected a directory, got {str(out_dir)!r}, which is a "
                       "file. Choose another --out.")
    parent = out_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"--out: expected a directory that can be created, got "
                       f"{str(out_dir)!r}, but {str(parent)!r} is a file, not a folder. "
                       "Choose another --out, e.g. runs/NAME.")
    try:
        tempfile.TemporaryDirectory(prefix=".ppgen-probe-", dir=parent).cleanup()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CLIError(f"--out: expected a directory that can be created, got "
                       f"{str(out_dir)!r}, but no folder can be made in {str(parent)!r} "
                       f"({reason}). Choose a writable place, e.g. --out runs/NAME.") from None


def write_run(out_dir: Path, model: Any, figures: dict[str, bytes], run_json: str,
              report: Report, *, idata: Any = None) -> None:
    """Everything succeeded: write the run's files, each atomically."""
    import ppgen

    out_dir.mkdir(parents=True, exist_ok=True)
    ppgen.save(model, out_dir / "model.pt")
    if idata is not None:
        atomic(out_dir / "inference_data.nc", lambda tmp: idata.to_netcdf(tmp))
    for name, data in figures.items():
        atomic_bytes(out_dir / name, data)
    atomic_text(out_dir / "run.json", run_json + "\n")
    atomic_text(out_dir / "report.md", "\n".join(report.markdown).rstrip() + "\n")


# -------------------------------------------------------------------------- registry
#: The fit commands by name, in the order ``ppgen fit --help`` lists them.
FIT_COMMANDS: dict[str, FitCommand] = {}
_C = TypeVar("_C", bound=type[FitCommand])


def fit_command(cls: _C) -> _C:
    """Class decorator: register ``ppgen fit <cls.name>``, run by an instance of ``cls``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__}: a fit command needs a name")
    if cls.name in FIT_COMMANDS and type(FIT_COMMANDS[cls.name]) is not cls:
        raise ValueError(f"fit command {cls.name!r} is already registered by "
                         f"{type(FIT_COMMANDS[cls.name]).__name__}")
    FIT_COMMANDS[cls.name] = cls()
    return cls


def command_for(model: Any) -> FitCommand:
    """The fit command whose family ``model`` belongs to (rows of a table when none)."""
    name = getattr(model, "registry_name", "")
    for command in FIT_COMMANDS.values():
        if name in command.model_names:
            return command
    return FitCommand()
