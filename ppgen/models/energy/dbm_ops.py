"""Pure functions of a binary deep Boltzmann machine with two or three hidden layers
(Salakhutdinov & Hinton 2009).

Layers x_0 = v (D units), x_1 = h1, ..., x_L = hL (L = 2 or 3), joined by ``weights``
W_0 (D, H1), W_1 (H1, H2)[, W_2 (H2, H3)] (the model's ``weights_0``, ``weights_1``,
``weights_2``), with ``biases`` b_0 = b (D) (``visible_bias``) and b_k (H_k) for k >= 1
(``hidden_bias_{k-1}``). The energy::

    E(x) = -sum_k x_k.b_k - sum_l x_l W_l x_{l+1}

    L = 2:  E = -v.b - h1.c1 - h2.c2 - v W1 h1 - h1 W2 h2
    L = 3:  E = -v.b - h1.c1 - h2.c2 - h3.c3 - v W1 h1 - h1 W2 h2 - h2 W3 h3

Each layer talks only to its neighbours, so the odd layers (h1, and h3 when L = 3) are
conditionally independent given the even ones (v, h2) and the other way round: block Gibbs
alternates the two groups, and the odd layers sum out in closed form,

    log f(v, h2) = v.b + h2.c2 + sum_{odd k} sum_j softplus(act_kj),
    act_k = b_k + x_{k-1} W_{k-1} + x_{k+1} W_k^T        (the last term only when k < L).

AIS runs over the even layers (v, h2) with the odd ones summed out (Salakhutdinov & Hinton
2009): the path from the base model (visible base rates a, no weights, every hidden unit
uniform) to the DBM,

    log f_beta(v, h2) = (1 - beta) v.a + beta (v.b + h2.c2)
                        + sum_{odd k} sum_j softplus(beta act_kj),

log Z_0 = sum softplus(a) + (H1 + ... + HL) log 2, with the block-Gibbs sweep odd layers |
(v, h2), then (v, h2) | odd layers, all at inverse temperature beta (the visible activation
(1 - beta) a + beta act_0), as the transition (reversible for f_beta).

The functions take ``weights`` (a sequence of L tensors) and ``biases`` (L + 1 tensors,
the visible one first); ``states`` are lists of L + 1 entries, one per layer (None where a
layer is not needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .ais import log_mean_exp

__all__ = ["activation", "log_f", "sample_odd", "sample_even", "dbm_ais", "dbm_raise",
           "dbm_exact_log_partition", "mean_field", "doubled_up_pass"]

Tensors = Sequence[torch.Tensor]


def activation(k: int, states: Sequence[torch.Tensor | None], weights: Tensors,
               biases: Tensors) -> torch.Tensor:
    """The total input act_k = b_k + x_{k-1} W_{k-1} + x_{k+1} W_k^T of layer k from its
    neighbours' states (module docstring)."""
    act = biases[k]
    if k > 0:
        act = act + states[k - 1] @ weights[k - 1]  # type: ignore[operator]
    if k < len(weights):
        act = act + states[k + 1] @ weights[k].T  # type: ignore[operator]
    return act


def log_f(states: Sequence[torch.Tensor | None], weights: Tensors, biases: Tensors,
          a: torch.Tensor, beta: float) -> torch.Tensor:
    """log f_beta of the even layers in ``states`` (v, h2), the odd ones summed out."""
    v = states[0]
    even = v @ biases[0]  # type: ignore[operator]
    for k in range(2, len(biases), 2):
        even = even + states[k] @ biases[k]  # type: ignore[operator]
    out = (1 - beta) * (v @ a) + beta * even  # type: ignore[operator]
    for k in range(1, len(biases), 2):
        out = out + F.softplus(beta * activation(k, states, weights, biases)).sum(-1)
    return out


def _bern(p: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(p.shape, generator=g, dtype=p.dtype, device=p.device) < p).to(p.dtype)


