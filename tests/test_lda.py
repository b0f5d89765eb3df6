"""LDA: variational EM against scikit-learn, topic recovery by EM and SVI, the Pyro model,
the log-likelihood estimator against quadrature, applications and bad input."""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

import ppgen
from ppgen.models.topic import LDA, BagOfWords
from tests.common import assert_close


def _ap(num_docs):
    counts, _ = ppgen.datasets.load_ap_corpus(dtype=torch.float64)  # shipped in the package
    return counts[:num_docs]


def _corpus(num_docs=300, vocab=120, k=4, length=100, seed=0):
    """Documents from known block topics (each topic owns a block of words)."""
    g = torch.Generator().manual_seed(seed)
    topic_word = torch.full((k, vocab), 1e-3, dtype=torch.float64)
    block = vocab // k
    for j in range(k):
        topic_word[j, j * block:(j + 1) * block] = 1.0
    topic_word += 0.05 * torch.rand(k, vocab, generator=g, dtype=torch.float64)
    topic_word /= topic_word.sum(-1, keepdim=True)
    alpha = torch.full((k,), 0.3, dtype=torch.float64)
    gam = torch._standard_gamma(alpha.expand(num_docs, k).contiguous())
    theta = gam / gam.sum(-1, keepdim=True)
    words = torch.multinomial(theta @ topic_word, length, replacement=True, generator=g)
    x = torch.zeros(num_docs, vocab, dtype=torch.float64)
    x.scatter_add_(1, words, torch.ones_like(words, dtype=torch.float64))
    return x, topic_word


def _matched_tv(estimate, truth):
    cost = 0.5 * (estimate[:, None, :] - truth[None]).abs().sum(-1)
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].mean())


def test_variational_em_equals_scikit_learn_batch_lda():
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.decomposition._lda import _dirichlet_expectation_2d

    x = _ap(200)
    k, iters = 5, 5
    start = np.random.RandomState(0).gamma(100.0, 0.01, (k, x.shape[1]))
    ours = LDA(k)
    fit = ppgen.fit(ours, x, "em", init={"topic_word_concentration": start}, num_steps=iters,
                    tol=0, seed=0, progress=False)
    peer = LatentDirichletAllocation(k, learning_method="batch", random_state=0)
    peer._init_latent_vars(x.shape[1], np.float64)
    peer.components_ = start.copy()
    peer.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(peer.components_))
    # scikit-learn restarts every document at random Gamma(100, 1/100) proportions in each
    # E-step of fit; without its random state it starts them at 1, as ppgen does.
    peer.random_state_ = None
    for _ in range(iters):
        peer._em_step(x, total_samples=x.shape[0], batch_update=True, parallel=None)
    # Equal up to documents whose stopping test (mean change < 1e-3) is decided by round-off.
    assert_close(ours.topic_word_concentration.numpy(), peer.components_, rtol=1e-4)
    bound = peer._approx_bound(x, peer._unnormalized_transform(x), sub_sampling=False)
    # fit's history ends with the bound of the final topics (documents refitted to them).
    assert fit.history["objective"][-1] == pytest.approx(bound, rel=1e-7)
    # With scikit-learn's own random restarts the two runs differ only by that jitter.
    jittered = LatentDirichletAllocation(k, learning_method="batch", random_state=0,
                                         max_iter=iters).fit(x)
    assert jittered.score(x) == pytest.approx(bound, rel=0.01)


def test_em_recovers_known_topics():
    x, truth = _corpus()
    lda = LDA(4)
    ppgen.fit(lda, x, "em", seed=0, progress=False)
    assert _matched_tv(lda.topic_word, truth) < 0.1
    history = ppgen.fit(LDA(4), x, "em", seed=1, tol=0, num_steps=15,
                        progress=False).history["objective"]
    assert np.all(np.diff(history) > -1e-6 * np.abs(history[:-1]))


