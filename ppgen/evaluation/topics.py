"""Topic-model evaluation: document completion, perplexity and NPMI coherence.

Topic models (LDA, ProdLDA, or any model that ends in a topic-word matrix, scikit-learn's
included) are measured here by two rules that only need the topics:

* :func:`document_completion`: held-out log-likelihood and perplexity of the second half of
  each document's tokens given the first half (Wallach et al. 2009), in nats;
* :func:`npmi_coherence`: how often each topic's top words occur together in the documents of
  a reference corpus (normalised PMI; Bouma 2009, Lau et al. 2014).

Every function takes document-term counts as scipy.sparse, torch sparse or dense matrices of
shape (num_docs, vocab_size), and is vectorised over documents, words and topics.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from .._validation import (
    bad_type,
    bad_value,
    check_positive_float,
    check_positive_int,
)
from ..models.topic.ops import Corpus, as_corpus, fit_doc_topics

__all__ = ["split_documents", "document_completion", "perplexity", "npmi_coherence"]

#: How far a topic's probabilities may sum from 1 (float32 rounding over large vocabularies).
_SUM_TOL = 1e-4


# ------------------------------------------------------------------------------ helpers
def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_type("observed_fraction", "a number in (0, 1)",
                       f"{value!r} ({type(value).__name__})")
    if not 0 < value < 1:
        raise bad_value("observed_fraction", "a number strictly between 0 and 1", value,
                        "Both parts of each document need tokens: use e.g. 0.5.")
    return float(value)


def _check_topic_word(topic_word: Any) -> torch.Tensor:
    """Topic-word probabilities (K, V) as a float64 tensor on their own device."""
    if isinstance(topic_word, torch.Tensor):
        t = topic_word.detach()
    else:
        arr = np.asarray(topic_word)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise bad_type("topic_word", "a numeric (num_topics, vocab_size) matrix",
                           f"dtype {arr.dtype}")
        t = torch.as_tensor(arr)
    if t.is_sparse or t.layout != torch.strided or t.is_complex():
        raise bad_type("topic_word", "a dense real (num_topics, vocab_size) matrix",
                       f"{t.layout} tensor of dtype {t.dtype}")
    if t.dim() != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise bad_value("topic_word", "a matrix of shape (num_topics, vocab_size)",
                        f"shape {tuple(t.shape)}",
                        "For a single topic use topic_word.reshape(1, -1).")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise bad_value("topic_word", "finite, non-negative word probabilities",
                        "negative, NaN or infinite entries")
    sums = t.sum(-1)
    off = (sums - 1).abs()
    if bool((off > _SUM_TOL).any()):
        k = int(off.argmax())
        raise bad_value("topic_word", "rows that are probability vectors (each summing to 1)",
                        f"row {k} summing to {float(sums[k]):.6g}",
                        "Normalise the rows first, e.g. for scikit-learn's "
                        "LatentDirichletAllocation: lda.components_ / "
                        "lda.components_.sum(axis=1, keepdims=True).")
    return t / sums.unsqueeze(-1)


def _row_major(corpus: Corpus) -> Corpus:
    """The corpus's entries sorted by (document, word), so that a seed thins the same tokens
    whatever the input format."""
    order = torch.argsort(corpus.doc_ids * corpus.vocab_size + corpus.word_ids)
    return Corpus(corpus.doc_ids[order], corpus.word_ids[order], corpus.counts[order],
                  corpus.num_docs, corpus.vocab_size)


def _split_corpus(corpus: Corpus, fraction: float, seed: int) -> tuple[Corpus, Corpus]:
    """Binomial thinning of every entry: observed ~ Binomial(count, fraction)."""
    corpus = _row_major(corpus)
    counts = corpus.counts.to(torch.float64)
    g = torch.Generator(device=counts.device).manual_seed(int(seed))
    observed = torch.binomial(counts, torch.full_like(counts, fraction), generator=g)
    held = counts - observed

    def part(values: torch.Tensor) -> Corpus:
        keep = values > 0
        return Corpus(corpus.doc_ids[keep], corpus.word_ids[keep],
                      values[keep].to(corpus.counts.dtype), corpus.num_docs, corpus.vocab_size)

    return part(observed), part(held)


def _like_input(data: Any, corpus: Corpus) -> Any:
    """A count matrix in the format and dtype of ``data`` with the entries of ``corpus``."""
    rows, cols, vals = corpus.doc_ids, corpus.word_ids, corpus.counts
    shape = (corpus.num_docs, corpus.vocab_size)
    if hasattr(data, "tocoo") and hasattr(data, "nnz"):  # scipy.sparse -> CSR
        import scipy.sparse

        return scipy.sparse.csr_matrix(
            (vals.cpu().numpy().astype(data.dtype), (rows.cpu().numpy(), cols.cpu().numpy())),
            shape=shape)
    if isinstance(data, torch.Tensor):
        if data.layout == torch.strided:
            out = torch.zeros(shape, dtype=data.dtype, device=data.device)
            out[rows.to(data.device), cols.to(data.device)] = vals.to(data.dtype).to(data.device)
            return out
        out = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.to(data.dtype), shape,
                                      device=data.device, check_invariants=False).coalesce()
        return out if data.layout == torch.sparse_coo else out.to_sparse(layout=data.layout)
    arr = np.asarray(data)
    out = np.zeros(shape, dtype=arr.dtype)
    out[rows.cpu().numpy(), cols.cpu().numpy()] = vals.cpu().numpy()
    return out


# ------------------------------------------------------------------- document completion
def split_documents(counts: Any, *, observed_fraction: float = 0.5, seed: int = 0):
    """Split each document's tokens at random into an observed and a held-out part.

    The document-completion split of Wallach et al. (2009), for bags of words: each of a
    document's ``n_dw`` tokens of word w is observed with probability ``observed_fraction``,
    independently, so the observed count is ``Binomial(n_dw, observed_fraction)`` (binomial
    thinning) and the held-out count is the rest. Both parts keep every document and the
    vocabulary; a short document may end up with an empty part.

    Parameters
    ----------
    counts : scipy.sparse matrix, torch Tensor (dense or sparse), or array of shape \
