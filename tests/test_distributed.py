"""EM across processes (torch.distributed, gloo on the CPU): two ranks started here with
``torch.multiprocessing`` give the single-process fit; a rank that dies makes the other fail
with a clear error instead of hanging."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import traceback

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp
from distributed_cases import (
    HMM_CASES,
    START,
    corpus,
    fit_em,
    fit_hmm,
    gmm_data,
    train_vae,
)

import ppgen
from ppgen._distributed import shard_rows

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def _mixture_function(data):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=dist.constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("obs", dist.Normal(locs[z], 1.0).to_event(1), obs=data)



def _normal_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.HalfNormal(5.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)



def _mcmc():
    y = torch.tensor([1.2, 0.4, 2.2, 1.9, 0.7, 1.1])
    return ppgen.fit(_normal_model, y, method="mcmc", num_chains=3, num_samples=40,
                     num_warmup=40, seed=0, progress=False, jit_compile=False)


def _worker(rank, size, store, out_dir, job):
    os.environ.pop("WORLD_SIZE", None)
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=size,
        timeout=datetime.timedelta(seconds=4 if job == "hang" else 60))
    model = ppgen.GaussianMixture(3, covariance="full")
    try:
        if job == "die" and rank == 1:
            os._exit(3)  # a rank lost before the fit's first collective
        if job == "hang" and rank == 1:
            time.sleep(8)  # a rank that stops answering (beyond the 4 s timeout)
            os._exit(0)
        x = gmm_data()
        if job == "one_sequence":  # fewer sequences than ranks
            model = ppgen.HiddenMarkovModel(2)
            x = x.reshape(1, -1, 2)
        elif job == "function":  # EM of a Pyro model function: one process only so far
            model = _mixture_function
        elif job == "alone":  # rank 0 fits alone: without single_process it would wait
            if rank == 0:
                with ppgen.single_process():
                    fit = ppgen.fit(ppgen.HiddenMarkovModel(2), x.float().reshape(1, -1, 2),
                                    method="em", seed=0, progress=False, num_steps=5)
                torch.save({"history": torch.as_tensor(fit.history["objective"])},
                           os.path.join(out_dir, f"{rank}.pt"))
            return
        elif job in ("ctrlc", "ctrlc_vae"):  # Ctrl-C reaches rank 1 only, mid-fit
            import signal

            calls = []

            def interrupt_rank_1(*args, **kwargs):
                calls.append(1)
                if rank == 1 and len(calls) == 3:
                    os.kill(os.getpid(), signal.SIGINT)

            if job == "ctrlc":
                step = model.m_step
                model.m_step = lambda *a, **k: (interrupt_rank_1(), step(*a, **k))[1]
                fit = ppgen.fit(model, x, method="em", seed=0, num_steps=50, tol=0,
                                progress=False)
            else:
                from ppgen.models.latent import VAEObjective

                vstep = VAEObjective.step
                VAEObjective.step = lambda self, *a: (interrupt_rank_1(), vstep(self, *a))[1]
                model, fit = train_vae(None, 12)
            torch.save({"history": torch.as_tensor(fit.history["objective"]),
                        "interrupted": fit.interrupted},
                       os.path.join(out_dir, f"{rank}.pt"))
            return
        elif job == "different":  # each rank passes its own data: refused on every rank
            x = x[:500] if rank == 0 else x[500:1000]
        elif job == "svi":
            ppgen.fit(model, gmm_data(), method="svi", num_steps=5, seed=0, progress=False)
        elif job == "mcmc":
            from ppgen.inference import mcmc

            runs, run = [], mcmc.MCMC.run

            def counted(self, *args, **kwargs):
                runs.append(1)
                return run(self, *args, **kwargs)

            mcmc.MCMC.run = counted
            fit = _mcmc()
            torch.save({k: v for k, v in fit.posterior.items()}
                       | {"runs": torch.tensor(len(runs))}
                       | {f"stat_{k}": torch.as_tensor(v) for k, v in fit.sample_stats.items()},
                       os.path.join(out_dir, f"{rank}.pt"))
            return
        elif job in ("die", "hang"):
            model.set_params(**START)
        fit = fit_em(x, model)
        torch.save({"params": model.get_params(),
                    "history": torch.as_tensor(fit.history["objective"]),
                    "converged": fit.converged}, os.path.join(out_dir, f"{rank}.pt"))
    except Exception as exc:  # the parent test reads what each rank raised
        with open(os.path.join(out_dir, f"{rank}.err"), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        if job in ("die", "hang"):  # the model keeps the parameters it had
            unchanged = all(torch.equal(model.get_params()[k], torch.as_tensor(v))
                            for k, v in START.items())
            with open(os.path.join(out_dir, f"{rank}.unchanged"), "w") as f:
                f.write(str(unchanged))
    finally:
        if job != "die":
            torch.distributed.destroy_process_group()


def _run(tmp_path, job, size=2):
    ctx = mp.start_processes(_worker, args=(size, str(tmp_path / "store"), str(tmp_path), job),
                             nprocs=size, join=False, start_method="spawn")
    for p in ctx.processes:  # each on its own: ctx.join would kill the others at a failure
        p.join(timeout=300)
    alive = [p for p in ctx.processes if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} rank(s) still running after 300 s: a hang"


def test_shards_cover_every_row_once():
    for n in (1, 7, 10, 1001):
        for size in (1, 2, 3, 8):
            rows = [list(range(n))[shard_rows(n, r, size)] for r in range(size)]
            assert sum(rows, []) == list(range(n))
            assert max(map(len, rows)) - min(map(len, rows)) <= 1


def test_mcmc_chains_spread_over_ranks_equal_the_single_process_chains(tmp_path):
    """Three chains on two ranks (chains 0, 2 on rank 0, chain 1 on rank 1), each with the
    seed it has in one process, gathered on every rank: the same draws and stats, bit for
    bit."""
    _run(tmp_path, "mcmc")
    for rank in (0, 1):
        assert not (tmp_path / f"{rank}.err").exists(), (tmp_path / f"{rank}.err").read_text()
    single = _mcmc()
    for rank, runs in ((0, 2), (1, 1)):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert int(got["runs"]) == runs  # each rank sampled its own chains only
        for name, value in single.posterior.items():
            assert value.shape[:2] == (3, 40) and torch.equal(got[name], value), name
        for name, value in single.sample_stats.items():
            np.testing.assert_array_equal(got[f"stat_{name}"].numpy(), value, err_msg=name)


def test_a_fit_on_one_rank_alone_runs_in_single_process_mode(tmp_path):
    _run(tmp_path, "alone")
    assert not (tmp_path / "0.err").exists(), (tmp_path / "0.err").read_text()
    assert torch.load(tmp_path / "0.pt")["history"].shape[0] >= 2


@pytest.mark.parametrize("job", ["ctrlc", "ctrlc_vae"])
def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(tmp_path, job):
    """The stop request travels with the step's own collective: both ranks end at the same
    iteration, marked interrupted, instead of one waiting for the other until the timeout."""
    _run(tmp_path, job)
    got = []
    for rank in (0, 1):
        assert not (tmp_path / f"{rank}.err").exists(), (tmp_path / f"{rank}.err").read_text()
        got.append(torch.load(tmp_path / f"{rank}.pt"))
    assert got[0]["interrupted"] and got[1]["interrupted"]
    assert torch.equal(got[0]["history"], got[1]["history"])
    assert 2 <= len(got[0]["history"]) <= 5


def test_different_data_on_the_ranks_are_refused_on_every_rank(tmp_path):
    """Each rank would fit its own rows of a different data set: every rank raises."""
    _run(tmp_path, "different")
    for rank in (0, 1):
        err = (tmp_path / f"{rank}.err").read_text()
        assert err.startswith("ValueError: data: expected the same data set on every rank"), err
        assert "mmap_mode" in err
        assert not (tmp_path / f"{rank}.pt").exists()


def test_em_that_cannot_be_shared_out_is_refused_on_every_rank(tmp_path):
    """One sequence on two ranks (EM shards whole sequences), and EM of a Pyro model
    function (no additive statistics declared): each rank raises, naming the remedy."""
    _run(tmp_path, "one_sequence")
    for rank in (0, 1):
        err = (tmp_path / f"{rank}.err").read_text()
        assert err.startswith("ValueError: data: expected at least one row (sequence"), err
        assert "1 rows" in err and "fewer processes" in err
    _run(tmp_path, "function")
    for rank in (0, 1):
        err = (tmp_path / f"{rank}.err").read_text()
        assert err.startswith("NotSupportedError"), err
        assert "GaussianMixture, the HMM and LDA" in err and "2 ranks" in err
        assert "single_process" in err


def test_a_training_loop_without_data_parallel_steps_is_refused(tmp_path):
    """SVI on a mixture (Pyro's ELBO draws its noise inside traces, so every rank would
    train a copy of its own): refused."""
    _run(tmp_path, "svi")
    for rank in (0, 1):
        err = (tmp_path / f"{rank}.err").read_text()
        assert err.startswith("NotSupportedError"), err
        assert "training loop" in err and "2 ranks" in err and "destroy_process_group" in err


@pytest.mark.parametrize("job", ["die", "hang"])
def test_a_lost_rank_stops_the_others_with_a_clear_error(tmp_path, job):
    """A rank that dies (its connections close) or stops answering (the collective's
    timeout): the other fails with DistributedError, its model as it was, no hang."""
    _run(tmp_path, job)
    err = (tmp_path / "0.err").read_text()
    assert err.startswith("DistributedError"), err
    assert "across 2 processes failed on rank 0" in err and "run the job again" in err
    assert (tmp_path / "0.unchanged").read_text() == "True"
    assert not (tmp_path / "0.pt").exists()


# ----------------------------------------------------------------- one job under torchrun
@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory):
    """tests/torchrun_job.py on two ranks launched by torchrun (--standalone, gloo; ppgen
    initialises the process group from torchrun's variables): what each rank saved."""
    out = tmp_path_factory.mktemp("torchrun")
    here = os.path.dirname(os.path.abspath(__file__))
    launcher = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME",
                "LOCAL_WORLD_SIZE", "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items()
           if k not in launcher and not k.startswith("TORCHELASTIC_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([os.path.dirname(here), here]))
    # The timeout only catches a hang (the job takes about a minute); it is no speed limit.
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", os.path.join(here, "torchrun_job.py"), str(out)],
        capture_output=True, text=True, timeout=3600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, [torch.load(out / f"{rank}.pt") for rank in (0, 1)]


def _assert_same_fit(got, model, fit, what):
    """The history (a round-off flip of the last tol check may add or drop one iteration)
    and the parameters to 1e-10."""
    history = fit.history["objective"]
    assert got["converged"] == fit.converged, what
    assert len(history) > 5, what
    assert abs(len(got["history"]) - len(history)) <= 1, what
    common = min(len(got["history"]), len(history))
    np.testing.assert_allclose(got["history"][:common], history[:common], rtol=1e-10,
                               err_msg=what)
    for name, value in model.get_params().items():
        np.testing.assert_allclose(got["params"][name], value, rtol=1e-10, atol=1e-12,
                                   err_msg=f"{what}: {name}")


def test_torchrun_job_ran_on_two_ranks(torchrun_job):
    _, ranks = torchrun_job
    assert [(got["rank"], got["world_size"]) for got in ranks] == [(0, 2), (1, 2)]


def test_gmm_em_under_torchrun_gives_the_single_process_fit(torchrun_job):
    """Uneven shards (501 + 500 rows), the default k-means++ start, two restarts: every rank
    ends with the single process's parameters and log-likelihoods, to 1e-10."""
    _, ranks = torchrun_job
    single = ppgen.GaussianMixture(3, covariance="full")
    fit = fit_em(gmm_data(), single)
    assert fit.converged
    for got in ranks:
        _assert_same_fit(got["gmm"], single, fit, "gmm")


def test_lda_em_under_torchrun_gives_the_single_process_fit(torchrun_job):
    """The documents' bound and expected counts add up over ranks; the topic-word term is
    counted once (em_shared_objective)."""
    _, ranks = torchrun_job
    single = ppgen.LDA(3)
    fit = fit_em(corpus(), single)
    for got in ranks:
        _assert_same_fit(got["lda"], single, fit, "lda")


@pytest.mark.parametrize("case", list(HMM_CASES))
def test_hmm_em_under_torchrun_gives_the_single_process_fit(torchrun_job, case):
    """15 ragged sequences split 8 + 7, two restarts from the default start: every emission,
    the Gaussian on the fused and the unfused E-step, a prior (concentrations > 1) counted
    once: every rank ends with the single process's parameters and history, to 1e-10."""
    _, ranks = torchrun_job
    single, fit, fused = fit_hmm(case)
    assert fused == (case == "gaussian-full")  # both Gaussian E-step paths are covered
    for got in ranks:
        assert got[f"hmm {case}"]["fused"] == fused, case
        _assert_same_fit(got[f"hmm {case}"], single, fit, case)


def test_vae_under_torchrun_follows_the_single_process_run(torchrun_job):
    """A global batch of 51 rows split 26 + 25, gradients summed over the ranks by their
    share, each row's noise as in one process: the loss trajectory and the weights of one
    process, to float32 round-off."""
    _, ranks = torchrun_job
    single, fit = train_vae(None, 6)
    for got in ranks:
        np.testing.assert_allclose(got["vae"]["history"], fit.history["objective"], rtol=1e-5)
        for name, value in single.state_dict().items():
            np.testing.assert_allclose(got["vae"]["state"][name], value, rtol=1e-4, atol=1e-5,
                                       err_msg=name)


def test_a_torchrun_checkpoint_resumes_in_one_process(torchrun_job, tmp_path):
    """Checkpoints come from rank 0 only and hold no rank's state: 6 steps on two ranks,
    resumed in one process to 12, end where 12 steps in one process end."""
    out, _ = torchrun_job
    resumed, fit = train_vae(tmp_path / "resumed", 12, resume=out / "ckpt")
    assert fit.history["objective"].shape == (12,)
    single, full = train_vae(None, 12)
    np.testing.assert_allclose(fit.history["objective"], full.history["objective"], rtol=1e-5)
    for name, value in single.state_dict().items():
        np.testing.assert_allclose(resumed.state_dict()[name], value, rtol=1e-4, atol=1e-5,
                                   err_msg=name)
