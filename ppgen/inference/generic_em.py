"""EM for a user's Pyro model function, run by the shared driver (:func:`~.em.run_em`).

The model's discrete latent sites are enumerated (in parallel, as ``TraceEnum_ELBO`` does);
its other unknowns are ``pyro.param`` values and continuous latent sites taken at a point
(their MAP in the constrained space, as ``AutoDelta`` gives: no log-Jacobian). With
``theta`` the current values of these unknowns, the model's log-density factors ``f_i``
(one per sample site, over its plates and the enumerated values it depends on) define

* the objective ``log Z(theta) = log sum_z prod_i exp f_i(z; theta)``: the marginal
  log-likelihood, plus the log prior density of the MAP sites; computed by the same tensor
  contraction ``TraceEnum_ELBO`` runs (:func:`pyro.ops.contract.contract_to_tensor`);
* the E-step: the posterior marginal of every factor's enumerated values,
  ``m_i = d log Z / d f_i`` (the gradient of a log normaliser with respect to a log-factor is
  that factor's posterior marginal), one backward pass through the contraction;
* the M-step: maximise the expected complete-data log joint
  ``Q(theta') = sum_i sum(m_i * f_i(theta'))`` over the unconstrained values by L-BFGS
  (strong-Wolfe line search) to a tolerance. An M-step that does not increase ``Q`` is undone,
  so that ``log Z`` never decreases (``log Z(theta') - log Z(theta) >= Q(theta') - Q(theta)``).

A model may declare a closed-form M-step instead (``m_step=``, from the posterior marginals
of its enumerated sites); L-BFGS then fits what it leaves out. The model function is wrapped
in :class:`FunctionEM`, which gives the driver the ``em_initialize / e_step / m_step /
get_state / set_state`` it expects.

Cost: every evaluation of ``Q`` is one trace of the model. The E-step's trace keeps its
graph, so it also gives the M-step's first ``Q`` and gradient; one L-BFGS per restart keeps
its curvature memory across M-steps (their ``Q`` are close functions); ``Q`` at values
L-BFGS already evaluated is looked up, not recomputed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import biject_to, transform_to

from .._validation import (
    NotSupportedError,
    bad_type,
    bad_value,
    check_positive_float,
    check_positive_int,
)
from .tracing import ModelInfo

__all__ = ["FunctionEM", "check_em_model"]


def check_em_model(model_fn: Callable, info: ModelInfo) -> None:
    """Raise a clear error for a model function that EM cannot fit."""
    name = getattr(model_fn, "__name__", "model")
    if not info.discrete:
        raise NotSupportedError(
            f"model: expected discrete latent sites to enumerate for method='em', got none in "
            f"{name} (its latent sites: {', '.join(info.continuous) or 'none'}). Without "
            "discrete latents EM is plain maximisation: use method='svi' with guide='map' (a "
            "MAP point estimate), or method='mcmc' for posterior draws.")
    if info.subsampled:
        raise NotSupportedError(
            "model: expected a model without subsampling for method='em', got the subsampled "
            f"plate(s) {', '.join(repr(p) for p in info.subsampled)}: EM's E-step needs the "
            "posterior over every datum. Drop subsample_size, or use method='svi'.")


def _is_enumerable(msg: dict) -> bool:
    fn = msg["fn"]
    return (msg["type"] == "sample" and not msg["is_observed"]
            and getattr(fn, "has_enumerate_support", False) and fn.support.is_discrete
            and not msg["infer"].get("_deterministic"))


def _parallel(msg: dict) -> dict:
    """Every discrete latent site enumerated in parallel (a site marked "sequential" too:
    the sum is the same, parallel computes it in one trace)."""
    return {"enumerate": "parallel"} if _is_enumerable(msg) else {}


def _ordinal(trace, site) -> frozenset:
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                     if f.vectorized)


class FunctionEM:
    """A Pyro model function as an EM model for :func:`~.em.run_em`.

    Parameters
    ----------
    model_fn : callable
        The Pyro model, called as ``model_fn(*args, **kwargs)``.
    info : ModelInfo
        Its sites (:func:`~.tracing.inspect_model`).
    m_step_iter : int
        Most L-BFGS iterations per M-step.
    m_step_tol : float
        L-BFGS tolerance on the gradient (max-abs) of ``Q`` divided by ``max(1, |log Z|)``
        (the objective's size); the change tolerance is 1e-3 of it.
    fixed : sequence of str
        ``pyro.param`` names and continuous sites held at their start values.
    m_step : callable, optional
        A closed-form M-step the model declares: ``m_step(posterior, *args, **kwargs)``
        returns new (constrained) values by ``pyro.param`` or site name. ``posterior`` maps
        every enumerated site to the posterior marginal of its log-density factor, laid out
        as the site's ``log_prob`` under parallel enumeration (``TraceEnum_ELBO``'s layout:
        the site's own enumerated value and those it depends on on the left, at dims
        ``-max_plate_nesting - 1`` and further left, the plates on the right): for a
        mixture's ``assignment`` in a data plate, ``posterior["assignment"][k, n] =
        p(assignment_n = k | data)``; for an HMM's ``x_t``, the joint of ``x_t`` and
        ``x_{t-1}``. Values it does not return are maximised by L-BFGS.
    """

    def __init__(self, model_fn: Callable, args: tuple, kwargs: dict, info: ModelInfo, *,
                 m_step_iter: int = 100, m_step_tol: float = 1e-9,
                 fixed: Sequence[str] = (), m_step: Callable | None = None) -> None:
        self.model_fn = model_fn
        self.args = args
        self.kwargs = kwargs
        self.info = info
        self.m_step_iter = check_positive_int("m_step_iter", m_step_iter)
        self.m_step_tol = check_positive_float("m_step_tol", m_step_tol)
        self.fixed = tuple(fixed)
        if m_step is not None and not callable(m_step):
            raise bad_type("m_step", "a callable m_step(posterior, data, **model_kwargs) -> "
                           "dict of new values", type(m_step).__name__)
        self.closed_form = m_step
        self.first_dim = -info.max_plate_nesting - 1
        #: name -> unconstrained leaf tensor of each ``pyro.param`` (param store or module)
        self.params: dict[str, torch.Tensor] = {}
        #: name -> unconstrained leaf tensor of each MAP continuous site, and its transform
        self.sites: dict[str, torch.Tensor] = {}
        self.transforms: dict[str, Any] = {}
        self.dtype = torch.get_default_dtype()
        #: M-steps undone because L-BFGS did not increase Q (counted per fit)
        self.undone = 0
        self._started = False
        self._module_start: dict[str, torch.Tensor] = {}
        self._opt: torch.optim.LBFGS | None = None
        self._opt_names: list[str] = []

    # ------------------------------------------------------------------ tracing
    def _model(self) -> Callable:
        fn = self.model_fn
        if self.sites:
            values = {n: self.transforms[n](u) for n, u in self.sites.items()}
            fn = poutine.condition(fn, data=values)
        fn = poutine.infer_config(fn, config_fn=_parallel)
        return poutine.enum(fn, first_available_dim=self.first_dim)

    def _trace(self):
        trace = poutine.trace(self._model()).get_trace(*self.args, **self.kwargs)
        trace.compute_log_prob()
        trace.pack_tensors()
        return trace

    def _factors(self, trace):
        """The log-density factors of a packed trace: those that depend on an enumerated
        value ((name, ordinal, tensor): the enumerated sites unmasked, the others masked,
        all unscaled, as ``TraceEnum_ELBO`` builds them) with their common scale, and the
        others ((name, tensor): scaled and masked)."""
        sites = [(n, s) for n, s in trace.nodes.items()
                 if s["type"] == "sample" and not isinstance(s["fn"], _Subsample)]
        symbols = {s["infer"]["_enumerate_symbol"] for _, s in sites
                   if "_enumerate_symbol" in s["infer"]}
        coupled, other, scales = [], [], []
        for name, site in sites:
            p = site["packed"]
            if "_enumerate_symbol" in site["infer"]:
                coupled.append((name, _ordinal(trace, site), p["unscaled_log_prob"]))
            elif not symbols.isdisjoint(p["unscaled_log_prob"]._pyro_dims):
                coupled.append((name, _ordinal(trace, site),
                                packed.scale_and_mask(p["unscaled_log_prob"], mask=p["mask"])))
            else:
                other.append((name, p["log_prob"]))
                continue
            scales.append(site["scale"])
        values = {float(s) if not isinstance(s, torch.Tensor) or s.numel() == 1 else None
                  for s in scales}
        if len(values) > 1 or None in values:
            raise NotSupportedError(
                "model: expected one scale (poutine.scale) for all the sites that depend on "
                "an enumerated site, got several; EM sums the enumerated sites out exactly, "
                "which needs a common scale (as TraceEnum_ELBO does).")
        scale = values.pop() if values else 1.0
        return symbols, coupled, other, scale

    # ------------------------------------------------------------------ driver API
    def em_initialize(self, data: Any, *, init: dict[str, Any] | None, seed: int,
                      fixed: Sequence[str] = ()) -> None:
        """A start: the model's own ``pyro.param`` initial values (seeded), continuous sites
        at their prior median (the first restart) or a prior draw (the others), then the
        values in ``init``."""
        if fixed:
            self.fixed = tuple(fixed)
        self._opt = None  # a new start: no curvature memory
        store = pyro.get_param_store()
        store.clear()
        pyro.set_rng_seed(seed)
        init = dict(init or {})
        site_init = {k: v for k, v in init.items() if k in self.info.continuous}
        fallback = init_to_sample if self._started else init_to_median

        def init_fn(site: dict) -> torch.Tensor:
            template = fallback(site)
            if site["name"] not in site_init:
                return template
            value = torch.as_tensor(site_init[site["name"]])
            if tuple(value.shape) != tuple(template.shape):
                raise bad_value(f"init[{site['name']!r}]", "a value of the site's shape "
                                f"{tuple(template.shape)}", f"shape {tuple(value.shape)}")
            value = value.to(dtype=template.dtype, device=template.device)
            if not bool(site["fn"].support.check(value).all()):
                raise bad_value(f"init[{site['name']!r}]", f"a value in the site's support "
                                f"({site['fn'].support})", "values outside it")
            return value

        start = pyro.infer.autoguide.initialization.InitMessenger(init_fn)(self.model_fn)
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(start).get_trace(*self.args, **self.kwargs)
        self.params, self.sites, self.transforms = {}, {}, {}
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                value = site["value"]
                unconstrained = getattr(value, "unconstrained", None)
                leaf = unconstrained() if callable(unconstrained) else None
                if leaf is None:
                    raise bad_type("model", "pyro.param sites of the param store or of a "
                                   "PyroModule", f"param {name!r} without an unconstrained "
                                   "value")
                self.params[name] = leaf
            elif site["type"] == "sample" and name in self.info.continuous:
                transform = biject_to(site["fn"].support)
                self.transforms[name] = transform
                self.sites[name] = transform.inv(site["value"].detach()).clone()
        unknown = set(init) - set(self.params) - set(self.sites)
        if unknown:
            raise bad_value("init", "keys among the pyro.param names and continuous latent "
                            "sites " + ", ".join([*self.params, *self.sites]),
                            ", ".join(sorted(unknown)))
        unknown = set(self.fixed) - set(self.params) - set(self.sites)
        if unknown:
            raise bad_value("fixed", "names among the pyro.param names and continuous latent "
                            "sites " + ", ".join([*self.params, *self.sites]) + " (none)" *
                            (not self.params and not self.sites), ", ".join(sorted(unknown)))
        for name, value in init.items():
            if name in self.params:
                leaf = self.params[name]
                if name not in store:
                    raise bad_value("init", "start values of param-store parameters and "
                                    "continuous sites", f"{name!r}, a PyroModule parameter",
                                    "Set it on the module before the fit.")
                value = torch.as_tensor(value, dtype=leaf.dtype, device=leaf.device)
                shape = tuple(store[name].shape)
                if tuple(value.shape) != shape:
                    raise bad_value(f"init[{name!r}]", f"a value of the parameter's shape "
                                    f"{shape}", f"shape {tuple(value.shape)}")
                constraint = store._constraints[name]
                if not bool(constraint.check(value).all()):
                    raise bad_value(f"init[{name!r}]", f"a value in the parameter's support "
                                    f"({constraint})", "values outside it")
                u = transform_to(constraint).inv(value)  # the store's own transform
                with torch.no_grad():
                    leaf.copy_(u)
        # A PyroModule's parameters live on the module, not in the (cleared) param store:
        # every restart starts them from their values before the first.
        with torch.no_grad():
            for name, leaf in self.params.items():
                if name in store:
                    continue
                if self._started:
                    leaf.copy_(self._module_start[name])
                else:
                    self._module_start[name] = leaf.detach().clone()
        self._started = True
        for u in [*self.params.values(), *self.sites.values()]:
            u.requires_grad_(True)
        if self.params or self.sites:
            self.dtype = next(iter([*self.params.values(), *self.sites.values()])).dtype

    def get_state(self) -> dict[str, torch.Tensor]:
        return {n: u.detach().clone() for n, u in [*self.params.items(), *self.sites.items()]}

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                (self.params.get(name) if name in self.params else self.sites[name]).copy_(value)

    def _versions(self) -> tuple[int, ...]:
        """The in-place version counters of the unknowns: equal versions, equal values."""
        return tuple(u._version for u in [*self.params.values(), *self.sites.values()])

    def _free(self) -> list[str]:
        return [n for n in [*self.params, *self.sites] if n not in self.fixed]

    def e_step(self, data: Any) -> tuple[float, dict[str, Any]]:
        """``log Z`` at the current values and the posterior marginal of every factor that
        depends on an enumerated value.

        The trace keeps its graph to the unknowns when L-BFGS will need ``Q``'s gradient
        here: ``Q`` at the current values, the M-step's first evaluation, comes from the
        same trace (``stats["q"]``)."""
        graph = bool(self._free())
        with torch.set_grad_enabled(graph):
            trace = self._trace()
            symbols, coupled, other, scale = self._factors(trace)
            tree: OrderedDict = OrderedDict()
            terms = []
            for _, ordinal, term in coupled:
                if not graph:
                    dims, term = term._pyro_dims, term.detach().requires_grad_(True)
                    term._pyro_dims = dims
                tree.setdefault(ordinal, []).append(term)
                terms.append(term)
            with torch.enable_grad():
                log_z = contract_to_tensor(tree, set(symbols), target_ordinal=frozenset())
                marginals = [m.detach() for m in torch.autograd.grad(
                    log_z.sum(), terms, retain_graph=graph)]
            q = self._expected(marginals, coupled, other, scale) if graph else None
        rest = sum(float(t.detach().sum()) for _, t in other)
        total = scale * float(log_z.detach().sum()) + rest
        magnitude = scale * sum(float((m * t.detach().abs()).sum())
                                for m, (_, _, t) in zip(marginals, coupled, strict=True))
        magnitude += sum(float(t.detach().abs().sum()) for _, t in other)
        stats = {"marginals": marginals,
                 "names": [(n, tuple(t._pyro_dims), tuple(t.shape)) for n, _, t in coupled],
                 "objective_scale": magnitude, "log_z": total,
                 "q": None if q is None else (self._versions(), q)}
        if self.closed_form is not None:
            posterior = {}
            for m, (name, _, term) in zip(marginals, coupled, strict=True):
                if "_enumerate_symbol" in trace.nodes[name]["infer"]:
                    m = m.clone()
                    m._pyro_dims = term._pyro_dims
                    posterior[name] = packed.unpack(m, trace.symbol_to_dim)
            stats["posterior"] = posterior
        return total, stats

    @staticmethod
    def _expected(marginals, coupled, other, scale) -> torch.Tensor:
        total = sum(((m * t).sum() for m, (_, _, t) in zip(marginals, coupled, strict=True)),
                    torch.zeros(()))
        return scale * total + sum((t.sum() for _, t in other), torch.zeros(()))

    def _q(self, stats: dict[str, Any]) -> torch.Tensor:
        """The expected complete-data log joint at the current values (differentiable); the
        E-step's own when the values have not changed since (its graph is used once)."""
        cached = stats.get("q")
        if cached is not None and cached[0] == self._versions():
            stats["q"] = None
            return cached[1]
        trace = self._trace()
        _, coupled, other, scale = self._factors(trace)
        names = [(n, tuple(t._pyro_dims), tuple(t.shape)) for n, _, t in coupled]
        if names != stats["names"]:
            raise NotSupportedError(
                "model: expected the same sites, plates and enumerated dimensions in every "
                "trace, got a different structure after the parameters changed; EM needs a "
                "model whose structure does not depend on its parameter values.")
        return self._expected(stats["marginals"], coupled, other, scale)

    def _flat(self) -> torch.Tensor:
        return torch.cat([u.detach().reshape(-1) for u in [*self.params.values(),
                                                            *self.sites.values()]])

    def _q_value(self, stats: dict[str, Any], seen: list) -> float:
        """``Q`` at the current values as a number: the value L-BFGS found there (the last
        few evaluations are kept, by their exact values: L-BFGS ends by stepping back to
        the point of its last accepted evaluation), else a new evaluation without
        gradient."""
        cached = stats.get("q")
        if cached is not None and cached[0] == self._versions():
            return float(cached[1].detach())
        flat = self._flat()
        for values, q in reversed(seen):
            if torch.equal(values, flat):
                return q
        with torch.no_grad():
            q = float(self._q(stats))
        seen.append((flat, q))
        return q

    def m_step(self, data: Any, stats: dict[str, Any]) -> None:
        names = self._free()
        if not names:
            return
        before = self.get_state()
        seen: list[tuple[torch.Tensor, float]] = []  # Q at the last values L-BFGS evaluated
        q_old = self._q_value(stats, seen)
        if self.closed_form is not None:
            names = [n for n in names if n not in self._closed_form_step(stats)]
        if names:
            self._lbfgs(stats, names, seen)
        q_new = self._q_value(stats, seen)
        stats["q"] = None  # the E-step's graph is not needed any more
        if not q_new >= q_old:  # also NaN: no step that increases Q was found
            self.set_state(before)
            self.undone += 1

    def _closed_form_step(self, stats: dict[str, Any]) -> set[str]:
        """Set the values the model's closed-form M-step returns; their names."""
        assert self.closed_form is not None
        new = self.closed_form(stats["posterior"], *self.args, **self.kwargs)
        if not isinstance(new, dict):
            raise bad_type("m_step", "a function returning a dict of new values by name",
                           f"one returning {type(new).__name__}")
        known = [n for n in [*self.params, *self.sites] if n not in self.fixed]
        unknown = set(new) - set(known)
        if unknown:
            raise bad_value("m_step", "a dict with keys among the free pyro.param names and "
                            "continuous sites " + ", ".join(known), ", ".join(sorted(unknown)))
        store = pyro.get_param_store()
        with torch.no_grad():
            for name, value in new.items():
                leaf = self.params.get(name, self.sites.get(name))
                assert leaf is not None
                value = torch.as_tensor(value, dtype=leaf.dtype, device=leaf.device)
                if name in self.sites:
                    u = self.transforms[name].inv(value)
                elif name in store:
                    u = transform_to(store._constraints[name]).inv(value)
                else:
                    raise bad_value("m_step", "new values of param-store parameters and "
                                    "continuous sites", f"{name!r}, a PyroModule parameter")
                if u.shape != leaf.shape:
                    raise bad_value(f"m_step()[{name!r}]", "a value of the parameter's shape",
                                    f"shape {tuple(value.shape)}")
                leaf.copy_(u)
        return set(new)

    def _lbfgs(self, stats: dict[str, Any], names: list[str], seen: list) -> None:
        free = [self.params[n] if n in self.params else self.sites[n] for n in names]
        norm = max(1.0, abs(stats["log_z"]))
        opt = self._opt
        if opt is None or self._opt_names != names:
            opt = torch.optim.LBFGS(free, lr=1.0, max_iter=self.m_step_iter,
                                    tolerance_grad=self.m_step_tol,
                                    tolerance_change=1e-3 * self.m_step_tol, history_size=20,
                                    line_search_fn="strong_wolfe")
            self._opt, self._opt_names = opt, names
        else:
            # Warm start: the curvature pairs of the previous M-steps' Q (a close function)
            # stay; a zero last step keeps the pair that would mix the two Qs out.
            state = opt.state[opt._params[0]]
            if "t" in state:
                state["t"] = 0.0

        def closure() -> torch.Tensor:
            opt.zero_grad()
            q = self._q(stats)
            seen.append((self._flat(), float(q.detach())))
            del seen[:-4]
            loss = -q / norm
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        for u in [*self.params.values(), *self.sites.values()]:
            u.grad = None

    # ------------------------------------------------------------------ results
    def point_estimates(self) -> dict[str, torch.Tensor]:
        """Constrained values: the MAP sites, and the ``pyro.param`` values by name."""
        out = {n: self.transforms[n](u).detach().clone() for n, u in self.sites.items()}
        with torch.no_grad(), poutine.block():
            trace = poutine.trace(self._model()).get_trace(*self.args, **self.kwargs)
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                out[name] = site["value"].detach().clone()
        return out
