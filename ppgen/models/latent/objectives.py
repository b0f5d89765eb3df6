"""Training objectives of the VAE family, computed directly in torch (no Pyro trace).

:class:`VAEObjective` implements :class:`ppgen.training.Objective` (``init`` + ``step`` over
a :class:`~ppgen.training.TrainState`) for any model of this family (``encoder``,
``decoder``, ``likelihood`` and ``_conditions``). One step costs one encoder and one decoder
pass over the minibatch (times the particles), the backward pass, and
:func:`~ppgen.training.guarded_update` (clipping and the non-finite guard: one host sync).

The bounds, per datum x with q(z | x) = Normal(loc, diag(scale^2)) and p(z) = Normal(0, I):

ELBO (``iwae=False``)
    E_q[log p(x | z)] - KL(q(z | x) || p(z)), the expectation estimated with ``num_particles``
    reparameterised draws and the Gaussian KL in closed form,
    KL = sum_j (loc_j^2 + scale_j^2 - 1) / 2 - log scale_j.
IWAE (``iwae=True``, Burda et al. 2016)
    log (1/k) sum_i w_i with w_i = p(x | z_i) p(z_i) / q(z_i | x), k = ``num_particles``
    draws; a tighter bound for k > 1 (equal to the ELBO in expectation for k = 1).
DReG (``dreg=True``, with ``iwae=True``; Tucker et al. 2019)
    the same IWAE bound with doubly reparameterised encoder gradients,
    sum_i w~_i^2 d log w_i / d z_i  d z_i / d phi (w~ the normalised weights, log q with its
    parameters held fixed), which, unlike the plain IWAE gradient, does not lose its
    signal-to-noise ratio as k grows. The decoder's gradient is IWAE's.

KL warm-up (``kl_warmup`` = W > 0) multiplies the KL (ELBO), or log p(z) - log q(z) inside
the log-weights (IWAE), by beta = min(1, (step + 1) / W) during the first W steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..._distributed import randn_rows
from ..._random import seeded
from ..._validation import (
    bad_type,
    bad_value,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ...training import Batch, TrainState, guarded_update, make_adam
from .likelihoods import log_lik

__all__ = ["VAEObjective", "gaussian_kl", "elbo_per_datum"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: Rows per forward pass in ``evaluate`` and ``elbo_per_datum``.
_EVAL_ROWS = 4096


def gaussian_kl(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(Normal(loc, diag(scale^2)) || Normal(0, I)) summed over the last axis (..., L) ->
    (...)."""
    return (0.5 * (loc.square() + scale.square() - 1) - scale.log()).sum(-1)


def _flat(model: Any, x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1)
    if x.dtype != model.dtype:
        x = x.to(model.dtype)
    return x


