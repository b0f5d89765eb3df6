# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first (pip finds it in local wheel folders when the machine has them).
	$(BIN)/python -m pip install --quiet "torch==2.13.0" || $(BIN)/python -m pip install --quiet torch
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ppgen fit gmm --data old-faithful --method em --num-components 2 --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check ppgen tests benchmarks

# mypy on the public API and a typed usage file (tests/typed_usage.py); scope in pyproject.toml.
typecheck: $(STAMP)
	$(BIN)/python -m mypy

test: lint typecheck
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

bench: $(STAMP)
	$(BIN)/python benchmarks/gmm_em.py
	$(BIN)/python benchmarks/hmm_em.py
	$(BIN)/python benchmarks/hmm_jsb.py
	$(BIN)/python benchmarks/lda.py
	$(BIN)/python benchmarks/threads.py
	$(BIN)/python benchmarks/vae_mnist.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
