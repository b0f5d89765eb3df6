"""Synthetic generators: data together with the parameters that generated them."""

from __future__ import annotations

import torch

from .._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["make_mixture", "make_hmm", "make_corpus", "make_ring", "make_grid", "ring_modes",
           "grid_modes"]


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
    from ..models.sequence import HiddenMarkovModel

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


def make_corpus(num_docs: int, vocab_size: int, num_topics: int, *,
                doc_length: int | tuple[int, int] = 100, doc_topic_prior: float = 0.1,
                topic_word_prior: float = 0.05, seed: int = 0,
                dtype: torch.dtype = torch.float64):
    """Draw a corpus of bags of words from LDA's generative process with known topics.

    Generative process (Blei, Ng & Jordan 2003)::

        topic_word[k] ~ Dirichlet(topic_word_prior + 1[w in block k])   for each topic k
        doc_topics[d] ~ Dirichlet(doc_topic_prior * 1_K)                for each document d
        counts[d]     ~ Multinomial(doc_lengths[d], doc_topics[d] @ topic_word)

    The topics are made distinct, so that a fitted model can recover them: the vocabulary is
    cut into ``num_topics`` blocks of consecutive words (block k holds words
    ``k * V // K`` to ``(k + 1) * V // K - 1``), and topic k's Dirichlet puts 1 more unit of
    concentration on each word of its own block. A block word is then on average
    ``(1 + eta) / eta`` times as probable as another word (21 times at eta = 0.05), and the
    block carries on average ``(1 + eta) / (1 + K * eta)`` of the topic's mass (0.84 for
    K = 5, 0.7 for K = 10). The other words get the sparse Dirichlet(eta) noise of the usual
    symmetric prior, under which a few of them per topic can be as probable as a block word;
    the topics still put their weight on different words (for K = 5, V = 100, most of a
    topic's 10 most probable words lie in its block, and any two topics are more than 0.5
    apart in total variation).

    Parameters
    ----------
    num_docs, vocab_size, num_topics : int
        D documents over a vocabulary of V words, from K topics (K <= V).
    doc_length : int or (low, high)
        Tokens per document: the same for all, or drawn uniformly from the integers
        ``low..high`` (both included). At least 1.
    doc_topic_prior : float
        alpha, the concentration of the symmetric Dirichlet of each document's topic
        proportions (small: documents about few topics).
    topic_word_prior : float
        eta, the concentration every word gets in every topic's Dirichlet (above).
    seed : int
        Seeds numpy's ``default_rng`` (the Dirichlet draws) and a ``torch.Generator`` (the
        lengths and words); the global random state is left alone.
    dtype : torch.dtype
        Floating type of the counts and parameters.

    Returns
    -------
    counts : Tensor of shape (num_docs, vocab_size)
        Word counts (whole numbers in ``dtype``); row d sums to ``doc_lengths[d]``.
    params : dict
        ``topic_word`` (K, V) rows of word probabilities, ``doc_topics`` (D, K) rows of topic
        proportions, ``doc_lengths`` (D,) long.

    Examples
    --------
    >>> counts, truth = make_corpus(200, 50, 5, doc_length=(20, 80))
    >>> tuple(counts.shape), tuple(truth["topic_word"].shape)
    ((200, 50), (5, 50))
    """
    import numpy as np

    from .._validation import bad_type, bad_value

    d = check_positive_int("num_docs", num_docs)
    v = check_positive_int("vocab_size", vocab_size)
    k = check_positive_int("num_topics", num_topics)
    if k > v:
        raise bad_value("num_topics", f"at most vocab_size ({v}), one block of words per topic",
                        k)
    alpha = check_positive_float("doc_topic_prior", doc_topic_prior)
    eta = check_positive_float("topic_word_prior", topic_word_prior)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise bad_type("dtype", "a floating torch dtype such as torch.float64", repr(dtype))
    if isinstance(doc_length, tuple | list):
        if len(doc_length) != 2:
            raise bad_value("doc_length", "an int or a pair (low, high)", repr(doc_length))
        low = check_positive_int("doc_length[0]", doc_length[0])
        high = check_positive_int("doc_length[1]", doc_length[1])
        if low > high:
            raise bad_value("doc_length", "a pair (low, high) with low <= high",
                            repr(tuple(doc_length)))
    else:
        low = high = check_positive_int("doc_length", doc_length)
    rng = np.random.default_rng(int(seed))
    g = torch.Generator().manual_seed(int(seed))
    block = np.arange(v) * k // v  # the topic whose block holds each word
    concentration = eta + (block == np.arange(k)[:, None])
    raw = rng.standard_gamma(concentration)
    topic_word = torch.as_tensor(raw / raw.sum(-1, keepdims=True), dtype=dtype)
    # numpy's dirichlet stays exact for tiny alpha (where normalised gammas underflow to 0/0)
    doc_topics = torch.as_tensor(rng.dirichlet(np.full(k, alpha), size=d), dtype=dtype)
    lengths = torch.randint(low, high + 1, (d,), generator=g)
    probs = doc_topics @ topic_word
    words = torch.multinomial(probs, high, replacement=True, generator=g)  # (D, high)
    keep = (torch.arange(high) < lengths[:, None]).to(dtype)
    counts = torch.zeros(d, v, dtype=dtype).scatter_add_(1, words, keep)
    return counts, {"topic_word": topic_word, "doc_topics": doc_topics, "doc_lengths": lengths}


