"""The bad-input suite with counts (issue 16, item 3): every public entry point fed careless
input. Each must raise ValueError / TypeError / NotSupportedError from ppgen's own validation
(not from inside torch, Pyro or numpy) whose message names the argument, or, for the CLI,
print ``ppgen: error:`` naming the option and exit with status 2. Inputs that are merely
extreme (huge or tiny magnitudes, booleans) may instead give a result without NaN.

test_messages.py checks the wording of single messages and test_contract.py one NaN and one
shape per model; this file is the systematic cross-product, counted: the last test prints
how many inputs were tried and how many were handled, and asserts they are equal."""

# ruff: noqa: B023  (each probe calls its lambda at once, inside the loop)
from __future__ import annotations

import contextlib
import io
import os
import traceback

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_contract import CASES, METHODS, MODEL_KWARGS, SAMPLE_KWARGS, Case

import ppgen
from ppgen.cli import main

SETTINGS = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
COUNTS = {"tried": 0, "handled": 0}
FAILURES: list[str] = []
# Where an error may not come from: a bare traceback of these libraries is a mishandled input.
_FOREIGN = (f"{os.sep}torch{os.sep}", f"{os.sep}pyro{os.sep}", f"{os.sep}numpy{os.sep}",
            f"{os.sep}arviz{os.sep}")
# Fast cases (the contract suite covers every model's fit; here the validation is shared by
# families, so one of each kind of data is fitted: feature rows, sequences, counts, images
# flat and as images, labels, binary data).
NAMES = ("gmm", "hmm", "lda", "prodlda", "vae", "cvae", "gan", "dcgan", "rbm", "dbm")


def _record(label: str, ok: bool, why: str = "") -> bool:
    COUNTS["tried"] += 1
    if ok:
        COUNTS["handled"] += 1
    else:
        FAILURES.append(f"{label}: {why}")
    return ok


