"""Data loaders (small files shipped in the package, large ones such as MNIST from
``../shared/data`` or ``PPGEN_DATA_DIR``) and
synthetic generators that return the true parameters with the data."""

from .images import DynamicBinarized, load_digits, load_mnist
from .loaders import data_dir, load_ap_corpus, load_jsb_chorales, load_old_faithful
from .synthetic import make_corpus, make_grid, make_hmm, make_mixture, make_ring

__all__ = ["load_old_faithful", "load_digits", "load_mnist", "DynamicBinarized",
           "load_jsb_chorales", "load_ap_corpus", "make_mixture", "make_hmm", "make_corpus",
           "make_ring", "make_grid",
           "data_dir"]
