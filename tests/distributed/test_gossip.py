"""Gossip topologies, communication schedules, budgets and decentralised SGD (commlab.distributed.gossip)."""

import math

import pytest
import torch
from gossip_workers import dsgd, gossip_rank, quadratic_dsgd, quadratic_problem

from commlab.comm import Link, SimComm
from commlab.comm.launch import run_workers
from commlab.distributed.gossip import (
    DecentralizedSGD,
    Schedule,
    budget,
    complete,
    consensus_distance,
    exponential,
    random_r_regular,
    ring,
)
from commlab.seeding import SeedTree


def _peers(W):
    return ((W != 0) & ~torch.eye(len(W), dtype=torch.bool)).sum(dim=1)


# -- mixing matrices ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16])
def test_fixed_topologies_are_row_stochastic_with_their_neighbours(n):
    for W in (ring(n), complete(n), exponential(n)):
        assert W.dtype == torch.float64 and W.shape == (n, n)
        assert float((W.sum(dim=1) - 1).abs().max()) <= 1e-12 and (W >= 0).all()
    assert torch.equal(_peers(ring(n)), torch.full((n,), min(2, n - 1)))
    assert torch.equal(_peers(complete(n)), torch.full((n,), n - 1))
    if n == 16:
        assert torch.equal(_peers(exponential(n)), torch.full((n,), 4))  # hops 1, 2, 4, 8
        assert ring(n)[3, 2] == ring(n)[3, 4] == ring(n)[3, 3] == pytest.approx(1 / 3)
        assert ring(n)[3, 5] == 0 and exponential(n)[0, 8] == exponential(n)[0, 0] == pytest.approx(1 / 5)


@pytest.mark.parametrize("r", [0.0, 0.2, 1.0, 2.3, 7.5])
def test_random_matrix_is_row_stochastic_with_r_peers_in_expectation(r):
    n, draws = 16, 300
    g = torch.Generator().manual_seed(1)
    peers = []
    column_counts = torch.zeros(n, n)
    for _ in range(draws):
        W = random_r_regular(n, r, generator=g)
        assert float((W.sum(dim=1) - 1).abs().max()) <= 1e-12 and (W >= 0).all()
        assert (W.diagonal() > 0).all()
        p = _peers(W)
        assert ((p == math.floor(r)) | (p == math.ceil(r))).all()
        # uniform weights over the node and its peers
        nonzero = W[W != 0]
        assert torch.allclose(nonzero, (1.0 / (p + 1)).repeat_interleave(p + 1).double())
        peers.append(p.double())
        column_counts += ((W != 0) & ~torch.eye(n, dtype=torch.bool)).double()
    peers = torch.stack(peers)
    assert float(peers.mean()) == pytest.approx(r, abs=0.04)  # standard error <= 0.5/sqrt(4800) ≈ 0.007
    if r >= 1:  # peers drawn uniformly: every j != i is chosen with probability r/(n - 1)
        rate = column_counts.sum() / (draws * n * (n - 1))
        assert float(rate) == pytest.approx(r / (n - 1), rel=0.05)
        off = column_counts[~torch.eye(n, dtype=torch.bool)] / draws
        assert float(off.max()) < 2.5 * r / (n - 1)


