"""Leaf-spine paths (commlab.systems.paths): k flows colliding on one uplink each get 1/k of it on the
engine, planned disjoint paths run at full rate, the step time is the closed form of the max link load,
ECMP hashing is seeded and uniform, the planners reach the optimum, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.comm import Link
from commlab.systems import paths as P

B, ELL = 1e11, 2e-6
NIC, FABRIC = Link(B, ELL), Link(B, ELL)
BITS = 8e8


def seconds(flows, spines, leaves, G, **kw):
    return P.step_seconds(flows, spines, BITS, leaves=leaves, spines=kw.get("S", 4), nics_per_leaf=G,
                          nic_link=NIC, fabric_link=FABRIC)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_k_flows_colliding_on_one_uplink_each_get_one_kth(k):
    flows = np.array([[g, 4 + g] for g in range(k)])  # leaf 0 -> leaf 1, G = 4 NICs a leaf
    ends = []
    net = P.LeafSpineNetwork(2, 4, 4, NIC, FABRIC, {(int(s), int(d)): 0 for s, d in flows})  # all on spine 0
    for s, d in flows:
        def sender(s=int(s), d=int(d)):
            yield from net.send(s, d, BITS)
            ends.append(net.now)
        net.start(sender())
        net.start(net.recv(int(d), int(s)))
    net.run()
    np.testing.assert_allclose(ends, 2 * ELL + k * BITS / B, rtol=1e-12)  # each at B/k until all end
    assert seconds(flows, np.zeros(k, int), 2, 4) == pytest.approx(2 * ELL + k * BITS / B, rel=1e-12)


def test_planned_disjoint_paths_get_the_full_rate():
    flows = np.array([[g, 4 + g] for g in range(4)])
    planned = P.planned_paths(flows, 4, nics_per_leaf=4)
    assert sorted(planned) == [0, 1, 2, 3]
    assert seconds(flows, planned, 2, 4) == pytest.approx(2 * ELL + BITS / B, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_step_time_is_the_closed_form_of_the_max_link_load(seed):
    L, S, G = 4, 4, 4
    flows = P.ring_flows(L, G)
    paths = P.ecmp_paths(flows, S, seed, nics_per_leaf=G)
    load = P.max_link_load(flows, paths, S, nics_per_leaf=G)
    got = P.step_seconds(flows, paths, BITS, leaves=L, spines=S, nics_per_leaf=G, nic_link=NIC, fabric_link=FABRIC)
    assert got == pytest.approx(2 * ELL + load * BITS / B, rel=1e-12)


def test_ring_flows_and_link_loads():
    flows = P.ring_flows(3, 2)
    np.testing.assert_array_equal(flows, [[0, 2], [1, 3], [2, 4], [3, 5], [4, 0], [5, 1]])
    up, down = P.link_loads(flows, np.array([0, 0, 1, 0, 1, 1]), 2, nics_per_leaf=2)
    np.testing.assert_array_equal(up, [[2, 0], [1, 1], [0, 2]])
    np.testing.assert_array_equal(down, [[0, 2, 1], [2, 0, 1]])  # spine 0 -> leaf 1 carries flows 0, 1
    assert P.max_link_load(flows, np.array([0, 0, 1, 0, 1, 1]), 2, nics_per_leaf=2) == 2.0
    local = np.array([[0, 1]])  # same leaf: no spine, no fabric load
    assert P.ecmp_paths(local, 4, 0, nics_per_leaf=2)[0] == -1
    assert P.max_link_load(local, np.array([-1]), 4, nics_per_leaf=2) == 0.0


def test_ecmp_is_seeded_uniform_and_avoids_failed_spines():
    flows = P.ring_flows(16, 8)
    a, b = P.ecmp_paths(flows, 8, 3, nics_per_leaf=8), P.ecmp_paths(flows, 8, 3, nics_per_leaf=8)
    np.testing.assert_array_equal(a, b)
    draws = np.concatenate([P.ecmp_paths(flows, 8, s, nics_per_leaf=8) for s in range(40)])
    counts = np.bincount(draws, minlength=8)
    expected = len(draws) / 8
    assert ((counts - expected) ** 2 / expected).sum() < 24.3  # chi-square, 7 dof, p = 0.001
    assert not (P.ecmp_paths(flows, 8, 5, nics_per_leaf=8) == P.ecmp_paths(flows, 8, 6, nics_per_leaf=8)).all()
    assert set(P.ecmp_paths(flows, 8, 0, nics_per_leaf=8, failed=[2, 5])) <= {0, 1, 3, 4, 6, 7}


def test_ecmp_collides_and_planning_fixes_it():
    flows = P.ring_flows(16, 8)  # 8 flows per leaf pair, 8 spines
    loads = [P.max_link_load(flows, P.ecmp_paths(flows, 8, s, nics_per_leaf=8), 8, nics_per_leaf=8)
             for s in range(50)]
    assert min(loads) >= 2  # 16 groups of 8 balls in 8 bins: P(no collision anywhere) = (8!/8^8)^16
    assert P.max_link_load(flows, P.planned_paths(flows, 8, nics_per_leaf=8), 8, nics_per_leaf=8) == 1.0
    planned = P.planned_paths(flows, 8, nics_per_leaf=8, failed=[7])
    assert P.max_link_load(flows, planned, 8, nics_per_leaf=8) == 2.0 and 7 not in planned  # ceil(8/7)


def test_exact_planning_matches_the_optimum_where_greedy_does_not():
    # sizes 3, 3, 2, 2, 2 from one leaf on 2 spines: greedy longest-first gives 3+2 | 3+2+2 = 7, optimum 6
    flows = np.array([[g, 8 + g] for g in range(5)])
    sizes = np.array([3, 3, 2, 2, 2.0])
    greedy = P.planned_paths(flows, 2, nics_per_leaf=8, sizes=sizes)
    exact = P.planned_paths(flows, 2, nics_per_leaf=8, sizes=sizes, exact=True)
    assert P.max_link_load(flows, greedy, 2, nics_per_leaf=8, sizes=sizes) == 7.0
    assert P.max_link_load(flows, exact, 2, nics_per_leaf=8, sizes=sizes) == 6.0


def test_bad_input_is_refused():
    flows = P.ring_flows(2, 2)
    with pytest.raises(ValueError, match="flows"):
        P.ecmp_paths(np.array([0, 1]), 4, 0, nics_per_leaf=2)
    with pytest.raises(ValueError, match="differ"):
        P.ecmp_paths(np.array([[1, 1]]), 4, 0, nics_per_leaf=2)
    with pytest.raises(ValueError, match="all 2 spines"):
        P.planned_paths(flows, 2, nics_per_leaf=2, failed=[0, 1])
    with pytest.raises(ValueError, match="failed spine"):
        P.ecmp_paths(flows, 2, 0, nics_per_leaf=2, failed=[2])
    with pytest.raises(ValueError, match="paths"):
        P.link_loads(flows, np.array([0, 9, 0, 0]), 2, nics_per_leaf=2)
    with pytest.raises(ValueError, match="no spine"):
        P.link_loads(flows, np.array([-1, 0, 0, 0]), 2, nics_per_leaf=2)
    with pytest.raises(ValueError, match="sizes"):
        P.planned_paths(flows, 2, nics_per_leaf=2, sizes=[1, 2])
    with pytest.raises(ValueError, match="distinct"):
        P.step_seconds(np.array([[0, 2], [0, 2]]), np.array([0, 1]), BITS, leaves=2, spines=2, nics_per_leaf=2,
                       nic_link=NIC, fabric_link=FABRIC)
    with pytest.raises(TypeError, match="seed"):
        P.ecmp_paths(flows, 2, 0.5, nics_per_leaf=2)
    net = P.LeafSpineNetwork(2, 2, 2, NIC, FABRIC, {})
    with pytest.raises(ValueError, match="no spine assigned"):
        net.route(0, 2)
