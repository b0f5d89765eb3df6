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
    # PYTHONPATH: the scripts import the ppgen of this checkout (a git worktree too), not
    # whichever one the virtual environment has installed.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True, text=True, timeout=timeout,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
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


def test_hmm_em_benchmark_sweep_over_sequence_length(tmp_path):
    """--sweep --quick: one long sequence and a few, ppgen (time-parallel path) against both
    hmmlearn implementations; equal log-likelihoods and Viterbi paths (no timing target)."""
    pytest.importorskip("hmmlearn")
    out = tmp_path / "sweep.json"
    stdout = _run_script("hmm_em.py", "--sweep", "--quick", "--json", str(out))
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| 1 x") or ln.startswith("| 4 x")]
    assert len(rows) == 6, stdout
    report = json.loads(out.read_text())
    assert [(r["n"], r["t"]) for r in report["sweep"]] == [(1, 500), (1, 500), (1, 2000),
                                                          (1, 2000), (4, 1000), (4, 1000)]
    for r in report["sweep"]:
        assert r["max_rel_loglik_diff"] <= 1e-6 and r["viterbi_identical"], r
        assert r["ppgen_ms"] > 0 and r["hmmlearn_scaling_ms"] > 0 and r["hmmlearn_log_ms"] > 0


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


def test_lda_benchmark_quick_agrees_with_sklearn(tmp_path):
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from lda import AGREEMENT_RTOL, parse_table
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "lda.json"
    stdout = _run_script("lda.py", "--quick", "--json", str(out))
    assert "## K = 5 topics" in stdout
    assert "threads: torch 1" in stdout and "n_jobs=None" in stdout
    assert "a bound, not a predictive likelihood" in stdout  # scikit-learn's perplexity() note
    rows = {(r["model"].split(" ")[0] + " " + r["model"].split(" ")[-1], r["inference"]): r
            for r in parse_table(stdout)}
    em = rows[("ppgen LDA", "variational EM (batch)")]
    batch = rows[("scikit-learn LDA", "variational EM (batch)")]
    online = rows[("scikit-learn LDA", "online VB (batch_size 128)")]
    svi = rows[("ppgen LDA", "SVI (batch 256)")]
    assert em["iterations"] == "10 (tol 0)" and batch["iterations"] == "10 (max_iter)"
    assert online["iterations"].startswith("3 passes")
    expected = 5 if "ProdLDA: not available" not in stdout else 4
    assert len(rows) == expected, stdout
    for row in rows.values():
        assert math.isfinite(row["perplexity"]) and row["perplexity"] > 1, row
        assert -1 <= row["npmi"] <= 1, row
        assert row["train_s"] > 0, row
    for row in (em, batch, online, svi):  # the LDA rows have a scikit-learn bound
        assert row["sk_perplexity"] is not None and row["sk_perplexity"] > 1, row
    # Same algorithm from the same start: the held-out perplexities agree.
    assert abs(em["perplexity"] - batch["perplexity"]) <= AGREEMENT_RTOL * batch["perplexity"]
    verdict = next(ln for ln in stdout.splitlines()
                   if ln.startswith("ppgen em vs sklearn batch: perplexity"))
    assert f"{em['perplexity']:.1f} vs {batch['perplexity']:.1f}" in verdict
    report = json.loads(out.read_text())
    assert report["torch_threads"] == 1 and report["split"]["test_docs"] == 30
    verdict = report["runs"]["5"]["verdict"]
    assert verdict["rel_perplexity_diff"] <= AGREEMENT_RTOL
    assert verdict["iterations"] == 10


def test_threads_benchmark_quick(tmp_path):
    """The threads benchmark runs its three settings and prints one row per problem (no
    timing is checked; the busy loop it starts is gone afterwards)."""
    out = tmp_path / "threads.json"
    proc = subprocess.run(  # no OMP_NUM_THREADS: setting (b) is ppgen's automatic choice
        [sys.executable, str(ROOT / "benchmarks" / "threads.py"), "--quick", "--json",
         str(out), "--only", "GMM EM", "--only", "HMM EM", "--only", "RBM"],
        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| GMM EM")
            or ln.startswith("| HMM EM")]
    assert len(rows) == 3, proc.stdout
    assert sum(ln.startswith("| RBM PCD-1") for ln in proc.stdout.splitlines()) == 1
    assert "busy loop included, still running at the end" in proc.stdout
    assert "- target: b/a <= 1.5x on every problem" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["threads_b"] for r in report["rows"]] == [1, 1, 1, 1]  # quick sizes: small
    for r in report["rows"]:
        assert r["a_s"] > 0 and r["b_s"] > 0 and r["c_s"] > 0


