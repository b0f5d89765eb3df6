"""The ``ppgen`` command, run in-process through ``ppgen.cli.main`` (one subprocess test)."""

import matplotlib

matplotlib.use("Agg")

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import ppgen  # noqa: E402
from ppgen.cli import main  # noqa: E402

ML_LOG_LIKELIHOOD = "-1130.26"  # the maximum-likelihood value for K=2, full, Old Faithful
FIT_FILES = ("report.md", "mixture.png", "history.png", "model.pt", "inference_data.nc",
             "run.json")


def run(argv):
    """main(argv) with stdout and stderr captured: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def assert_user_error(result, *fragments):
    rc, out, err = result
    assert rc == 2, (rc, out, err)
    assert err.startswith("ppgen: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def em_run(tmp_path_factory):
    """``ppgen fit gmm`` with EM on Old Faithful, run once for the module."""
    out_dir = tmp_path_factory.mktemp("runs") / "demo"
    result = run(["fit", "gmm", "--data", "old-faithful", "--method", "em",
                  "--num-components", "2", "--out", out_dir])
    return out_dir, result


# ----------------------------------------------------------------------------- fit em
def test_fit_em_writes_every_file(em_run):
    out_dir, (rc, out, err) = em_run
    assert rc == 0, err
    for name in FIT_FILES:
        assert (out_dir / name).is_file(), name
        assert (out_dir / name).stat().st_size > 0
    assert not (out_dir / "trace.png").exists()
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    for png in ("mixture.png", "history.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_em_prints_and_reports_results(em_run):
    out_dir, (rc, out, err) = em_run
    report = (out_dir / "report.md").read_text()
    for text in (out, report):
        assert ML_LOG_LIKELIHOOD in text
        assert "-4.155" in text  # per datum
        for word in ("weight", "mean eruptions", "mean waiting", "Covariances", "BIC", "AIC",
                     "converged", "Diagnostics"):
            assert word in text, word
    gmm = ppgen.load(out_dir / "model.pt")
    x = ppgen.datasets.load_old_faithful()
    assert f"{gmm.bic(x):.3f}" in out and f"{gmm.aic(x):.3f}" in out
    assert "none: no warnings" in out
    # The markdown report has the command line and links to the figures.
    assert "ppgen fit gmm --data old-faithful --method em --num-components 2" in report
    assert "(mixture.png)" in report and "(history.png)" in report
    assert report.startswith("# ")


def test_fit_em_model_and_inference_data_round_trip(em_run):
    import arviz as az

    out_dir, _ = em_run
    gmm = ppgen.load(out_dir / "model.pt")
    x = ppgen.datasets.load_old_faithful()
    assert float(gmm.log_prob(x).sum()) == pytest.approx(-1130.264, abs=1e-3)
    idata = az.from_netcdf(out_dir / "inference_data.nc")
    assert "posterior" in idata.groups() and "log_likelihood" in idata.groups()
    assert float(idata.log_likelihood["obs"].sum()) == pytest.approx(-1130.264, abs=1e-3)
    info = json.loads((out_dir / "run.json").read_text())
    assert info["columns"] == ["eruptions", "waiting"]
    assert info["method"] == "em" and info["seed"] == 0


def test_fit_files_have_ordinary_permissions(em_run):
    out_dir, _ = em_run
    mask = os.umask(0)
    os.umask(mask)
    mode = (out_dir / "report.md").stat().st_mode & 0o777
    assert mode == 0o666 & ~mask


# ----------------------------------------------------------------------- sample, score
def test_sample_stdout_and_file(em_run, tmp_path):
    out_dir, _ = em_run
    rc, out, err = run(["sample", out_dir, "-n", 5, "--seed", 1])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "eruptions,waiting"
    assert len(lines) == 6
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    expected = ppgen.load(out_dir / "model.pt").sample(5, seed=1).numpy()
    np.testing.assert_allclose(rows, expected, rtol=1e-15)
    # Same seed, same rows; --out writes the same text to a file.
    target = tmp_path / "draws.csv"
    rc, out2, _ = run(["sample", out_dir, "-n", 5, "--seed", 1, "--out", target])
    assert rc == 0 and out2 == ""
    assert target.read_text() == out
    rc, out3, _ = run(["sample", out_dir / "model.pt", "-n", 2, "--no-header"])
    assert rc == 0 and len(out3.strip().splitlines()) == 2


def test_sample_then_score_round_trip(em_run, tmp_path):
    out_dir, _ = em_run
    draws = tmp_path / "draws.csv"
    assert run(["sample", out_dir, "-n", 20, "--seed", 3, "--out", draws])[0] == 0
    rc, out, err = run(["score", out_dir, draws])
    assert rc == 0, err
    scores = np.array([float(v) for v in out.split()])
    assert scores.shape == (20,)
    gmm = ppgen.load(out_dir / "model.pt")
    expected = -gmm.log_prob(gmm.sample(20, seed=3)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)


def test_score_npy_headerless_csv_and_out_file(em_run, tmp_path):
    out_dir, _ = em_run
    x = ppgen.datasets.load_old_faithful().numpy()[:7]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.csv").write_text("\n".join(f"{a},{b}" for a, b in x) + "\n")
    gmm = ppgen.load(out_dir / "model.pt")
    expected = gmm.score(x).numpy()
    for name in ("x.npy", "x.csv"):
        rc, out, err = run(["score", out_dir, tmp_path / name])
        assert rc == 0, err
        np.testing.assert_allclose([float(v) for v in out.split()], expected, rtol=1e-12)
    rc, out, _ = run(["score", out_dir, tmp_path / "x.npy", "--out", tmp_path / "s.csv"])
    assert rc == 0 and out == ""
    # --out writes a CSV file with a header row, which pandas reads as such
    import pandas as pd

    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == ["score"]
    np.testing.assert_allclose(table["score"].to_numpy(), expected, rtol=1e-12)
    rc, _, _ = run(["score", out_dir, tmp_path / "x.npy", "--out", tmp_path / "s2.csv",
                    "--no-header"])
    assert rc == 0 and len((tmp_path / "s2.csv").read_text().splitlines()) == 7
    # An outlier scores higher than every typical row.
    np.save(tmp_path / "odd.npy", np.array([[10.0, 10.0]]))
    rc, out, _ = run(["score", out_dir, tmp_path / "odd.npy"])
    assert float(out) > expected.max()


# ----------------------------------------------------------------- other fits, formats
def test_fit_csv_with_header_diag(tmp_path):
    g = np.random.default_rng(0)
    x = np.concatenate([g.normal(0, 1, (40, 3)), g.normal(6, 1, (40, 3))])
    data = tmp_path / "points.csv"
    data.write_text("alpha,beta,gamma\n" + "\n".join(",".join(map(str, r)) for r in x))
    out_dir = tmp_path / "run"
    rc, out, err = run(["fit", "gmm", "--data", data, "--covariance", "diag",
                        "--num-components", "3", "--seed", 5, "--out", out_dir])
    assert rc == 0, err
    assert "mean alpha" in out and "var gamma" in out
    assert "80 rows x 3 columns (alpha, beta, gamma)" in out
    gmm = ppgen.load(out_dir / "model.pt")
    assert gmm.covariance == "diag" and gmm.num_components == 3
    total = float(gmm.log_prob(torch.as_tensor(x)).sum())
    assert f"{total:.3f}" in out
    assert json.loads((out_dir / "run.json").read_text())["columns"] == ["alpha", "beta",
                                                                          "gamma"]


def test_fit_npy_quiet(tmp_path):
    x = ppgen.datasets.load_old_faithful().numpy()
    np.save(tmp_path / "x.npy", x)
    out_dir = tmp_path / "q"
    rc, out, err = run(["fit", "gmm", "--data", tmp_path / "x.npy", "--covariance",
                        "spherical", "--quiet", "--out", out_dir])
    assert rc == 0, err
    assert out == ""
    assert all((out_dir / name).is_file() for name in FIT_FILES)
    assert "spherical" in (out_dir / "report.md").read_text()


def test_fit_svi(tmp_path):
    out_dir = tmp_path / "svi"
    rc, out, err = run(["fit", "gmm", "--method", "svi", "--num-steps", 30, "--out", out_dir])
    assert rc == 0, err
    assert "after 30 SVI steps" in out
    assert (out_dir / "history.png").is_file()
    assert "[not_converged]" in out  # 30 steps are too few: reported as a diagnostic
    assert "ConvergenceWarning" not in err  # ... once, not also as a Python warning
    report = (out_dir / "report.md").read_text()
    assert "method svi" in report and "not_converged" in report


def test_fit_mcmc_writes_trace_and_netcdf(tmp_path):
    import arviz as az

    out_dir = tmp_path / "mcmc"
    rc, out, err = run(["fit", "gmm", "--method", "mcmc", "--num-samples", 20,
                        "--num-chains", 2, "--num-warmup", 10, "--max-tree-depth", 3,
                        "--out", out_dir])
    assert rc == 0, err
    assert (out_dir / "trace.png").is_file()
    assert not (out_dir / "history.png").exists()
    idata = az.from_netcdf(out_dir / "inference_data.nc")
    assert idata.posterior.sizes["chain"] == 2
    assert idata.posterior.sizes["draw"] == 20
    assert "sample_stats" in idata.groups()
    assert "Posterior summary" in out and "r_hat" in out
    assert "log-likelihood at the posterior mean" in out
    report = (out_dir / "report.md").read_text()
    assert "(trace.png)" in report and "posterior means" in report
    info = json.loads((out_dir / "run.json").read_text())
    assert info["options"] == {"num_samples": 20, "num_warmup": 10, "num_chains": 2,
                               "max_tree_depth": 3}


# ------------------------------------------------------------------------------ errors
def test_error_missing_data_file(tmp_path):
    out_dir = tmp_path / "out"
    result = run(["fit", "gmm", "--data", tmp_path / "nope.csv", "--out", out_dir])
    assert_user_error(result, "nope.csv", "no such file")
    assert not out_dir.exists()


def test_error_unknown_data_name(tmp_path):
    result = run(["fit", "gmm", "--data", "old-faithfull", "--out", tmp_path / "o"])
    assert_user_error(result, "'old-faithful'", "'old-faithfull'")


def test_error_csv_with_text_column(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("id,eruptions,waiting\nA,3.6,79\nB,1.8,54\n")
    out_dir = tmp_path / "out"
    result = run(["fit", "gmm", "--data", data, "--out", out_dir])
    assert_user_error(result, "bad.csv", "line 2", "column 1 ('id')", "'A'", "text columns")
    assert not out_dir.exists()


@pytest.mark.parametrize("content, fragment", [
    ("1,2\n3\n", "expected 2 comma-separated values"),
    ("", "empty file"),
    ("a,b\n", "no"),
])
def test_error_malformed_csv(tmp_path, content, fragment):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    assert_user_error(run(["fit", "gmm", "--data", data, "--out", tmp_path / "o"]), fragment)


def test_error_bad_npy(tmp_path):
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    assert_user_error(run(["fit", "gmm", "--data", tmp_path / "text.npy",
                           "--out", tmp_path / "o"]), "numeric")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_user_error(run(["fit", "gmm", "--data", tmp_path / "obj.npy",
                           "--out", tmp_path / "o"]), "objects")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert_user_error(run(["fit", "gmm", "--data", tmp_path / "junk.npy",
                           "--out", tmp_path / "o"]), "junk.npy")


def test_error_missing_values_and_fit_failure_write_nothing(tmp_path):
    data = tmp_path / "gaps.csv"
    data.write_text("a,b\n1,2\n,3\n4,5\n")
    out_dir = tmp_path / "out"
    assert_user_error(run(["fit", "gmm", "--data", data, "--out", out_dir]),
                      "gaps.csv, line 3, column 1 ('a')", "missing value")
    x = np.ones((3, 2))
    x[2, 1] = np.inf
    np.save(tmp_path / "inf.npy", x)
    assert_user_error(run(["fit", "gmm", "--data", tmp_path / "inf.npy", "--out", out_dir]),
                      "row 2 (0-based), column 2", "infinite")
    # More components than rows: the fit fails, and no directory appears.
    assert_user_error(run(["fit", "gmm", "--num-components", 500, "--out", out_dir]),
                      "num_components")
    assert not out_dir.exists()


def test_error_corrupt_model_file(em_run, tmp_path):
    out_dir, _ = em_run
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"this is not a model")
    assert_user_error(run(["sample", bad, "-n", 3]), "model.pt", "corrupt")
    assert_user_error(run(["score", bad, "old-faithful"]), "model.pt")
    # A valid torch file of another format.
    torch.save({"hello": torch.zeros(2)}, bad / "model.pt")
    assert_user_error(run(["sample", bad, "-n", 3]), "model.pt")


def test_error_missing_run_dir_and_model(tmp_path):
    assert_user_error(run(["sample", tmp_path / "nowhere", "-n", 3]), "nowhere",
                      "does not exist")
    assert_user_error(run(["score", tmp_path, "old-faithful"]), "no model.pt")


def test_error_score_wrong_columns(em_run, tmp_path):
    out_dir, _ = em_run
    np.save(tmp_path / "three.npy", np.zeros((4, 3)))
    assert_user_error(run(["score", out_dir, tmp_path / "three.npy"]), "expected 2 columns")
    assert_user_error(run(["score", out_dir, tmp_path / "missing.csv"]), "missing.csv")


@pytest.mark.parametrize("argv, fragment", [
    (["fit", "gmm", "--method", "nuts"], "invalid choice"),
    (["fit", "gmm", "--num-components", "0"], "positive integer"),
    (["fit", "gmm", "--num-samples", "10"], "--method mcmc"),
    (["fit", "gmm", "--method", "mcmc", "--num-steps", "10"], "--num-steps"),
    (["fit", "gmm", "--method", "mcmc", "--target-accept-prob", "1.5"], "(0, 1)"),
    (["sample", "somewhere"], "-n"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_usage_errors(argv, fragment, tmp_path):
    result = run([*argv, "--out", tmp_path / "o"] if argv[:2] == ["fit", "gmm"] else argv)
    assert_user_error(result, fragment)
    assert not (tmp_path / "o").exists()


def test_error_device_unavailable(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_user_error(run(["fit", "gmm", "--device", "cuda", "--out", tmp_path / "o"]),
                      "CUDA")
    assert not (tmp_path / "o").exists()


def test_error_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert_user_error(run(["fit", "gmm", "--out", target]), "--out")
    assert target.read_text() == "keep me"


def test_help_and_version():
    rc, out, _ = run(["--help"])
    assert rc == 0 and "fit" in out and "sample" in out and "score" in out
    rc, out, _ = run(["fit", "gmm", "--help"])
    assert rc == 0 and "--num-components" in out and "old-faithful" in out
    rc, out, _ = run(["--version"])
    assert rc == 0 and ppgen.__version__ in out


def test_console_script_and_python_m():
    commands = [[sys.executable, "-m", "ppgen", "--help"]]
    script = Path(sys.executable).parent / "ppgen"
    if script.exists():
        commands.append([str(script), "--help"])
    env = dict(os.environ, MPLBACKEND="Agg")
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("usage: ppgen"), proc.stdout
    proc = subprocess.run([sys.executable, "-m", "ppgen", "sample", "/nonexistent/dir", "-n",
                           "2"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("ppgen: error:") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- fit hmm
HMM_FILES = ("report.md", "state_posterior.png", "transition_matrix.png", "history.png",
             "model.pt", "inference_data.nc", "run.json")


def _write_sequences(path, num_sequences=30, num_steps=40, seed=0):
    """Padded Gaussian sequences of different lengths from ppgen.datasets.make_hmm, as .npz."""
    seqs, truth = ppgen.datasets.make_hmm(num_sequences, num_steps, num_states=3,
                                          num_features=2, min_length=num_steps // 2, seed=seed)
    x = np.zeros((num_sequences, num_steps, 2))
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s.numpy()
    lengths = truth["lengths"].numpy()
    np.savez(path, x=x, lengths=lengths)
    return x, lengths


def _report_value(report, quantity):
    """The value cell of a row of the report's markdown 'Fit' table."""
    for line in report.splitlines():
        if line.startswith(f"| {quantity} |"):
            return line.split("|")[2].strip()
    raise AssertionError(f"no row {quantity!r} in the report")


