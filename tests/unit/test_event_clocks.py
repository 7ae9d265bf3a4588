"""commlab.distributed.clocks: independent Poisson clocks for computation (per node) and gossip (per edge).

Statistical checks run at fixed seeds, so they are deterministic; their bounds are a few standard
errors wide, and each test also shows that the same statistic rejects a wrong rate (so it can fail).
"""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from commlab.distributed.clocks import Event, PoissonClocks, from_data, to_data

COMPUTE = [0.5, 1.0, 2.0, 4.0]  # events per second, nodes 0..3
EDGES = [(0, 1), (1, 2), (2, 3), (0, 3), (0, 2)]
GOSSIP = [0.25, 0.5, 1.5, 3.0, 0.75]
HORIZON = 3000.0  # seconds: about 40 000 events at R = 13.5 /s


def _clock(seed=0):
    return PoissonClocks(COMPUTE, EDGES, GOSSIP, seed=seed)


@pytest.fixture(scope="module")
def stream():
    return _clock(seed=7).events(horizon=HORIZON)


def _labels():
    return [("compute", i, None) for i in range(len(COMPUTE))] + [("gossip", i, j) for i, j in EDGES]


def _times(events, label):
    kind, i, j = label
    return np.array([e.time for e in events if (e.kind, e.i, e.j) == (kind, i, j)])


