"""Synthetic MoE routing traces with tunable inter-layer affinity (commlab.data.routing_traces)."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.data.routing_traces import markov_routing_trace, sample_routing_trace, transition_matrices


@pytest.mark.parametrize("kind", ["permutation", "dirichlet"])
def test_transition_matrices_are_row_stochastic_mixtures(kind):
    rng = np.random.default_rng(0)
    matrices = transition_matrices(5, 6, 0.4, rng=rng, kind=kind)
    assert matrices.shape == (4, 6, 6)
    np.testing.assert_allclose(matrices.sum(axis=2), 1.0)
    assert (matrices >= 0.6 / 6 - 1e-12).all()  # the uniform part (1 - alpha) / E is always there
    if kind == "permutation":
        affinity_part = (matrices - 0.6 / 6) / 0.4
        assert np.allclose(np.sort(affinity_part, axis=2)[..., -1], 1.0)  # one target per row ...
        assert all(len(set(part.argmax(axis=1))) == 6 for part in affinity_part)  # ... forming a permutation
    np.testing.assert_allclose(transition_matrices(3, 6, 0.0, rng=rng, kind=kind), 1 / 6)


def test_trace_follows_the_transition_matrices():
    rng = np.random.default_rng(1)
    trace, matrices = markov_routing_trace(40_000, 4, 5, 0.7, rng=rng, kind="dirichlet", concentration=0.5)
    assert trace.shape == (40_000, 4) and trace.dtype == np.int64
    assert trace.min() >= 0 and trace.max() < 5
    np.testing.assert_allclose(np.bincount(trace[:, 0], minlength=5) / 40_000, 0.2, atol=0.01)
    for layer in range(3):
        counts = np.zeros((5, 5))
        np.add.at(counts, (trace[:, layer], trace[:, layer + 1]), 1)
        empirical = counts / counts.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(empirical, matrices[layer], atol=0.03)


def test_traces_are_reproducible_and_fresh_draws_differ():
    first = markov_routing_trace(100, 3, 4, 0.5, rng=np.random.default_rng(3))
    again = markov_routing_trace(100, 3, 4, 0.5, rng=np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    fresh = sample_routing_trace(first[1], 100, rng=np.random.default_rng(4))
    assert not np.array_equal(fresh, first[0])


def test_full_affinity_permutation_is_deterministic_after_layer_zero():
    trace, matrices = markov_routing_trace(500, 3, 4, 1.0, rng=np.random.default_rng(5))
    for layer in range(2):
        assert np.array_equal(trace[:, layer + 1], matrices[layer].argmax(axis=1)[trace[:, layer]])


def test_bad_arguments_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="affinity"):
        transition_matrices(3, 4, 1.5, rng=rng)
    with pytest.raises(ValueError, match="n_layers"):
        transition_matrices(1, 4, 0.5, rng=rng)
    with pytest.raises(ValueError, match="kind"):
        transition_matrices(3, 4, 0.5, rng=rng, kind="zipf")
    with pytest.raises(TypeError, match="rng"):
        transition_matrices(3, 4, 0.5, rng=0)
    with pytest.raises(ValueError, match="rows summing to 1"):
        sample_routing_trace(np.ones((1, 3, 3)), 10, rng=rng)
