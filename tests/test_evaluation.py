"""ppgen.evaluation for topic models: the document-completion split, held-out perplexity and
NPMI coherence, each against an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.special import digamma

from ppgen.datasets import make_corpus
from ppgen.evaluation import document_completion, npmi_coherence, perplexity, split_documents
from tests.common import assert_close, requires_cuda


@pytest.fixture(scope="module")
def corpus():
    """200 documents over 50 words from 5 block topics (alpha = 0.1)."""
    return make_corpus(200, 50, 5, doc_length=(40, 120), doc_topic_prior=0.1, seed=0)


# ------------------------------------------------------------------------------- split


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_split_conserves_counts_and_fraction(corpus, fraction):
    counts, _ = corpus
    observed, held = split_documents(counts, observed_fraction=fraction, seed=1)
    assert observed.shape == held.shape == counts.shape and observed.dtype == counts.dtype
    assert torch.equal(observed + held, counts)
    assert bool((observed >= 0).all()) and bool((held >= 0).all())
    assert bool((observed == observed.round()).all())
    # Observed tokens ~ Binomial(N, fraction): within 4 standard deviations.
    n = float(counts.sum())
    sd = math.sqrt(n * fraction * (1 - fraction))
    assert abs(float(observed.sum()) - n * fraction) < 4 * sd
    # Each word type is thinned on its own: the split is not by word or by document.
    assert bool(((observed > 0) & (held > 0)).any())


def test_split_reproducible_by_seed(corpus):
    counts, _ = corpus
    a, _ = split_documents(counts, seed=3)
    b, _ = split_documents(counts, seed=3)
    c, _ = split_documents(counts, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = torch.random.get_rng_state()
    split_documents(counts, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_split_formats(corpus):
    """CSR in, CSR out (dtype kept); dense in, dense out; one seed, one split in any format."""
    counts, _ = corpus
    dense_obs, dense_held = split_documents(counts, seed=7)
    csr = scipy.sparse.csr_matrix(counts.numpy().astype(np.int32))
    obs, held = split_documents(csr, seed=7)
    assert scipy.sparse.isspmatrix_csr(obs) and scipy.sparse.isspmatrix_csr(held)
    assert obs.dtype == np.int32 and held.dtype == np.int32
    assert (obs + held != csr).nnz == 0
    assert np.array_equal(obs.toarray(), dense_obs.numpy())
    coo = scipy.sparse.coo_matrix(csr)
    assert np.array_equal(split_documents(coo, seed=7)[0].toarray(), dense_obs.numpy())
    arr_obs, arr_held = split_documents(counts.numpy(), seed=7)
    assert isinstance(arr_obs, np.ndarray) and np.array_equal(arr_obs, dense_obs.numpy())
    sparse_obs, _ = split_documents(counts.to_sparse(), seed=7)
    assert sparse_obs.layout == torch.sparse_coo
    assert torch.equal(sparse_obs.to_dense(), dense_obs)
    long_obs, _ = split_documents(counts.long(), seed=7)
    assert long_obs.dtype == torch.long and torch.equal(long_obs.double(), dense_obs)


# ------------------------------------------------------------------ document completion


def _fold_in_numpy(n_obs, beta, alpha, iters=5000, tol=1e-14):
    """Topic proportions of one document by the LDA fixed point, written directly."""
    gamma = np.ones(beta.shape[0])
    words = np.flatnonzero(n_obs)
    b = beta[:, words]
    for _ in range(iters):
        e = np.exp(digamma(gamma) - digamma(gamma.sum()))
        new = alpha + e * (b @ (n_obs[words] / (e @ b)))
        done = np.abs(new - gamma).max() < tol
        gamma = new
        if done:
            break
    return gamma / gamma.sum()


def test_document_completion_matches_brute_force(corpus):
    counts, truth = corpus
    beta = truth["topic_word"]
    out = document_completion(beta, counts, doc_topic_prior=0.1, seed=2, max_iter=5000,
                              tol=1e-13)
    observed, held = split_documents(counts, seed=2)
    observed, held, b = observed.numpy(), held.numpy(), beta.numpy()
    for d in [0, 1, 17, 99, 199]:
        theta = _fold_in_numpy(observed[d], b, 0.1)
        expected = float(held[d] @ np.log(theta @ b))
        assert_close(out["per_doc"][d], expected, rtol=1e-9, msg=f"document {d}")
        assert_close(out["doc_topics"][d], theta, rtol=1e-7, atol=1e-10)
    assert out["num_tokens"] == int(held.sum())
    assert_close(out["log_lik"], float(out["per_doc"].sum()), rtol=1e-12)
    assert_close(out["perplexity"], math.exp(-out["log_lik"] / out["num_tokens"]), rtol=1e-12)
    assert out["per_doc"].shape == (200,) and out["doc_topics"].shape == (200, 5)


def test_true_topics_beat_uniform_and_shuffled(corpus):
    counts, truth = corpus
    beta = truth["topic_word"]
    v = beta.shape[1]
    true = document_completion(beta, counts, doc_topic_prior=0.1)
    uniform = document_completion(torch.full_like(beta, 1 / v), counts, doc_topic_prior=0.1)
    shuffled = document_completion(beta[:, torch.randperm(v, generator=torch.Generator()
                                                            .manual_seed(0))],
                                   counts, doc_topic_prior=0.1)
    # Uniform topics give every word probability 1/V: perplexity V exactly, whatever theta.
    assert_close(uniform["perplexity"], v, rtol=1e-10)
    assert_close(uniform["log_lik"], -uniform["num_tokens"] * math.log(v), rtol=1e-12)
    assert true["num_tokens"] == uniform["num_tokens"] == shuffled["num_tokens"]
    assert true["perplexity"] < 0.6 * uniform["perplexity"]
    assert true["perplexity"] < 0.8 * shuffled["perplexity"]
    assert bool((true["per_doc"] >= uniform["per_doc"]).double().mean() > 0.9)


def test_document_completion_of_sklearn_components():
    """scikit-learn's LDA measured by the same rule, after normalising components_."""
    sklearn_lda = pytest.importorskip("sklearn.decomposition").LatentDirichletAllocation
    counts, truth = make_corpus(400, 50, 4, doc_length=(40, 100), seed=5)
    train, test = counts[:300].numpy(), counts[300:]
    lda = sklearn_lda(4, doc_topic_prior=0.1, learning_method="batch", max_iter=30,
                      random_state=0).fit(train)
    with pytest.raises(ValueError, match=r"^topic_word:.*components_"):
        document_completion(lda.components_, test, doc_topic_prior=0.1)
    fitted = lda.components_ / lda.components_.sum(axis=1, keepdims=True)
    got = document_completion(fitted, test, doc_topic_prior=0.1)["perplexity"]
    true = document_completion(truth["topic_word"], test, doc_topic_prior=0.1)["perplexity"]
    # (a local optimum of EM may cost some perplexity; the truth is not beaten by much)
    assert true * 0.9 < got < true * 1.5 and got < 0.6 * 50


