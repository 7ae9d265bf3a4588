"""GEMM + reduce-scatter schedules of a row-parallel layer (commlab.systems.overlap): the brief's closed
forms by hand, the schedules on the event engine against them (sequential, one chunk, a two-rank
pipeline), the bounds of overlap, the memory-contention model piece by piece, the event log and errors."""

from __future__ import annotations

import math

import pytest

from commlab.comm import Link
from commlab.systems import overlap as O
from commlab.systems.events import Network

F, B, ELL = 1e12, 1e9, 1e-6  # FLOP/s, bit/s, s
HW = O.Hardware(peak_flops=2 * F, gemm_efficiency=0.5, link=Link(B, ELL))


def layer(ranks=4, tokens=256, in_features=1024, out_features=512):
    return O.RowParallelLayer(tokens, in_features, out_features, ranks)


COMPUTE_BOUND = dict(tokens=64, in_features=131072, out_features=64)  # T_rs/T_g = 0.06 (p − 1)
COMM_BOUND = dict(tokens=256, in_features=64, out_features=512)  # T_rs/T_g well above 1


def test_closed_forms_by_hand():
    L = O.RowParallelLayer(1024, 2048, 512, 4, bytes_per_value=2)
    tg = 2 * 1024 * 512 * 512 / (2 * F * 0.5)
    trs = 3 * (ELL + 8 * 1024 * 512 * 2 / 4 / B)
    assert L.flops == 2 * 1024 * 512 * 512 and L.output_bytes == 1024 * 512 * 2
    assert O.gemm_seconds(L, HW) == pytest.approx(tg, rel=1e-15)
    assert O.reduce_scatter_seconds(L, HW) == pytest.approx(trs, rel=1e-15)
    assert O.sequential_seconds(L, HW) == pytest.approx(tg + trs, rel=1e-15)
    assert O.software_overlap_seconds(L, HW, chunks=4, kappa_compute=0.15, kappa_memory=0.3) == pytest.approx(
        max(1.15 * tg, 1.3 * trs) + min(tg, trs) / 4, rel=1e-15)
    assert O.t3_seconds(L, HW, tiles=64, kappa_memory=0.05) == pytest.approx(
        max(tg, 1.05 * trs) + min(tg, trs) / 64, rel=1e-15)
    # one chunk and no contention: software overlap is sequential; contention-free overlap >= the longer stream
    assert O.software_overlap_seconds(L, HW, chunks=1, kappa_compute=0, kappa_memory=0) == pytest.approx(tg + trs)
    for chunks in (2, 8, 1000):
        assert max(tg, trs) <= O.software_overlap_seconds(L, HW, chunks=chunks, kappa_compute=0, kappa_memory=0)


def test_software_overlap_loses_to_sequential_beyond_the_briefs_ratio():
    """With κ_c = 0.15, κ_m = 0.30, c = 4 and T_rs >= T_g: T_sw > T_seq iff 0.3·T_rs > 0.75·T_g,
    i.e. T_rs > 2.5·T_g (the brief's remark)."""
    hw = O.Hardware(peak_flops=2 * F, gemm_efficiency=0.5, link=Link(B, 0.0))
    for in_features, expect_loss in ((16000, False), (6000, True)):  # T_rs/T_g = 24,000/K: 1.5 and 4
        L = O.RowParallelLayer(256, in_features, 512, 4)
        ratio = O.reduce_scatter_seconds(L, hw) / O.gemm_seconds(L, hw)
        loses = O.software_overlap_seconds(L, hw) > O.sequential_seconds(L, hw)
        assert loses == (ratio > 2.5) == expect_loss


def test_dram_bytes_by_hand():
    L = O.RowParallelLayer(1024, 2048, 512, 4, bytes_per_value=2)
    gemm = 2 * (1024 * 512 + 512 * 512 + 1024 * 512)
    S = 1024 * 512 * 2
    assert O.dram_bytes(L, "sequential") == O.dram_bytes(L, "software") == gemm + 3 * 3 * S / 4
    assert O.dram_bytes(L, "t3") == gemm + 3 * S / 4
    assert O.dram_bytes(L, "sequential") - O.dram_bytes(L, "t3") == 2 * (4 - 1) * S / 4


