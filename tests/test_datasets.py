"""Loaders and synthetic generators of ppgen.datasets (topic-model data)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import scipy.sparse
import torch

from ppgen.datasets import data_dir, load_ap_corpus, make_corpus
from tests.common import assert_close

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


def test_ap_corpus_is_the_shared_file():
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
