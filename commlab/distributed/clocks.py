"""Asynchronous event clocks: independent Poisson processes for local computation and for gossip.

Asynchronous decentralised methods (DADAO, Nabli & Oyallon 2023; the continuized framework of
Even et al. 2021) are driven by **independent Poisson point processes**: node i computes a local
gradient at the points of a process of rate λ_i, and edge (i, j) gossips at the points of its own
process of rate λ_ij. Rates are in **events per second** and times in **seconds** of simulated time.

:class:`PoissonClocks` simulates these processes *exactly* (no time step) by **superposition**:
the union of independent Poisson processes with rates r_1, …, r_K is a Poisson process of rate
R = Σ_c r_c, and each of its points belongs to clock c with probability r_c / R independently of
everything else (the colouring theorem). So the merged stream is generated as

    t_k = t_{k−1} + E_k,    E_k ~ Exp(R)   (E_k = −log(1 − U_k) / R, U_k ~ U[0, 1))
    c_k ~ Categorical(r_1 / R, …, r_K / R)  (c_k = first c with U'_k < (r_1 + … + r_c) / R)

with the uniforms (U_k, U'_k) taken in pairs from one ``numpy`` PCG64 stream seeded from
``SeedTree(seed).numpy("poisson-clocks")``. Each event uses exactly two uniforms, so the stream does
not depend on how it is requested (one event at a time, in chunks, up to a horizon): asking for
``take(3)`` then ``take(2)`` gives the same five events as ``take(5)``, bit for bit. The same seed
gives the same stream; :meth:`PoissonClocks.state_dict` (plain data) resumes a stream exactly, and
:func:`to_data` / :func:`from_data` save and load a stream of events as a list of tuples.

Each per-clock process is then a Poisson process of its own rate, the processes are independent, and
the gaps between a single clock's events are Exp(r_c); ``tests/unit/test_event_clocks.py`` checks all
three by Monte Carlo at fixed seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from commlab._checks import check_int, check_nonnegative, check_real_number, check_seed
from commlab.seeding import SeedTree

KINDS = ("compute", "gossip")
_CHUNK = 4096  # uniforms pairs drawn per refill of the buffer (does not change the stream)


class Event(NamedTuple):
    """One clock tick.

    Attributes:
        time: seconds since the start of the stream (strictly increasing along a stream).
        kind: ``"compute"`` (a local computation at node ``i``) or ``"gossip"`` (edge (i, j)).
        i: the node (compute) or the edge's first node (gossip), in [0, n).
        j: the edge's second node (gossip, i < j), ``None`` for a compute event.
    """

    time: float
    kind: str
    i: int
    j: int | None = None

    @property
    def edge(self) -> tuple[int, int] | None:
        """(i, j) for a gossip event, None for a compute event."""
        return None if self.j is None else (self.i, self.j)


def to_data(events: Iterable[Event]) -> list[tuple]:
    """A stream as plain data: a list of ``(time, kind, i, j)`` tuples (JSON- and pickle-friendly)."""
    return [(float(e.time), str(e.kind), int(e.i), None if e.j is None else int(e.j)) for e in events]


def from_data(data: Iterable[Sequence]) -> list[Event]:
    """The events of :func:`to_data` output (tuples or JSON lists), checked: kinds, nodes, time order."""
    events, last = [], -math.inf
    for k, row in enumerate(data):
        if len(row) != 4:
            raise ValueError(f"event {k} must be (time, kind, i, j), got {row!r}")
        time, kind, i, j = row
        time = check_real_number(f"event {k} time", time, low=0.0)
        if kind not in KINDS:
            raise ValueError(f"event {k} kind must be one of {KINDS}, got {kind!r}")
        i = check_int(f"event {k} node i", i, low=0)
        if (kind == "compute") != (j is None):
            raise ValueError(f"event {k}: a compute event has j = None and a gossip event an int j, got {row!r}")
        if j is not None:
            j = check_int(f"event {k} node j", j, low=0)
        if time < last:
            raise ValueError(f"events must be in time order; event {k} at {time} s follows one at {last} s")
        last = time
        events.append(Event(time, kind, i, j))
    return events


def _rates(name: str, rates, count: int) -> np.ndarray:
    """``rates`` (a scalar, broadcast, or ``count`` values) as float64 events per second, each >= 0."""
    if np.ndim(rates) == 0:
        return np.full(count, check_nonnegative(name, rates), dtype=np.float64)
    values = list(rates)
    if len(values) != count:
        raise ValueError(f"{name} must be a scalar or {count} values, got {len(values)}")
    return np.array([check_nonnegative(f"{name}[{k}]", v) for k, v in enumerate(values)], dtype=np.float64)


def _edges(edges, n: int) -> list[tuple[int, int]]:
    out, seen = [], set()
    for k, edge in enumerate(edges):
        if len(edge) != 2:
            raise ValueError(f"edges[{k}] must be a pair (i, j), got {edge!r}")
        i, j = (check_int(f"edges[{k}] node", v, low=0, high=n - 1) for v in edge)
        if i == j:
            raise ValueError(f"edges[{k}] = {edge!r} is a self-loop; gossip needs two distinct nodes")
        pair = (min(i, j), max(i, j))
        if pair in seen:
            raise ValueError(f"edges[{k}] = {edge!r} repeats an edge; give each undirected edge once")
        seen.add(pair)
        out.append(pair)
    return out


class PoissonClocks:
    """Independent Poisson clocks: one per node (computation) and one per edge (gossip), merged.

    Args:
        compute_rates: λ_i, events per second of node i's computation clock: a scalar for every node
            or n values, each >= 0 (DADAO's default: 1 per node, total rate n).
        edges: the gossip graph's undirected edges (i, j), i ≠ j, each once (stored as i < j).
        gossip_rates: λ_ij, events per second of each edge's gossip clock: a scalar for every edge or
            one value per edge, each >= 0 (DADAO with uniform edge sampling: λ_mix / |E| per edge).
        seed: non-negative integer; the stream is a function of the seed and the rates only.
        n: the number of nodes (required when ``compute_rates`` is a scalar).

    Attributes:
        n, edges: nodes and edges; ``compute_rates`` ``[n]`` and ``gossip_rates`` ``[|E|]`` float64.
        total_rate: R = Σ λ_i + Σ λ_ij, events per second of the merged stream.
        time: seconds, the time of the last event handed out (0 before the first).
        emitted: how many events have been handed out.
    """

    def __init__(self, compute_rates, edges: Iterable[Sequence[int]] = (), gossip_rates=1.0, *, seed: int,
                 n: int | None = None):
        if np.ndim(compute_rates) == 0:
            if n is None:
                raise ValueError("compute_rates is a scalar: pass n, the number of nodes")
            self.n = check_int("n", n, low=1)
        else:
            self.n = check_int("n", len(compute_rates), low=1)
            if n is not None and check_int("n", n, low=1) != self.n:
                raise ValueError(f"n = {n} but compute_rates has {self.n} values")
        self.compute_rates = _rates("compute_rates", compute_rates, self.n)
        self.edges = _edges(list(edges), self.n)
        self.gossip_rates = _rates("gossip_rates", gossip_rates, len(self.edges))
        rates = np.concatenate([self.compute_rates, self.gossip_rates])
        self.total_rate = float(rates.sum())
        if not self.total_rate > 0:
            raise ValueError("at least one compute or gossip rate must be > 0 (the total rate is 0)")
        self._cumulative = np.cumsum(rates) / self.total_rate
        self._last = int(np.flatnonzero(rates > 0)[-1])  # guards U' against cumsum rounding below 1
        self.seed = check_seed(seed)
        self._reset()

    # -- the stream ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        self._rng = SeedTree(self.seed).numpy("poisson-clocks")
        self._buffer = np.empty((0, 2))
        self._pos = 0
        self.time = 0.0
        self.emitted = 0

    def _uniforms(self, k: int) -> np.ndarray:
        """The next ``k`` pairs (U, U') of the stream, ``[k, 2]``."""
        out = []
        while k > 0:
            if self._pos == len(self._buffer):
                self._buffer, self._pos = self._rng.random((_CHUNK, 2)), 0
            take = min(k, len(self._buffer) - self._pos)
            out.append(self._buffer[self._pos:self._pos + take])
            self._pos += take
            k -= take
        return np.concatenate(out) if out else np.empty((0, 2))

    def _event(self, time: float, clock: int) -> Event:
        if clock < self.n:
            return Event(time, "compute", clock)
        i, j = self.edges[clock - self.n]
        return Event(time, "gossip", i, j)

    def _draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        u = self._uniforms(k)
        gaps = -np.log1p(-u[:, 0]) / self.total_rate  # Exp(R) by inversion
        times = np.add.accumulate(np.concatenate([[self.time], gaps]))[1:]  # left-to-right, chunk-invariant
        clocks = np.minimum(np.searchsorted(self._cumulative, u[:, 1], side="right"), self._last)
        return times, clocks

    def take(self, count: int) -> list[Event]:
        """The next ``count`` events of the merged stream, in time order."""
        count = check_int("count", count, low=0)
        times, clocks = self._draw(count)
        if count:
            self.time, self.emitted = float(times[-1]), self.emitted + count
        return [self._event(float(t), int(c)) for t, c in zip(times, clocks, strict=True)]

    def until(self, horizon: float) -> list[Event]:
        """All further events with time <= ``horizon`` seconds; the first event after it stays pending
        (the next call returns it). ``horizon`` must not be before :attr:`time`."""
        horizon = check_real_number("horizon", horizon, low=self.time)
        events = []
        while True:
            state = (self._rng.bit_generator.state, self._buffer, self._pos, self.time, self.emitted)
            block = max(16, min(_CHUNK, int((horizon - self.time) * self.total_rate * 1.1) + 16))
            times, clocks = self._draw(block)
            inside = int(np.searchsorted(times, horizon, side="right"))
            if inside < block:  # roll back to just after the last event inside the horizon
                rng_state, self._buffer, self._pos, self.time, self.emitted = state
                self._rng.bit_generator.state = rng_state
                self._skip(inside)
                events += [self._event(float(t), int(c)) for t, c in zip(times[:inside], clocks[:inside], strict=True)]
                if inside:
                    self.time = float(times[inside - 1])
                return events
            self.time, self.emitted = float(times[-1]), self.emitted + block
            events += [self._event(float(t), int(c)) for t, c in zip(times, clocks, strict=True)]

    def _skip(self, k: int) -> None:
        """Consume ``k`` events' uniforms without building them (time is set by the caller)."""
        self._uniforms(k)
        self.emitted += k

    def events(self, *, horizon: float | None = None, count: int | None = None) -> list[Event]:
        """A fresh stream from time 0 (the clock restarts): exactly one of ``horizon`` (seconds: every
        event in [0, horizon]) or ``count`` (the first ``count`` events)."""
        if (horizon is None) == (count is None):
            raise ValueError("pass exactly one of horizon (seconds) and count (events)")
        self._reset()
        return self.take(count) if horizon is None else self.until(horizon)

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain data (numbers, lists, strings) from which :meth:`load_state_dict` resumes the stream
        exactly: the rates, the graph, the seed, and how far the stream has gone."""
        return {"n": self.n, "compute_rates": self.compute_rates.tolist(), "edges": [list(e) for e in self.edges],
                "gossip_rates": self.gossip_rates.tolist(), "seed": self.seed, "emitted": self.emitted,
                "time": self.time}

    @classmethod
    def from_state_dict(cls, state: dict) -> PoissonClocks:
        """A clock built from :meth:`state_dict` output, positioned where that clock was."""
        clocks = cls(state["compute_rates"], state["edges"], state["gossip_rates"], seed=state["seed"], n=state["n"])
        clocks.load_state_dict(state)
        return clocks

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` output of a clock with the same rates, graph and seed (the
        stream's uniforms are redrawn and skipped, so the next events are the saved clock's next ones)."""
        mine = self.state_dict()
        for key in ("n", "compute_rates", "edges", "gossip_rates", "seed"):
            theirs = [list(e) for e in state[key]] if key == "edges" else state[key]
            if theirs != mine[key]:
                raise ValueError(f"state_dict {key} = {state[key]!r} does not match this clock's {mine[key]!r}")
        emitted = check_int("emitted", state["emitted"], low=0)
        time = check_real_number("time", state["time"], low=0.0)
        self._reset()
        self._skip(emitted)
        self.time = time

    def __repr__(self) -> str:
        return (f"PoissonClocks(n={self.n}, edges={len(self.edges)}, total_rate={self.total_rate:g}/s, "
                f"seed={self.seed}, emitted={self.emitted})")
