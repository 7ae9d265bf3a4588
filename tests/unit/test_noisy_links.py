"""NoisyLinks: what each collective delivers over AWGN and bit-flip links, seeded and resumable."""

import pytest
import torch

from commlab.channels import AWGN, BinarySymmetricChannel
from commlab.comm import Link, NoisyLinks, SimComm
from commlab.compress import Identity, TopK
from commlab.compress.ef import Plain
from commlab.distributed.compressed import compressed_round

N, D = 4, 20_000
UP, DOWN = 1e-2, 4e-3  # noise variances per entry


def _x(n=N, d=D, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(7), dtype=dtype)


def _noisy(n=N, up=UP, down=DOWN, seed=0, **kw):
    channel = lambda v: None if v is None else AWGN(no=v, real=True)  # noqa: E731
    return NoisyLinks(SimComm(n, **kw), uplink=channel(up), downlink=channel(down), seed=seed)


def _ring(n):
    W = torch.eye(n, dtype=torch.float64) * 0.5
    for i in range(n):
        W[i, (i + 1) % n] += 0.25
        W[i, (i - 1) % n] += 0.25
    return W


def _close_variance(noise, expected, rel=0.05):
    assert noise.var().item() == pytest.approx(expected, rel=rel)


def test_without_channels_every_collective_is_the_plain_one():
    x, W, plain = _x(d=9), _ring(N), SimComm(N)
    noisy = _noisy(up=None, down=None)
    for op, args in [("all_reduce", ("sum",)), ("all_reduce", ("mean",)), ("all_gather", ()),
                     ("broadcast", (2,)), ("mix", (W,)), ("exchange", ([(0, 3)],))]:
        assert torch.equal(getattr(noisy, op)(x, *args).wait(), getattr(plain, op)(x, *args).wait()), op
    assert torch.equal(noisy.meter.bytes_sent, plain.meter.bytes_sent) and noisy.meter.syncs == plain.meter.syncs


def test_all_reduce_adds_each_senders_uplink_and_each_receivers_downlink():
    x = _x()
    total = _noisy().all_reduce(x, "sum").wait() - x.sum(dim=0)
    for row in total:
        _close_variance(row, N * UP + DOWN)  # Σ_j u_j + d_i
    common = total[0] - total[1]  # the uplink part is shared, the downlink part is each receiver's own
    _close_variance(common, 2 * DOWN)
    mean = _noisy().all_reduce(x, "mean").wait() - x.mean(dim=0)
    _close_variance(mean[0], UP / N + DOWN)


def test_broadcast_source_keeps_its_own_row_and_the_others_hear_it_through_both_links():
    x = _x()
    out = _noisy().broadcast(x, 1).wait()
    assert torch.equal(out[1], x[1])
    for row in (0, 2, 3):
        _close_variance(out[row] - x[1], UP + DOWN)


def test_gossip_keeps_the_own_term_exact_and_noises_each_received_message():
    x = _x()
    assert torch.equal(_noisy().mix(x, torch.eye(N)).wait(), x)  # no message crosses
    W = _ring(N)
    out = _noisy().mix(x, W).wait() - W.to(x.dtype) @ x
    for row in out:
        _close_variance(row, 2 * 0.25**2 * (UP + DOWN))  # Σ_{j≠i} W_ij² (σ_u² + σ_d²)


def test_exchange_noises_partners_only_and_gather_applies_the_uplink_once():
    x = _x()
    out = _noisy().exchange(x, [(0, 2)]).wait()
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])
    _close_variance(out[0] - x[2], UP + DOWN)
    gathered = _noisy().all_gather(x).wait()
    assert gathered.shape == x.shape
    for row in range(N):
        _close_variance(gathered[row] - x[row], UP)


def test_noise_is_keyed_by_seed_and_call_and_resumes_from_the_state_dict():
    x = _x(d=50)
    a, b, other = _noisy(seed=3), _noisy(seed=3), _noisy(seed=4)
    first = a.all_reduce(x).wait()
    assert torch.equal(first, b.all_reduce(x).wait())
    assert not torch.equal(first, other.all_reduce(x).wait())
    assert not torch.equal(first, a.all_reduce(x).wait())  # the next call draws afresh
    state = a.state_dict()
    expected = [a.mix(x, _ring(N)).wait(), a.broadcast(x, 0).wait()]
    resumed = _noisy(seed=3)
    resumed.load_state_dict(state)
    assert resumed.calls == 2 and resumed.meter.syncs == 2
    assert torch.equal(resumed.mix(x, _ring(N)).wait(), expected[0])
    assert torch.equal(resumed.broadcast(x, 0).wait(), expected[1])
    assert resumed.noise["uplink"].state_dict() == a.noise["uplink"].state_dict()


