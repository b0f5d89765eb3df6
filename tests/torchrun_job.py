"""The EM fits and the training run that tests/test_distributed.py compares with one process,
on every rank of a job launched by torchrun::

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/torchrun_job.py OUT

ppgen starts the process group itself from torchrun's variables (gloo on the CPU). Each rank
saves what it ended with to ``OUT/<rank>.pt``; the VAE writes its checkpoints (rank 0 only)
to ``OUT/ckpt``, which the test resumes in one process.
"""

from __future__ import annotations

import os
import sys

import torch
from distributed_cases import HMM_CASES, corpus, fit_em, fit_hmm, gmm_data, train_vae

import ppgen


def _summary(model, fit, fused=None):
    return {"params": model.get_params(), "converged": fit.converged,
            "history": torch.as_tensor(fit.history["objective"]), "fused": fused}


def main(out: str) -> None:
    torch.set_num_threads(1)
    got = {}
    model = ppgen.GaussianMixture(3, covariance="full")
    got["gmm"] = _summary(model, fit_em(gmm_data(), model))
    model = ppgen.LDA(3)
    got["lda"] = _summary(model, fit_em(corpus(), model))
    for case in HMM_CASES:
        got[f"hmm {case}"] = _summary(*fit_hmm(case))
    vae, fit = train_vae(os.path.join(out, "ckpt"), 6)
    got["vae"] = {"history": torch.as_tensor(fit.history["objective"]),
                  "state": vae.state_dict()}
    got["rank"] = torch.distributed.get_rank()
    got["world_size"] = torch.distributed.get_world_size()
    torch.save(got, os.path.join(out, f"{got['rank']}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