def _deepest_file(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return frames[-1].filename if frames else ""


def probe(label: str, call, arg: str, *, may_succeed: bool = False) -> bool:
    """Run ``call``: handled when it raises ValueError/TypeError from ppgen whose message
    names ``arg`` (or, with ``may_succeed``, returns a result without NaN)."""
    try:
        out = call()
    except (ValueError, TypeError, ppgen.NotFittedError, FileNotFoundError) as exc:
        where = _deepest_file(exc)
        if any(part in where for part in _FOREIGN):
            return _record(label, False, f"{type(exc).__name__} from {where}: {exc}")
        if arg not in str(exc):
            return _record(label, False, f"message does not name {arg!r}: {exc}")
        return _record(label, True)
    except Exception as exc:  # noqa: BLE001 - the point is to catch what leaks
        return _record(label, False, f"{type(exc).__name__} from {_deepest_file(exc)}: "
                       f"{str(exc)[:300]}")
    if not may_succeed:
        return _record(label, False, f"no error (returned {type(out).__name__})")
    if isinstance(out, torch.Tensor) and out.is_floating_point() and torch.isnan(out).any():
        return _record(label, False, "returned NaN instead of an error")
    return _record(label, True)


def _check(before: int) -> None:
    new = FAILURES[before:]
    assert not new, "mishandled inputs:\n" + "\n".join(new)


# ------------------------------------------------------------------ bad data, per model
def bad_data(x: torch.Tensor, row: int, col: int, scale: float):
    """(kind, data, may_succeed) for one drawn position and magnitude exponent."""
    flat_pos = (row % x.shape[0],) + (0,) * (x.dim() - 2) + (col % x.shape[-1],)

    def with_value(v):
        y = x.clone().double()
        y[flat_pos] = v
        return y

    narrow = x[..., :-1]
    wide = torch.cat([x, x[..., :1]], dim=-1)
    yield "nan", with_value(float("nan")), False
    yield "inf", with_value(float("inf")), False
    yield "-inf", with_value(-float("inf")), False
    yield "empty", x[:0], False
    yield "0-d", torch.tensor(1.0), False
    yield "extra dim", x[..., None, None], False
    yield "narrow", narrow, False
    yield "wide", wide, False
    yield "complex", x.to(torch.complex128), False
    yield "object", np.array(x.tolist(), dtype=object), False
    yield "string", x.numpy().astype(str), False
    yield "None", None, False
    yield "ragged list", [[1.0, 2.0], [3.0]], False
    yield "bool", x > 0.5, True
    yield "huge", x.double() * 10.0 ** (300 + scale), True
    yield "tiny", x.double() * 10.0 ** (-300 - scale), True
    yield "huge entry", with_value(10.0 ** (300 + scale)), True
    yield "negative", -x.double() - 1, True


# Data that must be 0/1 (energy models) or counts (topic models): negative values are refused.
_NONNEGATIVE = {"lda", "prodlda", "rbm", "dbn", "dbm", "dbm3"}


@pytest.fixture(scope="module")
def cases():
    return {}


def _case(cases, name):
    if name not in cases:
        cases[name] = Case(name)
    return cases[name]


def _entry_points(case):
    """(name, callable of data and rows) for the applications the model has."""
    model, est = case.model, dict(case.estimate)
    points = []
    if case.caps.log_prob != "none":
        points.append(("log_prob", lambda d, rows: model.log_prob(d, **rows, **est)))
        points.append(("score", lambda d, rows: model.score(d, **rows, **est)))
    points.append(("impute", lambda d, rows: model.impute(d, **rows)))
    return points


def _num_rows(d, default):
    if isinstance(d, list):
        return len(d)
    return len(d) if isinstance(d, torch.Tensor | np.ndarray) and d.ndim > 0 else default


def _rows_for(case, d):
    return case._rows(_num_rows(d, 1))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(row=st.integers(0, 1000), col=st.integers(0, 1000), scale=st.integers(0, 8))
def test_applications_refuse_bad_data(cases, name, row, col, scale):
    before = len(FAILURES)
    case = _case(cases, name)
    for kind, d, may in bad_data(case.data[:12], row, col, scale):
        may = may and not (kind == "negative" and name in _NONNEGATIVE)
        for point, call in _entry_points(case):
            if point == "impute" and kind == "nan":
                continue  # NaN marks what impute fills
            probe(f"{name}.{point}({kind})", lambda: call(d, _rows_for(case, d)), "data",
                  may_succeed=may)
    _check(before)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(row=st.integers(0, 1000), col=st.integers(0, 1000))
def test_fit_refuses_bad_data(name, row, col):
    before = len(FAILURES)
    make_model, make_data = CASES[name]
    method, options = METHODS[name]
    x = make_data()
    kwargs = MODEL_KWARGS.get(name, lambda: {})()
    for kind, d, may in bad_data(x, row, col, 0):
        if may or (kind in ("narrow", "wide") and name in _WIDTH_FROM_DATA):
            continue  # fitting extreme data is item 6 (numerical robustness)
        n = _num_rows(d, len(x))
        rows = {k: v[:n] for k, v in kwargs.items()}
        probe(f"fit {name} {method} ({kind})",
              lambda: ppgen.fit(make_model(), d, method=method, seed=0, progress=False,
                                model_kwargs=rows or None, **options), "data")
    _check(before)


# Models that take their width from the data they are fitted to.
_WIDTH_FROM_DATA = {"gmm", "hmm", "lda", "prodlda", "rbm", "dbn", "dbm", "dbm3"}
BAD_COUNTS = (0, -1, 2.5, "3", True, None, float("nan"))


@pytest.mark.parametrize("name", NAMES)
def test_sample_refuses_bad_counts_and_seeds(cases, name):
    before = len(FAILURES)
    case = _case(cases, name)
    for n in BAD_COUNTS:
        extra = {"labels": torch.full((2,), 3)} if "labels" in SAMPLE_KWARGS.get(name, {}) \
            else dict(SAMPLE_KWARGS.get(name, {}))
        probe(f"{name}.sample({n!r})", lambda: case.model.sample(n, **extra), "num_samples")
    for seed in (-1, 2.5, "0", float("nan")):
        probe(f"{name}.sample(seed={seed!r})", lambda: case.sample(2, seed=seed), "seed")
    if case.estimate:
        for n in (0, -1, 2.5, "3"):
            est = dict(case.estimate, num_samples=n)
            probe(f"{name}.log_prob(num_samples={n!r})",
                  lambda: case.model.log_prob(case.data[:4], **case._rows(4), **est),
                  "num_samples")
    _check(before)


def test_mismatched_lengths_and_labels(cases):
    before = len(FAILURES)
    hmm = _case(cases, "hmm")
    x = hmm.data[:4]
    for lengths in ([20, 20, 20], [20] * 5, [21, 20, 20, 20], [0, 20, 20, 20],
                    [-1, 20, 20, 20], [2.5, 20, 20, 20], "20", [[20, 20, 20, 20]]):
        for point, call in _entry_points(hmm):
            probe(f"hmm.{point}(lengths={lengths!r})",
                  lambda: call(x, {"lengths": lengths}), "lengths")
    for lengths in (0, -1, 2.5, "3", [20, 0]):
        probe(f"hmm.sample(lengths={lengths!r})",
              lambda: hmm.model.sample(2, lengths=lengths), "lengths")
    cvae = _case(cases, "cvae")
    y = cvae.kwargs["labels"]
    for labels in (y[:3], y[:12] + 10, -y[:12] - 1, y[:12] + 0.5, None, y[:12, None, None]):
        for point, call in _entry_points(cvae):
            probe(f"cvae.{point}(labels)", lambda: call(cvae.data[:12], {"labels": labels}),
                  "labels")
    _check(before)


# ------------------------------------------------------------------ hyperparameters
CONSTRUCTORS = {
    "num_components": lambda k: ppgen.GaussianMixture(k),
    "num_states": lambda k: ppgen.HiddenMarkovModel(k),
    "num_topics": lambda k: ppgen.LDA(k),
    "num_hidden": lambda k: ppgen.RBM(k),
    "latent_dim": lambda k: ppgen.VAE(64, latent_dim=k),
}


@SETTINGS
@given(bad=st.one_of(st.integers(-10**6, 0), st.floats(0.01, 100).filter(
    lambda v: v != int(v)), st.sampled_from(["3", True, None, float("nan"), float("inf")])))
def test_constructors_refuse_bad_hyperparameters(bad):
    before = len(FAILURES)
    for arg, make in CONSTRUCTORS.items():
        probe(f"{arg}={bad!r}", lambda: make(bad), arg)
    _check(before)


def test_fit_refuses_bad_options_and_names(old_faithful):
    before = len(FAILURES)
    x = old_faithful[:40]
    gmm = ppgen.GaussianMixture(2)
    for method in ("em", "svi", "mcmc"):
        probe(f"fit {method} bogus option", lambda: ppgen.fit(
            gmm, x, method=method, progress=False, bogus_option=1), "bogus_option")
    for value in (0, -1, 2.5, "3"):
        probe(f"em num_steps={value!r}", lambda: ppgen.fit(
            gmm, x, method="em", progress=False, num_steps=value), "num_steps")
        probe(f"svi num_steps={value!r}", lambda: ppgen.fit(
            gmm, x, method="svi", progress=False, num_steps=value), "num_steps")
        probe(f"mcmc num_samples={value!r}", lambda: ppgen.fit(
            gmm, x, method="mcmc", progress=False, num_samples=value), "num_samples")
    for value in (-1.0, float("nan"), "0.1"):
        probe(f"em tol={value!r}", lambda: ppgen.fit(
            gmm, x, method="em", progress=False, tol=value), "tol")
        for name in ("lr", "lr_decay"):
            probe(f"svi {name}={value!r}", lambda: ppgen.fit(
                gmm, x, method="svi", progress=False, num_steps=2, **{name: value}), name)
    probe("method='bogus'", lambda: ppgen.fit(gmm, x, method="bogus"), "method")
    probe("seed='x'", lambda: ppgen.fit(gmm, x, method="em", seed="x", progress=False), "seed")
    probe("init=[1]", lambda: ppgen.fit(gmm, x, method="em", init=[1], progress=False), "init")
    probe("model_kwargs=[1]", lambda: ppgen.fit(gmm, x, method="em", model_kwargs=[1],
                                                progress=False), "model_kwargs")
    probe("init bogus name", lambda: ppgen.fit(gmm, x, method="em", init={"bogus": 1},
                                               progress=False), "init")
    probe("GaussianMixture(bogus=1)", lambda: ppgen.GaussianMixture(2, bogus=1), "bogus")
    probe("covariance='bogus'", lambda: ppgen.GaussianMixture(2, covariance="bogus"),
          "covariance")
    probe("emission='bogus'", lambda: ppgen.HiddenMarkovModel(2, emission="bogus"),
          "emission")
    _check(before)


# ------------------------------------------------------------------ save / load
def test_save_and_load_refuse_bad_paths_and_files(cases, tmp_path):
    before = len(FAILURES)
    model = _case(cases, "gmm").model
    probe("save(non-model)", lambda: ppgen.save("gmm", tmp_path / "a.pt"), "model")
    probe("save(path=None)", lambda: ppgen.save(model, None), "path")
    probe("save(path=3.5)", lambda: ppgen.save(model, 3.5), "path")
    probe("save(unfitted)", lambda: ppgen.save(ppgen.GaussianMixture(2), tmp_path / "u.pt"),
          "not fitted")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "junk.pt").write_bytes(os.urandom(64))
    (tmp_path / "array.pt").write_bytes(b"")
    torch.save({"weights": torch.ones(2)}, tmp_path / "array.pt")
    for name in ("missing.pt", "empty.pt", "text.pt", "junk.pt", "array.pt", ""):
        probe(f"load({name!r})", lambda: ppgen.load(tmp_path / name if name else name),
              "path")
    probe("load(None)", lambda: ppgen.load(None), "path")
    left = sorted(p.name for p in tmp_path.iterdir())
    _record("no file left half-written", left == ["array.pt", "empty.pt", "junk.pt",
                                                   "text.pt"], f"files: {left}")
    _check(before)


