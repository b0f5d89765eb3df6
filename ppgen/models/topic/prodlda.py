"""ProdLDA (Srivastava & Sutton 2017): a product-of-experts topic model with a logistic-normal
prior, fitted by SVI with an amortized logistic-normal guide.

The Pyro model, for documents d with word counts n_d (a bag of words of length N_d)::

    logtheta[d] ~ Normal(mu, diag(sigma^2))      Laplace approximation of Dirichlet(alpha)
    theta_d = softmax(logtheta[d])               topic proportions
    n_d ~ Multinomial(N_d, softmax(BatchNorm(dropout(theta_d) @ beta)))

``beta`` (K, V) is a network weight (a ``pyro.module`` parameter), not a latent site: the
word distribution is a product of experts, the softmax of a weighted sum of topic
log-weights, where LDA has a mixture of the topics. The guide is q(logtheta[d]) =
Normal(encoder(n_d)), an MLP with batch-normalised mean and log-variance (as in the paper and
in Pyro's ProdLDA tutorial).

Dropout is a training device; batch normalisation keeps the topics from collapsing while SVI
runs, and its running statistics are folded into the saved topics (a per-word shift and scale
of beta; see ``guide_point_estimate``). The fitted model is the product of experts of the
saved topics ``topic_word = softmax(beta')`` (rows), exactly the decoder in evaluation mode::

    p(w | theta) = softmax(theta @ log topic_word)_w

which equals softmax(theta @ beta') (each topic's normaliser adds the same constant to every
word, and the weights theta sum to 1). Every application (``transform``, ``log_prob``,
``sample``, ``impute``, ``complete``) uses only this, so a saved and loaded model behaves
exactly as the one that was fitted; the encoder and decoder networks are not saved.

Each document's topic logits are fitted by Newton's method on the exact log-posterior
log p(n_d | softmax(z)) + log N(z | mu, sigma) (vectorised over documents, with a backtracking
line search), and log p(n_d) is estimated by importance sampling around that mode.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch

from ..._random import resolve_seed
from ..._validation import (
    bad_value,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ..base import register
from .base import BagOfWords, TopicModel, draw_counts
from .ops import as_corpus

__all__ = ["ProdLDA", "laplace_dirichlet", "fit_doc_logits"]

#: Share of the prior in the defensive importance-sampling proposal of ``ProdLDA.log_prob``.
_DEFENSIVE = 0.2
#: Newton iterations per document (it stops earlier once the steps are below the tolerance).
_NEWTON_ITERS = 50
#: Step halvings of the backtracking line search.
_HALVINGS = 30
#: Entries of the largest (documents, topics, words) temporary tensor.
_CHUNK_ENTRIES = 2**22


# ------------------------------------------------------------------------ pure helpers
def laplace_dirichlet(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the Laplace approximation, in the softmax basis, of a
    Dirichlet(alpha) (MacKay 1998; Srivastava & Sutton 2017, eq. 3)::

        mu_k = log alpha_k - mean_j log alpha_j
        sigma_k^2 = (1 - 2 / K) / alpha_k + sum_j (1 / alpha_j) / K^2

    Parameters
    ----------
    alpha : Tensor of shape (..., K)
        Dirichlet concentrations, K >= 2.
    """
    k = alpha.shape[-1]
    log_a = alpha.log()
    loc = log_a - log_a.mean(-1, keepdim=True)
    var = (1 - 2 / k) / alpha + alpha.reciprocal().sum(-1, keepdim=True) / k**2
    return loc, var.sqrt()


def _objective(z: torch.Tensor, counts: torch.Tensor, lengths: torch.Tensor,
               log_topic_word: torch.Tensor, loc: torch.Tensor,
               precision: torch.Tensor) -> torch.Tensor:
    """log p(n | softmax(z)) + log N(z | loc, precision^-1/2), both up to constants (D,)."""
    eta = torch.softmax(z, -1) @ log_topic_word  # (D, V) word logits
    lik = (counts * eta).sum(-1) - lengths * torch.logsumexp(eta, -1)
    return lik - 0.5 * ((z - loc).square() * precision).sum(-1)


