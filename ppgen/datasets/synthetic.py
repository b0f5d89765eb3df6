"""Synthetic generators: data together with the parameters that generated them."""

from __future__ import annotations

import torch

from .._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["make_mixture", "make_hmm"]


def make_mixture(num_data: int, num_components: int, num_features: int, *,
                 covariance: str = "full", separation: float = 4.0, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
    """Draw data from a random Gaussian mixture.

    Parameters
    ----------
    separation : float
        Typical distance between component means, in units of the component scales.

    Returns
    -------
    data : Tensor of shape (num_data, num_features)
    params : dict with ``weights`` (K,), ``locs`` (K, D), ``covariances`` (sklearn shapes for
        ``covariance``) and ``labels`` (num_data,), the true component of each row.
    """
    n = check_positive_int("num_data", num_data)
    k = check_positive_int("num_components", num_components)
    d = check_positive_int("num_features", num_features)
    check_choice("covariance", covariance, ("full", "diag", "spherical"))
    separation = check_positive_float("separation", separation)
    g = torch.Generator().manual_seed(int(seed))
    weights = torch.rand(k, generator=g, dtype=dtype) + 0.5
    weights = weights / weights.sum()
    locs = torch.randn(k, d, generator=g, dtype=dtype) * separation
    if covariance == "full":
        a = torch.randn(k, d, d, generator=g, dtype=dtype) / d ** 0.5
        cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=dtype)
        tril = torch.linalg.cholesky(cov)
    elif covariance == "diag":
        cov = torch.rand(k, d, generator=g, dtype=dtype) + 0.5
        tril = torch.diag_embed(cov.sqrt())
    else:
        cov = torch.rand(k, generator=g, dtype=dtype) + 0.5
        tril = cov.sqrt()[:, None, None] * torch.eye(d, dtype=dtype)
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    eps = torch.randn(n, d, generator=g, dtype=dtype)
    x = locs[labels] + (tril[labels] @ eps.unsqueeze(-1)).squeeze(-1)
    return x, {"weights": weights, "locs": locs, "covariances": cov, "labels": labels}


def make_hmm(num_sequences: int, num_steps: int, num_states: int, *, num_features: int = 2,
             emission: str = "gaussian", covariance: str = "diag", num_symbols: int = 6,
             min_length: int | None = None, separation: float = 3.0, stickiness: float = 0.8,
             seed: int = 0, dtype: torch.dtype = torch.float64):
    """Draw sequences from a random hidden Markov model.

    Parameters
    ----------
    num_sequences, num_steps, num_states : int
        N sequences of (at most) T steps from K states.
    emission : {"gaussian", "categorical", "bernoulli", "poisson"}
    min_length : int, optional
        When given, sequence lengths are drawn uniformly from [min_length, num_steps] and the
        data come back as a list of tensors.
    separation : float
        Gaussian: typical distance between state means in units of the state scales.
    stickiness : float
        Probability mass on staying in the same state (the rest is spread at random).

    Returns
    -------
    data : Tensor (N, T, D) ((N, T) long for categorical), or a list of N tensors
    params : dict with ``initial_probs`` (K,), ``transition_probs`` (K, K), the emission's
        parameters (``locs``/``covariances``, ``probs`` or ``rates``), ``states`` (N, T)
        (-1 past each end) and ``lengths`` (N,).
    """
    from ..models.hmm import HiddenMarkovModel

    n = check_positive_int("num_sequences", num_sequences)
    t = check_positive_int("num_steps", num_steps)
    k = check_positive_int("num_states", num_states)
    d = check_positive_int("num_features", num_features)
    check_choice("emission", emission, ("gaussian", "categorical", "bernoulli", "poisson"))
    separation = check_positive_float("separation", separation)
    if not 0 <= stickiness < 1:
        from .._validation import bad_value

        raise bad_value("stickiness", "a number in [0, 1)", stickiness)
    g = torch.Generator().manual_seed(int(seed))
    init = torch.rand(k, generator=g, dtype=dtype) + 0.5
    init = init / init.sum()
    rows = -torch.rand(k, k, generator=g, dtype=dtype).log()
    trans = stickiness * torch.eye(k, dtype=dtype) + (1 - stickiness) * rows / rows.sum(-1,
                                                                                    keepdim=True)
    params = {"initial_probs": init, "transition_probs": trans}
    if emission == "gaussian":
        params["locs"] = torch.randn(k, d, generator=g, dtype=dtype) * separation
        if covariance == "full":
            a = torch.randn(k, d, d, generator=g, dtype=dtype) / d ** 0.5
            params["covariances"] = a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=dtype)
        elif covariance == "diag":
            params["covariances"] = torch.rand(k, d, generator=g, dtype=dtype) + 0.5
        else:
            params["covariances"] = torch.rand(k, generator=g, dtype=dtype) + 0.5
    elif emission == "categorical":
        p = -torch.rand(k, check_positive_int("num_symbols", num_symbols), generator=g,
                        dtype=dtype).log() ** 3
        params["probs"] = p / p.sum(-1, keepdim=True)
    elif emission == "bernoulli":
        params["probs"] = torch.rand(k, d, generator=g, dtype=dtype) ** 2
    else:
        params["rates"] = torch.rand(k, d, generator=g, dtype=dtype) * 10 + 0.5
    hmm = HiddenMarkovModel(k, emission=emission, covariance=covariance, dtype=dtype)
    hmm.set_params(**params)
    if min_length is None:
        lengths = torch.full((n,), t)
    else:
        low = check_positive_int("min_length", min_length)
        if low > t:
            from .._validation import bad_value

            raise bad_value("min_length", f"at most num_steps ({t})", low)
        lengths = torch.randint(low, t + 1, (n,), generator=g)
    x, states = hmm.sample(n, lengths=lengths, seed=int(torch.randint(2**31, (1,),
                                                                      generator=g)),
                           return_states=True)
    params.update(states=states, lengths=lengths)
    if min_length is not None:
        x = [x[i, :int(lengths[i])] for i in range(n)]  # split the padded batch (no math)
    return x, params
