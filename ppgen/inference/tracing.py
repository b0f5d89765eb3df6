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
from pyro.distributions.util import scale_and_mask
from pyro.infer import config_enumerate
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.subsample_messenger import _Subsample

from .._threads import num_elements
from .._validation import NotSupportedError

__all__ = ["ModelInfo", "inspect_model", "generic_log_density", "generic_log_likelihood",
           "pointwise_log_likelihood", "observed_data", "generic_posterior_predictive",
           "flatten_draws", "enumerated", "JOINT"]


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


#: The log-likelihood variable that holds the joint of several observed sites per shared
#: datum (or of the observed sites that enumerated discrete latents couple).
JOINT = "joint"

#: Per-datum log-likelihood: site (or :data:`JOINT`) -> (S, *datum shape), with the name of
#: each datum dimension (the plate's name, or None where no plate declares it).
Pointwise = tuple[dict[str, torch.Tensor], dict[str, tuple[str | None, ...]]]


def _find_ordinal(trace, site) -> frozenset:
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                     if f.vectorized)


def _is_subsample(site) -> bool:
    return isinstance(site["fn"], _Subsample)


def _plate_names(site, num_dims: int) -> tuple[str | None, ...]:
    """The plate that declares each of the last ``num_dims`` batch dimensions of a site."""
    by_dim = {f.dim: f.name for f in site["cond_indep_stack"] if f.vectorized}
    return tuple(by_dim.get(d) for d in range(-num_dims, 0))


def _per_draw(lp: torch.Tensor, num: int, num_dims: int, vectorize: bool) -> torch.Tensor:
    """A site's log-density laid out as (S, *its last ``num_dims`` batch dims)."""
    if not vectorize:
        lp = lp.unsqueeze(0)
    width = max(lp.dim(), num_dims + 1)
    lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    tail = tuple(lp.shape[width - num_dims:]) if num_dims else ()
    middle = lp.shape[1:width - num_dims]
    if any(s != 1 for s in middle):
        raise ValueError("a site's batch dimensions do not follow its plates")
    return lp.expand(num, *lp.shape[1:]).reshape(num, *tail)


