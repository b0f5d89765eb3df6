"""Saving and loading: atomic, safe, clear errors."""

import os

import pytest
import torch

import ppgen
from ppgen import GaussianMixture, NotFittedError


@pytest.fixture
def gmm(old_faithful):
    model = GaussianMixture(2, covariance="diag")
    ppgen.fit(model, old_faithful, method="em", seed=0, progress=False)
    return model


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(NotFittedError):
        ppgen.save(GaussianMixture(2), tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file(gmm, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    ppgen.save(gmm, path)
    good = path.read_bytes()

    def broken(obj, f, *args, **kwargs):
        f.write(b"half")  # ppgen serialises into a buffer, then writes the file
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        ppgen.save(gmm, path)
    assert path.read_bytes() == good  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04garbage"])
def test_corrupt_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="path: expected a ppgen model file.*corrupt"):
        ppgen.load(path)


def test_truncated_file(gmm, tmp_path):
    path = ppgen.save(gmm, tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be read"):
        ppgen.load(path)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="a file of another format"):
        ppgen.load(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ppgen-model", "payload": Evil()}, path)
    with pytest.raises(ValueError, match="could not be read"):
        ppgen.load(path)


def test_missing_file_and_directory(tmp_path, gmm):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ppgen.load(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="path: expected a file name"):
        ppgen.save(gmm, tmp_path)


def test_round_trip_keeps_priors_for_later_fits(gmm, tmp_path, old_faithful):
    loaded = ppgen.load(ppgen.save(gmm, tmp_path / "m.pt"))
    assert torch.equal(loaded.prior_scale, gmm.prior_scale)
    assert torch.equal(loaded.covariances, gmm.covariances)