(num_docs, vocab_size)
        Non-negative whole-number word counts.
    observed_fraction : float
        The probability, in (0, 1), that a token is observed.
    seed : int
        Seeds a ``torch.Generator`` (the global random state is left alone). The draws run
        over the non-zero entries in (document, word) order, so one seed splits a corpus the
        same way whatever its format (on one device).

    Returns
    -------
    observed, held_out : two count matrices of the shape and dtype of ``counts``
        scipy.sparse CSR for scipy.sparse input, a tensor of the same layout and device for
        a tensor, a numpy array otherwise. ``observed + held_out == counts``.

    Raises
    ------
    ValueError
        ``counts`` not 2-D, negative, fractional or not finite; ``observed_fraction`` outside
        (0, 1).

    References
    ----------
    Wallach, Murray, Salakhutdinov & Mimno (2009), "Evaluation methods for topic models",
    ICML.

    Examples
    --------
    >>> import torch
    >>> counts = torch.tensor([[4., 0., 2.], [1., 3., 0.]])
    >>> observed, held_out = split_documents(counts, seed=0)
    >>> bool((observed + held_out == counts).all())
    True
    """
    fraction = _check_fraction(observed_fraction)
    corpus = as_corpus(counts, arg="counts", dtype=torch.float64)
    observed, held = _split_corpus(corpus, fraction, seed)
    return _like_input(counts, observed), _like_input(counts, held)


def perplexity(log_lik: float | torch.Tensor, num_tokens: int | float | torch.Tensor) -> float:
    """Perplexity ``exp(-log_lik / num_tokens)`` of ``num_tokens`` tokens of total
    log-likelihood ``log_lik`` (nats): the size of a uniform vocabulary that would be as
    surprised by the tokens. Lower is better; a model that gives a scored token probability
    0 has perplexity ``inf``.

    Examples
    --------
    >>> import math
    >>> round(perplexity(-100 * math.log(50), 100), 6)  # 100 tokens, each of probability 1/50
    50.0
    """
    n = float(num_tokens)
    if not n > 0:
        raise bad_value("num_tokens", "a number of tokens > 0", num_tokens)
    return math.exp(-float(log_lik) / n)


def document_completion(topic_word: Any, counts: Any, *, doc_topic_prior: float,
                        observed_fraction: float = 0.5, seed: int = 0, max_iter: int = 100,
                        tol: float = 1e-3) -> dict[str, Any]:
    """Held-out log-likelihood and perplexity of topics by document completion.

    One rule for every topic model, so that their numbers can be compared: only the
    topic-word matrix is used, whichever model (ppgen's LDA, ProdLDA, scikit-learn's
    ``LatentDirichletAllocation``, ...) and inference produced it.

    1. Each document's tokens are split at random into an observed and a held-out part
       (:func:`split_documents` with the same ``observed_fraction`` and ``seed``).
    2. The document's topic proportions are folded in on the observed part, with the topics
       held fixed: the variational fixed point of LDA (Blei, Ng & Jordan 2003)
       ``gamma_dk = alpha + exp(E[log theta_dk]) sum_w n_dw beta_kw /
       sum_j exp(E[log theta_dj]) beta_jw`` and ``theta_hat_d = gamma_d / sum_k gamma_dk``
       (the prior mean for a document with nothing observed).
    3. The held-out tokens are scored under the completed document,
       ``log_lik_d = sum_w m_dw log(theta_hat_d @ beta)_w``, with ``m_dw`` the held-out
       counts. No multinomial coefficient is added: the score is per token, as perplexity.
       A held-out word to which every topic gives probability 0 makes ``log_lik`` -inf and
       the perplexity inf: smooth such topics first (LDA's posterior mean has no zeros).

    This is the plug-in (point-estimate) version of Wallach et al.'s (2009) document
    completion: theta is estimated once from the observed part instead of being integrated
    over. The computation runs in float64 on ``topic_word``'s device.

    Parameters
    ----------
    topic_word : Tensor or array of shape (num_topics, vocab_size)
        Each row a probability vector over the vocabulary (non-negative, summing to 1). For
        ppgen's LDA pass ``model.topic_word``; for scikit-learn normalise the rows of
        ``components_`` first: ``components_ / components_.sum(axis=1, keepdims=True)``.
    counts : scipy.sparse matrix, torch Tensor or array of shape (num_docs, vocab_size)
        Word counts of the documents to complete (test documents, not the training ones).
    doc_topic_prior : float
        alpha of the symmetric Dirichlet on the documents' topic proportions (the model's
        own; it only enters the fold-in).
    observed_fraction : float
        The probability, in (0, 1), that a token is in the observed part.
    seed : int
        Seed of the split.
    max_iter, tol : int, float
        Fold-in: most fixed-point iterations, and the mean absolute change of a document's
        gamma at which it stops.

    Returns
    -------
    dict
        ``perplexity`` (float): ``exp(-log_lik / num_tokens)``; ``log_lik`` (float): the
        total held-out log-likelihood in nats; ``num_tokens`` (int): the number of held-out
        tokens; ``per_doc`` (Tensor (num_docs,)): each document's held-out log-likelihood;
        ``doc_topics`` (Tensor (num_docs, num_topics)): the folded-in ``theta_hat``.

    Raises
    ------
    ValueError
        Bad ``topic_word`` (not 2-D, negative, rows not summing to 1), ``counts`` (negative,
        fractional, a different vocabulary size, no held-out token), or option.

    References
    ----------
    Wallach, Murray, Salakhutdinov & Mimno (2009), "Evaluation methods for topic models",
    ICML. Blei, Ng & Jordan (2003), "Latent Dirichlet allocation", JMLR.

    Examples
    --------
    >>> from ppgen.datasets import make_corpus
    >>> counts, truth = make_corpus(100, 40, 4, seed=0)
    >>> result = document_completion(truth["topic_word"], counts, doc_topic_prior=0.1)
    >>> result["num_tokens"] > 0 and result["perplexity"] < 40
    True
    """
    beta = _check_topic_word(topic_word)
    alpha = check_positive_float("doc_topic_prior", doc_topic_prior)
    fraction = _check_fraction(observed_fraction)
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_positive_float("tol", tol)
    corpus = as_corpus(counts, arg="counts", dtype=torch.float64, device=beta.device)
    if corpus.vocab_size != beta.shape[1]:
        raise bad_value("counts", f"{beta.shape[1]} columns, one per column of topic_word",
                        f"shape {(corpus.num_docs, corpus.vocab_size)}",
                        "Use the vocabulary the topics were fitted on.")
    observed, held = _split_corpus(corpus, fraction, seed)
    num_tokens = int(held.counts.sum())
    if num_tokens == 0:
        raise bad_value("counts", "documents with at least one held-out token",
                        f"{int(corpus.counts.sum())} tokens in all, none held out",
                        "Use longer documents or a smaller observed_fraction.")
    gamma = fit_doc_topics(observed, beta, alpha, max_iter=max_iter, tol=tol)
    theta = gamma / gamma.sum(-1, keepdim=True)
    word_probs = (theta[held.doc_ids] * beta.T[held.word_ids]).sum(-1)
    per_doc = torch.zeros(corpus.num_docs, dtype=torch.float64, device=beta.device)
    per_doc.index_add_(0, held.doc_ids, held.counts * word_probs.log())
    log_lik = float(per_doc.sum())
    return {"perplexity": perplexity(log_lik, num_tokens), "log_lik": log_lik,
            "num_tokens": num_tokens, "per_doc": per_doc, "doc_topics": theta}


# ------------------------------------------------------------------------------ coherence
def _top_word_ids(topics: Any, top_n: int | None, vocab_size: int,
                  device: torch.device) -> torch.Tensor:
    """The (K, n) word ids of each topic's top words, validated."""
    arg = "topic_word_or_top_ids"
    if isinstance(topics, torch.Tensor):
        t = topics.detach()
    else:
        arr = np.asarray(topics)
        if arr.dtype == object or arr.dtype.kind not in "iuf":
            raise bad_type(arg, "a (num_topics, vocab_size) float matrix or a (num_topics, "
                           "top_n) integer matrix of word ids", f"dtype {arr.dtype}")
        t = torch.as_tensor(arr)
    if t.layout != torch.strided or t.is_complex() or t.dtype == torch.bool:
        raise bad_type(arg, "a dense real or integer matrix", f"{t.layout} {t.dtype}")
    if t.dim() != 2 or t.shape[0] < 1:
        raise bad_value(arg, "a matrix (num_topics, vocab_size) or (num_topics, top_n)",
                        f"shape {tuple(t.shape)}", "For a single topic use reshape(1, -1).")
    t = t.to(device)
    if t.is_floating_point():  # scores of every word: take the top_n of each row
        n = 10 if top_n is None else check_positive_int("top_n", top_n, minimum=2)
        if t.shape[1] != vocab_size:
            raise bad_value(arg, f"{vocab_size} columns, one per word of reference_counts",
                            f"shape {tuple(t.shape)}", "Use the same vocabulary for both.")
        if n > vocab_size:
            raise bad_value("top_n", f"at most the vocabulary size ({vocab_size})", n)
        if not bool(torch.isfinite(t).all()):
            raise bad_value(arg, "finite word scores", "NaN or infinite entries")
        return t.topk(n, dim=-1).indices
    ids = t.long()
    if top_n is not None:
        n = check_positive_int("top_n", top_n, minimum=2)
        if n > ids.shape[1]:
            raise bad_value("top_n", f"at most the {ids.shape[1]} word ids given per topic", n)
        ids = ids[:, :n]
    if ids.shape[1] < 2:
        raise bad_value(arg, "at least 2 word ids per topic (coherence scores pairs)",
                        f"shape {tuple(ids.shape)}")
    if bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise bad_value(arg, f"word ids in [0, {vocab_size}) (the columns of "
                        "reference_counts)", f"ids from {int(ids.min())} to {int(ids.max())}")
    sorted_ids = ids.sort(-1).values
    if bool((sorted_ids[:, 1:] == sorted_ids[:, :-1]).any()):
        k = int((sorted_ids[:, 1:] == sorted_ids[:, :-1]).any(-1).nonzero()[0, 0])
        raise bad_value(arg, "distinct word ids within each topic",
                        f"a repeated id in topic {k}: {ids[k].tolist()}")
    return ids