def test_vae_mnist_benchmark_quick(tmp_path):
    """The VAE benchmark trains ppgen, plain Pyro, plain PyTorch and ppgen IWAE on a tiny
    subset, scores all four with the same estimator, and prints the guard and thread rows
    (no timing or quality target is checked at these sizes)."""
    from ppgen.datasets.images import _read_npz

    try:
        _read_npz("mnist.npz", None, {})
    except FileNotFoundError:
        pytest.skip("mnist.npz is not in the shared data folder")
    out = tmp_path / "vae.json"
    stdout = _run_script("vae_mnist.py", "--quick", "--json", str(out))
    names = ["ppgen.fit(vae, data, 'svi') (VAEObjective", "plain Pyro SVI", "plain PyTorch loop",
             "ppgen.fit(vae, data, 'svi', num_particles=5, iwae=True)"]
    rows = [ln for ln in stdout.splitlines() if ln.startswith("| ")]
    for name in names:
        assert any(ln.startswith("| " + name) for ln in rows), (name, stdout)
    for key in ("- target: ppgen epoch <= 1.1x plain PyTorch", "- target: ppgen within 0.3 nats",
                "- IWAE (k=5) - VAE (k=1)", "| guarded_update (clip + isfinite + step) |",
                "- target: b/a <= 1.5x", "busy loop included, still running at the end"):
        assert key in stdout, (key, stdout)
    report = json.loads(out.read_text())
    assert report["train_images"] == 500 and report["test_images"] == 10
    assert [r["name"] for r in report["rows"]] == ["ppgen", "plain Pyro", "plain PyTorch",
                                                   "ppgen IWAE (k=5)"]
    for r in report["rows"]:
        # 784 binary pixels: a log-likelihood between -784 log 2 and 0 for a barely trained net
        assert -784 * math.log(2) < r["mean"] < 0, r
        assert r["mc_se"] > 0 and r["train_wall_s"] > 0, r
    assert report["guard"]["num_params"] == 784 * 64 + 64 + 64 * 784 + 784
    assert report["threads"]["a_wall_s"] > 0 and report["threads"]["b_wall_s"] > 0


def _need_mnist():
    from ppgen.datasets.images import _read_npz

    try:
        _read_npz("mnist.npz", None, {})
    except FileNotFoundError:
        pytest.skip("mnist.npz is not in the shared data folder")


def test_vae_parity_benchmark_quick(tmp_path):
    """Three networks per seed (ppgen's objective, ppgen with Pyro's estimator, plain Pyro),
    the paired gaps per seed and their mean over seeds."""
    _need_mnist()
    out = tmp_path / "parity.json"
    stdout = _run_script("vae_parity.py", "--quick", "--seeds", "0", "1", "--trainers", "a",
                         "a'", "b", "b'", "--json", str(out))
    report = json.loads(out.read_text())
    assert [r["seed"] for r in report["rows"]] == [0, 1]
    for r in report["rows"]:
        for key in ("mean_a", "mean_a_pyro_estimator", "mean_b", "mean_b_analytic"):
            assert -784 * math.log(2) < r[key] < 0, r
        assert r["same_estimator_gap"] == pytest.approx(r["mean_a_pyro_estimator"]
                                                        - r["mean_b"], abs=1e-9)
        # Shared draws: ppgen and plain Pyro with the same objective are one computation
        # (apart from rounding), while the two objectives differ.
        assert abs(r["same_estimator_gap"]) < 0.05 and abs(r["same_objective_gap"]) < 0.05, r
        assert abs(r["default_gap"]) > 0.05, r
        assert len(r["lp"]["a"]) == 10 and set(r["active_units"]) == {"a", "a'", "b", "b'"}
    gaps = [r["default_gap"] for r in report["rows"]]
    assert report["verdict"]["default_gap"]["mean"] == pytest.approx(sum(gaps) / 2)
    for label in ("- (a') - (b), same estimator (Trace_ELBO's): mean over 2 seeds",
                  "- (a) - (b'), same objective (analytic KL): mean over 2 seeds",
                  "- (b') plain Pyro, analytic KL: seed-to-seed s.d."):
        assert label in stdout, (label, stdout)