def test_random_matrix_extremes_and_reproducibility():
    n = 6
    assert torch.equal(random_r_regular(n, 0, generator=torch.Generator().manual_seed(0)), torch.eye(n).double())
    assert torch.allclose(random_r_regular(n, n - 1, generator=torch.Generator().manual_seed(0)), complete(n))
    a = random_r_regular(n, 1.5, generator=SeedTree(3).torch("gossip", 7))
    b = random_r_regular(n, 1.5, generator=SeedTree(3).torch("gossip", 7))
    c = random_r_regular(n, 1.5, generator=SeedTree(3).torch("gossip", 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_row_stochastic_mixing_does_not_preserve_the_mean():
    n = 8
    W = random_r_regular(n, 1.0, generator=torch.Generator().manual_seed(0))
    assert float((W.sum(dim=0) - 1).abs().max()) > 0.1  # not doubly stochastic
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mixed = SimComm(n).mix(x, W).wait()
    assert not torch.allclose(mixed.mean(0), x.mean(0))
    assert torch.allclose(SimComm(n).mix(x, ring(n)).wait().mean(0), x.mean(0))  # ring is doubly stochastic



@pytest.mark.parametrize("schedule", [Schedule.single_merge(16, r=0.2), Schedule.window(0.2, 15.0, 0.1, 0.1),
                                      Schedule.window(0.2, 15.0, 0.8, 0.1)])
def test_every_scheduled_round_gossips_with_a_row_stochastic_matrix(schedule):
    # the single-merge notebook's schedules (N = 16, 80 rounds, r = 0.2 and dense windows): every matrix the
    # method hands to comm.mix has rows summing to one (1e-12), non-negative entries and a positive diagonal
    n, rounds, seen = 16, 80, []

    class Recording(SimComm):
        def mix(self, x, weights):
            seen.append(torch.as_tensor(weights, dtype=torch.float64))
            return super().mix(x, weights)

    def grad_fn(x, step, ranks):
        return torch.zeros(n), torch.zeros_like(x)

    dsgd(Recording(n), torch.zeros(n, 3, dtype=torch.float64), grad_fn, rounds=rounds, local_steps=1, lr=0.1,
         schedule=schedule, seed=3)
    r = schedule.per_round(rounds)
    assert len(seen) == sum(v > 0 for v in r) > 0
    assert any(v == n - 1 for v in r)  # the dense rounds are complete graphs
    for W in seen:
        assert float((W.sum(dim=1) - 1).abs().max()) <= 1e-12
        assert (W >= 0).all() and (W.diagonal() > 0).all()
    assert any(float((W.sum(dim=0) - 1).abs().max()) > 0.1 for W in seen)  # and not doubly stochastic

# -- schedules and budgets ----------------------------------------------------------------------------


def test_schedule_values_at_known_progress_points():
    assert Schedule.fixed(0.5)(0.0) == Schedule.fixed(0.5)(0.7) == 0.5
    assert Schedule.linear(0.0, 10.0)(0.25) == pytest.approx(2.5)
    assert Schedule.linear(4.0, 0.0)(1.0) == pytest.approx(0.0)
    cos = Schedule.cosine(10.0, 2.0)
    assert (cos(0.0), cos(0.5), cos(1.0)) == pytest.approx((10.0, 6.0, 2.0))
    trunc = Schedule.truncate(0.2, 15.0, 0.5)
    assert (trunc(0.0), trunc(0.4999), trunc(0.5), trunc(1.0)) == (0.2, 0.2, 15.0, 15.0)
    win = Schedule.window(0.2, 15.0, 0.8, 0.1)
    assert [win(p) for p in (0.0, 0.79, 0.8, 0.85, 0.8999, 0.9, 1.0)] == [0.2, 0.2, 15, 15, 15, 0.2, 0.2]
    merge = Schedule.single_merge(16)
    assert (merge.r_start, merge.r_end, merge.point) == (0.2, 15.0, 0.997)
    assert (merge(0.9969), merge(0.997), merge(1.0)) == (0.2, 15.0, 15.0)


def test_windows_hold_equal_numbers_of_rounds_despite_float_rounding():
    # 0.8 + 0.1 = 0.9000000000000001: round 72 of 80 (p = 0.9) must fall outside the late window
    early = Schedule.window(0.2, 15.0, 0.1, 0.1).per_round(80)
    late = Schedule.window(0.2, 15.0, 0.8, 0.1).per_round(80)
    assert early.count(15.0) == late.count(15.0) == 8
    assert [k + 1 for k, r in enumerate(late) if r == 15.0] == list(range(64, 72))  # p = 64/80 … 71/80
    assert [k + 1 for k, r in enumerate(early) if r == 15.0] == list(range(8, 16))


def test_budget_by_hand():
    n, rounds, size = 16, 80, 4810 * 4
    # single merge: 79 rounds of 0.2 peers and one round of 15 peers, for 16 nodes
    assert budget(Schedule.single_merge(n), n, rounds, size) == pytest.approx(16 * (79 * 0.2 + 15) * size)
    early = budget(Schedule.window(0.2, 15.0, 0.1, 0.1), n, rounds, size)
    late = budget(Schedule.window(0.2, 15.0, 0.8, 0.1), n, rounds, size)
    assert early == pytest.approx(late) == pytest.approx(16 * (72 * 0.2 + 8 * 15) * size)
    assert budget(Schedule.fixed(0.0), n, rounds, size) == 0.0
    assert budget(Schedule.linear(0.0, 4.0), 8, 4, 10.0) == pytest.approx(8 * (1 + 2 + 3 + 4) * 10.0)


def test_single_merge_makes_the_last_round_complete_and_only_it():
    n, rounds = 16, 80
    r = Schedule.single_merge(n).per_round(rounds)
    assert r[-1] == n - 1 and set(r[:-1]) == {0.2}
    assert torch.allclose(random_r_regular(n, r[-1], generator=torch.Generator().manual_seed(0)), complete(n))
    # run it: after the merge every node holds the same model, the mean of what they had trained
    comm = SimComm(4)
    A, b, x0 = quadratic_problem(4, seed=0)
    trained = []

    def grad_fn(x, step, ranks):
        return torch.zeros(4), torch.stack([A[i].T @ (A[i] @ x[i] - b[i]) for i in ranks.tolist()])

    def evaluate(x):
        trained.append(x.clone())
        return {}

    method, records = dsgd(comm, x0.expand(4, -1), grad_fn, rounds=10, local_steps=2, lr=0.1,
                           schedule=Schedule.single_merge(4, r=0.0), evaluate=evaluate, eval_every=10)
    assert torch.allclose(method.params, trained[-1].mean(0).expand(4, -1), atol=1e-12, rtol=0)
    assert consensus_distance(method.params) < 1e-24 and consensus_distance(trained[-1]) > 1e-3
    assert comm.meter.syncs == 1 and comm.meter.peak_bytes == 3 * 5 * 8  # one round, 3 peers, 5 float64
    assert records[-1]["bytes_per_worker"] == 3 * 5 * 8 == records[-1]["peak_bytes_per_sync"]


# -- decentralised SGD ----------------------------------------------------------------------------------


def test_one_round_matches_a_hand_computation():
    # f_i(x) = ½‖x − c_i‖², ∇f_i = x − c_i: two steps give x_i = c_i + (1 − η)²(x0 − c_i), then W x
    n, d, lr = 4, 3, 0.1
    c = torch.arange(n * d, dtype=torch.float64).view(n, d)
    x0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).expand(n, -1)
    W = ring(n)
    steps_seen = []

    def grad_fn(x, step, ranks):
        steps_seen.append((step, ranks.tolist()))
        return 0.5 * (x - c[ranks]).square().sum(1), x - c[ranks]

    comm = SimComm(n, link=Link(bandwidth=8e6, latency=1e-3))
    method, records = dsgd(comm, x0, grad_fn, rounds=1, local_steps=2, lr=lr, topology=W, step_seconds=0.5,
                           evaluate=lambda x: {"consensus": consensus_distance(x)})
    local = c + (1 - lr) ** 2 * (x0 - c)
    assert torch.allclose(method.params, W @ local, atol=1e-12, rtol=0)
    assert steps_seen == [(0, [0, 1, 2, 3]), (1, [0, 1, 2, 3])]
    # each node sends its 3 float64 to its 2 ring neighbours; the clock: 2 steps + α + 2·24 bytes·8/B
    assert torch.equal(comm.meter.bytes_sent, torch.full((n,), 2 * 24.0))
    assert comm.clock == pytest.approx(2 * 0.5 + 1e-3 + 2 * 24 * 8 / 8e6)
    first, last = records
    assert first["step"] == 0 and last["step"] == 2 and last["syncs"] == 1
    assert last["consensus"] == pytest.approx(consensus_distance(local))
    assert last["loss"] == pytest.approx(float((0.5 * (local - c).square().sum(1) / (1 - lr) ** 2).mean()))
    assert torch.equal(x0, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).expand(n, -1))  # input untouched


