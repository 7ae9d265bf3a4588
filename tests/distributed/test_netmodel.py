"""netmodel: collective times, the compute-utilisation model and its inverse, overlapped rounds; the
simulated clock of the outer methods agrees with the model."""

import math

import pytest
import torch

from commlab.comm import Link, SimComm
from commlab.comm.link import coefficients
from commlab.distributed.outer import DiLoCo, StreamingDiLoCo
from commlab.systems.netmodel import (
    collective_seconds,
    compute_utilisation,
    required_bandwidth,
    round_seconds,
)


def test_collective_times_follow_the_briefs_formulas_and_the_link():
    S, B, lat = 8e6, 1e9, 1e-3
    for n in (2, 3, 8, 1024):
        assert collective_seconds(S, workers=n, bandwidth=B, latency=lat, algorithm="ring") == pytest.approx(
            Link(bandwidth=B, latency=lat).seconds("all_reduce", S / 8, n))
        assert collective_seconds(S, workers=n, bandwidth=B, latency=lat, algorithm="tree") == pytest.approx(
            2 * math.ceil(math.log2(n)) * (lat + S / B))
        assert collective_seconds(S, workers=n, bandwidth=B, latency=lat, algorithm="pairwise") == pytest.approx(
            Link(bandwidth=B, latency=lat).seconds("p2p", S / 8, n))
    assert collective_seconds(S, workers=4, bandwidth=B, latency=lat, algorithm="bandwidth_optimal") == lat + 2 * S / B
    assert collective_seconds(S, workers=1, bandwidth=B, latency=lat) == 0.0
    assert collective_seconds(S, workers=4, bandwidth=math.inf, latency=0.0) == 0.0
    # latency-dominated message at N = 1024: a tree all-reduce costs 20 latencies, a pairwise exchange one
    tree = collective_seconds(8e3, workers=1024, bandwidth=1e12, latency=0.05, algorithm="tree")
    pair = collective_seconds(8e3, workers=1024, bandwidth=1e12, latency=0.05, algorithm="pairwise")
    assert tree / pair == pytest.approx(20, rel=1e-3)


def test_required_bandwidth_reproduces_the_streaming_brief_hand_calculation():
    S, c, lat = 32e9, 0.1, 1e-3  # 1B fp32 parameters, 0.1 s per step, 1 ms latency
    dp = required_bandwidth(0.95, bits=S, step_seconds=c, period=1, latency=lat)
    diloco = required_bandwidth(0.95, bits=S, step_seconds=c, period=100, latency=lat)
    streaming = required_bandwidth(0.95, bits=1e9 / 2 * 4, step_seconds=c, period=50, overlap_steps=5, latency=lat)
    assert dp == pytest.approx(2 * S / (c / 19 - lat))
    assert 14e12 < dp < 16e12 and 115e9 < diloco < 125e9 and 5.0e9 < streaming < 5.5e9
    assert dp / streaming > 100
    for bandwidth, kwargs in [(dp, dict(bits=S, period=1)), (streaming, dict(bits=2e9, period=50, overlap_steps=5))]:
        assert compute_utilisation(bandwidth, step_seconds=c, latency=lat, **kwargs) == pytest.approx(0.95)
    # unreachable: a 1 s latency stalls more than 5 % of a 0.1 s step allows
    assert required_bandwidth(0.95, bits=S, step_seconds=c, period=1, latency=1.0) == math.inf
    assert required_bandwidth(0.5, bits=0, step_seconds=c, period=1, latency=0.0) == 0.0


def test_overlap_hides_communication_up_to_the_compute_time():
    for ratio, speedup in [(1.0, 2.0), (3.0, 4 / 3), (0.5, 1.5)]:
        tau, c = 4, 0.25
        C = ratio * tau * c
        sync = round_seconds(tau, c, C, overlap=False)
        co2 = round_seconds(tau, c, C, overlap=True)
        assert sync / co2 == pytest.approx(speedup, abs=1e-12)
    # T = 2S/B: 20 s stalls 19 s past a one-step overlap; 1 s is hidden entirely
    assert compute_utilisation(1.0, bits=10.0, step_seconds=1.0, period=2, overlap_steps=1) == pytest.approx(2 / 21)
    assert compute_utilisation(1.0, bits=0.5, step_seconds=1.0, period=2, overlap_steps=1) == 1.0


def test_the_simulated_clock_of_diloco_and_streaming_matches_the_utilisation_model():
    d, N, c, H = 1000, 2, 0.01, 8
    link = Link(bandwidth=1e6, latency=2e-3)
    for make, kwargs in [
        (lambda comm, p: DiLoCo(comm, p, sync_every=H, step_seconds=c, sync_init=False),
         dict(bits=32 * d, period=H, algorithm="ring")),
        (lambda comm, p: StreamingDiLoCo(comm, p, sync_every=H, fragments=2, overlap_steps=0, compressor=None,
                                         step_seconds=c,
                                         sync_init=False, layers=[(0, d // 2), (d // 2, d)]),
         dict(bits=32 * d / 2, period=H // 2, algorithm="ring")),
    ]:
        comm = SimComm(N, link=link)
        algo = make(comm, torch.zeros(N, d))
        for _ in range(5 * H):
            algo.after_inner_step()
        model = compute_utilisation(link.bandwidth, step_seconds=c, latency=link.latency, workers=N, **kwargs)
        assert 5 * H * c / comm.clock == pytest.approx(model, rel=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="algorithm"):
        coefficients("butterfly", 4)
    with pytest.raises(ValueError, match="workers"):
        coefficients("ring", 0)
    with pytest.raises(ValueError, match="target"):
        required_bandwidth(1.0, bits=1, step_seconds=1, period=1)
    with pytest.raises(ValueError, match="bandwidth"):
        collective_seconds(1.0, workers=2, bandwidth=0.0)
    with pytest.raises(ValueError, match="period"):
        compute_utilisation(1.0, bits=1, step_seconds=1, period=0)
