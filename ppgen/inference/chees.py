"""ChEES-HMC: all chains in lock-step, one jittered trajectory length adapted on the ChEES
criterion (Hoffman, Radul & Sountsov 2021, "An Adaptive MCMC Scheme for Setting Trajectory
Lengths in Hamiltonian Monte Carlo", AISTATS; as TFP's ``ChEESAdaptation`` and BlackJAX's
``chees_adaptation``).

Building blocks, each a pure function or a small state object, then the runner:

- :func:`hmc_step`: one HMC transition of every chain, ``num_steps`` leapfrog steps shared by
  all chains, a Metropolis correction per chain; returns the new state and what the step
  learned (:class:`StepInfo`: acceptance, divergence, energy, the proposal).
- :class:`DualAveraging`: the step size, on the harmonic mean of the chains' acceptance
  probabilities (divergent chains left out), target 0.651 (the paper's).
- :class:`TrajectoryAdam`: log T by Adam on the acceptance-weighted ChEES gradient
  (:func:`chees_gradient`), averaged with weights t^-1/2 for the sampling phase.
- :func:`mass_windows`: Stan's warm-up windows; at the end of each the diagonal inverse
  mass matrix becomes the variance of the window's draws pooled over chains.
- :func:`sample_chees`: warm-up and sampling, seeded by one ``torch.Generator``.

The number of leapfrog steps of an iteration is ``ceil(u * T / step_size)`` (at least 1, at
most ``max_num_steps``), with ``u`` the van der Corput (base-2 Halton) sequence shifted by a
seeded random offset. A chain whose energy error exceeds :data:`DIVERGENCE` (or is not
finite) is divergent: it keeps its old state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .._distributed import is_main_process
from .._progress import progress_bar, progress_enabled

__all__ = ["StepInfo", "hmc_step", "DualAveraging", "TrajectoryAdam", "chees_gradient",
           "mass_windows", "halton", "initial_step_size", "sample_chees", "DIVERGENCE",
           "TARGET_ACCEPT"]

#: Energy error above which a transition is divergent.
DIVERGENCE = 1000.0
#: The ChEES paper's target for the harmonic mean of the acceptance probabilities.
TARGET_ACCEPT = 0.651

Potential = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StepInfo:
    """What one lock-step HMC transition learned, per chain (shape (num_chains,) unless
    said): acceptance probability, divergence, the Hamiltonian of the kept state, and the
    proposal (positions and final momenta, (num_chains, dim)) the ChEES gradient needs."""

    acceptance: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor
    proposal: torch.Tensor
    momentum: torch.Tensor
    num_steps: int
    step_size: float


def halton(index: int, base: int = 2) -> float:
    """The ``index``-th element (from 1) of the van der Corput sequence in ``base``."""
    out, f = 0.0, 1.0
    while index > 0:
        f /= base
        out += f * (index % base)
        index //= base
    return out


def hmc_step(potential: Potential, position: torch.Tensor, energy: torch.Tensor,
             grad: torch.Tensor, *, step_size: float, inv_mass: torch.Tensor, num_steps: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                   StepInfo]:
    """One HMC transition of every chain: momenta ~ N(0, diag(1 / inv_mass)), ``num_steps``
    leapfrog steps of size ``step_size``, accept per chain. ``position`` (C, D), its
    potential ``energy`` (C,) and ``grad`` (C, D); returns the new three and a StepInfo."""
    momentum = torch.randn(position.shape, generator=generator, dtype=position.dtype,
                           device=position.device) / inv_mass.sqrt()
    h0 = energy + 0.5 * (inv_mass * momentum ** 2).sum(-1)
    q, g = position, grad
    p = momentum - 0.5 * step_size * g
    u = energy
    for i in range(num_steps):
        q = q + step_size * inv_mass * p
        u, g = potential(q)
        if i + 1 < num_steps:
            p = p - step_size * g
    p = p - 0.5 * step_size * g
    h1 = u + 0.5 * (inv_mass * p ** 2).sum(-1)
    delta = (h1 - h0).nan_to_num(nan=math.inf)
    acceptance = torch.exp(torch.clamp(-delta, max=0.0))
    diverging = delta > DIVERGENCE
    uniform = torch.rand(acceptance.shape, generator=generator, dtype=acceptance.dtype,
                         device=acceptance.device)
    accept = (uniform < acceptance) & ~diverging
    keep = accept[:, None]
    info = StepInfo(acceptance=acceptance, diverging=diverging,
                    energy=torch.where(accept, h1, h0), proposal=q, momentum=p,
                    num_steps=num_steps, step_size=step_size)
    return (torch.where(keep, q, position), torch.where(accept, u, energy),
            torch.where(keep, g, grad), info)


def initial_step_size(potential: Potential, position: torch.Tensor, energy: torch.Tensor,
                      grad: torch.Tensor, inv_mass: torch.Tensor, generator: torch.Generator,
                      step_size: float = 1.0) -> float:
    """Stan's heuristic over all chains: double or halve the step size until the chains'
    mean acceptance of one leapfrog step crosses 1/2."""
    momentum = torch.randn(position.shape, generator=generator, dtype=position.dtype,
                           device=position.device) / inv_mass.sqrt()
    h0 = energy + 0.5 * (inv_mass * momentum ** 2).sum(-1)

    def mean_accept(eps: float) -> float:
        p = momentum - 0.5 * eps * grad
        q = position + eps * inv_mass * p
        u, g = potential(q)
        p = p - 0.5 * eps * g
        delta = (u + 0.5 * (inv_mass * p ** 2).sum(-1) - h0).nan_to_num(nan=math.inf)
        return float(torch.exp(torch.clamp(-delta, max=0.0)).mean())

    up = mean_accept(step_size) > 0.5
    for _ in range(100):
        new = step_size * 2.0 if up else step_size / 2.0
        if (mean_accept(new) > 0.5) != up:
            return step_size if up else new
        step_size = new
    return step_size


class DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman & Gelman 2014, Stan's constants):
    :meth:`update` with an acceptance statistic, :attr:`step_size` to use next,
    :attr:`final` (the averaged iterate) after warm-up."""

    def __init__(self, step_size: float, target: float, *, gamma: float = 0.05,
                 t0: float = 10.0, kappa: float = 0.75):
        self.mu = math.log(10.0 * step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.t = 0
        self.h_bar = 0.0
        self.log_step = math.log(step_size)
        self.log_step_bar = math.log(step_size)

    @property
    def step_size(self) -> float:
        return math.exp(self.log_step)

    @property
    def final(self) -> float:
        return math.exp(self.log_step_bar)

    def update(self, accept_stat: float) -> None:
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1.0 - w) * self.h_bar + w * (self.target - accept_stat)
        self.log_step = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** -self.kappa
        self.log_step_bar = eta * self.log_step + (1.0 - eta) * self.log_step_bar


