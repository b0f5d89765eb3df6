"""Data loaders (small files shipped in the package, large ones from ``../shared/data``) and
synthetic generators that return the true parameters with the data."""

from .loaders import data_dir, load_old_faithful
from .synthetic import make_mixture

__all__ = ["load_old_faithful", "make_mixture", "data_dir"]