def _densities(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple, kwargs: dict,
               info: ModelInfo, vectorize: bool = True):
    """Per-datum log-likelihood terms, their dimension names and the log prior of ``S``
    draws in one trace, the draws laid along an extra plate left of the model's plates (as
    ``Predictive(parallel=True)``). With ``vectorize=False`` there must be one draw, and the
    model runs as written.

    The terms do not overlap (their sum is the total log-likelihood). Observed sites are
    scored without the scale a subsampled plate gives them. With discrete latents, the
    observed sites whose density depends on them are summed with them out (as
    ``TraceEnum_ELBO`` does: the enumerated sites' unmasked factors, the observed sites'
    masked ones, so that a masked step contributes exactly 0) down to the plates that all
    these sites share: per sequence for an HMM whose state is shared across an inner plate.
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
    observed = [n for n in info.observed if n in trace.nodes]
    ll: dict[str, torch.Tensor] = {}
    dims: dict[str, tuple[str | None, ...]] = {}
    coupled: list[str] = []
    if info.discrete:
        trace.pack_tensors()
        symbols = {site["infer"]["_enumerate_symbol"] for site in trace.nodes.values()
                   if site["type"] == "sample" and "_enumerate_symbol" in site["infer"]}
        coupled = [n for n in observed if not symbols.isdisjoint(
            trace.nodes[n]["packed"]["unscaled_log_prob"]._pyro_dims)]
    for n in observed:
        if n in coupled:
            continue
        site = trace.nodes[n]
        nb = info.batch_dims[n]
        lp = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
        ll[n] = _per_draw(lp, num, nb, vectorize)
        dims[n] = _plate_names(site, nb)
    if coupled:
        key = coupled[0] if len(coupled) == 1 else JOINT
        ll[key], dims[key] = _contract_coupled(trace, coupled, num, vectorize)
    return ll, dims, prior


def _contract_coupled(trace, coupled: list[str], num: int, vectorize: bool):
    """Sum the enumerated sites out of the observed sites that depend on them, per datum of
    the plates that all of them share."""
    factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    ordinals = []
    frames = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or _is_subsample(site):
            continue
        symbol = site["infer"].get("_enumerate_symbol")
        if symbol is not None:
            sum_dims.add(symbol)
            term = site["packed"]["unscaled_log_prob"]
        elif name in coupled:
            term = packed.scale_and_mask(site["packed"]["unscaled_log_prob"],
                                         mask=site["packed"]["mask"])
        else:
            continue
        ordinal = _find_ordinal(trace, site)
        factors.setdefault(ordinal, []).append(term)
        ordinals.append(ordinal)
        frames.update({f.name: f for f in site["cond_indep_stack"] if f.vectorized})
    # The plates every term shares; those of size 1 are not in the packed tensors.
    present = set().union(*(t._pyro_dims for terms in factors.values() for t in terms))
    target = frozenset(s for s in frozenset.intersection(*ordinals) if s in present)
    result = packed.unpack(contract_to_tensor(factors, sum_dims, target_ordinal=target),
                           trace.symbol_to_dim)
    shared = frozenset.intersection(*ordinals)
    kept = sorted((f for f in frames.values() if trace.plate_to_symbol[f.name] in shared),
                  key=lambda f: f.dim)
    width = max([result.dim()] + [-f.dim for f in kept])
    result = result.reshape((1,) * (width - result.dim()) + tuple(result.shape))
    sizes = [1] * width
    for f in kept:  # a plate's size in this trace (its minibatch when it subsamples)
        index = trace.nodes[f.name]["value"] if f.name in trace.nodes else None
        sizes[width + f.dim] = len(index) if isinstance(index, torch.Tensor) else f.size
    result = result.expand(sizes).reshape([sizes[width + f.dim] for f in kept])
    if not vectorize:
        result = result.unsqueeze(0)
    names = tuple(f.name for f in kept if f.name != "_ppgen_draws")
    return result.reshape(num, *result.shape[1:]), names


def _full_data_plan(model_fn: Callable, args: tuple, kwargs: dict, info: ModelInfo):
    """How to see all the data of a model that subsamples inside a plate: ``None`` when it
    does not subsample, else (plate, full size, minibatch size).

    Raises NotSupportedError when the full data cannot be scored by minibatches: several
    subsampled plates, or continuous latent sites inside the subsampled plate (their draws
    cover one minibatch).
    """
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model_fn).get_trace(*args, **kwargs)
    plates = [(n, s) for n, s in trace.nodes.items() if s["type"] == "sample"
              and _is_subsample(s) and len(s["value"]) < s["fn"].size]
    if not plates:
        return None
    if len(plates) > 1:
        raise NotSupportedError(
            "model: expected at most one subsampled plate to score the full data, got "
            f"{len(plates)} ({', '.join(repr(n) for n, _ in plates)}). Drop subsample_size "
            "from all but one plate (or all) to get a per-datum log-likelihood.")
    name, site = plates[0]
    local = [n for n, s in trace.nodes.items() if n in info.continuous
             and any(f.name == name for f in s["cond_indep_stack"])]
    if local:
        raise NotSupportedError(
            f"model: expected only global continuous latent sites to score the full data, "
            f"got {', '.join(repr(n) for n in local)} inside the subsampled plate {name!r}: "
            f"their draws cover one minibatch of {len(site['value'])} of the "
            f"{site['fn'].size} data, so the per-datum log-likelihood (LOO) and posterior "
            "predictive of the data set are not defined. Fit without subsample_size to get "
            "them.")
    return name, site["fn"].size, len(site["value"]), site["value"].device


def _chunks(plan) -> list[tuple[torch.Tensor, int]]:
    """Full-data minibatches of a subsampled plate: (indices, index of the first new datum
    in them); the last one is the last ``B`` data, of which the new ones are kept."""
    _, size, batch, device = plan
    out = []
    for start in range(0, size, batch):
        first = min(start, size - batch)
        out.append((torch.arange(first, first + batch, device=device), start - first))
    return out


def _join(parts: list[dict[str, torch.Tensor]], axes: dict[str, int | None],
          skips: list[int]) -> dict[str, torch.Tensor]:
    """Concatenate per-chunk results along each site's axis of the subsampled plate (the new
    data of each chunk); sites outside that plate are taken from the first chunk."""
    out = {}
    for k, first in parts[0].items():
        axis = axes.get(k)
        if axis is None:
            out[k] = first
            continue
        out[k] = torch.cat([p[k].narrow(axis, skip, p[k].shape[axis] - skip)
                            for p, skip in zip(parts, skips, strict=True)], dim=axis)
    return out


def _terms(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple, kwargs: dict,
           info: ModelInfo):
    """:func:`_densities` over the full data (minibatch by minibatch for a subsampled
    plate), vectorised over draws when the model broadcasts, else one trace per draw."""
    plan = _full_data_plan(model_fn, args, kwargs, info)
    if plan is None:
        return _all_draws(model_fn, flat, args, kwargs, info)
    parts, skips, dims, prior = [], [], {}, None
    for index, skip in _chunks(plan):
        fn = poutine.condition(model_fn, data={plan[0]: index})
        ll, dims, p = _all_draws(fn, flat, args, kwargs, info)
        prior = p if prior is None else prior
        parts.append(ll)
        skips.append(skip)
    axes = {k: 1 + d.index(plan[0]) if plan[0] in d else None for k, d in dims.items()}
    return _join(parts, axes, skips), dims, prior


def _all_draws(model_fn, flat, args, kwargs, info):
    try:
        return _densities(model_fn, flat, args, kwargs, info)
    except Exception:  # a model that does not broadcast over draws
        pass
    num = next(iter(flat.values())).shape[0]
    rows: dict[str, list[torch.Tensor]] = {}
    priors = []
    dims: dict = {}
    for s in range(num):  # one trace per posterior draw (never per datum)
        one = {n: v[s:s + 1] for n, v in flat.items()}
        ll, dims, prior = _densities(model_fn, one, args, kwargs, info, vectorize=False)
        priors.append(prior[0])
        for k, v in ll.items():
            rows.setdefault(k, []).append(v[0])
    return {k: torch.stack(v) for k, v in rows.items()}, dims, torch.stack(priors)


def generic_log_density(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                        kwargs: dict, info: ModelInfo):
    """Per-datum log-likelihood terms (site -> (S, *batch)) and log prior (S,) of ``S``
    draws, over the full data; the terms sum to the total log-likelihood.

    Evaluated in one vectorised trace when the model broadcasts over an extra leading plate,
    else one trace per draw.
    """
    with poutine.block(), torch.no_grad():
        ll, _, prior = _terms(model_fn, flat, args, kwargs, info)
    return {k: v.detach() for k, v in ll.items()}, prior.detach()


def generic_log_likelihood(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                           kwargs: dict, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Per-datum log-likelihood terms for each of ``S`` flattened draws: site -> (S, *batch)."""
    return generic_log_density(model_fn, flat, args, kwargs, info)[0]


