"""ProdLDA: the Laplace prior, the per-document Newton fit against autograd, the log-likelihood
estimator against quadrature, topic recovery by amortized SVI with minibatches, save/load,
the Pyro model, applications and bad input."""

import math
import time

import pyro
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

import ppgen
from ppgen.models.topic.prodlda import (
    ProdLDA,
    _newton_terms,
    _topic_products,
    fit_doc_logits,
    laplace_dirichlet,
)
from tests.common import assert_close

K, V = 3, 60


def _matched(estimate, truth):
    """Total-variation distances of the best one-to-one matching of estimated to true topics:
    (mean distance, true topic of each estimated topic)."""
    cost = 0.5 * (estimate[:, None, :] - truth[None]).abs().sum(-1)
    rows, cols = linear_sum_assignment(cost.numpy())
    match = torch.empty(len(rows), dtype=torch.long)
    match[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return float(cost[rows, cols].mean()), match


@pytest.fixture(scope="module")
def fitted():
    """ProdLDA fitted by SVI with minibatches to 300 documents from 3 known block topics."""
    x, truth = ppgen.datasets.make_corpus(300, V, K, doc_length=80, seed=0)
    model = ProdLDA(K, vocabulary=[f"w{i}" for i in range(V)])
    start = time.perf_counter()
    fit = ppgen.fit(model, x, "svi", seed=0, num_steps=400, lr=0.1, lr_decay=1.0,
                    batch_size=100, tol=0, progress=False)
    return model, x, truth, fit, time.perf_counter() - start


def test_laplace_dirichlet_is_the_papers_prior():
    loc, scale = laplace_dirichlet(torch.ones(4, dtype=torch.float64))
    assert_close(loc, torch.zeros(4, dtype=torch.float64), atol=1e-15)
    assert_close(scale.square(), torch.full((4,), 0.75, dtype=torch.float64))  # 1 - 1/K
    alpha = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    loc, scale = laplace_dirichlet(alpha)
    assert_close(loc, alpha.log() - alpha.log().mean())
    assert_close(scale.square(), (1 - 2 / 3) / alpha + (1 / alpha).sum() / 9)


def test_newton_terms_match_autograd_and_the_fit_is_the_mode():
    g = torch.Generator().manual_seed(0)
    k, v, d = 4, 9, 5
    log_tw = torch.log_softmax(2 * torch.randn(k, v, generator=g, dtype=torch.float64), -1)
    counts = torch.randint(0, 6, (d, v), generator=g).double()
    counts[-1] = 0  # an empty document
    loc, scale = laplace_dirichlet(torch.full((k,), 0.4, dtype=torch.float64))
    precision = scale.pow(-2)
    lengths = counts.sum(-1)

    def objective(z):
        return _newton_terms(z, counts, lengths, log_tw, loc, precision)[0].sum()

    z = torch.randn(d, k, generator=g, dtype=torch.float64)
    _, grad, neg_hess, gauss_newton = _newton_terms(z, counts, lengths, log_tw, loc, precision)
    zz = z.clone().requires_grad_()
    assert_close(grad, torch.autograd.grad(objective(zz), zz)[0], atol=1e-12, rtol=0)
    hess = torch.autograd.functional.hessian(objective, z)
    assert_close(neg_hess, -torch.stack([hess[i, :, i] for i in range(d)]), atol=1e-10, rtol=0)
    assert (torch.linalg.eigvalsh(gauss_newton) > 0).all()
    products = _topic_products(log_tw)  # the precomputed route gives the same terms
    _, grad_p, neg_hess_p, _ = _newton_terms(z, counts, lengths, log_tw, loc, precision, products)
    assert_close(grad_p, grad, atol=1e-12, rtol=0)
    assert_close(neg_hess_p, neg_hess, atol=1e-10, rtol=0)
    z_map, chol = fit_doc_logits(counts, log_tw, loc, scale)
    _, grad, neg_hess, _ = _newton_terms(z_map, counts, lengths, log_tw, loc, precision)
    assert_close(grad, torch.zeros_like(grad), atol=1e-9, rtol=0)
    assert_close(chol @ chol.transpose(-1, -2), neg_hess, atol=1e-10, rtol=1e-10)
    assert_close(z_map[-1], loc, atol=1e-12, rtol=0)  # an empty document sits at the prior


def test_log_prob_estimator_matches_quadrature():
    """With two topics softmax(z) depends on u = z1 - z2 ~ N(0, 1 / alpha) only: log p(n) by
    quadrature over u."""
    alpha = 0.7
    model = ProdLDA(2, doc_topic_prior=alpha)
    topic_word = torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.05, 0.05, 0.3, 0.6]],
                              dtype=torch.float64)
    model.set_params(topic_word=topic_word)
    docs = torch.tensor([[3.0, 1.0, 0.0, 2.0], [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0],
                         [20.0, 10.0, 1.0, 1.0]], dtype=torch.float64)
    u = torch.linspace(-25, 25, 100_001, dtype=torch.float64)
    prior = torch.distributions.Normal(0.0, (1 / alpha) ** 0.5).log_prob(u)
    share = torch.sigmoid(u)[:, None]
    probs = torch.softmax(share * topic_word[0].log() + (1 - share) * topic_word[1].log(), -1)
    exact = []
    for doc in docs:
        lik = torch.distributions.Multinomial(int(doc.sum()), probs=probs).log_prob(doc) \
            if doc.sum() > 0 else torch.zeros_like(u)
        exact.append(torch.logsumexp(lik + prior, 0) + math.log(u[1] - u[0]))
    state = torch.random.get_rng_state()
    estimate = model.log_prob(docs, num_samples=4000, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert_close(estimate, torch.stack(exact), atol=0.05, rtol=0)
    assert torch.equal(model.log_prob(docs, seed=3), model.log_prob(docs, seed=3))
    assert not torch.equal(model.log_prob(docs, seed=3), model.log_prob(docs, seed=4))


def test_svi_with_minibatches_recovers_known_topics(fitted):
    model, x, truth, fit, elapsed = fitted
    assert len(fit.history["objective"]) == 400
    tv, match = _matched(model.topic_word, truth["topic_word"])
    g = torch.Generator().manual_seed(0)
    noise = torch._standard_gamma(torch.ones(K, V, dtype=torch.float64), generator=g)
    random_tv, _ = _matched(noise / noise.sum(-1, keepdim=True), truth["topic_word"])
    # The saved topics are the evaluation-mode decoder's experts (batch normalisation folded
    # in), flatter than the mixture topics that drew the corpus: about 0.33 against 0.66.
    assert tv < 0.6 * random_tv
    # Most of each topic's 10 largest-weight words lie in its true topic's block of words.
    block = model.topic_word.topk(10, -1).indices * K // V
    assert float((block == match[:, None]).double().mean()) >= 0.8


def test_saved_topics_are_the_evaluation_mode_decoder(fitted):
    """Batch normalisation's running statistics are folded into topic_word, so the product of
    the saved experts gives the trained decoder's word distributions exactly."""
    model = fitted[0]
    decoder = model._nets["decoder"].eval()
    assert float(decoder.bn.running_var.sub(1).abs().max()) > 0.1  # the folding matters here
    theta = torch.distributions.Dirichlet(torch.full((K,), 0.3)).sample((50,))
    with torch.no_grad():
        expected = decoder(theta.to(decoder.beta.weight.dtype))
    got = model._word_probs(theta.to(model.topic_word.dtype))
    assert_close(got, expected.to(got.dtype), rtol=1e-4, atol=1e-7)


def test_fit_is_reproducible_and_starts_afresh():
    x, _ = ppgen.datasets.make_corpus(60, 30, 2, doc_length=40, seed=1)
    a, b = ProdLDA(2, hidden_size=16), ProdLDA(2, hidden_size=16)
    store = set(pyro.get_param_store().keys())
    state = torch.random.get_rng_state()
    for model in (a, b, a):  # the second fit of `a` starts from new networks, not the old
        ppgen.fit(model, x, "svi", seed=5, num_steps=30, lr=0.05, batch_size=20, tol=0,
                  progress=False)
    assert torch.equal(a.topic_word, b.topic_word)
    assert set(pyro.get_param_store().keys()) == store
    assert torch.equal(torch.random.get_rng_state(), state)


def test_save_load_round_trip(fitted, tmp_path):
    model, x, _, _, _ = fitted
    loaded = ppgen.load(ppgen.save(model, tmp_path / "prodlda.pt"))
    assert type(loaded) is ProdLDA and loaded.get_config() == model.get_config()
    assert not loaded._nets  # the training networks are not saved, and not needed
    docs = x[:20]
    assert torch.equal(loaded.topic_word, model.topic_word)
    assert torch.equal(loaded.log_prob(docs), model.log_prob(docs))
    assert torch.equal(loaded.transform(docs), model.transform(docs))
    assert torch.equal(loaded.sample(4, seed=1), model.sample(4, seed=1))
    holes = docs.clone()
    holes[:, :5] = float("nan")
    assert torch.equal(loaded.impute(holes), model.impute(holes))
    assert loaded.complete(docs, 3) == model.complete(docs, 3)


def test_pyro_model_and_guide():
    x, _ = ppgen.datasets.make_corpus(12, 20, 2, doc_length=30, seed=2)
    model = ProdLDA(2, hidden_size=8)
    model.prepare(x)
    guide_trace = pyro.poutine.trace(model.guide).get_trace(x, subsample_size=5)
    assert guide_trace.nodes["logtheta"]["value"].shape == (5, 2)
    trace = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_trace)).get_trace(
        x, subsample_size=5)
    assert trace.nodes["obs"]["value"].shape == (5, 20)
    assert torch.isfinite(trace.log_prob_sum())
    model.set_params(topic_word=torch.full((2, 20), 0.05, dtype=torch.float64))
    draws = model.model(doc_lengths=torch.tensor([3, 0, 7]))
    assert draws.sum(-1).tolist() == [3, 0, 7]