def _newton_terms(z: torch.Tensor, counts: torch.Tensor, lengths: torch.Tensor,
                  log_topic_word: torch.Tensor, loc: torch.Tensor, precision: torch.Tensor,
                  products: torch.Tensor | None = None):
    """Objective (D,), gradient (D, K), negative Hessian (D, K, K), and its Gauss-Newton
    part (D, K, K), which is always positive definite.

    With theta = softmax(z), eta = theta @ L (L = log topic_word), p = softmax(eta),
    g = L (n - N p) and a = g - theta . g::

        gradient = theta * a - precision * (z - loc)
        -Hessian = N J C J                                        (Gauss-Newton part)
                   - diag(theta * a) + theta theta^T * (a_i + a_j)  (curvature of softmax)
                   + diag(precision)

    where C = L diag(p) L^T - (L p)(L p)^T is the covariance of the topics' log-weights
    under p, and J = diag(theta) - theta theta^T the Jacobian of the softmax.
    ``products`` (V, K * K), optional: the products L_kw L_jw (:func:`_topic_products`).
    """
    d, k = z.shape
    theta = torch.softmax(z, -1)
    eta = theta @ log_topic_word
    lse = torch.logsumexp(eta, -1)
    p = torch.exp(eta - lse.unsqueeze(-1))
    obj = (counts * eta).sum(-1) - lengths * lse - 0.5 * ((z - loc).square() * precision).sum(-1)
    m = p @ log_topic_word.T  # (D, K)
    g = counts @ log_topic_word.T - lengths.unsqueeze(-1) * m
    a = g - (g * theta).sum(-1, keepdim=True)
    grad = theta * a - precision * (z - loc)
    # L diag(p_d) L^T for every document as one matrix product.
    if products is not None:
        second = (p @ products).reshape(d, k, k)
    else:
        second = ((log_topic_word.unsqueeze(0) * p.unsqueeze(1)).reshape(d * k, -1)
                  @ log_topic_word.T).reshape(d, k, k)
    cov = second - m.unsqueeze(-1) * m.unsqueeze(-2)
    # J C J = diag(theta) (C - C theta 1^T - 1 theta^T C + theta^T C theta) diag(theta)
    c_theta = (cov @ theta.unsqueeze(-1)).squeeze(-1)
    quad = (c_theta * theta).sum(-1)
    outer = theta.unsqueeze(-1) * theta.unsqueeze(-2)
    jcj = outer * (cov - c_theta.unsqueeze(-1) - c_theta.unsqueeze(-2) + quad[:, None, None])
    gauss_newton = lengths[:, None, None] * jcj + torch.diag_embed(precision.expand_as(z))
    softmax_curv = torch.diag_embed(theta * a) - outer * (a.unsqueeze(-1) + a.unsqueeze(-2))
    return obj, grad, gauss_newton - softmax_curv, gauss_newton


def _topic_products(log_topic_word: torch.Tensor) -> torch.Tensor | None:
    """The products L_kw L_jw as a (V, K * K) matrix, or None when that is too large."""
    k, v = log_topic_word.shape
    if k * k * v > _CHUNK_ENTRIES:
        return None
    return (log_topic_word.unsqueeze(0) * log_topic_word.unsqueeze(1)).reshape(k * k, v).T


