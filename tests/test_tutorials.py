"""Execute every tutorial notebook in smoke mode, as pyro's tests/test_examples.py runs its
examples.

Each notebook reads ``PPGEN_SMOKE=1`` in its first code cell and shrinks every costly number
(steps, draws, chains, subsample sizes), so the whole notebook runs in well under a minute and
a half. The kernel is this interpreter (``sys.executable``), through a kernel spec written to a
temporary folder, so the test works on a fresh clone after ``pip install -e .[dev]`` without
any ``jupyter kernelspec install`` and never picks up a ``python3`` kernel of another Python.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

#: Every notebook in tutorials/ must be listed here (a new one without a test fails below).
LISTED = (
    "00_your_own_model.ipynb",
    "01_gaussian_mixture.ipynb",
    "02_hidden_markov_model.ipynb",
    "03_topic_models.ipynb",
    "04_variational_autoencoder.ipynb",
    "05_boltzmann_machines.ipynb",
    "06_generative_adversarial_networks.ipynb",
)

NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def test_every_notebook_is_listed():
    found = {p.name for p in NOTEBOOKS}
    unlisted = sorted(found - set(LISTED))
    missing = sorted(set(LISTED) - found)
    assert not unlisted, f"notebooks not listed in tests/test_tutorials.py LISTED: {unlisted}"
    assert not missing, f"LISTED names notebooks that do not exist in tutorials/: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} hold outputs or execution counts; "
                       "clear them (jupyter nbconvert --clear-output --inplace) before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_smoke_flag(path):
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert 'os.environ.get("PPGEN_SMOKE", "0") == "1"' in first.source, (
        f"{path.name}: the first code cell must set SMOKE from the PPGEN_SMOKE variable")


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A ``python3`` kernel spec that runs this very interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ppgen tests)",
        "language": "python",
    }))
    return KernelSpecManager(kernel_dirs=[str(root)])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_specs, monkeypatch):
    monkeypatch.setenv("PPGEN_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The tutorials' models are tiny: torch's intra-op thread pool only adds overhead, and on a
    # busy 2-core machine it made NUTS 3-5x slower. One thread keeps smoke runs well under 90 s.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    client = nbclient.NotebookClient(nb, km=km, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:  # nbclient leaves a kernel manager it was given running
        if client.kc is not None:
            client.kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s in smoke mode")
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
