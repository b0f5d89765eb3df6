"""Hidden Markov model with enumerated states: Baum–Welch EM, SVI and NUTS through one Pyro
model, Viterbi decoding, posterior marginals, sampling, anomaly scores and imputation.

The Pyro model, for sequences n = 1..N of lengths T_n::

    initial_probs          ~ Dirichlet(initial_concentration * 1_K)
    transition_probs[k]    ~ Dirichlet(transition_concentration * 1_K)     for each state k
    emission parameters[k] ~ the emission's prior                          for each state k
    z[n, 0]  ~ Categorical(initial_probs)
    z[n, t]  ~ Categorical(transition_probs[z[n, t-1]])                     t < T_n
    x[n, t]  ~ emission(z[n, t])

Two equivalent Pyro forms are offered. By default the states are summed out inside one
``obs`` site per sequence by the forward algorithm (vectorised over sequences, linear in T),
which is what SVI and NUTS run fastest. ``model(..., enumerate_states=True)`` writes the
chain with ``pyro.markov`` and one enumerated ``state_t`` site per step, as in Pyro's HMM
examples, so ``TraceEnum_ELBO`` sums the states out and ``infer_discrete`` draws them (at
temperature 0, the Viterbi path). Both give the same log-likelihood.

Emissions: ``"gaussian"`` (``covariance="diag"``, ``"full"`` or ``"spherical"``; parameters
``locs``, ``covariances`` shaped as hmmlearn's / scikit-learn's), ``"categorical"`` (symbols
0..S-1; ``probs`` (K, S)), ``"bernoulli"`` (vectors of independent bits, e.g. the 88 keys of
a piano roll; ``probs`` (K, D)) and ``"poisson"`` (vectors of counts; ``rates`` (K, D)).

Sequences of different lengths come as a list of tensors, or as a padded tensor with
``lengths``; values at padded steps are ignored.

Speed: EM, ``log_prob``, ``predict`` and ``predict_proba`` on the CPU run compiled
forward-backward and Viterbi kernels (:mod:`ppgen.models.sequence.compiled`, O(T K^2) per
sequence, no Python per step), for one long sequence as for many short ones; where gradients
are wanted (SVI, NUTS) or on a GPU the torch recursions run, vectorised over sequences, and
time-parallel for a few long sequences (:mod:`ppgen.models.sequence.parallel`). Gaussian EM
in float64 on the CPU goes further, automatically (``compiled.fused_usable``): a fused compiled
E-step computes the exact emission densities, the forward pass and, in its backward pass, the
M-step's sufficient statistics directly, without per-frame posterior or feature arrays
(``compiled.gaussian_e_step``); float32, other emissions, gradients and GPUs keep the path
above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.ops.indexing import Vindex

from ..._random import derive_seeds, resolve_seed
from ..._validation import (
    INTEGER_DATA_DTYPE,
    bad_type,
    bad_value,
    check_choice,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    tensor_from_array,
)
from .._blocks import row_blocks
from ..base import GenerativeModel, register
from ..gaussian import cholesky
from ..relabel import permute_components, pivot_permutations
from . import compiled
from .emissions import Emission, make_emission
from .ops import (
    forward_backward,
    forward_log_prob,
    sample_posterior,
    sample_states,
    viterbi,
)

__all__ = ["HiddenMarkovModel"]

EmissionType = Literal["gaussian", "categorical", "bernoulli", "poisson"]
# Elements of (draws, sequences, steps, states) per chunk of the vectorised log-likelihood.
_CHUNK_ELEMENTS = 4_000_000
_EMPTY = torch.Size()


# --------------------------------------------------------------------- sequence input
def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(resolve_seed(seed))
    return g


def _to_tensor(x: Any, arg: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except ValueError as exc:
            raise bad_type(arg, "a rectangular numeric array", type(x).__name__,
                           "Pass sequences of different lengths as a list of arrays, or as "
                           "a padded array with lengths=...") from exc
        if arr.dtype == object:
            raise bad_type(arg, "a rectangular numeric array", "a ragged (object) array",
                           "Pass sequences of different lengths as a list of arrays, or as "
                           "a padded array with lengths=...")
        if arr.dtype.kind not in "biuf":
            raise bad_type(arg, "numeric values", f"dtype {arr.dtype}")
        t = tensor_from_array(arr)
    if t.is_complex():
        raise bad_type(arg, "real values", f"dtype {t.dtype}")
    return t.to(torch.get_default_dtype()) if t.dtype == torch.bool else t


def _pad(seqs: list[torch.Tensor], arg: str, frame_dims: int):
    """Stack a list of sequences (T_i, *frame) into (N, max T, *frame) and their lengths."""
    if not seqs:
        raise bad_value(arg, "at least one sequence", "an empty list")
    shapes = set()
    for i, s in enumerate(seqs):
        if s.dim() != 1 + frame_dims:
            want = "(T,)" if frame_dims == 0 else "(T, num_features)"
            raise bad_value(f"{arg}[{i}]", f"a sequence of shape {want}",
                            f"shape {tuple(s.shape)}",
                            "For one feature per step reshape it with s.reshape(-1, 1)."
                            if frame_dims == 1 and s.dim() == 1 else None)
        if s.shape[0] == 0:
            raise bad_value(f"{arg}[{i}]", "a sequence with at least one step", "length 0",
                            "Drop empty sequences.")
        shapes.add(tuple(s.shape[1:]))
    if len(shapes) > 1:
        raise bad_value(arg, "sequences with the same number of features",
                        f"frame shapes {sorted(shapes)}")
    lengths = torch.tensor([s.shape[0] for s in seqs])
    dtype = seqs[0].dtype
    for s in seqs[1:]:
        dtype = torch.promote_types(dtype, s.dtype)
    out = torch.nn.utils.rnn.pad_sequence([s.to(dtype) for s in seqs], batch_first=True)
    return out, lengths


# ------------------------------------------------------------------ Pyro distribution
class HMMSequences(TorchDistribution):
    """Distribution of whole padded sequences with the hidden states summed out.

    ``batch_shape`` is (*P, N) for parameters with leading batch dimensions *P (posterior
    draws laid along a plate) and N sequences; ``event_shape`` is (T, *frame).
    ``log_prob`` runs the forward algorithm; ``sample`` draws states and frames (frames at
    padded steps are zero).
    """

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, emission: Emission, init: torch.Tensor, trans: torch.Tensor,
                 params: dict[str, torch.Tensor], lengths: torch.Tensor, num_steps: int,
                 frame_shape: tuple[int, ...], validate_args: bool | None = None) -> None:
        k = trans.shape[-1]
        lead = trans.shape[:-2]
        self.emission = emission
        self.init = init.reshape(*lead, k)
        self.trans = trans
        self.params = params
        self.mask = torch.arange(num_steps, device=lengths.device) < lengths.unsqueeze(-1)
        self.frame_shape = frame_shape
        super().__init__(lead + lengths.shape, (num_steps, *frame_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        n, num_steps = self.mask.shape
        # Padded steps are ignored, also by gradients: zero them (NaN padding would give
        # 0 * NaN = NaN in the backward pass of the emission's matrix products).
        pad = ~self.mask.view(n, num_steps, *(1,) * len(self.frame_shape))
        value = value.masked_fill(pad, 0)
        frames = value.reshape(n * num_steps, *self.frame_shape)
        log_b = self.emission.log_prob(self.params, frames)
        log_b = log_b.reshape(*log_b.shape[:-2], n, num_steps, log_b.shape[-1])
        return forward_log_prob(log_b, self.init, self.trans, self.mask)

    def sample(self, sample_shape: torch.Size = _EMPTY) -> torch.Tensor:
        if tuple(sample_shape) or self.trans.dim() > 2:
            raise NotImplementedError("HMMSequences.sample draws one batch for one parameter "
                                      "set; use Predictive(parallel=False).")
        n, num_steps = self.mask.shape
        with torch.no_grad():
            z = sample_states(self.init, self.trans, n, num_steps, None)
            x = self.emission.sample(self.params, z, None)
            pad = ~self.mask
            return x.masked_fill(pad.view(*pad.shape, *(1,) * len(self.frame_shape)), 0)


# ------------------------------------------------------------------------------ model
@register("hmm")
class HiddenMarkovModel(GenerativeModel):
    """Hidden Markov model with enumerated states.

    Parameters
    ----------
    num_states : int
        Number of hidden states K.
    emission : {"gaussian", "categorical", "bernoulli", "poisson"}
        Distribution of each frame given its state (see the module docstring).
    covariance : {"diag", "full", "spherical"}
        Gaussian emissions: covariance structure of each state.
    num_symbols : int, optional
        Categorical emissions: size of the alphabet; inferred from the training data (its
        largest symbol + 1) when None.
    initial_concentration, transition_concentration : float
        Concentrations of the symmetric Dirichlet priors on the initial distribution and on
        each row of the transition matrix. EM maximises the posterior (MAP) under them; the
        default 1 (a flat prior) makes EM maximum likelihood, as hmmlearn's default.
        Values above 1 keep rare states and transitions from collapsing to zero.
    emission_concentration : float
        Categorical: Dirichlet concentration of each state's symbol probabilities; Bernoulli:
        Beta(a, a) prior of each bit's probability. Used by EM (MAP) as above.
    reg_covar : float
        Gaussian: added to the covariance diagonal in every M-step (as scikit-learn does).
    lkj_concentration : float
        Gaussian, full covariance: LKJ prior on the correlations (SVI/MCMC).
    dtype : torch.dtype, optional
        Floating type of the parameters; by default the training data's (floating) dtype, or
        float64 for integer data (as scikit-learn).

    Notes
    -----
    ``ppgen.fit(hmm, x)`` runs EM (the default method of models with closed-form EM): a
    maximum-likelihood (MAP under concentrations above 1) point estimate. ``method="svi"``
    uses the default guide ``guide="map"`` (a MAP point estimate); pass ``guide="normal"``
    and ``num_samples`` for draws from a mean-field variational posterior, or use
    ``method="mcmc"`` (NUTS) for posterior draws. Only fits with draws support PSIS-LOO
    (``ppgen.loo``, ``ppgen.compare``).

    Examples
    --------
    >>> import ppgen
    >>> x, truth = ppgen.datasets.make_hmm(200, 50, num_states=3, num_features=2, seed=0)
    >>> hmm = ppgen.HiddenMarkovModel(3, emission="gaussian")
    >>> fit = ppgen.fit(hmm, x, method="em", seed=0, progress=False)
    >>> hmm.predict(x).shape
    torch.Size([200, 50])
    """

    param_names = ("initial_probs", "transition_probs", "locs", "covariances", "probs",
                   "rates")
    state_names = ("prior_loc", "prior_scale")
    has_enumerated_sites = True
    supports_em = True
    #: Expected counts and the emission's sufficient statistics add up over sequences
    #: (em_additive), the log prior is counted once: EM runs across processes.
    em_distributed = True
    # e_step adds the log prior density (zero under flat priors) to the log-likelihood
    em_objective = "log-likelihood + log prior (nats)"
    default_guide = "map"
    data_kwargs = ("lengths",)
    observed_dims = ("sequence", "time", "feature")

    def __init__(self, num_states: int, *, emission: EmissionType = "gaussian",
                 covariance: Literal["diag", "full", "spherical"] = "diag",
                 num_symbols: int | None = None, initial_concentration: float = 1.0,
                 transition_concentration: float = 1.0, emission_concentration: float = 1.0,
                 reg_covar: float = 1e-6, lkj_concentration: float = 1.0,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.num_states = check_positive_int("num_states", num_states)
        self.emission = check_choice("emission", emission,
                                     ("gaussian", "categorical", "bernoulli", "poisson"))
        self.covariance = check_choice("covariance", covariance, ("diag", "full", "spherical"))
        self.num_symbols = None if num_symbols is None else check_positive_int(
            "num_symbols", num_symbols, minimum=2)
        self.initial_concentration = check_positive_float("initial_concentration",
                                                          initial_concentration)
        self.transition_concentration = check_positive_float("transition_concentration",
                                                             transition_concentration)
        self.emission_concentration = check_positive_float("emission_concentration",
                                                           emission_concentration)
        self.reg_covar = check_nonnegative_float("reg_covar", reg_covar)
        self.lkj_concentration = check_positive_float("lkj_concentration", lkj_concentration)
        if isinstance(dtype, str):  # as written by get_config (ppgen.save)
            dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise bad_type("dtype", "a floating torch dtype (torch.float32 or torch.float64)",
                           repr(dtype))
        self.param_dtype = dtype
        self._inferred_symbols: int | None = None
        self._em_cache: tuple | None = None
        self._em_plan: dict[str, Any] | None = None
        self._em_fixed: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ configuration
    def get_config(self) -> dict[str, Any]:
        return {"num_states": self.num_states, "emission": self.emission,
                "covariance": self.covariance, "num_symbols": self.num_symbols,
                "initial_concentration": self.initial_concentration,
                "transition_concentration": self.transition_concentration,
                "emission_concentration": self.emission_concentration,
                "reg_covar": self.reg_covar, "lkj_concentration": self.lkj_concentration,
                "dtype": None if self.param_dtype is None else str(self.param_dtype)}

    @property
    def emission_param_names(self) -> tuple[str, ...]:
        return {"gaussian": ("locs", "covariances"), "categorical": ("probs",),
                "bernoulli": ("probs",), "poisson": ("rates",)}[self.emission]

    @property
    def active_param_names(self) -> tuple[str, ...]:
        return ("initial_probs", "transition_probs") + self.emission_param_names

    @property
    def symbols(self) -> int | None:
        """Categorical alphabet size: fitted, given, or inferred from the training data."""
        if self.probs is not None and self.emission == "categorical":
            return int(self.probs.shape[-1])
        return self.num_symbols or self._inferred_symbols

    @property
    def num_features(self) -> int | None:
        if self.emission == "categorical":
            return None
        for name in ("locs", "probs", "rates", "prior_loc"):
            v = getattr(self, name)
            if v is not None:
                return int(v.shape[-1])
        return None

    def _emission(self) -> Emission:
        return make_emission(self.emission, self.num_states, covariance=self.covariance,
                             reg_covar=self.reg_covar, lkj_concentration=self.lkj_concentration,
                             emission_concentration=self.emission_concentration,
                             num_symbols=self.symbols)

    def _emission_params(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in self.emission_param_names}

    def _prior(self) -> dict[str, torch.Tensor]:
        out = {"prior_loc": self.prior_loc}
        if self.prior_scale is not None:
            out["prior_scale"] = self.prior_scale
        return out

    # ---------------------------------------------------------------- input handling
    def _frame_dims(self) -> int:
        return 0 if self.emission == "categorical" else 1

    def _sequences(self, data: Any, lengths: Any = None, *, arg: str = "data",
                   allow_nan: bool = False, dtype: torch.dtype | None = None,
                   device: torch.device | None = None, fitted_shape: bool = False,
                   check_range: bool = True):
        """Validate sequences; returns (padded frames, lengths, mask, missing or None).

        Padded steps are set to 0. For categorical emissions the frames are long integers.
        """
        frame_dims = self._frame_dims()
        listed = isinstance(data, list | tuple) and len(data) > 0 and (
            isinstance(data[0], torch.Tensor | np.ndarray) or _ragged(data))
        if listed:
            seqs = [_to_tensor(s, f"{arg}[{i}]") for i, s in enumerate(data)]
            x, implied = _pad(seqs, arg, frame_dims)
            if lengths is not None:
                given = _to_tensor(lengths, "lengths").reshape(-1)
                if given.shape != implied.shape or not torch.equal(given.long(), implied):
                    raise bad_value("lengths", f"the lengths of the {len(seqs)} sequences "
                                    "given as a list, or None", _short(given),
                                    "Leave lengths out when passing a list of sequences.")
            lengths = implied
        else:
            x = _to_tensor(data, arg)
            if x.dim() != 2 + frame_dims:
                want = "(num_sequences, num_steps)" if frame_dims == 0 else \
                    "(num_sequences, num_steps, num_features)"
                remedy = ("Pass one sequence as a list [x], or several of different lengths as "
                          "a list of tensors.")
                if frame_dims == 1 and x.dim() == 2:
                    remedy += " For one feature per step use x.unsqueeze(-1)."
                raise bad_value(arg, f"{2 + frame_dims} dimensions {want} for "
                                f"emission={self.emission!r}", f"shape {tuple(x.shape)}",
                                remedy)
            if x.shape[0] == 0 or x.shape[1] == 0:
                raise bad_value(arg, "at least one sequence of at least one step",
                                f"shape {tuple(x.shape)}")
            if lengths is None:
                lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
            else:
                lengths = self._check_lengths(lengths, x.shape[0], x.shape[1])
        if frame_dims and fitted_shape and self.num_features is not None and \
                x.shape[-1] != self.num_features:
            raise bad_value(arg, f"{self.num_features} features per step (as the model was "
                            "fitted with)", f"shape {tuple(x.shape)}",
                            "Pass data with the same features as in fit.")
        if device is not None:
            x = x.to(device)
        lengths = lengths.to(x.device)
        if self.emission == "categorical" and not x.is_floating_point():
            x = x.long()  # any integer type (uint8 would otherwise index as a mask)
        mask = torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(-1)
        if not x.is_floating_point():
            x = x.to(INTEGER_DATA_DTYPE if dtype is None else dtype) \
                if self.emission != "categorical" else x
        elif dtype is not None and self.emission != "categorical":
            x = x.to(dtype)
        valid = x[mask]
        if x.is_floating_point():
            finite = torch.isfinite(valid)
            nan = torch.isnan(valid)
            if bool((~finite & ~nan).any()):
                raise bad_value(arg, "finite values", f"{int((~finite & ~nan).sum())} infinite "
                                "entries", "Mark missing entries with NaN and fill them with "
                                "model.impute(data).")
            if bool(nan.any()) and not allow_nan:
                raise bad_value(arg, "no missing values inside the sequences",
                                f"{int(nan.sum())} NaN entries", "If they are padding, pass "
                                "lengths=... (or a list of sequences); to fill missing values "
                                "use model.impute(data, lengths=...).")
        missing = None
        if x.is_floating_point():
            nan_full = torch.isnan(x) & mask.view(*mask.shape, *(1,) * frame_dims)
            if bool(nan_full.any()):
                missing = nan_full
            x = torch.where(mask.view(*mask.shape, *(1,) * frame_dims) & ~nan_full, x,
                            torch.zeros((), dtype=x.dtype, device=x.device))
        if self.emission == "categorical" and x.is_floating_point():
            fractional = x != x.round()
            if bool(fractional.any()):
                where = fractional.nonzero()[0].tolist()
                raise bad_value(arg, "integer symbols (0, 1, 2, ...) for emission='categorical'",
                                f"{int(fractional.sum())} non-integer values, e.g. "
                                f"{float(x[tuple(where)])!r} at sequence {where[0]}, step "
                                f"{where[1]}", "Map each symbol to an integer id first (e.g. "
                                "np.unique(x, return_inverse=True)), or use emission='gaussian' "
                                "for real-valued data.")
            x = x.long()
        # Every observed entry is checked, also those of partly missing frames.
        seen = mask.view(*mask.shape, *(1,) * frame_dims).expand(x.shape)
        if missing is not None:
            seen = seen & ~missing
        emission = self._emission()
        if not check_range:
            emission.num_symbols = None
        emission.check_frames(x[seen], arg)
        return x, lengths, mask, missing

    def _check_lengths(self, lengths: Any, num_sequences: int, num_steps: int) -> torch.Tensor:
        t = _to_tensor(lengths, "lengths")
        if t.dim() != 1 or t.shape[0] != num_sequences:
            raise bad_value("lengths", f"a 1-D array of {num_sequences} lengths (one per "
                            "sequence)", f"shape {tuple(t.shape)}")
        if t.is_floating_point():
            if bool((t != t.round()).any()):
                raise bad_value("lengths", "integers", _short(t))
        t = t.long()
        if bool((t < 1).any()):
            raise bad_value("lengths", "lengths >= 1", f"{int(t.min())}",
                            "Drop empty sequences.")
        if bool((t > num_steps).any()):
            i = int((t > num_steps).nonzero()[0, 0])
            raise bad_value("lengths", f"lengths <= the padded length {num_steps}",
                            f"lengths[{i}] = {int(t[i])}",
                            "The padded data must hold every sequence in full.")
        return t

    def _apply_inputs(self, data, lengths, *, allow_nan=False):
        """Sequences for the applications of a fitted model (its dtype and device)."""
        return self._sequences(data, lengths, allow_nan=allow_nan, dtype=self.dtype,
                               device=self.device, fitted_shape=True)

    # ------------------------------------------------------------ fit preparation
    def prepare_inputs(self, data: Any, model_kwargs: dict[str, Any]):
        """Validate training sequences; returns the padded data and the model kwargs with
        ``lengths`` filled in (``ppgen.fit`` calls this)."""
        kwargs = dict(model_kwargs)
        if self.emission == "categorical" and self.num_symbols is None and \
                self.probs is None:
            x0, _, mask0, _ = self._sequences(data, kwargs.get("lengths"), check_range=False)
            self._inferred_symbols = max(2, int(x0[mask0].max()) + 1)
        x, lengths, mask, _ = self._sequences(data, kwargs.pop("lengths", None),
                                              dtype=self.param_dtype)
        frames = x[mask]
        dtype = self._param_dtype_for(x)
        emission = self._emission()
        settings = emission.prior_settings(frames if self.emission == "categorical"
                                           else frames.to(dtype))
        self.prior_loc = settings["prior_loc"].to(dtype)
        self.prior_scale = settings.get("prior_scale")
        if self.prior_scale is not None:
            self.prior_scale = self.prior_scale.to(dtype)
        kwargs["lengths"] = lengths
        return x, kwargs

    def _param_dtype_for(self, x: torch.Tensor) -> torch.dtype:
        if self.param_dtype is not None:
            return self.param_dtype
        if x.is_floating_point():
            return x.dtype
        return INTEGER_DATA_DTYPE

    def _mask(self, data: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if lengths is None:
            return torch.ones(data.shape[:2], dtype=torch.bool, device=data.device)
        return torch.arange(data.shape[1], device=data.device) < lengths.unsqueeze(-1)

    # -------------------------------------------------------------------- Pyro model
    def model(self, data: torch.Tensor | None = None, *, lengths: torch.Tensor | None = None,
              subsample_size: int | None = None, enumerate_states: bool = False):
        """The generative process (see the module docstring).

        Parameters
        ----------
        data : Tensor of shape (N, T, D) or (N, T) (categorical), optional
            Padded sequences (as returned by ``prepare_inputs``); None draws from the prior
            predictive (give ``lengths``).
        lengths : Tensor of shape (N,), optional
            Sequence lengths; default: all T.
        subsample_size : int, optional
            Minibatch of sequences for SVI (the plate rescales).
        enumerate_states : bool
            Write the chain with ``pyro.markov`` and an enumerated ``state_t`` site per step
            (for ``TraceEnum_ELBO`` and ``infer_discrete``) instead of summing the states out
            in the ``obs`` site.
        """
        if data is None and lengths is None:
            raise ValueError("HiddenMarkovModel.model: give data or lengths (the sequence "
                             "lengths to generate).")
        if self.prior_loc is None:
            raise ValueError("HiddenMarkovModel.model: the prior is set from the training "
                             "data; call model.prepare_inputs(data, {}) first (ppgen.fit "
                             "does).")
        ref = self.prior_loc
        if lengths is None:
            lengths = torch.full((data.shape[0],), data.shape[1], dtype=torch.long,
                                 device=data.device)
        num_steps = data.shape[1] if data is not None else int(lengths.max())
        k = self.num_states
        emission = self._emission()
        init = pyro.sample("initial_probs", dist.Dirichlet(
            torch.full((k,), self.initial_concentration, dtype=ref.dtype, device=ref.device)))
        with pyro.plate("states", k, dim=-1):
            trans = pyro.sample("transition_probs", dist.Dirichlet(
                torch.full((k,), self.transition_concentration, dtype=ref.dtype,
                           device=ref.device)))
            sites = emission.sample_sites(self._prior())
        frame_shape = () if self.emission == "categorical" else (int(ref.shape[-1]),)
        with pyro.plate("sequences", lengths.shape[0], subsample_size=subsample_size,
                        dim=-1) as idx:
            x = None if data is None else data[idx]
            lens = lengths[idx]
            if enumerate_states:
                return self._markov_chain(x, lens, num_steps, init, trans, sites, emission)
            params = emission.params_from_sites(sites)
            return pyro.sample("obs", HMMSequences(emission, init, trans, params, lens,
                                                   num_steps, frame_shape), obs=x)

    def guide(self, data: torch.Tensor | None = None, *, lengths: torch.Tensor | None = None,
              subsample_size: int | None = None, enumerate_states: bool = False) -> None:
        """MAP guide: a point mass on every parameter site, as ``pyro.param`` values started
        from the fitted parameters or, before a fit, from the EM initialisation on ``data``.

        With ``TraceEnum_ELBO`` (states enumerated or summed out) plain Pyro SVI on
        ``(model, guide)`` maximises the log posterior, like ``ppgen.fit(..., "svi")``.
        """
        if data is None:
            raise ValueError("HiddenMarkovModel.guide: give the data (the start values come "
                             "from them).")
        start: dict[str, torch.Tensor] = {}

        def initial(name: str):
            def value() -> torch.Tensor:
                if not start:
                    init = self.get_params() if self.is_fitted else None
                    start.update(self.init_values(data, init=init, seed=0, lengths=lengths))
                return start[name].detach()
            return value

        init = pyro.param("hmm_initial_probs", initial("initial_probs"),
                          constraint=constraints.simplex)
        pyro.sample("initial_probs", dist.Delta(init, event_dim=1))
        supports = self._emission().site_supports()
        with pyro.plate("states", self.num_states, dim=-1):
            trans = pyro.param("hmm_transition_probs", initial("transition_probs"),
                               constraint=constraints.simplex)
            pyro.sample("transition_probs", dist.Delta(trans, event_dim=1))
            for name in self._emission().site_names:
                if name == "corr_chol" and self.num_features == 1:
                    continue
                support, event_dim = supports[name]
                value = pyro.param(f"hmm_{name}", initial(name), constraint=support)
                pyro.sample(name, dist.Delta(value, event_dim=event_dim))

    def guide_point_estimate(self) -> dict[str, torch.Tensor]:
        """The MAP guide's values from the param store (``fit(..., guide="model")``)."""
        store = pyro.get_param_store()
        return {name[len("hmm_"):]: store[name].detach() for name in store.keys()
                if name.startswith("hmm_")}

    def _markov_chain(self, x, lens, num_steps, init, trans, sites, emission):
        """The chain written step by step with enumerated states (``pyro.markov``)."""
        k = self.num_states
        z = None
        for t in pyro.markov(range(num_steps)):
            valid = lens > t
            if z is None:
                probs = init
            else:
                # Past a sequence's end the state stays put, so padded steps sum to one.
                stay = torch.nn.functional.one_hot(z, k).to(trans.dtype)
                probs = torch.where(valid.unsqueeze(-1), Vindex(trans)[..., z, :], stay)
            z = pyro.sample(f"state_{t}", dist.Categorical(probs),
                            infer={"enumerate": "parallel"})
            frame = None
            if x is not None:  # padded frames are ignored, also by gradients
                keep = valid.view(-1, *(1,) * (x.dim() - 2))
                frame = x[:, t].masked_fill(~keep, 0)
            with poutine.mask(mask=valid):
                pyro.sample(f"obs_{t}", emission.pyro_dist(sites, z), obs=frame)
        return z

    def site_dims(self) -> dict[str, list[str]]:
        dims = {"initial_probs": ["state"], "transition_probs": ["state", "next_state"],
                "covariances": ["state", "row", "col"] if self.covariance == "full" else
                ["state", "feature"]}
        if self.covariance == "spherical":
            dims["covariances"] = ["state"]
        dims.update(self._emission().site_dims())
        return dims

    # ------------------------------------------------------------ site <-> params
    def _params_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"initial_probs": sites["initial_probs"],
               "transition_probs": sites["transition_probs"]}
        out.update(self._emission().params_from_sites(sites))
        return out

    def params_from_draws(self, samples: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The public parameters under each draw, shape (chains, draws, ...): covariances
        from the scales and Cholesky factors of the correlations (``summary`` shows these)."""
        return self._params_from_sites(samples)

    def set_point_estimate(self, values: dict[str, torch.Tensor]) -> None:
        for name, v in self._params_from_sites(values).items():
            setattr(self, name, v.detach().clone())
        self._on_params_changed()

    def summarize_posterior(self, samples: dict[str, torch.Tensor]) -> None:
        """Posterior means of the parameters (after relabelling)."""
        for name, v in self._params_from_sites(samples).items():
            setattr(self, name, v.mean(0))
        self._on_params_changed()

    def init_values(self, data: torch.Tensor, *, init: dict[str, Any] | None, seed: int,
                    lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Start values of the sites (SVI/MCMC), from ``init`` and the EM initialisation."""
        params = self._initial_params(data, lengths, init, seed)
        floor = 1e-3
        values = {}
        for name in ("initial_probs", "transition_probs"):
            p = params[name].clamp_min(floor)
            values[name] = p / p.sum(-1, keepdim=True)
        emission_params = {n: params[n] for n in self.emission_param_names}
        if self.emission in ("bernoulli", "categorical"):
            p = emission_params["probs"].clamp(floor, 1 - floor)
            emission_params["probs"] = p / p.sum(-1, keepdim=True) \
                if self.emission == "categorical" else p
        if self.emission == "poisson":
            emission_params["rates"] = emission_params["rates"].clamp_min(floor)
        values.update(self._emission().sites_from_params(emission_params))
        return values

    # ------------------------------------------------------------------ parameters
    def _check_params(self, params: dict[str, Any], *,
                      prefix: str = "params") -> dict[str, torch.Tensor]:
        k = self.num_states
        ref = next((getattr(self, n) for n in self.active_param_names + ("prior_loc",)
                    if getattr(self, n) is not None), None)
        extra = set(params) - set(self.active_param_names)
        if extra:
            raise bad_value(prefix, f"parameters of emission={self.emission!r} among "
                            + ", ".join(self.active_param_names), ", ".join(sorted(extra)))
        given = {name: _to_tensor(value, f"{prefix}[{name!r}]") for name, value in
                 params.items()}
        # One floating type for all parameters: the constructor's, the model's, or the
        # widest of the values given.
        dtype = self.param_dtype or (ref.dtype if ref is not None else None)
        if dtype is None:
            floats = [t.dtype for t in given.values() if t.is_floating_point()]
            dtype = floats[0] if floats else torch.get_default_dtype()
            for f in floats[1:]:
                dtype = torch.promote_types(dtype, f)
        device = ref.device if ref is not None else None
        # The number of features: from the values given, else the model's (data or fit).
        widths = {int(t.shape[-1]) for n, t in given.items() if t.dim() == 2 and
                  n in ("locs", "rates") + (("probs",) if self.emission == "bernoulli" else ())}
        if self.emission == "gaussian" and "covariances" in given and \
                given["covariances"].dim() >= 2:
            widths.add(int(given["covariances"].shape[-1]))
        known = None
        if self.emission != "categorical":
            if self.prior_loc is not None:  # the data's
                known = self.prior_loc.shape[-1]
            elif not all(n in given for n in self.emission_param_names):
                known = self.num_features  # the parameters that stay

        if len(widths) > 1 or (known is not None and widths and widths != {int(known)}):
            raise bad_value(prefix, "parameters for one number of features" + (
                f" ({int(known)}, as the data)" if known is not None else ""),
                f"widths {sorted(widths)}", "Give locs, covariances, probs or rates with as "
                "many columns as the data has features.")
        out: dict[str, torch.Tensor] = {}
        for name, t in given.items():
            arg = f"{prefix}[{name!r}]"
            t = t.to(dtype=dtype, device=device)
            if not bool(torch.isfinite(t).all()):
                raise bad_value(arg, "finite values", "NaN or infinite entries")
            if name in ("initial_probs", "transition_probs") or (
                    name == "probs" and self.emission == "categorical"):
                want = {"initial_probs": (k,), "transition_probs": (k, k)}.get(name)
                if want is not None and tuple(t.shape) != want:
                    raise bad_value(arg, f"shape {want}", f"shape {tuple(t.shape)}")
                if name == "probs" and (t.dim() != 2 or t.shape[0] != k or t.shape[1] < 2 or (
                        self.num_symbols is not None and t.shape[1] != self.num_symbols)):
                    want = self.num_symbols or "num_symbols >= 2"
                    raise bad_value(arg, f"shape ({k}, {want})", f"shape {tuple(t.shape)}")
                if bool((t < 0).any()) or bool(((t.sum(-1) - 1).abs() > 1e-5).any()):
                    raise bad_value(arg, "non-negative probabilities summing to 1 along the "
                                    "last dimension", _short(t))
            elif name in ("probs", "rates", "locs"):
                if t.dim() != 2 or t.shape[0] != k:
                    raise bad_value(arg, f"shape ({k}, num_features)", f"shape {tuple(t.shape)}")
                if name == "probs" and bool(((t < 0) | (t > 1)).any()):
                    raise bad_value(arg, "probabilities in [0, 1]", _short(t))
                if name == "rates" and bool((t < 0).any()):
                    raise bad_value(arg, "non-negative rates", _short(t))
            elif name == "covariances":
                d = params.get("locs")
                d = int(_to_tensor(d, "locs").shape[-1]) if d is not None else self.num_features
                want = {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[self.covariance]
                if d is not None and tuple(t.shape) != want:
                    raise bad_value(arg, f"shape {want} for covariance={self.covariance!r}",
                                    f"shape {tuple(t.shape)}")
                try:
                    cholesky(t, self.covariance)
                except ValueError:
                    raise bad_value(arg, "positive-definite covariances", "a matrix that is "
                                    "not", "Add a small value to the diagonal.") from None
            out[name] = t
        return out

    def _initial_params(self, x: torch.Tensor, lengths: torch.Tensor | None,
                        init: dict[str, Any] | None, seed: int) -> dict[str, torch.Tensor]:
        """EM start: given values, else emission parameters from k-means (Gaussian,
        Bernoulli, Poisson) or random rows (categorical), and initial and transition
        probabilities counted from the resulting most likely state of each frame."""
        init = dict(init or {})
        unknown = set(init) - set(self.active_param_names)
        if unknown:
            raise bad_value("init", "keys among " + ", ".join(self.active_param_names),
                            ", ".join(sorted(unknown)))
        given = self._check_params(init, prefix="init") if init else {}
        mask = self._mask(x, lengths)
        dtype = self._param_dtype_for(x) if self.prior_loc is None else self.prior_loc.dtype
        frames = x[mask] if self.emission == "categorical" else x[mask].to(dtype)
        g = torch.Generator(device=x.device).manual_seed(derive_seeds(seed, 1)[0])
        emission = self._emission()
        params = {n: given[n] for n in self.emission_param_names if n in given}
        if len(params) < len(self.emission_param_names):
            start = emission.initial_params(frames, g, dtype)
            params = {**start, **params}
        params = {n: v.to(dtype) for n, v in params.items()}
        k = self.num_states
        if "initial_probs" not in given or "transition_probs" not in given:
            labels = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            labels[mask] = emission.log_prob(params, frames).argmax(-1)
            first = torch.bincount(labels[:, 0], minlength=k).to(dtype) + 1
            pairs = mask[:, 1:]
            codes = labels[:, :-1][pairs] * k + labels[:, 1:][pairs]
            counts = torch.bincount(codes, minlength=k * k).to(dtype).view(k, k) + 1
            params.setdefault("initial_probs", first / first.sum())
            params.setdefault("transition_probs", counts / counts.sum(-1, keepdim=True))
        for name in ("initial_probs", "transition_probs"):
            if name in given:
                params[name] = given[name].to(dtype)
        return params

    # ---------------------------------------------------------------- EM capability
    @property
    def fixable_params(self) -> tuple[str, ...]:
        """Parameters ``ppgen.fit(..., fixed=...)`` can hold at their start values."""
        return self.active_param_names

    def em_initialize(self, data: torch.Tensor, *, init: dict[str, Any] | None, seed: int,
                      lengths: torch.Tensor | None = None,
                      fixed: Sequence[str] = ()) -> None:
        """EM start from ``init`` and the data; the parameters named in ``fixed`` keep their
        start values through the M-steps (as hmmlearn's ``params`` leaves them out)."""
        for name in ("initial_concentration", "transition_concentration"):
            if getattr(self, name) < 1:
                raise bad_value(name, "a value >= 1 for method='em' (EM finds the posterior "
                                "mode, which needs concentrations >= 1)", getattr(self, name),
                                "Use method='svi' or 'mcmc' for sparse priors.")
        if self.emission in ("categorical", "bernoulli") and self.emission_concentration < 1:
            raise bad_value("emission_concentration", "a value >= 1 for method='em'",
                            self.emission_concentration,
                            "Use method='svi' or 'mcmc' for sparse priors.")
        for name, value in self._initial_params(data, lengths, init, seed).items():
            setattr(self, name, value)
        self._em_fixed = frozenset(fixed)
        self._em_cache = None
        self._on_params_changed()
        # The fit-wide choices, from the whole data (which the EM driver passes here), the
        # same on every process of a distributed fit, whose E-steps each see a share.
        self._em_plan = self._em_plan_of(data, lengths)

    def _em_plan_of(self, data: torch.Tensor, lengths: torch.Tensor | None) -> dict[str, Any]:
        """Whether the E-step takes the fused kernels, and the emission's fit-wide constants
        (Gaussian: the real frames' mean, and for float64 features their largest squared
        distance from it), read from the data in blocks of sequences (no copy of them)."""
        mask = self._mask(data, lengths)
        n, num_steps = mask.shape
        fused = self.emission == "gaussian" and compiled.fused_usable(
            torch.empty(0, dtype=self.dtype, device=data.device), self.initial_probs,
            self.transition_probs, *self._emission_params().values(), num_sequences=n,
            num_steps=num_steps, num_states=self.num_states)
        if self.emission != "gaussian":
            return {"fused": False, "constants": {}}
        blocks = row_blocks(n, num_steps * data.shape[-1])
        total = torch.zeros(data.shape[-1], dtype=self.dtype, device=data.device)
        for rows in blocks:
            total += data[rows][mask[rows]].to(self.dtype).sum(0)
        centre = total / mask.sum()
        constants: dict[str, Any] = {"centre": centre}
        if not fused and self.dtype == torch.float64:  # features in exponential-family form
            radius = 0.0
            for rows in blocks:
                xc = data[rows][mask[rows]].to(self.dtype) - centre
                if xc.shape[0]:
                    radius = max(radius, float(xc.square().sum(-1).max()))
            constants["sq_radius"] = radius
        return {"fused": fused, "constants": constants}

    def _log_b(self, x: torch.Tensor, mask: torch.Tensor,
               missing: torch.Tensor | None = None) -> torch.Tensor:
        """Emission log-densities (N, T, K) of the current parameters, 0 at padded steps."""
        observed = None
        if missing is not None:
            observed = ~missing[mask] if missing.dim() == mask.dim() + 1 else None
        full = missing is None and bool(mask.all())
        frames = x.reshape(-1, *x.shape[2:]) if full else x[mask]
        lp = self._emission().log_prob(self._emission_params(), frames, observed)
        if full:
            return lp.view(*mask.shape, self.num_states)
        if missing is not None and self.emission == "categorical":
            lp = lp.masked_fill(missing[mask].unsqueeze(-1), 0.0)
        out = torch.zeros(*mask.shape, self.num_states, dtype=lp.dtype, device=lp.device)
        out[mask] = lp
        return out

    def _log_prior(self, emission: Emission | None = None) -> float:
        """The log prior density of the parameters (``emission``: this model's, when the
        caller holds it already)."""
        total = 0.0
        for name, conc in (("initial_probs", self.initial_concentration),
                           ("transition_probs", self.transition_concentration)):
            if conc != 1:
                total += float((conc - 1) * getattr(self, name).clamp_min(
                    torch.finfo(self.dtype).tiny).log().sum())
        emission = self._emission() if emission is None else emission
        return total + float(emission.log_prior(self._emission_params()))

    def _em_frames(self, data: torch.Tensor, lengths: torch.Tensor | None) -> dict[str, Any]:
        """The fit's real frames in time-major order, their EM features and the emission
        object, computed once per fit (dropped by ``em_finalize``); for a share of the data
        (a process's), with the choices ``em_initialize`` made on the whole of it."""
        cache = self._em_cache
        if cache is not None and cache[0] is data and cache[1] is lengths:
            return cache[2]
        plan = self._em_plan
        assert plan is not None, "em_initialize makes the plan"
        mask = self._mask(data, lengths)
        full = bool(mask.all())
        xt = data.transpose(0, 1)
        frames = xt.reshape(-1, *data.shape[2:]) if full else xt[mask.T]
        if self.emission != "categorical":
            frames = frames.to(self.dtype)
        emission = self._emission()
        constants = plan["constants"]
        if plan["fused"]:
            # The fused compiled E-step: centred time-major frames, no per-frame features.
            centre = emission.em_fused_centre(constants)
            xt = (xt.to(self.dtype) - centre).masked_fill(~mask.T.unsqueeze(-1), 0.0)
            entry = {"mask": mask, "full": full, "emission": emission, "fused": True,
                     "xt": np.ascontiguousarray(xt.numpy()),
                     "mask_t": np.ascontiguousarray(mask.T.numpy()),
                     "num_frames": int(frames.shape[0]), "workspace": {}}
        else:
            entry = {"mask": mask, "full": full, "emission": emission, "fused": False,
                     "feats": emission.em_features(frames, constants),
                     "num_frames": int(frames.shape[0]), "workspace": {}}
        self._em_cache = (data, lengths, entry)
        return entry

    def em_finalize(self) -> None:
        """Drop the per-fit cache of frames and features."""
        self._em_cache = None
        self._em_plan = None

    def e_step(self, data: torch.Tensor, *, lengths: torch.Tensor | None = None):
        """Log-likelihood (plus log prior when the priors are not flat) and the expected
        counts of the current parameters, by forward–backward: the posteriors ``gamma``,
        or, on the fused Gaussian path (chosen once per fit in ``_em_frames``), the
        sufficient statistics ``counts``, ``sums`` and ``squares`` themselves."""
        c = self._em_frames(data, lengths)
        if c["fused"]:
            locs_t, factors_t, log_norm, full = c["emission"].em_fused_params(
                self._emission_params())
            stats = compiled.gaussian_e_step(c["xt"], c["mask_t"], locs_t, factors_t,
                                             log_norm, full, self.initial_probs,
                                             self.transition_probs, c["workspace"])
            return float(stats["log_lik"].sum()) + self._log_prior(c["emission"]), stats
        mask = c["mask"]
        lp = c["emission"].em_log_prob(self._emission_params(), c["feats"])
        n, num_steps = mask.shape
        if c["full"]:
            log_b = lp.view(num_steps, n, self.num_states)
        else:
            log_b = lp.new_zeros(num_steps, n, self.num_states)
            log_b[mask.T] = lp
        fb = forward_backward(log_b.transpose(0, 1), self.initial_probs,
                              self.transition_probs, mask, workspace=c["workspace"])
        # The objective's own round-off scale: each frame's log-density (that of its most
        # likely state) carries a relative error of a few eps, whatever the total's size.
        fb["objective_scale"] = float(lp.amax(-1).abs().sum())
        return float(fb["log_lik"].sum()) + self._log_prior(c["emission"]), fb

    def em_shared_objective(self) -> float:
        """The log prior: the part of the EM objective that a distributed fit counts once."""
        return self._log_prior()

    def em_additive(self, data: torch.Tensor, stats: dict[str, Any], *,
                    lengths: torch.Tensor | None = None) -> dict[str, Any]:
        """The E-step's statistics as sums over the frames and sequences (what the M-step
        reads, and what adds up over shards of the sequences): the expected start and
        transition counts, the emission's sufficient statistics and the number of frames."""
        if "emission_stats" in stats:
            return stats
        c = self._em_frames(data, lengths)
        emission = c["emission"]
        if c["fused"]:  # the E-step accumulated the sufficient statistics themselves
            emission_stats = emission.em_fused_statistics(stats)
        else:
            gamma = stats["gamma"].transpose(0, 1)  # time-major, as the frames
            if c["full"]:
                flat = c["workspace"].get("gamma_flat")
                if flat is None or flat.shape[0] != gamma.shape[0] * gamma.shape[1]:
                    flat = gamma.new_empty(gamma.shape[0] * gamma.shape[1], self.num_states)
                    c["workspace"]["gamma_flat"] = flat
                flat.view(gamma.shape).copy_(gamma)
                gamma = flat
            else:
                gamma = gamma[c["mask"].T]
            emission_stats = emission.em_statistics(c["feats"], gamma)
        return {"start_counts": stats["start_counts"], "trans_counts": stats["trans_counts"],
                "emission_stats": emission_stats, "num_frames": c["num_frames"],
                "objective_scale": stats["objective_scale"]}

    def m_step(self, data: torch.Tensor, stats: dict[str, Any], *,
               lengths: torch.Tensor | None = None) -> None:
        c = self._em_frames(data, lengths)
        stats = self.em_additive(data, stats, lengths=lengths)
        fixed = self._em_fixed
        if "initial_probs" not in fixed:
            self.initial_probs = _normalise(
                stats["start_counts"] + self.initial_concentration - 1, self.initial_probs)
        if "transition_probs" not in fixed:
            self.transition_probs = _normalise(
                stats["trans_counts"] + self.transition_concentration - 1,
                self.transition_probs)
        new = c["emission"].em_m_step(stats["emission_stats"], stats["num_frames"],
                                      self._emission_params(), fixed)
        for name, value in new.items():
            if name not in fixed:
                setattr(self, name, value)
        self._on_params_changed()

    # ------------------------------------------------------------- label switching
    def relabel(self, samples: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Undo label switching of MCMC draws (chains, draws, ...).

        Each draw's states are permuted to best match a reference built from the emission
        parameters (in units of the data) and the log self-transition probabilities, by the
        pivot/Stephens scheme of :func:`ppgen.models.relabel.pivot_permutations`. Transition
        matrices are permuted in rows and columns.
        """
        k = self.num_states
        if k == 1:
            return samples
        lead = samples["transition_probs"].shape[:-2]
        flat = {name: v.reshape(-1, *v.shape[len(lead):]) for name, v in samples.items()}
        feats = self._emission().relabel_features(flat, self._prior())
        stay = flat["transition_probs"].diagonal(dim1=-2, dim2=-1).clamp_min(1e-6).log()
        perms = pivot_permutations(torch.cat([feats, stay.unsqueeze(-1)], -1))
        out = {}
        for name, v in flat.items():
            if name == "transition_probs":  # rows and columns
                rows = permute_components(v, perms)
                out[name] = torch.gather(rows, 2, perms.unsqueeze(1).expand_as(rows))
            elif name in ("initial_probs",) + self._emission().site_names:
                out[name] = permute_components(v, perms)
            else:
                out[name] = v
        return {name: v.reshape(*lead, *v.shape[1:]) for name, v in out.items()}

    # ---------------------------------------------------------- fast log-likelihood
    def log_likelihood(self, data: torch.Tensor, samples: dict[str, torch.Tensor], *,
                       lengths: torch.Tensor | None = None,
                       **model_kwargs: Any) -> dict[str, torch.Tensor]:
        """Per-sequence log-likelihood under each draw: {"obs": (draws, N)}."""
        mask = self._mask(data, lengths)
        n, num_steps = mask.shape
        emission = self._emission()
        frames = data.reshape(n * num_steps, *data.shape[2:])
        num = samples["transition_probs"].shape[0]
        per_chunk = max(1, _CHUNK_ELEMENTS // (n * num_steps * self.num_states))
        rows = []
        with torch.no_grad():
            for i in range(0, num, per_chunk):  # chunks of posterior draws
                part = {name: v[i:i + per_chunk] for name, v in samples.items()}
                params = self._params_from_sites(part)
                log_b = emission.log_prob({n_: params[n_] for n_ in self.emission_param_names},
                                          frames)
                log_b = log_b.reshape(log_b.shape[0], n, num_steps, self.num_states)
                rows.append(forward_log_prob(log_b, params["initial_probs"],
                                             params["transition_probs"], mask))
        return {"obs": torch.cat(rows)}

    # -------------------------------------------------------------- applications
    def log_prob(self, data: Any, lengths: Any = None) -> torch.Tensor:
        """Log-likelihood of each sequence in nats, states summed out (forward algorithm).

        Parameters
        ----------
        data : list of Tensors (T_n, D) / (T_n,), or Tensor (N, T, D) / (N, T)
            Sequences; a padded tensor may come with ``lengths``.
        lengths : array-like of shape (N,), optional

        Returns
        -------
        Tensor of shape (N,)
        """
        self.check_fitted("compute log_prob")
        x, lengths, mask, _ = self._apply_inputs(data, lengths)
        return forward_log_prob(self._log_b(x, mask), self.initial_probs,
                                self.transition_probs, mask)

    def score(self, data: Any, lengths: Any = None, *, per_step: bool = False) -> torch.Tensor:
        """Anomaly score in nats (higher = more anomalous).

        Per sequence: the negative log-likelihood, shape (N,). With ``per_step``: the
        surprise of each step given the steps before it, -log p(x_t | x_<t), shape (N, T),
        NaN at padded steps; a sequence's steps sum to its score.
        """
        if not per_step:
            return -self.log_prob(data, lengths)
        self.check_fitted("score")
        x, lengths, mask, _ = self._apply_inputs(data, lengths)
        steps = forward_log_prob(self._log_b(x, mask), self.initial_probs,
                                 self.transition_probs, mask, per_step=True)
        return (-steps).masked_fill(~mask, float("nan"))

    def predict_proba(self, data: Any, lengths: Any = None) -> torch.Tensor:
        """Posterior state marginals p(z_t = k | x) by forward–backward: (N, T, K), zero at
        padded steps."""
        self.check_fitted("predict")
        x, lengths, mask, _ = self._apply_inputs(data, lengths)
        return forward_backward(self._log_b(x, mask), self.initial_probs,
                                self.transition_probs, mask)["gamma"]

    def predict(self, data: Any, lengths: Any = None) -> torch.Tensor:
        """Most probable state paths (Viterbi): (N, T) long, -1 at padded steps."""
        self.check_fitted("predict")
        x, lengths, mask, _ = self._apply_inputs(data, lengths)
        return viterbi(self._log_b(x, mask), self.initial_probs, self.transition_probs,
                       mask)[0]

    def sample_states(self, data: Any, lengths: Any = None, *,
                      seed: int | None = None) -> torch.Tensor:
        """One draw of the state paths from their posterior p(z | x) (forward filtering,
        backward sampling): (N, T) long, -1 at padded steps."""
        self.check_fitted("sample states")
        x, lengths, mask, _ = self._apply_inputs(data, lengths)
        return sample_posterior(self._log_b(x, mask), self.initial_probs,
                                self.transition_probs, mask, _generator(seed, x.device))

    def sample(self, num_samples: int, *, lengths: int | Sequence[int] | torch.Tensor = 100,
               seed: int | None = None, return_states: bool = False,
               initial_state: int | Sequence[int] | torch.Tensor | None = None):
        """Draw ``num_samples`` sequences.

        Parameters
        ----------
        lengths : int or sequence of ``num_samples`` ints
            Length of every sequence, or of each one.
        initial_state : int or sequence of ``num_samples`` ints, optional
            State of every sequence's first step (or of each one's), instead of a draw from
            ``initial_probs``: the chain continues from there, as hmmlearn's
            ``sample(currstate=...)`` (e.g. from the last state ``predict`` decoded).

        Returns
        -------
        Tensor (num_samples, max length, D) (categorical: (num_samples, max length) long);
        steps past a sequence's length are 0. With ``return_states`` also the state paths
        (-1 past the end).
        """
        self.check_fitted("sample")
        num_samples = check_positive_int("num_samples", num_samples)
        if isinstance(lengths, int | np.integer) and not isinstance(lengths, bool):
            lens = torch.full((num_samples,), check_positive_int("lengths", lengths))
        else:
            lens = _to_tensor(lengths, "lengths").reshape(-1)
            if lens.shape[0] != num_samples or bool((lens < 1).any()) or \
                    bool((lens != lens.round()).any()):
                raise bad_value("lengths", f"an int >= 1 or {num_samples} ints >= 1",
                                _short(lens))
            lens = lens.long()
        lens = lens.to(self.device)
        num_steps = int(lens.max())
        first = None
        if initial_state is not None:
            first = self._check_states(initial_state, num_samples)
        g = _generator(seed, self.device)
        z = sample_states(self.initial_probs, self.transition_probs, num_samples, num_steps, g,
                          first)
        x = self._emission().sample(self._emission_params(), z, g)
        mask = torch.arange(num_steps, device=self.device) < lens.unsqueeze(-1)
        x = x.masked_fill(~mask.view(*mask.shape, *(1,) * self._frame_dims()), 0)
        return (x, z.masked_fill(~mask, -1)) if return_states else x

    def _check_states(self, states: Any, num_samples: int) -> torch.Tensor:
        k = self.num_states
        want = f"a state in 0..{k - 1}, or {num_samples} of them (one per sequence)"
        if isinstance(states, bool):
            raise bad_type("initial_state", want, repr(states))
        t = _to_tensor(states, "initial_state").reshape(-1)
        if t.is_floating_point() and bool((t != t.round()).any()):
            raise bad_value("initial_state", want, _short(t))
        t = t.long()
        if t.numel() == 1:
            t = t.expand(num_samples)
        if t.numel() != num_samples or bool(((t < 0) | (t >= k)).any()):
            raise bad_value("initial_state", want, _short(t))
        return t.to(self.device)

    def stationary_distribution(self) -> torch.Tensor:
        """The distribution p with p A = p, sum(p) = 1, of the transition matrix A: (K,).

        Solved as a linear system in float64 (least squares with the sum constraint). It is
        unique when the chain has one closed class (e.g. every state reachable from every
        other, or a left-to-right chain ending in one absorbing state); for several it is
        one mixture of theirs, as hmmlearn's ``get_stationary_distribution`` returns one
        eigenvector.
        """
        self.check_fitted("compute the stationary distribution")
        a = self.transition_probs.detach().to(torch.float64)
        k = self.num_states
        system = torch.cat([a.T - torch.eye(k, dtype=a.dtype, device=a.device),
                            torch.ones(1, k, dtype=a.dtype, device=a.device)])
        rhs = torch.zeros(k + 1, 1, dtype=a.dtype, device=a.device)
        rhs[-1] = 1
        p = torch.linalg.lstsq(system, rhs).solution.squeeze(-1)
        p = p.clamp_min(0)
        return (p / p.sum()).to(self.dtype)

    def impute(self, data: Any, lengths: Any = None) -> torch.Tensor:
        """Fill NaN observations from the posterior given everything observed.

        Each missing frame (or missing coordinates of a frame) is filled with the posterior
        predictive given all observed data, mixed over the state marginals p(z_t | x_obs):
        Gaussian, the conditional mean (per state, given the frame's observed coordinates);
        Poisson, Bernoulli and categorical, the most probable value. Observed entries and
        padded steps come back unchanged (padded steps as 0).

        Returns
        -------
        Tensor shaped like the padded data (floating).
        """
        self.check_fitted("impute")
        x, lengths, mask, missing = self._apply_inputs(data, lengths, allow_nan=True)
        out = x.to(self.dtype).clone()
        if missing is None:
            return out
        gamma = forward_backward(self._log_b(x, mask, missing), self.initial_probs,
                                 self.transition_probs, mask)["gamma"]
        rows = missing if missing.dim() == 2 else missing.any(-1)  # steps with a gap
        filled = self._emission().fill(self._emission_params(), out[rows], missing[rows],
                                       gamma[rows])
        out[rows] = filled.to(out.dtype)
        return out

    # ------------------------------------------------------------------ model choice
    def parameter_counts(self) -> dict[str, int]:
        """Free scalars of each parameter (probabilities summing to one count one less)."""
        k = self.num_states
        out = {"initial_probs": k - 1, "transition_probs": k * (k - 1)}
        if self.emission == "categorical":
            out["probs"] = k * (self.symbols - 1)
            return out
        d = self.num_features
        if self.emission == "gaussian":
            out["locs"] = k * d
            out["covariances"] = {"full": k * d * (d + 1) // 2, "diag": k * d,
                                  "spherical": k}[self.covariance]
        else:
            out[self.emission_param_names[0]] = k * d
        return out

    def num_parameters(self, fixed: Sequence[str] = ()) -> int:
        """Number of free parameters (for BIC/AIC), leaving out those held ``fixed``."""
        return sum(v for name, v in self.parameter_counts().items() if name not in fixed)

    def num_observed_scalars(self, data: torch.Tensor,
                             lengths: torch.Tensor | None = None) -> int:
        """Observed scalars of prepared data: real frames (times features)."""
        frames = int(self._mask(data, lengths).sum())
        return frames if self.emission == "categorical" else frames * int(data.shape[-1])

    def bic(self, data: Any, lengths: Any = None) -> float:
        """Bayesian information criterion -2 log L + p log(number of frames)."""
        self.check_fitted("compute the BIC")
        x, lens, mask, _ = self._apply_inputs(data, lengths)
        ll = float(self.log_prob(x, lens).sum())
        return -2 * ll + self.num_parameters() * math.log(int(mask.sum()))

    def aic(self, data: Any, lengths: Any = None) -> float:
        """Akaike information criterion -2 log L + 2 p."""
        self.check_fitted("compute the AIC")
        return float(-2 * self.log_prob(data, lengths).sum() + 2 * self.num_parameters())


def _normalise(counts: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Rows of non-negative counts made into probabilities; empty rows keep ``old``."""
    counts = counts.clamp_min(0)
    total = counts.sum(-1, keepdim=True)
    new = counts / total.clamp_min(torch.finfo(counts.dtype).tiny)
    return torch.where(total > 0, new, old)


def _ragged(data: Sequence) -> bool:
    """Whether nested lists have different lengths (so they are a list of sequences)."""
    try:
        arr = np.asarray(data)
    except ValueError:
        return True
    return arr.dtype == object


def _short(t: torch.Tensor) -> str:
    return str(t.tolist()) if t.numel() <= 12 else f"a tensor of shape {tuple(t.shape)}"