class TrajectoryAdam:
    """Adam ascent on log T (the ChEES gradient with respect to log T), the iterate averaged
    with weights t^-decay (:attr:`final`), T kept within [min_length, max_length]."""

    def __init__(self, length: float, *, lr: float = 0.025, beta1: float = 0.0,
                 beta2: float = 0.95, decay: float = 0.5):
        self.log_length = math.log(length)
        self.log_length_bar = self.log_length
        self.lr, self.beta1, self.beta2, self.decay = lr, beta1, beta2, decay
        self.m = self.v = 0.0
        self.t = 0

    @property
    def length(self) -> float:
        return math.exp(self.log_length)

    @property
    def final(self) -> float:
        return math.exp(self.log_length_bar)

    def update(self, gradient: float, min_length: float, max_length: float) -> None:
        if not math.isfinite(gradient):
            return
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * gradient
        self.v = self.beta2 * self.v + (1 - self.beta2) * gradient ** 2
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        self.log_length += self.lr * m_hat / (math.sqrt(v_hat) + 1e-8)
        self.log_length = min(max(self.log_length, math.log(min_length)), math.log(max_length))
        w = self.t ** -self.decay
        self.log_length_bar = (1 - w) * self.log_length_bar + w * self.log_length


def chees_gradient(initial: torch.Tensor, info: StepInfo, inv_mass: torch.Tensor) -> float:
    """The acceptance-weighted ChEES gradient with respect to log T, in the coordinates the
    mass matrix whitens: per chain ``t * (|x' - mean x'|^2 - |x - mean x|^2) * (x' - mean
    x') . v'`` with ``t`` the integration time, ``x`` the start and ``x'`` the proposal,
    ``v'`` its velocity; divergent (or non-finite) chains get weight 0."""
    ok = ~info.diverging & torch.isfinite(info.proposal).all(-1) & \
        torch.isfinite(info.momentum).all(-1)
    if int(ok.sum()) < 2:
        return math.nan
    q1, p1, q0 = info.proposal[ok], info.momentum[ok], initial[ok]
    w = info.acceptance[ok]
    c1 = q1 - q1.mean(0)
    c0 = q0 - q0.mean(0)
    spread = (c1 ** 2 / inv_mass).sum(-1) - (c0 ** 2 / inv_mass).sum(-1)
    time = info.num_steps * info.step_size
    grads = time * spread * (c1 * p1).sum(-1)
    if float(w.sum()) <= 0:
        return math.nan
    return float((w * grads).sum() / w.sum())


