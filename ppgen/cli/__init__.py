"""The ``ppgen`` command: fit a model, then sample from it or score new data with it.

::

    ppgen fit gmm [--data old-faithful|FILE.csv|FILE.npy] [--method em|svi|mcmc] ...
    ppgen fit hmm [--data jsb-chorales|FILE.npz|FILE.npy] [--num-states K] [--emission E] ...
    ppgen fit lda [--data ap|FILE.npz] [--vocab FILE.txt] [--num-topics K] [--method em|svi] ...
    ppgen fit vae [--data digits|mnist|FILE.npy] [--latent-dim D] [--hidden-dims 200,200] ...
    ppgen fit rbm|dbn|dbm [--data binarized-mnist|digits|FILE.npy] [--num-hidden H] ...
    ppgen fit gan|cgan [--data ring|grid|digits|mnist|FILE.npy] [--pack P] [--num-steps N] ...
    ppgen sample DIR -n N [--length T] [--seed S] [--out FILE.csv|FILE.npz]
    ppgen score DIR FILE [--out FILE.csv]

``ppgen fit gmm`` writes into ``--out DIR``: ``report.md``, ``mixture.png``, ``history.png``
(EM, SVI) or ``trace.png`` (MCMC), ``model.pt`` (:func:`ppgen.save`), ``inference_data.nc``
(ArviZ InferenceData as netCDF) and ``run.json`` (the command, data source and column names).
``ppgen fit hmm`` writes ``report.md``, ``state_posterior.png``, ``transition_matrix.png``,
``history.png``, ``model.pt``, ``inference_data.nc`` and ``run.json``. ``ppgen fit lda``
holds out ``--heldout-fraction`` of the documents (drawn with ``--seed``), fits on the rest
and writes ``report.md`` (top words and NPMI coherence per topic, held-out perplexity by
document completion), ``topics.png``, ``history.png``, ``model.pt`` and ``run.json`` (with
the held-out document indices). ``ppgen fit vae`` fits a variational autoencoder on all
images but a validation and a held-out part (drawn with ``--seed``; MNIST's own splits) and
writes ``report.md`` (held-out log-likelihood by importance sampling, with its standard
error), ``history.png``, ``samples.png``, ``reconstructions.png``, ``latent.png``,
``model.pt`` and ``run.json``. ``ppgen sample`` and ``ppgen score`` read every kind of run
(a hidden Markov model draws and scores whole sequences: ``--length`` steps each, one score
per sequence; a topic model whole documents: ``--length`` words each, one score per
document).
Files are written only after the fit succeeded, each one atomically (a temporary file renamed
into place). User errors (and a model's ``NotSupportedError``) print one line starting with
``ppgen: error:`` on stderr and exit with status 2.

Layout: ``_fit`` holds the fit skeleton and its extension point (:class:`FitCommand`,
:func:`fit_command`), ``_io`` the readers, the error type and atomic output, ``_report`` the
report, ``_apply`` the ``sample`` and ``score`` commands; every public module of this package
is a family (``mixture``, ``sequence``, ``topic``, ``latent``), imported here so that it
registers its ``ppgen fit`` command: adding a family is adding one module.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence

from ._apply import add_sample_parser, add_score_parser
from ._fit import FIT_COMMANDS, PROG, Figure, FitCommand, FitRun, Parser, fit_command
from ._io import CLIError, load_table

__all__ = ["main", "build_parser", "CLIError", "FitCommand", "FitRun", "Figure",
           "fit_command", "FIT_COMMANDS", "load_table", "load_sequences", "load_corpus"]

# Every public module of the package is a family: importing it registers its fit command.
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

from .sequence import load_sequences  # noqa: E402
from .topic import load_corpus  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ppgen`` command."""
    from .. import __version__

    parser = Parser(prog=PROG, description="Fit generative models (Pyro/PyTorch), then "
                    "sample from them or score new data with them.",
                    epilog="Run 'ppgen COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=Parser)
    fit = commands.add_parser("fit", help="fit a model and write a report, figures and the "
                              "model into a directory", description="Fit a model.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", required=True,
                                parser_class=Parser)
    for command in FIT_COMMANDS.values():
        command.add_parser(models)
    add_sample_parser(commands)
    add_score_parser(commands)
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
    from .._validation import NotFittedError, NotSupportedError

    handler: Callable[[argparse.Namespace, Sequence[str]], int] = args.handler
    try:
        return handler(args, argv)
    except (CLIError, NotSupportedError) as exc:  # the message says what to do instead
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