# ------------------------------------------------------------------ the CLI
def run(argv):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code
    return rc, err.getvalue()


def cli_probe(label, argv, fragment):
    try:
        rc, err = run(argv)
    except Exception as exc:  # noqa: BLE001
        return _record(label, False, f"{type(exc).__name__}: {str(exc)[:300]}")
    first = err.splitlines()[0] if err else ""
    ok = rc == 2 and first.startswith("ppgen: error:") and fragment in first
    return _record(label, ok, f"rc={rc} stderr={err[-400:]!r}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc, err = run(["fit", "gmm", "--out", out, "--seed", "0", "--num-steps", "5"])
    assert rc == 0, err
    return out


def test_cli_refuses_bad_input(run_dir, tmp_path):
    before = len(FAILURES)
    files = {}
    good = np.random.default_rng(0).normal(size=(10, 2))
    for kind, arr in (("nan", np.where(np.eye(10, 2) > 0, np.nan, good)),
                      ("inf", np.where(np.eye(10, 2) > 0, np.inf, good)),
                      ("empty", good[:0]), ("wide", np.hstack([good, good])),
                      ("1-d", good[:, 0]), ("3-d", good[:, :, None]),
                      ("complex", good.astype(complex)), ("string", good.astype(str)),
                      ("object", good.astype(object))):
        files[kind] = tmp_path / f"{kind}.npy"
        np.save(files[kind], arr, allow_pickle=True)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "text.csv").write_text("a,b\nx,y\n")
    files["empty csv"], files["text csv"] = tmp_path / "empty.csv", tmp_path / "text.csv"
    out = tmp_path / "out"
    for kind, path in files.items():
        if kind not in ("wide", "1-d"):  # new data of another width (or one column) fit
            cli_probe(f"fit gmm --data {kind}", ["fit", "gmm", "--data", path, "--out", out,
                                                "--num-steps", "2"], path.name)
        cli_probe(f"score {kind}", ["score", run_dir, path], path.name)
    for value in ("0", "-1", "2.5", "abc"):
        cli_probe(f"--num-components {value}", ["fit", "gmm", "--num-components", value,
                                                "--out", out], "--num-components")
        cli_probe(f"sample -n {value}", ["sample", run_dir, "-n", value], "-n")
        cli_probe(f"hmm --num-states {value}", ["fit", "hmm", "--num-states", value,
                                                "--out", out], "--num-states")
        cli_probe(f"lda --num-topics {value}", ["fit", "lda", "--num-topics", value,
                                                "--out", out], "--num-topics")
    cli_probe("fit gmm --bogus", ["fit", "gmm", "--bogus", "1"], "--bogus")
    cli_probe("fit bogus-model", ["fit", "bogus"], "bogus")
    cli_probe("sample missing dir", ["sample", tmp_path / "missing", "-n", "2"], "missing")
    cli_probe("score missing file", ["score", run_dir, tmp_path / "missing.npy"],
              "missing")
    cli_probe("fit gmm --data missing", ["fit", "gmm", "--data", tmp_path / "missing.npy",
                                         "--out", out], "missing")
    _record("no output directory from failed fits", not out.exists(),
            f"{out} holds {sorted(p.name for p in out.iterdir()) if out.exists() else []}")
    _check(before)


def test_zz_counts():
    """The summary: how many inputs were tried and how many were handled (printed, -s)."""
    print(f"\nbad-input suite: {COUNTS['tried']} inputs tried, {COUNTS['handled']} handled"
          f" correctly, {len(FAILURES)} mishandled")
    assert COUNTS["tried"] > 0
    assert COUNTS["handled"] == COUNTS["tried"], "\n".join(FAILURES)
