"""Intra-op threads by the size of the work (ppgen._threads).

tests/conftest.py runs the suite on one thread by its own choice, which ppgen's detection
counts as the user's; the tests of the automatic rule switch the detection off with the
module attribute ``user_choice = False`` (or simulate a default import).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
import ppgen._threads as threads
import ppgen.inference.em as em_module
from ppgen._threads import (
    SMALL_WORK,
    default_threads,
    num_elements,
    threads_for,
    user_chose_threads,
    work_threads,
)
from tests.common import requires_cuda


@pytest.fixture
def torch_threads():
    """Set torch's thread count for the test; the suite's count comes back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def automatic(monkeypatch):
    """The automatic rule, whatever the suite's own thread setting."""
    monkeypatch.setattr(threads, "user_choice", False)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def default_import(monkeypatch):
    """As if ppgen had been imported with torch's default of 2 threads and no choice made."""
    monkeypatch.setattr(threads, "user_choice", None)
    monkeypatch.setattr(threads, "_IMPORT_THREADS", 2)
    monkeypatch.setattr(threads, "_IMPORT_IS_DEFAULT", True)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


def test_rule():
    assert threads_for(0) == threads_for(SMALL_WORK - 1) == 1
    assert threads_for(SMALL_WORK) == default_threads() >= 1


def test_small_work_gets_one_thread_and_the_setting_comes_back(automatic, torch_threads):
    torch_threads(2)
    with work_threads(1_000) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"):
        with work_threads(1_000):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2  # restored after an error too


def test_large_work_gets_the_default_and_the_setting_comes_back(automatic, torch_threads):
    torch_threads(1)
    with work_threads(10 * SMALL_WORK) as n:
        assert n == default_threads() == torch.get_num_threads()
    assert torch.get_num_threads() == 1


def test_detects_an_untouched_default(default_import, torch_threads):
    torch_threads(2)  # the default seen at import: not a choice
    assert not user_chose_threads()
    with work_threads(1_000) as n:
        assert n == 1 and torch.get_num_threads() == 1
        assert user_chose_threads()  # nested blocks keep the outer block's count
        with work_threads(10 * SMALL_WORK) as inner:
            assert inner == 1
    assert torch.get_num_threads() == 2


def test_respects_torch_set_num_threads(default_import, torch_threads):
    torch_threads(3)  # differs from the default seen at import
    assert user_chose_threads()
    with work_threads(1_000) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_respects_the_environment(default_import, torch_threads, monkeypatch, var):
    torch_threads(2)
    monkeypatch.setenv(var, "2")
    assert user_chose_threads()
    with work_threads(1_000) as n:
        assert n == 2 and torch.get_num_threads() == 2


def test_a_choice_before_import_is_respected(monkeypatch, torch_threads):
    """A count at import that is not torch's own default counts as the user's."""
    monkeypatch.setattr(threads, "user_choice", None)
    monkeypatch.setattr(threads, "_IMPORT_THREADS", 2)
    monkeypatch.setattr(threads, "_IMPORT_IS_DEFAULT", False)
    torch_threads(2)
    assert user_chose_threads()
    with work_threads(1_000) as n:
        assert n == 2


def test_user_choice_flag(monkeypatch, torch_threads):
    monkeypatch.setattr(threads, "user_choice", True)
    torch_threads(2)
    with work_threads(1_000) as n:
        assert n == 2 and torch.get_num_threads() == 2


def test_other_devices_are_left_alone(automatic, torch_threads):
    torch_threads(2)
    with work_threads(1_000, device="cuda") as n:  # no CUDA needed: nothing is run
        assert n == 2 and torch.get_num_threads() == 2
    with work_threads(1_000, device=torch.device("cpu")) as n:
        assert n == 1


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_num_elements():
    dense = torch.zeros(3, 4)
    sparse = torch.eye(5).to_sparse()
    assert num_elements(dense, sparse, None, 7) == 12 + 5
    assert num_elements(torch.eye(6).to_sparse_csr()) == 6
    assert num_elements() == 0


