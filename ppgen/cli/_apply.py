"""``ppgen sample`` and ``ppgen score``: load a run's model and hand it to its family."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._fit import FIT_COMMANDS, command_for, nonnegative_int, positive_int
from ._io import CLIError

__all__ = ["add_sample_parser", "add_score_parser", "load_model"]


def load_model(path_arg: str) -> Any:
    """The fitted model of a run directory (or of a model.pt file)."""
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


def _cmd_sample(args: argparse.Namespace, argv: Sequence[str]) -> int:
    model = load_model(args.dir)
    return command_for(model).sample(args, model)


def _cmd_score(args: argparse.Namespace, argv: Sequence[str]) -> int:
    model = load_model(args.dir)
    return command_for(model).score(args, model)


def add_sample_parser(commands: Any) -> None:
    sample = commands.add_parser("sample", help="draw new rows (or sequences) from a fitted "
                                 "model (CSV)",
                                 description="Draw rows from the model in DIR/model.pt and "
                                 "print them as CSV (a header row with the column names, then "
                                 "one row per draw). A hidden Markov model draws N sequences "
                                 "of --length steps: one CSV row per step, led by the "
                                 "sequence and step numbers, or a .npz file (arrays x and "
                                 "lengths, as 'ppgen fit hmm --data' and 'ppgen score' read) "
                                 "with --out FILE.npz. A topic model draws N documents of "
                                 "--length words: one CSV row of word counts per document "
                                 "(a header row with the vocabulary), or a .npz CSR count "
                                 "matrix (as 'ppgen fit lda --data' and 'ppgen score' read) "
                                 "with --out FILE.npz.")
    sample.add_argument("dir", metavar="DIR", help="run directory written by 'ppgen fit'")
    sample.add_argument("-n", "--num-samples", type=positive_int, required=True,
                        metavar="N", help="number of rows (sequences) to draw")
    sample.add_argument("--length", type=positive_int, metavar="T",
                        help="; ".join(c.length_help for c in FIT_COMMANDS.values()
                                       if c.length_help))
    sample.add_argument("--seed", type=nonnegative_int, default=None,
                        help="random seed (default: fresh randomness)")
    sample.add_argument("--out", metavar="FILE.csv",
                        help="write the CSV to this file instead of stdout (hidden Markov "
                        "models: FILE.npz writes x and lengths; topic models: FILE.npz writes "
                        "a CSR count matrix)")
    sample.add_argument("--no-header", action="store_true", help="omit the header row")
    sample.set_defaults(handler=_cmd_sample)


def add_score_parser(commands: Any) -> None:
    score = commands.add_parser("score", help="anomaly score of each row of a file",
                                description="Print the anomaly score (negative "
                                "log-likelihood in nats; higher = more unusual) of each row "
                                "of FILE under the model in DIR/model.pt, one per line. For "
                                "a hidden Markov model: one score per sequence of a .npz or "
                                ".npy file (as 'ppgen fit hmm --data' reads), or of the test "
                                "split of 'jsb-chorales'. For a topic model: one score per "
                                "document (importance-sampled estimate) of a .npz CSR count "
                                "matrix (as 'ppgen fit lda --data' reads), a .csv or .npy "
                                "matrix of counts, or 'ap'.")
    score.add_argument("dir", metavar="DIR", help="run directory written by 'ppgen fit'")
    score.add_argument("file", metavar="FILE", help="data to score: .csv or .npy (or "
                       "'old-faithful'); hidden Markov models: .npz or .npy (or "
                       "'jsb-chorales'); topic models: .npz, .csv or .npy counts (or 'ap')")
    score.add_argument("--out", metavar="FILE.csv",
                       help="write the scores to this file instead of stdout, as a CSV file "
                       "with the header row 'score'")
    score.add_argument("--no-header", action="store_true",
                       help="omit the header row of the --out file")
    score.set_defaults(handler=_cmd_score)