def test_scheduled_rounds_draw_their_peers_from_the_seed_tree_and_weight_decay():
    n, d, lr, wd, seed = 5, 2, 0.05, 0.1, 11
    x0 = torch.ones(n, d, dtype=torch.float64)
    c = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def grad_fn(x, step, ranks):
        return torch.zeros(n), x - c

    schedule = Schedule.linear(1.0, 3.0)
    method, _ = dsgd(SimComm(n), x0, grad_fn, rounds=2, local_steps=1, lr=lr, schedule=schedule, seed=seed,
                     weight_decay=wd)
    x = x0
    for k in (1, 2):
        x = x - lr * ((x - c) + wd * x)
        x = random_r_regular(n, schedule(k / 2), generator=SeedTree(seed).torch("gossip", k)) @ x
    assert method.r == [2.0, 3.0]
    assert torch.allclose(method.params, x, atol=1e-12, rtol=0)


def test_complete_rounds_as_all_reduce_average_exactly_and_zero_rounds_send_nothing():
    n = 4
    A, b, x0 = quadratic_problem(n, seed=2)

    def grad_fn(x, step, ranks):
        return torch.zeros(n), torch.stack([A[i].T @ (A[i] @ x[i] - b[i]) for i in ranks.tolist()])

    by_gossip, by_reduce = SimComm(n), SimComm(n)
    kw = dict(rounds=3, local_steps=2, lr=0.1, schedule=Schedule.fixed(n - 1.0))
    g = dsgd(by_gossip, x0.expand(n, -1), grad_fn, **kw)[0].params
    r = dsgd(by_reduce, x0.expand(n, -1), grad_fn, complete_as="all_reduce", **kw)[0].params
    assert torch.allclose(g, r, atol=1e-12, rtol=0)
    assert by_gossip.meter.calls == {"mix": 3} and by_reduce.meter.calls == {"all_reduce": 3}
    assert float(by_reduce.meter.bytes_sent[0]) == 3 * 5 * 8 and float(by_gossip.meter.bytes_sent[0]) == 3 * 3 * 5 * 8
    silent = SimComm(n)
    dsgd(silent, x0.expand(n, -1), grad_fn, rounds=3, local_steps=1, lr=0.1, schedule=Schedule.fixed(0))
    assert silent.meter.syncs == 0 and float(silent.meter.bytes_sent.sum()) == 0