def pointwise_log_likelihood(model_fn: Callable, flat: dict[str, torch.Tensor], args: tuple,
                             kwargs: dict, info: ModelInfo) -> Pointwise:
    """The log_likelihood group of a model function: one variable per observed site (the
    observed sites that enumerated discrete latents couple as one, named after the site when
    it is alone, else :data:`JOINT`, per datum of the plates they share), plus :data:`JOINT`,
    the sum of all of them per datum of the plates that every observed site shares, when
    there are several. Returns the variables and the names of their datum dimensions."""
    with poutine.block(), torch.no_grad():
        ll, dims, _ = _terms(model_fn, flat, args, kwargs, info)
    ll = {k: v.detach() for k, v in ll.items()}
    if len(ll) > 1:
        joint = _joint(ll, dims)
        if joint is not None:
            ll[JOINT], dims[JOINT] = joint
    return ll, dims


def _joint(ll: dict[str, torch.Tensor], dims: dict[str, tuple[str | None, ...]]):
    """The sum of the variables per datum of the plates they all share (None if none)."""
    shared = set.intersection(*({d for d in v if d is not None} for v in dims.values()))
    if not shared:
        return None
    order = tuple(d for d in next(iter(dims.values())) if d in shared)
    total = None
    for k, v in ll.items():
        names = dims[k]
        other = [1 + i for i, d in enumerate(names) if d not in shared]
        v = v.sum(other) if other else v
        rest = [d for d in names if d in shared]
        v = v.permute(0, *(1 + rest.index(d) for d in order))
        if total is not None and v.shape[1:] != total.shape[1:]:
            return None
        total = v if total is None else total + v
    return total, order


def observed_data(model_fn: Callable, args: tuple, kwargs: dict,
                  info: ModelInfo) -> Pointwise:
    """The observed values the log-likelihood is about (the full data of a subsampled
    plate), with the plate that declares each batch dimension (event dimensions: None)."""
    plan = _full_data_plan(model_fn, args, kwargs, info)
    parts, skips = [], []
    for index, skip in _chunks(plan) if plan else [(None, 0)]:
        fn = model_fn if index is None else poutine.condition(model_fn, data={plan[0]: index})
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(fn).get_trace(*args, **kwargs)
        parts.append({n: trace.nodes[n]["value"].detach() for n in info.observed})
        skips.append(skip)
    dims = {n: _value_dims(trace.nodes[n]) for n in info.observed}
    axes = {n: d.index(plan[0]) if plan and plan[0] in d else None for n, d in dims.items()}
    return _join(parts, axes, skips), dims


def _value_dims(site) -> tuple[str | None, ...]:
    value = site["value"]
    event = site["fn"].event_dim
    return _plate_names(site, value.dim() - event) + (None,) * event