def test_vae_impute_benchmark_quick(tmp_path):
    """Mean, pseudo-Gibbs and Metropolis-within-Gibbs imputations of three half-image masks
    (a barely trained network: no quality target is checked at this size)."""
    _need_mnist()
    out = tmp_path / "impute.json"
    stdout = _run_script("vae_impute.py", "--quick", "--chain-seeds", "0", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert sorted({(r["mask"], r["imputation"]) for r in rows}) == sorted(
        (m, i) for m in ("bottom", "right", "random")
        for i in ("mean", "pseudo-Gibbs", "Metropolis-within-Gibbs"))
    for r in rows:
        assert 0 < r["mse_binary"] < 1 and 0 < r["mse_grey"] < 1, r
        if r["imputation"] == "pseudo-Gibbs":
            assert r["acceptance"] == 1.0
        elif r["imputation"] == "Metropolis-within-Gibbs":
            assert 0 < r["acceptance"] < 1, r
    assert stdout.count("MWG lowest [") == 3


def test_svi_overhead_benchmark_quick(tmp_path):
    out = tmp_path / "svi.json"
    _run_script("svi_overhead.py", "--quick", "--json", str(out))
    rows = json.loads(out.read_text())
    assert [r["case"].split()[0] for r in rows] == ["gmm", "hmm", "prodlda"]
    assert all(r["ppgen_ms"] > 0 and r["pyro_ms"] > 0 for r in rows)


def test_rbm_mnist_benchmark_runs(tmp_path):
    out = tmp_path / "rbm.json"
    # PYTHONPATH: this checkout's ppgen, whatever the environment has installed.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "rbm_mnist.py"), "--quick", "--json",
         str(out)], capture_output=True, text=True, timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stdout = proc.stdout
    assert "| scikit-learn BernoulliRBM (PCD-1) |" in stdout
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(math.isfinite(r["test_ll"]) for r in rows)
    assert rows[3]["model"].startswith("ppgen DBM")
    products = json.loads(out.read_text())["products"]
    assert len(products) == 6 and all(v > 0 for r in products for v in r.values())


def test_gan_mnist_benchmark_quick(tmp_path):
    """--quick (DCGAN and the conditional GAN; FCC-GAN and StackGAN have their own tests):
    each trains and is scored by the digit-classifier metrics and AIS, and the timing rows
    exist (their values mean nothing at this size: the marginal epoch can even be < 0)."""
    from tests.common import shared_file

    shared_file("mnist.npz")
    out = tmp_path / "gan.json"
    _run_script("gan_mnist.py", "--quick", "--models", "dcgan,cgan", "--json", str(out))
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["rows"]] == ["dcgan", "cgan"]
    for r in report["rows"]:
        assert 0 <= r["class_coverage"] <= 10 and r["frechet_distance"] > 0
        assert math.isfinite(r["heldout_nats"])
    assert 0 < report["stacked"]["modes"] <= 1000
    assert len(report["epoch_seconds"]["plain"]) == len(report["epoch_seconds"]["ppgen"]) == 1


def test_generic_em_benchmark_runs_and_reaches_the_closed_form_log_likelihood():
    out = _run_script("generic_em.py", "--quick", "--svi-lr", "0.1", "--svi-budget", "1")
    assert "| generic EM, L-BFGS M-step |" in out
    assert "within 1e-6 relative: yes [PASS]" in out


