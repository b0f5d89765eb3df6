"""ppgen.diagnostics: what point-estimate fits give ArviZ, LOO on them, and quiet summaries."""

import warnings

import pytest

import ppgen
from ppgen import GaussianMixture, PointEstimateWarning
from ppgen.diagnostics import describe


@pytest.fixture(scope="module")
def em_fit():
    x = ppgen.datasets.load_old_faithful()
    return ppgen.fit(GaussianMixture(2), x, method="em", seed=0, progress=False)


@pytest.fixture(scope="module")
def map_fit():
    x = ppgen.datasets.load_old_faithful()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppgen.ConvergenceWarning)
        return ppgen.fit(GaussianMixture(2), x, method="svi", guide="map", num_steps=30,
                         seed=0, progress=False)


def test_point_estimate_to_arviz_says_what_it_holds_and_warns_once(em_fit):
    em_fit._cache.pop("idata", None)
    with pytest.warns(PointEstimateWarning, match="method='mcmc'.*guide='normal'"):
        idata = em_fit.to_arviz()
    assert idata.attrs["ppgen_estimate"] == ("EM point estimate (1 chain x 1 draw, not "
                                             "posterior draws)")
    assert "az.loo" in idata.attrs["ppgen_note"]
    assert idata.posterior.sizes["chain"] == 1 and idata.posterior.sizes["draw"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", PointEstimateWarning)
        assert em_fit.to_arviz() is idata  # converted (and warned) once per fit


@pytest.mark.parametrize("which", ["em_fit", "map_fit"])
def test_loo_of_a_point_estimate_names_the_remedy(which, request):
    fit = request.getfixturevalue(which)
    with pytest.raises(ValueError, match=r"fit: expected posterior draws for LOO, got a "
                       r".*point estimate.*method='mcmc'.*guide='normal' and num_samples"):
        ppgen.loo(fit)
    with pytest.raises(ValueError, match=r"fits\['a'\]: expected posterior draws"):
        ppgen.compare({"a": fit, "b": fit})


def test_loo_refuses_what_is_not_a_fit():
    with pytest.raises(TypeError, match="fit: expected a ppgen Fit, got dict"):
        ppgen.loo({})


def test_summary_and_describe_name_method_and_guide(em_fit, map_fit):
    assert describe(map_fit) == ("SVI MAP point estimate, guide='map' (1 chain x 1 draw, not "
                                 "posterior draws)")
    table = map_fit.summary()
    assert table.columns.name == "SVI MAP point estimate, guide='map'"
    assert table.attrs["guide"] == "map" and table.attrs["method"] == "svi"
    assert "SVI MAP point estimate" in str(table).splitlines()[0]
    assert em_fit.summary().columns.name == "EM point estimate"
    # a model's default guide is the one recorded when none is given
    assert map_fit.options["guide"] == GaussianMixture.default_guide == "map"


def test_summary_of_draws_prints_no_foreign_warnings(capsys):
    # Mean-field draws of a full-covariance mixture: the fixed entries of the Cholesky factors
    # of the correlations are constant, and one chain has no R-hat; ArviZ warns about both
    # (RuntimeWarnings, and a log line on stderr), which ppgen's summary keeps out.
    x = ppgen.datasets.load_old_faithful()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppgen.ConvergenceWarning)
        fit = ppgen.fit(GaussianMixture(2), x, method="svi", guide="normal", num_steps=40,
                        num_samples=37, seed=0, progress=False)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = fit.summary()
    err = capsys.readouterr().err
    assert [str(w.message) for w in caught] == []
    assert "Shape validation" not in err, err
    assert table.columns.name == "SVI, guide='normal': 37 draws from the variational posterior"
    assert table.loc["weights[0]", "mean"] > 0
    # The public parameters (as an EM fit reports them), not internal sites such as the
    # Cholesky factors of the correlations.
    assert not any(name.startswith(("corr_chol", "scales")) for name in table.index)
    post = fit.posterior
    tril = post["scales"].unsqueeze(-1) * post["corr_chol"]
    cov = tril @ tril.transpose(-1, -2)  # (1, 37, K, D, D)
    assert table.loc["covariances[1, 0, 1]", "mean"] == pytest.approx(
        float(cov[..., 1, 0, 1].mean()), abs=1e-3)  # ArviZ rounds to 3 decimals
    assert "covariances" in fit.to_arviz().posterior
    # var_names picks sites as in ArviZ
    assert list(fit.summary(var_names=["corr_chol"]).index)[0] == "corr_chol[0, 0, 0]"


def test_hmm_draws_are_summarised_by_public_parameters():
    x, _ = ppgen.datasets.make_hmm(6, 10, 2, num_features=2, emission="gaussian",
                                   covariance="full", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppgen.ConvergenceWarning)
        fit = ppgen.fit(ppgen.HiddenMarkovModel(2, covariance="full"), x, method="svi",
                        guide="normal", num_steps=30, num_samples=20, seed=0, progress=False)
    table = fit.summary()
    assert not any(name.startswith(("corr_chol", "scales")) for name in table.index)
    assert {"transition_probs[0, 1]", "locs[1, 0]", "covariances[0, 1, 0]"} <= set(table.index)
    post = fit.posterior
    tril = post["scales"].unsqueeze(-1) * post["corr_chol"]
    cov = (tril @ tril.transpose(-1, -2))[..., 0, 1, 0]
    assert table.loc["covariances[0, 1, 0]", "mean"] == pytest.approx(float(cov.mean()),
                                                                       abs=1e-3)


@pytest.mark.parametrize("cls", [GaussianMixture, ppgen.HiddenMarkovModel, ppgen.LDA,
                                 ppgen.ProdLDA, ppgen.VAE, ppgen.ConditionalVAE],
                         ids=lambda c: c.__name__)
def test_each_elbo_models_docstring_names_its_default_guide(cls):
    # (issue 11, item 4) the guide a plain fit(model, x, "svi") uses, where a user looks
    assert f'guide="{cls.default_guide}"' in " ".join(cls.__doc__.split()), cls.__name__
