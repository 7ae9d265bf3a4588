"""MoE layer schedules on the event engine (commlab.systems.moe_schedule): the sequential schedule is the
sum of its stages' closed forms, one chunk pipelines to the sequential time, the simulation equals the
model on an idle network, the fold equals the whole network, gradient pieces add up, no schedule beats
the busiest resource, and bad input is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from commlab.comm import Link
from commlab.systems import collectives
from commlab.systems import moe_schedule as ms

GB = 8e9  # bit/s per GB/s


def cluster(nodes=2, g=8, **kw):
    base = {"intra": Link(300 * GB, 2e-6), "inter": Link(25 * GB, 5e-6), "flops_per_second": 300e12,
            "peak_efficiency": 0.8, "half_tokens": 128.0}
    return ms.Cluster(nodes, g, **{**base, **kw})


LAYERS = {  # (hidden, ffn, experts, top_k, tokens): comm-bound, compute-bound, intra-only all-to-all
    "comm": ms.MoELayer(1024, 4096, 64, 2, 2048),
    "compute": ms.MoELayer(2048, 8192, 16, 1, 8192),
    "intra-only": ms.MoELayer(1024, 4096, 8, 1, 2048),
}
CLUSTERS = {"1 node": cluster(1), "2 nodes": cluster(2), "4 nodes": cluster(4)}


def stage_sum(layer, c):
    """The sequential layer written out from the brief's formulas, independently of the module."""
    F, e_max, half = c.flops_per_second, c.peak_efficiency, c.half_tokens
    eff = lambda n: e_max * n / (n + half)  # noqa: E731
    group = min(layer.experts, c.gpus)
    local = min(group, c.gpus_per_node)
    n = 8 * 2 * layer.tokens * layer.top_k * layer.hidden
    intra, inter = n * (local - 1) / group, n * (group - local) / group
    a2a = max(c.intra.latency + intra / c.intra.bandwidth if intra else 0.0,
              c.inter.latency + inter / c.inter.bandwidth if inter else 0.0)
    gate = 2 * layer.tokens * layer.hidden * layer.experts / (F * eff(layer.tokens))
    n_e = layer.tokens * layer.top_k * group / layer.experts
    expert = 2 * layer.tokens * layer.top_k * layer.hidden * layer.ffn * 2 / (F * eff(n_e))
    link = c.inter if c.nodes > 1 else c.intra
    G, N = 8 * 2 * 4 * layer.hidden**2, c.gpus
    reduce = 2 * (N - 1) * link.latency + 2 * (N - 1) / N * G / link.bandwidth
    return 3 * gate + 3 * expert + 4 * a2a + reduce


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("c", CLUSTERS.values(), ids=CLUSTERS.keys())
def test_sequential_on_an_idle_network_is_the_sum_of_stage_closed_forms(layer, c):
    expected = 2 * stage_sum(layer, c)
    timeline, _ = ms.simulate(ms.build_schedule([layer, layer], c, "sequential"), c)
    assert timeline.makespan == pytest.approx(expected, rel=1e-9)
    assert ms.sequential_seconds([layer, layer], c) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("c", CLUSTERS.values(), ids=CLUSTERS.keys())
def test_pipelining_with_one_chunk_equals_the_sequential_schedule(layer, c):
    sequential, _ = ms.simulate(ms.build_schedule([layer] * 2, c, "sequential"), c)
    for kind in ("pipelined", "fsmoe"):
        one, _ = ms.simulate(ms.build_schedule([layer] * 2, c, kind, chunks=1), c)
        assert one.makespan == pytest.approx(sequential.makespan, rel=1e-9), kind


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("c", CLUSTERS.values(), ids=CLUSTERS.keys())
@pytest.mark.parametrize("schedule", [("pipelined", 4, False), ("fsmoe", 8, False), ("fsmoe", None, True)])
def test_the_simulation_equals_the_model_on_an_idle_network(layer, c, schedule):
    kind, chunks, partition = schedule
    built = ms.build_schedule([layer] * 3, c, kind, chunks=chunks, partition=partition)
    simulated, _ = ms.simulate(built, c)
    predicted = ms.predict(built, c)
    assert simulated.makespan == pytest.approx(predicted.makespan, rel=1e-9)
    for op in built.ops:
        assert simulated.end[op] == pytest.approx(predicted.end[op], rel=1e-9, abs=1e-12), op.label


