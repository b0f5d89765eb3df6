"""The package ships its type information (PEP 561); `make typecheck` runs mypy on
tests/typed_usage.py and the public API modules."""

from pathlib import Path

import pytest

import ppgen

ROOT = Path(__file__).resolve().parents[1]


def test_py_typed_marker_is_in_the_package_and_its_package_data():
    tomllib = pytest.importorskip("tomllib")
    assert (Path(ppgen.__file__).parent / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["ppgen"]


def test_mypy_checks_the_typed_usage_file():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    files = config["tool"]["mypy"]["files"]
    assert "tests/typed_usage.py" in files
    assert all((ROOT / f).is_file() for f in files)
    assert "typecheck" in (ROOT / "Makefile").read_text().split("test:")[1].splitlines()[0]
