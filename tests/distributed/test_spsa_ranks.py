"""Shared-seed SPSA on real processes (run_on_ranks), its picklable loss oracle (SoftmaxRegression), and
the one-byte accounting the one-byte notebook relies on (moved out of its claims in issue 16:
``onebyte-bytes``, ``onebyte-fp32-bytes``, and the stacked-simulator ``onebyte-replicas-identical``)."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from commlab.comm import SimComm
from commlab.comm.hashing import state_hash
from commlab.comm.membership import Membership
from commlab.compress import Identity, LogByte
from commlab.data import digits, partition
from commlab.distributed.spsa import SharedSeedSPSA, run_on_ranks
from commlab.problems import SoftmaxRegression


def _problem(world, seed=0, n=200):
    x, y = digits("train")
    x, y = x.reshape(len(x), -1).double()[:n], y[:n]
    return x, y, SoftmaxRegression(x, y, partition.iid(n, world, seed=seed), 16, seed=seed, classes=10)


def test_softmax_regression_is_the_batch_cross_entropy_and_pickles():
    x, y, loss = _problem(2)
    assert loss.d == 64 * 10 + 10
    params = torch.randn(3, 2, loss.d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = loss(params, 1, 5)
    assert got.shape == (3, 2)
    from commlab.data.batches import batch_indices
    for s in range(3):
        idx = batch_indices(loss.shards[1], 5 * 3 + s, 16, seed=0, worker=1)
        for row in range(2):
            W, b = params[s, row, :640].reshape(64, 10), params[s, row, 640:]
            assert got[s, row].item() == pytest.approx(F.cross_entropy(x[idx] @ W + b, y[idx]).item(), rel=1e-12)
    again = pickle.loads(pickle.dumps(loss))
    assert torch.equal(again(params, 1, 5), got)
    with pytest.raises(TypeError, match="y must be"):
        SoftmaxRegression(x, y.float(), loss.shards, 16, seed=0)


@pytest.mark.parametrize("d", [7, 650, 20_000])
def test_each_scalar_costs_one_byte_whatever_the_model_size(d):
    # the meter charges S bytes per active machine per round with LogByte, 4·S with fp32 scalars
    S, K = 8, 3
    for scalars, width in ((LogByte(), 1), (Identity(), 4)):
        comm = SimComm(K)
        algo = SharedSeedSPSA(comm, torch.zeros(K, d, dtype=torch.float64), samples=S, scalars=scalars, seed=1)
        for _ in range(2):
            info = algo.round(lambda p, m, t: (p ** 2).sum(dim=-1))[-1].info
            assert torch.equal(info["bytes_sent"], torch.full((K,), float(width * S), dtype=torch.float64))
        assert torch.equal(comm.meter.bytes_sent, torch.full((K,), 2.0 * width * S))


@pytest.mark.timeout(180)
def test_gloo_processes_keep_bit_identical_replicas_through_a_join_and_follow_the_simulator():
    rounds, world = 12, 3
    members = Membership([0, 1]).join(2, at=4).leave(1, at=8)
    _, _, loss = _problem(world)
    theta0 = torch.zeros(loss.d, dtype=torch.float64)
    settings = dict(lr=0.1, eps=1e-3, samples=4, scalars=LogByte(), seed=3, membership=members)
    traces = run_on_ranks(world, loss, theta0, rounds, timeout=150, **settings)
    sim = SharedSeedSPSA(SimComm(world), theta0.repeat(world, 1), **settings)
    assert [t.rank for t in traces] == [0, 1, 2]
    for t in range(rounds):
        sim.round(loss)
        expected = sim.hashes()
        assert set(expected) == set(members.active(t))
        assert {m: traces[m].hashes[t] for m in expected} == expected
    assert traces[0].hashes[-1] == traces[2].hashes[-1] != traces[1].hashes[-1]  # 1 left, frozen
    assert traces[1].hashes[7] == traces[1].hashes[-1] == state_hash(traces[1].theta)
    assert not torch.equal(traces[0].theta, theta0)
    # machine 0 handed θ to the joiner (8d bytes) and sent 4 bytes in every round
    assert traces[0].bytes_sent == rounds * 4 + 8 * loss.d
    assert traces[1].bytes_sent == 8 * 4 and traces[2].bytes_sent == (rounds - 4) * 4


def test_run_on_ranks_reports_a_rank_that_fails():
    with pytest.raises(RuntimeError, match="rank 0 ended error"):
        run_on_ranks(1, _not_a_loss, torch.zeros(3, dtype=torch.float64), 1, timeout=60)
    with pytest.raises(ValueError, match="theta0"):
        run_on_ranks(1, _not_a_loss, torch.zeros(2, 3), 1)


def _not_a_loss(params, machine, step):
    raise ZeroDivisionError("no loss here")