def test_counts_match_what_was_added():
    x = _x(d=100)
    comm = _noisy()
    out = comm.all_reduce(x, "sum").wait()
    up, down = comm.noise["uplink"], comm.noise["downlink"]
    assert (up.messages, up.entries, down.messages, down.entries) == (N, N * 100, N, N * 100)
    assert up.energy == pytest.approx(N * 100 * UP, rel=0.2)
    assert (out - x.sum(0)).square().sum().item() > 0


def test_bit_flips_act_on_the_serialised_bytes():
    x = _x(d=64, dtype=torch.float32)
    always = NoisyLinks(SimComm(N), uplink=BinarySymmetricChannel(1.0), seed=0)
    flipped = always.all_gather(x).wait()
    assert torch.equal(flipped.view(torch.int32), ~x.view(torch.int32))  # every bit of every float
    assert always.noise["uplink"].bit_flips == N * 64 * 32
    payload = torch.zeros(N, 4000, dtype=torch.uint8)
    comm = NoisyLinks(SimComm(N), downlink=BinarySymmetricChannel(0.01), seed=1)
    heard = comm.exchange(payload, [(0, 1), (2, 3)]).wait()
    assert _popcount(heard) == comm.noise["downlink"].bit_flips
    assert comm.noise["downlink"].bit_flips / comm.noise["downlink"].bits == pytest.approx(0.01, rel=0.1)


def _popcount(x: torch.Tensor) -> int:
    bits = (x.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1
    return int(bits.sum())


def test_started_collectives_carry_the_same_noise_and_the_link_time():
    x = _x(d=50)
    direct = _noisy(link=Link(bandwidth=1e6)).all_reduce(x).wait()
    comm = _noisy(link=Link(bandwidth=1e6))
    work = comm.start("all_reduce", x)
    assert comm.clock == 0.0 and work.finish_time > 0
    assert torch.equal(work.wait(), direct) and comm.clock == work.finish_time


def _round(comm, compressor, x):
    return compressed_round(comm, Plain(compressor), x, torch.Generator().manual_seed(0))[0]


def test_an_all_reduced_round_runs_over_noisy_links_unchanged():
    x = _x(d=30, dtype=torch.float32)
    clean = _round(SimComm(N), Identity(), x)
    assert torch.equal(_round(NoisyLinks(SimComm(N), seed=0), Identity(), x), clean)
    assert 0 < (_round(_noisy(up=1e-4, down=None), Identity(), x) - clean).abs().max() < 0.1


def test_a_gathered_payload_crosses_the_noisy_wire_even_in_the_simulator():
    x = _x(d=30, dtype=torch.float32)
    clean = _round(SimComm(N), TopK(ratio=0.5), x)
    assert torch.equal(_round(NoisyLinks(SimComm(N), seed=0), TopK(ratio=0.5), x), clean)
    flips = NoisyLinks(SimComm(N), uplink=BinarySymmetricChannel(1e-3), seed=0)
    received = _round(flips, TopK(ratio=0.5), x)  # with seed 0 the flipped payload still decodes
    assert flips.noise["uplink"].bit_flips > 0 and not torch.equal(received, clean)


def test_refusals():
    with pytest.raises(TypeError, match="Communicator"):
        NoisyLinks(object(), seed=0)
    with pytest.raises(TypeError, match="AWGN, a BinarySymmetricChannel"):
        NoisyLinks(SimComm(2), uplink="awgn", seed=0)
    with pytest.raises(ValueError, match="nominal"):
        NoisyLinks(SimComm(2), uplink=AWGN(10.0, real=True, power="measured"), seed=0)
    with pytest.raises(ValueError, match="seed"):
        NoisyLinks(SimComm(2), seed=-1)
    comm = NoisyLinks(SimComm(2), uplink=AWGN(no=1.0, real=True), seed=0)
    with pytest.raises(TypeError, match="analog"):
        comm.all_gather(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="real=False"):
        comm.all_reduce(torch.zeros(2, 3, dtype=torch.complex64))
    flips = NoisyLinks(SimComm(2), downlink=BinarySymmetricChannel(0.1), seed=0)
    with pytest.raises(TypeError, match="gossip"):
        flips.mix(torch.zeros(2, 3), _ring(2))
    with pytest.raises(ValueError, match="leading worker axis"):
        comm.all_reduce(torch.zeros(3, 3))
