"""Expert placement for MoE inference (commlab.systems.placement)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from commlab.comm import Link
from commlab.data.routing_traces import markov_routing_trace
from commlab.systems import placement as P


def loads(placement, n_devices):
    return np.stack([np.bincount(row, minlength=n_devices) for row in placement])


def brute_force_best(counts, n_devices, first):
    """Fewest cross-device hops over every capacity-respecting placement of layers 1.. (tiny cases)."""
    n_experts = counts.shape[1]
    caps = P.device_capacity(n_experts, n_devices)
    layouts = [np.array(p) for p in itertools.product(range(n_devices), repeat=n_experts)
               if (np.bincount(p, minlength=n_devices) <= caps).all()]
    best = np.inf
    for rest in itertools.product(layouts, repeat=counts.shape[0]):
        best = min(best, P.cross_device_hops(counts, np.stack([first, *rest])).sum())
    return best


def test_transition_counts_by_hand():
    trace = np.array([[0, 1, 1], [0, 1, 0], [2, 0, 0]])
    counts = P.transition_counts(trace, 3)
    assert counts.shape == (2, 3, 3) and counts.sum() == 6
    assert counts[0, 0, 1] == 2 and counts[0, 2, 0] == 1
    assert counts[1, 1, 1] == 1 and counts[1, 1, 0] == 1 and counts[1, 0, 0] == 1


@pytest.mark.parametrize("n_experts, n_devices, capacity", [(8, 4, None), (8, 2, None), (7, 3, 3), (6, 3, [3, 1, 2]),
                                                            (5, 2, [5, 0])])
@pytest.mark.parametrize("affinity", [0.0, 0.5, 1.0])
def test_placements_never_exceed_device_capacity(n_experts, n_devices, capacity, affinity):
    rng = np.random.default_rng(0)
    trace, _ = markov_routing_trace(2_000, 6, n_experts, affinity, rng=rng, kind="dirichlet")
    counts = P.transition_counts(trace, n_experts)
    caps = P.device_capacity(n_experts, n_devices, capacity)
    for placement in (P.round_robin_placement(6, n_experts, n_devices, capacity),
                      P.affinity_placement(counts, n_devices, capacity)):
        assert placement.shape == (6, n_experts) and placement.dtype == np.int64
        assert placement.min() >= 0 and placement.max() < n_devices
        assert (loads(placement, n_devices) <= caps).all()


def test_milp_respects_capacity_and_matches_brute_force_on_a_tiny_case():
    rng = np.random.default_rng(1)
    trace, _ = markov_routing_trace(300, 3, 4, 0.5, rng=rng, kind="dirichlet", concentration=0.5)
    counts = P.transition_counts(trace, 4)
    first = P.round_robin_placement(1, 4, 2)[0]
    milp = P.milp_placement(counts, 2, time_limit=20.0)
    assert np.array_equal(milp[0], first) and (loads(milp, 2) <= 2).all()
    best = brute_force_best(counts, 2, first)
    assert P.cross_device_hops(counts, milp).sum() == best
    assert P.cross_device_hops(counts, P.affinity_placement(counts, 2)).sum() >= best


def test_affinity_placement_reaches_the_ideal_on_permutation_traces():
    rng = np.random.default_rng(2)
    trace, _ = markov_routing_trace(20_000, 10, 8, 1.0, rng=rng)
    counts = P.transition_counts(trace, 8)
    assert P.cross_device_fraction(counts, P.affinity_placement(counts, 4)) == 0.0
    assert P.cross_device_fraction(counts, P.round_robin_placement(10, 8, 4)) > 0.5


def test_hops_and_traffic_by_hand():
    counts = np.array([[[3, 1], [0, 2]]])  # one layer pair, two experts
    same = np.array([[0, 1], [0, 1]])
    swapped = np.array([[0, 1], [1, 0]])
    assert P.cross_device_hops(counts, same).tolist() == [1]
    assert P.cross_device_hops(counts, swapped).tolist() == [5]
    assert P.cross_device_fraction(counts, swapped) == pytest.approx(5 / 6)
    traffic = P.alltoall_traffic(counts, same, 2)
    assert traffic.tolist() == [[[3, 1], [0, 2]]]
    # device 0 sends 100 bits; alpha + 100 / 50
    link = Link(bandwidth=50.0, latency=1.0)
    assert link.alltoall_seconds(traffic * 100).tolist() == [3.0]
    assert link.alltoall_seconds(np.diag([5, 5])) == 0.0
    with pytest.raises(ValueError, match="traffic_bits"):
        link.alltoall_seconds(np.ones(3))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="divide"):
        P.device_capacity(7, 2)
    with pytest.raises(ValueError, match="hold all"):
        P.device_capacity(7, 2, [3, 3])
    with pytest.raises(ValueError, match="capacity"):
        P.affinity_placement(np.ones((1, 4, 4), dtype=np.int64), 2, first=np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="trace values"):
        P.transition_counts(np.array([[0, 5]]), 3)
    with pytest.raises(ValueError, match="placement"):
        P.cross_device_hops(np.ones((1, 2, 2), dtype=np.int64), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="n_devices"):
        P.round_robin_placement(2, 4, 2.0)