def test_pipelining_overlaps_the_all_to_all_with_the_gemms():
    layer, c = LAYERS["compute"], CLUSTERS["2 nodes"]
    s = ms.stage_seconds(layer, c, 4)
    assert s["expert"] > s["a2a"]  # compute-bound chunks: the comm of chunk i + 1 hides under GEMM i
    pipelined = ms.predict(ms.build_schedule([layer], c, "pipelined", chunks=4), c).makespan
    per_phase = s["a2a"] + 4 * s["expert"] + s["a2a"]  # first all-to-all, the GEMMs, the last one
    expected = 3 * s["gate"] + per_phase + (s["a2a"] + 4 * 2 * s["expert"] + s["a2a"]) + s["all_reduce"]
    assert pipelined == pytest.approx(expected, rel=1e-9)
    assert pipelined < ms.sequential_seconds([layer], c)


def test_the_folded_network_gives_one_gpu_the_loads_of_the_whole_network():
    c = cluster(2, 4)
    layer = ms.MoELayer(512, 2048, 8, 2, 1024)
    intra, inter = ms.a2a_bits(layer, c, 2)
    folded = ms.folded_network(c)
    started = folded.start(collectives.all_to_all(folded, ms.folded_traffic(folded, intra, inter)))
    folded.run()
    whole = ms.TwoTierNetwork(2, 4, c.intra, c.inter)
    per_peer = (intra + inter) / 7  # uniform routing over the group of all 8 GPUs: n/8 to each of 7 peers
    traffic = np.full((8, 8), per_peer)
    full = whole.start(collectives.all_to_all(whole, traffic))
    whole.run()
    assert started.value == pytest.approx(full.value, rel=1e-12)
    assert full.value == pytest.approx(ms.stage_seconds(layer, c, 2)["a2a"], rel=1e-12)
    # the rail all-reduce of the fold takes the whole network's ring all-reduce time
    bits = 8 * 2 * layer.dense_params
    folded, whole = ms.folded_network(c), ms.TwoTierNetwork(2, 4, c.intra, c.inter)
    rail = ms.rail_all_reduce(folded, bits, c.gpus)
    folded.run()
    ring = whole.start(collectives.ring_all_reduce(whole, bits))
    whole.run()
    assert rail.value == pytest.approx(ring.value, rel=1e-9)
    assert rail.value == pytest.approx(c.inter.collective_seconds(bits, 8, "ring"), rel=1e-12)


def test_intra_node_messages_cross_nvlink_and_the_others_the_nic():
    net = ms.TwoTierNetwork(2, 2, Link(100.0, 0.0), Link(10.0, 0.0))
    assert net.route(0, 1) == [net.tx_in[0], net.rx_in[1]]
    assert net.route(1, 2) == [net.tx[1], net.rx[2]]
    both = net.start(collectives.all_to_all(net, np.array([[0, 100, 10, 0]] + [[0] * 4] * 3, float)))
    net.run()
    assert both.value == pytest.approx(1.0)  # 100 bits at 100 bit/s and 10 bits at 10 bit/s, at once


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("c", CLUSTERS.values(), ids=CLUSTERS.keys())
def test_partitioned_gradient_pieces_add_up_to_the_whole_gradient(layer, c):
    stack = [layer, ms.MoELayer(512, 2048, 16, 1, 4096), layer]
    built = ms.build_schedule(stack, c, "fsmoe", partition=True)
    for index, piece_bits in enumerate(built.pieces):
        assert sum(piece_bits) == pytest.approx(8 * 2 * stack[index].dense_params, rel=1e-12)
        assert all(b > 0 for b in piece_bits)
        ops = [op for op in built.ops if op.kind == "all_reduce" and op.layer == index]
        assert sum(op.bits for op in ops) == pytest.approx(sum(piece_bits), rel=1e-12)
    # with idle NIC time (the all-to-all stays inside a node) the upper gradients are hidden in pieces
    multi = ms.build_schedule([LAYERS["intra-only"]] * 3, CLUSTERS["2 nodes"], "fsmoe", partition=True)
    assert len(multi.pieces[2]) >= 1 and len(multi.pieces[0]) == 1
    hidden = ms.predict(multi, CLUSTERS["2 nodes"]).makespan
    blocking = ms.predict(ms.build_schedule([LAYERS["intra-only"]] * 3, CLUSTERS["2 nodes"], "fsmoe"),
                          CLUSTERS["2 nodes"]).makespan
    assert hidden < blocking