def test_applications(fitted):
    model, x, _, _, _ = fitted
    theta = model.transform(sp.csr_matrix(x[:50].numpy()))
    assert_close(theta.sum(-1), torch.ones(50, dtype=torch.float64), atol=1e-12, rtol=0)
    empty = model.transform(torch.zeros(1, V, dtype=torch.float64))
    assert_close(empty, torch.full((1, K), 1 / K, dtype=torch.float64), atol=1e-12, rtol=0)
    top = model.top_words(5)
    assert len(top) == K and all(w.startswith("w") for w in top[0])
    docs, topics = model.sample(6, doc_length=[10, 0, 5, 7, 8, 9], seed=0, return_topics=True)
    assert docs.shape == (6, V) and docs.sum(-1).tolist() == [10, 0, 5, 7, 8, 9]
    assert topics.shape == (6, K)
    holes = x[:5].clone()
    holes[:, :10] = float("nan")
    filled = model.impute(holes)
    assert not torch.isnan(filled).any() and (filled[:, :10] >= 0).all()
    assert torch.equal(filled[:, 10:], x[:5, 10:])
    done = model.complete(x[:2], num_words=3)
    present = {f"w{i}" for i in x[0].nonzero().squeeze(-1).tolist()}
    assert len(done[0]) == 3 and not present & set(done[0])
    odd = torch.zeros(1, V, dtype=torch.float64)
    odd[0, ::6] = 8  # words spread over every block, unlike the training documents
    assert model.score(odd) > model.score(x[:50]).median()


