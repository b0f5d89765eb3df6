"""Energy-based models: the restricted Boltzmann machine, its contrastive-divergence training
objective, block-Gibbs helpers and annealed importance sampling of log Z (forward AIS and
reverse RAISE)."""

from .ais import ais_log_partition, raise_log_prob
from .dbm import DBM, DBMObjective
from .dbn import DBN, GreedyCD
from .objectives import ContrastiveDivergence
from .rbm import RBM, FreeEnergy, LogPartition

__all__ = ["RBM", "DBN", "GreedyCD", "DBM", "DBMObjective", "ContrastiveDivergence",
           "LogPartition", "FreeEnergy", "ais_log_partition", "raise_log_prob"]
