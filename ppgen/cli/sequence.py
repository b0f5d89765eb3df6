"""``ppgen fit hmm``: a hidden Markov model on padded sequences (the JSB chorales, a .npz or a
.npy file), by EM (Baum-Welch) or SVI; sampling and scoring whole sequences."""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ._fit import (
    Figure,
    FitCommand,
    FitRun,
    add_num_steps,
    add_tol,
    emit_scores,
    fit_command,
    given_options,
    only_with_method,
    positive_float,
    positive_int,
)
from ._io import (
    CLIError,
    atomic_bytes,
    check_magic,
    column_names,
    count,
    emit,
    existing_file,
    npz_bytes,
    numpy_file_errors,
    output_file,
    value_errors,
)
from ._report import Report, convergence_text, fmt

__all__ = ["SequenceFit", "SequenceData", "load_sequences", "SEQUENCE_DATASETS"]

#: Sequence data sets of ``ppgen fit hmm``.
SEQUENCE_DATASETS = ("jsb-chorales",)


@dataclass
class SequenceData:
    """Padded sequences read by the command: ``values`` (N, T, D), or (N, T) for
    categorical symbols, with the real length of each sequence."""

    values: np.ndarray
    lengths: np.ndarray  # (N,) int64
    names: list[str]
    source: str

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def describe(self) -> str:
        n, t = self.values.shape[:2]
        width = "1 symbol" if self.values.ndim == 2 else count(
            self.values.shape[2], "feature", "features")
        return (f"{count(n, 'sequence', 'sequences')}, {self.num_frames} frames (lengths "
                f"{int(self.lengths.min())} to {int(self.lengths.max())}), {width} per frame, "
                f"from {self.source}")


