"""What the ExFlow notebook used to state as claims on its synthetic traces, where the affinity is the generator's
own parameter: the layer-by-layer assignment reaches the ideal (1 - alpha)(1 - 1/G) of a permutation trace on a
fresh trace, so the reduction over round-robin grows with alpha (none at alpha = 0, growing with alpha), the placement
computed on one trace holds on a fresh one, and the alpha-beta all-to-all time falls with the hops."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.comm import Link
from commlab.data.routing_traces import markov_routing_trace, sample_routing_trace
from commlab.systems import placement as P

L, E, G, T = 32, 8, 4, 20_000
ALPHAS = (0.0, 0.3, 0.6, 0.9)


def placed(alpha, seed, kind="permutation"):
    rng = np.random.default_rng(seed)
    trace, kernel = markov_routing_trace(T, L, E, alpha, rng=rng, kind=kind)
    profile = P.transition_counts(trace, E)
    fresh = P.transition_counts(sample_routing_trace(kernel, T, rng=rng), E)
    return profile, fresh, P.round_robin_placement(L, E, G), P.affinity_placement(profile, G)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutation_traces_reach_the_ideal_and_the_reduction_is_alpha(seed):
    # covers exflow-ideal, exflow-affinity-reduction (synthetic), exflow-no-affinity, exflow-monotone,
    # exflow-generalises: all hold because the trace's affinity is alpha by construction
    reductions = []
    for alpha in ALPHAS:
        profile, fresh, base, aware = placed(alpha, seed)
        rate, vanilla = P.cross_device_fraction(fresh, aware), P.cross_device_fraction(fresh, base)
        assert abs(rate - (1 - alpha) * (1 - 1 / G)) <= 0.02
        reduction = 1 - rate / vanilla
        on_profile = 1 - P.cross_device_fraction(profile, aware) / P.cross_device_fraction(profile, base)
        assert abs(reduction - on_profile) <= 0.02
        reductions.append(reduction)
    assert abs(reductions[0]) <= 0.02
    assert reductions[2] >= 0.5
    assert all(b >= a for a, b in zip(reductions, reductions[1:], strict=False))


def test_alltoall_time_falls_with_the_hops_of_a_balanced_placement():
    # covers exflow-alltoall-time: with balanced traffic the alpha-beta time is latency + (hops / G) * bits / B
    _, fresh, base, aware = placed(0.6, 3)
    bits = 8 * 4096 * 2
    for latency in (0.0, 5e-6):
        link = Link(bandwidth=8 * 25e9, latency=latency)
        times = {}
        for name, placement in (("vanilla", base), ("affinity", aware)):
            traffic = P.alltoall_traffic(fresh, placement, G) * bits
            times[name] = link.alltoall_seconds(traffic)
            hops = P.cross_device_hops(fresh, placement)
            # the busiest device carries at least a G-th of the hops
            assert (times[name] >= latency + hops / G * bits / link.bandwidth - 1e-12).all()
        time_reduction = 1 - times["affinity"].mean() / times["vanilla"].mean()
        hop_reduction = 1 - P.cross_device_fraction(fresh, aware) / P.cross_device_fraction(fresh, base)
        assert time_reduction >= 0.5
        if latency == 0.0:
            assert time_reduction == pytest.approx(hop_reduction, abs=0.1)
