"""Model introspection shared by the runners: which sites are discrete, observed, latent;
per-datum log-likelihood with discrete latents summed out; posterior predictive draws.

These work on any Pyro model function, built-in or written by a user in a notebook.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.subsample_messenger import _Subsample

__all__ = ["ModelInfo", "inspect_model", "generic_log_density", "generic_log_likelihood",
           "flatten_draws", "enumerated"]


@dataclass(frozen=True)
class ModelInfo:
    """What one trace of a model says about its sites."""

    observed: tuple[str, ...]
    continuous: tuple[str, ...]
    discrete: tuple[str, ...]
    max_plate_nesting: int
    observed_values: dict[str, torch.Tensor]
    batch_dims: dict[str, int] = field(default_factory=dict)
    deterministic: tuple[str, ...] = ()
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Plates that subsampled in the inspected trace (their names are the sites that hold
    #: the minibatch indices).
    subsampled: tuple[str, ...] = ()


def inspect_model(model_fn: Callable, args: tuple, kwargs: dict) -> ModelInfo:
    """Trace ``model_fn`` once (prior draws) and classify its sample sites."""
    with poutine.block():
        trace = poutine.trace(model_fn).get_trace(*args, **kwargs)
    observed, continuous, discrete, deterministic = [], [], [], []
    batch_dims: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    nesting = 0
    subsampled = []
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and isinstance(site["fn"], _Subsample):
            if (site["fn"].subsample_size or site["fn"].size) < site["fn"].size:
                subsampled.append(name)
            continue
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized:
                nesting = max(nesting, -frame.dim)
        if site["infer"].get("_deterministic"):
            deterministic.append(name)
        elif site["is_observed"]:
            observed.append(name)
        elif site["fn"].support.is_discrete:
            if not getattr(site["fn"], "has_enumerate_support", False):
                raise ValueError(
                    f"model: the discrete site {name!r} ({type(site['fn']).__name__}) has no "
                    "finite support, so it cannot be summed out. Use a distribution with "
                    "enumerable support (Categorical, Bernoulli) or marginalise it by hand."
                )
            discrete.append(name)
        else:
            continuous.append(name)
        batch_dims[name] = len(site["fn"].batch_shape)
        shapes[name] = tuple(site["value"].shape)
    values = {n: trace.nodes[n]["value"] for n in observed}
    return ModelInfo(tuple(observed), tuple(continuous), tuple(discrete), nesting, values,
                     batch_dims, tuple(deterministic), shapes, tuple(subsampled))


def enumerated(model_fn: Callable, info: ModelInfo) -> Callable:
    """``model_fn`` with every discrete latent site marked for parallel enumeration."""
    return config_enumerate(model_fn, default="parallel") if info.discrete else model_fn


def flatten_draws(samples: dict[str, torch.Tensor], lead: int) -> dict[str, torch.Tensor]:
    """Merge the first ``lead`` dimensions (chain, draw) into one."""
    return {k: v.reshape(-1, *v.shape[lead:]) for k, v in samples.items()}


def _find_ordinal(trace, site) -> frozenset:
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                     if f.vectorized)


def _vectorized_densities(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                          kwargs: dict, info: ModelInfo, vectorize: bool = True):
    """Per-datum log-likelihood and log prior of ``S`` draws in one trace, the draws laid
    along an extra plate left of the model's plates (as ``Predictive(parallel=True)``).

    With ``vectorize=False`` there must be one draw, and the model runs as written.
    """
    names = [n for n in info.continuous if n in flat]
    num = flat[names[0]].shape[0]
    dim = -info.max_plate_nesting - 1
    values = {}
    for n in names:
        v = flat[n]
        pad = info.max_plate_nesting - info.batch_dims.get(n, 0)
        values[n] = v.reshape((num,) + (1,) * pad + v.shape[1:]) if vectorize else v[0]
    conditioned = poutine.condition(model_fn, data=values)

    def vectorized(*a, **k):
        if not vectorize:
            return conditioned(*a, **k)
        with pyro.plate("_ppgen_draws", num, dim=dim):
            return conditioned(*a, **k)

    if info.discrete:
        runner = poutine.enum(config_enumerate(vectorized, default="parallel"),
                              first_available_dim=dim - 1)
    else:
        runner = vectorized
    trace = poutine.trace(runner).get_trace(*args, **kwargs)
    trace.compute_log_prob()
    prior = sum(trace.nodes[n]["log_prob"].reshape(num, -1).sum(-1) for n in names)
    if not info.discrete:
        ll = {}
        for n in info.observed:
            lp = trace.nodes[n]["log_prob"]
            ll[n] = lp.reshape(num, *lp.shape[lp.dim() - info.batch_dims[n]:]
                               if info.batch_dims[n] else ())
        return ll, prior
    trace.pack_tensors()
    factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    target = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name.startswith("_ppgen"):
            continue
        symbol = site["infer"].get("_enumerate_symbol")
        if symbol is not None:
            sum_dims.add(symbol)
        elif name not in info.observed:
            continue
        ordinal = _find_ordinal(trace, site)
        factors.setdefault(ordinal, []).append(site["packed"]["log_prob"])
        if name in info.observed and target is None:
            target = ordinal
    result = packed.unpack(contract_to_tensor(factors, sum_dims, target_ordinal=target),
                           trace.symbol_to_dim)
    first = info.observed[0]
    nb = info.batch_dims[first]
    batch_shape = info.observed_values[first].shape[:nb]
    width = info.max_plate_nesting + 1  # the draws plate and the model's plates
    while result.dim() < width:
        result = result.unsqueeze(0)
    result = result.reshape(result.shape[-width:])
    result = result.reshape(result.shape[0], *result.shape[result.dim() - nb:]) if nb else \
        result.reshape(result.shape[0])
    return {first: result.expand(num, *batch_shape)}, prior


def generic_log_density(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                        kwargs: dict, info: ModelInfo):
    """Per-datum log-likelihood (site -> (S, *batch)) and log prior (S,) of ``S`` draws.

    Evaluated in one vectorised trace when the model broadcasts over an extra leading plate,
    else one trace per draw.
    """
    with poutine.block(), torch.no_grad():
        try:
            ll, prior = _vectorized_densities(model_fn, flat, args, kwargs, info)
            return {k: v.detach() for k, v in ll.items()}, prior.detach()
        except Exception:  # a model that does not broadcast over draws
            pass
        num = next(iter(flat.values())).shape[0]
        rows: dict[str, list[torch.Tensor]] = {}
        priors = []
        for s in range(num):  # one trace per posterior draw (never per datum)
            one = {n: v[s:s + 1] for n, v in flat.items()}
            ll, prior = _vectorized_densities(model_fn, one, args, kwargs, info,
                                              vectorize=False)
            priors.append(prior[0])
            for k, v in ll.items():
                rows.setdefault(k, []).append(v[0])
    return {k: torch.stack(v) for k, v in rows.items()}, torch.stack(priors)


def generic_log_likelihood(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                           kwargs: dict, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Per-datum log-likelihood for each of ``S`` flattened draws: site -> (S, *batch)."""
    return generic_log_density(model_fn, flat, args, kwargs, info)[0]