def _read_npz_or_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The padded array and the lengths (None when not given) of a .npz or .npy file."""
    suffix = path.suffix.lower()
    what = ("a .npz file written by np.savez (arrays 'x' and optionally 'lengths')"
            if suffix == ".npz" else "a .npy file written by np.save")
    check_magic(path, what, suffix)
    with numpy_file_errors(path, what):
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:
            names = list(loaded.files)
            if "x" not in names:
                raise CLIError(f"{path}: expected an array named 'x' (padded sequences) and "
                               "optionally 'lengths', got "
                               + (", ".join(repr(n) for n in names) or "no arrays")
                               + ". Save with np.savez(path, x=x, lengths=lengths).")
            x = loaded["x"]
            lengths = loaded["lengths"] if "lengths" in names else None
        return x, lengths


def _check_lengths(lengths: np.ndarray | None, n: int, t: int, source: str) -> np.ndarray:
    """The length of each of ``n`` sequences padded to ``t`` steps (all ``t`` when None)."""
    if lengths is None:
        return np.full(n, t, dtype=np.int64)
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "biuf" or lengths.shape != (n,):
        raise CLIError(f"{source}: expected 'lengths' to hold {n} integers (one per "
                       f"sequence of x), got shape {lengths.shape} and dtype "
                       f"{lengths.dtype}.")
    if not np.isfinite(lengths).all() or (lengths != np.round(lengths)).any():
        raise CLIError(f"{source}: expected whole numbers in 'lengths', got "
                       f"{lengths[~np.isfinite(lengths) | (lengths != np.round(lengths))][0]}.")
    lengths = lengths.astype(np.int64)
    bad = (lengths < 1) | (lengths > t)
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise CLIError(f"{source}: expected 'lengths' between 1 and the padded length {t}, "
                       f"got lengths[{i}] = {int(lengths[i])}.")
    return lengths


def _check_sequences(x: np.ndarray, lengths: np.ndarray | None, source: str,
                     emission: str) -> tuple[np.ndarray, np.ndarray]:
    """Shape, lengths, finiteness and support of padded sequences for ``emission``."""
    if x.dtype.kind not in "biuf":
        raise CLIError(f"{source}: expected numeric sequences, got an array of dtype "
                       f"{x.dtype}. Convert it with x.astype(float) first.")
    categorical = emission == "categorical"
    if categorical and x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if not categorical and x.ndim == 2:
        x = x[:, :, None]  # one feature per step
    want = 2 if categorical else 3
    if x.ndim != want:
        shape = ("(sequences, steps)" if categorical
                 else "(sequences, steps, features) or (sequences, steps)")
        hint = (" --emission categorical needs one symbol per step; use --emission "
                "bernoulli, poisson or gaussian for vectors." if categorical and x.ndim == 3
                else "")
        raise CLIError(f"{source}: expected padded sequences of shape {shape} for --emission "
                       f"{emission}, got shape {x.shape}.{hint}")
    if 0 in x.shape:
        raise CLIError(f"{source}: expected at least one sequence of at least one step, got "
                       f"shape {x.shape}.")
    n, t = x.shape[:2]
    lengths = _check_lengths(lengths, n, t, source)
    mask = np.arange(t) < lengths[:, None]
    x = np.array(x, dtype=np.float64)
    x[~mask] = 0  # padding: ignored by the model (0 is valid for every emission)

    def refuse(bad: np.ndarray, expected: str, remedy: str) -> NoReturn:
        idx = tuple(int(v) for v in np.argwhere(bad)[0])
        where = f"sequence {idx[0]}, step {idx[1]}" + (
            f", feature {idx[2]}" if len(idx) == 3 else "")
        raise CLIError(f"{source}, {where} (0-based): expected {expected}, got "
                       f"{float(x[idx]):g} ({count(int(bad.sum()), 'such entry', 'such entries')}"
                       f" in all). {remedy}")

    finite = np.isfinite(x)
    if not finite.all():
        refuse(~finite, "finite numbers inside each sequence's length",
               "Fill or drop them; values past a sequence's length are ignored.")
    if emission == "bernoulli":
        bad = (x != 0) & (x != 1)
        if bad.any():
            refuse(bad, "bits (0 or 1) for --emission bernoulli",
                   "Binarise the data, or use --emission gaussian or poisson.")
    elif emission in ("poisson", "categorical"):
        bad = (x < 0) | (x != np.round(x))
        if bad.any():
            what = "counts" if emission == "poisson" else "symbols"
            refuse(bad, f"non-negative integer {what} for --emission {emission}",
                   "Use --emission gaussian for real-valued data.")
    if categorical:
        x = x.astype(np.int64)
    return x, lengths


def load_sequences(spec: str, emission: str, *, split: str = "train",
                   option: str | None = None) -> SequenceData:
    """Read ``jsb-chorales`` (its ``split``), a ``.npz`` (arrays ``x``, optional ``lengths``)
    or a ``.npy`` padded array, checked for the ``emission``. Errors start with ``option``
    (e.g. ``--data``) when given."""
    try:
        return _load_sequences(spec, emission, split)
    except CLIError as exc:
        message = str(exc)
        if option is None or message.startswith(option):
            raise
        raise CLIError(f"{option} {message}") from None


def _load_sequences(spec: str, emission: str, split: str) -> SequenceData:
    if spec in SEQUENCE_DATASETS:
        import torch

        import ppgen
        rolls, lengths = ppgen.datasets.load_jsb_chorales(split, dtype=torch.float64)
        # Piano keys numbered as in the figures (key 0 = A0; MIDI pitch = key + 21).
        names = [f"key{j}" for j in range(rolls.shape[-1])]
        x, lens = _check_sequences(rolls.numpy(), lengths.numpy(), f"{spec} ({split})",
                                   emission)
        return SequenceData(x, lens, names, f"{spec} ({split} split)")
    path = existing_file(spec, SEQUENCE_DATASETS, (".npz", ".npy"))
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise CLIError(f"{spec}: expected a .npz file (arrays 'x' and 'lengths') or a .npy "
                       f"padded array, got a file ending in {suffix or '(no extension)'!r}.")
    raw, lengths = _read_npz_or_npy(path)
    x, lens = _check_sequences(raw, lengths, str(path), emission)
    names = ["symbol"] if x.ndim == 2 else [f"x{j}" for j in range(x.shape[2])]
    return SequenceData(x, lens, names, str(path))


def _per_state_report(report: Report, model: Any, names: list[str],
                      occupancy: np.ndarray) -> None:
    """One row per state: start and stay probabilities, expected dwell time, occupancy and
    the emission parameters (all of them for a few features, the largest ones otherwise)."""
    init = model.initial_probs.detach().cpu().double().numpy()
    trans = model.transition_probs.detach().cpu().double().numpy()
    k = len(init)
    stay = np.diag(trans)
    header = ["state", "initial", "stay", "mean dwell (steps)", "occupancy"]
    rows = [[str(i), fmt(init[i], 4), fmt(stay[i], 4),
             "inf" if stay[i] >= 1 else fmt(1 / (1 - stay[i]), 4), fmt(occupancy[i], 4)]
            for i in range(k)]
    if model.emission == "categorical":
        probs = model.probs.detach().cpu().double().numpy()
        header.append("most probable symbols (probability)")
        for i in range(k):
            top = np.argsort(-probs[i])[:4]
            rows[i].append(", ".join(f"{s} ({probs[i, s]:.3f})" for s in top))
    else:
        key = {"gaussian": "locs", "bernoulli": "probs", "poisson": "rates"}[model.emission]
        label = {"locs": "mean", "probs": "p", "rates": "rate"}[key]
        values = getattr(model, key).detach().cpu().double().numpy()
        if len(names) <= 6:
            header += [f"{label} {n}" for n in names]
            if model.emission == "gaussian":
                cov = model.covariances.detach().cpu().double().numpy()
                var = {"full": lambda c: np.diagonal(c, axis1=-2, axis2=-1),
                       "diag": lambda c: c,
                       "spherical": lambda c: np.repeat(c[:, None], len(names), 1)}[
                    model.covariance](cov)
                header += [f"var {n}" for n in names]
            for i in range(k):
                rows[i] += [fmt(v, 4) for v in values[i]]
                if model.emission == "gaussian":
                    rows[i] += [fmt(v, 4) for v in var[i]]
        else:
            header.append(f"largest {label} (feature: value)")
            for i in range(k):
                top = np.argsort(-values[i])[:4]
                rows[i].append(", ".join(f"{names[j]}: {values[i, j]:.3g}" for j in top))
    report.both("One row per state: initial probability, probability of staying, mean dwell "
                "time 1/(1 - stay), share of the training frames (posterior), emission.")
    report.both("")
    report.table(header, rows)
    if k <= 12:
        report.both("")
        report.both("Transition matrix (row: from state, column: to state):")
        report.both("")
        report.table(["from \\ to"] + [str(j) for j in range(k)],
                     [[str(i)] + [f"{trans[i, j]:.4f}" for j in range(k)] for i in range(k)])


def _flat_prior(args: argparse.Namespace) -> bool:
    """Whether the emissions have no prior, so that the EM objective is the likelihood."""
    return (args.emission not in ("bernoulli", "categorical")
            or args.emission_concentration == 1)


@fit_command
class SequenceFit(FitCommand):
    name = "hmm"
    help = "hidden Markov model"
    description = (
        "Fit a hidden Markov model by EM (Baum-Welch) or SVI. Prints the\n"
        "log-likelihood, the negative log-likelihood per frame (train, and the test split\n"
        "of jsb-chorales), BIC, the states and diagnostics, and writes report.md,\n"
        "state_posterior.png, transition_matrix.png, history.png, model.pt,\n"
        "inference_data.nc and run.json into --out (only once the fit succeeded).")
    epilog = (
        "data files:\n"
        "  FILE.npz  arrays 'x' (padded sequences: (N, T, D), or (N, T) for one feature or\n"
        "            categorical symbols) and optionally 'lengths' (N,); steps past a\n"
        "            sequence's length are ignored\n"
        "  FILE.npy  one padded array (N, T[, D]) of full-length sequences\n"
        "\nexamples:\n"
        "  ppgen fit hmm --data jsb-chorales --num-states 8 --out runs/jsb\n"
        "  ppgen fit hmm --data seqs.npz --num-states 3 --covariance full --out runs/seqs\n"
        "  ppgen sample runs/seqs -n 5 --length 40 --out draws.npz\n"
        "  ppgen score runs/seqs draws.npz")
    data_default = "jsb-chorales"
    data_help = ("'jsb-chorales' (embedded piano rolls: trains on the train split, reports the "
                 "test split as held out), a .npz or a .npy file (default: %(default)s)")
    model_names = ("hmm",)
    length_help = "hidden Markov models: steps per sequence (required for them)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-states", type=positive_int, default=4, metavar="K",
                            help="number of hidden states (default: %(default)s)")
        parser.add_argument("--emission",
                            choices=("gaussian", "categorical", "bernoulli", "poisson"),
                            help="distribution of a frame given its state (default: bernoulli "
                            "for jsb-chorales, gaussian otherwise)")
        parser.add_argument("--covariance", choices=("diag", "full", "spherical"),
                            help="Gaussian emissions: covariance structure (default: diag)")
        parser.add_argument("--emission-concentration", type=positive_float, metavar="A",
                            help="Bernoulli: Beta(A, A) prior of each bit; categorical: "
                            "Dirichlet(A) prior of the symbols; EM finds the posterior mode, "
                            "so A > 1 keeps unseen values from getting probability 0 "
                            "(default: 2 for jsb-chorales, 1 otherwise)")
        parser.add_argument("--method", choices=("em", "svi"), default="em",
                            help="inference method (default: %(default)s)")
        add_num_steps(parser)
        add_tol(parser)
        parser.add_argument("--num-restarts", type=positive_int, metavar="R",
                            help="EM: independent starts, the best one is kept (default 1)")

    def fit_options(self, args: argparse.Namespace) -> dict[str, Any]:
        """Resolves ``args.emission``, ``args.covariance`` and ``args.emission_concentration``
        (their defaults depend on the data set) and refuses what does not apply to them."""
        jsb = args.data in SEQUENCE_DATASETS
        emission = args.emission or ("bernoulli" if jsb else "gaussian")
        if args.covariance is not None and emission != "gaussian":
            raise CLIError(f"--covariance: applies to --emission gaussian, got --emission "
                           f"{emission}.")
        if args.emission_concentration is not None and emission not in ("bernoulli",
                                                                        "categorical"):
            raise CLIError(f"--emission-concentration: applies to --emission bernoulli and "
                           f"categorical, got --emission {emission}.")
        concentration = args.emission_concentration
        if concentration is None:
            concentration = 2.0 if jsb else 1.0
        if (args.method == "em" and emission in ("bernoulli", "categorical")
                and concentration < 1):
            raise CLIError(f"--emission-concentration: expected a value >= 1 with --method em "
                           f"(EM finds the posterior mode), got {concentration:g}. Use "
                           "--method svi for a sparse prior.")
        only_with_method(args, "em", {"--num-restarts": args.num_restarts})
        args.emission, args.emission_concentration = emission, concentration
        args.covariance = args.covariance or "diag"
        return given_options(args, "num_steps", "tol", "num_restarts")

    def load_data(self, args: argparse.Namespace) -> tuple[SequenceData, SequenceData | None]:
        """The training sequences, and the test split of an embedded data set."""
        train = load_sequences(args.data, args.emission, split="train", option="--data")
        test = (load_sequences(args.data, args.emission, split="test", option="--data")
                if args.data in SEQUENCE_DATASETS else None)
        return train, test

    def build_model(self, args: argparse.Namespace, data: Any) -> Any:
        import ppgen

        return ppgen.HiddenMarkovModel(args.num_states, emission=args.emission,
                                       covariance=args.covariance,
                                       emission_concentration=args.emission_concentration)

    def fit_inputs(self, args: argparse.Namespace, data: Any) -> tuple[Any, dict[str, Any]]:
        import torch

        train, _ = data
        return (torch.as_tensor(train.values),
                {"model_kwargs": {"lengths": torch.as_tensor(train.lengths)}})

    def evaluate(self, run: FitRun) -> dict[str, Any]:
        import torch

        model, (train, test) = run.model, run.data
        x, lengths = run.fit.data, run.fit.model_kwargs["lengths"]
        res = {"total": float(model.log_prob(x, lengths).sum()), "bic": model.bic(x, lengths),
               "num_params": model.num_parameters(), "held_out": None}
        if test is not None:
            # e.g. a categorical symbol never seen in training
            with value_errors(f"{test.source}: cannot score the held-out split: "):
                test_total = float(model.log_prob(torch.as_tensor(test.values),
                                                  torch.as_tensor(test.lengths)).sum())
            res["held_out"] = (test_total, test.num_frames)
        # Posterior marginals of the training frames: state occupancy and the first sequence.
        gamma = model.predict_proba(x, lengths)
        first = res["first"] = int(train.lengths[0])
        res["occupancy"] = (gamma.sum((0, 1)) / train.num_frames).detach().cpu().double().numpy()
        res["probs0"] = gamma[0, :first]
        res["path0"] = model.predict(x[:1], lengths[:1])[0, :first]
        return res

    def title(self, run: FitRun) -> str:
        args = run.args
        cov = f", {args.covariance} covariance" if args.emission == "gaussian" else ""
        return (f"ppgen fit hmm: {count(args.num_states, 'state', 'states')}, {args.emission} "
                f"emission{cov}, method {args.method}")

    def data_lines(self, run: FitRun) -> list[str]:
        train, test = run.data
        return [f"train: {train.describe()}"] + (
            [] if test is None else [f"test (held out): {test.describe()}"])

    def settings_extra(self, run: FitRun) -> str:
        args = run.args
        return (f", emission concentration {args.emission_concentration:g}"
                if args.emission in ("bernoulli", "categorical") else "")

    def report(self, report: Report, run: FitRun) -> None:
        args, res, (train, _) = run.args, run.results, run.data
        total, frames, held_out = res["total"], train.num_frames, res["held_out"]
        report.section("Fit")
        rows = [
            ["log-likelihood (train)", f"{total:.3f} nats (total over {frames} frames)"],
            ["NLL per frame (train)", f"{-total / frames:.4f} nats"],
        ]
        if held_out is not None:
            rows.append(["NLL per frame (test)",
                         f"{-held_out[0] / held_out[1]:.4f} nats (log-likelihood "
                         f"{held_out[0]:.3f} over {held_out[1]} frames)"])
        final = float(run.fit.history["objective"][-1])
        if args.method == "em":
            rows.append(["final EM objective", f"{final:.3f} (" + (
                "the log-likelihood: flat priors" if _flat_prior(args) else "log-likelihood + "
                "log prior of the emission probabilities") + ")"])
        else:
            rows.append(["final SVI loss", f"{final:.3f} (negative ELBO)"])
        rows += [
            ["BIC", f"{res['bic']:.3f} (lower is better)"],
            ["free parameters", str(res["num_params"])],
            ["convergence", convergence_text(run.fit)],
            ["elapsed", f"{run.fit.elapsed:.2f} s"],
        ]
        report.table(["quantity", "value"], rows, numeric=False)
        what = "point estimates" if args.method == "em" else "MAP estimates"
        report.section(f"States ({what})")
        if args.data in SEQUENCE_DATASETS:
            from ppgen.datasets.loaders import LOWEST_PITCH

            report.both(f"Features are piano keys, numbered as in the figures: key0 = A0, "
                        f"MIDI pitch = key + {LOWEST_PITCH}.")
        _per_state_report(report, run.model, train.names, res["occupancy"])

    def figures(self, run: FitRun) -> list[Figure]:
        from .. import plots

        res, (train, _), first = run.results, run.data, run.results["first"]
        jsb = run.args.data in SEQUENCE_DATASETS
        posterior = plots.plot_state_posterior(
            res["probs0"], observations=run.fit.data[0, :first].detach().cpu(),
            states=res["path0"], states_label="Viterbi path",
            names=None if len(train.names) > 10 else train.names,
            observations_label="piano key (0 = A0)" if jsb else None,
            title=f"Sequence 0 of the training data ({first} steps): posterior state "
            f"probabilities and Viterbi path")
        transitions = plots.plot_transition_matrix(run.model.transition_probs,
                                                   annotate=run.args.num_states <= 15)
        return [Figure("state_posterior.png", posterior, "the first training sequence, its "
                       "posterior state probabilities over time and its Viterbi path"),
                Figure("transition_matrix.png", transitions, "the fitted transition matrix"),
                Figure("history.png", plots.plot_history(run.fit),
                       "objective per iteration/step")]

    def run_info(self, run: FitRun) -> dict[str, Any]:
        args, res, (train, _), fit = run.args, run.results, run.data, run.fit
        total, frames, held_out = res["total"], train.num_frames, res["held_out"]
        return {"data": train.source, "columns": train.names, "seed": fit.seed,
                "num_states": args.num_states, "emission": args.emission,
                "covariance": args.covariance if args.emission == "gaussian" else None,
                "emission_concentration": args.emission_concentration,
                "options": run.options, "num_sequences": int(len(train.lengths)),
                "num_frames": frames, "log_likelihood": total,
                "nll_per_frame": -total / frames,
                "test_nll_per_frame": None if held_out is None else -held_out[0] / held_out[1],
                "bic": res["bic"], "converged": fit.converged, "elapsed": fit.elapsed}

    def sample(self, args: argparse.Namespace, model: Any) -> int:
        """``--length`` steps per sequence: CSV rows led by sequence and step, or .npz."""
        if args.length is None:
            raise CLIError("--length: required when sampling from a hidden Markov model (the "
                           "number of steps of each sequence), e.g. --length 50.")
        x = model.sample(args.num_samples, lengths=args.length, seed=args.seed)
        x = x.detach().cpu().numpy()
        if args.out is not None and args.out.lower().endswith(".npz"):
            lengths = np.full(args.num_samples, args.length, dtype=np.int64)
            atomic_bytes(output_file(args.out), npz_bytes(x=x, lengths=lengths))
            return 0
        frames = x.reshape(x.shape[0], x.shape[1], -1)
        out = io.StringIO()
        if not args.no_header:
            names = ["sequence", "step"] + column_names(args.dir, frames.shape[2],
                                                        "symbol" if x.ndim == 2 else None)
            out.write(",".join(names) + "\n")
        discrete = model.emission != "gaussian"
        for i in range(frames.shape[0]):
            for t in range(frames.shape[1]):
                cells = (str(int(v)) if discrete else repr(float(v)) for v in frames[i, t])
                out.write(f"{i},{t}," + ",".join(cells) + "\n")
        emit(out.getvalue(), args.out)
        return 0

    def score(self, args: argparse.Namespace, model: Any) -> int:
        """One score per sequence of a .npz/.npy file or of the test split."""
        import torch

        data = load_sequences(args.file, model.emission, split="test")
        width = None if data.values.ndim == 2 else data.values.shape[2]
        if model.num_features is not None and width != model.num_features:
            raise CLIError(f"{args.file}: expected {model.num_features} features per step, as "
                           f"the model was fitted with, got {width}.")
        with value_errors(f"{data.source}: "):  # e.g. symbols outside the fitted alphabet
            scores = model.score(torch.as_tensor(data.values), torch.as_tensor(data.lengths))
        emit_scores(scores, args.out, header=not args.no_header)
        return 0
