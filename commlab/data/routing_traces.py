"""Synthetic mixture-of-experts routing traces with tunable inter-layer affinity.

A routing trace records, for each of ``T`` tokens, the expert (top-1) it is routed to in each of ``L``
MoE layers. Real traces of pre-trained MoE models show *inter-layer affinity*: the expert a token
uses at layer ``l`` predicts its expert at layer ``l + 1`` (Yao et al., 2024, "Exploiting Inter-Layer
Expert Affinity for Accelerating Mixture-of-Experts Model Inference"). Here a trace is a Markov chain
over layers: the layer-0 expert is uniform and

    P_l[e, e'] = alpha * A_l[e, e'] + (1 - alpha) / E,                       (1)

where ``A_l`` is the *affinity* part and ``alpha`` in [0, 1] tunes its strength (``alpha = 0``: no
affinity, every expert independent of the previous one).

* ``kind="permutation"``: ``A_l`` is a random permutation matrix ``pi_l``: with probability ``alpha`` a
  token follows ``e -> pi_l(e)``, otherwise it picks a uniform expert.
* ``kind="dirichlet"`` ("soft affinity"): the rows of ``A_l`` are drawn from a symmetric Dirichlet
  with the given ``concentration`` (small = peaked rows), so affinity is not a permutation artefact.
"""

from __future__ import annotations

import numpy as np

from commlab._checks import check_choice, check_int, check_positive

KINDS = ("permutation", "dirichlet")
"""Affinity structures of :func:`transition_matrices`."""


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def transition_matrices(n_layers: int, n_experts: int, affinity: float, *, rng: np.random.Generator,
                        kind: str = "permutation", concentration: float = 0.3) -> np.ndarray:
    """Layer-to-layer routing probabilities, eq. (1).

    Args:
        n_layers: number of MoE layers L >= 2.
        n_experts: experts per layer E >= 1.
        affinity: alpha in [0, 1], the weight of the affinity part.
        rng: numpy Generator for the permutations / Dirichlet rows.
        kind: ``"permutation"`` or ``"dirichlet"`` (see the module docstring).
        concentration: Dirichlet concentration (> 0), used by ``kind="dirichlet"`` only.

    Returns:
        float64 ``[L - 1, E, E]``; ``[l, e, e']`` is the probability that a token at expert ``e`` of layer
        ``l`` goes to expert ``e'`` of layer ``l + 1``. Rows sum to 1.
    """
    n_layers = check_int("n_layers", n_layers, low=2)
    n_experts = check_int("n_experts", n_experts, low=1)
    affinity = _check_affinity(affinity)
    check_choice("kind", kind, KINDS)
    concentration = check_positive("concentration", concentration)
    rng = _check_rng(rng)
    if kind == "permutation":
        part = np.zeros((n_layers - 1, n_experts, n_experts))
        for layer in range(n_layers - 1):
            part[layer, np.arange(n_experts), rng.permutation(n_experts)] = 1.0
    else:
        part = rng.dirichlet(np.full(n_experts, concentration), size=(n_layers - 1, n_experts))
    return affinity * part + (1.0 - affinity) / n_experts


def sample_routing_trace(transitions: np.ndarray, n_tokens: int, *, rng: np.random.Generator) -> np.ndarray:
    """Draw a routing trace from layer-to-layer transition matrices.

    Args:
        transitions: ``[L - 1, E, E]`` row-stochastic matrices (:func:`transition_matrices`).
        n_tokens: number of tokens T >= 1.
        rng: numpy Generator.

    Returns:
        int64 ``[T, L]``: the expert of each token at each layer; layer 0 is uniform over the E experts.
    """
    transitions = np.asarray(transitions, dtype=np.float64)
    if transitions.ndim != 3 or transitions.shape[1] != transitions.shape[2] or transitions.shape[0] < 1:
        raise ValueError(f"transitions must have shape [L - 1 >= 1, E, E], got {transitions.shape}")
    if (transitions < 0).any() or not np.allclose(transitions.sum(axis=2), 1.0):
        raise ValueError("transitions must be non-negative with rows summing to 1")
    n_tokens = check_int("n_tokens", n_tokens, low=1)
    rng = _check_rng(rng)
    n_experts = transitions.shape[1]
    trace = np.empty((n_tokens, transitions.shape[0] + 1), dtype=np.int64)
    trace[:, 0] = rng.integers(0, n_experts, size=n_tokens)
    cumulative = np.cumsum(transitions, axis=2)
    cumulative[..., -1] = 1.0
    for layer in range(transitions.shape[0]):
        draws = rng.random(n_tokens)
        trace[:, layer + 1] = (cumulative[layer, trace[:, layer]] <= draws[:, None]).sum(axis=1)
    return trace


def markov_routing_trace(n_tokens: int, n_layers: int, n_experts: int, affinity: float, *,
                         rng: np.random.Generator, kind: str = "permutation",
                         concentration: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Transition matrices (eq. 1) and one trace drawn from them.

    Returns:
        ``(trace, transitions)``: int64 ``[T, L]`` and float64 ``[L - 1, E, E]``. Draw a fresh trace from
        the same process with ``sample_routing_trace(transitions, T, rng=...)``.
    """
    transitions = transition_matrices(n_layers, n_experts, affinity, rng=rng, kind=kind,
                                      concentration=concentration)
    return sample_routing_trace(transitions, n_tokens, rng=rng), transitions


def _check_affinity(affinity) -> float:
    if isinstance(affinity, bool) or not isinstance(affinity, int | float | np.floating | np.integer):
        raise TypeError(f"affinity must be a real number in [0, 1], got {type(affinity).__name__}")
    affinity = float(affinity)
    if not 0.0 <= affinity <= 1.0:
        raise ValueError(f"affinity must be in [0, 1], got {affinity}")
    return affinity
