"""ppgen.evaluation.importance_log_prob: the importance-weighted estimate of log p(x) and its
delta-method standard error, against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from ppgen.evaluation import importance_log_prob

F64 = torch.float64


def _linear_gaussian(x, *, proposal_scale=1.0, shift=0.0):
    """z ~ N(0, 1), x | z ~ N(z, s^2) with s = 0.5: x ~ N(0, 1 + s^2); the exact posterior is
    N(x / (1 + s^2), s^2 / (1 + s^2)); the proposal scales its sd and shifts its mean."""
    s2 = 0.25
    post_sd = math.sqrt(s2 / (1 + s2))

    def proposal(x):
        return Normal(x / (1 + s2) + shift, proposal_scale * post_sd)

    def log_joint(x, z):
        return Normal(z, math.sqrt(s2)).log_prob(x) + Normal(0.0, 1.0).log_prob(z)

    exact = Normal(torch.zeros((), dtype=x.dtype), math.sqrt(1 + s2)).log_prob(x)
    return proposal, log_joint, exact


def test_exact_posterior_gives_exact_answer_with_zero_error():
    x = torch.linspace(-3, 3, 7, dtype=F64)
    proposal, log_joint, exact = _linear_gaussian(x)
    est, se, ess = importance_log_prob(x, proposal=proposal, log_joint=log_joint,
                                       num_samples=50, seed=0, return_ess=True)
    torch.testing.assert_close(est, exact, rtol=0, atol=1e-12)
    assert float(se.max()) < 1e-6
    torch.testing.assert_close(ess, torch.full_like(ess, 50.0))


@pytest.mark.parametrize("batch_size", [13, 1000, None])
def test_inflated_proposal_within_standard_errors(batch_size):
    x = torch.linspace(-3, 3, 25, dtype=F64)
    proposal, log_joint, exact = _linear_gaussian(x, proposal_scale=2.0, shift=0.3)
    est, se = importance_log_prob(x, proposal=proposal, log_joint=log_joint,
                                  num_samples=4000, batch_size=batch_size, row_batch_size=10,
                                  seed=1)
    z = (est - exact) / se
    assert float(z.abs().max()) < 4
    assert 0.3 < float(z.square().mean()) < 3  # the error bars have the right size
    assert float((est - exact).abs().max()) < 0.05


def test_lower_bound_in_expectation_and_tighter_with_more_samples():
    x = torch.full((4000,), 1.0, dtype=F64)  # 4000 replicate estimates of one datum
    proposal, log_joint, exact = _linear_gaussian(x, proposal_scale=0.6, shift=0.4)
    means = []
    for k in (1, 10, 100):
        est, _ = importance_log_prob(x, proposal=proposal, log_joint=log_joint,
                                     num_samples=k, seed=k)
        means.append((float(est.mean()), float(est.std()) / math.sqrt(len(x))))
    truth = float(exact[0])
    for (m1, s1), (m2, s2) in zip(means, means[1:], strict=False):
        assert m1 + 4 * math.hypot(s1, s2) < m2
    assert means[-1][0] < truth


def test_stable_for_huge_log_weights_and_multivariate_events():
    # log-weights around -1e5: nothing under- or overflows
    loc = torch.zeros(3, 2, dtype=F64)

    def proposal(x):
        return Independent(Normal(loc[: len(x)], 1.0), 1)

    def log_joint(x, z):
        return Independent(Normal(loc[: len(x)], 1.2), 1).log_prob(z) - 1e5

    x = torch.zeros(3, 2, dtype=F64)
    est, se = importance_log_prob(x, proposal=proposal, log_joint=log_joint,
                                  num_samples=20000, seed=0, batch_size=999)
    assert bool(torch.isfinite(est).all() & torch.isfinite(se).all())
    torch.testing.assert_close(est, torch.full_like(est, -1e5), rtol=0, atol=5 * float(se.max()))
    # a multivariate Normal marginal
    cov = torch.tensor([[2.0, 0.5], [0.5, 2.0]], dtype=F64)
    x = torch.tensor([[0.5, -1.0], [2.0, 1.0]], dtype=F64)
    est, se = importance_log_prob(
        x, proposal=lambda x: Independent(Normal(x / 2, 1.0), 1),
        log_joint=lambda x, z: (Independent(Normal(z, 1.0), 1).log_prob(x)
                                + MultivariateNormal(torch.zeros(2, dtype=F64),
                                                     cov - torch.eye(2, dtype=F64)
                                                     ).log_prob(z)),
        num_samples=20000, seed=0)
    exact = MultivariateNormal(torch.zeros(2, dtype=F64), cov).log_prob(x)
    assert float(((est - exact) / se).abs().max()) < 4


def test_seed_reproducible_and_global_rng_restored():
    x = torch.linspace(-1, 1, 5)
    proposal, log_joint, _ = _linear_gaussian(x, proposal_scale=1.5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = importance_log_prob(x, proposal=proposal, log_joint=log_joint, num_samples=100, seed=5)
    assert torch.equal(torch.rand(1), before)
    b = importance_log_prob(x, proposal=proposal, log_joint=log_joint, num_samples=100, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == torch.float32


def test_single_sample_has_no_standard_error_and_bad_input_is_refused():
    x = torch.zeros(3)
    proposal, log_joint, _ = _linear_gaussian(x)
    est, se = importance_log_prob(x, proposal=proposal, log_joint=log_joint, num_samples=1)
    assert bool(torch.isnan(se).all()) and bool(torch.isfinite(est).all())
    with pytest.raises(ValueError, match="num_samples: expected an integer >= 1"):
        importance_log_prob(x, proposal=proposal, log_joint=log_joint, num_samples=0)
    with pytest.raises(TypeError, match="proposal: expected a callable"):
        importance_log_prob(x, proposal=None, log_joint=log_joint)
    with pytest.raises(TypeError, match="x: expected a Tensor"):
        importance_log_prob([0.0], proposal=proposal, log_joint=log_joint)
    with pytest.raises(ValueError, match="proposal: expected log-densities of shape"):
        importance_log_prob(torch.zeros(3, 2), proposal=lambda x: Normal(x, 1.0),
                            log_joint=lambda x, z: z.sum(-1), num_samples=4)
