"""What the topic models (LDA, ProdLDA) share: the bag-of-words likelihood, drawing word
counts, and the :class:`TopicModel` base class (a (K, V) ``topic_word`` parameter, the
vocabulary, top words, imputation and document completion)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..._validation import as_tensor, bad_value, check_positive_int
from ..base import GenerativeModel
from .ops import Corpus, as_corpus

__all__ = ["BagOfWords", "TopicModel", "draw_counts"]

_EMPTY = torch.Size()


class BagOfWords(TorchDistribution):
    """Multinomial word counts with a length per document: log p(n) = log N! - sum log n_w!
    + sum n_w log p_w. ``probs`` (..., V); ``sample`` needs ``lengths``."""

    arg_constraints = {"probs": constraints.simplex}
    support = constraints.nonnegative_integer

    def __init__(self, probs: torch.Tensor, lengths: torch.Tensor | None = None,
                 validate_args: bool | None = None) -> None:
        self.probs = probs
        self.lengths = lengths
        super().__init__(probs.shape[:-1], probs.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logp = self.probs.clamp_min(torch.finfo(self.probs.dtype).tiny).log()
        total = value.sum(-1)
        return (torch.lgamma(total + 1) - torch.lgamma(value + 1).sum(-1)
                + (value * logp).sum(-1))

    def sample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        if tuple(sample_shape) or self.lengths is None:
            raise NotImplementedError("BagOfWords.sample draws one batch and needs lengths")
        with torch.no_grad():
            return draw_counts(self.probs, self.lengths, None)


def draw_counts(probs: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Word counts (B, V) of documents with the given lengths, all drawn at once."""
    probs = probs.reshape(-1, probs.shape[-1])
    lengths = lengths.reshape(-1).long()
    most = int(lengths.max()) if lengths.numel() else 0
    counts = torch.zeros_like(probs)
    if most == 0:
        return counts
    words = torch.multinomial(probs, most, replacement=True, generator=generator)
    keep = (torch.arange(most, device=probs.device) < lengths.unsqueeze(-1)).to(probs.dtype)
    return counts.scatter_add_(1, words, keep)


class TopicModel(GenerativeModel):
    """What LDA and ProdLDA share: a (K, V) ``topic_word`` parameter with rows on the
    simplex, an optional vocabulary, and the topics' top words."""

    param_names = ("topic_word",)
    observed_dims = ("document", "word")
    log_prob_kind = "estimate"
    log_prob_estimator = ("importance sampling over the document's topic proportions "
                          "(defensive proposal; num_samples, seed)")
    num_topics: int
    vocabulary: list[str] | None

    @property
    def vocab_size(self) -> int | None:
        if self.topic_word is not None:
            return int(self.topic_word.shape[-1])
        return None if self.vocabulary is None else len(self.vocabulary)

    # ---------------------------------------------------------------- parameters
    def _check_params(self, params: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        if "topic_word" in params:
            t = torch.as_tensor(params["topic_word"])
            if self.topic_word is not None:
                t = t.to(dtype=self.topic_word.dtype, device=self.topic_word.device)
            elif not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
            k = self.num_topics
            if t.dim() != 2 or t.shape[0] != k:
                raise bad_value("params['topic_word']", f"shape ({k}, vocabulary_size)",
                                f"shape {tuple(t.shape)}")
            if self.vocabulary is not None and t.shape[1] != len(self.vocabulary):
                raise bad_value("params['topic_word']", f"{len(self.vocabulary)} columns (the "
                                "vocabulary)", f"shape {tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool(
                    ((t.sum(-1) - 1).abs() > 1e-4).any()):
                raise bad_value("params['topic_word']", "rows of non-negative probabilities "
                                "summing to 1", "other values")
            out["topic_word"] = t
        return out

    def top_words(self, num_words: int = 10) -> list[list[str | int]]:
        """The ``num_words`` most probable words of each topic (strings with a vocabulary)."""
        self.check_fitted("list top words")
        num_words = check_positive_int("num_words", num_words)
        ids = self.topic_word.topk(min(num_words, self.topic_word.shape[1]), -1).indices
        if self.vocabulary is None:
            return ids.tolist()
        return [[self.vocabulary[i] for i in row] for row in ids.tolist()]

    def _corpus(self, data: Any, arg: str = "data") -> Corpus:
        return as_corpus(data, arg=arg, vocab_size=self.vocab_size, dtype=self.dtype,
                         device=self.device)

    def _doc_word_probs(self, counts: torch.Tensor) -> torch.Tensor:
        """Each document's predictive word distribution (D, V) given its counts (D, V),
        with its topic proportions fitted to them."""
        raise NotImplementedError

    def _sample_lengths(self, num_samples: int, doc_length: Any) -> torch.Tensor:
        """``doc_length`` (an int or one per document) as a long tensor (num_samples,)."""
        lengths = torch.as_tensor(doc_length).reshape(-1)
        if lengths.is_floating_point() and not bool((lengths == lengths.round()).all()):
            raise bad_value("doc_length", "whole numbers of words", str(lengths.tolist()[:10]))
        if lengths.numel() == 1:
            lengths = lengths.expand(num_samples)
        if lengths.shape[0] != num_samples or bool((lengths < 0).any()):
            raise bad_value("doc_length", f"an int >= 0 or {num_samples} of them",
                            str(lengths.tolist()[:10]))
        return lengths.long().to(self.device)

    def impute(self, data: Any) -> torch.Tensor:
        """Fill NaN entries of a count matrix with their expected counts given the rest of
        the document: N_d p(w | document d), with the document's topic proportions fitted to
        its observed words and N_d its observed length. Observed entries are unchanged (and
        validated as counts)."""
        self.check_fitted("impute")
        x = as_tensor(data.toarray() if hasattr(data, "toarray") else data, arg="data")
        if x.dim() != 2:
            raise bad_value("data", "2 dimensions (num_documents, vocabulary_size)",
                            f"shape {tuple(x.shape)}")
        x = x.to(dtype=self.dtype, device=self.device)
        missing = torch.isnan(x)
        observed = self._corpus(torch.where(missing, torch.zeros_like(x), x)).dense()
        expected = observed.sum(-1, keepdim=True) * self._doc_word_probs(observed)
        return torch.where(missing, expected, observed)

    def complete(self, data: Any, num_words: int = 10) -> list[list[str | int]]:
        """Document completion: each document's ``num_words`` most probable words among
        those it does not contain, under its fitted topic proportions."""
        self.check_fitted("complete documents")
        num_words = check_positive_int("num_words", num_words)
        corpus = self._corpus(data)
        probs = self._doc_word_probs(corpus.dense())  # (D, V)
        probs[corpus.doc_ids, corpus.word_ids] = -1.0  # words already in the document
        ids = probs.topk(min(num_words, probs.shape[1]), -1).indices.tolist()
        if self.vocabulary is None:
            return ids
        return [[self.vocabulary[i] for i in row] for row in ids]
