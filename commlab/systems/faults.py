"""Slow links and slow ranks in ring all-reduce training, and a C4D-style detector that finds them from
per-connection message times and per-rank collective wait times.

**Training model.** N ranks repeat, for t = 0, 1, ..., T − 1: compute c[t, r] seconds, then a ring
all-reduce of n bits (2(N − 1) steps; in each, rank r sends n/N bits to r + 1 and receives from r − 1,
:func:`~commlab.systems.collectives.ring_all_reduce`), then the next iteration, with no barrier besides
the collective itself. Every message of connection r → r + 1 in iteration t takes d[t, r] seconds.

**Noise and faults** (C4 brief): durations are stretched by multiplicative factors (:func:`duration_factors`),
1 + σ·ε with ε ~ N(0, 1), times a straggler factor (3×) with probability p, independently per
(iteration, connection) and per (iteration, rank); a :class:`Fault` multiplies one connection's (a slow
link) or one rank's compute (a slow rank, C4's non-communication fault) by 1 + s from iteration t0 on.
On the engine (:func:`simulate_ring_training`) a factor f slows the rate: rank r's transmit wire runs at
B/f in iteration t (so d = ℓ + (n/N)·f/B) and its compute unit at F/f (so c = flops·f/F).

**Fast exact model** (:func:`ring_timeline`). A ring step crosses every wire with one flow, so no two
flows share a wire and the engine's times obey a max-plus recurrence. With S_k[r] the time rank r starts
step k (S_0 = its entry into the collective), the message r → r + 1 leaves when both ends have posted,
A_k[r] = max(S_k[r], S_k[r + 1]) + d[r], and rank r's step ends when its send and its receive have:

    S_{k+1}[r] = max(A_k[r], A_k[r − 1]),        entry[t] = finish[t − 1] + c[t],   finish[t] = S_{2(N−1)}.

The unit tests check that it equals the engine's event log; it runs thousands of iterations vectorised.

**Detector** (C4D-like, the brief's). Signals per iteration: the N connections' message times d and one
per rank, read from the same timestamps: its gap, entry[t] − finish[t − 1], the time it spent outside the
collective (a slow rank's is long), or its −wait, wait = finish − entry (a late, slow rank waits least:
the others wait for it; but on a ring the wait also inherits the stagger with which the ranks left the
last collective, up to N/2 steps apart after one straggler, which swamps a small slowdown). For each
group (connections, ranks) separately, with m[t, c] the median of signal c over the last W iterations,

    z[t, c] = (m[t, c] − median_c m[t, ·]) / (1.4826 · MAD_c m[t, ·]),   r[t, c] = x[t, c] − median_c x[t, ·],

with m[t, c] the median of r[t', c] over the last W iterations t' (the deviation from the iteration's
own median first, so that a stall every component shares in one iteration cancels),

an alarm fires when one component has z > z_thr in w consecutive iterations, and localises the fault to
that component (:func:`streak_scores`, :func:`evaluate_detection`). Components are numbered
0, ..., N − 1 for the links r → r + 1 and N, ..., 2N − 1 for the ranks (:meth:`Fault.component`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_probability
from commlab.comm.link import Link
from commlab.systems.events import Network, Record

KINDS = ("link", "rank")
MAD_TO_SIGMA = 1.4826  # 1/Φ⁻¹(3/4): the MAD of a normal sample times this estimates its σ


@dataclass(frozen=True)
class Fault:
    """A slowdown ``slowdown`` = s > 0 (durations × (1 + s)) from iteration ``start`` = t0 on, of the link
    ``index`` → ``index`` + 1 (``kind="link"``) or of the compute of rank ``index`` (``kind="rank"``)."""

    kind: str
    index: int
    slowdown: float
    start: int

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        check_int("index", self.index, low=0)
        check_positive("slowdown", self.slowdown)
        check_int("start", self.start, low=0)

    def component(self, n_ranks: int) -> int:
        """The detector's component of this fault: the link's index, or N + the rank's."""
        check_int("index", self.index, high=check_int("n_ranks", n_ranks, low=2) - 1)
        return self.index + (n_ranks if self.kind == "rank" else 0)