def sample_odd(states: list, weights: Tensors, biases: Tensors, g: torch.Generator | None,
               beta: float = 1.0) -> list:
    """Draw the odd layers given the even ones (in place in ``states``, h1 first); returns
    ``states``."""
    for k in range(1, len(biases), 2):
        act = activation(k, states, weights, biases)
        states[k] = _bern(torch.sigmoid(act if beta == 1.0 else beta * act), g)
    return states


def sample_even(states: list, weights: Tensors, biases: Tensors, g: torch.Generator | None,
                beta: float = 1.0, a: torch.Tensor | None = None) -> torch.Tensor:
    """Draw the even layers given the odd ones (in place in ``states``, v first); returns
    p(v = 1 | h1) of the draw. With ``beta`` < 1 the visible activation is (1 - beta) a +
    beta act_0."""
    pv = None
    for k in range(0, len(biases), 2):
        act = activation(k, states, weights, biases)
        if beta != 1.0:
            act = (1 - beta) * a + beta * act if k == 0 else beta * act  # type: ignore
        p = torch.sigmoid(act)
        states[k] = _bern(p, g)
        if k == 0:
            pv = p
    return pv  # type: ignore[return-value]


def dbm_ais(weights: Tensors, biases: Tensors, a: torch.Tensor, *, num_samples: int,
            beta_path: torch.Tensor, generator: torch.Generator
            ) -> tuple[float, float, torch.Tensor]:
    """AIS estimate of log Z (float64), its standard error and the chains' log-weights
    (num_samples,), each an estimate of log Z - log Z_0 (module docstring; as
    :func:`~ppgen.models.energy.ais.ais_log_partition` for the RBM)."""
    weights = [t.double() for t in weights]
    biases = [t.double() for t in biases]
    a = a.double()
    g = generator
    bs = beta_path.tolist()
    kw = dict(dtype=a.dtype, device=a.device)
    states: list = [None] * len(biases)
    states[0] = _bern(torch.sigmoid(a).expand(num_samples, -1), g)
    for k in range(2, len(biases), 2):
        states[k] = _bern(torch.full((num_samples, biases[k].shape[0]), 0.5, **kw), g)
    log_w = torch.zeros(num_samples, **kw)
    for k in range(1, len(bs)):
        beta = bs[k]
        log_w += (log_f(states, weights, biases, a, beta)
                  - log_f(states, weights, biases, a, bs[k - 1]))
        if k < len(bs) - 1:
            sample_odd(states, weights, biases, g, beta)
            sample_even(states, weights, biases, g, beta, a)
    est, se = log_mean_exp(log_w)
    num_hidden = sum(c.shape[0] for c in biases[1:])
    log_z0 = float(F.softplus(a).sum()) + num_hidden * math.log(2.0)
    return float(est) + log_z0, float(se), log_w