def _terms(model: Any, x: torch.Tensor, cond: tuple[torch.Tensor, ...], num_particles: int,
           *, iwae: bool, dreg: bool, beta: float) -> tuple[torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
    """Surrogate loss to minimise (0-d), the bound per datum at beta = 1 (B,), detached, and
    the KL term per datum (B,), detached (analytic for the ELBO; the mean of log q - log p
    over the draws for IWAE)."""
    loc, scale = model.encoder(x, *cond)
    if not iwae:
        # One draw: no particle axis (3-D activations cost more in the backward pass).
        shape = loc.shape if num_particles == 1 else (num_particles, *loc.shape)
        # randn_rows: in a data-parallel step each row gets the noise it gets in one process
        z = loc + scale * randn_rows(shape, 0 if num_particles == 1 else 1, dtype=loc.dtype,
                                     device=loc.device)
        rec = _log_lik(model, z, x, cond)
        if num_particles > 1:
            rec = rec.mean(0)
        kl = gaussian_kl(loc, scale)
        bound = rec - kl
        surrogate = -(bound if beta == 1.0 else rec - beta * kl).mean()
        return surrogate, bound.detach(), kl.detach()
    eps = randn_rows((num_particles, *loc.shape), 1, dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps  # (K, B, L)
    rec = _log_lik(model, z, x, cond)  # (K, B)
    log_pz = (-0.5 * z.square() - _HALF_LOG_2PI).sum(-1)
    if dreg:
        loc_d, scale_d = loc.detach(), scale.detach()
        log_qz = (-0.5 * ((z - loc_d) / scale_d).square() - scale_d.log()
                  - _HALF_LOG_2PI).sum(-1)
    else:
        log_qz = (-0.5 * eps.square() - scale.log() - _HALF_LOG_2PI).sum(-1)
    log_ratio = log_pz - log_qz
    log_w = rec + beta * log_ratio
    log_k = math.log(num_particles)
    if dreg:
        w = torch.softmax(log_w.detach(), 0)  # normalised weights (K, B)
        # Encoder gradients reach phi only through z: scale them by w~ once more (w~^2).
        if z.requires_grad:
            z.register_hook(lambda g: g * w.unsqueeze(-1))
        surrogate = -(w * log_w).sum(0).mean()
    else:
        surrogate = -(torch.logsumexp(log_w, 0) - log_k).mean()
    with torch.no_grad():
        log_w1 = log_w if beta == 1.0 else rec + log_ratio
        bound = torch.logsumexp(log_w1, 0) - log_k
        kl = -log_ratio.mean(0)
    return surrogate, bound, kl


def _log_lik(model: Any, z: torch.Tensor, x: torch.Tensor,
             cond: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return log_lik(model.likelihood, model.decoder(z, *cond), x)


def elbo_per_datum(model: Any, x: torch.Tensor, cond: tuple[torch.Tensor, ...] = (), *,
                   num_particles: int = 1) -> torch.Tensor:
    """The ELBO of each row (B,) in nats (analytic KL, ``num_particles`` draws; global RNG),
    without gradients, in chunks of rows."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], _EVAL_ROWS):
            rows = slice(start, start + _EVAL_ROWS)
            _, bound, _ = _terms(model, x[rows], tuple(c[rows] for c in cond), num_particles,
                                 iwae=False, dreg=False, beta=1.0)
            out.append(bound)
    return torch.cat(out)


class VAEObjective:
    """ELBO / IWAE / DReG training of a VAE-family model (module docstring).

    Parameters
    ----------
    lr : float
        Adam's learning rate.
    lr_decay : float
        Factor in (0, 1] by which the learning rate decays over ``total_steps`` (exponentially:
        ``lr * lr_decay ** (step / total_steps)``); 1 keeps it constant.
    clip_norm : float, optional
        Clip the total gradient norm to this value (None: no clipping; non-finite steps are
        skipped either way).
    num_particles : int
        Draws of z per datum (k of the IWAE bound).
    iwae : bool
        Train the importance-weighted bound instead of the ELBO.
    dreg : bool
        Doubly reparameterised encoder gradients for the IWAE bound (needs ``iwae=True``).
    kl_warmup : int
        Steps of linear KL warm-up (0: none).
    total_steps : int, optional
        Steps of the whole run, needed when ``lr_decay < 1``.
    betas : tuple of float
        Adam's moment decay rates.

    Notes
    -----
    ``step`` returns ``{"loss", "grad_norm", "kl", "beta", "lr"}``: ``loss`` is the negative
    bound being trained (ELBO or IWAE-k, at beta = 1 also during warm-up) per datum in nats,
    averaged over the minibatch (a 0-d tensor, detached); ``kl`` the mean KL term per datum;
    ``beta`` the warm-up weight of this step; ``lr`` the learning rate this step used.

    ``evaluate(model, state, data)`` returns ``{"val_elbo": ...}``, the mean ELBO per datum in
    nats on validation data (one draw per datum with fixed noise, seed 0, so values at
    different steps are comparable); early stopping watches it (``monitor = "val_elbo"``,
    ``monitor_mode = "max"``).

    Examples
    --------
    >>> import torch, ppgen
    >>> from ppgen.training import Batch
    >>> x = (torch.rand(64, 6) < 0.5).float()
    >>> vae = ppgen.VAE(6, latent_dim=2, hidden_dims=(8,))
    >>> obj = vae.default_objective(lr=1e-2)
    >>> state = obj.init(vae, Batch(x, None, 64), seed=0)
    >>> sorted(obj.step(vae, state, Batch(x, None, 64)))
    ['beta', 'grad_norm', 'kl', 'loss', 'lr']
    """

    monitor = "val_elbo"
    #: Trains across processes (ppgen._distributed): the noise of each row is the one it gets
    #: in one process (randn_rows) and guarded_update sums the ranks' gradients.
    supports_data_parallel = True
    monitor_mode = "max"

    def __init__(self, *, lr: float = 1e-3, lr_decay: float = 1.0,
                 clip_norm: float | None = None, num_particles: int = 1, iwae: bool = False,
                 dreg: bool = False, kl_warmup: int = 0, total_steps: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.lr = check_positive_float("lr", lr)
        self.lr_decay = check_positive_float("lr_decay", lr_decay)
        if self.lr_decay > 1:
            raise bad_value("lr_decay", "a factor in (0, 1]", lr_decay,
                            "Use 1.0 for a constant learning rate.")
        self.clip_norm = None if clip_norm is None else check_positive_float("clip_norm",
                                                                             clip_norm)
        self.num_particles = check_positive_int("num_particles", num_particles)
        for name, flag in (("iwae", iwae), ("dreg", dreg)):
            if not isinstance(flag, bool):
                raise bad_type(name, "True or False", repr(flag))
        if dreg and not iwae:
            raise bad_value("dreg", "dreg=True together with iwae=True (DReG is a gradient "
                            "estimator of the importance-weighted bound)", "iwae=False",
                            "Pass iwae=True (with num_particles=1 DReG is the "
                            "sticking-the-landing gradient of the ELBO).")
        self.iwae, self.dreg = iwae, dreg
        self.kl_warmup = check_positive_int("kl_warmup", kl_warmup, minimum=0)
        self.total_steps = None if total_steps is None else check_positive_int("total_steps",
                                                                               total_steps)
        if self.lr_decay < 1 and self.total_steps is None:
            raise bad_value("total_steps", "the number of steps of the run (the learning rate "
                            "decays to lr * lr_decay over them)", "None",
                            "Pass total_steps=num_steps, or lr_decay=1.0.")
        if not (isinstance(betas, tuple | list) and len(betas) == 2
                and all(0 <= check_nonnegative_float("betas", b) < 1 for b in betas)):
            raise bad_value("betas", "two numbers in [0, 1)", repr(betas))
        self.betas = (float(betas[0]), float(betas[1]))

    def __repr__(self) -> str:
        return (f"VAEObjective(lr={self.lr:g}, lr_decay={self.lr_decay:g}, "
                f"clip_norm={self.clip_norm}, num_particles={self.num_particles}, "
                f"iwae={self.iwae}, dreg={self.dreg}, kl_warmup={self.kl_warmup}, "
                f"total_steps={self.total_steps})")

    # ------------------------------------------------------------------------ protocol
    def init(self, model: Any, batch: Batch, seed: int) -> TrainState:
        """One Adam over every parameter of the model (all its parameter groups) and an
        exponential learning-rate schedule; the networks are put in training mode. A model
        that was never trained (``not model.is_fitted``) first redraws the weights of the
        networks it built itself from ``seed`` (the global random state is restored), so the
        same seed gives the same fit; a trained or loaded model, and networks passed in by
        the user, keep their weights."""
        if not model.is_fitted:
            model.reset_networks(seed)
        model.train()
        params = [p for group in model.parameter_groups().values() for p in group]
        if not params:
            raise bad_value("model", "a model with trainable parameters", "none")
        optimizer = make_adam(params, lr=self.lr, betas=self.betas)
        gamma = self.lr_decay ** (1.0 / self.total_steps) if self.lr_decay < 1 else 1.0
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        return TrainState(params={"model": params}, optimizers={"model": optimizer},
                          schedulers={"model": scheduler})

    def _beta(self, step: int) -> float:
        if self.kl_warmup == 0:
            return 1.0
        return min(1.0, (step + 1) / self.kl_warmup)

    def step(self, model: Any, state: TrainState, batch: Batch) -> dict[str, Any]:
        """One Adam step on the minibatch's negative bound (class docstring, Notes)."""
        x = _flat(model, batch.data)
        cond = model._conditions(batch.kwargs, x)
        beta = self._beta(state.step)
        surrogate, bound, kl = _terms(model, x, cond, self.num_particles, iwae=self.iwae,
                                      dreg=self.dreg, beta=beta)
        surrogate.backward()
        optimizer = state.optimizers["model"]
        lr = optimizer.param_groups[0]["lr"]
        norm = guarded_update(optimizer, state.params["model"], self.clip_norm)
        if self.lr_decay < 1:
            state.schedulers["model"].step()
        if state.step == 0:
            model.mark_fitted()
        return {"loss": -bound.mean(), "grad_norm": norm, "kl": kl.mean(), "beta": beta,
                "lr": lr}

    def evaluate(self, model: Any, state: TrainState | None, data: Any) -> dict[str, float]:
        """Mean ELBO per datum in nats on ``data`` (class docstring, Notes).

        Parameters
        ----------
        data : Tensor of shape (N, ...), a data source with ``take``, or a Batch
            A :class:`~ppgen.training.Batch` carries model keyword arguments (the labels of a
            conditional VAE) in ``kwargs``. A data source (e.g.
            :class:`ppgen.datasets.DynamicBinarized`) is drawn once with seed 0.
        """
        kwargs: dict[str, Any] = {}
        if isinstance(data, Batch):
            data, kwargs = data.data, data.kwargs
        with seeded(0):
            if hasattr(data, "take") and not isinstance(data, torch.Tensor):
                generator = torch.Generator(device=model.device).manual_seed(0)
                data = data.take(torch.arange(len(data)), generator)
            x = _flat(model, torch.as_tensor(data).to(model.device))
            cond = model._conditions(kwargs, x)
            value = elbo_per_datum(model, x, cond).mean()
        return {"val_elbo": float(value)}