def _window_counts(times, width=1.0):
    return np.bincount((times // width).astype(int), minlength=int(HORIZON / width))[: int(HORIZON / width)]


def test_the_stream_is_time_ordered_inside_the_horizon_and_labels_are_valid(stream):
    times = np.array([e.time for e in stream])
    assert np.all(np.diff(times) > 0) and times[0] > 0 and times[-1] <= HORIZON
    assert {(e.kind, e.i, e.j) for e in stream} == set(_labels())
    assert all(e.edge == (e.i, e.j) and e.i < e.j for e in stream if e.kind == "gossip")


def test_count_of_each_clock_has_poisson_mean_and_variance(stream):
    """Per clock c: total count ~ Poisson(λ_c T) (within 4 sd); over 1 s windows the sample mean and the
    sample variance both equal λ_c (Poisson dispersion), within 4 standard errors."""
    rates = COMPUTE + GOSSIP
    windows = int(HORIZON)
    for rate, label in zip(rates, _labels(), strict=True):
        times = _times(stream, label)
        assert abs(len(times) - rate * HORIZON) < 4 * math.sqrt(rate * HORIZON), label
        counts = _window_counts(times)
        mean, var = counts.mean(), counts.var(ddof=1)
        assert abs(mean - rate) < 4 * math.sqrt(rate / windows), label
        var_se = math.sqrt((rate + 2 * rate**2) / windows)  # Poisson: mu4 - sigma^4 = mu + 2 mu^2
        assert abs(var - rate) < 4 * var_se, (label, var, rate)
        # the same test rejects a rate off by 20 %: it can fail
        assert abs(len(times) - 1.2 * rate * HORIZON) > 4 * math.sqrt(rate * HORIZON), label


def test_gaps_of_each_clock_are_exponential_with_its_rate(stream):
    """KS statistic of each clock's inter-arrival times against Exp(λ_c) below the 1 % critical value
    1.63/sqrt(m); against Exp(1.5 λ_c) it is above it."""
    for rate, label in zip(COMPUTE + GOSSIP, _labels(), strict=True):
        gaps = np.diff(np.concatenate([[0.0], _times(stream, label)]))
        bound = 1.63 / math.sqrt(len(gaps))
        assert stats.kstest(gaps, stats.expon(scale=1 / rate).cdf).statistic < bound, label
        assert stats.kstest(gaps, stats.expon(scale=1 / (1.5 * rate)).cdf).statistic > bound, label


def test_merged_stream_is_poisson_with_the_sum_of_the_rates(stream):
    total = sum(COMPUTE) + sum(GOSSIP)
    assert _clock().total_rate == pytest.approx(total)
    assert abs(len(stream) - total * HORIZON) < 4 * math.sqrt(total * HORIZON)
    gaps = np.diff(np.concatenate([[0.0], [e.time for e in stream]]))
    bound = 1.63 / math.sqrt(len(gaps))
    assert stats.kstest(gaps, stats.expon(scale=1 / total).cdf).statistic < bound
    assert stats.kstest(gaps, stats.expon(scale=1 / (1.05 * total)).cdf).statistic > bound


def test_clocks_are_independent_window_counts_are_uncorrelated(stream):
    """Counts of different clocks over the same 1 s windows: every pairwise correlation within 4/sqrt(M)
    of 0 (M windows); labelling each event from its own gap's uniform (a dependence) fails this."""
    counts = np.stack([_window_counts(_times(stream, label)) for label in _labels()])
    corr = np.corrcoef(counts)
    off = corr[~np.eye(len(corr), dtype=bool)]
    assert np.abs(off).max() < 4 / math.sqrt(counts.shape[1])
    # the merged count is the sum of the per-clock counts, so its variance is the sum of theirs
    merged = _window_counts(np.array([e.time for e in stream]))
    assert np.array_equal(merged, counts.sum(axis=0))
    assert merged.var(ddof=1) == pytest.approx(counts.var(axis=1, ddof=1).sum(), rel=0.1)


def test_a_zero_rate_clock_never_fires():
    clocks = PoissonClocks([1.0, 0.0, 1.0], [(0, 1), (1, 2)], [0.0, 2.0], seed=1)
    events = clocks.events(count=20000)
    assert not any(e.kind == "compute" and e.i == 1 for e in events)
    assert not any(e.edge == (0, 1) for e in events)
    assert {e.edge for e in events if e.kind == "gossip"} == {(1, 2)}


def test_same_seed_same_stream_different_seed_different_stream():
    a, b, c = _clock(3).events(count=5000), _clock(3).events(count=5000), _clock(4).events(count=5000)
    assert a == b
    assert a != c
    assert sum(x.time == y.time for x, y in zip(a, c, strict=True)) == 0
    assert _clock(3).events(horizon=100.0) == [e for e in a if e.time <= 100.0]


def test_the_stream_does_not_depend_on_how_it_is_requested():
    whole = _clock(5).events(count=12000)
    clocks = _clock(5)
    pieces = clocks.take(1) + clocks.take(4095) + clocks.take(0) + clocks.take(5000) + clocks.take(2904)
    assert pieces == whole
    clocks = _clock(5)
    by_horizon = clocks.until(10.0) + clocks.until(10.0) + clocks.until(400.0) + clocks.until(600.5)
    assert by_horizon == whole[: len(by_horizon)]
    assert clocks.take(3) == whole[len(by_horizon): len(by_horizon) + 3]  # the pending event came next
    assert clocks.emitted == len(by_horizon) + 3


def test_state_dict_is_plain_data_and_resumes_exactly():
    whole = _clock(9).events(count=9000)
    clocks = _clock(9)
    first = clocks.take(3333)
    state = json.loads(json.dumps(clocks.state_dict()))
    resumed = PoissonClocks.from_state_dict(state)
    assert first + resumed.take(9000 - 3333) == whole
    other = _clock(9)
    other.load_state_dict(state)
    assert other.take(10) == whole[3333:3343]
    with pytest.raises(ValueError, match="seed"):
        _clock(10).load_state_dict(state)
    with pytest.raises(ValueError, match="gossip_rates"):
        PoissonClocks(COMPUTE, EDGES, 1.0, seed=9).load_state_dict(state)


def test_a_stream_saves_and_loads_as_a_list_of_tuples():
    events = _clock(2).events(count=500)
    data = to_data(events)
    assert all(type(row) is tuple and len(row) == 4 for row in data)
    assert from_data(json.loads(json.dumps(data))) == events
    assert from_data(data)[0] == Event(*data[0])
    with pytest.raises(ValueError, match="time order"):
        from_data([data[1], data[0]])
    with pytest.raises(ValueError, match="kind"):
        from_data([(1.0, "gradient", 0, None)])
    with pytest.raises(ValueError, match="compute event has j = None"):
        from_data([(1.0, "compute", 0, 1)])


def test_the_global_generators_are_untouched():
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    _clock(0).events(count=1000)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="compute_rates"):
        PoissonClocks([1.0, -1.0], seed=0)
    with pytest.raises(ValueError, match="pass n"):
        PoissonClocks(1.0, [(0, 1)], seed=0)
    with pytest.raises(ValueError, match="self-loop"):
        PoissonClocks(1.0, [(1, 1)], n=3, seed=0)
    with pytest.raises(ValueError, match="repeats"):
        PoissonClocks(1.0, [(0, 1), (1, 0)], n=3, seed=0)
    with pytest.raises(ValueError, match="edges"):
        PoissonClocks(1.0, [(0, 3)], n=3, seed=0)
    with pytest.raises(ValueError, match="gossip_rates must be a scalar or 1"):
        PoissonClocks(1.0, [(0, 1)], [1.0, 2.0], n=3, seed=0)
    with pytest.raises(ValueError, match="total rate is 0"):
        PoissonClocks(0.0, [(0, 1)], 0.0, n=2, seed=0)
    with pytest.raises(ValueError, match="seed"):
        PoissonClocks(1.0, n=2, seed=-1)
    clocks = PoissonClocks(1.0, n=2, seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        clocks.events()
    with pytest.raises(ValueError, match="exactly one"):
        clocks.events(horizon=1.0, count=3)
    clocks.take(10)
    with pytest.raises(ValueError, match="horizon"):
        clocks.until(clocks.time / 2)