def dbm_raise(data: torch.Tensor, weights: Tensors, biases: Tensors, a: torch.Tensor,
              q_h2: torch.Tensor, *, num_samples: int, beta_path: torch.Tensor,
              generator: torch.Generator, max_rows: int = 4096
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse AIS (RAISE, Burda, Grosse & Salakhutdinov 2015) for log p(v) of a DBM, per
    row of ``data`` (N, D): (estimates, standard errors), float64, each (N,).

    Each of ``num_samples`` reverse chains starts at the even layers (v, h2) with h2 drawn
    from a factorial proposal q(h2 | v) = Bernoulli(``q_h2``) (N, H2) (the mean-field
    posterior), runs the transitions T_K .. T_1 of the AIS path (module docstring) down to
    the base model, and carries the weight

        log w = log f_K(v, h2) - log q(h2 | v) - log Z_0
                + sum_{k = K..1} [log f_{k-1}(x_{k-1}) - log f_k(x_{k-1})],

    whose mean is unbiased for p_ann(v) = sum_h2 p_ann(v, h2), the annealing model's marginal
    (as for the RBM, :mod:`ppgen.models.energy.ais`): its log is a stochastic lower bound on
    log p_ann(v), which tends to log p(v) as the path grows."""
    weights = [t.double() for t in weights]
    biases = [t.double() for t in biases]
    a = a.double()
    g = generator
    bs = beta_path.tolist()
    num_hidden = sum(c.shape[0] for c in biases[1:])
    log_z0 = float(F.softplus(a).sum()) + num_hidden * math.log(2.0)
    x_all, q_all = data.double(), q_h2.double().clamp(1e-6, 1 - 1e-6)
    rows = max(1, max_rows // num_samples)
    ests, ses = [], []
    for start in range(0, x_all.shape[0], rows):
        v, q = x_all[start:start + rows], q_all[start:start + rows]
        n = v.shape[0]
        states: list = [None] * len(biases)
        states[0] = v.repeat(num_samples, 1)  # (M * n, D), chain-major
        q = q.repeat(num_samples, 1)
        h2 = _bern(q, g)
        states[2] = h2
        log_w = (log_f(states, weights, biases, a, 1.0) - log_z0
                 - (h2 * q.log() + (1 - h2) * (-q).log1p()).sum(-1))
        for k in range(len(bs) - 1, 0, -1):
            sample_odd(states, weights, biases, g, bs[k])
            sample_even(states, weights, biases, g, bs[k], a)
            log_w += (log_f(states, weights, biases, a, bs[k - 1])
                      - log_f(states, weights, biases, a, bs[k]))
        est, se = log_mean_exp(log_w.reshape(num_samples, n))
        ests.append(est)
        ses.append(se)
    return torch.cat(ests), torch.cat(ses)


def dbm_exact_log_partition(weights: Tensors, biases: Tensors) -> float:
    """log Z by enumerating the even layers v and h2 (the odd ones summed out); tiny models
    only."""
    from .ops import enumerate_states

    weights = [t.double() for t in weights]
    biases = [t.double() for t in biases]
    kw = dict(dtype=biases[0].dtype, device=biases[0].device)
    d, h = biases[0].shape[0], biases[2].shape[0]
    v = enumerate_states(d, 0, 2 ** d, **kw)  # type: ignore[arg-type]
    h2 = enumerate_states(h, 0, 2 ** h, **kw)  # type: ignore[arg-type]
    states: list = [None] * len(biases)
    states[0] = v.repeat_interleave(len(h2), 0)
    states[2] = h2.repeat(len(v), 1)
    return float(torch.logsumexp(log_f(states, weights, biases, biases[0], 1.0), 0))


def doubled_up_pass(v: torch.Tensor, weights: Tensors, biases: Tensors,
                    num_layers: int | None = None) -> list[torch.Tensor]:
    """The pretraining up pass: mu_k = sigmoid(b_k + 2 mu_{k-1} W_{k-1}) for the layers
    below the top (doubled input: each stands in for its missing upper neighbour), mu_L =
    sigmoid(b_L + mu_{L-1} W_{L-1}) at the top; the first ``num_layers`` of them (default:
    all). The mean-field iterations start from it."""
    top = len(weights)
    out = []
    mu = v
    for k in range(1, top + 1 if num_layers is None else num_layers + 1):
        up = mu @ weights[k - 1]
        mu = torch.sigmoid(biases[k] + (2 * up if k < top else up))
        out.append(mu)
    return out


def mean_field(v: torch.Tensor, weights: Tensors, biases: Tensors,
               num_iters: int) -> list[torch.Tensor]:
    """Mean-field posterior q(h1) ... q(hL) given v: ``num_iters`` sweeps of the fixed-point
    updates mu_k = sigmoid(b_k + mu_{k-1} W_{k-1} + mu_{k+1} W_k^T), k = 1..L in turn,
    started from :func:`doubled_up_pass`. Returns [mu_1, ..., mu_L]."""
    states: list = [v, *doubled_up_pass(v, weights, biases)]
    for _ in range(num_iters):
        for k in range(1, len(states)):
            states[k] = torch.sigmoid(activation(k, states, weights, biases))
    return states[1:]
