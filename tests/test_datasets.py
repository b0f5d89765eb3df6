"""Loaders and synthetic generators of ppgen.datasets (topic-model data, digits, MNIST)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.sparse
import torch

from ppgen.datasets import (
    DynamicBinarized,
    data_dir,
    load_ap_corpus,
    load_digits,
    load_mnist,
    make_corpus,
)
from tests.common import assert_close, requires_cuda, shared_file

# ------------------------------------------------------------------------------ AP corpus


@pytest.fixture(scope="module")
def ap():
    return load_ap_corpus()


def test_ap_corpus_matches_manifest(ap):
    counts, vocabulary = ap
    assert scipy.sparse.isspmatrix_csr(counts)
    assert counts.shape == (2246, 10473)
    assert counts.dtype == np.float32
    assert counts.nnz == 302031
    assert int(counts.sum()) == 435838
    lengths = np.asarray(counts.sum(1)).ravel()
    assert lengths.min() == 2 and lengths.max() == 620  # no empty document
    assert counts.data.min() == 1 and counts.data.max() == 36
    assert np.all(counts.data == np.round(counts.data))
    assert len(vocabulary) == 10473 and all(isinstance(w, str) and w for w in vocabulary)
    assert len(set(vocabulary)) == 10473
    assert vocabulary[:3] == ["i", "new", "percent"] and vocabulary[-1] == "buffs"


def test_ap_corpus_dtype():
    counts, _ = load_ap_corpus(dtype=torch.int64)
    assert counts.dtype == np.int64 and int(counts.sum()) == 435838
    counts64, _ = load_ap_corpus(dtype=torch.float64)
    assert counts64.dtype == np.float64
    with pytest.raises(TypeError, match=r"^dtype:"):
        load_ap_corpus(dtype=np.float32)
    with pytest.raises(TypeError, match=r"^dtype:"):
        load_ap_corpus(dtype=torch.bfloat16)


def test_ap_corpus_is_theshared_file():
    """The packaged copy is byte for byte ../shared/data's (MANIFEST.md section 4)."""
    from importlib import resources

    try:
        shared = data_dir()
    except FileNotFoundError:
        pytest.skip("no shared data directory")
    for name in ("ap_corpus.npz", "ap_vocab.txt"):
        if not (shared / name).exists():
            pytest.skip(f"{name} not in the shared data directory")
        packaged = resources.files("ppgen.datasets").joinpath(f"data/{name}").read_bytes()
        assert hashlib.sha256(packaged).hexdigest() == hashlib.sha256(
            (shared / name).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- make_corpus


def test_make_corpus_shapes_and_lengths():
    counts, truth = make_corpus(300, 60, 4, doc_length=(20, 80), seed=3)
    assert counts.shape == (300, 60) and counts.dtype == torch.float64
    assert truth["topic_word"].shape == (4, 60) and truth["doc_topics"].shape == (300, 4)
    lengths = truth["doc_lengths"]
    assert lengths.dtype == torch.long and lengths.min() >= 20 and lengths.max() <= 80
    assert lengths.unique().numel() > 20  # really drawn, not constant
    assert_close(counts.sum(-1), lengths.double())
    assert bool((counts == counts.round()).all()) and bool((counts >= 0).all())
    assert_close(truth["topic_word"].sum(-1), torch.ones(4), rtol=1e-12)
    assert_close(truth["doc_topics"].sum(-1), torch.ones(300), rtol=1e-12)
    fixed, t2 = make_corpus(10, 30, 3, doc_length=7, dtype=torch.float32)
    assert fixed.dtype == torch.float32 and bool((fixed.sum(-1) == 7).all())
    assert bool((t2["doc_lengths"] == 7).all())


def test_make_corpus_seeded():
    a, ta = make_corpus(50, 40, 3, seed=5)
    b, tb = make_corpus(50, 40, 3, seed=5)
    c, _ = make_corpus(50, 40, 3, seed=6)
    assert torch.equal(a, b) and torch.equal(ta["topic_word"], tb["topic_word"])
    assert not torch.equal(a, c)
    state = torch.random.get_rng_state()
    make_corpus(5, 10, 2, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_make_corpus_topics_own_their_blocks():
    """Each topic puts most of its weight, and most of its top words, on its own block of
    V // K consecutive words, and topics are far apart (what makes them recoverable)."""
    k, v = 5, 100
    for seed in range(10):
        _, truth = make_corpus(2, v, k, seed=seed)
        beta = truth["topic_word"]
        in_block = (beta.topk(10, -1).indices // (v // k)) == torch.arange(k)[:, None]
        assert float(in_block.double().mean(-1).min()) >= 0.5
        # Expected share of the block: (1 + eta) / (1 + K eta) = 1.05 / 1.25 = 0.84.
        share = beta.reshape(k, k, v // k).sum(-1).diagonal()
        assert float(share.min()) > 0.5
        tv = 0.5 * (beta[:, None] - beta[None]).abs().sum(-1)
        assert float((tv + torch.eye(k)).min()) > 0.5


def test_make_corpus_word_frequencies_follow_the_model():
    """Total count of each word against its expectation sum_d L_d (theta_d @ beta)_w, within
    5 standard deviations (a sum of independent multinomial counts given the parameters)."""
    counts, truth = make_corpus(400, 30, 3, doc_length=(50, 150), seed=1)
    probs = truth["doc_topics"] @ truth["topic_word"]
    lengths = truth["doc_lengths"].double()[:, None]
    expected = (lengths * probs).sum(0)
    sd = (lengths * probs * (1 - probs)).sum(0).sqrt()
    z = (counts.sum(0) - expected) / sd
    assert float(z.abs().max()) < 5, z


@pytest.mark.parametrize("kwargs, arg, exc", [
    ({"num_topics": 11, "vocab_size": 10}, "num_topics", ValueError),
    ({"doc_length": 0}, "doc_length", ValueError),
    ({"doc_length": (5, 3)}, "doc_length", ValueError),
    ({"doc_length": (5, 6, 7)}, "doc_length", ValueError),
    ({"doc_topic_prior": 0.0}, "doc_topic_prior", ValueError),
    ({"topic_word_prior": -1.0}, "topic_word_prior", ValueError),
    ({"num_docs": 0}, "num_docs", ValueError),
    ({"dtype": torch.int64}, "dtype", TypeError),
])
def test_make_corpus_bad_input(kwargs, arg, exc):
    args = {"num_docs": 5, "vocab_size": 10, "num_topics": 2} | kwargs
    with pytest.raises(exc, match=rf"^{arg}"):
        make_corpus(**args)


# ---------------------------------------------------------------------------------- digits


def test_load_digits_matches_manifest():
    images, labels = load_digits()
    assert images.shape == (1797, 64) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert bool(((images * 16) == (images * 16).round()).all())  # pixel / 16
    assert labels.bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    x64, _ = load_digits(dtype=torch.float64)
    assert x64.dtype == torch.float64 and torch.equal(x64.float(), images)
    with pytest.raises(TypeError, match=r"^dtype:"):
        load_digits(dtype=torch.int64)


def test_digits_is_theshared_file():
    """The packaged copy is byte for byte ../shared/data's (MANIFEST.md section 5)."""
    from importlib import resources

    shared = shared_file("sklearn_digits.csv.gz")
    packaged = resources.files("ppgen.datasets").joinpath("data/sklearn_digits.csv.gz")
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == hashlib.sha256(
        shared.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------- MNIST

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist_dir():
    return shared_file("mnist.npz").parent


@pytest.fixture(scope="module")
def binarized_dir():
    return shared_file("binarized_mnist_packed.npz").parent


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    return load_mnist("test", data_dir=mnist_dir)


def test_mnist_intensity_splits(mnist_dir, mnist_test):
    x, y = mnist_test
    assert x.shape == (10000, 784) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.bincount().tolist() == MNIST_TEST_COUNTS
    assert y[:5].tolist() == [7, 2, 1, 0, 4]  # the original MNIST test order
    train, y_train = load_mnist("train", data_dir=mnist_dir)
    valid, y_valid = load_mnist("valid", data_dir=mnist_dir, dtype=torch.float64)
    assert train.shape == (50000, 784) and valid.shape == (10000, 784)
    assert valid.dtype == torch.float64
    # train + valid are MNIST train in order: their class counts add up to train's
    assert (y_train.bincount() + y_valid.bincount()).tolist() == MNIST_TRAIN_COUNTS
    mean = (float(train.double().sum()) + float(valid.sum())) / (60000 * 784)
    assert abs(mean - 0.13066) < 5e-6  # MANIFEST: mean train pixel / 255


@pytest.mark.parametrize("split, mean, size", [("train", 0.1306, 50000),
                                               ("valid", 0.1311, 10000),
                                               ("test", 0.1325, 10000)])
def test_mnist_fixed_binarization(binarized_dir, split, mean, size):
    x, labels = load_mnist(split, binarize="fixed", data_dir=binarized_dir)
    assert labels is None  # not stored with Larochelle's files
    assert x.shape == (size, 784) and x.dtype == torch.float32
    assert x.is_contiguous()  # rows in memory order: minibatch gathers are not strided
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert abs(float(x.mean()) - mean) < 5e-5  # MANIFEST rounds to 4 digits


def test_mnist_dynamic_binarization(mnist_dir, mnist_test):
    data, y = load_mnist("test", binarize="dynamic", data_dir=mnist_dir)
    probs, labels = mnist_test
    assert isinstance(data, DynamicBinarized) and torch.equal(y, labels)
    assert len(data) == 10000 and data.shape == (10000, 784)
    assert data.dtype == torch.float32 and data.device == torch.device("cpu")
    assert torch.equal(data.probs, probs)
    index = torch.arange(2000)
    a, b = data.take(index), data.take(index)
    assert a.shape == (2000, 784) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(a, b)  # fresh draws each call
    # Mean of 1.568M Bernoulli draws against the mean intensity: sd <= 0.5 / sqrt(n).
    n = a.numel()
    assert abs(float(a.mean()) - float(probs[index].mean())) < 5 * 0.5 / n ** 0.5
    # Pixels that are exactly 0 or 1 stay so.
    assert bool((a[probs[index] == 0] == 0).all()) and bool((a[probs[index] == 1] == 1).all())


def test_dynamic_binarized_is_reproducible():
    probs = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    data = DynamicBinarized(probs)
    state = torch.random.get_rng_state()
    assert torch.equal(data.fixed(3), data.fixed(3))
    assert not torch.equal(data.fixed(3), data.fixed(4))
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(data.take([1, 5, 9], generator=g1), data.take([1, 5, 9], generator=g2))
    assert torch.equal(data.take(slice(0, 10), generator=g1),
                       data.take(slice(0, 10), generator=g2))
    assert data.take(4).shape == (20,)
    g = torch.Generator().manual_seed(0)  # seeded: the suite's order must not matter
    draws = torch.stack([data.take(torch.arange(300), generator=g) for _ in range(200)])
    sd = (probs * (1 - probs) / 200).sqrt()
    # z-scores of 6,000 means; the floor on sd keeps the normal approximation honest for
    # probabilities near 0 or 1 (max |z| over seeds 0-29 of the generator: 5.44).
    assert float(((draws.mean(0) - probs).abs() / sd.clamp_min(0.01)).max()) < 6
    assert data.to("cpu") is data
    d64 = data.to(dtype=torch.float64)
    assert d64.dtype == torch.float64 and d64.take([0]).dtype == torch.float64
    assert "DynamicBinarized(shape=(300, 20)" in repr(data)


@requires_cuda
def test_dynamic_binarized_on_gpu():
    data = DynamicBinarized(torch.rand(50, 8)).to("cuda")
    assert data.device.type == "cuda"
    g = torch.Generator(device="cuda").manual_seed(1)
    assert data.take(torch.arange(10), generator=g).device.type == "cuda"
    assert data.fixed(0).device.type == "cuda"


def test_dynamic_binarized_bad_input():
    with pytest.raises(TypeError, match=r"^probs:"):
        DynamicBinarized(torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"^probs: expected values in \[0, 1\]"):
        DynamicBinarized(torch.full((3, 2), 2.0))
    with pytest.raises(TypeError, match=r"^seed:"):
        DynamicBinarized(torch.rand(3, 2)).fixed(None)


def test_mnist_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PPGEN_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist("test", data_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith("mnist.npz: not found in") and str(tmp_path) in msg
    assert "PPGEN_DATA_DIR" in msg and "data_dir argument" in msg
    with pytest.raises(FileNotFoundError, match=r"^binarized_mnist_packed\.npz: not found"):
        load_mnist("test", binarize="fixed", data_dir=tmp_path)


def test_mnist_honours_ppgen_data_dir(tmp_path, monkeypatch):
    """PPGEN_DATA_DIR is where the files are read from (a tiny stand-in file here)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=10000, dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_test=x, y_test=y)
    monkeypatch.setenv("PPGEN_DATA_DIR", str(tmp_path))
    images, labels = load_mnist("test", dtype=torch.float64)
    assert torch.equal(images, torch.from_numpy(x.reshape(10000, 784) / 255.0))
    assert torch.equal(labels, torch.from_numpy(y.astype(np.int64)))
    # data_dir wins over the environment variable
    with pytest.raises(FileNotFoundError, match="data_dir argument"):
        load_mnist("test", data_dir=tmp_path / "elsewhere")
    monkeypatch.setenv("PPGEN_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="PPGEN_DATA_DIR environment variable"):
        load_mnist("test")


def test_mnist_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"^mnist\.npz: expected a numpy \.npz file"):
        load_mnist("test", data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((5, 28, 28), np.uint8),
             y_test=np.zeros(5, np.uint8))  # wrong shape
    with pytest.raises(ValueError, match=r"cannot be read as one \(array 'x_test'"):
        load_mnist("test", data_dir=tmp_path)
    np.savez(tmp_path / "binarized_mnist_packed.npz", train=np.zeros((3, 98), np.uint8))
    with pytest.raises(ValueError, match=r"^binarized_mnist_packed\.npz: expected"):
        load_mnist("test", binarize="fixed", data_dir=tmp_path)  # no 'test' array


@pytest.mark.parametrize("kwargs, arg, exc", [
    ({"split": "validation"}, "split", ValueError),
    ({"binarize": "stochastic"}, "binarize", ValueError),
    ({"dtype": torch.uint8}, "dtype", TypeError),
    ({"data_dir": 3}, "data_dir", TypeError),
])
def test_mnist_bad_input(kwargs, arg, exc):
    with pytest.raises(exc, match=rf"^{arg}:"):
        load_mnist(**kwargs)
