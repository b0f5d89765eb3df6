"""The MCMC runner: Pyro NUTS, chains run one after another in this process, or ChEES-HMC
(``kernel="chees"``), all chains in lock-step in one vectorised potential.

Running the chains in the calling process (not Pyro's multiprocessing) keeps notebooks from
hanging and makes each chain reproducible: chain ``i`` uses the seed
``derive_seeds(seed, num_chains)[i]``. Enumerated discrete sites are summed out while
sampling (``max_plate_nesting`` is inferred from a trace) and recovered afterwards by
``infer_discrete``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS, config_enumerate, infer_discrete
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad

from .._distributed import check_same_data, gather_owned, is_main_process, owned, world
from .._progress import in_jupyter_kernel, progress_bar, progress_enabled
from .._random import derive_seeds, seeded
from .._threads import num_elements, work_threads
from .._validation import bad_value, check_positive_float, check_positive_int
from .._warnings import warn_user
from .chees import TARGET_ACCEPT, sample_chees
from .potential import BatchedPotential, FlatSpec, chain_plate_potential
from .tracing import ModelInfo, flatten_draws

__all__ = ["run_mcmc", "run_chees", "SlowMCMCWarning", "SLOW_MCMC_SECONDS",
           "JITFallbackWarning", "jit_problem", "KERNELS"]

Kernel = Literal["nuts", "pyro-nuts", "chees"]
#: The MCMC kernels of ``kernel=``: Pyro's NUTS (two names) and ppgen's ChEES-HMC.
KERNELS: tuple[str, ...] = ("nuts", "pyro-nuts", "chees")

#: A run that the first iterations project to take longer than this (seconds, all chains)
#: warns with the estimate and a remedy (:class:`SlowMCMCWarning`).
SLOW_MCMC_SECONDS = 300.0
#: Iterations of the first chain timed for the estimate (after the first, which may compile),
#: or fewer when they take longer than ``_PILOT_SECONDS``.
_PILOT_ITERATIONS = 10
_PILOT_SECONDS = 10.0


class SlowMCMCWarning(UserWarning):
    """NUTS is projected to run long: the message gives the estimate, what makes it slow,
    and faster alternatives."""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def slow_mcmc_message(per_iteration: float, total_iterations: int, *, num_data: int | None,
                      discrete: tuple[str, ...], remedy: str | None) -> str:
    """The warning of a run projected to take ``per_iteration * total_iterations`` seconds."""
    what = []
    if num_data:
        what.append(f"{num_data} data")
    if discrete:
        what.append("discrete sites summed out in every gradient (" + ", ".join(discrete) + ")")
    why = f" ({'; '.join(what)})" if what else ""
    return (f"NUTS is projected to take about {_duration(per_iteration * total_iterations)}"
            f"{why}: the first iterations took {per_iteration * 1000:.0f} ms each, for "
            f"{total_iterations} iterations (num_warmup + num_samples, times num_chains). "
            + (remedy + " " if remedy else "")
            + "Or lower num_samples, num_warmup or num_chains, or fit a subset of the data "
            "first.")


class JITFallbackWarning(UserWarning):
    """The model could not be compiled by the PyTorch JIT (``jit_compile=None``, the
    default): NUTS runs it uncompiled (about 2x slower per leapfrog, same posterior)."""


def jit_problem(model_fn: Callable, args: tuple, kwargs: dict, max_plate_nesting: int,
                seed: int) -> str | None:
    """Why the potential energy of ``model_fn`` cannot be traced by the PyTorch JIT, or None
    when it can.

    The potential is traced at the initial point, with the tracer's warnings recorded (a
    warning means Python control flow or Python numbers taken from tensor values, which a
    trace freezes), then the traced and the plain potential and their gradients are compared
    at the initial point and at a second point: a trace that took one branch of a
    value-dependent ``if``, or froze a shape, disagrees there.
    """
    try:
        with seeded(seed), poutine.block(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            init, potential_fn, _, _ = initialize_model(
                model_fn, args, kwargs, max_plate_nesting=max_plate_nesting,
                jit_compile=True, skip_jit_warnings=False)
            if not init:
                return "no continuous latent sites"
            plain = potential_fn.func.__self__._potential_fn
            start = {k: v.detach() for k, v in init.items()}
            other = {k: v + 0.3 * torch.randn_like(v) for k, v in start.items()}
            for z in (start, other):  # the first call traces
                g_jit, pe_jit = potential_grad(potential_fn, z)
                g, pe = potential_grad(plain, z)
                same = _close(pe_jit, pe) and all(_close(g_jit[k], g[k]) for k in g)
                if not same:
                    return ("the traced potential differs from the model's at a second point "
                            "(Python control flow or shapes that depend on values)")
    except Exception as exc:  # the tracer refused the model
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    # Values read into Python (if, float(), int(), indexing by a tensor's value) are frozen
    # by a trace; other tracer warnings (Pyro's own torch.tensor constants) are not about
    # the model's values.
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
              and "Converting a tensor to a Python" in str(w.message)]
    if tracer:
        return ("the tracer warned: " + str(tracer[0].message).split(" might")[0]
                + ", which a trace freezes")
    return None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.detach(), b.detach()
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True))


class _NotebookBar:
    """MCMC hook that drives one ``tqdm.auto`` bar (a widget in a Jupyter kernel) over all
    chains, in place of Pyro's text bar, whose every redraw would stay in the notebook."""

    def __init__(self, total: int, num_chains: int, enabled: bool):
        self.bar = progress_bar(total, desc="NUTS", enabled=enabled, leave=True)
        self.num_chains = num_chains
        self.chain = 0

    def __call__(self, kernel, params, stage, i) -> None:
        if self.bar.disable:
            return
        self.bar.set_description(f"NUTS chain {self.chain + 1}/{self.num_chains} "
                                 f"{str(stage).lower()}", refresh=False)
        if i % 10 == 0 and hasattr(kernel, "logging"):
            self.bar.set_postfix(kernel.logging(), refresh=False)
        self.bar.update(1)

    def __enter__(self) -> _NotebookBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()