def test_amortized_svi_recovers_known_topics():
    x, truth = _corpus(num_docs=200, vocab=80, k=3, length=80, seed=1)
    lda = LDA(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged within the step budget is fine here
        ppgen.fit(lda, x, "svi", seed=0, num_steps=2000, lr=0.02, lr_decay=1.0,
                  batch_size=100, progress=False)
    assert _matched_tv(lda.topic_word, truth) < 0.1


def test_svi_trains_on_a_real_vocabulary_without_nan():
    """On AP's 10,473-word vocabulary the guide's Dirichlet concentrations lie near the priors
    (0.05) and float32 draws reach 1e-38; LDA's default TraceMeanField_ELBO takes the KL
    terms in closed form and every step stays finite. The same run with
    ``loss=pyro.infer.Trace_ELBO()`` went NaN at step 1 (measured with torch 2.13)."""
    counts, _ = ppgen.datasets.load_ap_corpus(dtype=torch.float32)
    lda = LDA(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the NaN guard warns
        fit = ppgen.fit(lda, counts[:1000], "svi", seed=0, num_steps=40, lr=0.05,
                        batch_size=128, tol=0, progress=False)
    assert len(fit.history["objective"]) == 40
    assert not [d for d in fit.diagnose() if d.code == "nan"]
    lam = lda.topic_word_concentration
    assert lam.dtype == torch.float32 and bool((lam > lda.topic_word_prior).all())
    assert_close(lda.topic_word.sum(-1), torch.ones(20), atol=1e-5)
    # The loss went down: the last 10 steps against the first 10.
    hist = fit.history["objective"]
    assert hist[-10:].mean() < hist[:10].mean()


def test_bag_of_words_is_the_multinomial():
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    counts = torch.tensor([[2.0, 0.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = torch.distributions.Multinomial(5, probs).log_prob(counts[0])
    lp = BagOfWords(probs.expand(2, 3), counts.sum(-1)).log_prob(counts)
    assert_close(lp, torch.stack([expected, torch.zeros((), dtype=torch.float64)]),
                 atol=1e-12, rtol=0)


def test_log_prob_estimator_matches_quadrature():
    """With two topics theta is one number: log p(n | topic_word) by quadrature."""
    lda = LDA(2, doc_topic_prior=0.7)
    topic_word = torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.05, 0.05, 0.3, 0.6]],
                              dtype=torch.float64)
    lda.set_params(topic_word=topic_word)
    docs = torch.tensor([[3.0, 1.0, 0.0, 2.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0]],
                        dtype=torch.float64)
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[1:-1]
    prior = torch.distributions.Beta(0.7, 0.7).log_prob(grid)
    probs = grid[:, None] * topic_word[0] + (1 - grid[:, None]) * topic_word[1]
    exact = []
    for doc in docs:
        lik = torch.distributions.Multinomial(int(doc.sum()), probs=probs).log_prob(doc) \
            if doc.sum() > 0 else torch.zeros_like(grid)
        exact.append(torch.logsumexp(lik + prior, 0) + math.log(grid[1] - grid[0]))
    estimate = lda.log_prob(docs, num_samples=4000, seed=0)
    assert_close(estimate, torch.stack(exact), atol=0.02, rtol=0)
    assert torch.equal(lda.log_prob(docs, seed=3), lda.log_prob(docs, seed=3))


def test_applications():
    x, truth = _corpus(num_docs=100)
    words = [f"w{i}" for i in range(x.shape[1])]
    lda = LDA(4, vocabulary=words)
    ppgen.fit(lda, sp.csr_matrix(x.numpy()), "em", seed=0, progress=False)
    theta = lda.transform(x)
    assert_close(theta.sum(-1), torch.ones(100, dtype=torch.float64), atol=1e-12, rtol=0)
    empty = lda.transform(torch.zeros(1, x.shape[1], dtype=torch.float64))
    assert_close(empty, torch.full((1, 4), 0.25, dtype=torch.float64), atol=1e-12, rtol=0)
    top = lda.top_words(5)
    assert len(top) == 4 and all(isinstance(w, str) for w in top[0])
    docs, topics = lda.sample(6, doc_length=[10, 0, 5, 7, 8, 9], seed=0, return_topics=True)
    assert docs.shape == (6, x.shape[1]) and docs.sum(-1).tolist() == [10, 0, 5, 7, 8, 9]
    assert torch.equal(lda.sample(3, seed=1), lda.sample(3, seed=1))
    holes = x[:5].clone()
    holes[:, :10] = float("nan")
    filled = lda.impute(holes)
    assert not torch.isnan(filled).any()
    assert torch.equal(filled[:, 10:], x[:5, 10:])
    done = lda.complete(x[:2], num_words=3)
    present = {words[i] for i in x[0].nonzero().squeeze(-1).tolist()}
    assert len(done[0]) == 3 and not present & set(done[0])
    odd = x[:1].clone()
    odd[0] = 0
    odd[0, ::7] = 5  # words spread over every topic block, unlike the training documents
    assert lda.score(odd) > lda.score(x[:50]).median()


def test_mcmc_on_a_tiny_corpus():
    x, truth = _corpus(num_docs=15, vocab=12, k=2, length=30, seed=2)
    lda = LDA(2, doc_topic_prior=0.5, topic_word_prior=0.5)
    fit = ppgen.fit(lda, x, "mcmc", seed=0, num_samples=60, num_warmup=60, num_chains=1,
                    progress=False)
    assert fit.posterior["topic_word"].shape == (1, 60, 2, 12)
    assert fit.to_arviz().log_likelihood["obs"].shape == (1, 60, 15)
    assert torch.isfinite(lda.log_prob(x)).all()


def test_bad_input_is_refused_clearly():
    x, _ = _corpus(num_docs=20)
    lda = LDA(3)
    with pytest.raises(ValueError, match="non-negative word counts"):
        ppgen.fit(lda, -x, "em", progress=False)
    with pytest.raises(ValueError, match="integer word counts"):
        ppgen.fit(lda, x * 0.5 + 0.25, "em", progress=False)
    with pytest.raises(ValueError, match="at least one word"):
        ppgen.fit(lda, torch.zeros(3, 5), "em", progress=False)
    with pytest.raises(ValueError, match="2 dimensions"):
        ppgen.fit(lda, x[0], "em", progress=False)
    with pytest.raises(ppgen.NotFittedError):
        lda.transform(x)
    ppgen.fit(lda, x, "em", seed=0, progress=False)
    with pytest.raises(ValueError, match="120 columns"):
        lda.log_prob(x[:, :50])
    with pytest.raises(ValueError, match="doc_topic_prior"):
        LDA(3, doc_topic_prior=0)
    with pytest.raises(ValueError, match=r"params\['topic_word'\]"):
        lda.set_params(topic_word=torch.ones(3, 120))


def test_gamma_draws_have_the_right_moments():
    from ppgen.models.topic.lda import _gamma_draws

    g = torch.Generator().manual_seed(0)
    alpha = torch.tensor([0.05, 0.3, 1.0, 4.0], dtype=torch.float64).expand(200_000, 4)
    draws = _gamma_draws(alpha.contiguous(), g)
    se = (alpha[0] / 200_000).sqrt()  # sd of the mean: sqrt(alpha / n)
    assert ((draws.mean(0) - alpha[0]).abs() < 5 * se).all()
    assert ((draws.var(0) - alpha[0]).abs() < 0.05 * alpha[0] + 5e-3).all()


@pytest.mark.parametrize("k", [1, 2, 5, 7, 8, 9])
def test_sampled_products_equal_the_dense_product_at_the_entries(k):
    """Inner sizes 2..7 are zero-padded to 8 (torch's sampled_addmm is ~10x slower there)."""
    from ppgen.models.topic.ops import _sampled_products, as_corpus

    g = torch.Generator().manual_seed(k)
    dense = torch.poisson(torch.full((30, 40), 0.3, dtype=torch.float64), generator=g)
    corpus = as_corpus(dense)
    left = torch.rand(30, k, dtype=torch.float64, generator=g)
    right = torch.rand(k, 40, dtype=torch.float64, generator=g)
    got = _sampled_products(corpus, left, right)
    lay = corpus.layout()
    expected = (left @ right)[lay["docs"], lay["cols"]]
    assert_close(got, expected, rtol=1e-12, atol=0)