def test_scale_benchmark_streams_a_file_and_runs_under_torchrun(tmp_path):
    """Memory-mapped files fitted in one process, the largest also by torchrun (two ranks,
    gloo; ppgen initialises the process group from torchrun's variables): the same
    log-likelihood as one process."""
    out = tmp_path / "scale.json"
    stdout = _run_script("scale.py", "--quick", "--rows", "20000", "--dir", str(tmp_path),
                         "--json", str(out))
    assert "| 20,000 | 1 | 2 |" in stdout
    rows = json.loads(out.read_text())
    assert [(r["rows"], r["processes"]) for r in rows] == [(20000, 1), (20000, 2)]
    assert abs(rows[1]["log_lik"] - rows[0]["log_lik"]) <= 1e-6 * abs(rows[0]["log_lik"])


def test_mcmc_benchmark_runs_nuts_and_chees():
    """--quick: eight schools, the Old Faithful mixture and (with the shared MNIST file)
    logistic regression, Pyro's NUTS with and without the JIT and ChEES, in one run."""
    from ppgen.datasets import data_dir

    try:
        has_mnist = (data_dir() / "mnist.npz").exists()
    except FileNotFoundError:
        has_mnist = False
    models = "schools,faithful" + (",logistic" if has_mnist else "")
    proc = subprocess.run(  # this checkout's ppgen, not the editable install's
        [sys.executable, str(ROOT / "benchmarks" / "mcmc.py"), "--quick", "--models", models],
        capture_output=True, text=True, timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stdout = proc.stdout
    for row in ("| Pyro NUTS (jit) | 4 |", "| Pyro NUTS (no jit) | 4 |",
                "| ppgen chees, 4 chains | 4 |", "| ppgen chees, 8 chains | 8 |",
                "| BatchedPotential (vmap) | 8 |", "| BatchedPotential (plate-jit) | 8 |",
                "| per-chain loop (fallback) | 4 |", "## Old Faithful mixture",
                "## eight schools"):
        assert row in stdout, row
    assert ("## logistic regression (MNIST 8 vs rest, 2,000 rows" in stdout) == has_mnist
    tables = [line.split("|")[1:-1] for line in stdout.splitlines()
              if line.startswith(("| Pyro NUTS", "| ppgen chees"))]
    assert len(tables) == 4 + 3 + 3 * has_mnist
    for cells in tables:
        chains, draws, ess, cpu, wall = (float(cells[i]) for i in (1, 2, 3, 8, 9))
        assert 0 < ess <= 2 * chains * draws and cpu > 0 and wall > 0, cells
        per_cpu = float(cells[10])  # ESS / CPU s; ESS printed to 1, CPU s to 0.1 s
        low, high = (ess - 0.5) / (cpu + 0.051), (ess + 0.5) / max(cpu - 0.051, 1e-9)
        assert low - 0.06 <= per_cpu <= high + 0.06, cells
    assert "load average before" in stdout and "load average after" in stdout


def test_mcmc_benchmark_minimum_bulk_ess_is_over_every_scalar():
    import importlib.util

    import arviz as az
    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location("bench_mcmc", ROOT / "benchmarks" / "mcmc.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_mcmc"] = bench  # dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules["bench_mcmc"]
    rng = np.random.default_rng(0)
    iid = rng.standard_normal((4, 500, 3))
    sticky = iid.copy()
    for t in range(1, 500):  # AR(1) with coefficient 0.95 in the second scalar of "b"
        sticky[:, t, 1] = 0.95 * sticky[:, t - 1, 1] + 0.3 * iid[:, t, 1]
    posterior = {"a": torch.from_numpy(iid[..., 0]), "b": torch.from_numpy(sticky)}
    ess, where = bench.min_bulk_ess(posterior, ("a", "b"))
    assert where == "b[1]"
    assert ess == pytest.approx(float(az.ess(sticky[..., 1], method="bulk")))
    assert ess < 0.2 * float(az.ess(iid[..., 0], method="bulk"))


def test_deterministic_draws_benchmark_quick():
    out = _run_script("deterministic_draws.py", "--quick")
    row = next(ln for ln in out.splitlines() if ln.startswith("| 8 x 20 |"))
    assert row.endswith("| 0.0e+00 |"), row  # the same values both ways