class _Pilot:
    """MCMC hook that times the first chain's first iterations and warns once when the whole
    run is projected to exceed :data:`SLOW_MCMC_SECONDS`."""

    def __init__(self, total_iterations: int, message: Callable[[float, int], str]):
        self.total = total_iterations
        self.message = message
        self.count = 0
        self.start: float | None = None
        self.done = False

    def __call__(self, kernel, params, stage, i) -> None:
        if self.done:
            return
        self.count += 1
        now = time.perf_counter()
        if self.count == 1:  # the first iteration may include compiling the model
            self.start = now
            return
        timed = self.count - 1
        if timed < min(_PILOT_ITERATIONS, self.total - 1) and now - self.start < _PILOT_SECONDS:
            return
        self.done = True
        per_iteration = (now - self.start) / timed
        if per_iteration * self.total > SLOW_MCMC_SECONDS:
            warn_user(self.message(per_iteration, self.total), SlowMCMCWarning)


class _RecordingNUTS(NUTS):
    """NUTS that records per-draw statistics: leapfrog steps, step size, divergence,
    log density and the Hamiltonian at the start of the transition."""

    def setup(self, warmup_steps, *args, **kwargs):
        super().setup(warmup_steps, *args, **kwargs)
        self.records: list[dict[str, float]] = []
        self._leapfrogs = 0

    def _build_basetree(self, *args, **kwargs):
        self._leapfrogs += 1
        return super()._build_basetree(*args, **kwargs)

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        self._start_kinetic = float(self._kinetic_energy(r_unscaled))
        return r, r_unscaled

    def sample(self, params):
        self._leapfrogs = 0
        self._start_kinetic = math.nan
        z, pe, _ = self._fetch_from_cache()
        start_pe = float(pe) if pe is not None else math.nan
        divergences = len(self._divergences)
        out = super().sample(params)
        _, pe_after, _ = self._fetch_from_cache()
        self.records.append({
            "n_steps": self._leapfrogs,
            "tree_depth": math.ceil(math.log2(self._leapfrogs + 1)) if self._leapfrogs else 0,
            "step_size": float(self.step_size),
            "diverging": len(self._divergences) > divergences,
            "lp": -float(pe_after) if pe_after is not None else math.nan,
            "energy": start_pe + self._start_kinetic,
        })
        return out