def npmi_coherence(topic_word_or_top_ids: Any, reference_counts: Any, *,
                   top_n: int | None = None) -> torch.Tensor:
    """Topic coherence: the mean normalised PMI of the pairs of each topic's top words.

    For words i and j, with p(i) the fraction of reference documents containing i and
    p(i, j) the fraction containing both (a document counts once, however often it repeats
    a word),
    ``NPMI(i, j) = log(p(i, j) / (p(i) p(j))) / -log p(i, j)`` (Bouma 2009), in [-1, 1]:
    -1 for words that never occur together, 0 for independent words, +1 for words that
    always occur together. Conventions at the edges: a pair that never co-occurs scores
    -1 (the limit as p(i, j) -> 0; no smoothing epsilon), and a pair present in every
    document scores +1. A topic's coherence is the mean over its ``n (n - 1) / 2`` pairs of
    top words (Lau, Newman & Baldwin 2014, who found NPMI over document co-occurrence to
    track human judgements of topics).

    Parameters
    ----------
    topic_word_or_top_ids : Tensor or array
        Either a floating (num_topics, vocab_size) matrix of word scores (probabilities,
        or scikit-learn's unnormalised ``components_``: only the order within a row
        matters), of which each row's ``top_n`` words are taken, or an integer
        (num_topics, n) matrix of word ids (distinct within a row, most probable first).
    reference_counts : scipy.sparse matrix, torch Tensor or array of shape \
(num_docs, vocab_size)
        The documents co-occurrence is counted in (often a large held-out corpus); only
        whether a word occurs in a document is used.
    top_n : int, optional
        Number of top words per topic (at least 2). For a matrix of scores: 10 by default,
        at most vocab_size. For word ids: all given columns by default, or the first
        ``top_n`` of them.

    Returns
    -------
    Tensor of shape (num_topics,)
        Each topic's mean NPMI, float64, on the device of ``topic_word_or_top_ids``.

    Raises
    ------
    ValueError
        Bad counts, mismatched vocabulary, ``top_n`` above the vocabulary size (or the ids
        given), word ids out of range or repeated.

    References
    ----------
    Bouma (2009), "Normalized (pointwise) mutual information in collocation extraction",
    GSCL. Lau, Newman & Baldwin (2014), "Machine reading tea leaves: automatically evaluating
    topic coherence and topic model quality", EACL.

    Examples
    --------
    >>> import torch
    >>> reference = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    >>> npmi_coherence(torch.tensor([[0, 1], [0, 2]]), reference)
    tensor([ 1., -1.], dtype=torch.float64)
    """
    device = topic_word_or_top_ids.device if isinstance(topic_word_or_top_ids,
                                                        torch.Tensor) else None
    ref = as_corpus(reference_counts, arg="reference_counts", dtype=torch.float64,
                    device=device)
    ids = _top_word_ids(topic_word_or_top_ids, top_n, ref.vocab_size, ref.counts.device)
    dev = ids.device
    # Occurrence columns (num_docs, U) of the U distinct top words only.
    needed, local = torch.unique(ids, return_inverse=True)  # local: (K, n) in 0..U-1
    column = torch.full((ref.vocab_size,), -1, dtype=torch.long, device=dev)
    column[needed] = torch.arange(len(needed), device=dev)
    hit = column[ref.word_ids]
    sel = hit >= 0
    # 0/1 sums are exact in float32 below 2**24 documents; float64 beyond.
    occ_dtype = torch.float32 if ref.num_docs < 2**24 else torch.float64
    occ = torch.zeros(ref.num_docs, len(needed), dtype=occ_dtype, device=dev)
    occ[ref.doc_ids[sel], hit[sel]] = 1
    top = occ[:, local]  # (D, K, n)
    joint = torch.einsum("dki,dkj->kij", top, top).to(torch.float64) / ref.num_docs
    marginal = torch.diagonal(joint, dim1=-2, dim2=-1)  # (K, n): p(i)
    log_joint = joint.log()
    pmi = log_joint - marginal.log().unsqueeze(-1) - marginal.log().unsqueeze(-2)
    npmi = torch.where(joint <= 0, -torch.ones_like(joint),
                       torch.where(joint >= 1, torch.ones_like(joint), pmi / -log_joint))
    n = ids.shape[1]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=dev), diagonal=1)
    return npmi[:, upper].mean(-1)
