"""Elastic data parallelism (commlab.train.elastic_dp): the re-slicing covers each global micro-batch
exactly once in any world, the canonical reduction gives the fixed world's gradient bit for bit over
SimComm whatever the number of survivors, and the naive shrink and rank-keyed RNG do not."""

import pytest
import torch

from commlab.comm import SimComm
from commlab.comm.membership import Membership
from commlab.train.elastic_dp import (
    DropoutMLPTask,
    SlicingPlan,
    data_parallel_gradient,
    max_relative_deviation,
    train_simulated,
)


@pytest.fixture(scope="module")
def task():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 12, generator=gen)
    y = torch.randint(0, 4, (200,), generator=gen)
    return DropoutMLPTask(x, y, (12, 16, 8, 4), dropout=0.3, seed=3)


@pytest.mark.parametrize("M", [1, 7, 16, 24])
def test_elastic_slicing_covers_every_micro_batch_once_in_any_world(M):
    plan = SlicingPlan(M * 2, 2, 1)
    for W in range(1, M + 3):
        blocks = [plan.micro_batches(k, W) for k in range(W)]
        assert [j for b in blocks for j in b] == list(range(M))  # contiguous, in rank order, each once
        sizes = [len(b) for b in blocks]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        assert plan.samples(W) == 2 * M
        streams = torch.cat([plan.streams(k, W).reshape(-1) for k in range(W)])
        assert torch.equal(streams, torch.arange(2 * M))  # sample i always draws stream i


def test_naive_plan_keeps_the_per_rank_batch_and_rank_streams_change_only_after_a_shrink():
    naive = SlicingPlan(32, 4, 4, policy="naive")
    assert naive.samples(3) == 24 and [list(naive.micro_batches(k, 3)) for k in range(3)] == [[0, 1], [2, 3], [4, 5]]
    sample, rank = SlicingPlan(32, 4, 4), SlicingPlan(32, 4, 4, rng="rank")
    for k in range(4):  # the starting world: both keyings give the same streams
        assert torch.equal(sample.streams(k, 4), rank.streams(k, 4))
    assert not torch.equal(sample.streams(1, 3), rank.streams(1, 3))
    assert torch.equal(rank.streams(1, 3).reshape(-1), 8 + torch.arange(12))  # rank 1's 12 draws, from 8 on


@pytest.mark.parametrize("kwargs", [dict(global_batch=30, micro_batch=4, world_size=3),
                                    dict(global_batch=32, micro_batch=4, world_size=3),
                                    dict(global_batch=32, micro_batch=4, world_size=4, policy="shrink"),
                                    dict(global_batch=32, micro_batch=4, world_size=4, rng="step")])
def test_bad_plans_are_refused(kwargs):
    with pytest.raises(ValueError):
        SlicingPlan(**kwargs)
    with pytest.raises(ValueError, match="rank must be"):
        SlicingPlan(32, 4, 4).micro_batches(3, 3)


def _gradient(task, plan, W, step=5, reduction="canonical"):
    flat = task.init_params()

    def micro(j, streams):
        m = plan.micro_batch
        return task.micro_gradient(flat, step, torch.arange(j * m, (j + 1) * m), streams)

    g = data_parallel_gradient(SimComm(W), plan, micro, task.d, reduction=reduction)
    assert all(torch.equal(row, g[0]) for row in g)
    return g[0]


def test_canonical_gradient_is_bit_identical_for_any_number_of_survivors(task):
    plan = SlicingPlan(48, 2, 8)
    fixed = _gradient(task, plan, 8)
    for W in (7, 5, 3, 2, 1, 24):
        assert torch.equal(_gradient(task, plan, W), fixed), W
    # the scale is 1/G: the gradient of the mean loss over the whole global batch in one pass
    flat = task.init_params()
    whole = task.micro_gradient(flat, 5, torch.arange(48), torch.arange(48)) / 48
    torch.testing.assert_close(fixed, whole, rtol=1e-5, atol=1e-7)


def test_local_reduction_agrees_to_rounding_only(task):
    """Each rank adds its own micro-batches, the all-reduce the ranks: a W-dependent order of float32
    additions, so agreement to about 1e-7 relative, not bit for bit."""
    plan = SlicingPlan(48, 2, 8)
    fixed = _gradient(task, plan, 8)
    for W in (7, 3):
        local = _gradient(task, plan, W, reduction="local")
        torch.testing.assert_close(local, fixed, rtol=1e-5, atol=1e-6)


def test_masks_depend_on_step_and_stream_only(task):
    a = task.masks(2, torch.tensor([5, 9]))
    b = task.masks(2, torch.tensor([9, 1, 5]))
    assert torch.equal(a[0], b[2]) and torch.equal(a[1], b[0])
    assert not torch.equal(task.masks(3, torch.tensor([5]))[0], a[0])
    assert set(a.unique().tolist()) <= {0.0, torch.tensor(1 / 0.7).item()}


def test_elastic_run_keeps_the_fixed_world_trajectory_and_the_others_drift(task):
    steps, fail = 12, 6
    ref = train_simulated(task, SlicingPlan(32, 4, 4), Membership.static(4), steps=steps, lr=0.2)
    loss = Membership.static(4).leave(2, at=fail)
    elastic = train_simulated(task, SlicingPlan(32, 4, 4), loss, steps=steps, lr=0.2)
    assert elastic["world"] == [4] * fail + [3] * (steps - fail)
    assert elastic["loss"] == ref["loss"] and torch.equal(elastic["params"], ref["params"])
    for plan in (SlicingPlan(32, 4, 4, policy="naive"), SlicingPlan(32, 4, 4, rng="rank")):
        run = train_simulated(task, plan, loss, steps=steps, lr=0.2)
        assert run["loss"][: fail + 1] == ref["loss"][: fail + 1]  # identical until the loss
        assert max_relative_deviation(run["loss"], ref["loss"], start=fail + 1) > 1e-6
    # a rank that leaves and rejoins changes nothing either
    churn = Membership.static(4).leave(1, at=3).join(1, at=9)
    assert train_simulated(task, SlicingPlan(32, 4, 4), churn, steps=steps, lr=0.2)["loss"] == ref["loss"]


def test_canonical_buffer_is_what_the_meter_counts(task):
    plan = SlicingPlan(32, 4, 4)
    run = train_simulated(task, plan, Membership.static(4), steps=2, lr=0.1)
    assert run["bytes_per_rank"] == 8 * task.d * 4  # M = 8 rows of d float32 values
    local = train_simulated(task, plan, Membership.static(4), steps=2, lr=0.1, reduction="local")
    assert local["bytes_per_rank"] == task.d * 4


def test_max_relative_deviation_and_its_refusals():
    assert max_relative_deviation([1.0, 2.0, 4.0], [1.0, 2.5, 5.0], start=1) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        max_relative_deviation([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        max_relative_deviation([1.0, 0.0], [1.0, 0.0])


def test_task_refuses_bad_input():
    with pytest.raises(ValueError):
        DropoutMLPTask(torch.rand(5, 3), torch.zeros(4, dtype=torch.long), (3, 2), dropout=0.1, seed=0)
    with pytest.raises(ValueError):
        DropoutMLPTask(torch.rand(5, 3), torch.zeros(5, dtype=torch.long), (3, 2), dropout=1.0, seed=0)
    with pytest.raises(ValueError):
        DropoutMLPTask(torch.rand(5, 4), torch.zeros(5, dtype=torch.long), (3, 2), dropout=0.1, seed=0)