def run_mcmc(model_fn: Callable, args: tuple, kwargs: dict, info: ModelInfo, *, seed: int,
             progress: bool, init_values_fn: Callable[[int], dict] | None = None,
             num_samples: int = 1000, num_warmup: int | None = None, num_chains: int = 4,
             target_accept_prob: float | None = None, max_tree_depth: int | None = None,
             kernel: Kernel = "nuts", jit_compile: bool | None = None,
             slow_remedy: str | None = None) -> dict[str, Any]:
    """Sample the posterior with NUTS or ChEES-HMC; returns draws of shape (num_chains,
    num_samples, ...) (``"samples"``), their ``"sample_stats"``, and whether the potential
    was compiled (``"jit_compile"``).

    Parameters
    ----------
    num_samples, num_warmup, num_chains : int
        Draws kept per chain, adaptation steps per chain (default: ``num_samples``), chains.
    kernel : {"nuts", "pyro-nuts", "chees"}
        ``"nuts"`` (the default; ``"pyro-nuts"`` is its alias): Pyro's NUTS, chains one
        after another. ``"chees"``: ChEES-HMC (:mod:`ppgen.inference.chees`), all chains in
        lock-step in one vectorised potential call (:mod:`ppgen.inference.potential`); it
        needs ``num_chains >= 2`` and gains most with many chains (e.g. 64).
    target_accept_prob : float, optional
        NUTS: the target mean acceptance (default 0.8; raise it, e.g. 0.95, when there are
        divergences). ChEES: the target harmonic mean of the chains' acceptance
        probabilities (default 0.651, the paper's).
    max_tree_depth : int, optional
        NUTS only (default 10).
    jit_compile : bool or None
        Compile the potential energy with the PyTorch JIT (about 2x faster per leapfrog on
        small models). None (the default): compile when the model traces correctly
        (:func:`jit_problem`), else run uncompiled with a one-line
        :class:`JITFallbackWarning`; True: compile (a model the tracer cannot follow may
        then sample a wrong posterior); False: never.
    init_values_fn : callable, optional
        ``chain_seed -> {site: value}`` start values per chain (built-in models supply it).
    slow_remedy : str, optional
        Faster alternatives named by the :class:`SlowMCMCWarning` of a long run: the first
        chain's first iterations are timed, and a run projected to take longer than
        :data:`SLOW_MCMC_SECONDS` warns with the estimate (also with ``progress=False``).
    """
    num_samples = check_positive_int("num_samples", num_samples)
    num_warmup = num_samples if num_warmup is None else check_positive_int(
        "num_warmup", num_warmup, minimum=0)
    num_chains = check_positive_int("num_chains", num_chains)
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise bad_value("kernel", "one of " + ", ".join(repr(k) for k in KERNELS),
                        repr(kernel))
    chees = kernel == "chees"
    if target_accept_prob is None:
        target_accept_prob = TARGET_ACCEPT if chees else 0.8
    target_accept_prob = check_positive_float("target_accept_prob", target_accept_prob)
    if not target_accept_prob < 1:
        raise bad_value("target_accept_prob", "a number in (0, 1)", target_accept_prob)
    if jit_compile not in (None, True, False):
        raise bad_value("jit_compile", "True, False or None (compile when the model traces)",
                        repr(jit_compile))
    enum_model = config_enumerate(model_fn, default="parallel") if info.discrete else model_fn
    if chees:
        if max_tree_depth is not None:
            raise bad_value("max_tree_depth", "no max_tree_depth with kernel='chees' (it has "
                            "no trees: one jittered trajectory length, adapted, for all "
                            "chains)", max_tree_depth, "Drop max_tree_depth, or use "
                            "kernel='nuts'.")
        if jit_compile:
            raise bad_value("jit_compile", "None or False with kernel='chees' (its potential "
                            "runs under torch.func.vmap, which the JIT does not compile)",
                            jit_compile, "Drop jit_compile, or use kernel='nuts'.")
        if num_chains < 2:
            raise bad_value("num_chains", "at least 2 with kernel='chees' (it adapts from "
                            "statistics across chains)", num_chains,
                            "Use num_chains=4 or more (64 is cheap), or kernel='nuts'.")
        return run_chees(enum_model, args, kwargs, info, seed=seed, progress=progress,
                         init_values_fn=init_values_fn, num_samples=num_samples,
                         num_warmup=num_warmup, num_chains=num_chains,
                         target_accept_prob=target_accept_prob)
    max_tree_depth = check_positive_int("max_tree_depth", 10 if max_tree_depth is None
                                        else max_tree_depth)
    auto_jit = jit_compile is None
    if auto_jit:
        with _threads_for_data(args, kwargs):
            problem = jit_problem(enum_model, args, kwargs, info.max_plate_nesting, seed)
        jit_compile = problem is None
        if problem is not None:
            warn_user(f"jit_compile: the model cannot be compiled by the PyTorch JIT ({problem})"
                      "; NUTS runs it uncompiled (same posterior, about 2x slower). Pass "
                      "jit_compile=False to skip this check.", JITFallbackWarning)
    # Under a process group the chains are spread over the ranks (chain c on rank
    # c % world_size, with the seed it has in one process) and gathered on every rank.
    mine = owned(num_chains)
    # Pyro draws its own bar: only where it is seen, and on rank 0 of a distributed job.
    show_bar = progress_enabled(progress) and is_main_process()
    # In a notebook, Pyro's text bar would leave every redraw in the cell's output: ppgen
    # draws one tqdm.auto widget instead. In a terminal Pyro's bar stays.
    notebook = show_bar and in_jupyter_kernel()
    bar = _NotebookBar((num_warmup + num_samples) * len(mine), len(mine), enabled=notebook)
    chains: list[dict[str, torch.Tensor]] = []
    stats: list[list[dict[str, float]]] = []
    data = args[0] if args and isinstance(args[0], torch.Tensor) else None
    pilot = _Pilot((num_warmup + num_samples) * len(mine), lambda per, total: slow_mcmc_message(
        per, total, num_data=None if data is None or data.dim() == 0 else len(data),
        discrete=tuple(info.discrete), remedy=slow_remedy))

    def hook(kernel, params, stage, i):
        pilot(kernel, params, stage, i)
        bar(kernel, params, stage, i)

    size = world()[1]
    if size > 1 and data is not None:
        check_same_data(data)
    runs: dict[int, Any] = {}
    failed: Exception | None = None
    with bar:
        for c, chain_seed in enumerate(derive_seeds(seed, num_chains)):
            if c not in mine or failed is not None:
                continue
            try:
                bar.chain = mine.index(c)
                with seeded(chain_seed), _threads_for_data(args, kwargs):
                    init = init_values_fn(chain_seed) if init_values_fn is not None else None
                    strategy = init_to_value(values=init, fallback=init_to_median) if init else \
                        init_to_median
                    rng = torch.get_rng_state()
                    while True:
                        nuts = _RecordingNUTS(enum_model, max_plate_nesting=info.max_plate_nesting,
                                              target_accept_prob=target_accept_prob,
                                              max_tree_depth=max_tree_depth,
                                              init_strategy=strategy,
                                              jit_compile=bool(jit_compile),
                                              ignore_jit_warnings=True)
                        mcmc = MCMC(nuts, num_samples=num_samples, warmup_steps=num_warmup,
                                    num_chains=1, disable_progbar=not show_bar or notebook,
                                    hook_fn=hook)
                        try:
                            mcmc.run(*args, **kwargs)
                            break
                        except Exception as exc:
                            if not (auto_jit and jit_compile):
                                raise
                            # The check passed but the compiled potential failed later: the
                            # chain starts again uncompiled, from the same random state.
                            jit_compile = False
                            torch.set_rng_state(rng)
                            why = (str(exc).splitlines() or [""])[0]
                            warn_user(f"jit_compile: the compiled potential failed in chain {c} "
                                      f"({type(exc).__name__}: {why}); NUTS runs the model "
                                      "uncompiled.", JITFallbackWarning)
                    runs[c] = ({k: v.detach() for k, v in mcmc.get_samples().items()},
                               nuts.records[num_warmup:])
            except Exception as exc:
                if size == 1:
                    raise
                # Under a process group the others would wait for this chain: they learn of
                # the failure from the gather and raise with it.
                failed = exc
                runs[c] = f"{type(exc).__name__}: {exc}"
    gathered = gather_owned(runs, num_chains)
    if failed is not None:
        raise failed
    for i, run in enumerate(gathered):
        if not isinstance(run, tuple):  # a failed chain on another rank, or one skipped
            raise RuntimeError(f"MCMC: chain {i} failed on rank {i % size} "
                               f"({run or 'an earlier chain of that rank failed'}); see that "
                               "rank's traceback.")
        chains.append(run[0])
        stats.append(run[1])
    samples = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
    sample_stats = {key: np.array([[r[key] for r in chain] for chain in stats])
                    for key in stats[0][0]} if num_samples else {}
    return {"samples": samples, "sample_stats": sample_stats, "jit_compile": bool(jit_compile)}