def test_document_completion_on_the_ap_corpus():
    """A real corpus end to end: one topic spread evenly over the words scores every held-out
    token 1/V, so the perplexity is the vocabulary size (10473) exactly."""
    from ppgen.datasets import load_ap_corpus

    counts, vocabulary = load_ap_corpus()
    out = document_completion(np.full((1, len(vocabulary)), 1 / len(vocabulary)), counts,
                              doc_topic_prior=0.1, seed=0)
    observed, held = split_documents(counts, seed=0)
    assert out["num_tokens"] == int(held.sum()) and int(observed.sum() + held.sum()) == 435838
    assert_close(out["perplexity"], len(vocabulary), rtol=1e-9)


def test_perplexity_helper():
    assert_close(perplexity(-100 * math.log(50), 100), 50.0, rtol=1e-12)
    assert perplexity(float("-inf"), 10) == math.inf
    with pytest.raises(ValueError, match=r"^num_tokens:"):
        perplexity(-1.0, 0)


# ----------------------------------------------------------------------------- coherence


def test_npmi_hand_computed():
    """Five documents (rows) over five words, with some counts above 1 (only occurrence
    counts): p(0) = p(1) = 2/5, p(2) = 3/5, p(3) = 1/5, p(4) = 2/5."""
    reference = np.array([[1, 3, 0, 0, 0],
                          [2, 1, 1, 0, 0],
                          [0, 0, 4, 0, 1],
                          [0, 0, 0, 1, 0],
                          [0, 0, 1, 0, 2]])
    pairs = torch.tensor([[0, 1],   # always together: p(0, 1) = p(0) = p(1)   -> +1
                          [0, 3],   # never together                           -> -1
                          [2, 4],   # p = 2/5: log((2/5) / (3/5 * 2/5)) / -log(2/5)
                          [1, 2]])  # p = 1/5: log((1/5) / (2/5 * 3/5)) / -log(1/5)
    expected = [1.0, -1.0, math.log(5 / 3) / math.log(5 / 2), math.log(5 / 6) / math.log(5)]
    got = npmi_coherence(pairs, reference)
    assert got.shape == (4,) and got.dtype == torch.float64
    assert_close(got, expected, rtol=1e-12)
    # Three words: the mean of the three pairs.
    triple = npmi_coherence(torch.tensor([[0, 1, 2]]), scipy.sparse.csr_matrix(reference))
    assert_close(triple, [(1 + 2 * math.log(5 / 6) / math.log(5)) / 3], rtol=1e-12)
    # A matrix of word scores: its top_n words per row, in any order.
    scores = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05], [0.1, 0.2, 0.3, 0.0, 0.4]])
    assert_close(npmi_coherence(scores, reference, top_n=2), [expected[0], expected[2]],
                 rtol=1e-12)
    # Word ids: the first top_n of each row.
    assert_close(npmi_coherence(torch.tensor([[0, 1, 3]]), reference, top_n=2), [1.0])


