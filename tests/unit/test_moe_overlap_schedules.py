"""One MoE layer's schedules on the event engine (commlab.systems.moe_overlap): no overlap equals its closed
form on an idle network, no schedule beats the compute/communication bound, the resource split degenerates
at its ends, the contention of coarse pipelining, the branch-and-bound grid search, loads and placement,
and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from commlab.comm import Link
from commlab.systems import moe_overlap as M

GPU = M.GPU()
LINK = Link(bandwidth=8 * 200e9, latency=2e-6)  # bit/s, s


def layer(W=4, E=8, k=2, h=1024, m=512, T=1024):
    return M.MoELayer(ranks=W, experts=E, top_k=k, hidden=h, ffn=m, tokens=T)


CASES = [layer(), layer(W=8, E=8, k=1), layer(W=2, E=16, k=4, T=3000), layer(W=8, E=4, k=2), layer(W=1, E=4)]


@pytest.mark.parametrize("moe", CASES, ids=lambda c: f"W{c.ranks}E{c.experts}k{c.top_k}T{c.tokens}")
@pytest.mark.parametrize("latency", [0.0, 2e-6])
def test_no_overlap_is_dispatch_plus_gemm_plus_combine_on_an_idle_network(moe, latency):
    link = Link(LINK.bandwidth, latency)
    loads = M.expert_loads(moe)
    routed = M.route(moe, loads)
    bits = M.dispatch_bits(moe, routed)
    gemm = max(M.gemm_seconds(moe, GPU, routed[:, rank].sum(axis=0)) for rank in range(moe.ranks))
    expected = float(link.alltoall_seconds(bits)) + gemm + float(link.alltoall_seconds(bits.T))
    run = M.no_overlap(moe, GPU, link, loads)
    assert run.seconds == pytest.approx(expected, rel=1e-12)
    assert run.lane_seconds("dispatch") + run.lane_seconds("combine") == pytest.approx(expected - gemm, rel=1e-12)


def test_no_overlap_by_hand():
    """W = 4 ranks, E = 4 experts (one each), k = 1, T = 256 tokens, h = m = 256: each rank sends 3 x 64 token
    copies of 256 x 16 bits, and each expert gets 256 copies = 2 row tiles; up-projection 2 x 4 = 8 tiles of
    depth 256, down-projection 2 x 2 = 4 tiles of depth 256, one wave each on 132 SMs."""
    moe = M.MoELayer(ranks=4, experts=4, top_k=1, hidden=256, ffn=256, tokens=256)
    a2a = LINK.latency + 3 * 64 * 256 * 16 / LINK.bandwidth
    tau = 2 * 128 * 128 * 256 / (989e12 * 0.6 / 132)
    assert M.gemm_seconds(moe, GPU, np.array([256])) == pytest.approx(2 * tau, rel=1e-12)
    assert M.gemm_seconds(moe, GPU, np.array([256]), fused=True) == pytest.approx(12 * tau / 132, rel=1e-12)
    assert M.no_overlap(moe, GPU, LINK, M.expert_loads(moe)).seconds == pytest.approx(2 * a2a + 2 * tau, rel=1e-12)


def test_gemm_waves_and_tile_padding():
    """Wave quantisation: 132 tiles take one wave, 133 two; padding: 1 token costs a whole row tile."""
    moe = M.MoELayer(ranks=1, experts=1, top_k=1, hidden=128, ffn=64, tokens=1)  # up: 1 column tile, down: 1
    one = M.gemm_seconds(moe, GPU, np.array([1]))
    assert M.gemm_seconds(moe, GPU, np.array([128])) == one
    assert M.gemm_seconds(moe, GPU, np.array([128 * 132])) == pytest.approx(one, rel=1e-12)
    assert M.gemm_seconds(moe, GPU, np.array([128 * 133])) == pytest.approx(2 * one, rel=1e-12)
    assert M.gemm_seconds(moe, GPU, np.array([128 * 133]), fused=True) == pytest.approx(133 / 132 * one, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_no_schedule_beats_the_compute_or_communication_bound(seed):
    rng = np.random.default_rng(seed)
    moe = layer(W=int(rng.choice([2, 4])), E=8, k=int(rng.integers(1, 3)), T=int(rng.integers(200, 2000)))
    loads = M.expert_loads(moe, rng=rng, zipf=float(rng.uniform(0, 1.5)))
    bound = M.lower_bound(moe, GPU, LINK, loads)
    times = [M.no_overlap(moe, GPU, LINK, loads).seconds]
    times += [M.coarse_overlap(moe, GPU, LINK, loads, c).seconds for c in (2, 3, 8)]
    for n in (1, 5, 20, 60, 131):
        fine = M.fine_overlap(moe, GPU, LINK, loads, n).seconds
        assert fine >= M.lower_bound(moe, GPU, LINK, loads, comm_sms=n) * (1 - 1e-12)
        times.append(fine)
    assert min(times) >= bound * (1 - 1e-12)
    assert M.lower_bound(moe, GPU, LINK, loads, comm_sms=20) >= bound  # the split never helps the bound


def test_overlap_pays_off_when_communication_and_compute_are_alike():
    moe = layer(W=8, E=8, k=2, h=2048, m=1024, T=4096)
    loads = M.expert_loads(moe)
    none = M.no_overlap(moe, GPU, LINK, loads)
    share = (none.lane_seconds("dispatch") + none.lane_seconds("combine")) / none.seconds
    assert 0.3 < share < 0.7
    coarse = M.coarse_overlap(moe, GPU, LINK, loads, 4).seconds
    best, seconds = M.best_comm_sms(moe, GPU, LINK, loads, [4, 8, 16, 32, 64])
    assert np.nanmin(seconds) < coarse < none.seconds


def test_split_of_zero_or_all_blocks_degenerates():
    moe = layer()
    loads = M.expert_loads(moe)
    assert GPU.bandwidth_factor(0) == 0 and GPU.bandwidth_factor(10) == 0.5 and GPU.bandwidth_factor(132) == 1
    assert GPU.gemm_share(0) == 1 and GPU.gemm_share(GPU.sms) == 0
    assert M.fine_overlap(moe, GPU, LINK, loads, 0).seconds == math.inf  # no blocks to communicate
    assert M.fine_overlap(moe, GPU, LINK, loads, GPU.sms).seconds == math.inf  # no blocks to compute
    assert M.lower_bound(moe, GPU, LINK, loads, comm_sms=0) == math.inf
    assert M.lower_bound(moe, GPU, LINK, loads, comm_sms=GPU.sms) == math.inf
    single = layer(W=1)  # nothing to send: n_comm = 0 is the fused GEMMs alone at the full GPU
    loads = M.expert_loads(single)
    gemm = M.gemm_seconds(single, GPU, M.route(single, loads)[0, 0], fused=True)
    assert M.fine_overlap(single, GPU, LINK, loads, 0).seconds == pytest.approx(gemm, rel=1e-12)
    assert M.fine_overlap(single, GPU, LINK, loads, 66).seconds == pytest.approx(2 * gemm, rel=1e-12)
    assert M.best_comm_sms(single, GPU, LINK, loads, [0, 10, 66])[0] == 0


def test_fine_overlap_with_saturated_blocks_runs_at_the_links_bandwidth():
    """With compute that takes no time, the fused layer is its communication: every wire carries its
    dispatch and combine bits at B·min(1, n / n_sat), so the time is the busiest wire over that rate plus
    the latencies of the rounds that cannot overlap."""
    moe = layer(W=4, E=4, k=1)
    fast = M.GPU(peak_flops=1e30)
    loads = M.expert_loads(moe)
    for n, factor in ((20, 1.0), (10, 0.5)):
        bound = M.lower_bound(moe, fast, LINK, loads, comm_sms=n)
        seconds = M.fine_overlap(moe, fast, LINK, loads, n, rounds=4).seconds
        assert bound == pytest.approx(LINK.latency + 2 * 3 * 256 * moe.token_bits / (LINK.bandwidth * factor))
        assert bound <= seconds <= bound + 5 * LINK.latency


def test_coarse_pipelining_contends_for_the_sms():
    """If the all-to-all kernel needs every SM (n_sat = N_sm), a GEMM cannot run beside it: no chunking
    can beat running the all-to-alls and GEMMs one after the other, while with n_sat = 20 it can."""
    moe = layer(W=4, E=8, k=2, h=2048, m=1024, T=4096)
    loads = M.expert_loads(moe)
    greedy = M.GPU(saturating_sms=132)
    none = M.no_overlap(moe, greedy, LINK, loads).seconds
    assert M.no_overlap(moe, GPU, LINK, loads).seconds == none
    for chunks in (2, 4, 8):
        assert M.coarse_overlap(moe, greedy, LINK, loads, chunks).seconds >= none * (1 - 1e-12)
        assert M.coarse_overlap(moe, GPU, LINK, loads, chunks).seconds < none


def test_gemm_intervals_use_one_stream_per_rank_and_log_the_useful_flops():
    moe = layer()
    loads = M.expert_loads(moe)
    flops = 6.0 * moe.hidden * moe.ffn * loads.sum()
    for run in (M.coarse_overlap(moe, GPU, LINK, loads, 4), M.fine_overlap(moe, GPU, LINK, loads, 16)):
        for rank in range(moe.ranks):
            spans = sorted((i.start, i.end) for i in run.intervals if i.lane == "gemm" and i.rank == rank)
            assert all(a[1] <= b[0] + 1e-15 for a, b in zip(spans, spans[1:], strict=False))
        assert sum(r.amount for r in run.log if r.kind == "compute_end") == pytest.approx(flops, rel=1e-12)
        assert run.seconds == max(i.end for i in run.intervals)
    again = M.fine_overlap(moe, GPU, LINK, loads, 16)
    assert again.log == run.log


def test_lane_seconds_is_the_union_of_intervals():
    run = M.LayerRun(1.0, [M.Interval("gemm", 0, 0.0, 0.4, ""), M.Interval("gemm", 1, 0.2, 0.5, ""),
                           M.Interval("gemm", 0, 0.7, 0.8, ""), M.Interval("combine", -1, 0.0, 1.0, "")])
    assert run.lane_seconds("gemm") == pytest.approx(0.6)
    assert run.lane_seconds("dispatch") == 0.0


def test_branch_and_bound_finds_the_grid_minimum():
    moe = layer(W=4, E=8, k=2, h=2048, m=1024, T=2048)
    loads = M.expert_loads(moe)
    grid = [4, 8, 12, 16, 20, 24, 32, 48]
    full = np.array([M.fine_overlap(moe, GPU, LINK, loads, n).seconds for n in grid])
    best, seconds = M.best_comm_sms(moe, GPU, LINK, loads, grid)
    assert best == grid[int(np.argmin(full))]
    simulated = ~np.isnan(seconds)
    np.testing.assert_array_equal(seconds[simulated], full[simulated])
    assert simulated.sum() < len(grid)  # it pruned
    assert 4 < best < 48  # the split has an interior optimum here


def test_the_graded_rounds_are_close_to_the_tile_level_limit():
    """Without latency, many equal rounds approach the tile-level stream; the 8 graded rounds stay within
    3 % of 64 equal ones, and 2 rounds (a long head and tail) are slower."""
    moe = layer(W=4, E=8, k=2, h=2048, m=2048, T=4096)
    loads = M.expert_loads(moe)
    link = Link(LINK.bandwidth, 0.0)
    graded = M.fine_overlap(moe, GPU, link, loads, 16).seconds
    many = M.fine_overlap(moe, GPU, link, loads, 16, rounds=64).seconds
    few = M.fine_overlap(moe, GPU, link, loads, 16, rounds=2).seconds
    assert abs(graded / many - 1) < 0.03
    assert few > 1.05 * graded


def test_expert_loads_balanced_sampled_and_skewed():
    moe = layer(W=4, E=8, k=2, T=1001)
    balanced = M.expert_loads(moe)
    assert (balanced.sum(axis=1) == 2002).all() and balanced.max() - balanced.min() == 1
    sampled = M.expert_loads(moe, rng=np.random.default_rng(0))
    assert (sampled.sum(axis=1) == 2002).all()
    np.testing.assert_array_equal(sampled, M.expert_loads(moe, rng=np.random.default_rng(0)))
    big = layer(W=4, E=8, k=2, T=100_000)
    skew = M.expert_loads(big, rng=np.random.default_rng(1), zipf=1.0).sum(axis=0)
    # Zipf(1) over 8 experts: the hottest takes 1 / H_8 = 0.368 of the copies
    assert skew.max() / skew.sum() == pytest.approx(1 / sum(1 / np.arange(1, 9)), abs=0.01)


def test_route_follows_the_placement():
    moe = layer(W=4, E=8, k=1)
    loads = np.arange(32).reshape(4, 8)
    routed = M.route(moe, loads)
    for e in range(8):  # expert e on rank e mod 4, local slot e // 4
        np.testing.assert_array_equal(routed[:, e % 4, e // 4], loads[:, e])
    replicated = layer(W=8, E=4, k=1)
    loads = np.tile(np.arange(1, 5), (8, 1))
    routed = M.route(replicated, loads)[..., 0]
    for src in range(8):  # replica r = src mod 2 of expert e is rank e + 4 r
        np.testing.assert_array_equal(routed[src, 4 * (src % 2) + np.arange(4)], loads[src])
    assert routed.sum() == loads.sum()
    bits = M.dispatch_bits(replicated, M.route(replicated, loads))
    assert bits.sum() == loads.sum() * replicated.token_bits


def test_bad_input():
    with pytest.raises(ValueError, match="divide"):
        M.MoELayer(ranks=3, experts=8, top_k=1, hidden=8, ffn=8, tokens=8)
    with pytest.raises(ValueError, match="top_k"):
        M.MoELayer(ranks=2, experts=4, top_k=5, hidden=8, ffn=8, tokens=8)
    with pytest.raises(TypeError, match="tokens"):
        M.MoELayer(ranks=2, experts=4, top_k=1, hidden=8, ffn=8, tokens=8.0)
    with pytest.raises(ValueError, match="saturating_sms"):
        M.GPU(saturating_sms=200)
    with pytest.raises(ValueError, match="tile_efficiency"):
        M.GPU(tile_efficiency=0.0)
    with pytest.raises(ValueError, match="tile_efficiency"):
        M.GPU(tile_efficiency=1.5)
    with pytest.raises(ValueError, match="comm_sms"):
        GPU.gemm_share(133)
    moe = layer()
    loads = M.expert_loads(moe)
    with pytest.raises(ValueError, match="loads"):
        M.no_overlap(moe, GPU, LINK, loads[:, :4])
    with pytest.raises(ValueError, match="loads"):
        M.no_overlap(moe, GPU, LINK, loads.astype(float))
    with pytest.raises(ValueError, match="loads"):
        M.no_overlap(moe, GPU, LINK, -loads)
    with pytest.raises(ValueError, match="chunks"):
        M.coarse_overlap(moe, GPU, LINK, loads, 0)
    with pytest.raises(ValueError, match="comm_sms"):
        M.fine_overlap(moe, GPU, LINK, loads, -1)
    with pytest.raises(ValueError, match="rounds"):
        M.fine_overlap(moe, GPU, LINK, loads, 16, rounds=0)
    with pytest.raises(ValueError, match="rounds"):
        M.fine_overlap(moe, GPU, LINK, loads, 16, rounds=[1, -1])
    with pytest.raises(TypeError, match="rounds"):
        M.fine_overlap(moe, GPU, LINK, loads, 16, rounds="four")
    with pytest.raises(ValueError, match="grid"):
        M.best_comm_sms(moe, GPU, LINK, loads, [])
    with pytest.raises(ValueError, match="zipf"):
        M.expert_loads(moe, zipf=1.0)
    with pytest.raises(ValueError, match="zipf"):
        M.expert_loads(moe, rng=np.random.default_rng(0), zipf=-1.0)
    with pytest.raises(TypeError, match="rng"):
        M.expert_loads(moe, rng=0)
    with pytest.raises(ValueError, match="tokens_per_expert"):
        M.gemm_seconds(moe, GPU, np.array([1.5]))
    with pytest.raises(ValueError, match="lane"):
        M.LayerRun(0.0).lane_seconds("attention")