#: Half-width of the uniform start values in the unconstrained space (as Stan's and Pyro's
#: ``init_to_uniform``) of ``kernel="chees"`` chains without start values.
INIT_RADIUS = 2.0
_INIT_TRIES = 100


def run_chees(model_fn: Callable, args: tuple, kwargs: dict, info: ModelInfo, *, seed: int,
              progress: bool, init_values_fn: Callable[[int], dict] | None, num_samples: int,
              num_warmup: int, num_chains: int, target_accept_prob: float) -> dict[str, Any]:
    """ChEES-HMC on all chains at once (the ``kernel="chees"`` branch of :func:`run_mcmc`,
    its options checked there); returns what :func:`run_mcmc` returns, plus whether the
    potential ran vectorised (``"vectorized"``) and the adapted ``"step_size"`` and
    ``"trajectory_length"``.

    Pyro builds the potential (``initialize_model``: enumerated discrete sites summed out,
    constrained sites mapped to the real line); :class:`~ppgen.inference.potential.
    BatchedPotential` evaluates it for all chains in one call. Chain ``i`` starts from
    ``init_values_fn(derive_seeds(seed, num_chains)[i])`` where given (sites it leaves out,
    or values with no finite density, are drawn as below), else from U(-2, 2) in the
    unconstrained space. The sampler's seed is ``derive_seeds(seed, 2)[1]``.
    """
    init_seed, sampler_seed = derive_seeds(seed, 2)
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    threads = work_threads(num_elements(*tensors) * num_chains,
                           device=tensors[0].device if tensors else None)
    with seeded(init_seed), poutine.block(), threads:
        proto, potential_fn, transforms, _ = initialize_model(
            model_fn, args, kwargs, max_plate_nesting=info.max_plate_nesting)
        spec = FlatSpec.from_values({k: v.detach() for k, v in proto.items()})
        first = next(iter(proto.values()))
        like = {"dtype": first.dtype, "device": first.device}
        generator = torch.Generator(device=first.device)
        generator.manual_seed(init_seed)

        def uniform(n: int) -> torch.Tensor:
            return (torch.rand((n, spec.dim), generator=generator, **like) * 2 - 1) * \
                INIT_RADIUS

        start = spec.unpack(uniform(num_chains))
        if init_values_fn is not None:
            for c, chain_seed in enumerate(derive_seeds(seed, num_chains)):
                values = init_values_fn(chain_seed) or {}
                for name in spec.names:
                    if name in values:
                        value = torch.as_tensor(values[name]).to(**like)
                        start[name][c] = transforms[name](value).reshape(start[name][c].shape)
        position = spec.pack(start, (num_chains,))
        plate_fn = None if info.discrete else chain_plate_potential(
            model_fn, args, kwargs, spec, transforms, info.batch_dims, info.max_plate_nesting)
        potential = BatchedPotential(potential_fn, spec, plate_fn=plate_fn)
        for _ in range(_INIT_TRIES):
            energy, _ = potential(position)
            bad = ~torch.isfinite(energy)
            if not bool(bad.any()):
                break
            position[bad] = uniform(int(bad.sum()))
        else:
            raise bad_value("model", "a finite log density at some start point", "none in "
                            f"{_INIT_TRIES} draws from U(-{INIT_RADIUS:g}, {INIT_RADIUS:g}) in "
                            "the unconstrained space", "Pass init= with start values.")
        out = sample_chees(potential, position, num_warmup=num_warmup,
                           num_samples=num_samples, seed=sampler_seed,
                           target_accept_prob=target_accept_prob, progress=progress)
    unconstrained = spec.unpack(out["draws"])
    samples = {name: transforms[name].inv(value).detach()
               for name, value in unconstrained.items()}
    return {"samples": samples, "sample_stats": out["sample_stats"] if num_samples else {},
            "jit_compile": potential.mode == "plate-jit",
            "vectorized": bool(potential.vectorized), "potential_mode": potential.mode,
            "step_size": out["step_size"], "trajectory_length": out["trajectory_length"]}


