"""Document-term counts and the variational inference steps of LDA (pure functions).

A corpus is held as its non-zero entries: ``doc_ids``, ``word_ids`` and ``counts`` (all of
length nnz), so every step costs O(nnz * K) and is vectorised over documents, words and
topics; documents whose topic proportions have converged drop out of the inner loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..._validation import bad_type, bad_value, not_numeric, tensor_from_array

__all__ = ["Corpus", "as_corpus", "source_dtype", "dirichlet_expectation", "fit_doc_topics",
           "lda_bound", "topic_word_statistics"]


@dataclass(frozen=True)
class Corpus:
    """Non-zero entries of a (num_docs, vocab_size) count matrix."""

    doc_ids: torch.Tensor
    word_ids: torch.Tensor
    counts: torch.Tensor
    num_docs: int
    vocab_size: int
    _layouts: dict = field(default_factory=dict, compare=False, repr=False)

    def layout(self) -> dict[str, torch.Tensor]:
        """Sparse layouts of the entries, built once: document-major CSR (``crow``, ``cols``,
        ``values`` and ``order``, the entries' permutation into it) and word-major CSR
        (``crow_t``, ``cols_t`` and ``to_t``, doc-major position -> word-major position)."""
        if "crow" not in self._layouts:
            v, d = self.vocab_size, self.num_docs
            order = torch.argsort(self.doc_ids * v + self.word_ids)
            docs, words = self.doc_ids[order], self.word_ids[order]
            crow = torch.zeros(d + 1, dtype=torch.long, device=docs.device)
            crow[1:] = torch.bincount(docs, minlength=d).cumsum(0)
            to_t = torch.argsort(words * d + docs)
            crow_t = torch.zeros(v + 1, dtype=torch.long, device=docs.device)
            crow_t[1:] = torch.bincount(words, minlength=v).cumsum(0)
            self._layouts.update(order=order, docs=docs, crow=crow, cols=words,
                                 values=self.counts[order], to_t=to_t, crow_t=crow_t,
                                 cols_t=docs[to_t])
        return self._layouts

    @property
    def doc_lengths(self) -> torch.Tensor:
        out = torch.zeros(self.num_docs, dtype=self.counts.dtype, device=self.counts.device)
        return out.index_add_(0, self.doc_ids, self.counts)

    def dense(self) -> torch.Tensor:
        out = torch.zeros(self.num_docs, self.vocab_size, dtype=self.counts.dtype,
                          device=self.counts.device)
        out[self.doc_ids, self.word_ids] = self.counts
        return out

    def rows(self, idx: torch.Tensor) -> Corpus:
        """The sub-corpus of documents ``idx`` (renumbered 0..len(idx)-1)."""
        where = torch.full((self.num_docs,), -1, dtype=torch.long, device=idx.device)
        where[idx] = torch.arange(len(idx), device=idx.device)
        keep = where[self.doc_ids] >= 0
        return Corpus(where[self.doc_ids[keep]], self.word_ids[keep], self.counts[keep],
                      len(idx), self.vocab_size)


_COUNTS = "a document-term count matrix (scipy.sparse, torch sparse or dense numbers)"
_BUILD_COUNTS = ("Topic models take word counts per document, not tokens: build a "
                 "(num_documents, vocabulary_size) count matrix first, e.g. with "
                 "sklearn.feature_extraction.text.CountVectorizer().fit_transform(texts).")


#: The largest count accepted: larger whole numbers are not exact in float64.
_MAX_COUNT = 2.0 ** 53


def as_corpus(data: Any, *, arg: str = "data", vocab_size: int | None = None,
              dtype: torch.dtype | str | None = None, device: Any = None,
              fitting: bool = False) -> Corpus:
    """Validate a document-term count matrix (scipy.sparse, torch sparse or dense).

    ``dtype``: the counts' floating type; None for torch's default, ``"data"`` for the
    input's own floating type (torch's default for integer counts). ``fitting``: the counts
    are being fitted (``vocab_size`` is then the model's ``vocabulary``, and a fitted model's
    ``impute`` is no remedy yet).
    """
    if data is None:
        raise not_numeric(arg, data, _COUNTS, _BUILD_COUNTS)
    source = source_dtype(data)
    if hasattr(data, "tocoo") and hasattr(data, "nnz"):  # scipy.sparse
        coo = data.tocoo(copy=True)  # sum_duplicates works in place
        coo.sum_duplicates()
        rows, cols, vals = coo.row, coo.col, coo.data
        shape = coo.shape
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        cols_t = torch.as_tensor(np.asarray(cols, dtype=np.int64))
        if vals.dtype.kind not in "biuf":
            raise bad_type(arg, "numeric counts", f"dtype {vals.dtype}", _BUILD_COUNTS)
        vals_t = torch.as_tensor(np.asarray(vals, dtype=np.float64))
    elif isinstance(data, torch.Tensor) and data.is_sparse:
        coo = data.coalesce()
        rows_t, cols_t = coo.indices()
        vals_t = coo.values().to(torch.float64)
        shape = tuple(coo.shape)
    elif isinstance(data, torch.Tensor) and data.layout != torch.strided:
        return as_corpus(data.to_sparse_coo(), arg=arg, vocab_size=vocab_size, dtype=dtype,
                         device=device)
    else:
        if not isinstance(data, torch.Tensor):
            try:
                arr = np.asarray(data)
            except ValueError as exc:  # ragged lists (e.g. token lists of unequal length)
                raise not_numeric(arg, data, _COUNTS, _BUILD_COUNTS) from exc
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise not_numeric(arg, data, _COUNTS, _BUILD_COUNTS)
            data = tensor_from_array(arr)
        if data.is_complex():
            raise bad_type(arg, "real-valued counts", f"dtype {data.dtype}",
                           "Take the real part or convert it with .to(torch.float64).")
        if data.dim() != 2:
            raise bad_value(arg, "2 dimensions (num_documents, vocabulary_size)",
                            f"shape {tuple(data.shape)}",
                            "For one document use counts.reshape(1, -1).")
        shape = tuple(data.shape)
        rows_t, cols_t = data.nonzero(as_tuple=True)
        vals_t = data[rows_t, cols_t].to(torch.float64)
        finite = torch.isfinite(data.to(torch.float64))
        if not bool(finite.all()):
            doc, word = (int(i) for i in (~finite).nonzero()[0])
            remedy = ("Fill missing counts with model.impute(counts) (a fitted model completes "
                      "them), or drop those documents.")
            if fitting:
                remedy = ("Fitting needs complete counts: drop those documents or set the "
                          "missing counts to 0; once fitted, model.impute(counts) completes "
                          "missing entries.")
            raise bad_value(arg, "finite counts (no missing entries)",
                            f"{int((~finite).sum())} NaN or infinite entries (first in document "
                            f"{doc}, word {word})", remedy)
    if len(shape) != 2:
        raise bad_value(arg, "2 dimensions (num_documents, vocabulary_size)", f"shape {shape}")
    if shape[0] < 1:
        raise bad_value(arg, "at least one document", f"shape {shape}")
    if not bool(torch.isfinite(vals_t).all()):
        raise bad_value(arg, "finite counts", "NaN or infinite entries")
    if bool((vals_t < 0).any()):
        i = int((vals_t < 0).nonzero()[0, 0])
        raise bad_value(arg, "non-negative word counts", f"{float(vals_t[i])} in document "
                        f"{int(rows_t[i])}, word {int(cols_t[i])}",
                        "Topic models take raw counts (not tf-idf or centred values).")
    if bool((vals_t != vals_t.round()).any()):
        i = int((vals_t != vals_t.round()).nonzero()[0, 0])
        raise bad_value(arg, "integer word counts", f"{float(vals_t[i])} in document "
                        f"{int(rows_t[i])}, word {int(cols_t[i])}",
                        "Topic models take raw counts (not tf-idf); round them first.")
    if bool((vals_t > _MAX_COUNT).any()):
        i = int((vals_t > _MAX_COUNT).nonzero()[0, 0])
        raise bad_value(arg, "word counts up to 2**53 (whole numbers exact in float64)",
                        f"{float(vals_t[i]):g} in document {int(rows_t[i])}, word "
                        f"{int(cols_t[i])}", "Topic models take raw counts of words; check "
                        "the data's scale.")
    if vocab_size is not None and shape[1] != vocab_size:
        if fitting:
            raise bad_value(arg, f"{vocab_size} columns (one per word of the model's "
                            "vocabulary)", f"shape {tuple(shape)}", "Count the documents "
                            "over that vocabulary, or build the model with vocabulary= the "
                            "data's own vocabulary (or none).")
        raise bad_value(arg, f"{vocab_size} columns (the fitted vocabulary)",
                        f"shape {tuple(shape)}", "Use the same vocabulary as in fit.")
    keep = vals_t > 0
    if dtype == "data":
        dtype = source
    dtype = dtype or torch.get_default_dtype()
    return Corpus(rows_t[keep].to(device), cols_t[keep].to(device),
                  vals_t[keep].to(dtype=dtype, device=device), int(shape[0]), int(shape[1]))


def source_dtype(data: Any) -> torch.dtype | None:
    """The floating torch dtype of array-like input, or None for integer input."""
    kind = getattr(data, "dtype", None)
    if isinstance(kind, torch.dtype):
        return kind if kind.is_floating_point else None
    if kind is not None and np.dtype(kind).kind == "f":
        return torch.float64 if np.dtype(kind).itemsize == 8 else torch.float32
    return None


def _csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
         shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


#: ``torch.sparse.sampled_addmm`` takes another, far slower path for inner sizes 2 to 7 (torch
#: 2.13 on CPU, AP's 2,246 x 10,473 pattern: 9.4 ms at K=5, 0.9 ms at K=8, 1.3 ms at K=9), so
#: smaller inner sizes are padded with zeros to this one.
_SDDMM_MIN_INNER = 8


def _sddmm(pattern: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The values of (left @ right) at the entries of the CSR ``pattern``."""
    k = left.shape[-1]
    if 1 < k < _SDDMM_MIN_INNER:
        pad = _SDDMM_MIN_INNER - k
        left = torch.nn.functional.pad(left, (0, pad))
        right = torch.nn.functional.pad(right, (0, 0, 0, pad))
    return torch.sparse.sampled_addmm(pattern, left, right, beta=0.0).values()