class RingTimings(NamedTuple):
    """Seconds, each ``[..., T, N]``: when rank r entered and finished iteration t's all-reduce, and how
    long each message of connection r → r + 1 took in it."""

    entry: np.ndarray
    finish: np.ndarray
    message: np.ndarray

    @property
    def wait(self) -> np.ndarray:
        """Time each rank spent in the collective, finish − entry, ``[..., T, N]``."""
        return self.finish - self.entry

    @property
    def gap(self) -> np.ndarray:
        """Time each rank spent outside the collective before entering it, entry[t] − finish[t − 1]
        (finish[−1] = 0), ``[..., T, N]``: its compute, as the timestamps show it."""
        previous = np.concatenate([np.zeros_like(self.finish[..., :1, :]), self.finish[..., :-1, :]], axis=-2)
        return self.entry - previous


def duration_factors(rng: np.random.Generator, iterations: int, n_ranks: int, *, sigma: float = 0.02,
                     straggler_prob: float = 0.01, straggler_factor: float = 3.0,
                     fault: Fault | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multiplicative stretch of every message time and compute time: ``(link [T, N], compute [T, N])``.

    Each entry is (1 + σ·ε)·(``straggler_factor`` with probability ``straggler_prob``, else 1), ε ~ N(0, 1),
    drawn from ``rng`` (links first, then compute); ``fault`` multiplies its column by 1 + s from t0 on.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    T, N = check_int("iterations", iterations, low=1), check_int("n_ranks", n_ranks, low=2)
    sigma, p = check_nonnegative("sigma", sigma), check_probability("straggler_prob", straggler_prob)
    x = check_positive("straggler_factor", straggler_factor)
    factors = []
    for _ in KINDS:
        f = (1.0 + sigma * rng.standard_normal((T, N))) * np.where(rng.random((T, N)) < p, x, 1.0)
        if (f <= 0).any():
            raise ValueError(f"sigma = {sigma} gives a non-positive duration factor; use a smaller sigma")
        factors.append(f)
    if fault is not None:
        factors[KINDS.index(fault.kind)][fault.start:, fault.component(N) % N] *= 1.0 + fault.slowdown
    return factors[0], factors[1]


def ring_seconds(link: Link, bits: float, flops: float, flops_per_second: float, link_factors,
                 compute_factors) -> tuple[np.ndarray, np.ndarray]:
    """``(message [..., T, N], compute [..., T, N])`` seconds of the training model on ``link`` (bit/s, s):
    d = ℓ + (n/N)·f/B and c = flops·g/F, for factors f, g (e.g. from :func:`duration_factors`)."""
    link_factors, compute_factors = _factors(link_factors, compute_factors)
    n_ranks = link_factors.shape[-1]
    chunk = check_nonnegative("bits", bits) / n_ranks
    per_bit = 0.0 if link.bandwidth == math.inf else 1.0 / link.bandwidth
    message = link.latency + chunk * per_bit * link_factors
    return message, check_nonnegative("flops", flops) / check_positive("flops_per_second", flops_per_second) \
        * compute_factors


def simulate_ring_training(n_ranks: int, link: Link, flops_per_second: float, bits: float, flops: float,
                           link_factors, compute_factors) -> Network:
    """Run the training model on the discrete-event engine and return the :class:`Network` (its ``log``).

    Every rank has ``link`` (bit/s, s) and a compute unit of ``flops_per_second``; the receive sides are
    left unconstrained (bandwidth ∞) so each connection runs at its sender's rate. In iteration t rank r
    sets its compute unit to F/g[t, r] and computes ``flops``, then sets its transmit wire to B/f[t, r]
    and runs its part of the ring all-reduce of ``bits``, logging ``"ring_all_reduce"`` when it is done.
    ``link_factors``, ``compute_factors``: ``[T, N]`` (:func:`duration_factors`).
    """
    link_factors, compute_factors = _factors(link_factors, compute_factors)
    if link_factors.ndim != 2 or link_factors.shape[1] != check_int("n_ranks", n_ranks, low=2):
        raise ValueError(f"the factors must be [T, {n_ranks}], got {link_factors.shape}")
    F, bits = check_positive("flops_per_second", flops_per_second), check_nonnegative("bits", bits)
    flops = check_nonnegative("flops", flops)
    net = Network(n_ranks, link, flops_per_second=F)
    for wire in net.rx:
        wire.bandwidth = math.inf

    def rank_program(rank):
        for t in range(link_factors.shape[0]):
            net.flops_per_second[rank] = F / compute_factors[t, rank]
            yield from net.compute(rank, flops)
            net.tx[rank].bandwidth = link.bandwidth / link_factors[t, rank]  # none of its flows is in flight
            for _ in range(2 * (n_ranks - 1)):
                yield from net.sendrecv(rank, (rank + 1) % n_ranks, bits / n_ranks, (rank - 1) % n_ranks, tag=t)
            net.log.append(Record(net.now, rank, "ring_all_reduce", bits))

    for rank in range(n_ranks):
        net.start(rank_program(rank))
    net.run()
    return net


def timings_from_log(log: list[Record], n_ranks: int, iterations: int) -> RingTimings:
    """:class:`RingTimings` ``[T, N]`` read from the event log of :func:`simulate_ring_training`: entry = the
    rank's t-th ``compute_end``, finish = its t-th ``ring_all_reduce``, message = the mean over iteration
    t's 2(N − 1) messages r → r + 1 of (their ``recv`` time − their ``send`` time)."""
    N, T = check_int("n_ranks", n_ranks, low=2), check_int("iterations", iterations, low=1)
    times: dict[tuple, list[float]] = {}
    for record in log:
        if record.kind == "recv":
            key = ("recv", record.peer)  # the connection peer -> rank
        elif record.kind == "send":
            key = ("send", record.rank)
        else:
            key = (record.kind, record.rank)
        times.setdefault(key, []).append(record.time)
    K = 2 * (N - 1)

    def table(kind, per_iteration):
        rows = [times.get((kind, r), []) for r in range(N)]
        if any(len(row) != T * per_iteration for row in rows):
            raise ValueError(f"the log does not hold {T} iterations of {N} ranks ({kind!r} records missing)")
        return np.asarray(rows, dtype=np.float64).reshape(N, T, per_iteration).transpose(1, 0, 2)

    message = (table("recv", K) - table("send", K)).mean(axis=-1)
    return RingTimings(table("compute_end", 1)[..., 0], table("ring_all_reduce", 1)[..., 0], message)


def ring_timeline(message_seconds, compute_seconds) -> RingTimings:
    """The engine's times by the max-plus recurrence of the module docstring, for ``[..., T, N]`` arrays of
    message and compute seconds (any leading batch axes, e.g. independent runs)."""
    d, c = _factors(message_seconds, compute_seconds)
    N = d.shape[-1]
    entry, finish = np.empty_like(d), np.empty_like(d)
    start = np.zeros(d.shape[:-2] + (N + 1,))  # S[0..N-1], then S[0] again (the ring closes)
    sent = np.zeros_like(start)  # A[N-1], then A[0..N-1]
    for t in range(d.shape[-2]):
        start[..., :N] += c[..., t, :]
        start[..., N] = start[..., 0]
        entry[..., t, :] = start[..., :N]
        dt = d[..., t, :]
        for _ in range(2 * (N - 1)):
            np.maximum(start[..., :N], start[..., 1:], out=sent[..., 1:])  # A[r] = max(S[r], S[r+1]) + d[r]
            sent[..., 1:] += dt
            sent[..., 0] = sent[..., N]
            np.maximum(sent[..., 1:], sent[..., :N], out=start[..., :N])  # S'[r] = max(A[r], A[r-1])
            start[..., N] = start[..., 0]
        finish[..., t, :] = start[..., :N]
    return RingTimings(entry, finish, d.copy())


RANK_SIGNALS = ("gap", "wait")


def detector_signals(timings: RingTimings, rank_signal: str = "gap") -> np.ndarray:
    """``[..., T, 2N]``: the N message times (links r → r + 1), then one signal per rank: its ``"gap"``
    (time outside the collective, large for a slow rank) or its ``"wait"`` negated (a slow rank enters
    last and waits least, but the wait also carries the ring's finish stagger of the last iteration)."""
    check_choice("rank_signal", rank_signal, RANK_SIGNALS)
    ranks = timings.gap if rank_signal == "gap" else -timings.wait
    return np.concatenate([timings.message, ranks], axis=-1)


def robust_scores(signals, *, window: int = 5, groups: int = 2) -> np.ndarray:
    """Robust z-scores ``[..., T, C]`` of ``signals`` ``[..., T, C]`` (C split into ``groups`` equal groups,
    each scored against itself): z = (m − median m)/(1.4826·MAD m), where m[t, c] is the median over the
    last ``window`` (odd) iterations of r[t, c] = x[t, c] − median_c x[t, ·], each iteration's deviation
    from its group's median (so a slowdown every component shares in one iteration, e.g. the whole ring
    waiting for one straggler, cancels before the window's median); NaN for the first window − 1
    iterations. A group with MAD 0 scores 0 where m equals its median and ±∞ elsewhere."""
    x = np.asarray(signals, dtype=np.float64)
    W = check_int("window", window, low=1)
    if W % 2 == 0:
        raise ValueError(f"window must be odd (the median of the last window iterations), got {W}")
    G = check_int("groups", groups, low=1)
    if x.ndim < 2 or x.shape[-1] % G or x.shape[-1] // G < 3 or not np.isfinite(x).all():
        raise ValueError(f"signals must be a finite [..., T, C] array with C a multiple of groups = {G} and "
                         f">= 3 components per group, got shape {x.shape}")
    T = x.shape[-2]
    z = np.full(x.shape, np.nan)
    if T < W:
        return z
    x = x.reshape(x.shape[:-1] + (G, -1))
    x = (x - np.median(x, axis=-1, keepdims=True)).reshape(z.shape)  # r[t, c] = x[t, c] − median_c x[t, ·]
    windows = np.lib.stride_tricks.sliding_window_view(x, W, axis=-2)  # [..., T - W + 1, C, W]
    m = np.partition(windows, W // 2, axis=-1)[..., W // 2]
    m = m.reshape(m.shape[:-1] + (G, -1))
    centre = np.median(m, axis=-1, keepdims=True)
    spread = MAD_TO_SIGMA * np.median(np.abs(m - centre), axis=-1, keepdims=True)
    deviation = m - centre
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(deviation == 0, 0.0, deviation / spread)
    z[..., W - 1:, :] = scores.reshape(scores.shape[:-2] + (-1,))
    return z


def streak_scores(z, *, consecutive: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(best [..., T], where [..., T])``: best[t] = max_c min_{j < w} z[t − j, c], the largest threshold
    some component has exceeded in the last w = ``consecutive`` iterations, and that component (-1 and
    −∞ while no component has w scores yet). An alarm at threshold θ fires at t exactly when best[t] > θ."""
    z = np.asarray(z, dtype=np.float64)
    w = check_int("consecutive", consecutive, low=1)
    if z.ndim < 2:
        raise ValueError(f"z must be [..., T, C], got shape {z.shape}")
    z = np.where(np.isnan(z), -np.inf, z)
    T = z.shape[-2]
    low = np.full(z.shape, -np.inf)
    if T >= w:
        low[..., w - 1:, :] = np.lib.stride_tricks.sliding_window_view(z, w, axis=-2).min(axis=-1)
    where = low.argmax(axis=-1)
    best = np.take_along_axis(low, where[..., None], axis=-1)[..., 0]
    return best, np.where(best == -np.inf, -1, where)


@dataclass(frozen=True)
class DetectionReport:
    """Outcome of the detector over many runs at one threshold (:func:`evaluate_detection`)."""

    runs: int  # faulty runs
    localised: int  # faulty runs whose first alarm at or after t0 names the faulty component
    mislocalised: int  # faulty runs whose first alarm at or after t0 names another component
    false_alarms: int  # alarm onsets before the fault (or in a fault-free run)
    healthy_iterations: int  # armed iterations before the fault (the detector has w windows of data)
    delays: tuple[int, ...]  # t_alarm − t0 of the localised runs

    @property
    def accuracy(self) -> float:
        """Localisation accuracy (= recall): localised / faulty runs (NaN without faulty runs)."""
        return self.localised / self.runs if self.runs else math.nan

    @property
    def precision(self) -> float:
        """Correct alarms / all alarms (NaN without alarms)."""
        alarms = self.localised + self.mislocalised + self.false_alarms
        return self.localised / alarms if alarms else math.nan

    @property
    def median_delay(self) -> float:
        """Median detection delay in iterations of the localised runs (NaN if none)."""
        return float(np.median(self.delays)) if self.delays else math.nan

    @property
    def false_alarms_per_1000(self) -> float:
        """False alarm onsets per 1,000 healthy (armed) iterations."""
        return 1000 * self.false_alarms / self.healthy_iterations if self.healthy_iterations else math.nan


def evaluate_detection(best, where, faults, n_ranks: int, threshold: float, *, window: int = 5,
                       consecutive: int = 3) -> DetectionReport:
    """Score the alarms of :func:`streak_scores` (``best``, ``where``: ``[R, T]``) of R runs, run i with
    ``faults[i]`` (a :class:`Fault`, or None for a fault-free run), at ``threshold`` = z_thr.

    An alarm onset is an iteration with best > z_thr whose predecessor had best <= z_thr. Onsets before
    t0 are false alarms; the first onset at or after t0 localises the fault if ``where`` names its
    component. Healthy iterations: those before t0 (all T for a fault-free run) from the first armed one,
    window + consecutive − 2, on.
    """
    best, where = np.asarray(best, dtype=np.float64), np.asarray(where)
    if best.ndim != 2 or where.shape != best.shape or len(faults) != best.shape[0]:
        raise ValueError(f"best and where must be [R, T] with one fault (or None) per run; got shapes "
                         f"{best.shape}, {where.shape} and {len(faults)} faults")
    threshold = float(threshold)
    T, armed = best.shape[1], check_int("window", window, low=1) + check_int("consecutive", consecutive, low=1) - 2
    on = best > threshold
    onset = on & ~np.concatenate([np.zeros((on.shape[0], 1), bool), on[:, :-1]], axis=1)
    runs = localised = mislocalised = false_alarms = healthy = 0
    delays = []
    for i, fault in enumerate(faults):
        t0 = T if fault is None else min(fault.start, T)
        false_alarms += int(onset[i, :t0].sum())
        healthy += max(0, t0 - armed)
        if fault is None:
            continue
        runs += 1
        later = np.flatnonzero(onset[i, t0:])
        if later.size:
            t = t0 + int(later[0])
            if where[i, t] == fault.component(n_ranks):
                localised += 1
                delays.append(t - t0)
            else:
                mislocalised += 1
    return DetectionReport(runs, localised, mislocalised, false_alarms, healthy, tuple(delays))


def _factors(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2 or a.shape[-1] < 2 or a.shape[-2] < 1:
        raise ValueError(f"the link and compute arrays must have one shape [..., T, N] with N >= 2, got "
                         f"{a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or (a < 0).any() or (b < 0).any():
        raise ValueError("the link and compute arrays must be finite and non-negative")
    return a, b