def mass_windows(num_warmup: int, *, init_buffer: int = 75, term_buffer: int = 50,
                 base_window: int = 25) -> list[tuple[int, int]]:
    """Stan's warm-up windows ``[(start, end), ...]`` (iteration indices, end exclusive) at
    whose ends the mass matrix is updated: a fast initial buffer, windows doubling in length,
    a final buffer where only the step size and T adapt. Below 150 iterations: 15 % initial
    buffer, one window, and a final buffer of at least 20 iterations (the step size adapts
    afresh after the last update); no window below 100 iterations (the mass matrix stays
    the identity)."""
    if num_warmup < 100:
        return []
    if init_buffer + base_window + term_buffer > num_warmup:
        init_buffer = int(0.15 * num_warmup)
        term_buffer = max(int(0.1 * num_warmup), 20)
        base_window = num_warmup - init_buffer - term_buffer
    end = num_warmup - term_buffer
    windows = []
    start, size = init_buffer, base_window
    while start < end:
        stop = start + size
        if stop + 2 * size > end:  # the next window would not fit: this one takes the rest
            stop = end
        windows.append((start, stop))
        start, size = stop, 2 * size
    return windows


class _Welford:
    """Running mean and variance per coordinate of rows (num_chains, dim) pooled."""

    def __init__(self, dim: int, like: torch.Tensor):
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=like.device)
        self.m2 = torch.zeros(dim, dtype=torch.float64, device=like.device)

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.to(torch.float64)
        k = rows.shape[0]
        batch_mean = rows.mean(0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(0)
        total = self.n + k
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * k / total
        self.m2 = self.m2 + batch_m2 + delta ** 2 * self.n * k / total
        self.n = total

    def variance(self) -> torch.Tensor:
        """Stan's regularised variance: shrunk towards 1e-3 with the weight of 5 draws."""
        var = self.m2 / max(self.n - 1, 1)
        return (self.n / (self.n + 5.0)) * var + 1e-3 * (5.0 / (self.n + 5.0))


def sample_chees(potential: Potential, init: torch.Tensor, *, num_warmup: int,
                 num_samples: int, seed: int, target_accept_prob: float = TARGET_ACCEPT,
                 max_num_steps: int = 1024, progress: bool = False) -> dict:
    """Warm up and sample all chains with ChEES-HMC.

    Parameters
    ----------
    potential : callable
        ``q (num_chains, dim) -> (U (num_chains,), grad U (num_chains, dim))``.
    init : Tensor of shape (num_chains, dim)
        Start positions (unconstrained, finite potential).
    num_warmup, num_samples : int
        Adaptation iterations and kept draws (every chain).
    seed : int
        Seeds the one ``torch.Generator`` all randomness comes from.
    target_accept_prob : float
        Target of the harmonic mean of the chains' acceptance probabilities.
    max_num_steps : int
        Most leapfrog steps per iteration.

    Returns
    -------
    dict
        ``"draws"``: Tensor (num_chains, num_samples, dim); ``"sample_stats"``: arrays
        (num_chains, num_samples) ``acceptance_rate``, ``step_size``, ``n_steps``,
        ``diverging``, ``energy``, ``lp``; ``"step_size"``, ``"trajectory_length"``,
        ``"inv_mass"`` (the adapted values); ``"warmup_divergences"``.
    """
    generator = torch.Generator(device=init.device)
    generator.manual_seed(int(seed))
    num_chains, dim = init.shape
    position = init.detach().clone()
    energy, grad = potential(position)
    inv_mass = torch.ones(dim, dtype=init.dtype, device=init.device)
    step_size = initial_step_size(potential, position, energy, grad, inv_mass, generator)
    averaging = DualAveraging(step_size, target_accept_prob)
    trajectory = TrajectoryAdam(step_size)
    windows = {end: start for start, end in mass_windows(num_warmup)}
    starts = set(windows.values())
    welford: _Welford | None = None
    offset = float(torch.rand((), generator=generator, dtype=torch.float64))
    draws = torch.empty((num_samples, num_chains, dim), dtype=init.dtype, device=init.device)
    stats = {k: np.empty((num_samples, num_chains), dtype=dt) for k, dt in (
        ("acceptance_rate", np.float64), ("step_size", np.float64), ("n_steps", np.int64),
        ("diverging", bool), ("energy", np.float64), ("lp", np.float64))}
    warmup_divergences = 0
    bar = progress_bar(num_warmup + num_samples, desc="ChEES warm-up",
                       enabled=progress_enabled(progress) and is_main_process())
    with bar:
        for it in range(num_warmup + num_samples):
            warm = it < num_warmup
            if it == num_warmup:
                step_size = averaging.final
                length = trajectory.final
                bar.set_description("ChEES sampling", refresh=False)
            elif warm:
                step_size = averaging.step_size
                length = trajectory.length
            jitter = (halton(it + 1) + offset) % 1.0
            num_steps = int(min(max(math.ceil(jitter * length / step_size), 1), max_num_steps))
            start_position = position
            position, energy, grad, info = hmc_step(
                potential, position, energy, grad, step_size=step_size, inv_mass=inv_mass,
                num_steps=num_steps, generator=generator)
            if warm:
                warmup_divergences += int(info.diverging.sum())
                ok = ~info.diverging
                if bool(ok.any()):
                    harmonic = float(1.0 / (1.0 / info.acceptance[ok].clamp_min(1e-10)).mean())
                else:
                    harmonic = 0.0
                averaging.update(harmonic)
                trajectory.update(chees_gradient(start_position, info, inv_mass),
                                  min_length=averaging.step_size,
                                  max_length=max_num_steps * averaging.step_size)
                if it in starts:
                    welford = _Welford(dim, position)
                if welford is not None:
                    welford.add(position)
                if it + 1 in windows and welford is not None:
                    inv_mass = welford.variance().to(init.dtype)
                    welford = None
                    step_size = initial_step_size(potential, position, energy, grad, inv_mass,
                                                  generator, averaging.step_size)
                    averaging = DualAveraging(step_size, target_accept_prob)
            else:
                s = it - num_warmup
                draws[s] = position
                stats["acceptance_rate"][s] = info.acceptance.double().cpu().numpy()
                stats["step_size"][s] = step_size
                stats["n_steps"][s] = num_steps
                stats["diverging"][s] = info.diverging.cpu().numpy()
                stats["energy"][s] = info.energy.double().cpu().numpy()
                stats["lp"][s] = (-energy).double().cpu().numpy()
            bar.update(1)
            if it % 20 == 0:
                bar.set_postfix(step_size=f"{step_size:.3g}", steps=num_steps, refresh=False)
    return {"draws": draws.transpose(0, 1).contiguous(),
            "sample_stats": {k: v.T.copy() for k, v in stats.items()},
            "step_size": averaging.final if num_warmup else step_size,
            "trajectory_length": trajectory.final,
            "inv_mass": inv_mass, "warmup_divergences": warmup_divergences}