def recover_discrete(model_fn: Callable, samples: dict[str, torch.Tensor], args: tuple,
                     kwargs: dict, info: ModelInfo, seed: int) -> dict[str, torch.Tensor]:
    """Draw the discrete sites from their conditional posterior given each draw
    (``infer_discrete`` at temperature 1); returns site -> (chains, draws, ...).

    All draws in one pass when the model broadcasts over an outermost plate of draws, else
    one pass per draw."""
    if not info.discrete:
        return {}
    lead = next(iter(samples.values())).shape[:2]
    flat = flatten_draws(samples, 2)
    names = [n for n in info.continuous if n in flat]
    num = flat[names[0]].shape[0] if names else 0
    if not num:
        return {}
    enum_model = config_enumerate(model_fn, default="parallel")
    with seeded(seed), poutine.block(), _threads_for_data(args, kwargs):
        rng = torch.get_rng_state()
        try:
            out = _discrete_all_draws(enum_model, flat, names, num, args, kwargs, info)
        except (RuntimeError, ValueError, NotImplementedError, IndexError):
            torch.set_rng_state(rng)
            out = _discrete_per_draw(enum_model, flat, names, num, args, kwargs, info)
    return {n: v.reshape(*lead, *v.shape[1:]) for n, v in out.items()}