def test_pieces_fill_only_idle_link_time():
    c = CLUSTERS["4 nodes"]
    built = ms.build_schedule([LAYERS["comm"]] * 3, c, "fsmoe", partition=True)
    timeline = ms.predict(built, c)
    on_nic = sorted((op for op in built.ops if op.stream == "inter"), key=lambda op: timeline.start[op])
    for before, after in zip(on_nic, on_nic[1:], strict=False):
        assert timeline.end[before] <= timeline.start[after] + 1e-15  # one op at a time on the NIC
    unpartitioned = ms.predict(ms.build_schedule([LAYERS["comm"]] * 3, c, "fsmoe",
                                                 chunks=built.chunks), c)
    other = [op for op in built.ops if op.kind != "all_reduce"]
    # no all-to-all or GEMM is delayed by a piece
    stripped = ms.predict(ms.Schedule("fsmoe", other, built.chunks, []), c)
    for op in other:
        assert timeline.end[op] == pytest.approx(stripped.end[op], rel=1e-12)
    assert timeline.makespan <= unpartitioned.makespan * (1 + 1e-12)


@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("c", CLUSTERS.values(), ids=CLUSTERS.keys())
@pytest.mark.parametrize("schedule", [("sequential", None, False), ("pipelined", 4, False),
                                      ("pipelined", 16, False), ("fsmoe", None, True)])
def test_no_schedule_beats_the_busiest_resource(layer, c, schedule):
    kind, chunks, partition = schedule
    built = ms.build_schedule([layer] * 2, c, kind, chunks=chunks, partition=partition)
    simulated, _ = ms.simulate(built, c, jitter=0.1, seed=3)
    bound = ms.busy_bound(built, c)
    assert simulated.makespan >= bound * (1 - 1e-12)
    assert ms.predict(built, c).makespan >= bound * (1 - 1e-12)
    # and the bound is max(compute, comm): the compute part alone
    compute = sum(op.flops for op in built.ops if op.kind == "compute") / c.flops_per_second
    assert bound >= compute * (1 - 1e-12)


def test_search_picks_the_fastest_predicted_degree_and_never_loses_to_a_fixed_one():
    for layer in LAYERS.values():
        for c in CLUSTERS.values():
            r = ms.search_chunks(layer, c)
            assert r in ms.CHUNK_CHOICES
            searched = ms.predict(ms.build_schedule([layer], c, "fsmoe", chunks=[r]), c).makespan
            for fixed in ms.CHUNK_CHOICES:
                for kind in ("pipelined", "fsmoe"):
                    other = ms.predict(ms.build_schedule([layer], c, kind, chunks=fixed), c).makespan
                    assert searched <= other * (1 + 1e-12)
    # tiny chunks waste the GEMMs: a latency- and efficiency-bound layer keeps r small
    tiny = ms.MoELayer(256, 1024, 64, 1, 512)
    assert ms.search_chunks(tiny, cluster(1)) == 1


def test_jitter_is_seeded_and_only_lengthens():
    layer, c = LAYERS["comm"], CLUSTERS["2 nodes"]
    built = ms.build_schedule([layer], c, "pipelined", chunks=4)
    idle, _ = ms.simulate(built, c)
    one, net_one = ms.simulate(built, c, jitter=0.05, seed=1)
    again, net_again = ms.simulate(built, c, jitter=0.05, seed=1)
    other, _ = ms.simulate(built, c, jitter=0.05, seed=2)
    assert net_one.log == net_again.log and one.makespan == again.makespan
    assert other.makespan != one.makespan
    assert idle.makespan <= one.makespan <= idle.makespan * 1.05 + 1e-12


