import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("PPGEN_SMOKE", "1")
# The test models are small: one intra-op thread is faster, and stays fast when the two
# cores are shared with other work (with more threads, tiny ops wait on each other).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def old_faithful():
    import ppgen

    return ppgen.datasets.load_old_faithful()
