"""SimComm and DistComm agree: the same collectives and the same algorithm on N stacked workers and
on N gloo processes (briefs/_conventions.md §6). Every wait is bounded by a timeout, and the fault
tests check how the survivors end with processes the launcher joins itself (not ``mp.spawn``)."""

from functools import partial

import pytest
import torch
from dist_workers import (
    collectives,
    descent,
    dies_after_one_collective,
    least_squares_descent,
    mismatched,
    stalls,
    wrong_local_axis,
)

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.compress import Identity, RandK, ScaledSign, TopK
from commlab.compress.ef import EF14, EF21, Plain

pytestmark = pytest.mark.timeout(120)


def _ok(results):
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
    return [r.value for r in results]


def _mixing(n):
    """A ring: keep half, give a quarter to each neighbour (just the self-loop for n = 1)."""
    W = torch.eye(n) * 0.5
    for i in range(n):
        W[i, (i + 1) % n] += 0.25
        W[i, (i - 1) % n] += 0.25
    return W


@pytest.mark.parametrize("world_size", [2, 3])
def test_collectives_are_bit_identical_in_deterministic_mode(world_size):
    x = torch.randn(world_size, 5, 7, generator=torch.Generator().manual_seed(world_size))
    W, pairs = _mixing(world_size), [(0, world_size - 1)]
    values = _ok(run_workers(collectives, world_size, args=(x, W, pairs, True), timeout=60))
    sim = SimComm(world_size)
    expected = {
        "sum": sim.all_reduce(x, "sum").wait(), "mean": sim.all_reduce(x, "mean").wait(),
        "gather": sim.all_gather(x).wait()[None].expand(world_size, *x.shape),
        "broadcast": sim.broadcast(x, world_size - 1).wait(), "mix": sim.mix(x, W).wait(),
        "exchange": sim.exchange(x, pairs).wait(),
    }
    for rank, (out, sent, syncs) in enumerate(values):
        for name, tensor in expected.items():
            got = out[name] if name == "gather" else out[name][0]
            assert torch.equal(got, tensor[rank]), (name, rank)
        # the meter of rank r is row r of the simulator's meter
        assert torch.equal(sent, sim.meter.bytes_sent[rank : rank + 1]) and syncs == sim.meter.syncs == 6


def test_a_ring_all_reduce_agrees_within_float_rounding():
    x = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    values = _ok(run_workers(collectives, 4, args=(x, _mixing(4), [(0, 1), (2, 3)], False), timeout=60))
    reference = SimComm(4).all_reduce(x, "sum").wait()[0]
    for out, _, _ in values:
        # gloo's ring adds in another order; float32 sums of 4 terms agree to a few ulps
        torch.testing.assert_close(out["sum"][0], reference, rtol=1e-6, atol=1e-6)


SCHEMES = {
    "dense": partial(Plain, Identity()),
    "ef21-topk": partial(EF21, TopK(k=4)),
    "ef14-scaled-sign": partial(EF14, ScaledSign()),
    "shared-randk": partial(Plain, RandK(k=8, shared=True)),  # linear: goes through the all-reduce
}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_sim_equals_dist_for_compressed_descent(name):
    scheme, world_size = SCHEMES[name], 2
    sim_iterates, sim_bytes, sim_syncs = least_squares_descent(SimComm(world_size), scheme)
    values = _ok(run_workers(descent, world_size, args=(scheme, True), timeout=60))
    for rank, (iterates, sent, syncs) in enumerate(values):
        assert torch.equal(iterates, sim_iterates), f"rank {rank} left the simulator's trajectory"
        assert torch.equal(sent, sim_bytes[rank : rank + 1]) and syncs == sim_syncs
    assert not torch.equal(sim_iterates[-1], sim_iterates[0])  # it moved


def test_sim_equals_dist_without_deterministic_mode_within_tolerance():
    scheme = SCHEMES["dense"]
    sim_iterates, _, _ = least_squares_descent(SimComm(3), scheme)
    for iterates, _, _ in _ok(run_workers(descent, 3, args=(scheme, False), timeout=60)):
        torch.testing.assert_close(iterates, sim_iterates, rtol=0, atol=1e-12)


def test_a_dead_rank_makes_the_survivor_fail_clearly_and_quickly():
    results = run_workers(dies_after_one_collective, 2, timeout=60)
    survivor, dead = results
    assert dead.status == "died" and dead.exitcode == 3
    assert survivor.status == "error"
    assert survivor.error.startswith("CommunicationError") and "another rank probably died" in survivor.error
    assert survivor.seconds < 30


def test_a_stalled_rank_makes_the_others_time_out_instead_of_hanging():
    from datetime import timedelta

    results = run_workers(stalls, 3, args=(8.0,), timeout=60, collective_timeout=timedelta(seconds=2))
    *waiting, sleeper = results
    assert sleeper.status == "ok" and sleeper.value == "slept"
    for r in waiting:
        assert r.status == "error" and r.error.startswith("CommunicationError"), r.error
        assert r.seconds < sleeper.seconds  # they gave up before the sleeper woke


def test_mismatched_shapes_across_ranks_are_a_clear_error_on_every_rank():
    results = run_workers(mismatched, 3, timeout=60)
    for r in results:
        assert r.status == "error" and r.error.startswith("ValueError")
        assert "rank 0: (1, 3)" in r.error and "rank 2: (1, 5)" in r.error


def test_a_rank_hosts_exactly_one_worker():
    for r in run_workers(wrong_local_axis, 2, timeout=60):
        assert r.status == "error" and "leading worker axis of length 1" in r.error


@pytest.mark.parametrize("world_size", [0, -2, 1.5, True])
def test_invalid_world_sizes_are_rejected_before_anything_starts(world_size):
    with pytest.raises((TypeError, ValueError), match="world_size"):
        run_workers(collectives, world_size)