def test_busy_intervals_come_from_the_engine_log():
    layer, c = LAYERS["comm"], CLUSTERS["2 nodes"]
    timeline, net = ms.simulate(ms.build_schedule([layer], c, "sequential"), c)
    rows = ms.busy_intervals(net)
    s = ms.stage_seconds(layer, c)
    assert sum(e - b for b, e in rows["compute"]) == pytest.approx(3 * s["gate"] + 3 * s["expert"], rel=1e-9)
    # dispatch | combine + backward combine (back to back, merged) | backward dispatch | all-reduce
    assert len(rows["inter"]) == 4
    assert max(e for _, e in rows["inter"]) == pytest.approx(timeline.makespan, rel=1e-12)


def test_gemm_efficiency_and_its_fit():
    assert ms.gemm_efficiency(128, 0.8, 128) == pytest.approx(0.4)
    assert ms.gemm_efficiency(np.array([1e12]), 0.8, 128)[0] == pytest.approx(0.8)
    tokens = np.array([16, 32, 64, 128, 256, 512, 1024], float)
    flops = 2 * tokens * 512 * 512
    seconds = flops / (2e11 * tokens / (tokens + 96))
    rate, half = ms.fit_gemm_efficiency(tokens, seconds, flops)
    assert rate == pytest.approx(2e11, rel=1e-9) and half == pytest.approx(96, rel=1e-9)


def test_routing_imbalance_scales_the_busiest_gpus_work():
    c = CLUSTERS["2 nodes"]
    even, hot = LAYERS["comm"], ms.MoELayer(1024, 4096, 64, 2, 2048, load_factor=1.5)
    assert ms.a2a_bits(hot, c)[1] == pytest.approx(1.5 * ms.a2a_bits(even, c)[1])
    assert ms.sequential_seconds([hot], c) > ms.sequential_seconds([even], c)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="nodes"):
        cluster(0)
    with pytest.raises(TypeError, match="intra"):
        ms.Cluster(1, 8, 3e11, Link(1e9), 1e12)
    with pytest.raises(ValueError, match="peak_efficiency"):
        cluster(peak_efficiency=1.5)
    with pytest.raises(ValueError, match="top_k"):
        ms.MoELayer(64, 256, 4, 5, 128)
    with pytest.raises(ValueError, match="load_factor"):
        ms.MoELayer(64, 256, 4, 1, 128, load_factor=0.5)
    with pytest.raises(ValueError, match="multiples"):
        ms.a2a_bits(ms.MoELayer(64, 256, 12, 1, 128), cluster(2))
    layer, c = LAYERS["comm"], CLUSTERS["2 nodes"]
    with pytest.raises(ValueError, match="kind"):
        ms.build_schedule([layer], c, "tutel")
    with pytest.raises(ValueError, match="chunks"):
        ms.build_schedule([layer], c, "pipelined")
    with pytest.raises(ValueError, match="one chunk"):
        ms.build_schedule([layer], c, "sequential", chunks=4)
    with pytest.raises(ValueError, match="one per layer"):
        ms.build_schedule([layer, layer], c, "pipelined", chunks=[2, 4, 8])
    with pytest.raises(ValueError, match="chunks"):
        ms.build_schedule([layer], c, "pipelined", chunks=0)
    with pytest.raises(ValueError, match="partition"):
        ms.build_schedule([layer], c, "pipelined", chunks=2, partition=True)
    with pytest.raises(TypeError, match="layers"):
        ms.build_schedule([], c, "sequential")
    with pytest.raises(ValueError, match="tokens"):
        ms.gemm_efficiency(0, 0.8, 128)
    with pytest.raises(ValueError, match="one length"):
        ms.fit_gemm_efficiency([1, 2], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        ms.fit_gemm_efficiency([1, 2], [1.0, -1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="seed"):
        ms.simulate(ms.build_schedule([layer], c, "sequential"), c, jitter=0.1)
    assert math.isfinite(ms.predict(ms.build_schedule([layer], c, "sequential"), c).makespan)
