"""Model introspection shared by the runners: which sites are discrete, observed, latent;
per-datum log-likelihood with discrete latents summed out; posterior predictive draws.

These work on any Pyro model function, built-in or written by a user in a notebook.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor

__all__ = ["ModelInfo", "inspect_model", "pointwise_log_likelihood", "log_prior",
           "flatten_draws", "enumerated"]


@dataclass(frozen=True)
class ModelInfo:
    """What one trace of a model says about its sites."""

    observed: tuple[str, ...]
    continuous: tuple[str, ...]
    discrete: tuple[str, ...]
    max_plate_nesting: int
    observed_values: dict[str, torch.Tensor]


def inspect_model(model_fn: Callable, args: tuple, kwargs: dict) -> ModelInfo:
    """Trace ``model_fn`` once (prior draws) and classify its sample sites."""
    with poutine.block():
        trace = poutine.trace(model_fn).get_trace(*args, **kwargs)
    observed, continuous, discrete = [], [], []
    nesting = 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized:
                nesting = max(nesting, -frame.dim)
        if site["is_observed"]:
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
    values = {n: trace.nodes[n]["value"] for n in observed}
    return ModelInfo(tuple(observed), tuple(continuous), tuple(discrete), nesting, values)


def enumerated(model_fn: Callable, info: ModelInfo) -> Callable:
    """``model_fn`` with every discrete latent site marked for parallel enumeration."""
    return config_enumerate(model_fn, default="parallel") if info.discrete else model_fn


def flatten_draws(samples: dict[str, torch.Tensor], lead: int) -> dict[str, torch.Tensor]:
    """Merge the first ``lead`` dimensions (chain, draw) into one."""
    return {k: v.reshape(-1, *v.shape[lead:]) for k, v in samples.items()}


def _find_ordinal(trace, site) -> frozenset:
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                     if f.vectorized)


def pointwise_log_likelihood(model_fn: Callable, draw: dict[str, torch.Tensor], args: tuple,
                             kwargs: dict, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Log-likelihood of each datum of the observed sites under one draw of the latents.

    Without discrete latents this is each observed site's ``log_prob`` (batch shape = its
    plates). With discrete latents they are summed out exactly by tensor contraction down to
    the plates of the observed sites (the same message passing as ``TraceEnum_ELBO``); the
    result is reported under the first observed site and is per datum when the discrete
    latents are local to the data plate (mixtures).
    """
    conditioned = poutine.condition(model_fn, data=draw)
    if not info.discrete:
        trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
        trace.compute_log_prob()
        return {n: trace.nodes[n]["log_prob"].detach() for n in info.observed}
    enum_model = poutine.enum(config_enumerate(conditioned, default="parallel"),
                              first_available_dim=-info.max_plate_nesting - 1)
    trace = poutine.trace(enum_model).get_trace(*args, **kwargs)
    trace.compute_log_prob()
    trace.pack_tensors()
    factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    target = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
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
    result = contract_to_tensor(factors, sum_dims, target_ordinal=target)
    result = packed.unpack(result, trace.symbol_to_dim)
    shape = trace.nodes[info.observed[0]]["log_prob"].shape
    value = result.reshape(result.shape[-len(shape):] if shape else ()).expand(shape)
    return {info.observed[0]: value.detach()}


def log_prior(model_fn: Callable, draw: dict[str, torch.Tensor], args: tuple, kwargs: dict,
              info: ModelInfo) -> torch.Tensor:
    """Sum of the log prior densities of the continuous latent sites at ``draw``."""
    with poutine.block():
        trace = poutine.trace(poutine.condition(model_fn, data=draw)).get_trace(*args, **kwargs)
    total = torch.zeros(())
    for name in info.continuous:
        site = trace.nodes[name]
        total = total + site["fn"].log_prob(site["value"]).sum().detach().cpu()
    return total


def generic_log_likelihood(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                           kwargs: dict, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Per-datum log-likelihood for each of ``S`` flattened draws: site -> (S, *batch)."""
    num = next(iter(flat.values())).shape[0]
    rows: dict[str, list[torch.Tensor]] = {}
    names = [n for n in info.continuous if n in flat]
    with poutine.block():
        for s in range(num):  # one trace per posterior draw (never per datum)
            out = pointwise_log_likelihood(model_fn, {n: flat[n][s] for n in names}, args,
                                           kwargs, info)
            for k, v in out.items():
                rows.setdefault(k, []).append(v)
    return {k: torch.stack(v) for k, v in rows.items()}


def generic_posterior_predictive(model_fn: Callable, flat: dict[str, torch.Tensor],
                                 args: tuple, kwargs: dict,
                                 info: ModelInfo) -> dict[str, torch.Tensor]:
    """Replicated observations, one per draw: site -> (S, *shape)."""
    names = [n for n in info.continuous if n in flat]
    predictive = pyro.infer.Predictive(model_fn, posterior_samples={n: flat[n] for n in names},
                                       return_sites=list(info.observed))
    with poutine.block():
        out = predictive(*args, **kwargs)
    return {k: v.detach() for k, v in out.items()}