@pytest.mark.parametrize("ranks", [1, 2, 4, 8])
@pytest.mark.parametrize("latency", [0.0, ELL])
def test_sequential_on_the_engine_is_gemm_plus_reduce_scatter(ranks, latency):
    hw = O.Hardware(peak_flops=2 * F, gemm_efficiency=0.5, link=Link(B, latency))
    L = layer(ranks)
    expected = O.gemm_seconds(L, hw) + O.reduce_scatter_seconds(L, hw)
    for kappas in ((0.0, 0.0), (0.15, 0.3)):  # nothing overlaps, so contention changes nothing
        seconds, _ = O.simulate(L, hw, "sequential", kappa_compute=kappas[0], kappa_memory=kappas[1])
        assert seconds == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [COMPUTE_BOUND, COMM_BOUND], ids=["compute-bound", "comm-bound"])
@pytest.mark.parametrize("kappas", [(0.0, 0.0), (0.15, 0.3)])
def test_one_chunk_is_sequential(shape, kappas):
    L = layer(4, **shape)
    sequential, _ = O.simulate(L, HW, "sequential")
    one_chunk, _ = O.simulate(L, HW, "software", chunks=1, kappa_compute=kappas[0], kappa_memory=kappas[1])
    assert one_chunk == pytest.approx(sequential, rel=1e-12)
    assert sequential == pytest.approx(O.sequential_seconds(L, HW), rel=1e-12)


@pytest.mark.parametrize("shape", [COMPUTE_BOUND, COMM_BOUND], ids=["compute-bound", "comm-bound"])
@pytest.mark.parametrize("chunks", [2, 4, 8])
def test_two_ranks_without_latency_or_contention_are_a_two_stage_pipeline(shape, chunks):
    """p = 2 has one ring step, so with α = 0 and κ = 0 the software overlap is a two-stage pipeline of c
    pieces: T = max(T_g, T_rs) + min(T_g, T_rs)/c, exactly its closed form. T3 pipelines the same way
    when it is communication-bound; when it is compute-bound it ends with the GEMM, since the chunk a rank
    keeps is computed last and sent nowhere (the closed form's min/c_tile is then an upper bound)."""
    hw = O.Hardware(peak_flops=2 * F, gemm_efficiency=0.5, link=Link(B, 0.0))
    L = layer(2, **shape)
    software, _ = O.simulate(L, hw, "software", chunks=chunks)
    t3, _ = O.simulate(L, hw, "t3", tiles=chunks)
    assert software == pytest.approx(O.software_overlap_seconds(L, hw, chunks=chunks, kappa_compute=0,
                                                                kappa_memory=0), rel=1e-12)
    if shape is COMM_BOUND:
        assert t3 == pytest.approx(O.t3_seconds(L, hw, tiles=chunks, kappa_memory=0), rel=1e-12)
    else:
        assert t3 == pytest.approx(O.gemm_seconds(L, hw), rel=1e-12)
        assert t3 < O.t3_seconds(L, hw, tiles=chunks, kappa_memory=0)


@pytest.mark.parametrize("shape", [COMPUTE_BOUND, COMM_BOUND], ids=["compute-bound", "comm-bound"])
@pytest.mark.parametrize("ranks", [4, 8])
def test_without_contention_overlap_is_bounded_by_the_longer_stream(shape, ranks):
    L = layer(ranks, **shape)
    tg, trs = O.gemm_seconds(L, HW), O.reduce_scatter_seconds(L, HW)
    wire = ELL + (ranks - 1) * L.output_bits / ranks / B  # one latency, then every bit over one wire
    for chunks in (2, 4, 8):
        software, _ = O.simulate(L, HW, "software", chunks=chunks)
        assert max(tg, trs) * (1 - 1e-12) <= software  # each chunk's collective pays its latencies again
    for tiles in (ranks, 4 * ranks):
        tile, _ = O.simulate(L, HW, "t3", tiles=tiles)
        chunk, _ = O.simulate(L, HW, "t3", tiles=tiles, trigger="chunk")
        assert max(tg, wire) * (1 - 1e-12) <= tile <= chunk * (1 + 1e-12)
        assert max(tg, trs) * (1 - 1e-12) <= chunk < tg + trs
    # finer tiles approach the longer stream (compute-bound, T3 ends with its GEMM either way)
    coarse, _ = O.simulate(L, HW, "t3", tiles=ranks)
    fine, _ = O.simulate(L, HW, "t3", tiles=8 * ranks)
    assert fine < coarse if shape is COMM_BOUND else fine == pytest.approx(coarse, rel=1e-12) == tg


