"""Latent Dirichlet allocation: a Pyro model with the word topics summed out, batch variational
EM (Blei, Ng & Jordan 2003; scikit-learn's ``learning_method="batch"``), an amortized SVI guide,
and NUTS on small corpora, through ``ppgen.fit``.

The Pyro model, for documents d with word counts n_d (a bag of words of length N_d)::

    topic_word[k] ~ Dirichlet(topic_word_prior * 1_V)          for each topic k
    doc_topics[d] ~ Dirichlet(doc_topic_prior * 1_K)           for each document d
    n_d ~ Multinomial(N_d, doc_topics[d] @ topic_word)         word topics summed out

Summing each word's topic out turns the per-word categorical topics into one mixture over
the vocabulary per document, so SVI and NUTS never see a discrete site.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from ..._random import derive_seeds, resolve_seed
from ..._validation import (
    INTEGER_DATA_DTYPE,
    bad_value,
    check_positive_float,
    check_positive_int,
)
from ..base import register
from .base import BagOfWords, TopicModel, draw_counts
from .ops import (
    as_corpus,
    dirichlet_expectation,
    fit_doc_topics,
    lda_bound,
    source_dtype,
    topic_word_bound,
    topic_word_statistics,
)

__all__ = ["LDA"]

#: Share of the prior in the defensive importance-sampling proposal of ``LDA.log_prob``.
_DEFENSIVE = 0.2

_EMPTY = torch.Size()


class _Encoder(torch.nn.Module):
    """Word counts (B, V) -> Dirichlet concentrations (B, K) of the topic proportions.

    The concentrations have the form of the exact mean-field update (Blei, Ng & Jordan 2003),
    ``gamma_d = alpha + N_d * pi_d``: the prior plus the document's N_d words shared out over
    the topics, where the network predicts the shares ``pi_d = softmax(BN(MLP(log1p(n_d))))``.
    So an empty document gets the prior, and the encoder learns only where the words go, not
    how many there are. The batch normalisation of the topic logits (without affine
    parameters) is Srivastava & Sutton's (2017) remedy for component collapse: with the
    earlier ``softplus(MLP)`` encoder, SVI on AP with K=50 (500 steps of 256 documents) used
    only 6 to 10 of the 50 topics (held-out perplexity 3209-3814, NPMI 0.03-0.08); with this
    one all 50 (``benchmarks/lda.py``: 2938, NPMI 0.20; ``benchmarks/RESULTS.md``).
    """

    def __init__(self, vocab_size: int, num_topics: int, hidden: int, dropout: float,
                 floor: float) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.floor = floor
        self.net = torch.nn.Sequential(
            torch.nn.Linear(vocab_size, hidden), torch.nn.Softplus(),
            torch.nn.Linear(hidden, hidden), torch.nn.Softplus(), torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, num_topics))
        self.bn = torch.nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        logits = self.net(torch.log1p(counts))
        if not (self.training and logits.shape[0] == 1):  # batch statistics need two documents
            logits = self.bn(logits)
        return self.floor + counts.sum(-1, keepdim=True) * torch.softmax(logits, -1)


@register("lda")
class LDA(TopicModel):
    """Latent Dirichlet allocation.

    Parameters
    ----------
    num_topics : int
        Number of topics K.
    doc_topic_prior, topic_word_prior : float, optional
        Concentrations alpha and eta of the symmetric Dirichlet priors; 1 / K by default (as
        scikit-learn).
    max_doc_iter, doc_tol : int, float
        Variational E-step: most fixed-point iterations per document and the mean absolute
        change of a document's Dirichlet parameters at which it stops (scikit-learn's
        ``max_doc_update_iter`` and ``mean_change_tol``).
    vocabulary : list of str, optional
        Words of the columns, used by :meth:`top_words`.

    Public parameter: ``topic_word`` (K, V), each row a distribution over the vocabulary.
    After EM the model also keeps the variational Dirichlet parameters
    ``topic_word_concentration`` (K, V), of which ``topic_word`` is the mean.

    ``ppgen.fit(lda, counts)`` runs variational EM (the default method of models with
    closed-form EM steps). ``method="svi"`` uses the default guide ``guide="model"``, the
    model's own amortized guide (:meth:`guide`: a Dirichlet for each topic's words and an
    encoder network for each document's topic mixture); its fit reports the point estimate
    ``topic_word`` (the posterior mean), so PSIS-LOO needs ``method="mcmc"`` (slow on large
    corpora: ppgen warns with an estimate first).
    """

    param_names = ("topic_word",)
    state_names = ("topic_word_concentration",)
    supports_em = True
    #: The E-step's expected counts and bound add up over documents, but for the topic-word
    #: term (:meth:`em_shared_objective`): EM runs across processes (ppgen._distributed).
    em_distributed = True
    em_objective = "evidence lower bound (nats)"
    default_guide = "model"
    observed_dims = ("document", "word")
    jit_compile = False

    def __init__(self, num_topics: int, *, doc_topic_prior: float | None = None,
                 topic_word_prior: float | None = None, max_doc_iter: int = 100,
                 doc_tol: float = 1e-3, vocabulary: list[str] | None = None,
                 hidden_size: int = 100, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_topics = check_positive_int("num_topics", num_topics)
        self.doc_topic_prior = 1.0 / self.num_topics if doc_topic_prior is None else \
            check_positive_float("doc_topic_prior", doc_topic_prior)
        self.topic_word_prior = 1.0 / self.num_topics if topic_word_prior is None else \
            check_positive_float("topic_word_prior", topic_word_prior)
        self.max_doc_iter = check_positive_int("max_doc_iter", max_doc_iter)
        self.doc_tol = check_positive_float("doc_tol", doc_tol)
        self.vocabulary = None if vocabulary is None else [str(w) for w in vocabulary]
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        if not 0 <= dropout < 1:
            raise bad_value("dropout", "a number in [0, 1)", dropout)
        self.dropout = float(dropout)
        self._em: dict[str, Any] | None = None

    def get_config(self) -> dict[str, Any]:
        return {"num_topics": self.num_topics, "doc_topic_prior": self.doc_topic_prior,
                "topic_word_prior": self.topic_word_prior, "max_doc_iter": self.max_doc_iter,
                "doc_tol": self.doc_tol, "vocabulary": self.vocabulary,
                "hidden_size": self.hidden_size, "dropout": self.dropout}

    def __repr__(self) -> str:
        return (f"LDA(num_topics={self.num_topics}, doc_topic_prior={self.doc_topic_prior:g}, "
                f"topic_word_prior={self.topic_word_prior:g})")

    # ------------------------------------------------------------ fit preparation
    def prepare(self, data: Any) -> torch.Tensor:
        """Validate the training counts; returns them as a dense (D, V) tensor."""
        # Integer counts give float64 topics (as scikit-learn); floating counts keep their
        # dtype; a fitted model keeps its own.
        dtype = self.dtype if self.topic_word is not None else (
            source_dtype(data) or INTEGER_DATA_DTYPE)
        corpus = as_corpus(data, vocab_size=None if self.vocabulary is None else
                           len(self.vocabulary), dtype=dtype, fitting=True)
        if corpus.counts.numel() == 0:
            raise bad_value("data", "at least one word in the corpus", "only empty documents")
        return corpus.dense()

    # -------------------------------------------------------------------- Pyro model
    def model(self, data: torch.Tensor | None = None, *, doc_lengths: torch.Tensor | None = None,
              subsample_size: int | None = None) -> torch.Tensor:
        """The generative process (module docstring); ``data`` (D, V) counts, or None with
        ``doc_lengths`` (D,) to draw documents from the prior."""
        if data is None and doc_lengths is None:
            raise ValueError("LDA.model: give data or doc_lengths.")
        ref = data if data is not None else self.topic_word
        if ref is None or self.vocab_size is None and data is None:
            raise ValueError("LDA.model: the vocabulary size comes from the data.")
        v = data.shape[-1] if data is not None else self.vocab_size
        dtype = data.dtype if data is not None and data.is_floating_point() else self.dtype
        device = data.device if data is not None else self.device
        num_docs = data.shape[0] if data is not None else doc_lengths.shape[0]
        k = self.num_topics
        with pyro.plate("topics", k, dim=-1):
            topic_word = pyro.sample("topic_word", dist.Dirichlet(
                torch.full((v,), self.topic_word_prior, dtype=dtype, device=device)))
        with pyro.plate("documents", num_docs, subsample_size=subsample_size, dim=-1) as idx:
            theta = pyro.sample("doc_topics", dist.Dirichlet(
                torch.full((k,), self.doc_topic_prior, dtype=dtype, device=device)))
            probs = theta @ topic_word  # (..., B, V); word topics summed out
            x = None if data is None else data[idx]
            lengths = x.sum(-1) if x is not None else doc_lengths[idx]
            return pyro.sample("obs", BagOfWords(probs, lengths), obs=x)

    def guide(self, data: torch.Tensor | None = None, *, doc_lengths: torch.Tensor | None = None,
              subsample_size: int | None = None) -> None:
        """Amortized variational guide: q(topic_word[k]) = Dirichlet(lambda_k) with free
        parameters lambda (K, V), and q(doc_topics[d]) = Dirichlet(encoder(n_d)), an MLP from
        a document's word counts to its Dirichlet concentrations (Srivastava & Sutton 2017's
        amortization, with LDA's Dirichlet posterior). The encoder makes each step cost one
        minibatch, so ``batch_size`` scales SVI to corpora of any size.

        lambda starts at ``topic_word_prior`` plus, per topic, the words of a few documents
        picked k-means++-style (far from the topics so far), so topics start distinct.
        """
        if data is None:
            raise ValueError("LDA.guide: give the data.")
        encoder = self._get_encoder(data.shape[-1], data.dtype, data.device)
        pyro.module("lda_encoder", encoder)
        lam = pyro.param("lda_topic_word_concentration", lambda: self._seed_topics(data),
                         constraint=constraints.greater_than(self.topic_word_prior))
        with pyro.plate("topics", self.num_topics, dim=-1):
            pyro.sample("topic_word", dist.Dirichlet(lam))
        with pyro.plate("documents", data.shape[0], subsample_size=subsample_size,
                        dim=-1) as idx:
            pyro.sample("doc_topics", dist.Dirichlet(encoder(data[idx])))

    def default_loss(self, num_particles: int = 1) -> pyro.infer.ELBO:
        """``TraceMeanField_ELBO``: the KL terms of the topic-word and document-topic sites
        are computed in closed form (Dirichlet against Dirichlet), not from draws. With
        ``Trace_ELBO`` the draws' log-densities enter the loss: at concentrations near the
        priors (~0.05) float32 draws reach the smallest normal number (1e-38), the gradient
        (c - 1) / x of log q overflows, and on AP's 10,473 words SVI went NaN within 2
        steps."""
        return pyro.infer.TraceMeanField_ELBO(num_particles=num_particles)

    def guide_point_estimate(self) -> dict[str, torch.Tensor]:
        """The topics' posterior means E_q[topic_word] = lambda / sum(lambda)."""
        lam = pyro.get_param_store()["lda_topic_word_concentration"].detach()
        return {"topic_word": lam / lam.sum(-1, keepdim=True), "concentration": lam}

    def _get_encoder(self, vocab_size: int, dtype: torch.dtype, device) -> torch.nn.Module:
        enc = self.__dict__.get("_encoder")
        if enc is None or enc.vocab_size != vocab_size:
            enc = _Encoder(vocab_size, self.num_topics, self.hidden_size, self.dropout,
                           self.doc_topic_prior)
            object.__setattr__(self, "_encoder", enc)  # not a registered submodule: the
            # encoder is a training device, not part of the fitted model
        return enc.to(dtype=dtype, device=device)

    def _seed_topics(self, data: torch.Tensor) -> torch.Tensor:
        """k-means++-style start of the topics' Dirichlet parameters from whole documents."""
        probs = data / data.sum(-1, keepdim=True).clamp_min(1)
        chosen = [int(torch.randint(data.shape[0], (1,)))]
        closest = (probs - probs[chosen[0]]).square().sum(-1)
        for _ in range(1, self.num_topics):
            weights = closest / closest.sum() if float(closest.sum()) > 0 else \
                torch.ones_like(closest)
            j = int(torch.multinomial(weights, 1))
            chosen.append(j)
            closest = torch.minimum(closest, (probs - probs[j]).square().sum(-1))
        mean = probs.mean(0)
        topics = 0.5 * probs[chosen] + 0.5 * mean
        words_per_topic = float(data.sum()) / self.num_topics
        excess = (topics * words_per_topic).clamp_min(1e-3 * self.topic_word_prior)
        return (self.topic_word_prior + excess).detach()  # strictly above the prior

    def site_dims(self) -> dict[str, list[str]]:
        return {"topic_word": ["topic", "word"], "doc_topics": ["document", "topic"]}

    def set_point_estimate(self, values: dict[str, torch.Tensor]) -> None:
        self.topic_word = values["topic_word"].detach().clone()
        lam = values.get("concentration")
        self.topic_word_concentration = None if lam is None else lam.detach().clone()

    def summarize_posterior(self, samples: dict[str, torch.Tensor]) -> None:
        self.topic_word = samples["topic_word"].mean(0)
        self.topic_word_concentration = None

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int) -> dict[str, torch.Tensor]:
        """Start values: the topics of a few EM iterations (or ``init``), and each
        document's proportions fitted to them."""
        lam = self._initial_concentration(data, init, seed)
        corpus = as_corpus(data, dtype=data.dtype)
        for _ in range(5):
            exp_beta = torch.exp(dirichlet_expectation(lam))
            gamma = fit_doc_topics(corpus, exp_beta, self.doc_topic_prior, max_iter=20)
            lam = self.topic_word_prior + topic_word_statistics(corpus, gamma, exp_beta)
        topic_word = lam / lam.sum(-1, keepdim=True)
        gamma = fit_doc_topics(corpus, topic_word, self.doc_topic_prior)
        return {"topic_word": topic_word, "doc_topics": gamma / gamma.sum(-1, keepdim=True)}

    # ---------------------------------------------------------------- EM capability
    def _initial_concentration(self, data: torch.Tensor, init: dict[str, Any] | None,
                               seed: int) -> torch.Tensor:
        init = dict(init or {})
        unknown = set(init) - {"topic_word", "topic_word_concentration"}
        if unknown:
            raise bad_value("init", "keys among topic_word, topic_word_concentration",
                            ", ".join(sorted(unknown)))
        k, v = self.num_topics, data.shape[-1]
        if "topic_word_concentration" in init:
            lam = torch.as_tensor(init["topic_word_concentration"]).to(data.dtype)
            if lam.shape != (k, v) or not bool((lam > 0).all()):
                raise bad_value("init['topic_word_concentration']", f"positive values of "
                                f"shape ({k}, {v})", f"shape {tuple(lam.shape)}")
            return lam
        if "topic_word" in init:
            topic_word = self._check_params({"topic_word": init["topic_word"]})["topic_word"]
            # As many pseudo-words per topic as the corpus has words per topic.
            return self.topic_word_prior + topic_word.to(data.dtype) * float(data.sum()) / k
        rng = np.random.RandomState(derive_seeds(seed, 1)[0] % 2**32)
        # scikit-learn's start: Gamma(100, 1/100) entries.
        return torch.as_tensor(rng.gamma(100.0, 0.01, (k, v)), dtype=data.dtype)

    def em_initialize(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                      seed: int) -> None:
        lam = self._initial_concentration(data, init, seed)
        self._set_concentration(lam)
        self._em = {"data": data, "corpus": as_corpus(data, dtype=data.dtype), "gamma": None}

    def _set_concentration(self, lam: torch.Tensor) -> None:
        self.topic_word_concentration = lam
        self.topic_word = lam / lam.sum(-1, keepdim=True)

    def _em_state(self, data: torch.Tensor) -> dict[str, Any]:
        if self._em is None or self._em["data"] is not data:
            self._em = {"data": data, "corpus": as_corpus(data, dtype=data.dtype),
                        "gamma": None}
        return self._em

    def e_step(self, data: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Documents' variational Dirichlets, the evidence lower bound, and the expected
        topic-word counts."""
        state = self._em_state(data)
        lam = self.topic_word_concentration
        exp_beta = torch.exp(dirichlet_expectation(lam))
        # Every E-step starts the documents afresh (gamma = 1, as scikit-learn up to its
        # random jitter): a warm start would stop after one update, since the change rule
        # measures the step and not the distance to the fixed point, and EM would crawl.
        gamma = fit_doc_topics(state["corpus"], exp_beta, self.doc_topic_prior,
                               max_iter=self.max_doc_iter, tol=self.doc_tol)
        bound = lda_bound(state["corpus"], gamma, lam, self.doc_topic_prior,
                          self.topic_word_prior)
        return float(bound), topic_word_statistics(state["corpus"], gamma, exp_beta)

    def m_step(self, data: torch.Tensor, stats: torch.Tensor) -> None:
        self._set_concentration(self.topic_word_prior + stats)

    def em_shared_objective(self) -> float:
        """The part of :meth:`e_step`'s bound that is not a sum over documents."""
        return float(topic_word_bound(self.topic_word_concentration, self.topic_word_prior))

    def em_finalize(self) -> None:
        self._em = None

    def em_decrease_reason(self) -> str:
        """Why this model's EM bound can fall (the EM driver's ``em_decrease`` message)."""
        return (f"LDA's E-step fits each document's topic proportions iteratively and stops "
                f"after max_doc_iter={self.max_doc_iter} iterations or a change below "
                f"doc_tol={self.doc_tol:g}, so the bound it reports is approximate and can "
                "fall a little, most with many topics for few documents; raise max_doc_iter "
                "(e.g. 1000) and lower doc_tol (e.g. 1e-8), or use fewer topics.")

    # ----------------------------------------------------------------- applications
    def _exp_log_topic_word(self) -> torch.Tensor:
        if self.topic_word_concentration is not None:
            return torch.exp(dirichlet_expectation(self.topic_word_concentration))
        return self.topic_word

    def transform(self, data: Any) -> torch.Tensor:
        """Topic proportions of each document (D, K): the mean of its variational Dirichlet
        posterior given the fitted topics. An empty document gets the prior mean."""
        self.check_fitted("transform documents")
        corpus = self._corpus(data)
        gamma = fit_doc_topics(corpus, self._exp_log_topic_word(), self.doc_topic_prior,
                               max_iter=self.max_doc_iter, tol=self.doc_tol)
        return gamma / gamma.sum(-1, keepdim=True)

    def log_prob(self, data: Any, *, num_samples: int = 100, seed: int = 0) -> torch.Tensor:
        """Estimated log-likelihood of each document in nats, log p(n_d | topic_word).

        Estimator: importance sampling over the document's topic proportions (Wallach et al.
        2009), log (1/S) sum_s p(n_d | theta_s) p(theta_s) / q(theta_s) with S =
        ``num_samples`` draws from the defensive mixture q = 0.8 Dirichlet(gamma_d) + 0.2
        prior, gamma_d the document's variational posterior; its expectation is a lower
        bound that tightens as S grows. The multinomial
        coefficient of the bag of words is included. Deterministic for a given ``seed``.
        """
        self.check_fitted("compute log_prob")
        num_samples = check_positive_int("num_samples", num_samples)
        corpus = self._corpus(data)
        gamma = fit_doc_topics(corpus, self._exp_log_topic_word(), self.doc_topic_prior,
                               max_iter=self.max_doc_iter, tol=self.doc_tol)
        g = torch.Generator(device=gamma.device).manual_seed(int(seed))
        # Defensive importance sampling (Hesterberg 1995): a fifth of the draws come from the
        # prior, so the weights stay bounded where the variational posterior is too narrow.
        prior_conc = torch.full_like(gamma, self.doc_topic_prior)
        from_prior = torch.rand(num_samples, corpus.num_docs, 1, generator=g,
                                dtype=gamma.dtype, device=gamma.device) < _DEFENSIVE
        conc = torch.where(from_prior, prior_conc, gamma)  # (S, D, K)
        draws = _gamma_draws(conc, g)
        theta = draws / draws.sum(-1, keepdim=True)
        theta = theta.clamp_min(torch.finfo(theta.dtype).tiny)
        theta = theta / theta.sum(-1, keepdim=True)
        log_prior = dist.Dirichlet(prior_conc).log_prob(theta)
        log_q = torch.logaddexp(math.log(1 - _DEFENSIVE) + dist.Dirichlet(gamma).log_prob(theta),
                                math.log(_DEFENSIVE) + log_prior)
        log_w = log_prior - log_q  # (S, D)
        word_probs = (theta[:, corpus.doc_ids] * self.topic_word.T[corpus.word_ids]).sum(-1)
        lik = torch.zeros(num_samples, corpus.num_docs, dtype=gamma.dtype, device=gamma.device)
        lik.index_add_(1, corpus.doc_ids, corpus.counts * word_probs.log())
        lengths = corpus.doc_lengths
        coef = torch.lgamma(lengths + 1)
        coef = coef.index_add(0, corpus.doc_ids, -torch.lgamma(corpus.counts + 1))
        return torch.logsumexp(lik + log_w, 0) - math.log(num_samples) + coef

    def sample(self, num_samples: int, *, doc_length: int | Any = 100,
               seed: int | None = None, return_topics: bool = False):
        """Draw ``num_samples`` documents (count vectors) of ``doc_length`` words each (an int
        or one length per document); with ``return_topics`` also their topic proportions."""
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        lengths = self._sample_lengths(num_samples, doc_length)
        g = torch.Generator(device=self.device)
        g.manual_seed(resolve_seed(seed)) if seed is not None else g.seed()
        alpha = torch.full((num_samples, self.num_topics), self.doc_topic_prior,
                           dtype=self.dtype, device=self.device)
        gam = _gamma_draws(alpha, g)
        theta = gam / gam.sum(-1, keepdim=True)
        counts = draw_counts(theta @ self.topic_word, lengths, g)
        return (counts, theta) if return_topics else counts

    def _doc_word_probs(self, counts: torch.Tensor) -> torch.Tensor:
        return self.transform(counts) @ self.topic_word


def _gamma_draws(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(alpha, 1) draws from a generator (Marsaglia-Tsang with the alpha < 1 boost)."""
    boost = alpha < 1
    a = torch.where(boost, alpha + 1, alpha)
    d = a - 1.0 / 3
    c = 1 / (9 * d).sqrt()
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):  # rejection rounds (a handful), vectorised over all entries
        x = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (u.clamp_min(1e-300).log() < 0.5 * x**2 + d - d * v
                        + d * v.clamp_min(1e-300).log())
        take = todo & ok
        out[take] = (d * v)[take]
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
    return torch.where(boost, out * u.clamp_min(1e-300) ** (1 / alpha), out)