def fit_doc_logits(counts: torch.Tensor, log_topic_word: torch.Tensor, loc: torch.Tensor,
                   scale: torch.Tensor, *, max_iter: int = _NEWTON_ITERS,
                   tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each document's MAP topic logits and the Cholesky factor of the posterior precision
    there (the Laplace approximation of p(logtheta_d | n_d)).

    Newton's method on log p(n_d | softmax(z)) + log N(z | loc, scale), vectorised over the
    documents: the step solves with the exact negative Hessian where it is positive definite
    and with its Gauss-Newton part elsewhere; a backtracking line search (step halving)
    makes every accepted step increase the objective. A document stops when its largest step
    entry is below ``tol`` (1e-8 in float64, 1e-4 in float32 by default). Deterministic.

    Parameters
    ----------
    counts : Tensor of shape (D, V)
    log_topic_word : Tensor of shape (K, V)
    loc, scale : Tensor of shape (K,)
        The logistic-normal prior.

    Returns
    -------
    z : Tensor of shape (D, K)
    chol : Tensor of shape (D, K, K)
        Lower Cholesky factor of the precision used for the Laplace proposal (the exact
        negative Hessian at the mode, or its Gauss-Newton part where that is not positive
        definite).
    """
    d, k = counts.shape[0], log_topic_word.shape[0]
    v = log_topic_word.shape[1]
    if tol is None:
        tol = 1e-8 if counts.dtype == torch.float64 else 1e-4
    precision = scale.pow(-2)
    lengths = counts.sum(-1)
    z = loc.expand(d, k).clone()
    chol = torch.empty(d, k, k, dtype=counts.dtype, device=counts.device)
    products = _topic_products(log_topic_word)
    chunk = max(1, _CHUNK_ENTRIES // (k * v))
    for start in range(0, d, chunk):
        rows = slice(start, min(start + chunk, d))
        z[rows], chol[rows] = _newton(z[rows], counts[rows], lengths[rows], log_topic_word,
                                      loc, precision, products, max_iter, tol)
    return z, chol


def _newton(z, counts, lengths, log_topic_word, loc, precision, products, max_iter, tol):
    """Newton's method for one chunk of documents (see :func:`fit_doc_logits`)."""
    active = torch.arange(z.shape[0], device=z.device)
    for _ in range(max_iter):
        za = z[active]
        obj, grad, neg_hess, gauss_newton = _newton_terms(
            za, counts[active], lengths[active], log_topic_word, loc, precision, products)
        factor, info = torch.linalg.cholesky_ex(neg_hess)
        indefinite = info != 0
        if bool(indefinite.any()):
            factor[indefinite] = torch.linalg.cholesky(gauss_newton[indefinite])
        step = torch.cholesky_solve(grad.unsqueeze(-1), factor).squeeze(-1)
        # Backtracking: halve each document's step until its objective does not decrease;
        # a step already below the tolerance is taken as it is (the mode, up to round-off).
        t = torch.ones_like(obj)
        todo = step.abs().amax(-1) >= tol
        counts_a, lengths_a = counts[active], lengths[active]
        for _ in range(_HALVINGS):
            if not bool(todo.any()):
                break
            idx = todo.nonzero().squeeze(-1)
            cand = za[idx] + t[idx].unsqueeze(-1) * step[idx]
            better = _objective(cand, counts_a[idx], lengths_a[idx], log_topic_word, loc,
                                precision) >= obj[idx]
            todo[idx[better]] = False
            t = torch.where(todo, 0.5 * t, t)
        t = torch.where(todo, torch.zeros_like(t), t)  # no ascent found: stop there
        moved = (t.unsqueeze(-1) * step).abs().amax(-1)
        z[active] = za + t.unsqueeze(-1) * step
        active = active[moved >= tol]
        if len(active) == 0:
            break
    # The precision at the final values.
    _, _, neg_hess, gauss_newton = _newton_terms(z, counts, lengths, log_topic_word, loc,
                                                 precision, products)
    factor, info = torch.linalg.cholesky_ex(neg_hess)
    indefinite = info != 0
    if bool(indefinite.any()):
        factor[indefinite] = torch.linalg.cholesky(gauss_newton[indefinite])
    return z, factor


def _bag_log_lik(z: torch.Tensor, counts: torch.Tensor, log_topic_word: torch.Tensor,
                 coef: torch.Tensor) -> torch.Tensor:
    """log p(n_d | softmax(z)) for draws z (S, D, K), multinomial coefficient included (S, D),
    computed in chunks of documents."""
    s, d, _ = z.shape
    v = log_topic_word.shape[1]
    lengths = counts.sum(-1)
    out = torch.empty(s, d, dtype=z.dtype, device=z.device)
    chunk = max(1, _CHUNK_ENTRIES // (s * v))
    for start in range(0, d, chunk):
        rows = slice(start, min(start + chunk, d))
        eta = torch.softmax(z[:, rows], -1) @ log_topic_word  # (S, B, V)
        out[:, rows] = (counts[rows] * eta).sum(-1) - lengths[rows] * torch.logsumexp(eta, -1)
    return out + coef


# ---------------------------------------------------------------- training networks
class _Encoder(torch.nn.Module):
    """Word counts (B, V) -> mean and scale (B, K) of q(logtheta_d); batch-normalised mean
    and log-variance as in Srivastava & Sutton (2017)."""

    def __init__(self, vocab_size: int, num_topics: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.body = torch.nn.Sequential(
            torch.nn.Linear(vocab_size, hidden), torch.nn.Softplus(),
            torch.nn.Linear(hidden, hidden), torch.nn.Softplus(), torch.nn.Dropout(dropout))
        self.loc = torch.nn.Linear(hidden, num_topics)
        self.log_var = torch.nn.Linear(hidden, num_topics)
        self.bn_loc = torch.nn.BatchNorm1d(num_topics, affine=False)
        self.bn_log_var = torch.nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(torch.log1p(counts))
        loc, log_var = self.loc(h), self.log_var(h)
        if not (self.training and h.shape[0] == 1):  # batch statistics need two documents
            loc, log_var = self.bn_loc(loc), self.bn_log_var(log_var)
        return loc, (0.5 * log_var).exp()


class _Decoder(torch.nn.Module):
    """Topic proportions (..., B, K) -> word probabilities: softmax(BN(dropout(theta) @ beta))."""

    def __init__(self, vocab_size: int, num_topics: int, dropout: float) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.beta = torch.nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = torch.nn.BatchNorm1d(vocab_size, affine=False)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        logits = self.beta(self.drop(theta))
        flat = logits.reshape(-1, logits.shape[-1])
        if not (self.training and flat.shape[0] == 1):
            flat = self.bn(flat)
        return torch.softmax(flat, -1).reshape(logits.shape)


# ---------------------------------------------------------------------------- model
@register("prodlda")
class ProdLDA(TopicModel):
    """ProdLDA: product-of-experts topics, a logistic-normal prior, amortized SVI.

    Parameters
    ----------
    num_topics : int
        Number of topics K (at least 2).
    doc_topic_prior : float, optional
        Concentration alpha of the symmetric Dirichlet whose Laplace approximation (in the
        softmax basis) is the logistic-normal prior of each document's topic logits; 1.0 by
        default or when None (the prior is then N(0, 1 - 1/K) per logit).
    hidden_size : int
        Width of the encoder's two hidden layers.
    dropout : float
        Dropout on the encoder's last hidden layer and on theta in the decoder (training).
    vocabulary : list of str, optional
        Words of the columns, used by :meth:`top_words` and :meth:`complete`.

    Public parameter: ``topic_word`` (K, V), softmax(beta') row by row (beta with the
    decoder's batch-normalisation statistics folded in); the fitted model is the product of
    these experts (module docstring).

    Fitted by ``ppgen.fit(model, counts, "svi", batch_size=..., lr=...)`` with its own
    amortized guide (``guide="model"``, the default); ``lr`` around 1e-3..1e-2 with batches
    of 32..200 documents, as in the paper. EM and MCMC are not offered: the topics are
    network weights, not latent sites.

    Examples
    --------
    >>> import ppgen
    >>> counts, truth = ppgen.datasets.make_corpus(300, 60, 3, doc_length=60, seed=0)
    >>> model = ppgen.ProdLDA(3)
    >>> fit = ppgen.fit(model, counts, "svi", batch_size=100, lr=0.01, num_steps=300,
    ...                 seed=0, progress=False)
    >>> model.transform(counts).shape
    torch.Size([300, 3])
    """

    param_names = ("topic_word",)
    default_guide = "model"
    supports_mcmc = False
    observed_dims = ("document", "word")
    jit_compile = False

    def __init__(self, num_topics: int, *, doc_topic_prior: float | None = 1.0,
                 hidden_size: int = 100, dropout: float = 0.2,
                 vocabulary: list[str] | None = None) -> None:
        super().__init__()
        self.num_topics = check_positive_int("num_topics", num_topics, minimum=2)
        self.doc_topic_prior = 1.0 if doc_topic_prior is None else \
            check_positive_float("doc_topic_prior", doc_topic_prior)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.dropout = check_nonnegative_float("dropout", dropout)
        if not self.dropout < 1:
            raise bad_value("dropout", "a number in [0, 1)", dropout)
        self.vocabulary = None if vocabulary is None else [str(w) for w in vocabulary]
        # The training networks (encoder, decoder): not submodules, not saved.
        self._nets: dict[str, torch.nn.Module] = {}

    def get_config(self) -> dict[str, Any]:
        return {"num_topics": self.num_topics, "doc_topic_prior": self.doc_topic_prior,
                "hidden_size": self.hidden_size, "dropout": self.dropout,
                "vocabulary": self.vocabulary}

    def __repr__(self) -> str:
        return f"ProdLDA(num_topics={self.num_topics}, doc_topic_prior={self.doc_topic_prior:g})"

    def _prior(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale (K,) of the logistic-normal prior, in ``like``'s dtype and device."""
        alpha = torch.full((self.num_topics,), self.doc_topic_prior, dtype=like.dtype,
                           device=like.device)
        return laplace_dirichlet(alpha)

    def _log_topic_word(self) -> torch.Tensor:
        return self.topic_word.clamp_min(torch.finfo(self.topic_word.dtype).tiny).log()

    def _word_probs(self, theta: torch.Tensor) -> torch.Tensor:
        """The fitted product of experts: softmax(theta @ log topic_word) (..., V)."""
        return torch.softmax(theta @ self._log_topic_word(), -1)

    # ------------------------------------------------------------ fit preparation
    def prepare(self, data: Any) -> torch.Tensor:
        """Validate the training counts; returns them as a dense (D, V) tensor. Every fit
        starts from fresh networks (built, seeded, on the first trace of the model)."""
        corpus = as_corpus(data, vocab_size=None if self.vocabulary is None else
                           len(self.vocabulary),
                           dtype=self.dtype if self.topic_word is not None else "data",
                           fitting=True)
        if corpus.counts.numel() == 0:
            raise bad_value("data", "at least one word in the corpus", "only empty documents")
        self._nets = {}
        return corpus.dense()

    def _net(self, name: str, data: torch.Tensor) -> torch.nn.Module:
        """The encoder or decoder for data's vocabulary, dtype and device (built once)."""
        v = data.shape[-1]
        net = self._nets.get(name)
        if net is None or net.vocab_size != v:
            net = _Decoder(v, self.num_topics, self.dropout) if name == "decoder" else \
                _Encoder(v, self.num_topics, self.hidden_size, self.dropout)
            self._nets[name] = net
        return net.to(dtype=data.dtype, device=data.device)

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None,
                    seed: int) -> dict[str, torch.Tensor]:
        """Refused: the inference layer asks for start values only for MCMC and for SVI with
        an automatic guide, neither of which fits ProdLDA."""
        raise bad_value(
            "method", "method='svi' with ProdLDA's own amortized guide (guide='model', the "
            "default)", "method='mcmc' or an automatic guide ('normal' or 'map')",
            "ProdLDA's topics are network weights, not latent sites, so NUTS and automatic "
            "guides cannot fit them; use ppgen.fit(model, counts, 'svi', batch_size=..., "
            "lr=...).")

    # -------------------------------------------------------------------- Pyro model
    def model(self, data: torch.Tensor | None = None, *, doc_lengths: torch.Tensor | None = None,
              subsample_size: int | None = None) -> torch.Tensor:
        """The generative process (module docstring); ``data`` (D, V) counts. With ``data``
        None and ``doc_lengths`` (D,), documents are drawn from the fitted product of experts
        (the decoder in evaluation mode)."""
        if data is None:
            if doc_lengths is None:
                raise ValueError("ProdLDA.model: give data or doc_lengths.")
            self.check_fitted("draw documents from the model")
            like = self.topic_word
            num_docs = doc_lengths.shape[0]
        else:
            like = data
            num_docs = data.shape[0]
            decoder = self._net("decoder", data)
            pyro.module("prodlda_decoder", decoder)
        loc, scale = self._prior(like)
        with pyro.plate("documents", num_docs, subsample_size=subsample_size, dim=-1) as idx:
            z = pyro.sample("logtheta", dist.Normal(loc, scale).to_event(1))
            theta = torch.softmax(z, -1)
            if data is None:
                return pyro.sample("obs", BagOfWords(self._word_probs(theta), doc_lengths[idx]))
            x = data[idx]
            return pyro.sample("obs", BagOfWords(decoder(theta), x.sum(-1)), obs=x)

    def guide(self, data: torch.Tensor | None = None, *, doc_lengths: torch.Tensor | None = None,
              subsample_size: int | None = None) -> None:
        """q(logtheta_d) = Normal(encoder(n_d)): the amortized logistic-normal guide, an MLP
        on log(1 + n_d) with batch-normalised mean and log-variance. Each step costs one
        minibatch, so ``batch_size`` scales SVI to corpora of any size."""
        if data is None:
            raise ValueError("ProdLDA.guide: give the data.")
        encoder = self._net("encoder", data)
        pyro.module("prodlda_encoder", encoder)
        with pyro.plate("documents", data.shape[0], subsample_size=subsample_size,
                        dim=-1) as idx:
            loc, scale = encoder(data[idx])
            pyro.sample("logtheta", dist.Normal(loc, scale).to_event(1))

    def default_loss(self, num_particles: int = 1) -> pyro.infer.ELBO:
        """``TraceMeanField_ELBO``: the KL of the document-topic site (Normal guide against
        the Laplace-approximation Normal prior) in closed form, as in Srivastava & Sutton
        (2017), instead of a one-draw estimate."""
        return pyro.infer.TraceMeanField_ELBO(num_particles=num_particles)

    def guide_point_estimate(self) -> dict[str, torch.Tensor]:
        """The topics of the trained decoder in evaluation mode, batch normalisation folded
        in: the decoder's logits are ``(theta @ beta - m) / s`` with the running mean ``m``
        and ``s = sqrt(running_var + eps)`` per word, and since theta sums to 1 they equal
        ``theta @ beta'`` with ``beta'_k = (beta_k - m) / s``. So ``topic_word =
        softmax(beta')`` reproduces the evaluation-mode decoder exactly."""
        decoder = self._nets["decoder"]
        beta = decoder.beta.weight.detach().T  # (K, V)
        bn = decoder.bn
        if bn.running_mean is not None:
            beta = (beta - bn.running_mean) / (bn.running_var + bn.eps).sqrt()
        return {"topic_word": torch.softmax(beta, -1)}

    def set_point_estimate(self, values: dict[str, torch.Tensor]) -> None:
        self.topic_word = values["topic_word"].detach().clone()
        for net in self._nets.values():
            net.eval()

    def site_dims(self) -> dict[str, list[str]]:
        return {"logtheta": ["document", "topic"]}

    # ----------------------------------------------------------------- applications
    def _doc_logits(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self._prior(counts)
        return fit_doc_logits(counts, self._log_topic_word(), loc, scale)

    def transform(self, data: Any) -> torch.Tensor:
        """Topic proportions of each document (D, K): softmax of its MAP topic logits under
        the fitted product of experts and the logistic-normal prior (an empty document gets
        softmax(mu), uniform for the symmetric prior).

        Parameters
        ----------
        data : array-like of shape (D, V)
            Word counts (dense, scipy.sparse or torch sparse).
        """
        self.check_fitted("transform documents")
        counts = self._corpus(data).dense()
        return torch.softmax(self._doc_logits(counts)[0], -1)

    def log_prob(self, data: Any, *, num_samples: int = 100, seed: int = 0) -> torch.Tensor:
        """Estimated log-likelihood of each document in nats, log p(n_d | topic_word).

        Estimator: importance sampling over the document's topic logits,
        log (1/S) sum_s p(n_d | z_s) p(z_s) / q(z_s) with S = ``num_samples`` draws from the
        defensive mixture q = 0.8 N(z_map, H^-1) + 0.2 prior, where z_map is the document's
        MAP logits and H the negative Hessian of its log-posterior there (the Laplace
        approximation). Its expectation is a lower bound that tightens as S grows; the
        multinomial coefficient of the bag of words is included. Deterministic for a given
        ``seed`` on every device (a private CPU generator; the global RNG is not touched).

        Parameters
        ----------
        data : array-like of shape (D, V)
        num_samples : int
        seed : int

        Returns
        -------
        Tensor of shape (D,)
        """
        self.check_fitted("compute log_prob")
        num_samples = check_positive_int("num_samples", num_samples)
        corpus = self._corpus(data)
        counts = corpus.dense()
        d, k = counts.shape[0], self.num_topics
        loc, scale = self._prior(counts)
        z_map, chol = self._doc_logits(counts)
        # The draws come from a float64 CPU generator, so a seed gives the same draws on any
        # device and in any dtype.
        g = torch.Generator().manual_seed(int(seed))
        from_prior = (torch.rand(num_samples, d, generator=g, dtype=torch.float64)
                      < _DEFENSIVE).to(counts.device)
        eps = torch.randn(num_samples, d, k, generator=g, dtype=torch.float64).to(
            dtype=counts.dtype, device=counts.device)
        # Laplace draws z_map + C^-T eps, where the precision is C C^T (one triangular solve
        # per document for all its draws).
        solved = torch.linalg.solve_triangular(chol.transpose(-1, -2), eps.permute(1, 2, 0),
                                               upper=True)  # (D, K, S)
        lap = z_map + solved.permute(2, 0, 1)
        z = torch.where(from_prior.unsqueeze(-1), loc + scale * eps, lap)
        prior = dist.Normal(loc, scale).to_event(1)
        log_prior = prior.log_prob(z)  # (S, D)
        white = torch.einsum("dji,sdj->sdi", chol, z - z_map)  # C^T (z - z_map)
        log_lap = (-0.5 * white.square().sum(-1) - 0.5 * k * math.log(2 * math.pi)
                   + chol.diagonal(dim1=-2, dim2=-1).log().sum(-1))
        log_q = torch.logaddexp(math.log(1 - _DEFENSIVE) + log_lap,
                                math.log(_DEFENSIVE) + log_prior)
        lengths = counts.sum(-1)
        coef = torch.lgamma(lengths + 1) - torch.lgamma(counts + 1).sum(-1)
        lik = _bag_log_lik(z, counts, self._log_topic_word(), coef)
        return torch.logsumexp(lik + log_prior - log_q, 0) - math.log(num_samples)

    def sample(self, num_samples: int, *, doc_length: int | Any = 100,
               seed: int | None = None, return_topics: bool = False):
        """Draw ``num_samples`` documents (count vectors) of ``doc_length`` words each (an int
        or one length per document) from the fitted product of experts; with
        ``return_topics`` also their topic proportions (num_samples, K)."""
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        lengths = self._sample_lengths(num_samples, doc_length)
        g = torch.Generator(device=self.device)
        g.manual_seed(resolve_seed(seed)) if seed is not None else g.seed()
        loc, scale = self._prior(self.topic_word)
        z = loc + scale * torch.randn(num_samples, self.num_topics, generator=g,
                                      dtype=self.dtype, device=self.device)
        theta = torch.softmax(z, -1)
        counts = draw_counts(self._word_probs(theta), lengths, g)
        return (counts, theta) if return_topics else counts

    def _doc_word_probs(self, counts: torch.Tensor) -> torch.Tensor:
        return self._word_probs(torch.softmax(self._doc_logits(counts)[0], -1))