def test_bad_input_is_refused_clearly():
    x, _ = ppgen.datasets.make_corpus(30, 20, 2, doc_length=20, seed=3)
    model = ProdLDA(2, hidden_size=8)
    with pytest.raises(ValueError, match="non-negative word counts"):
        ppgen.fit(model, -x, "svi", num_steps=2, progress=False)
    with pytest.raises(ValueError, match="integer word counts"):
        ppgen.fit(model, x * 0.5 + 0.25, "svi", num_steps=2, progress=False)
    with pytest.raises(ppgen.NotFittedError):
        model.transform(x)
    with pytest.raises(ValueError, match=r"method.*use method='svi'\.$"):
        ppgen.fit(model, x, "em", progress=False)
    with pytest.raises(ValueError, match="NUTS cannot sample it; use method='svi'"):
        ppgen.fit(model, x, "mcmc", num_samples=2, num_warmup=2, num_chains=1, progress=False)
    with pytest.raises(ValueError, match="automatic guide"):
        ppgen.fit(model, x, "svi", guide="normal", num_steps=2, progress=False)
    assert not model.is_fitted  # nothing was written half-way
    ppgen.fit(model, x, "svi", seed=0, num_steps=5, tol=0, progress=False)
    with pytest.raises(ValueError, match="20 columns"):
        model.log_prob(x[:, :10])
    with pytest.raises(ValueError, match="non-negative word counts"):
        model.transform(-x)
    bad = x[:3].clone()
    bad[0, 1] = -2.0
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-negative word counts"):
        model.impute(bad)
    with pytest.raises(ValueError, match="doc_length"):
        model.sample(2, doc_length=[3, 4, 5])
    with pytest.raises(ValueError, match="num_topics"):
        ProdLDA(1)
    with pytest.raises(ValueError, match="dropout"):
        ProdLDA(2, dropout=1.0)
    with pytest.raises(ValueError, match=r"params\['topic_word'\]"):
        model.set_params(topic_word=torch.ones(2, 20))


def test_float32_applications_stay_float32(fitted):
    model, x, _, _, _ = fitted
    model32 = ProdLDA(K)
    model32.set_params(topic_word=model.topic_word.float())
    lp = model32.log_prob(x[:20].float())
    theta = model32.transform(x[:20].float())
    assert lp.dtype == theta.dtype == torch.float32
    # The same draws in either dtype: the two differ by float32 round-off only.
    assert_close(lp, model.log_prob(x[:20]).float(), atol=0.01, rtol=0)
    assert_close(theta, model.transform(x[:20]).float(), atol=1e-3, rtol=0)
