"""Defaults a first day meets: ``ppgen.fit``'s method, the dtype of parameters fitted to integer
data, pandas input, and scikit-learn's ``score_samples``."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from common import assert_close

import ppgen
from ppgen import GaussianMixture, HiddenMarkovModel
from ppgen.inference.api import default_method
from ppgen.models import MODEL_REGISTRY


def normal_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def test_default_method_is_the_models_best():
    for cls in MODEL_REGISTRY.values():
        expected = "em" if cls.supports_em else "svi"
        assert default_method(cls.__new__(cls)) == expected, cls.__name__
    assert default_method(normal_model) == "svi"
    assert {default_method(m.__new__(m)) for m in (ppgen.LDA, GaussianMixture,
                                                     HiddenMarkovModel)} == {"em"}
    assert {default_method(m.__new__(m)) for m in (ppgen.VAE, ppgen.ProdLDA)} == {"svi"}


def test_fit_without_method_runs_em_on_a_mixture(old_faithful):
    default = ppgen.fit(GaussianMixture(2), old_faithful, seed=0, progress=False)
    em = ppgen.fit(GaussianMixture(2), old_faithful, method="em", seed=0, progress=False)
    assert default.method == "em" and default.converged
    assert_close(default.params["locs"], em.params["locs"])


def test_fit_without_method_runs_svi_on_a_function():
    y = torch.randn(30, generator=torch.Generator().manual_seed(0)) + 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppgen.ConvergenceWarning)
        fit = ppgen.fit(normal_model, y, seed=0, num_steps=20, num_samples=10, progress=False)
    assert fit.method == "svi" and fit.options["guide"] == "normal"
    assert fit.posterior["loc"].shape == (1, 10)


def test_integer_data_give_float64_parameters(old_faithful):
    ints = torch.round(old_faithful * 10).long()
    gmm = GaussianMixture(2)
    ppgen.fit(gmm, ints, method="em", seed=0, progress=False)
    assert gmm.locs.dtype == gmm.weights.dtype == torch.float64
    # the float64 fit of the same numbers as floats: the same estimate
    ref = GaussianMixture(2)
    ppgen.fit(ref, ints.double(), method="em", seed=0, progress=False)
    assert_close(gmm.locs, ref.locs)
    ppgen.fit(gmm, ints.numpy().astype(np.int32), method="em", seed=0, progress=False)
    assert gmm.covariances.dtype == torch.float64
    # floating data keep their dtype
    ppgen.fit(gmm, old_faithful.float(), method="em", seed=0, progress=False)
    assert gmm.locs.dtype == torch.float32


def test_integer_sequences_and_counts_give_float64_parameters():
    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((6, 20, 2), 3.0), generator=g).long()
    hmm = HiddenMarkovModel(2, emission="poisson")
    ppgen.fit(hmm, counts, method="em", seed=0, num_steps=5, progress=False)
    assert hmm.rates.dtype == hmm.transition_probs.dtype == torch.float64
    hmm32 = HiddenMarkovModel(2, emission="poisson", dtype=torch.float32)
    ppgen.fit(hmm32, counts, method="em", seed=0, num_steps=5, progress=False)
    assert hmm32.rates.dtype == torch.float32  # dtype= says otherwise
    docs, _ = ppgen.datasets.make_corpus(40, 25, 2, doc_length=30, seed=0)
    lda = ppgen.LDA(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppgen.ConvergenceWarning)
        ppgen.fit(lda, docs.long(), method="em", seed=0, num_steps=3, progress=False)
    assert lda.topic_word.dtype == torch.float64


def test_score_samples_is_the_log_likelihood_per_row_as_in_sklearn(old_faithful):
    from sklearn.mixture import GaussianMixture as SkGMM

    x = old_faithful.double()
    sk = SkGMM(2, random_state=0, tol=1e-10, max_iter=500).fit(x.numpy())
    gmm = GaussianMixture(2)
    gmm.set_params(weights=sk.weights_, locs=sk.means_, covariances=sk.covariances_)
    assert_close(gmm.score_samples(x), sk.score_samples(x.numpy()), rtol=1e-10)
    assert_close(gmm.score_samples(x).mean(), sk.score(x.numpy()), rtol=1e-10)
    assert_close(gmm.score(x), -gmm.score_samples(x))
    seqs, _ = ppgen.datasets.make_hmm(5, 8, 2, num_features=1, seed=0)
    hmm = HiddenMarkovModel(2)
    ppgen.fit(hmm, seqs, method="em", seed=0, num_steps=5, progress=False)
    assert_close(hmm.score_samples(seqs), hmm.log_prob(seqs))
    assert "score_samples(x).mean()" in GaussianMixture.score.__doc__


def test_pandas_input_keeps_column_names_without_warnings(old_faithful):
    import pandas as pd

    df = pd.DataFrame(old_faithful.numpy(), columns=["eruptions", "waiting"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "NumPy array is not writable" among them
        fit = ppgen.fit(GaussianMixture(2), df, method="em", seed=0, progress=False)
        assert_close(fit.model.log_prob(df), fit.model.log_prob(old_faithful))
    assert fit.feature_names == ["eruptions", "waiting"]
    table = fit.summary()
    assert "locs[0, eruptions]" in table.index
    assert "covariances[1, waiting, eruptions]" in table.index
    assert_close(table.loc["locs[1, waiting]", "value"], fit.params["locs"][1, 1])
    with pytest.warns(ppgen.PointEstimateWarning):
        idata = fit.to_arviz()
    assert list(idata.posterior["locs"].coords["feature"].values) == ["eruptions", "waiting"]
    assert list(idata.posterior["covariances"].coords["col"].values) == ["eruptions",
                                                                          "waiting"]
    assert list(idata.observed_data["obs"].coords["feature"].values) == ["eruptions",
                                                                         "waiting"]
    # a user's function gets the DataFrame's values as a tensor, without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ppgen.fit(normal_model, pd.Series(old_faithful[:, 0].numpy()), method="svi",
                        seed=0, num_steps=5, num_samples=5, tol=0, progress=False)
    assert out.data.dtype == torch.float64 and out.data.shape == (len(old_faithful),)


def test_slow_mcmc_message_gives_the_estimate_the_cause_and_the_remedy():
    from ppgen.inference.mcmc import slow_mcmc_message

    msg = slow_mcmc_message(2.0, 8000, num_data=272, discrete=("assignment",),
                            remedy="Faster: method='em'.")
    assert msg.startswith("NUTS is projected to take about 4.4 h (272 data; discrete sites "
                          "summed out in every gradient (assignment)): the first iterations "
                          "took 2000 ms each, for 8000 iterations")
    assert "Faster: method='em'." in msg and "num_chains" in msg
    assert "about 90 s" in slow_mcmc_message(0.01, 9000, num_data=None, discrete=(),
                                             remedy=None)


def test_slow_mcmc_warns_up_front_at_the_users_line(monkeypatch, old_faithful):
    from ppgen.inference import mcmc

    monkeypatch.setattr(mcmc, "SLOW_MCMC_SECONDS", 0.0)  # every run counts as slow
    with pytest.warns(mcmc.SlowMCMCWarning) as caught:
        ppgen.fit(GaussianMixture(2), old_faithful[:40], method="mcmc", num_samples=6,
                  num_warmup=6, num_chains=2, seed=0, progress=False)
    slow = [w for w in caught if w.category is mcmc.SlowMCMCWarning]
    assert len(slow) == 1  # once per fit, from the first chain's first iterations
    msg = str(slow[0].message)
    assert "40 data; discrete sites summed out in every gradient (assignment)" in msg
    assert "for 24 iterations" in msg and "method='em'" in msg and "guide='normal'" in msg
    assert slow[0].filename == __file__


def test_quick_mcmc_does_not_warn():
    from ppgen.inference import mcmc

    y = torch.randn(20, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", mcmc.SlowMCMCWarning)
        fit = ppgen.fit(normal_model, y, method="mcmc", num_samples=15, num_warmup=15,
                        num_chains=1, seed=0, progress=False)
    assert fit.posterior["loc"].shape == (1, 15)