@pytest.fixture(scope="module")
def hmm_run(tmp_path_factory):
    """``ppgen fit hmm`` with EM on synthetic .npz sequences, run once for the module."""
    base = tmp_path_factory.mktemp("hmm")
    x, lengths = _write_sequences(base / "seqs.npz")
    out_dir = base / "run"
    result = run(["fit", "hmm", "--data", base / "seqs.npz", "--num-states", 3,
                  "--covariance", "full", "--num-restarts", 2, "--out", out_dir])
    return out_dir, x, lengths, result


@pytest.fixture(scope="module")
def jsb_run(tmp_path_factory):
    """``ppgen fit hmm`` on the JSB chorales with few states and steps."""
    out_dir = tmp_path_factory.mktemp("jsb") / "run"
    result = run(["fit", "hmm", "--data", "jsb-chorales", "--num-states", 3, "--num-steps", 8,
                  "--out", out_dir])
    return out_dir, result


def test_fit_hmm_file_writes_every_file(hmm_run):
    out_dir, _, _, (rc, out, err) = hmm_run
    assert rc == 0, err
    for name in HMM_FILES:
        assert (out_dir / name).is_file(), name
        assert (out_dir / name).stat().st_size > 0
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    for png in ("state_posterior.png", "transition_matrix.png", "history.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_hmm_file_report_numbers(hmm_run):
    import arviz as az

    out_dir, x, lengths, (rc, out, err) = hmm_run
    report = (out_dir / "report.md").read_text()
    hmm = ppgen.load(out_dir / "model.pt")
    assert isinstance(hmm, ppgen.HiddenMarkovModel)
    assert hmm.num_states == 3 and hmm.emission == "gaussian" and hmm.covariance == "full"
    xt, lt = torch.as_tensor(x), torch.as_tensor(lengths)
    total = float(hmm.log_prob(xt, lt).sum())
    frames = int(lengths.sum())
    assert _report_value(report, "log-likelihood (train)") == (
        f"{total:.3f} nats (total over {frames} frames)")
    assert _report_value(report, "NLL per frame (train)") == f"{-total / frames:.4f} nats"
    assert _report_value(report, "BIC") == f"{hmm.bic(xt, lt):.3f} (lower is better)"
    assert "NLL per frame (test)" not in report  # a file has no held-out split
    assert "EM iterations" in _report_value(report, "convergence")
    assert _report_value(report, "elapsed").endswith(" s")
    info = json.loads((out_dir / "run.json").read_text())
    assert _report_value(report, "elapsed") == f"{info['elapsed']:.2f} s"
    assert f"30 sequences, {frames} frames" in report
    assert "| state | initial | stay |" in report and "mean x0" in report
    for text in (out, report):
        assert f"{total:.3f}" in text
    # The figures are embedded, the command recorded.
    assert "![state posterior](state_posterior.png)" in report
    assert "![transition matrix](transition_matrix.png)" in report
    assert "ppgen fit hmm --data" in report and report.startswith("# ppgen fit hmm: 3 states")
    assert info["model"] == "hmm" and info["emission"] == "gaussian"
    assert info["options"] == {"num_restarts": 2}
    assert info["log_likelihood"] == pytest.approx(total, rel=1e-12)
    assert info["columns"] == ["x0", "x1"] and info["test_nll_per_frame"] is None
    idata = az.from_netcdf(out_dir / "inference_data.nc")
    assert float(idata.log_likelihood["obs"].sum()) == pytest.approx(total, rel=1e-9)


def test_fit_hmm_jsb_chorales_reports_held_out(jsb_run):
    out_dir, (rc, out, err) = jsb_run
    assert rc == 0, err
    assert all((out_dir / name).is_file() for name in HMM_FILES)
    report = (out_dir / "report.md").read_text()
    hmm = ppgen.load(out_dir / "model.pt")
    assert hmm.emission == "bernoulli" and hmm.emission_concentration == 2.0
    results = {}
    for split in ("train", "test"):
        x, lengths = ppgen.datasets.load_jsb_chorales(split, dtype=torch.float64)
        total = float(hmm.log_prob(x, lengths).sum())
        results[split] = (total, int(lengths.sum()))
        assert np.isfinite(total)
    total, frames = results["train"]
    assert _report_value(report, "log-likelihood (train)") == (
        f"{total:.3f} nats (total over {frames} frames)")
    assert _report_value(report, "NLL per frame (train)") == f"{-total / frames:.4f} nats"
    test_total, test_frames = results["test"]
    assert _report_value(report, "NLL per frame (test)") == (
        f"{-test_total / test_frames:.4f} nats (log-likelihood {test_total:.3f} over "
        f"{test_frames} frames)")
    assert "229 sequences, 13807 frames" in report and "77 sequences" in report
    convergence = _report_value(report, "convergence")
    assert convergence in ("NOT converged after 8 EM iterations",
                           *(f"converged after {i} EM iterations" for i in range(1, 8)))
    if convergence.startswith("NOT"):
        assert "not_converged" in report  # reported once, as a diagnostic
    assert "log-likelihood + log prior" in report  # emission concentration 2
    info = json.loads((out_dir / "run.json").read_text())
    assert info["test_nll_per_frame"] == pytest.approx(-test_total / test_frames, rel=1e-12)
    # piano keys numbered as in the figures ("piano key (0 = A0)"), not MIDI pitches
    assert len(info["columns"]) == 88 and info["columns"][0] == "key0"
    assert "key0 = A0, MIDI pitch = key + 21" in report


def test_fit_hmm_categorical_npy_svi_quiet(tmp_path):
    x, _ = ppgen.datasets.make_hmm(8, 15, num_states=2, emission="categorical", num_symbols=3,
                                   seed=2)
    np.save(tmp_path / "symbols.npy", x.numpy())
    out_dir = tmp_path / "svi"
    rc, out, err = run(["fit", "hmm", "--data", tmp_path / "symbols.npy", "--emission",
                        "categorical", "--num-states", 2, "--method", "svi", "--num-steps", 15,
                        "--quiet", "--out", out_dir])
    assert rc == 0, err
    assert out == ""
    report = (out_dir / "report.md").read_text()
    assert "after 15 SVI steps" in report and "final SVI loss" in report
    assert "most probable symbols" in report
    hmm = ppgen.load(out_dir / "model.pt")
    total = float(hmm.log_prob(x).sum())
    assert f"{total:.3f} nats (total over 120 frames)" in report
    # Sampling symbols: CSV with sequence, step and symbol columns.
    rc, out, err = run(["sample", out_dir, "-n", 2, "--length", 3, "--seed", 0])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "sequence,step,symbol" and len(lines) == 7
    expected = hmm.sample(2, lengths=3, seed=0).numpy()
    assert [int(line.split(",")[2]) for line in lines[1:]] == expected.reshape(-1).tolist()


def test_sample_and_score_hmm_round_trip(hmm_run, tmp_path):
    out_dir, x, lengths, _ = hmm_run
    hmm = ppgen.load(out_dir / "model.pt")
    rc, out, err = run(["sample", out_dir, "-n", 2, "--length", 4, "--seed", 7])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "sequence,step,x0,x1" and len(lines) == 1 + 2 * 4
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(rows[:, :2], [[i, t] for i in range(2) for t in range(4)])
    expected = hmm.sample(2, lengths=4, seed=7).numpy()
    np.testing.assert_allclose(rows[:, 2:], expected.reshape(-1, 2), rtol=1e-15)
    # .npz out: reads back with 'ppgen score' (and as --data of 'ppgen fit hmm').
    draws = tmp_path / "draws.npz"
    assert run(["sample", out_dir, "-n", 5, "--length", 12, "--seed", 1, "--out", draws])[0] == 0
    with np.load(draws) as f:
        np.testing.assert_allclose(f["x"], hmm.sample(5, lengths=12, seed=1).numpy())
        assert f["lengths"].tolist() == [12] * 5
    rc, out, err = run(["score", out_dir, draws])
    assert rc == 0, err
    scores = np.array([float(v) for v in out.split()])
    expected = -hmm.log_prob(hmm.sample(5, lengths=12, seed=1)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    # The training file: one score per sequence, padding ignored.
    rc, out, err = run(["score", out_dir, out_dir.parent / "seqs.npz"])
    assert rc == 0, err
    scores = np.array([float(v) for v in out.split()])
    np.testing.assert_allclose(scores, hmm.score(torch.as_tensor(x), torch.as_tensor(lengths)),
                               rtol=1e-12)


def test_score_hmm_jsb_test_split(jsb_run):
    out_dir, _ = jsb_run
    rc, out, err = run(["score", out_dir, "jsb-chorales"])
    assert rc == 0, err
    scores = np.array([float(v) for v in out.split()])
    assert scores.shape == (77,)
    hmm = ppgen.load(out_dir / "model.pt")
    x, lengths = ppgen.datasets.load_jsb_chorales("test", dtype=torch.float64)
    np.testing.assert_allclose(scores, hmm.score(x, lengths).numpy(), rtol=1e-12)


def test_sample_score_errors_for_hmm_and_gmm(hmm_run, em_run, tmp_path):
    hmm_dir = hmm_run[0]
    gmm_dir, _ = em_run
    assert_user_error(run(["sample", hmm_dir, "-n", 2]), "--length", "required")
    assert_user_error(run(["sample", gmm_dir, "-n", 2, "--length", 5]), "--length",
                      "GaussianMixture")
    assert_user_error(run(["sample", gmm_dir, "-n", 2, "--out", tmp_path / "a.npz"]),
                      "--out", ".csv")
    np.save(tmp_path / "three.npy", np.zeros((2, 5, 3)))
    assert_user_error(run(["score", hmm_dir, tmp_path / "three.npy"]),
                      "expected 2 features per step", "got 3")
    assert_user_error(run(["score", hmm_dir, tmp_path / "missing.npz"]), "missing.npz",
                      "no such file")


def test_not_supported_error_is_one_clean_line(hmm_run, tmp_path, monkeypatch):
    """A model's NotSupportedError, raised anywhere in a command, is one 'ppgen: error:' line
    (also under PPGEN_DEBUG, and not re-worded by the handlers of other ValueErrors)."""
    from ppgen._validation import NotSupportedError, not_supported

    def refuse(what, instead):
        def method(self, *args, **kwargs):
            raise not_supported(self, what, instead)
        return method

    monkeypatch.setenv("PPGEN_DEBUG", "1")
    monkeypatch.setattr(ppgen.GaussianMixture, "bic", refuse("BIC", "compare held-out "
                                                             "log-likelihoods instead"))
    out_dir = tmp_path / "o"
    rc, out, err = result = run(["fit", "gmm", "--num-steps", 5, "--out", out_dir])
    assert_user_error(result)
    assert err == ("ppgen: error: GaussianMixture does not support BIC; compare held-out "
                   "log-likelihoods instead.\n")
    assert not out_dir.exists()
    assert issubclass(NotSupportedError, ValueError)
    # 'ppgen score' turns an HMM's ValueError into '<file>: <message>'; not this one.
    monkeypatch.setattr(ppgen.HiddenMarkovModel, "score", refuse("scoring", "use log_prob"))
    rc, out, err = result = run(["score", hmm_run[0], hmm_run[0].parent / "seqs.npz"])
    assert_user_error(result)
    assert err == "ppgen: error: HiddenMarkovModel does not support scoring; use log_prob.\n"


def test_a_registered_fit_command_gets_the_shared_skeleton(tmp_path, monkeypatch):
    """A family declares its hooks only; parser, fit, report and run directory are shared."""
    from ppgen.cli import FIT_COMMANDS, Figure, FitCommand, load_table

    class ToyFit(FitCommand):
        name = "toy"
        help = "a toy family"
        data_default = "old-faithful"
        data_help = "a table"

        def add_arguments(self, parser):
            parser.add_argument("--method", default="em")

        def load_data(self, args):
            return load_table(args.data)

        def build_model(self, args, data):
            return ppgen.GaussianMixture(2)

        def fit_inputs(self, args, data):
            return torch.as_tensor(data.values), {}

        def figures(self, run):
            from ppgen import plots

            return [Figure("history.png", plots.plot_history(run.fit), "the objective")]

        def run_info(self, run):
            return {"rows": len(run.data.values)}

    monkeypatch.setitem(FIT_COMMANDS, "toy", ToyFit())
    rc, out, _ = run(["fit", "--help"])
    assert rc == 0 and "a toy family" in out
    out_dir = tmp_path / "toy"
    rc, out, err = run(["fit", "toy", "--seed", 1, "--out", out_dir])
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "history.png", "inference_data.nc", "model.pt", "report.md", "run.json"]
    info = json.loads((out_dir / "run.json").read_text())
    assert info["model"] == "toy" and info["method"] == "em" and info["rows"] == 272
    assert list(info)[-1] == "ppgen_version"
    report = (out_dir / "report.md").read_text()
    assert report.startswith("# ppgen fit toy: method em")
    assert "- seed 1, device cpu" in report and "## Diagnostics" in report
    assert "- [history.png](history.png): the objective" in report
    assert isinstance(ppgen.load(out_dir / "model.pt"), ppgen.GaussianMixture)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    (base / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (base / "text.npz").write_text("hello")
    np.savez(base / "no_x.npz", y=np.zeros((2, 3)))
    np.savez(base / "long.npz", x=np.zeros((2, 3, 1)), lengths=np.array([3, 5]))
    np.savez(base / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    gaps = np.zeros((2, 4, 2))
    gaps[1, 2, 0] = np.nan
    np.savez(base / "nan.npz", x=gaps)
    gaps[1, 2, 0] = 0.0
    gaps[1, 3, 1] = np.nan  # past the length of sequence 1: ignored
    np.savez(base / "nan_in_padding.npz", x=gaps, lengths=np.array([4, 3]))
    np.save(base / "halves.npy", np.full((2, 3, 2), 0.5))
    np.save(base / "vectors.npy", np.zeros((2, 3, 4)))
    (base / "table.csv").write_text("1,2\n")
    return base


@pytest.mark.parametrize("argv, fragments", [
    (["--num-states", "0"], ["--num-states", "positive integer"]),
    (["--emission", "gamma"], ["--emission", "invalid choice", "'gamma'"]),
    (["--method", "mcmc"], ["--method", "invalid choice"]),
    (["--tol", "-1"], ["--tol", ">= 0"]),
    (["--data", "{base}/missing.npz"], ["--data", "missing.npz", "no such file"]),
    (["--data", "jsb-choral"], ["--data", "'jsb-chorales'", "'jsb-choral'"]),
    (["--data", "{base}/corrupt.npz"], ["--data", "corrupt.npz", "np.savez",
                                        "cannot read"]),
    (["--data", "{base}/text.npz"], ["--data", "text.npz", "another format"]),
    (["--data", "{base}/no_x.npz"], ["--data", "no_x.npz", "named 'x'", "'y'"]),
    (["--data", "{base}/long.npz"], ["--data", "long.npz", "lengths[1] = 5"]),
    (["--data", "{base}/objects.npz"], ["--data", "objects.npz", "objects"]),
    (["--data", "{base}/nan.npz"], ["--data", "nan.npz", "sequence 1, step 2",
                                    "finite"]),
    (["--data", "{base}/halves.npy", "--emission", "bernoulli"],
     ["--data", "halves.npy", "bits (0 or 1) for --emission bernoulli", "0.5"]),
    (["--data", "{base}/vectors.npy", "--emission", "categorical"],
     ["--data", "vectors.npy", "(sequences, steps)", "--emission categorical"]),
    (["--data", "{base}/table.csv"], ["--data", "table.csv", ".npz"]),
    (["--emission", "categorical"], ["--data jsb-chorales", "--emission categorical"]),
    (["--data", "{base}/halves.npy", "--covariance", "full", "--emission", "poisson"],
     ["--covariance", "gaussian"]),
    (["--data", "{base}/halves.npy", "--emission-concentration", "3"],
     ["--emission-concentration", "bernoulli and categorical"]),
    (["--emission-concentration", "0.5"], ["--emission-concentration", ">= 1", "--method em"]),
    (["--emission-concentration", "-2"], ["--emission-concentration", "positive"]),
    (["--method", "svi", "--num-restarts", "2"], ["--num-restarts", "--method em"]),
])
def test_fit_hmm_usage_and_data_errors(bad_files, tmp_path, argv, fragments):
    out_dir = tmp_path / "o"
    argv = [a.format(base=bad_files) for a in argv]
    assert_user_error(run(["fit", "hmm", *argv, "--out", out_dir]), *fragments)
    assert not out_dir.exists()


def test_fit_hmm_ignores_values_past_the_lengths(bad_files, tmp_path):
    rc, out, err = run(["fit", "hmm", "--data", bad_files / "nan_in_padding.npz",
                        "--num-states", 1, "--quiet", "--out", tmp_path / "o"])
    assert rc == 0, err
    assert "2 sequences, 7 frames (lengths 3 to 4)" in (tmp_path / "o" / "report.md").read_text()


def test_fit_hmm_help():
    rc, out, _ = run(["fit", "hmm", "--help"])
    assert rc == 0
    for option in ("--num-states", "--emission", "--covariance", "--emission-concentration",
                   "--num-restarts", "--tol", "jsb-chorales", "lengths"):
        assert option in out, option
    rc, out, _ = run(["fit", "--help"])
    assert rc == 0 and "hmm" in out and "gmm" in out


# ---------------------------------------------------------------------------- fit lda
LDA_FILES = ("report.md", "topics.png", "history.png", "model.pt", "run.json")


def _write_corpus(path, num_docs=120, vocab_size=40, num_topics=4, seed=0):
    """A synthetic corpus from ppgen.datasets.make_corpus as a CSR .npz (ap_corpus format)."""
    import scipy.sparse

    counts, truth = ppgen.datasets.make_corpus(num_docs, vocab_size, num_topics,
                                               doc_length=(20, 60), seed=seed)
    csr = scipy.sparse.csr_matrix(counts.numpy())
    np.savez(path, data=csr.data, indices=csr.indices, indptr=csr.indptr,
             shape=np.array(csr.shape))
    return csr


def _completion_of(out_dir, counts):
    """document_completion recomputed from model.pt and run.json's held-out documents."""
    info = json.loads((out_dir / "run.json").read_text())
    model = ppgen.load(out_dir / "model.pt")
    held = info["heldout_documents"]
    result = ppgen.evaluation.document_completion(
        model.topic_word, counts[held], doc_topic_prior=model.doc_topic_prior,
        observed_fraction=info["completion"]["observed_fraction"],
        seed=info["completion"]["seed"])
    return model, info, result


@pytest.fixture(scope="module")
def lda_run(tmp_path_factory):
    """``ppgen fit lda`` by EM on a synthetic .npz with a vocabulary file."""
    base = tmp_path_factory.mktemp("lda")
    csr = _write_corpus(base / "corpus.npz")
    words = [f"word{j:02d}" for j in range(csr.shape[1])]
    (base / "vocab.txt").write_text("\n".join(words) + "\n")
    out_dir = base / "run"
    result = run(["fit", "lda", "--data", base / "corpus.npz", "--vocab", base / "vocab.txt",
                  "--num-topics", 4, "--seed", 3, "--out", out_dir])
    return out_dir, csr, words, result


def test_fit_lda_file_writes_every_file(lda_run):
    out_dir, _, _, (rc, out, err) = lda_run
    assert rc == 0, err
    for name in LDA_FILES:
        assert (out_dir / name).is_file(), name
        assert (out_dir / name).stat().st_size > 0
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    for png in ("topics.png", "history.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out_dir / "report.md").read_text()
    assert "![topics](topics.png)" in report and "![history](history.png)" in report
    assert report.startswith("# ppgen fit lda: LDA, 4 topics, method em")


def test_fit_lda_file_report_numbers(lda_run):
    out_dir, csr, words, (rc, out, err) = lda_run
    report = (out_dir / "report.md").read_text()
    model, info, completion = _completion_of(out_dir, csr)
    assert isinstance(model, ppgen.LDA) and model.num_topics == 4
    assert model.vocabulary == words
    # The held-out documents: a tenth, drawn with the seed, disjoint from the training ones.
    held = info["heldout_documents"]
    assert len(held) == 12 and held == sorted(set(held))
    assert held == np.sort(np.random.default_rng(3).permutation(120)[:12]).tolist()
    # Perplexity and log-likelihood as document_completion gives them on those documents.
    assert _report_value(report, "held-out perplexity").split()[0] == (
        f"{completion['perplexity']:.4f}")
    assert _report_value(report, "held-out log-likelihood").startswith(
        f"{completion['log_lik']:.3f} nats over {completion['num_tokens']} tokens")
    assert info["completion"]["perplexity"] == pytest.approx(completion["perplexity"],
                                                             rel=1e-12)
    assert 1 < completion["perplexity"] < 40  # better than uniform over 40 words
    # Coherence on the training documents, per topic and on average.
    train = np.setdiff1d(np.arange(120), held)
    npmi = ppgen.evaluation.npmi_coherence(model.topic_word, csr[train], top_n=10).numpy()
    np.testing.assert_allclose(info["npmi"], npmi, rtol=1e-12)
    assert _report_value(report, "mean NPMI coherence").split()[0] == f"{npmi.mean():.4f}"
    # The topics table: each topic's NPMI and its 10 most probable words, in order.
    top = model.top_words(10)
    assert info["top_words"] == top
    for t in range(4):
        assert f"| {t} | {npmi[t]:.3f} | {', '.join(top[t])} |" in report
    tokens = int(csr.sum())
    assert "120 documents, vocabulary of 40 words (words from " in report
    assert f"{tokens} tokens" in report
    assert f"train: 108 documents, {int(csr[train].sum())} tokens" in report
    assert "EM iterations" in _report_value(report, "convergence")
    assert "evidence lower bound" in _report_value(report, "final EM objective")
    assert _report_value(report, "elapsed") == f"{info['elapsed']:.2f} s"
    assert info["model"] == "lda" and info["method"] == "em" and info["seed"] == 3
    assert info["num_tokens"] == tokens and info["vocab_size"] == 40
    # stdout shows the same report.
    assert f"{completion['perplexity']:.4f}" in out and "top 10 words" in out


def test_fit_lda_svi_without_vocabulary_quiet(tmp_path):
    csr = _write_corpus(tmp_path / "c.npz", num_docs=80, vocab_size=30, num_topics=3, seed=1)
    out_dir = tmp_path / "svi"
    rc, out, err = run(["fit", "lda", "--data", tmp_path / "c.npz", "--num-topics", 3,
                        "--method", "svi", "--num-steps", 40, "--batch-size", 32, "--lr",
                        0.05, "--heldout-fraction", 0.25, "--quiet", "--out", out_dir])
    assert rc == 0, err
    assert out == ""
    assert all((out_dir / name).is_file() for name in LDA_FILES)
    report = (out_dir / "report.md").read_text()
    model, info, completion = _completion_of(out_dir, csr)
    assert model.vocabulary is None
    assert len(info["heldout_documents"]) == 20
    assert _report_value(report, "held-out perplexity").split()[0] == (
        f"{completion['perplexity']:.4f}")
    assert "SVI steps" in _report_value(report, "convergence")
    assert "minibatches of 32 documents" in _report_value(report, "final SVI loss")
    assert info["options"] == {"batch_size": 32, "lr": 0.05, "num_steps": 40}
    # Without --vocab, words are named after their columns.
    ids = model.top_words(10)
    assert info["top_words"] == [[f"w{j}" for j in row] for row in ids]
    assert "no --vocab" in report


@pytest.fixture(scope="module")
def ap_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ap") / "run"
    result = run(["fit", "lda", "--data", "ap", "--num-topics", 3, "--num-steps", 2,
                  "--out", out_dir])
    return out_dir, result


def test_fit_lda_ap(ap_run):
    out_dir, (rc, out, err) = ap_run
    assert rc == 0, err
    assert all((out_dir / name).is_file() for name in LDA_FILES)
    counts, vocabulary = ppgen.datasets.load_ap_corpus()
    report = (out_dir / "report.md").read_text()
    model, info, completion = _completion_of(out_dir, counts)
    assert model.vocabulary == vocabulary
    assert len(info["heldout_documents"]) == 225
    assert _report_value(report, "held-out perplexity").split()[0] == (
        f"{completion['perplexity']:.4f}")
    assert "2246 documents, vocabulary of 10473 words" in report and "435838 tokens" in report
    assert "after 2 EM iterations" in _report_value(report, "convergence")
    assert "not_converged" in report  # 2 iterations: reported once, as a diagnostic
    assert "ConvergenceWarning" not in err


def test_fit_lda_no_heldout(tmp_path):
    _write_corpus(tmp_path / "c.npz", num_docs=30, vocab_size=12, num_topics=2)
    out_dir = tmp_path / "o"
    rc, out, err = run(["fit", "lda", "--data", tmp_path / "c.npz", "--num-topics", 2,
                        "--heldout-fraction", 0, "--num-steps", 5, "--out", out_dir])
    assert rc == 0, err
    info = json.loads((out_dir / "run.json").read_text())
    assert info["heldout_documents"] == [] and info["completion"] is None
    assert "not computed" in _report_value((out_dir / "report.md").read_text(),
                                           "held-out perplexity")
    assert "train: 30 documents" in out


def test_sample_and_score_lda(lda_run, tmp_path):
    out_dir, csr, words, _ = lda_run
    model = ppgen.load(out_dir / "model.pt")
    rc, out, err = run(["sample", out_dir, "-n", 3, "--length", 25, "--seed", 4])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split(",") == words and len(lines) == 4
    rows = np.array([[int(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(rows, model.sample(3, doc_length=25, seed=4).numpy())
    assert (rows.sum(1) == 25).all()
    # .npz out: a CSR count matrix that 'ppgen score' (and 'ppgen fit lda --data') reads.
    draws = tmp_path / "docs.npz"
    assert run(["sample", out_dir, "-n", 4, "--seed", 1, "--out", draws])[0] == 0
    rc, out, err = run(["score", out_dir, draws])
    assert rc == 0, err
    expected = model.score(model.sample(4, doc_length=100, seed=1)).numpy()
    np.testing.assert_allclose([float(v) for v in out.split()], expected, rtol=1e-9)
    # The training file, and a dense .npy of the same counts, score the same.
    rc, out, err = run(["score", out_dir, out_dir.parent / "corpus.npz"])
    assert rc == 0, err
    scores = np.array([float(v) for v in out.split()])
    np.testing.assert_allclose(scores, model.score(csr).numpy(), rtol=1e-9)
    np.save(tmp_path / "dense.npy", csr.toarray())
    rc, out, err = run(["score", out_dir, tmp_path / "dense.npy"])
    assert rc == 0, err
    np.testing.assert_allclose([float(v) for v in out.split()], scores, rtol=1e-6)
    np.save(tmp_path / "narrow.npy", np.ones((2, 7)))
    assert_user_error(run(["score", out_dir, tmp_path / "narrow.npy"]), "expected 40 columns")


@pytest.fixture(scope="module")
def bad_corpora(tmp_path_factory):
    import scipy.sparse

    base = tmp_path_factory.mktemp("badlda")
    csr = _write_corpus(base / "good.npz", num_docs=20, vocab_size=10, num_topics=2)
    (base / "vocab9.txt").write_text("\n".join(f"v{j}" for j in range(9)) + "\n")
    (base / "blank.txt").write_text("a\nb\n\nd\ne\nf\ng\nh\ni\nj\n")
    (base / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (base / "text.npz").write_text("hello")
    np.savez(base / "dense.npz", x=np.ones((3, 4)))
    scipy.sparse.save_npz(base / "csc.npz", scipy.sparse.csc_matrix(np.ones((3, 4))))

    def save(name, **changes):
        arrays = dict(data=csr.data, indices=csr.indices, indptr=csr.indptr,
                      shape=np.array(csr.shape))
        arrays.update(changes)
        np.savez(base / name, **arrays)

    save("half.npz", data=csr.data * 0.5)
    save("negative.npz", data=-csr.data)
    save("column.npz", indices=np.where(np.arange(csr.nnz) == 5, 99, csr.indices))
    save("indptr.npz", indptr=csr.indptr[:-1])
    save("empty.npz", data=np.zeros_like(csr.data))
    (base / "table.csv").write_text("1,2\n")
    return base


@pytest.mark.parametrize("argv, fragments", [
    (["--num-topics", "0"], ["--num-topics", "positive integer"]),
    (["--method", "mcmc"], ["--method", "invalid choice"]),
    (["--heldout-fraction", "1"], ["--heldout-fraction", "[0, 1)"]),
    (["--tol", "-1"], ["--tol", ">= 0"]),
    (["--lr", "0.1"], ["--lr", "--method svi", "--method em"]),
    (["--method", "em", "--batch-size", "8", "--lr", "0.1"], ["--batch-size, --lr",
                                                              "--method svi"]),
    (["--doc-topic-prior", "0"], ["--doc-topic-prior", "positive"]),
    (["--vocab", "{base}/vocab9.txt"], ["--vocab", "--data FILE.npz", "own vocabulary"]),
    (["--data", "{base}/missing.npz"], ["--data", "missing.npz", "no such file"]),
    (["--data", "apx"], ["--data", "'ap'", "'apx'"]),
    (["--data", "{base}/corrupt.npz"], ["--data", "corrupt.npz", "cannot read"]),
    (["--data", "{base}/text.npz"], ["--data", "text.npz", "another format"]),
    (["--data", "{base}/dense.npz"], ["--data", "dense.npz", "CSR", "'x'", "missing 'data'"]),
    (["--data", "{base}/csc.npz"], ["--data", "csc.npz", "format 'csc'", "tocsr"]),
    (["--data", "{base}/half.npz"], ["--data", "half.npz", "whole numbers", "0.5"]),
    (["--data", "{base}/negative.npz"], ["--data", "negative.npz", "whole numbers >= 0"]),
    (["--data", "{base}/column.npz"], ["--data", "column.npz", "0..9", "= 99"]),
    (["--data", "{base}/indptr.npz"], ["--data", "indptr.npz", "'indptr'"]),
    (["--data", "{base}/empty.npz"], ["--data", "empty.npz", "without any"]),
    (["--data", "{base}/table.csv"], ["--data", "table.csv", ".npz"]),
    (["--data", "{base}/good.npz", "--vocab", "{base}/vocab9.txt"],
     ["--vocab", "vocab9.txt", "expected 10 words", "got 9"]),
    (["--data", "{base}/good.npz", "--vocab", "{base}/blank.txt"],
     ["--vocab", "blank.txt", "line 3", "empty line"]),
    (["--data", "{base}/good.npz", "--vocab", "{base}/nowhere.txt"],
     ["--vocab", "nowhere.txt", "no such file"]),
    (["--data", "{base}/good.npz", "--heldout-fraction", "0.99"],
     ["--heldout-fraction", "leaves none"]),
])
def test_fit_lda_usage_and_data_errors(bad_corpora, tmp_path, argv, fragments):
    out_dir = tmp_path / "o"
    argv = [a.format(base=bad_corpora) for a in argv]
    assert_user_error(run(["fit", "lda", *argv, "--out", out_dir]), *fragments)
    assert not out_dir.exists()


needs_prodlda = pytest.mark.skipif(not hasattr(ppgen, "ProdLDA"), reason="no ppgen.ProdLDA")


@needs_prodlda
def test_fit_prodlda_svi_and_sample(tmp_path):
    csr = _write_corpus(tmp_path / "c.npz", num_docs=80, vocab_size=30, num_topics=3, seed=2)
    out_dir = tmp_path / "prod"
    rc, out, err = run(["fit", "lda", "--model", "prodlda", "--data", tmp_path / "c.npz",
                        "--num-topics", 3, "--num-steps", 30, "--batch-size", 40, "--out",
                        out_dir])
    assert rc == 0, err
    assert all((out_dir / name).is_file() for name in LDA_FILES)
    report = (out_dir / "report.md").read_text()
    model, info, completion = _completion_of(out_dir, csr)
    assert isinstance(model, ppgen.ProdLDA) and model.num_topics == 3
    assert report.startswith("# ppgen fit lda: ProdLDA, 3 topics, method svi")  # svi default
    assert _report_value(report, "held-out perplexity").split()[0] == (
        f"{completion['perplexity']:.4f}")
    assert info["model"] == "prodlda" and info["topic_word_prior"] is None
    assert "topic_word_prior" not in report
    rc, out, err = run(["sample", out_dir, "-n", 2, "--length", 10, "--seed", 0,
                        "--no-header"])
    assert rc == 0, err
    rows = np.array([[int(v) for v in line.split(",")] for line in out.split()])
    np.testing.assert_array_equal(rows, model.sample(2, doc_length=10, seed=0).numpy())


@needs_prodlda
@pytest.mark.parametrize("argv, fragments", [
    (["--method", "em"], ["--method", "prodlda", "svi only"]),
    (["--topic-word-prior", "0.1"], ["--topic-word-prior", "--model lda"]),
    (["--num-topics", "1"], ["--num-topics", "at least 2"]),
])
def test_fit_prodlda_errors(bad_corpora, tmp_path, argv, fragments):
    out_dir = tmp_path / "o"
    assert_user_error(run(["fit", "lda", "--model", "prodlda", "--data",
                           bad_corpora / "good.npz", *argv, "--out", out_dir]), *fragments)
    assert not out_dir.exists()


def test_fit_lda_out_is_a_file(bad_corpora, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    assert_user_error(run(["fit", "lda", "--data", bad_corpora / "good.npz", "--out", target]),
                      "--out")
    assert target.read_text() == "keep me"


def test_fit_lda_help():
    rc, out, _ = run(["fit", "lda", "--help"])
    assert rc == 0
    for option in ("--data", "--vocab", "--num-topics", "--method", "--num-steps", "--tol",
                   "--batch-size", "--lr", "--heldout-fraction", "--seed", "--out", "--quiet",
                   "'ap'", "indptr"):
        assert option in out, option
    rc, out, _ = run(["fit", "--help"])
    assert rc == 0 and "lda" in out


# ------------------------------------------------------------------------------ fit vae
VAE_FILES = ("report.md", "history.png", "samples.png", "reconstructions.png", "latent.png",
             "model.pt", "run.json")
#: A tiny VAE on the digits: 1437 training images, 8 steps of 200 per epoch.
VAE_TINY = ["--data", "digits", "--latent-dim", 2, "--hidden-dims", 16, "--batch-size", 200,
            "--eval-samples", 50]


def _heldout_digits(out_dir):
    """The held-out images of a digits run, binarized as the command scored them."""
    info = json.loads((out_dir / "run.json").read_text())
    x, y = ppgen.datasets.load_digits()
    index = torch.tensor(info["heldout_images"])
    held = ppgen.datasets.DynamicBinarized(x[index]).fixed(info["seed"] + 1)
    return info, held, y[index]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("vae")
    out_dir, checkpoint = base / "run", base / "ckpt"
    result = run(["fit", "vae", *VAE_TINY, "--num-epochs", 2, "--checkpoint", checkpoint,
                  "--out", out_dir])
    return out_dir, checkpoint, result


def test_fit_vae_digits_writes_every_file(vae_run):
    out_dir, checkpoint, (rc, out, err) = vae_run
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(VAE_FILES)
    for name in VAE_FILES:
        if name.endswith(".png"):
            assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (checkpoint / "checkpoint.pt").is_file()
    report = (out_dir / "report.md").read_text()
    for section in ("## Data", "## Fit", "## Diagnostics", "## Files"):
        assert section in report
    for name in VAE_FILES[1:]:
        assert f"({name})" in report, name


def test_fit_vae_report_numbers_are_the_models(vae_run):
    """The held-out log-likelihood, its standard error and the ELBO are recomputed from
    model.pt and run.json's held-out images."""
    out_dir, _, (rc, out, err) = vae_run
    assert rc == 0, err
    vae = ppgen.load(out_dir / "model.pt")
    assert isinstance(vae, ppgen.VAE) and vae.latent_dim == 2 and vae.hidden_dims == (16,)
    info, held, _ = _heldout_digits(out_dir)
    assert len(held) == 180 and info["eval_samples"] == 50 and info["binarized"] is True
    assert info["num_steps_run"] == 16  # 2 epochs of ceil(1437 / 200) steps
    lp = vae.log_prob(held, num_samples=50, seed=0).double()
    assert info["log_likelihood"] == pytest.approx(float(lp.mean()), abs=1e-4)
    assert info["log_likelihood_se"] == pytest.approx(float(lp.std() / 180**0.5), rel=1e-3)
    assert info["heldout_elbo"] < info["log_likelihood"]
    report = (out_dir / "report.md").read_text()
    ll = f"{info['log_likelihood']:.3f} ± {info['log_likelihood_se']:.3f} nats per image"
    assert ll in report and ll in out
    assert "50 samples per image" in report and "180 held-out images" in report
    assert "validation ELBO" in report and "train: 1437, validation: 180" in report


def test_sample_and_score_vae(vae_run, tmp_path):
    out_dir, _, _ = vae_run
    vae = ppgen.load(out_dir / "model.pt")
    rc, out, err = run(["sample", out_dir, "-n", 16, "--seed", 3])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 17 and lines[0].split(",")[:2] == ["x0", "x1"]
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(rows, vae.sample(16, seed=3).numpy())
    x, _ = ppgen.datasets.load_digits()
    np.save(tmp_path / "flat.npy", x[:4].numpy())
    np.save(tmp_path / "square.npy", x[:4].numpy().reshape(4, 8, 8))
    expected = vae.score(x[:4], num_samples=50).numpy()
    for name in ("flat.npy", "square.npy"):
        rc, out, err = run(["score", out_dir, tmp_path / name])
        assert rc == 0, err
        np.testing.assert_allclose([float(v) for v in out.split()], expected, rtol=1e-5)
    np.save(tmp_path / "wide.npy", np.zeros((2, 10)))
    assert_user_error(run(["score", out_dir, tmp_path / "wide.npy"]), "expected 64 pixels")
    np.save(tmp_path / "big.npy", np.full((2, 64), 3.0))
    assert_user_error(run(["score", out_dir, tmp_path / "big.npy"]), "[0, 1]")
    assert_user_error(run(["sample", out_dir, "-n", 2, "--length", 3]), "--length", "VAE")


def test_fit_vae_resume_continues_an_interrupted_run(vae_run, tmp_path, monkeypatch):
    """Interrupted after its first epoch (checkpointed), the run resumed from --checkpoint
    ends with the weights and history of the uninterrupted run."""
    from ppgen.models.latent import VAEObjective

    out_dir, _, _ = vae_run
    step, calls = VAEObjective.step, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 11:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    checkpoint, resumed = tmp_path / "ckpt", tmp_path / "resumed"
    argv = ["fit", "vae", *VAE_TINY, "--num-epochs", 2, "--checkpoint", checkpoint]
    with monkeypatch.context() as m:
        m.setattr(VAEObjective, "step", interrupted)
        rc, _, err = run([*argv, "--out", tmp_path / "first"])
    # the interrupted step is dropped and the run ends cleanly at the last completed one
    assert rc == 0, err
    assert (checkpoint / "checkpoint.pt").is_file() and not resumed.exists()
    rc, out, err = run([*argv, "--resume", checkpoint, "--out", resumed])
    assert rc == 0, err
    info = json.loads((resumed / "run.json").read_text())
    assert info["num_steps_run"] == 16 and info["options"]["resume"] == str(checkpoint)
    assert "resumed" in (resumed / "report.md").read_text()
    full, again = ppgen.load(out_dir / "model.pt"), ppgen.load(resumed / "model.pt")
    for (name, a), b in zip(full.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_fit_vae_iwae_on_a_file(tmp_path):
    g = np.random.default_rng(0)
    np.save(tmp_path / "bits.npy", (g.uniform(size=(60, 3, 4)) < 0.3).astype(np.float32))
    out_dir = tmp_path / "o"
    rc, out, err = run(["fit", "vae", "--data", tmp_path / "bits.npy", "--latent-dim", 3,
                        "--hidden-dims", "8,8", "--iwae-k", 3, "--num-epochs", 2,
                        "--batch-size", 20, "--eval-samples", 20, "--quiet", "--out", out_dir])
    assert rc == 0, err
    assert out == ""
    info = json.loads((out_dir / "run.json").read_text())
    assert info["image_shape"] == [3, 4] and info["binarized"] is False
    assert info["objective"] == "IWAE-3 bound" and info["options"]["iwae"] is True
    assert info["options"]["num_particles"] == 3 and len(info["heldout_images"]) == 6
    assert "trained on the IWAE-3 bound" in (out_dir / "report.md").read_text()


@pytest.mark.parametrize("argv, fragments", [
    (["--latent-dim", "0"], ["--latent-dim", "positive integer"]),
    (["--hidden-dims", "200,x"], ["--hidden-dims", "comma-separated"]),
    (["--hidden-dims", "0"], ["--hidden-dims", "positive"]),
    (["--iwae-k", "0"], ["--iwae-k", "positive integer"]),
    (["--lr", "-1"], ["--lr", "positive"]),
    (["--likelihood", "poisson"], ["--likelihood", "invalid choice"]),
    (["--heldout-fraction", "0"], ["--heldout-fraction", "(0, 1)"]),
    (["--heldout-fraction", "0.6", "--validation-fraction", "0.5"], ["leaves none"]),
    (["--eval-size", "10"], ["--eval-size", "--data mnist"]),
    (["--data", "mnist", "--heldout-fraction", "0.2"], ["--heldout-fraction", "fixed splits"]),
    (["--resume", "{base}"], ["--resume", "checkpoint.pt"]),
    (["--checkpoint", "{base}/text.npy"], ["--checkpoint", "a file"]),
    (["--data", "digitz"], ["--data", "'digits' or 'mnist'", "'digitz'"]),
    (["--data", "{base}/missing.npy"], ["missing.npy", "no such file"]),
    (["--data", "{base}/text.npy"], ["text.npy", "another format"]),
    (["--data", "{base}/cube.npy"], ["cube.npy", "shape (2, 2, 2, 2)"]),
    (["--data", "{base}/nan.npy"], ["nan.npy", "finite", "image 1, pixel 2"]),
    (["--data", "{base}/big.npy"], ["big.npy", "[0, 1]", "--likelihood gaussian"]),
])
def test_fit_vae_usage_and_data_errors(tmp_path, argv, fragments):
    (tmp_path / "text.npy").write_text("hello")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2, 2)))
    nan = np.zeros((3, 4))
    nan[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "big.npy", np.full((20, 4), 2.0))
    out_dir = tmp_path / "o"
    argv = [a.format(base=tmp_path) for a in argv]
    assert_user_error(run(["fit", "vae", *argv, "--out", out_dir]), *fragments)
    assert not out_dir.exists()


def test_fit_vae_help():
    rc, out, _ = run(["fit", "vae", "--help"])
    assert rc == 0
    for option in ("--data", "--latent-dim", "--hidden-dims", "--num-epochs", "--batch-size",
                   "--lr", "--iwae-k", "--eval-samples", "--checkpoint", "--resume",
                   "--device", "--seed", "--out", "'digits'", "mnist"):
        assert option in out, option
    rc, out, _ = run(["fit", "--help"])
    assert rc == 0 and "vae" in out


def test_report_totals_show_no_more_digits_than_their_dtype_holds():
    from ppgen.cli._report import fmt_total

    # float32 holds about 7 significant digits: no invented decimals on large totals
    assert fmt_total(-3212345.678, torch.float32) == "-3212346"
    assert fmt_total(-3212345.678, np.float32) == "-3212346"
    assert fmt_total(-12345.6789, torch.float32) == "-12345.68"
    assert fmt_total(-12.3456789, torch.float32) == "-12.346"
    assert fmt_total(-3212345.678, torch.float64) == "-3212345.678"
    assert fmt_total(float("nan"), torch.float32) == "nan"


# ------------------------------------------------------------------- fit gan / cgan
GAN_TINY = ["--num-steps", 200, "--num-data", 1000, "--hidden-dims", "32,32", "--eval-size",
            12, "--ais-chains", 4, "--ais-steps", 10, "--quiet"]
GAN_FILES = ("report.md", "history.png", "samples.png", "model.pt", "run.json")


@pytest.fixture(scope="module")
def gan_ring_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("gan") / "ring"
    return out_dir, run(["fit", "gan", "--data", "ring", *GAN_TINY, "--out", out_dir])


def test_fit_gan_ring_report_numbers_are_the_models(gan_ring_run):
    """The mixture metrics and the AIS held-out nats of the report are recomputed from
    model.pt and the data drawn with the run's seed."""
    out_dir, (rc, out, err) = gan_ring_run
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(GAN_FILES)
    for name in GAN_FILES[1:4]:
        if name.endswith(".png"):
            assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    info = json.loads((out_dir / "run.json").read_text())
    gan = ppgen.load(out_dir / "model.pt")
    assert isinstance(gan, ppgen.GAN) and gan.hidden_dims == (32, 32) and gan.pack == 4
    assert info["num_steps_run"] == 200 and info["num_modes"] == 8
    x, params = ppgen.datasets.make_ring(1000 + 500 + 12, seed=0, dtype=torch.float32)
    m = ppgen.evaluation.mixture_metrics(gan.sample(2500, seed=0), params["modes"],
                                         params["std"])
    assert info["modes_captured"] == m.modes_captured
    assert info["high_quality"] == pytest.approx(m.high_quality)
    lp = gan.log_prob(x[1500:], num_samples=4, num_steps=10, seed=0).double()
    assert info["log_likelihood"] == pytest.approx(float(lp.mean()), abs=1e-4)
    assert info["log_likelihood_se"] == pytest.approx(float(lp.std() / 12**0.5), rel=1e-3)
    report = (out_dir / "report.md").read_text()
    for text in ("## Fit", "modes captured", f"{m.modes_captured} of 8",
                 f"{info['log_likelihood']:.3f} ± {info['log_likelihood_se']:.3f} nats",
                 "AIS with 4 chains and 10 temperatures", "(samples.png)", "(history.png)"):
        assert text in report, text
    rc, out, err = run(["sample", out_dir, "-n", 5, "--seed", 2])
    assert rc == 0, err
    lines = out.strip().splitlines()
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(rows, gan.sample(5, seed=2).numpy())


def test_fit_cgan_digits_draws_labelled_images(tmp_path):
    out_dir = tmp_path / "cgan"
    rc, out, err = run(["fit", "cgan", "--data", "digits", "--num-steps", 5, "--hidden-dims",
                        "32", "--latent-dim", 4, "--eval-size", 5, "--ais-chains", 4,
                        "--ais-steps", 10, "--quiet", "--out", out_dir])
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(GAN_FILES)
    cgan = ppgen.load(out_dir / "model.pt")
    assert isinstance(cgan, ppgen.ConditionalGAN) and cgan.num_classes == 10
    report = (out_dir / "report.md").read_text()
    assert "held-out log-likelihood" in report and "modes captured" not in report
    rc, out, err = run(["sample", out_dir, "-n", 12, "--seed", 1])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split(",")[:2] == ["label", "x0"] and len(lines) == 13
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    labels = torch.arange(12) % 10
    np.testing.assert_array_equal(rows[:, 0], labels.numpy())
    np.testing.assert_array_equal(rows[:, 1:], cgan.sample(12, labels=labels, seed=1).numpy())
    assert_user_error(run(["score", out_dir, tmp_path / "x.csv"]), "labels")


@pytest.mark.parametrize("command, cls", [("dcgan", "DCGAN"), ("fccgan", "FCCGAN"),
                                          ("stackgan", "StackGAN")])
def test_fit_convolutional_gans_on_digits(tmp_path, command, cls):
    out_dir = tmp_path / command
    rc, out, err = run(["fit", command, "--data", "digits", "--num-steps", 4, "--latent-dim",
                        2, "--width", 4, "--eval-size", 4, "--ais-chains", 2, "--ais-steps",
                        5, "--quiet", "--out", out_dir])
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(GAN_FILES)
    model = ppgen.load(out_dir / "model.pt")
    assert type(model) is getattr(ppgen, cls) and model.data_shape == (8, 8)
    assert model.pack == 1 and (model.width == 4)
    report = (out_dir / "report.md").read_text()
    assert "held-out log-likelihood" in report and f"ppgen fit {command}" in report
    rc, out, err = run(["sample", out_dir, "-n", 3, "--seed", 1])
    assert rc == 0, err
    lines = out.strip().splitlines()
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    if command == "stackgan":
        labels = torch.arange(3) % 10
        np.testing.assert_array_equal(rows[:, 0], labels.numpy())
        expected = model.sample(3, labels=labels, seed=1)
        rows = rows[:, 1:]
    else:
        expected = model.sample(3, seed=1)
    np.testing.assert_array_equal(rows, expected.reshape(3, 64).numpy())


@pytest.mark.parametrize("command, argv, fragments", [
    ("dcgan", ["--data", "ring"], ["--data ring", "draws images"]),
    ("stackgan", ["--data", "grid"], ["--data grid", "draws images"]),
    ("dcgan", ["--hidden-dims", "8"], ["--hidden-dims", "--width"]),
    ("stackgan", ["--data", "{base}/x.npy"], ["--data", "stackgan needs labels"]),
    ("gan", ["--gan-loss", "wasserstein"], ["--gan-loss", "invalid choice"]),
    ("gan", ["--pack", "0"], ["--pack", "positive integer"]),
    ("gan", ["--ema-decay", "1.5"], ["--ema-decay", "[0, 1)"]),
    ("gan", ["--hidden-dims", "none"], ["--hidden-dims", "at least one hidden layer"]),
    ("gan", ["--data", "rign"], ["--data", "'rign'", "ring"]),
    ("cgan", ["--data", "{base}/x.npy"], ["--data", "needs labels"]),
])
def test_fit_gan_usage_errors(tmp_path, command, argv, fragments):
    np.save(tmp_path / "x.npy", np.zeros((20, 4)))
    out_dir = tmp_path / "o"
    argv = [a.format(base=tmp_path) for a in argv]
    assert_user_error(run(["fit", command, *argv, "--out", out_dir]), *fragments)
    assert not out_dir.exists()


def test_fit_gan_help():
    rc, out, _ = run(["fit", "gan", "--help"])
    assert rc == 0
    for option in ("--data", "--pack", "--gan-loss", "--num-steps", "--r1-weight",
                   "--ema-decay", "--eval-size", "--ais-chains", "--ais-steps", "ring", "grid"):
        assert option in out, option
    rc, out, _ = run(["fit", "--help"])
    assert rc == 0 and all(c in out for c in ("gan", "cgan", "dcgan", "fccgan", "stackgan"))
    rc, out, _ = run(["fit", "stackgan", "--help"])
    assert rc == 0 and "--width" in out and "StackGAN" in out


# ------------------------------------------------------------------- fit rbm, dbn, dbm
RBM_TINY = ["--data", "digits", "--num-hidden", 16, "--num-epochs", 2, "--ais-samples", 20,
            "--ais-betas", 100, "--raise-images", 10]


@pytest.fixture(scope="module")
def rbm_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("rbm") / "run"
    return out_dir, run(["fit", "rbm", *RBM_TINY, "--out", out_dir])


def _binary_digits():
    x, _ = ppgen.datasets.load_digits()
    return (x >= 0.5).float()


def test_fit_rbm_writes_files_and_reports_the_models_numbers(rbm_run):
    out_dir, (rc, out, err) = rbm_run
    assert rc == 0, err
    for name in ("report.md", "filters.png", "samples.png", "history.png", "model.pt",
                 "run.json"):
        assert (out_dir / name).is_file(), name
    info = json.loads((out_dir / "run.json").read_text())
    assert info["model"] == "rbm" and info["num_hidden"] == 16
    rbm = ppgen.load(out_dir / "model.pt")
    assert isinstance(rbm, ppgen.RBM) and rbm.weights.shape == (64, 16)
    held = _binary_digits()[torch.as_tensor(info["heldout_images"])]
    lp, se = rbm.log_prob(held, num_samples=20, num_betas=100, seed=0, return_stderr=True)
    assert info["log_likelihood"] == pytest.approx(float(lp.double().mean()), abs=1e-6)
    assert info["log_z_se"] == pytest.approx(float(se[0]), rel=1e-6)
    # the exact log-likelihood (16 hidden units: enumerable) within 3 AIS errors + 0.05
    exact = float(rbm.log_prob(held, method="exact").double().mean())
    assert abs(info["log_likelihood"] - exact) < 3 * info["log_z_se"] + 0.05
    assert info["raise_num_images"] == 10 and math.isfinite(info["raise_log_likelihood"])
    report = (out_dir / "report.md").read_text()
    for fragment in ("held-out log-likelihood", f"{info['log_likelihood']:.3f}", "RAISE",
                     "baseline", "CD-1", "filters.png", "reconstruction error"):
        assert fragment in report and fragment in out, fragment


def test_sample_and_score_rbm(rbm_run, tmp_path):
    out_dir, _ = rbm_run
    rbm = ppgen.load(out_dir / "model.pt")
    rc, out, err = run(["sample", out_dir, "-n", 4, "--seed", 3, "--no-header"])
    assert rc == 0, err
    rows = np.loadtxt(io.StringIO(out), delimiter=",", ndmin=2)
    np.testing.assert_array_equal(rows, rbm.sample(4, seed=3).numpy())
    x = _binary_digits()[:3].numpy()
    np.save(tmp_path / "x.npy", x)
    rc, out, err = run(["score", out_dir, tmp_path / "x.npy"])
    assert rc == 0, err
    np.testing.assert_allclose(np.loadtxt(io.StringIO(out)),
                               rbm.score(torch.from_numpy(x)).numpy(), rtol=1e-5)


@pytest.mark.parametrize("family, cls, layers", [("dbn", "DBN", (16, 8)), ("dbm", "DBM", (16, 8)),
                                                 ("dbm", "DBM", (16, 8, 4))])
def test_fit_dbn_and_dbm(tmp_path, family, cls, layers):
    out_dir = tmp_path / family
    rc, out, err = run(["fit", family, "--data", "digits", "--layers", ",".join(map(str, layers)),
                        "--num-epochs", 1, "--ais-samples", 10, "--ais-betas", 50,
                        "--out", out_dir])
    assert rc == 0, err
    model = ppgen.load(out_dir / "model.pt")
    assert isinstance(model, getattr(ppgen, cls)) and model.layer_sizes == layers
    info = json.loads((out_dir / "run.json").read_text())
    held = _binary_digits()[torch.as_tensor(info["heldout_images"])]
    kwargs = ({"ais_samples": 10} if family == "dbn" else {"num_samples": 10})
    lp = model.log_prob(held, num_betas=50, seed=0, **kwargs).double().mean()
    assert info["log_likelihood"] == pytest.approx(float(lp), abs=1e-6)
    assert "log-likelihood lower bound" in (out_dir / "report.md").read_text()
    assert (out_dir / "samples.png").is_file() and (out_dir / "filters.png").is_file()
    if family == "dbm":  # RAISE on the first 20 held-out images, as the model computes it
        raise_lp = model.log_prob(held[:20], method="raise", num_samples=10, num_betas=50,
                                  seed=0).double().mean()
        assert info["raise_num_images"] == 20
        assert info["raise_log_likelihood"] == pytest.approx(float(raise_lp), abs=1e-6)
        assert "RAISE" in (out_dir / "report.md").read_text()
    else:
        assert "raise_log_likelihood" not in info


@pytest.mark.parametrize("argv, fragments", [
    (["rbm", "--num-hidden", "0"], ["--num-hidden", "positive integer", "0"]),
    (["dbn", "--layers", "16,0"], ["--layers", "positive integers", "16,0"]),
    (["dbm", "--layers", "16"], ["--layers", "two or three hidden-layer sizes", "16"]),
    (["dbm", "--layers", "16,8,4,2"], ["--layers", "two or three", "16,8,4,2"]),
    (["rbm", "--num-train", "100"], ["--num-train", "binarized-mnist", "--data digits"]),
    (["rbm", "--data", "binarized-mnist", "--heldout-fraction", "0.2"],
     ["--heldout-fraction", "fixed splits"]),
    (["rbm", "--raise-images", "-1"], ["--raise-images", ">= 0", "-1"]),
    (["dbm", "--raise-images", "-2"], ["--raise-images", ">= 0", "-2"]),
    (["rbm", "--data", "{base}/gray.npy"], ["gray.npy", "binary pixels", "0.5", "image 0"]),
    (["rbm", "--data", "{base}/missing.npy"], ["missing.npy", "no such file"]),
])
def test_fit_energy_usage_and_data_errors(tmp_path, argv, fragments):
    np.save(tmp_path / "gray.npy", np.full((10, 4), 0.5))
    out_dir = tmp_path / "o"
    argv = [a.format(base=tmp_path) for a in argv]
    assert_user_error(run(["fit", *argv, "--out", out_dir]), *fragments)
    assert not out_dir.exists()