def deterministic_draws(model_fn: Callable, samples: dict[str, torch.Tensor], args: tuple,
                        kwargs: dict, info: ModelInfo) -> dict[str, torch.Tensor]:
    """Values of the ``pyro.deterministic`` sites for draws of shape (chains, draws, ...)."""
    if not info.deterministic:
        return {}
    lead = next(iter(samples.values())).shape[:2]
    flat = flatten_draws({n: v for n, v in samples.items() if n in info.continuous}, 2)
    sites = list(info.deterministic)

    def run(part: dict[str, torch.Tensor], parallel: bool) -> dict[str, torch.Tensor]:
        predictive = pyro.infer.Predictive(model_fn, posterior_samples=part,
                                           return_sites=sites, parallel=parallel)
        with poutine.block(), torch.no_grad():
            return {k: v.detach() for k, v in predictive(*args, **kwargs).items()}

    num = next(iter(flat.values())).shape[0] if flat else 0
    # Every path leaves the global RNG as it found it (the check's runs draw the observed
    # sites too), so what a fit draws afterwards does not depend on the path taken.
    with torch.random.fork_rng(devices=[]):
        out = _vectorised_draws(run, flat, num, args, kwargs) if num > _PARALLEL_CHECK else None
        if out is None:
            out = run(flat, False)
    return {k: v.reshape(*lead, *v.shape[1:]) for k, v in out.items()}


def _vectorised_draws(run, flat, num, args, kwargs):
    """One vectorised run of the model for many draws (Pyro's Predictive(parallel=True)), in
    chunks, instead of one run per draw; None (the per-draw runs) when it does not give what
    the per-draw runs give on the first draws, or fails or loses the draws' dimension later:
    a model that does not broadcast over an extra leading dimension."""
    head = {n: v[:_PARALLEL_CHECK] for n, v in flat.items()}
    try:
        vectorised, looped = run(head, True), run(head, False)
        if vectorised.keys() != looped.keys() or not all(
                vectorised[k].shape == looped[k].shape
                and torch.allclose(vectorised[k], looped[k], rtol=1e-6, atol=1e-10,
                                   equal_nan=True) for k in looped):
            return None
        # Chunks of about _PARALLEL_ELEMENTS elements: the model's tensor arguments (its
        # observed sites are drawn too) and the returned sites, per draw.
        per_draw = num_elements(*args, *kwargs.values()) + sum(
            v[0].numel() for v in looped.values())
        chunk = max(1, min(num, _PARALLEL_ELEMENTS // max(per_draw, 1)))
        parts = []
        for i in range(0, num, chunk):
            part = run({n: v[i:i + chunk] for n, v in flat.items()}, True)
            size = min(chunk, num - i)
            if part.keys() != looped.keys() or any(
                    part[k].shape != (size, *looped[k].shape[1:]) for k in looped):
                return None
            parts.append(part)
    except Exception:  # noqa: BLE001 (any failure of the vectorised runs: per-draw runs)
        return None
    return {k: torch.cat([part[k] for part in parts]) for k in looped}


#: Draws on which the vectorised deterministic sites are checked against per-draw runs, and
#: elements (arguments and returned sites, per draw, times draws) per vectorised run.
_PARALLEL_CHECK = 3
_PARALLEL_ELEMENTS = 1 << 24




def generic_posterior_predictive(model_fn: Callable, flat: dict[str, torch.Tensor],
                                 args: tuple, kwargs: dict,
                                 info: ModelInfo) -> dict[str, torch.Tensor]:
    """Replicated observations, one per draw: site -> (S, *shape), over the full data (a
    subsampled plate is replaced by its minibatches in turn).

    The model runs with its real arguments but unconditioned, so the observed sites are drawn
    (models whose shapes come from the data need not accept ``data=None``).
    """
    names = [n for n in info.continuous if n in flat]
    plan = _full_data_plan(model_fn, args, kwargs, info)
    parts, skips = [], []
    for index, skip in _chunks(plan) if plan else [(None, 0)]:
        fn = poutine.uncondition(model_fn)
        if index is not None:  # inside uncondition: the indices stay as given
            fn = poutine.condition(fn, data={plan[0]: index})
        predictive = pyro.infer.Predictive(fn, posterior_samples={n: flat[n] for n in names},
                                           return_sites=list(info.observed))
        with poutine.block():
            out = predictive(*args, **kwargs)
        parts.append({k: v.detach() for k, v in out.items()})
        skips.append(skip)
    if plan is None:
        return parts[0]
    _, dims = observed_data(model_fn, args, kwargs, info)
    axes = {n: 1 + d.index(plan[0]) if plan[0] in d else None for n, d in dims.items()}
    return _join(parts, axes, skips)
