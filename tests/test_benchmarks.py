"""The benchmark scripts keep working (tiny sizes; timings are not checked here)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gmm_em_benchmark_runs_and_agrees_with_sklearn(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gmm_em.py"), "--n", "3000", "--d", "4",
         "--k", "3", "--repeats", "1", "--svi-budget", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                                                           "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| ppgen (EM) |" in proc.stdout
    assert "rel. LL diff <= 1e-06" in proc.stdout and "[PASS]" in proc.stdout.split(
        "rel. LL diff")[1].splitlines()[0]
    assert out.exists()


def _run_script(name, *args, timeout=600):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True, text=True, timeout=timeout,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def _hmm_tables(stdout):
    """{covariance: {implementation: (final log-lik, Viterbi column)}} from the printed tables."""
    tables, cov = {}, None
    for line in stdout.splitlines():
        if line.startswith("## covariance="):
            cov = line.split("'")[1]
            tables[cov] = {}
        elif cov and (line.startswith("| hmmlearn") or line.startswith("| ppgen")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables[cov][cells[0]] = (float(cells[4]), cells[6])
    return tables


def _check_hmm_agreement(stdout, covariances):
    tables = _hmm_tables(stdout)
    assert sorted(tables) == sorted(covariances)
    for rows in tables.values():
        assert len(rows) == 3, rows
        ref = rows["ppgen (EM)"][0]
        for name, (ll, same) in rows.items():
            assert abs(ll - ref) <= 1e-6 * abs(ref), (name, ll, ref)
            if name != "ppgen (EM)":
                assert same == "yes", (name, same)
    assert stdout.count("Viterbi paths identical: yes [PASS]") == len(covariances)


def test_hmm_em_benchmark_agrees_with_hmmlearn(tmp_path):
    pytest.importorskip("hmmlearn")
    out = tmp_path / "hmm.json"
    stdout = _run_script("hmm_em.py", "--quick", "--skip-svi", "--json", str(out))
    _check_hmm_agreement(stdout, ["diag", "full"])
    assert "threads: torch 1" in stdout and "speed-up of ppgen vs the faster hmmlearn" in stdout
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"diag", "full"}
    assert all(all(run["viterbi_identical"].values()) for run in report["runs"].values())


def test_hmm_em_benchmark_runs_pyro_svi_baseline():
    pytest.importorskip("hmmlearn")
    stdout = _run_script("hmm_em.py", "--quick", "--covariances", "diag", "--svi-budget", "2",
                         "--svi-eval-every", "2")
    _check_hmm_agreement(stdout, ["diag"])
    line = next(ln for ln in stdout.splitlines() if ln.startswith("- plain Pyro SVI"))
    assert "reached in" in line or "not reached in budget" in line


def test_hmm_jsb_benchmark_runs(tmp_path):
    out = tmp_path / "jsb.json"
    stdout = _run_script("hmm_jsb.py", "--quick", "--num-steps", "3", "--json", str(out))
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| 2 |") or ln.startswith("| 4 |")]
    assert len(rows) == 2, stdout
    report = json.loads(out.read_text())
    assert [r["k"] for r in report["results"]] == [2, 4]
    for r in report["results"]:
        assert 1 <= r["iterations"] <= 3
        for split in ("train", "valid", "test"):
            # 88 keys: between 0 and 88 log(2) nats per step for any sensible model
            assert 0 < r[f"{split}_nll"] < 88 * math.log(2), r