def test_npmi_pair_in_every_document():
    """p(i, j) = 1 (0 / 0 in the formula) is scored +1, the limit of perfect co-occurrence."""
    reference = torch.tensor([[1, 1, 0], [2, 1, 1], [1, 5, 0]])
    assert_close(npmi_coherence(torch.tensor([[0, 1]]), reference), [1.0])
    assert_close(npmi_coherence(torch.tensor([[0, 2]]), reference),  # p(0, 2) = p(2) = 1/3
                 [math.log((1 / 3) / (1 / 3)) / math.log(3)], atol=1e-15)


def _npmi_brute_force(word_sets, reference):
    occurs = np.asarray(reference) > 0
    out = []
    for words in word_sets:
        scores = []
        for i, j in itertools.combinations(words, 2):
            p_i, p_j = occurs[:, i].mean(), occurs[:, j].mean()
            p_ij = (occurs[:, i] & occurs[:, j]).mean()
            if p_ij == 0:
                scores.append(-1.0)
            elif p_ij == 1:
                scores.append(1.0)
            else:
                scores.append(math.log(p_ij / (p_i * p_j)) / -math.log(p_ij))
        out.append(np.mean(scores))
    return np.array(out)


def test_true_topics_more_coherent_than_random_words(corpus):
    counts, truth = corpus
    got = npmi_coherence(truth["topic_word"], counts, top_n=8)
    top = truth["topic_word"].topk(8, -1).indices
    assert_close(got, _npmi_brute_force(top.tolist(), counts.numpy()), rtol=1e-10)
    g = torch.Generator().manual_seed(0)
    random_sets = torch.stack([torch.randperm(50, generator=g)[:8] for _ in range(20)])
    baseline = npmi_coherence(random_sets, counts)
    assert_close(baseline, _npmi_brute_force(random_sets.tolist(), counts.numpy()),
                 rtol=1e-10)
    assert float(got.min()) > float(baseline.mean()) + 0.1
    assert float(got.mean()) > float(baseline.max())