def test_em_runs_small_data_on_one_thread(automatic, torch_threads, monkeypatch, old_faithful):
    torch_threads(2)
    gmm = ppgen.GaussianMixture(2)
    seen = []
    e_step = gmm.e_step

    def recording_e_step(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return e_step(*args, **kwargs)

    monkeypatch.setattr(gmm, "e_step", recording_e_step)
    sizes = []
    original = em_module.work_threads

    def recording(size, **kwargs):
        sizes.append(size)
        return original(size, **kwargs)

    monkeypatch.setattr(em_module, "work_threads", recording)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, num_steps=5, progress=False)
    assert sizes == [old_faithful.numel()]
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_mcmc_runs_small_data_on_one_thread(automatic, torch_threads):
    torch_threads(2)
    seen = []

    def model(data):
        seen.append(torch.get_num_threads())
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        pyro.sample("obs", dist.Normal(loc, 1.0).expand(data.shape).to_event(1), obs=data)

    data = torch.randn(30, generator=torch.Generator().manual_seed(0))
    ppgen.fit(model, data, method="mcmc", seed=0, num_samples=5, num_warmup=5, num_chains=1,
              progress=False)
    assert torch.get_num_threads() == 2
    assert seen.count(1) > 5  # every potential-energy evaluation of NUTS


@requires_cuda
def test_cuda_data_leaves_threads_alone(automatic, torch_threads, old_faithful):
    torch_threads(2)
    with work_threads(1_000, device=old_faithful.cuda().device) as n:
        assert n == 2


def test_applications_run_under_the_thread_rule(automatic, torch_threads, monkeypatch,
                                                old_faithful):
    """log_prob, score, sample, predict... of every model class are sized by their inputs
    (times an estimator's num_samples; sample: draws x width) and run on one thread for small
    work, the default for large; the setting comes back, and nested calls do not re-size."""
    import contextlib

    import ppgen.models.base as base

    torch_threads(2)
    gmm = ppgen.GaussianMixture(2)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, num_steps=5, progress=False)
    vae = ppgen.VAE(8, latent_dim=2, hidden_dims=(4,))
    bits = (torch.rand(20, 8, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    ppgen.fit(vae, bits, "svi", num_steps=2, batch_size=10, tol=0, seed=0, progress=False)
    calls = []
    original = base.work_threads

    @contextlib.contextmanager
    def recording(size, **kwargs):
        with original(size, **kwargs) as n:
            calls.append((size, n, torch.get_num_threads()))
            yield n

    monkeypatch.setattr(base, "work_threads", recording)
    gmm.log_prob(old_faithful)
    gmm.score(old_faithful.numpy())
    gmm.sample(100, seed=0)
    gmm.predict(old_faithful)
    vae.log_prob(bits, num_samples=50, seed=0)
    n = old_faithful.numel()
    assert [c[0] for c in calls] == [n, n, 100 * 2, n, 20 * 8 * 50]
    assert all(inside == n == 1 for _, n, inside in calls)
    assert torch.get_num_threads() == 2
    calls.clear()
    monkeypatch.setattr(threads, "SMALL_WORK", n)  # the same calls count as large work now
    gmm.log_prob(old_faithful)
    assert calls == [(n, default_threads(), default_threads())]
    assert torch.get_num_threads() == 2
    assert ppgen.GaussianMixture.log_prob.__name__ == "log_prob"  # functools.wraps
    assert "data" in str(__import__("inspect").signature(ppgen.GaussianMixture.log_prob))


def test_applications_of_unknown_work_leave_the_threads_alone(automatic, torch_threads):
    """A partition function's estimate takes no data: its size is unknown, so the count is
    left as it is (AIS may want every core); sample(n, lengths=T) counts the T steps."""
    import ppgen.models.base as base

    torch_threads(2)
    rbm = ppgen.RBM(4)
    rbm.set_params(weights=torch.zeros(6, 4), visible_bias=torch.zeros(6),
                   hidden_bias=torch.zeros(4))
    seen = []
    original = ppgen.RBM.log_partition.__wrapped__

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    assert base._application_work(rbm, "log_partition", (), {"method": "exact"}) == 0
    wrapped = base._threaded("log_partition", recording)
    wrapped(rbm, method="exact")
    assert seen == [2]
    hmm = ppgen.HiddenMarkovModel(2, emission="bernoulli")
    hmm.set_params(initial_probs=torch.full((2,), 0.5), transition_probs=torch.full((2, 2), 0.5),
                   probs=torch.full((2, 3), 0.5))
    assert hmm.num_features == 3
    assert base._application_work(hmm, "sample", (10,), {"lengths": 50}) == 10 * 3 * 50
