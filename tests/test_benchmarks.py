"""The benchmark scripts keep working (tiny sizes; timings are not checked here)."""

import subprocess
import sys
from pathlib import Path

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