@pytest.mark.timeout(120)
def test_sim_and_dist_agree_bit_for_bit():
    seed, n = 5, 2
    results = run_workers(gossip_rank, n, args=(seed,), timeout=90)
    for res in results:
        assert res.status == "ok", f"rank {res.rank} ended {res.status}: {res.error}\n{res.traceback}"
    sim_x, sim_bytes, sim_syncs = quadratic_dsgd(SimComm(n), seed)
    assert sim_syncs > 1
    for rank, res in enumerate(results):
        x, sent, syncs = res.value
        assert torch.equal(x[0], sim_x[rank]), rank
        assert torch.equal(sent, sim_bytes[rank : rank + 1]) and syncs == sim_syncs
    assert not torch.equal(sim_x[0], quadratic_problem(n, seed)[2])  # it moved


# -- bad arguments ----------------------------------------------------------------------------------------


def test_bad_arguments_are_rejected_clearly():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="r must be in"):
        random_r_regular(4, -0.5, generator=g)
    with pytest.raises(ValueError, match="r must be in"):
        random_r_regular(4, 3.5, generator=g)
    with pytest.raises(TypeError, match="generator"):
        random_r_regular(4, 1.0, generator=None)
    with pytest.raises(ValueError, match="n must be"):
        ring(0)
    with pytest.raises(ValueError, match="r_start"):
        Schedule.fixed(-1.0)
    with pytest.raises(ValueError, match="inside \\[0, 1\\]"):
        Schedule.window(0.2, 15.0, 0.95, 0.1)
    with pytest.raises(ValueError, match="width"):
        Schedule.window(0.2, 15.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="point"):
        Schedule.truncate(0.2, 15.0, 1.5)
    with pytest.raises(ValueError, match="kind"):
        Schedule("step", 1.0)
    with pytest.raises(ValueError, match="progress"):
        Schedule.fixed(1.0)(1.2)
    with pytest.raises(ValueError, match="at most 3"):
        budget(Schedule.fixed(4.0), 4, 10, 1.0)
    comm, x = SimComm(3), torch.zeros(3, 2)

    def grad_fn(x, step, ranks):
        return torch.zeros(3), torch.zeros_like(x)

    kw = dict(rounds=2, local_steps=1, lr=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        dsgd(comm, x, grad_fn, **kw)
    with pytest.raises(ValueError, match="exactly one"):
        dsgd(comm, x, grad_fn, schedule=Schedule.fixed(1), topology=ring(3), **kw)
    with pytest.raises(ValueError, match="row-stochastic"):
        dsgd(comm, x, grad_fn, topology=2 * ring(3), **kw)
    with pytest.raises(ValueError, match="at most 2"):
        dsgd(comm, x, grad_fn, schedule=Schedule.fixed(3.0), **kw)
    with pytest.raises(ValueError, match="leading|L = 3"):
        dsgd(comm, torch.zeros(2, 2), grad_fn, schedule=Schedule.fixed(1), **kw)
    with pytest.raises(ValueError, match="lr"):
        dsgd(comm, x, grad_fn, schedule=Schedule.fixed(1), rounds=2, local_steps=1, lr=0.0)
    with pytest.raises(ValueError, match="complete_as"):
        dsgd(comm, x, grad_fn, schedule=Schedule.fixed(1), complete_as="broadcast", **kw)
    with pytest.raises(ValueError, match="shape of params"):
        dsgd(comm, x, lambda x, s, r: (torch.zeros(3), torch.zeros(3)), schedule=Schedule.fixed(1), **kw)
    with pytest.raises(ValueError, match="pass rounds"):
        DecentralizedSGD(comm, x, lr=0.1, schedule=Schedule.fixed(1))
    method = DecentralizedSGD(comm, x, lr=0.1, schedule=Schedule.fixed(1), rounds=1)
    method.step(torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="rounds = 1"):
        method.step(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="\\[N, d\\]"):
        consensus_distance(torch.zeros(3))
