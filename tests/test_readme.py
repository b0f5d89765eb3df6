"""Every ```python block of README.md runs as written, top to bottom, in a fresh interpreter.

The blocks run in one namespace (a notebook's kernel), in a new process whose working
directory is a temporary folder (the snippets write gmm.pt and runs/vae there).

Smoke mode (the default here, as for the tutorials): the code is the README's, but the costly
numbers are capped before the run, as tutorials/README.md describes for the notebooks:
``ppgen.fit`` gets at most 5 EM/SVI steps or 2 epochs, and for MCMC 20 warm-up steps, 20
draws and 2 chains; the AP corpus and the JSB chorales are cut to their first 300 documents
and 30 sequences. Capped fits cannot converge, so convergence warnings are ignored there; any
other warning that names a README line fails the test.

Full mode (``PPGEN_README_FULL=1``, minutes): nothing is capped, and any warning that names a
README line (a ``ConvergenceWarning`` included) fails the test: the README's examples run
without warnings at their own settings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a markdown text, each with the line its code starts on."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


RUNNER = r'''
import json, sys, traceback, warnings

blocks, smoke = json.loads(open(sys.argv[1]).read()), sys.argv[2] == "1"
readme = sys.argv[3]
if smoke:
    import functools
    import ppgen
    import ppgen.datasets as datasets

    CAPS = {"em": {"num_steps": 5}, "svi": {"num_steps": 5, "num_epochs": 2},
            "mcmc": {"num_warmup": 20, "num_samples": 20, "num_chains": 2}}
    real_fit = ppgen.fit

    @functools.wraps(real_fit)
    def capped_fit(model, data=None, method="svi", **options):
        caps = dict(CAPS[method])
        if method == "svi":  # an epoch budget or a step budget, whichever the call uses
            caps.pop("num_steps" if "num_epochs" in options else "num_epochs")
        for name, cap in caps.items():
            options[name] = min(options.get(name, cap), cap)
        return real_fit(model, data, method, **options)

    ppgen.fit = capped_fit
    real_ap, real_jsb = datasets.load_ap_corpus, datasets.load_jsb_chorales

    def small_ap(**kwargs):
        counts, vocab = real_ap(**kwargs)
        return counts[:300], vocab

    def small_jsb(*args, **kwargs):
        rolls, lengths = real_jsb(*args, **kwargs)
        return rolls[:30], lengths[:30]

    datasets.load_ap_corpus, datasets.load_jsb_chorales = small_ap, small_jsb

namespace = {"__name__": "__main__"}
ours = []
for start, code in blocks:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exec(compile("\n" * (start - 1) + code, readme, "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"README block at line {start} failed", file=sys.stderr)
            sys.exit(3)
    found = [w for w in caught if w.filename == readme
             and not (smoke and w.category.__name__ == "ConvergenceWarning")]
    for w in found:  # reported as they come: a full run takes minutes
        print(f"WARNING {w.filename}:{w.lineno}: {w.category.__name__}: {w.message}",
              file=sys.stderr, flush=True)
    print(f"README block at line {start}: ran, {len(found)} warnings", file=sys.stderr,
          flush=True)
    ours += found
sys.exit(4 if ours else 0)
'''


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    assert all(code.strip() for _, code in blocks)


def test_readme_lists_every_tutorial():
    text = README.read_text()
    section = text.split("## Tutorials", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"tutorials/(\w+\.ipynb)", section))
    found = {p.name for p in (ROOT / "tutorials").glob("*.ipynb")}
    assert found, "no notebooks in tutorials/"
    assert found == listed, (f"README's Tutorials section misses {sorted(found - listed)} "
                             f"and lists missing {sorted(listed - found)}")


@pytest.mark.slow
def test_readme_blocks_run(tmp_path):
    full = os.environ.get("PPGEN_README_FULL", "0") == "1"
    blocks = python_blocks(README.read_text())
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), "MPLBACKEND": "Agg",
        "PPGEN_SMOKE": "0" if full else "1"}
    if not full:
        env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, str(tmp_path / "runner.py"), "blocks.json",
                           "0" if full else "1", str(README)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-6000:]