def ring_modes(num_modes: int = 8, radius: float = 2.0, *,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The centres (num_modes, 2) of the ring mixture: evenly spaced on a circle."""
    k = check_positive_int("num_modes", num_modes)
    r = check_positive_float("radius", radius)
    angle = torch.arange(k, dtype=dtype) * (2 * torch.pi / k)
    return r * torch.stack([angle.cos(), angle.sin()], -1)


def grid_modes(size: int = 5, spacing: float = 2.0, *,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The centres (size^2, 2) of the grid mixture: a square lattice centred on 0."""
    s = check_positive_int("size", size)
    h = check_positive_float("spacing", spacing)
    axis = (torch.arange(s, dtype=dtype) - (s - 1) / 2) * h
    return torch.cartesian_prod(axis, axis)


def _draw_modes(num_data: int, modes: torch.Tensor, std: float, seed: int):
    n = check_positive_int("num_data", num_data)
    std = check_positive_float("std", std)
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.randint(len(modes), (n,), generator=g)
    x = modes[labels] + std * torch.randn(n, 2, generator=g, dtype=modes.dtype)
    return x, {"modes": modes, "std": std, "labels": labels}


def make_ring(num_data: int, *, num_modes: int = 8, radius: float = 2.0, std: float = 0.02,
              seed: int = 0, dtype: torch.dtype = torch.float64):
    """Points from the ring of Gaussians of the VEEGAN and PacGAN experiments: ``num_modes``
    equally likely isotropic Gaussians (standard deviation ``std``) on a circle of
    ``radius``.

    Returns
    -------
    data : Tensor of shape (num_data, 2)
    params : dict with ``modes`` (K, 2), ``std`` and ``labels`` (num_data,)
    """
    return _draw_modes(num_data, ring_modes(num_modes, radius, dtype=dtype), std, seed)


def make_grid(num_data: int, *, size: int = 5, spacing: float = 2.0, std: float = 0.05,
              seed: int = 0, dtype: torch.dtype = torch.float64):
    """Points from the grid of Gaussians of the VEEGAN and PacGAN experiments: ``size`` x
    ``size`` equally likely isotropic Gaussians (standard deviation ``std``) ``spacing``
    apart, centred on the origin (5 x 5 on {-4, -2, 0, 2, 4}^2 by default).

    Returns
    -------
    data : Tensor of shape (num_data, 2)
    params : dict with ``modes`` (K, 2), ``std`` and ``labels`` (num_data,)
    """
    return _draw_modes(num_data, grid_modes(size, spacing, dtype=dtype), std, seed)
