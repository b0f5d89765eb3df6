"""Error messages a first day with ppgen runs into (issue 11): each names the argument, what
was expected and what came, and says what to do."""

import contextlib
import io
import os
import re
import stat

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen import LDA, GaussianMixture, HiddenMarkovModel
from ppgen.cli import main
from ppgen.diagnostics import compare
from ppgen.plots import plot_history


def run(argv):
    """The ppgen command's exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def assert_user_error(result, *fragments):
    rc, err = result
    assert rc == 2 and err.startswith("ppgen: error:"), (rc, err)
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_load_of_a_directory_without_a_model_names_what_it_holds(tmp_path):
    (tmp_path / "report.md").write_text("x")
    with pytest.raises(ValueError, match=r"path: expected a ppgen model file, or a run "
                       r"directory with model.pt, got the directory .*which holds report.md "
                       r"but no model.pt\. Pass a file written by ppgen.save"):
        ppgen.load(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"training checkpoint.*resume=path"):
        ppgen.load(tmp_path)


def test_load_of_a_run_directory_reads_its_model(tmp_path, old_faithful):
    rc = main(["fit", "gmm", "--data", "old-faithful", "--method", "em", "--num-components",
               "2", "--out", str(tmp_path / "run"), "--quiet"])
    assert rc == 0
    model = ppgen.load(tmp_path / "run")
    assert model.is_fitted and model.num_components == 2


@pytest.mark.parametrize("model", [GaussianMixture(2), HiddenMarkovModel(2), LDA(2)],
                         ids=lambda m: type(m).__name__)
def test_fit_without_data_says_so(model):
    with pytest.raises(TypeError, match=r"data: expected the data to fit \w+ to, got None\. "
                       r"Pass it as fit's second argument: ppgen.fit\(model, x, "
                       r"method='em'\)"):
        ppgen.fit(model, None, method="em")


def test_none_data_to_an_application_says_none(old_faithful):
    gmm = GaussianMixture(2)
    ppgen.fit(gmm, old_faithful, method="em", seed=0, progress=False)
    with pytest.raises(TypeError, match="data: expected a numeric array .*got None"):
        gmm.log_prob(None)


def test_ragged_rows_are_named():
    from ppgen._validation import ragged_rows

    with pytest.raises(TypeError, match=r"got list with rows of different lengths \(row 0 "
                       r"has 2 entries, row 2 has 1 entry\)\. Pass a rectangular array"):
        ppgen.fit(GaussianMixture(2), [[1.0, 2.0], [3.0, 4.0], [5.0]], method="em")
    assert ragged_rows([[1, 2], [3, 4]]) is None
    assert ragged_rows([[[1, 2], [3]], [[1, 2], [3, 4]]]) == ("in row 0, row 0 has 2 entries, "
                                                              "row 1 has 1 entry")
    assert ragged_rows([1.0, [2.0, 3.0]]) == "row 0 has a scalar, row 1 has 2 entries"


def test_text_data_is_named_with_an_example():
    with pytest.raises(TypeError, match=r"got text \(e\.g\. 'a'\)\. Convert the columns"):
        ppgen.fit(GaussianMixture(2), [["a", "b"], ["c", "d"]], method="em")


def test_an_option_of_the_model_points_at_model_kwargs():
    x = torch.randn(3, 5, 2)
    with pytest.raises(TypeError, match=re.escape(
            "lengths is an argument of HiddenMarkovModel.model: pass it as "
            "model_kwargs={'lengths': ...}.")):
        ppgen.fit(HiddenMarkovModel(2), x, method="em", lengths=torch.tensor([5, 4, 3]))

    def schools(y, sigma):
        pyro.sample("obs", dist.Normal(0.0, sigma), obs=y)

    with pytest.raises(TypeError, match=re.escape(
            "sigma is an argument of schools: pass it as model_kwargs={'sigma': ...}.")):
        ppgen.fit(schools, torch.zeros(3), method="mcmc", sigma=torch.ones(3))
    with pytest.raises(TypeError, match=r"got num_stepz\.$"):  # no model argument: no hint
        ppgen.fit(schools, torch.zeros(3), method="mcmc", num_stepz=3)


# (ids other than "gpu": conftest skips tests marked gpu without CUDA)
@pytest.mark.parametrize("device", ["gpu", "GPU:0", "cpu:x:y"], ids=["name_gpu", "name_GPU_0",
                                                                    "name_cpu_x_y"])
def test_a_misspelt_device_is_a_value_error(device, old_faithful):
    gmm = GaussianMixture(2)
    with pytest.raises(ValueError, match=r"device: expected a device name such as 'cpu', "
                       r"'cuda' or 'cuda:0', got .*Check the spelling; use device='cpu'"):
        ppgen.fit(gmm, old_faithful, method="em", device=device)
    assert not gmm.is_fitted


def test_a_device_of_the_wrong_type_is_a_type_error(old_faithful):
    with pytest.raises(TypeError, match=r"device: expected a device name .*got 1.5 \(float\)"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="em", device=1.5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_a_device_index_without_cuda_is_refused(old_faithful):
    with pytest.raises(ValueError, match=r"got 'cuda:3'\. CUDA is not available here"):
        ppgen.fit(GaussianMixture(2), old_faithful, method="em", device=3)


def test_cli_out_under_a_file_is_refused_before_the_fit(tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"
    assert_user_error(run(["fit", "gmm", "--data", "old-faithful", "--method", "em",
                           "--num-components", "2", "--out", out]),
                      "--out: expected a directory that can be created", "is a file, not a "
                      "folder", "Choose another --out")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a Linux /proc")
def test_cli_out_where_no_folder_can_be_made(tmp_path):
    assert_user_error(run(["fit", "gmm", "--data", "old-faithful", "--method", "em",
                           "--num-components", "2", "--out", "/proc/nope/run"]),
                      "--out: expected a directory that can be created, got '/proc/nope/run'",
                      "no folder can be made in '/proc'", "Choose a writable place")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_cli_out_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert_user_error(run(["fit", "gmm", "--data", "old-faithful", "--method", "em",
                               "--num-components", "2", "--out", locked / "run"]),
                          "no folder can be made in", "Permission denied")
    finally:
        locked.chmod(stat.S_IRWXU)
    assert list(locked.iterdir()) == []


def test_lda_fit_with_missing_counts_does_not_suggest_impute():
    counts = torch.tensor([[1.0, 2.0, float("nan")], [0.0, 1.0, 2.0]])
    with pytest.raises(ValueError) as info:
        ppgen.fit(LDA(2), counts, method="em")
    message = str(info.value)
    assert "got 1 NaN or infinite entries (first in document 0, word 2)" in message
    assert message.index("Fitting needs complete counts") < message.index("model.impute")


def test_lda_vocabulary_mismatch_before_fitting_speaks_of_the_models_vocabulary():
    lda = LDA(2, vocabulary=["a", "b"])
    with pytest.raises(ValueError, match=r"expected 2 columns \(one per word of the model's "
                       r"vocabulary\), got shape \(1, 3\)"):
        ppgen.fit(lda, torch.tensor([[1.0, 2.0, 3.0]]), method="em")


@pytest.mark.parametrize("tokens", [[["the", "cat", "sat"], ["a", "dog", "ran"]],
                                    [["the", "cat"], ["a", "dog", "ran"]],
                                    np.array(["the", "cat"])], ids=["lists", "ragged", "array"])
def test_lda_given_tokens_says_to_build_a_count_matrix(tokens):
    with pytest.raises(TypeError, match=r"got text \(.*e\.g\. 'the'\)\. Topic models take word "
                       r"counts per document, not tokens: build a .*CountVectorizer"):
        ppgen.fit(LDA(2), tokens, method="em")


def test_categorical_hmm_with_float_data_shows_a_value_and_a_remedy():
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.5, 2.0]])
    with pytest.raises(ValueError, match=r"got 1 non-integer values, e\.g\. 0\.5 at sequence "
                       r"1, step 1\. Map each symbol to an integer id .*emission='gaussian'"):
        ppgen.fit(HiddenMarkovModel(2, emission="categorical"), x, method="em")


def test_point_estimate_messages_name_the_method(old_faithful):
    em = ppgen.fit(GaussianMixture(2), old_faithful, method="em", seed=0, progress=False)
    with pytest.raises(ValueError, match=r"got a point estimate \(method='em'\)"):
        compare({"a": em, "b": em})
    mcmc_like = type("F", (), {"history": {"objective": []}, "method": "mcmc"})()
    with pytest.raises(ValueError, match=r"got a fit by method='mcmc' without one"):
        plot_history(mcmc_like)
