"""SimComm, the meter, the α–β link model and compressed rounds, in one process (fast)."""

import math

import pytest
import torch

from commlab.comm import DistComm, Link, SimComm
from commlab.compress import Identity, PowerSGD, RandK, ScaledSign, TopK
from commlab.compress.ef import EF14, EF21, Plain
from commlab.distributed.compressed import compressed_round, gather_payloads


def stack(n=4, d=6, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_all_reduce_sums_every_worker_and_every_row_gets_the_result():
    x = stack()
    comm = SimComm(4)
    total = comm.all_reduce(x, "sum").wait()
    torch.testing.assert_close(total[0], ((x[0] + x[1]) + x[2]) + x[3])
    assert total.shape == x.shape and all(torch.equal(row, total[0]) for row in total)
    torch.testing.assert_close(comm.all_reduce(x, "mean").wait()[2], total[0] / 4)
    assert torch.equal(comm.all_reduce(x, "sum").wait(), total)  # deterministic


def test_gather_broadcast_mix_and_exchange():
    x = stack()
    comm = SimComm(4)
    assert torch.equal(comm.all_gather(x).wait(), x)
    assert all(torch.equal(row, x[3]) for row in comm.broadcast(x, src=3).wait())
    W = torch.rand(4, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(comm.mix(x, W).wait(), W @ x)
    swapped = comm.exchange(x, [(0, 2)]).wait()
    assert torch.equal(swapped, x[[2, 1, 0, 3]])


def test_the_meter_counts_what_each_worker_sends():
    x = stack(4, 10)  # 40 bytes per row
    comm = SimComm(4)
    comm.all_reduce(x)
    comm.broadcast(x, src=1)
    ring = torch.zeros(4, 4)
    for i in range(4):
        ring[i, i], ring[i, (i + 1) % 4] = 0.5, 0.5  # worker i listens to i + 1: each sends once
    comm.mix(x, ring)
    comm.exchange(x, [(0, 1)])
    assert comm.meter.bytes_sent.tolist() == [40 + 0 + 40 + 40, 40 + 40 + 40 + 40, 40 + 0 + 40 + 0, 40 + 0 + 40 + 0]
    assert comm.meter.syncs == 4 and comm.meter.peak_bytes == 40
    assert comm.meter.calls == {"all_reduce": 1, "broadcast": 1, "mix": 1, "exchange": 1}
    comm.meter.reset()
    assert comm.meter.syncs == 0 and comm.meter.bytes_sent.sum() == 0


def test_the_link_model_follows_the_ring_and_tree_formulas():
    link = Link(bandwidth=8e6, latency=1e-3)  # one byte per microsecond
    assert link.seconds("all_reduce", 1000, 4) == pytest.approx(6e-3 + 2 * 3 / 4 * 1e-3)
    assert link.seconds("all_gather", 1000, 4) == pytest.approx(3 * (1e-3 + 1e-3))
    assert link.seconds("broadcast", 1000, 5) == pytest.approx(3 * 2e-3)
    assert link.seconds("p2p", 1000, 4, degree=2) == pytest.approx(1e-3 + 2e-3)
    assert link.seconds("all_reduce", 10**9, 1) == 0.0  # nobody to talk to
    assert Link().seconds("all_gather", 10**9, 8) == 0.0  # unlimited, no latency


def test_the_simulated_clock_adds_compute_and_link_time():
    comm = SimComm(2, link=Link(bandwidth=100e6, latency=0.0))
    comm.advance(0.5)
    work = comm.all_reduce(torch.zeros(2, 250_000))  # 1 MB: 2·(1/2)·8 Mbit / 100 Mbit/s = 80 ms
    assert work.finish_time == pytest.approx(0.58) and comm.clock == work.finish_time
    assert SimComm(2).all_reduce(torch.zeros(2, 9)).finish_time == 0.0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda c: c.all_reduce(torch.ones(3, 2)), ValueError, "leading worker axis of length 4"),
        (lambda c: c.all_reduce(torch.ones(4, 2, dtype=torch.int64)), TypeError, "floating dtype"),
        (lambda c: c.all_reduce(torch.ones(4, 2), "max"), ValueError, "op must be one of"),
        (lambda c: c.all_gather([1, 2, 3, 4]), TypeError, "torch.Tensor"),
        (lambda c: c.broadcast(torch.ones(4, 2), src=4), ValueError, "src"),
        (lambda c: c.mix(torch.ones(4, 2), torch.ones(3, 3)), ValueError, r"shape \[4, 4\]"),
        (lambda c: c.mix(torch.ones(4, 2), torch.full((4, 4), math.nan)), ValueError, "NaN"),
        (lambda c: c.exchange(torch.ones(4, 2), [(0, 1), (1, 2)]), ValueError, "disjoint"),
        (lambda c: c.exchange(torch.ones(4, 2), [(0, 0)]), ValueError, "disjoint"),
        (lambda c: c.exchange(torch.ones(4, 2), [(0, 7)]), ValueError, "pair member"),
        (lambda c: c.advance(-1.0), ValueError, "seconds"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call(SimComm(4))


@pytest.mark.parametrize("world_size", [0, -1, 2.0, True, "4"])
def test_invalid_world_size(world_size):
    with pytest.raises((TypeError, ValueError), match="world_size"):
        SimComm(world_size)


def test_bad_links_are_rejected():
    with pytest.raises(ValueError, match="bandwidth"):
        Link(bandwidth=0)
    with pytest.raises(ValueError, match="latency"):
        Link(latency=-1e-3)
    with pytest.raises(TypeError, match="link"):
        SimComm(2, link=100e6)


def test_distcomm_needs_an_initialised_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistComm()


MECHANISMS = {
    "ef21-topk": lambda: EF21(TopK(k=2)),
    "ef14-sign": lambda: EF14(ScaledSign()),
    "powersgd": lambda: Plain(PowerSGD(rank=1)),
    "dense": lambda: Plain(Identity()),
    "shared-randk": lambda: EF21(RandK(k=3, shared=True)),
}


@pytest.mark.parametrize("name", list(MECHANISMS))
def test_a_compressed_round_equals_the_mechanism_in_process(name):
    """Over SimComm the wire changes nothing: same estimate as ``mechanism.step`` on the stack."""
    mechanism, twin = MECHANISMS[name](), MECHANISMS[name]()
    comm = SimComm(4)
    for t in range(5):
        g = stack(4, 12, seed=t)
        estimate, payload = compressed_round(comm, mechanism, g, torch.Generator().manual_seed(t))
        expected, _ = twin.step(g, torch.Generator().manual_seed(t))
        torch.testing.assert_close(estimate, expected, rtol=1e-6, atol=1e-6)
    # the meter counts the compressor's bits, rounded up to whole bytes per message
    if mechanism.compressor.linear:
        per_round = payload["values"].row_bits()[0] / 8
    else:
        per_round = math.ceil(payload.row_bits[0] / 8)
    assert comm.meter.bytes_sent.tolist() == [5 * per_round] * 4


def test_gathered_payloads_round_trip_through_their_bytes():
    payload = TopK(k=3).compress(stack(4, 50))
    gathered = gather_payloads(SimComm(4), payload)
    assert gathered.bits == payload.bits
    assert torch.equal(TopK(k=3).decompress(gathered), TopK(k=3).decompress(payload))


def test_a_compressed_round_checks_its_arguments():
    with pytest.raises(TypeError, match="mechanism"):
        compressed_round(SimComm(2), TopK(k=1), stack(2, 4))
    with pytest.raises(ValueError, match="2 workers"):
        compressed_round(SimComm(2), EF21(TopK(k=1)), stack(3, 4))