def _discrete_all_draws(enum_model, flat, names, num, args, kwargs, info):
    """One ``infer_discrete`` pass with the draws along a plate left of the model's plates
    (each draw's discrete sites are drawn given that draw only: the plate makes them
    conditionally independent across draws). Raises ValueError when a site ignores it."""
    dim = -info.max_plate_nesting - 1
    values = {}
    for n in names:
        v = flat[n]
        pad = info.max_plate_nesting - info.batch_dims.get(n, 0)
        values[n] = v.reshape((num,) + (1,) * pad + v.shape[1:])
    cond = poutine.condition(enum_model, data=values)

    def vectorized(*a, **k):
        with pyro.plate("_ppgen_draws", num, dim=dim):
            return cond(*a, **k)

    sampler = infer_discrete(vectorized, first_available_dim=dim - 1, temperature=1)
    trace = poutine.trace(sampler).get_trace(*args, **kwargs)
    out = {}
    for n in info.discrete:
        value = trace.nodes[n]["value"].detach()
        shape = tuple(info.shapes.get(n, ()))
        size = int(np.prod(shape, dtype=np.int64))
        if value.numel() == size * num:
            out[n] = value.reshape(num, *shape)
        elif value.numel() in (1, num) and size != 1:  # one category: nothing to draw
            out[n] = value.reshape(-1, *(1,) * len(shape)).expand(num, *shape)
        else:
            raise ValueError(f"the site {n!r} ignored the plate of draws")
    return out


def _discrete_per_draw(enum_model, flat, names, num, args, kwargs, info):
    out: dict[str, list[torch.Tensor]] = {n: [] for n in info.discrete}
    for s in range(num):  # one pass per draw
        cond = poutine.condition(enum_model, data={n: flat[n][s] for n in names})
        sampler = infer_discrete(cond, first_available_dim=-info.max_plate_nesting - 1,
                                 temperature=1)
        trace = poutine.trace(sampler).get_trace(*args, **kwargs)
        for n in info.discrete:
            value = trace.nodes[n]["value"].detach()
            shape = info.shapes.get(n, value.shape)
            if value.numel() == 1 and tuple(value.shape) != tuple(shape):
                value = value.reshape(()).expand(shape)  # one category: nothing to draw
            out[n].append(value.reshape(shape))
    return {n: torch.stack(v) for n, v in out.items() if v}


def _threads_for_data(args: tuple, kwargs: dict):
    """Intra-op threads by the size of the model's tensor arguments (ppgen._threads): NUTS
    and infer_discrete run many small ops, which one thread does fastest."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    return work_threads(num_elements(*tensors),
                        device=tensors[0].device if tensors else None)