def deterministic_draws(model_fn: Callable, samples: dict[str, torch.Tensor], args: tuple,
                        kwargs: dict, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Values of the ``pyro.deterministic`` sites for draws of shape (chains, draws, ...)."""
    if not info.deterministic:
        return {}
    lead = next(iter(samples.values())).shape[:2]
    flat = flatten_draws({n: v for n, v in samples.items() if n in info.continuous}, 2)
    predictive = pyro.infer.Predictive(model_fn, posterior_samples=flat,
                                       return_sites=list(info.deterministic))
    with poutine.block(), torch.no_grad():
        out = predictive(*args, **kwargs)
    return {k: v.detach().reshape(*lead, *v.shape[1:]) for k, v in out.items()}


def generic_posterior_predictive(model_fn: Callable, flat: dict[str, torch.Tensor],
                                 args: tuple, kwargs: dict,
                                 info: ModelInfo) -> dict[str, torch.Tensor]:
    """Replicated observations, one per draw: site -> (S, *shape).

    The model runs with its real arguments but unconditioned, so the observed sites are drawn
    (models whose shapes come from the data need not accept ``data=None``).
    """
    names = [n for n in info.continuous if n in flat]
    predictive = pyro.infer.Predictive(poutine.uncondition(model_fn),
                                       posterior_samples={n: flat[n] for n in names},
                                       return_sites=list(info.observed))
    with poutine.block():
        out = predictive(*args, **kwargs)
    return {k: v.detach() for k, v in out.items()}