def _one_rank_contends(kappa_compute, kappa_memory, flops, bits, computing_rank):
    """Rank ``computing_rank`` computes ``flops`` while ``bits`` flow from rank 0 to rank 1, both from t = 0."""
    net = O.ContendedNetwork(3, Link(B, 0.0), flops_per_second=F, kappa_compute=kappa_compute,
                             kappa_memory=kappa_memory)
    ends = {}

    def compute():
        yield from net.compute(computing_rank, flops)
        ends["compute"] = net.now

    def send():
        yield from net.send(0, 1, bits)
        ends["send"] = net.now

    net.start(compute())
    net.start(send())
    net.start(net.recv(1, 0))
    net.run()
    return ends


@pytest.mark.parametrize("computing_rank", [0, 1])
def test_contention_slows_both_streams_while_both_run(computing_rank):
    kc, km = 0.15, 0.3
    # the GEMM ends first: both slowed until then, the rest of the message at full rate
    ends = _one_rank_contends(kc, km, flops=1e6, bits=4e6, computing_rank=computing_rank)
    t1 = 1e6 * (1 + kc) / F
    assert ends["compute"] == pytest.approx(t1, rel=1e-12)
    assert ends["send"] == pytest.approx(t1 + (4e6 - t1 * B / (1 + km)) / B, rel=1e-12)
    # the message ends first: the GEMM runs at F/(1 + κ_c) until then, at F after
    ends = _one_rank_contends(kc, km, flops=4e9, bits=1e6, computing_rank=computing_rank)
    t1 = 1e6 * (1 + km) / B
    assert ends["send"] == pytest.approx(t1, rel=1e-12)
    assert ends["compute"] == pytest.approx(t1 + (4e9 - t1 * F / (1 + kc)) / F, rel=1e-12)


def test_contention_stays_on_its_rank():
    ends = _one_rank_contends(0.15, 0.3, flops=1e6, bits=1e6, computing_rank=2)  # rank 2 is not on the route
    assert ends == {"compute": pytest.approx(1e6 / F, rel=1e-12), "send": pytest.approx(1e6 / B, rel=1e-12)}
    ends = _one_rank_contends(0.0, 0.0, flops=1e6, bits=1e6, computing_rank=0)  # κ = 0: the plain network
    assert ends == {"compute": pytest.approx(1e6 / F, rel=1e-12), "send": pytest.approx(1e6 / B, rel=1e-12)}


@pytest.mark.parametrize("shape", [COMPUTE_BOUND, COMM_BOUND], ids=["compute-bound", "comm-bound"])
def test_contention_slows_the_overlapped_schedules(shape):
    L = layer(4, **shape)
    for schedule, kappas in (("software", (0.15, 0.3)), ("t3", (0.0, 0.05)), ("t3", (0.0, 0.3))):
        free, _ = O.simulate(L, HW, schedule)
        contended, _ = O.simulate(L, HW, schedule, kappa_compute=kappas[0], kappa_memory=kappas[1])
        if schedule == "t3" and shape is COMPUTE_BOUND:  # its GEMM is never slowed and hides the slower RS
            assert contended == pytest.approx(free, rel=1e-12)
        else:
            assert free < contended
        if schedule == "t3":  # the closed form charges κ_m' to the whole ring, the engine only while the GEMM
            closed = O.t3_seconds(L, HW, tiles=64, kappa_memory=kappas[1])  # runs; the fills differ (T_g/p, T_g/64)
            chunked, _ = O.simulate(L, HW, "t3", trigger="chunk", kappa_memory=kappas[1])
            assert chunked <= closed * (1 + 0.5 / L.ranks)
    # T3's GEMM is never slowed (κ_c = 0): in a compute-bound layer its last tile ends at T_g
    L = layer(4, **COMPUTE_BOUND)
    _, net = O.simulate(L, HW, "t3", kappa_memory=0.3)
    last = max(end for _, end in O.busy_intervals(net.log, 0)["compute"])
    assert last == pytest.approx(O.gemm_seconds(L, HW), rel=1e-12)