def _sampled_products(corpus: Corpus, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(left @ right)[d, w] at every entry, in the document-major order of the layout."""
    lay = corpus.layout()
    pattern = _csr(lay["crow"], lay["cols"], torch.ones_like(lay["values"], dtype=left.dtype),
                   (corpus.num_docs, corpus.vocab_size))
    return _sddmm(pattern, left, right)


def dirichlet_expectation(concentration: torch.Tensor) -> torch.Tensor:
    """E[log x] under Dirichlet(concentration), along the last dimension."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


def fit_doc_topics(corpus: Corpus, exp_topic_word: torch.Tensor, doc_topic_prior: float, *,
                   max_iter: int = 100, tol: float = 1e-3,
                   start: torch.Tensor | None = None) -> torch.Tensor:
    """Variational E-step: the documents' Dirichlet parameters gamma (num_docs, K).

    Fixed-point iteration of Blei, Ng & Jordan (2003) as in scikit-learn's batch LDA: with
    e_theta = exp(E[log theta_d]) and e_beta = exp(E[log beta]) (or the topic-word
    probabilities themselves for a point estimate),
    gamma_dk = alpha + e_theta_dk * sum_w n_dw e_beta_kw / (sum_j e_theta_dj e_beta_jw).
    A document stops when the mean absolute change of its gamma falls below ``tol``.

    Each iteration costs two passes over the non-zero entries: the normalisers by a sampled
    dense-dense product at the non-zeros (SDDMM), the update by a sparse (CSR) matrix
    product. Converged documents are frozen, and dropped from the arrays once they are many.
    """
    k = exp_topic_word.shape[0]
    dtype, device = exp_topic_word.dtype, exp_topic_word.device
    eps = torch.finfo(dtype).eps
    gamma = torch.ones(corpus.num_docs, k, dtype=dtype, device=device) if start is None \
        else start.to(dtype=dtype, device=device).clone()
    v = exp_topic_word.shape[1]
    lay = corpus.layout()
    doc_ids, word_ids = lay["docs"], lay["cols"]
    counts = lay["values"].to(dtype)
    beta_t = exp_topic_word.T.contiguous()  # (V, K)
    active = torch.arange(corpus.num_docs, device=device)

    def compact(keep_docs: torch.Tensor):
        """The entries of the documents ``keep_docs`` (sorted) as a CSR pattern."""
        if len(keep_docs) == corpus.num_docs:
            w, c, crow = word_ids, counts, lay["crow"]
        else:
            keep = torch.zeros(corpus.num_docs, dtype=torch.bool, device=device)
            keep[keep_docs] = True
            sel = keep[doc_ids]
            w, c = word_ids[sel], counts[sel]
            per_doc = torch.bincount(doc_ids[sel], minlength=corpus.num_docs)[keep_docs]
            crow = torch.zeros(len(keep_docs) + 1, dtype=torch.long, device=device)
            crow[1:] = per_doc.cumsum(0)
        return w, c, crow, _csr(crow, w, torch.ones_like(c), (len(keep_docs), v))

    words, cnts, crow, pattern = compact(active)
    # Compact copies for the documents still in the arrays; frozen ones keep their values.
    gamma_a = gamma
    exp_a = torch.exp(dirichlet_expectation(gamma_a))
    going = torch.ones(corpus.num_docs, dtype=torch.bool, device=device)
    for _ in range(max_iter):
        # Normalisers at the non-zeros only (sampled dense-dense product), then the update
        # as one sparse-dense product.
        norm = _sddmm(pattern, exp_a, exp_topic_word) + eps
        ratio = _csr(crow, words, cnts / norm, (len(active), v))
        new = doc_topic_prior + exp_a * (ratio @ beta_t)
        change = (new - gamma_a).abs().mean(-1)
        keep = going.unsqueeze(-1)
        gamma_a = torch.where(keep, new, gamma_a)
        exp_a = torch.where(keep, torch.exp(dirichlet_expectation(new)), exp_a)
        going = going & (change >= tol)
        if not bool(going.any()):
            break
        if float(going.double().mean()) < 0.7:  # drop the frozen documents from the arrays
            gamma[active] = gamma_a
            active, gamma_a, exp_a = active[going], gamma_a[going], exp_a[going]
            going = going[going]
            words, cnts, crow, pattern = compact(active)
    gamma[active] = gamma_a
    return gamma


def topic_word_statistics(corpus: Corpus, gamma: torch.Tensor,
                          exp_topic_word: torch.Tensor) -> torch.Tensor:
    """Expected topic-word counts sum_d n_dw phi_dwk (K, V) for the M-step."""
    lay = corpus.layout()
    eps = torch.finfo(gamma.dtype).eps
    exp_theta = torch.exp(dirichlet_expectation(gamma))
    norm = _sampled_products(corpus, exp_theta, exp_topic_word) + eps
    ratio = (lay["values"].to(gamma.dtype) / norm)[lay["to_t"]]  # word-major order
    by_word = _csr(lay["crow_t"], lay["cols_t"], ratio, (corpus.vocab_size, corpus.num_docs))
    return (by_word @ exp_theta).T * exp_topic_word


def _dirichlet_terms(prior: float, concentration: torch.Tensor,
                     expected_log: torch.Tensor) -> torch.Tensor:
    """E_q[log p(x | prior)] - E_q[log q(x)] for rows x ~ Dirichlet(concentration)."""
    size = concentration.shape[-1]
    prior_t = torch.as_tensor(prior, dtype=concentration.dtype)
    return (((prior - concentration) * expected_log).sum()
            + (torch.lgamma(concentration) - torch.lgamma(prior_t)).sum()
            + (torch.lgamma(prior_t * size) - torch.lgamma(concentration.sum(-1))).sum())


def topic_word_bound(topic_word_concentration: torch.Tensor,
                     topic_word_prior: float) -> torch.Tensor:
    """The topic-word Dirichlet term of :func:`lda_bound`: the part that does not add up
    over documents (a multi-process EM counts it once)."""
    return _dirichlet_terms(topic_word_prior, topic_word_concentration,
                            dirichlet_expectation(topic_word_concentration))


def lda_bound(corpus: Corpus, gamma: torch.Tensor, topic_word_concentration: torch.Tensor,
              doc_topic_prior: float, topic_word_prior: float) -> torch.Tensor:
    """The evidence lower bound of batch variational LDA (scikit-learn's ``_approx_bound``):
    E_q[log p(w | theta, beta)] (word topics summed in log space) plus the Dirichlet terms of
    the document-topic and topic-word factors."""
    e_log_theta = dirichlet_expectation(gamma)
    e_log_beta = dirichlet_expectation(topic_word_concentration)
    # log sum_k exp(E log theta_dk + E log beta_kw) at the entries, as a sampled product of
    # row- and column-shifted exponentials in float64 (no underflow above e^-708).
    lay = corpus.layout()
    row_max = e_log_theta.amax(-1, keepdim=True)
    col_max = e_log_beta.amax(0, keepdim=True)
    sums = _sampled_products(corpus, torch.exp(e_log_theta - row_max).double(),
                             torch.exp(e_log_beta - col_max).double())
    words = sums.log() + row_max.squeeze(-1).double()[lay["docs"]] + \
        col_max.squeeze(0).double()[lay["cols"]]
    return ((lay["values"].double() * words).sum().to(gamma.dtype)
            + _dirichlet_terms(doc_topic_prior, gamma, e_log_theta)
            + _dirichlet_terms(topic_word_prior, topic_word_concentration, e_log_beta))
