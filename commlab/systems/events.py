"""A discrete-event model of N ranks that compute and exchange messages, on simpy.

**Links.** Every rank has one full-duplex network link, the lab's α–β :class:`~commlab.comm.link.Link`
(bandwidth B bit/s, latency ℓ s), to a non-blocking switch. The engine splits it into two directed
:class:`Wire` s, the rank's transmit and receive side, each of bandwidth B and latency ℓ/2. A message
from rank s to rank d crosses ``tx[s]`` then ``rx[d]`` (:meth:`Network.route`): it waits the sum of
their latencies (ℓ on a uniform network, each message's own, so concurrent messages wait in parallel),
then its bits flow.

**Sharing.** Bits flow as a fluid. The flows on the wires share them max-min fairly (progressive
filling): every flow gets the equal share of its most crowded wire, and capacity a flow cannot use
there goes to the others. On one wire this is processor sharing: k flows at once each get B/k, and a
flow that ends hands its share to those left. Rates are recomputed whenever a flow starts or ends, so
a lone message of n bits takes exactly ℓ + n/B.

**Messages** rendezvous: :meth:`Network.send` waits until the receiver has posted the matching
:meth:`Network.recv` (same source, destination and tag, in order), as MPI's rendezvous protocol does for large messages.

**Compute.** Every rank has one compute unit of F FLOP/s (a simpy ``Resource`` of capacity 1): a task of
f FLOP occupies it for f/F seconds; tasks queue first-come first-served.

**Randomness** enters only through ``jitter`` j: each message's latency and each compute task's duration
are stretched by 1 + j·u, u ~ U[0, 1) drawn from ``numpy.random.default_rng(seed)`` in event order. The
event log is therefore the same for the same seed.

**Event log** (:attr:`Network.log`): one :class:`Record` (time s, rank, kind, amount, peer) per
``"send"`` (the receive is posted and the message leaves; amount in bits, peer = destination),
``"recv"`` (the last bit has arrived; peer = source), ``"compute_start"`` / ``"compute_end"`` (amount
in FLOP) and, from :mod:`~commlab.systems.collectives`, one record per rank when it finishes a
collective (kind = the collective's name, amount = its bits).

Example (the process's value is the time its last rank finished, in seconds)::

    net = Network(4, Link(bandwidth=1e9, latency=1e-5), flops_per_second=1e12)
    reduce = net.start(collectives.ring_all_reduce(net, 8e6))  # 8e6 bits on every rank
    net.start(net.compute(0, 1e9))                              # overlapped with 1 GFLOP on rank 0
    net.run()
    reduce.value, net.log
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import simpy

from commlab._checks import check_int, check_nonnegative, check_positive, check_seed
from commlab.comm.link import Link


class Record(NamedTuple):
    """One entry of the event log: ``time`` in seconds, ``amount`` in bits (messages) or FLOP (compute)."""

    time: float
    rank: int
    kind: str
    amount: float
    peer: int = -1


@dataclass(eq=False)
class Wire:
    """One direction of a link: ``bandwidth`` bit/s (``math.inf``: unlimited), ``latency`` seconds."""

    name: str
    bandwidth: float
    latency: float


@dataclass(eq=False)
class _Flow:
    wires: list[Wire]
    remaining: float  # bits
    done: simpy.Event
    rate: float = 0.0  # bit/s


class Network:
    """N ranks with a compute unit each, joined by their links through a non-blocking switch.

    Args:
        n_ranks: N >= 1.
        links: the :class:`~commlab.comm.link.Link` (bit/s, s) of every rank, or one per rank.
        flops_per_second: F, of every rank's compute unit or one per rank; ``math.inf`` (default):
            compute takes no time.
        jitter: j >= 0, relative stretch of latencies and compute times (see the module docstring).
        seed: seed of the jitter's generator; required when ``jitter > 0``.

    Attributes:
        env: the ``simpy.Environment``; ``tx[r]`` / ``rx[r]``: rank r's :class:`Wire` s; ``units[r]``: its
            compute unit; ``log``: the list of :class:`Record` s.
    """

    def __init__(self, n_ranks: int, links: Link | Sequence[Link], *,
                 flops_per_second: float | Sequence[float] = math.inf, jitter: float = 0.0,
                 seed: int | None = None):
        self.n_ranks = check_int("n_ranks", n_ranks, low=1)
        links = self._per_rank("links", links, Link)
        flops = self._per_rank("flops_per_second", flops_per_second, float | int)
        self.flops_per_second = [math.inf if f == math.inf else check_positive("flops_per_second", f)
                                 for f in flops]
        self.jitter = check_nonnegative("jitter", jitter)
        if self.jitter > 0 and seed is None:
            raise ValueError("seed is required when jitter > 0 (randomness is explicit)")
        self._rng = None if seed is None else np.random.default_rng(check_seed(seed))
        self.env = simpy.Environment(initial_time=0.0)
        self.tx = [Wire(f"tx{r}", link.bandwidth, link.latency / 2) for r, link in enumerate(links)]
        self.rx = [Wire(f"rx{r}", link.bandwidth, link.latency / 2) for r, link in enumerate(links)]
        self.units = [simpy.Resource(self.env, capacity=1) for _ in range(self.n_ranks)]
        self.log: list[Record] = []
        self._flows: list[_Flow] = []
        self._last = 0.0
        self._version = 0
        self._posted: dict[tuple, simpy.Store] = {}

    @property
    def now(self) -> float:
        """The simulated time in seconds."""
        return self.env.now

    def start(self, process: Generator) -> simpy.Process:
        """Start a simpy process (e.g. a collective of :mod:`~commlab.systems.collectives`) now."""
        return self.env.process(process)

    def run(self, until=None) -> None:
        """Run the simulation until no event is left (or until the time or event ``until``)."""
        self.env.run(until)

    def route(self, src: int, dst: int) -> list[Wire]:
        """The wires a message from ``src`` to ``dst`` crosses: ``[tx[src], rx[dst]]``."""
        return [self.tx[src], self.rx[dst]]

    def send(self, src: int, dst: int, bits: float, tag=None) -> Generator:
        """Process: send ``bits`` from rank ``src`` to ``dst`` once ``dst`` has posted the matching receive;
        ends when the last bit has arrived, after the route's latency and the bits' fair-shared flow."""
        src, dst, bits = self._rank("src", src), self._rank("dst", dst), check_nonnegative("bits", bits)
        if src == dst:
            raise ValueError(f"src and dst must differ, got {src} for both")
        return self._send(src, dst, bits, tag)

    def recv(self, dst: int, src: int, tag=None) -> Generator:
        """Process: rank ``dst`` posts a receive from ``src`` and waits until the message has arrived."""
        return self._recv(self._rank("dst", dst), self._rank("src", src), tag)

    def sendrecv(self, rank: int, dst: int, bits: float, src: int, tag=None) -> Generator:
        """Process: rank ``rank`` sends ``bits`` to ``dst`` and receives from ``src`` at once; ends when both have."""
        return self._all([self.send(rank, dst, bits, tag), self.recv(rank, src, tag)])

    def compute(self, rank: int, flops: float) -> Generator:
        """Process: a task of ``flops`` FLOP on ``rank``'s compute unit (queued while the unit is busy)."""
        return self._compute(self._rank("rank", rank), check_nonnegative("flops", flops))

    def _send(self, src: int, dst: int, bits: float, tag) -> Generator:
        delivered = yield self._mailbox(src, dst, tag).get()
        self.log.append(Record(self.now, src, "send", bits, dst))
        path = self.route(src, dst)
        yield self.env.timeout(sum(w.latency for w in path) * self._stretch())
        if bits > 0 and any(w.bandwidth < math.inf for w in path):
            yield self._carry(path, bits)
        self.log.append(Record(self.now, dst, "recv", bits, src))
        delivered.succeed()

    def _recv(self, dst: int, src: int, tag) -> Generator:
        delivered = self.env.event()
        yield self._mailbox(src, dst, tag).put(delivered)
        yield delivered

    def _all(self, processes: list[Generator]) -> Generator:
        yield self.env.all_of([self.env.process(process) for process in processes])

    def _compute(self, rank: int, flops: float) -> Generator:
        with self.units[rank].request() as granted:
            yield granted
            self.log.append(Record(self.now, rank, "compute_start", flops))
            rate = self.flops_per_second[rank]
            yield self.env.timeout(0.0 if rate == math.inf else flops / rate * self._stretch())
            self.log.append(Record(self.now, rank, "compute_end", flops))

    # -- the fluid of bits ------------------------------------------------------------------------------

    def _carry(self, wires: list[Wire], bits: float) -> simpy.Event:
        flow = _Flow(wires, bits, self.env.event())  # rate 0 until the rates are recomputed, once for
        self._flows.append(flow)  # all flows starting at this instant, after they all have started
        version = self._version
        self.env.timeout(0.0).callbacks.append(lambda _: self._wake(version, []))
        return flow.done

    def _advance(self) -> None:
        elapsed, self._last = self.now - self._last, self.now
        for flow in self._flows:
            flow.remaining -= flow.rate * elapsed

    def _reschedule(self) -> None:
        """Recompute the rates and wake up when the next flows end (those with the least time left)."""
        self._version += 1
        if not self._flows:
            return
        _max_min_rates(self._flows)
        left = [flow.remaining / flow.rate for flow in self._flows]
        wait = min(left)
        ending = [flow for flow, seconds in zip(self._flows, left, strict=True) if seconds == wait]
        version = self._version
        self.env.timeout(max(wait, 0.0)).callbacks.append(lambda _: self._wake(version, ending))

    def _wake(self, version: int, ending: list[_Flow]) -> None:
        if version != self._version:  # a flow started or ended since this wake-up was set
            return
        self._advance()
        self._flows = [flow for flow in self._flows if flow not in ending]
        for flow in ending:
            flow.done.succeed()
        self._reschedule()

    # -- checks and helpers -----------------------------------------------------------------------------

    def _stretch(self) -> float:
        return 1.0 + self.jitter * self._rng.random() if self.jitter > 0 else 1.0

    def _mailbox(self, src: int, dst: int, tag) -> simpy.Store:
        key = (src, dst, tag)
        if key not in self._posted:
            self._posted[key] = simpy.Store(self.env)
        return self._posted[key]

    def _rank(self, name: str, rank) -> int:
        return check_int(name, rank, low=0, high=self.n_ranks - 1)

    def _per_rank(self, name: str, value, kind) -> list:
        values = [value] * self.n_ranks if isinstance(value, kind) else value
        if not isinstance(values, Sequence) or len(values) != self.n_ranks or not all(
                isinstance(v, kind) for v in values):
            raise ValueError(f"{name} must be one value or {self.n_ranks} values (one per rank), got {value!r}")
        return values


def _max_min_rates(flows: list[_Flow]) -> None:
    """Progressive filling: the rates of all unfixed flows rise together until wires saturate; the
    flows on the most crowded wires (least capacity per unfixed flow) are fixed at that share, their
    rates are taken off every wire they cross, and the rest rise on until all are fixed."""
    capacity = {wire: wire.bandwidth for flow in flows for wire in flow.wires}
    unfixed = flows
    while unfixed:
        load = Counter(wire for flow in unfixed for wire in flow.wires)
        share = min(capacity[wire] / count for wire, count in load.items())
        saturated = {wire for wire, count in load.items() if capacity[wire] / count == share}
        fixed = [flow for flow in unfixed if not saturated.isdisjoint(flow.wires)]
        for flow in fixed:
            flow.rate = share
            for wire in flow.wires:
                capacity[wire] -= share
        unfixed = [flow for flow in unfixed if saturated.isdisjoint(flow.wires)]
