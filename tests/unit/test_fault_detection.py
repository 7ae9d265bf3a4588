"""Fault injection and C4D-style detection (commlab.systems.faults): the fast max-plus ring model equals the
simpy engine's event log, a slow link or rank shows where it should, the detector raises no alarm on a
fault-free network and finds an injected slow rank or link, and bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.comm import Link
from commlab.systems import faults as F

LINK, FLOPS_PER_SECOND, BITS, FLOPS = Link(2e11, 5e-6), 312e12, 8e9, 3e13


def timelines(n_ranks, iterations, fault, seed):
    lf, cf = F.duration_factors(np.random.default_rng(seed), iterations, n_ranks, fault=fault)
    net = F.simulate_ring_training(n_ranks, LINK, FLOPS_PER_SECOND, BITS, FLOPS, lf, cf)
    message, compute = F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, lf, cf)
    return F.timings_from_log(net.log, n_ranks, iterations), F.ring_timeline(message, compute), message, compute


@pytest.mark.parametrize("fault", [None, F.Fault("link", 1, 0.5, 1), F.Fault("rank", 3, 0.3, 0)])
@pytest.mark.parametrize("n_ranks", [2, 5])
def test_the_max_plus_ring_equals_the_engine(n_ranks, fault):
    if fault is not None and fault.index >= n_ranks:
        fault = F.Fault(fault.kind, n_ranks - 1, fault.slowdown, fault.start)
    engine, fast, message, compute = timelines(n_ranks, 4, fault, seed=7)
    for a, b in zip(engine, fast, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(engine.gap, compute, rtol=1e-12)  # the gap is the compute, as timestamps show it


def test_idle_ring_takes_its_closed_form():
    """No noise: each iteration is c + 2(N - 1)(l + n/(N B)), the engine's ring all-reduce closed form."""
    N, T = 6, 3
    message, compute = F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, np.ones((T, N)), np.ones((T, N)))
    fast = F.ring_timeline(message, compute)
    step = FLOPS / FLOPS_PER_SECOND + 2 * (N - 1) * (LINK.latency + BITS / N / LINK.bandwidth)
    np.testing.assert_allclose(fast.finish, step * np.arange(1, T + 1)[:, None] * np.ones(N), rtol=1e-12)


def test_a_slow_link_paces_the_ring_and_a_slow_rank_makes_the_others_wait():
    N, T = 8, 2
    ones = np.ones((T, N))
    base = F.ring_timeline(*F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, ones, ones))
    slow_link = ones.copy()
    slow_link[:, 2] = 2.0
    link = F.ring_timeline(*F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, slow_link, ones))
    d = LINK.latency + BITS / N / LINK.bandwidth
    slow_d = LINK.latency + 2 * BITS / N / LINK.bandwidth
    # every step waits for the slow connection: the iteration takes c + 2(N - 1) * slow step
    assert link.finish[0].max() == pytest.approx(FLOPS / FLOPS_PER_SECOND + 2 * (N - 1) * slow_d, rel=1e-12)
    assert link.message[0, 2] == pytest.approx(slow_d) and link.message[0, 3] == pytest.approx(d)
    late = ones.copy()
    late[:, 5] = 1.5
    rank = F.ring_timeline(*F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, ones, late))
    extra = 0.5 * FLOPS / FLOPS_PER_SECOND
    assert rank.wait[0, 5] == pytest.approx(base.wait[0, 5], rel=1e-9)  # the late rank does not wait
    others = np.delete(rank.wait[0] - base.wait[0], 5)
    np.testing.assert_allclose(others, extra, rtol=1e-6)  # everyone else waits for it


def test_factors_follow_the_noise_model_and_the_fault():
    rng = np.random.default_rng(0)
    lf, cf = F.duration_factors(rng, 2000, 50, sigma=0.02, straggler_prob=0.01)
    body = lf[(lf < 2) & (cf < 2)]
    assert abs(body.std() - 0.02) < 0.002 and abs(body.mean() - 1) < 0.001
    assert abs((lf > 2).mean() - 0.01) < 0.002 and abs((cf > 2).mean() - 0.01) < 0.002
    fault = F.Fault("rank", 4, 0.2, 10)
    lf2, cf2 = F.duration_factors(np.random.default_rng(1), 20, 8, fault=fault)
    lf0, cf0 = F.duration_factors(np.random.default_rng(1), 20, 8)
    np.testing.assert_array_equal(lf2, lf0)
    ratio = cf2 / cf0
    np.testing.assert_allclose(ratio[10:, 4], 1.2)
    ratio[10:, 4] = 1.0
    np.testing.assert_array_equal(ratio, 1.0)
    assert fault.component(8) == 12 and F.Fault("link", 4, 0.2, 0).component(8) == 4


def test_robust_scores_flag_the_outlier_and_cancel_shared_stalls():
    x = np.ones((9, 8)) + 0.01 * np.arange(8)  # spread so the MAD is not 0
    x[:, 3] += 1.0  # an outlier in every iteration
    x[4] += 100.0  # a stall all components share
    z = F.robust_scores(x, window=3, groups=1)
    assert np.isnan(z[:2]).all()
    assert (np.argmax(z[2:], axis=1) == 3).all() and (z[2:, 3] > 6).all()
    assert np.all(np.abs(np.delete(z[2:], 3, axis=1)) < 2)
    best, where = F.streak_scores(z, consecutive=3)
    assert (where[:4] == -1).all() and (where[4:] == 3).all()
    assert best[4] == pytest.approx(z[2:5, 3].min())
    flat = F.robust_scores(np.ones((5, 6)), window=3, groups=2)
    np.testing.assert_array_equal(flat[2:], 0.0)  # MAD 0 and no deviation: score 0, not NaN