# ----------------------------------------------------------------------------- bad input


def _beta(k=3, v=6):
    return torch.full((k, v), 1 / v, dtype=torch.float64)


@pytest.mark.parametrize("call, arg", [
    (lambda c: split_documents(-c), "counts"),
    (lambda c: split_documents(c + 0.5), "counts"),
    (lambda c: split_documents(c[0]), "counts"),
    (lambda c: split_documents(c, observed_fraction=0.0), "observed_fraction"),
    (lambda c: split_documents(c, observed_fraction=1.0), "observed_fraction"),
    (lambda c: split_documents(c, observed_fraction=1.5), "observed_fraction"),
    (lambda c: document_completion(_beta(), -c, doc_topic_prior=0.1), "counts"),
    (lambda c: document_completion(_beta(v=7), c, doc_topic_prior=0.1), "counts"),
    (lambda c: document_completion(_beta()[0], c, doc_topic_prior=0.1), "topic_word"),
    (lambda c: document_completion(2 * _beta(), c, doc_topic_prior=0.1), "topic_word"),
    (lambda c: document_completion(-_beta(), c, doc_topic_prior=0.1), "topic_word"),
    (lambda c: document_completion(_beta(), c, doc_topic_prior=0.0), "doc_topic_prior"),
    (lambda c: document_completion(_beta(), c, doc_topic_prior=0.1, observed_fraction=-0.1),
     "observed_fraction"),
    (lambda c: npmi_coherence(_beta(), c, top_n=7), "top_n"),
    (lambda c: npmi_coherence(_beta(), c, top_n=1), "top_n"),
    (lambda c: npmi_coherence(_beta(v=5), c), "topic_word_or_top_ids"),
    (lambda c: npmi_coherence(torch.tensor([[0, 6]]), c), "topic_word_or_top_ids"),
    (lambda c: npmi_coherence(torch.tensor([[1, 1]]), c), "topic_word_or_top_ids"),
    (lambda c: npmi_coherence(torch.tensor([[0, 1]]), c, top_n=3), "top_n"),
    (lambda c: npmi_coherence(torch.tensor([[0, 1]]), -c), "reference_counts"),
])
def test_bad_input_names_the_argument(call, arg):
    counts = torch.tensor([[1., 0., 2., 0., 1., 3.], [0., 4., 1., 1., 0., 0.]])
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        call(counts)


def test_no_held_out_token():
    with pytest.raises(ValueError, match=r"^counts:.*held-out"):
        document_completion(_beta(v=2), torch.zeros(3, 2), doc_topic_prior=0.1)


@requires_cuda
@pytest.mark.gpu
def test_on_cuda_follows_the_topics_device(corpus):
    counts, truth = corpus
    beta = truth["topic_word"]
    out = document_completion(beta.cuda(), counts, doc_topic_prior=0.1)
    assert out["per_doc"].device.type == "cuda"
    assert out["perplexity"] < 0.6 * 50
    uniform = document_completion(torch.full_like(beta, 1 / 50).cuda(), counts,
                                  doc_topic_prior=0.1)
    assert_close(uniform["perplexity"], 50.0, rtol=1e-10)
    observed, held = split_documents(counts.cuda(), seed=0)
    assert observed.device.type == "cuda" and torch.equal((observed + held).cpu(), counts)
    top = beta.topk(8, -1).indices
    assert_close(npmi_coherence(top.cuda(), counts.cuda()), npmi_coherence(top, counts),
                 rtol=1e-12)