def test_the_event_log_is_deterministic_and_gives_the_gantt_intervals():
    L = layer(2)
    first = O.simulate(L, HW, "t3", tiles=8, kappa_memory=0.05)[1].log
    assert first == O.simulate(L, HW, "t3", tiles=8, kappa_memory=0.05)[1].log
    seconds, net = O.simulate(L, HW, "sequential")
    busy = O.busy_intervals(net.log, 0)
    tg = O.gemm_seconds(L, HW)
    assert busy["compute"] == [(0.0, pytest.approx(tg, rel=1e-12))]
    assert busy["send"] == [(pytest.approx(tg, rel=1e-12), pytest.approx(seconds, rel=1e-12))]
    tiles = O.busy_intervals(O.simulate(L, HW, "t3", tiles=8)[1].log, 1)
    assert len(tiles["compute"]) == 8 and len(tiles["send"]) == 4  # p − 1 = 1 step of 8/p = 4 tiles
    assert all(start < end for start, end in tiles["compute"] + tiles["send"])


def test_bad_input():
    with pytest.raises(ValueError, match="multiple of ranks"):
        O.RowParallelLayer(8, 10, 8, 4)
    with pytest.raises(ValueError, match="tokens"):
        O.RowParallelLayer(0, 8, 8, 4)
    with pytest.raises(TypeError, match="ranks"):
        O.RowParallelLayer(8, 8, 8, True)
    with pytest.raises(ValueError, match="gemm_efficiency"):
        O.Hardware(gemm_efficiency=1.5)
    with pytest.raises(ValueError, match="link"):
        O.Hardware(link=Link())
    with pytest.raises(ValueError, match="chunks"):
        O.software_overlap_seconds(layer(), HW, chunks=0)
    with pytest.raises(ValueError, match="kappa_memory"):
        O.t3_seconds(layer(), HW, kappa_memory=-0.1)
    with pytest.raises(ValueError, match="schedule"):
        O.dram_bytes(layer(), "overlap")
    with pytest.raises(ValueError, match="schedule"):
        O.simulate(layer(), HW, "overlap")
    with pytest.raises(ValueError, match="multiple of ranks"):
        O.simulate(layer(4), HW, "t3", tiles=6)
    with pytest.raises(ValueError, match="trigger"):
        O.simulate(layer(4), HW, "t3", trigger="store")
    with pytest.raises(ValueError, match="chunks"):
        O.simulate(layer(4), HW, "software", chunks=0)
    with pytest.raises(TypeError, match="hardware"):
        O.simulate(layer(4), Link(B), "t3")
    with pytest.raises(ValueError, match="2 ranks but the layer is split over 4"):
        O.sequential(Network(2, Link(B)), layer(4))
    with pytest.raises(TypeError, match="layer"):
        O.chunked_overlap(Network(4, Link(B)), "layer", 2)
    with pytest.raises(ValueError, match="kappa_compute"):
        O.ContendedNetwork(2, Link(B), flops_per_second=F, kappa_compute=-1)
    with pytest.raises(ValueError, match="finite"):
        O.ContendedNetwork(2, Link(B), flops_per_second=math.inf)


def test_jitter_on_a_contended_network_follows_its_seed():
    def log(seed):
        net = O.ContendedNetwork(4, Link(B, ELL), flops_per_second=F, kappa_compute=0.15, kappa_memory=0.3,
                                 jitter=0.1, seed=seed)
        net.start(O.track_and_trigger(net, layer(4), 16))
        net.run()
        return net.log

    assert log(0) == log(0) != log(1)
    with pytest.raises(ValueError, match="seed"):
        O.ContendedNetwork(2, Link(B), flops_per_second=F, jitter=0.1)