@pytest.mark.parametrize("seed", range(5))
def test_no_alarm_on_a_fault_free_network_at_the_default_threshold(seed):
    """10 healthy runs of 32 ranks x 300 iterations with the brief's noise (2 %, 1 % stragglers of 3x): no
    alarm at z_thr = 6, w = 3. (With 16 ranks the MAD of 16 window medians is too noisy: Gaussian noise
    alone reaches z = 31 there.)"""
    rng = np.random.default_rng(seed)
    factors = [F.duration_factors(rng, 300, 32) for _ in range(10)]
    lf, cf = (np.stack(part) for part in zip(*factors, strict=True))
    timings = F.ring_timeline(*F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, lf, cf))
    best, where = F.streak_scores(F.robust_scores(F.detector_signals(timings), window=5), consecutive=3)
    report = F.evaluate_detection(best, where, [None] * 10, 32, 6.0)
    assert report.false_alarms == 0 and report.runs == 0 and report.healthy_iterations == 10 * (300 - 6)


@pytest.mark.parametrize("kind", ["rank", "link"])
def test_an_injected_fault_is_found_and_localised(kind):
    N, T = 32, 60
    faults = [F.Fault(kind, 5 * i, 0.2, 30) for i in range(6)]
    rng = np.random.default_rng(3)
    factors = [F.duration_factors(rng, T, N, fault=fault) for fault in faults]
    lf, cf = (np.stack(part) for part in zip(*factors, strict=True))
    timings = F.ring_timeline(*F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, lf, cf))
    best, where = F.streak_scores(F.robust_scores(F.detector_signals(timings), window=5), consecutive=3)
    report = F.evaluate_detection(best, where, faults, N, 6.0)
    assert report.localised == 6 and report.false_alarms == 0 and report.precision == 1.0
    # 3 of the 5-window slow after 2 iterations, then 3 in a row: 4 (3 when a straggler came just before)
    assert max(report.delays) == 4 and min(report.delays) >= 3
    assert report.accuracy == 1.0 and report.median_delay == 4.0


def test_the_wait_signal_also_finds_a_slow_rank_on_a_quiet_network():
    N, T = 32, 40
    fault = F.Fault("rank", 9, 0.5, 20)
    lf, cf = F.duration_factors(np.random.default_rng(0), T, N, straggler_prob=0.0, fault=fault)
    timings = F.ring_timeline(*F.ring_seconds(LINK, BITS, FLOPS, FLOPS_PER_SECOND, lf, cf))
    best, where = F.streak_scores(F.robust_scores(F.detector_signals(timings, "wait")), consecutive=3)
    report = F.evaluate_detection(best[None], where[None], [fault], N, 6.0)
    assert report.localised == 1


def test_evaluation_counts_false_alarms_onsets_and_mislocalisation():
    best = np.array([[0, 7, 7, 0, 0, 7, 7, 0], [0, 0, 0, 0, 0, 7, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0.0]])
    where = np.array([[0, 1, 1, 0, 0, 2, 2, 0], [0, 0, 0, 0, 0, 5, 0, 0], [0] * 8])
    faults = [F.Fault("link", 2, 0.2, 4), F.Fault("link", 2, 0.2, 4), None]
    r = F.evaluate_detection(best, where, faults, 4, 6.0, window=1, consecutive=1)
    assert (r.runs, r.localised, r.mislocalised, r.false_alarms) == (2, 1, 1, 1)
    assert r.delays == (1,) and r.healthy_iterations == 4 + 4 + 8
    assert r.precision == pytest.approx(1 / 3) and r.accuracy == 0.5
    assert r.false_alarms_per_1000 == pytest.approx(1000 / 16)


def test_bad_input_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind"):
        F.Fault("switch", 0, 0.1, 0)
    with pytest.raises(ValueError, match="slowdown"):
        F.Fault("link", 0, 0.0, 0)
    with pytest.raises(ValueError, match="index"):
        F.Fault("rank", 8, 0.1, 0).component(8)
    with pytest.raises(TypeError, match="rng"):
        F.duration_factors(0, 5, 4)
    with pytest.raises(ValueError, match="one shape"):
        F.ring_timeline(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="finite"):
        F.ring_timeline(np.full((3, 4), np.nan), np.ones((3, 4)))
    with pytest.raises(ValueError, match="odd"):
        F.robust_scores(rng.random((10, 8)), window=4)
    with pytest.raises(ValueError, match="multiple of groups"):
        F.robust_scores(rng.random((10, 7)), groups=2)
    with pytest.raises(ValueError, match="rank_signal"):
        F.detector_signals(F.ring_timeline(np.ones((2, 4)), np.ones((2, 4))), "lateness")
    with pytest.raises(ValueError, match="iterations"):
        F.timings_from_log([], 4, 2)
    with pytest.raises(ValueError, match=r"\[T, 4\]"):
        F.simulate_ring_training(4, LINK, FLOPS_PER_SECOND, BITS, FLOPS, np.ones((3, 5)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="one fault"):
        F.evaluate_detection(np.zeros((2, 5)), np.zeros((2, 5)), [None], 4, 6.0)
