"""Elastic recovery costs (commlab.systems.elastic): the min–max DP equals brute force and never loses to
neighbour absorption, pipeline and transfer closed forms equal the simpy engine, recovery traffic puts
each survivor's share where the strategy says, and the small formulas by hand."""

import math

import numpy as np
import pytest

from commlab.comm.link import Link
from commlab.systems.elastic import (
    absorb_lost_stage,
    balance_micro_batches,
    brute_force_partition,
    bubble_fraction,
    checkpoint_seconds,
    communicator_seconds,
    dvfs_plan,
    min_max_partition,
    pipeline_seconds,
    random_costs,
    recovery_traffic,
    simulate_pipeline,
    simulate_transfers,
    stage_costs,
    transfer_seconds,
)


@pytest.mark.parametrize(("L", "P"), [(10, 7), (9, 3), (8, 1), (8, 8), (12, 4)])
def test_dp_equals_brute_force_and_beats_absorption(L, P):
    rng = np.random.default_rng(L * 10 + P)
    for _ in range(20):
        c = random_costs(L, rng)
        sizes = min_max_partition(c, P)
        assert len(sizes) == P and sum(sizes) == L and min(sizes) >= 1
        assert stage_costs(c, sizes).max() == brute_force_partition(c, P)
        if P < L:
            before = min_max_partition(c, P + 1)
            for lost in range(P + 1):
                assert stage_costs(c, sizes).max() <= stage_costs(c, absorb_lost_stage(c, before, lost)).max()


def test_dp_on_a_case_by_hand():
    assert min_max_partition([1, 2, 3, 4, 5], 2) == (3, 2)  # 6 | 9, better than 10 | 5
    assert min_max_partition([5, 1, 1, 1, 5], 3) == (1, 3, 1)
    assert stage_costs([5, 1, 1, 1, 5], (1, 3, 1)).tolist() == [5, 3, 5]


def test_absorption_goes_to_the_lighter_neighbour():
    c = [1, 1, 4, 1, 2]
    assert absorb_lost_stage(c, (1, 1, 1, 1, 1), 3) == (1, 1, 1, 2)  # stage 3 joins stage 4 (2 < 4)
    assert absorb_lost_stage(c, (1, 1, 1, 1, 1), 0) == (2, 1, 1, 1)
    with pytest.raises(ValueError):
        absorb_lost_stage(c, (5,), 0)
    with pytest.raises(ValueError):
        absorb_lost_stage(c, (2, 2), 0)  # sizes do not cover the layers


def test_pipeline_closed_form_and_bubble():
    for P, m in [(4, 1), (7, 16), (8, 3)]:
        assert bubble_fraction([2.0] * P, m) == pytest.approx((P - 1) / (m + P - 1))
        assert pipeline_seconds([2.0] * P, m) == pytest.approx(2.0 * (m + P - 1))
    assert pipeline_seconds([1, 3, 2], 4, lag=0.5) == pytest.approx(6 + 1 + 9)


def test_pipeline_on_the_engine_equals_the_closed_form():
    rng = np.random.default_rng(1)
    C = random_costs(6, rng)
    for m in (1, 5, 12):
        assert simulate_pipeline(C, m) == pytest.approx(pipeline_seconds(C, m), rel=1e-12)
        link = Link(bandwidth=1e8, latency=0.01)
        lag = 0.01 + 1e6 / 1e8  # τ = ℓ + a/B <= min C
        assert simulate_pipeline(C, m, link=link, activation_bits=1e6) == pytest.approx(
            pipeline_seconds(C, m, lag=lag), rel=1e-12)


@pytest.mark.parametrize("W", [2, 3, 8])
def test_recovery_traffic_gives_each_survivor_its_share(W):
    S, lost = 1e9, W - 1 if W > 2 else 0
    for strategy in ("interleaved", "neighbour"):
        T = recovery_traffic(S, W, lost, strategy=strategy)
        assert T[lost].sum() == 0 and T[:, lost].sum() == 0 and np.diag(T).sum() == 0
        received = T.sum(axis=0)
        holder = (lost + 1) % W
        # a survivor that holds its own piece's snapshot receives nothing (the one survivor of W = 2)
        expect = [0.0 if r == lost or W == 2 or (strategy == "neighbour" and r == holder) else S / (W * (W - 1))
                  for r in range(W)]
        np.testing.assert_allclose(received, expect)
    interleaved = recovery_traffic(S, W, lost)
    assert ((interleaved > 0).sum(axis=1) <= 1).all()  # each survivor sends at most one piece: disjoint pairs


def test_transfer_times_closed_form_and_engine():
    link = Link(bandwidth=1e10, latency=1e-5)
    S, W = 8e9, 8
    piece = S / (W * (W - 1))
    fast, slow = recovery_traffic(S, W, 3), recovery_traffic(S, W, 3, strategy="neighbour")
    assert transfer_seconds(fast, link) == pytest.approx(1e-5 + piece / 1e10)
    assert transfer_seconds(slow, link) == pytest.approx(1e-5 + (W - 2) * piece / 1e10)
    for T in (fast, slow):
        assert simulate_transfers(T, link) == pytest.approx(transfer_seconds(T, link), rel=1e-12)
    assert transfer_seconds(recovery_traffic(S, 2, 0), link) == 0.0  # the survivor already holds its snapshot


def test_checkpoint_and_communicator_formulas():
    assert checkpoint_seconds(8e9, storage_bandwidth=4e9, steps_lost=10, step_seconds=0.5) == pytest.approx(7.0)
    assert communicator_seconds(7, 0.01, edited_groups=3) == pytest.approx(0.03)
    assert communicator_seconds(7, 0.01, mode="rebuild") == pytest.approx(0.21)
    with pytest.raises(ValueError):
        communicator_seconds(7, 0.01, mode="restart")


def test_dvfs_plan():
    f, ratio = dvfs_plan([1.0, 2.0, 4.0], min_frequency=0.4)
    np.testing.assert_allclose(f, [0.4, 0.5, 1.0])
    assert ratio == pytest.approx((0.16 + 0.5 + 4.0) / 7.0)
    assert (np.array([1.0, 2.0, 4.0]) / f).max() == pytest.approx(4.0)  # no stage slower than the bottleneck
    assert dvfs_plan([3.0, 3.0])[1] == 1.0


def test_refusals():
    with pytest.raises(ValueError):
        min_max_partition([1.0, math.nan], 1)
    with pytest.raises(ValueError):
        min_max_partition([1.0, 2.0], 3)
    with pytest.raises(ValueError):
        brute_force_partition(np.ones(60), 20)
    with pytest.raises(ValueError):
        recovery_traffic(1e9, 1, 0)
    with pytest.raises(TypeError):
        random_costs(4, 0)


def test_micro_batch_balance_is_optimal_against_every_split():
    import itertools

    rng = np.random.default_rng(4)
    for _ in range(10):
        pipes = [random_costs(int(rng.integers(2, 5)), rng) for _ in range(3)]
        total = int(rng.integers(3, 13))
        m = balance_micro_batches(pipes, total)
        assert sum(m) == total and min(m) >= 1
        step = max(pipeline_seconds(c, k) for c, k in zip(pipes, m, strict=True))
        best = min(max(pipeline_seconds(c, k) for c, k in zip(pipes, split, strict=True))
                   for split in itertools.product(range(1, total + 1), repeat=3) if sum(split) == total)
        assert step == pytest.approx(best, rel=1e-12)
    assert balance_micro_batches([[1.0, 1.0], [1.0, 1.0]], 8) == (4, 4)
    with pytest.raises(ValueError):
        balance_micro_batches([[1.0], [1.0]], 1)
