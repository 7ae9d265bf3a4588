"""GEMM + reduce-scatter of a row-parallel layer: sequential, chunked overlap and track-and-trigger (T3).

Pati et al., *T3: Transparent Tracking & Triggering for Fine-grained Overlap of Compute & Collectives*,
ASPLOS 2024; the cost model is the one of ``briefs/systems/t3_track_trigger_overlap.md``.

**The layer.** In tensor parallelism of degree p, a row-parallel linear layer gives every rank r a slice
X_r (M × K/p) of the input and W_r (K/p × N) of the weight; rank r computes the partial output
O_r = X_r·W_r (M × N, S = M·N·b bytes at b bytes per value), and a ring **reduce-scatter** sums the p
partials, leaving each rank one reduced 1/p of the output (:class:`RowParallelLayer`).

**Closed forms** (the brief's, a-priori constants in :class:`Hardware`)::

    GEMM             T_g  = 2·M·N·(K/p) / (F·e_g)
    reduce-scatter   T_rs = (p − 1)·(α + (S/p)/B)                                  ring
    sequential       T_seq = T_g + T_rs
    software overlap T_sw = max(T_g·(1 + κ_c), T_rs·(1 + κ_m)) + min(T_g, T_rs)/c   c chunks
    T3               T_t3 = max(T_g, T_rs·(1 + κ_m')) + min(T_g, T_rs)/c_tile

κ_c is the slow-down of the GEMM while communication shares its compute units and memory, κ_m that of the
communication while the GEMM shares its memory bandwidth; T3 sends with DMA engines (no compute units)
and reduces in memory, so only a smaller κ_m' remains.

**DRAM traffic.** The GEMM reads its operands and writes its output once, b·(M·K/p + K/p·N + M·N) bytes
(the cache-ideal minimum). Each of the p − 1 reduce-scatter steps reads the local chunk and the received
chunk and writes their sum, 3·S/p bytes; with T3's near-memory reduction the received chunk is added in
memory as it is stored, S/p bytes (2·S/p less), :func:`dram_bytes`.

**On the event engine.** :class:`ContendedNetwork` is a :class:`~commlab.systems.events.Network` whose
ranks' compute and links share one memory system: while rank r computes, its wires (tx[r], rx[r]) carry
B/(1 + κ_m); while bits flow on them, its GEMM runs at F/(1 + κ_c). Rates change only while both
streams are active, which the closed forms charge to the whole of the longer stream. The schedules are
processes on it: :func:`sequential`, :func:`chunked_overlap` (software: GEMM of chunk i + 1 while chunk i
is reduce-scattered, one collective per chunk on one communication stream) and :func:`track_and_trigger`
(T3: the GEMM writes its output in the ring's order and each written tile, or each completed chunk, triggers
its step of the ring as a DMA, no compute units used).
:func:`simulate` runs one of them and returns the time and the network (its log gives a Gantt chart,
:func:`busy_intervals`). Not modelled: the reduction's own compute (in the brief, inside κ_c), hierarchy,
and arbitration between the two memory streams beyond the κ factors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import simpy

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm.link import Link
from commlab.systems import collectives
from commlab.systems.events import Network, Record

SCHEDULES = ("sequential", "software", "t3")


@dataclass(frozen=True)
class RowParallelLayer:
    """A row-parallel linear layer over ``ranks`` = p: ``tokens`` = M rows, ``in_features`` = K (split
    K/p per rank, so K must be a multiple of p), ``out_features`` = N, ``bytes_per_value`` = b."""

    tokens: int
    in_features: int
    out_features: int
    ranks: int
    bytes_per_value: int = 2

    def __post_init__(self):
        for name in ("tokens", "in_features", "out_features", "ranks", "bytes_per_value"):
            check_int(name, getattr(self, name), low=1)
        if self.in_features % self.ranks:
            raise ValueError(f"in_features must be a multiple of ranks (K/p per rank), got "
                             f"{self.in_features} and {self.ranks}")

    @property
    def flops(self) -> float:
        """FLOP of one rank's partial GEMM: 2·M·N·(K/p)."""
        return 2.0 * self.tokens * self.out_features * (self.in_features // self.ranks)

    @property
    def output_bytes(self) -> float:
        """S = M·N·b, the bytes of one rank's partial output (what the reduce-scatter reduces)."""
        return float(self.tokens * self.out_features * self.bytes_per_value)

    @property
    def output_bits(self) -> float:
        """8·S."""
        return 8.0 * self.output_bytes


@dataclass(frozen=True)
class Hardware:
    """A-priori constants (the brief's defaults): ``peak_flops`` F (FLOP/s), ``gemm_efficiency`` e_g in
    (0, 1], ``link`` the ring's :class:`~commlab.comm.link.Link` (bandwidth B in bit/s per direction,
    latency α in s)."""

    peak_flops: float = 1.3e15
    gemm_efficiency: float = 0.7
    link: Link = field(default_factory=lambda: Link(bandwidth=8 * 150e9, latency=5e-6))

    def __post_init__(self):
        check_positive("peak_flops", self.peak_flops)
        check_real_number("gemm_efficiency", self.gemm_efficiency, low=0.0, high=1.0, low_open=True)
        if not isinstance(self.link, Link) or self.link.bandwidth == math.inf:
            raise ValueError(f"link must be a Link of finite bandwidth, got {self.link!r}")

    @property
    def flops_per_second(self) -> float:
        """F·e_g, the GEMM's sustained FLOP/s."""
        return self.peak_flops * self.gemm_efficiency


# -- closed forms -------------------------------------------------------------------------------------


def gemm_seconds(layer: RowParallelLayer, hardware: Hardware) -> float:
    """T_g = 2·M·N·(K/p) / (F·e_g)."""
    return layer.flops / hardware.flops_per_second


def reduce_scatter_seconds(layer: RowParallelLayer, hardware: Hardware) -> float:
    """T_rs = (p − 1)·(α + (S/p)/B), the ring reduce-scatter of the partial outputs."""
    p, link = layer.ranks, hardware.link
    return (p - 1) * (link.latency + layer.output_bits / p / link.bandwidth)


def sequential_seconds(layer: RowParallelLayer, hardware: Hardware) -> float:
    """T_seq = T_g + T_rs."""
    return gemm_seconds(layer, hardware) + reduce_scatter_seconds(layer, hardware)


def software_overlap_seconds(layer: RowParallelLayer, hardware: Hardware, *, chunks: int = 4,
                             kappa_compute: float = 0.15, kappa_memory: float = 0.30) -> float:
    """T_sw = max(T_g·(1 + κ_c), T_rs·(1 + κ_m)) + min(T_g, T_rs)/c for ``chunks`` = c >= 1."""
    c = check_int("chunks", chunks, low=1)
    kc, km = check_nonnegative("kappa_compute", kappa_compute), check_nonnegative("kappa_memory", kappa_memory)
    tg, trs = gemm_seconds(layer, hardware), reduce_scatter_seconds(layer, hardware)
    return max(tg * (1 + kc), trs * (1 + km)) + min(tg, trs) / c


def t3_seconds(layer: RowParallelLayer, hardware: Hardware, *, tiles: int = 64, kappa_memory: float = 0.05) -> float:
    """T_t3 = max(T_g, T_rs·(1 + κ_m')) + min(T_g, T_rs)/c_tile for ``tiles`` = c_tile >= 1 and
    ``kappa_memory`` = κ_m'."""
    c = check_int("tiles", tiles, low=1)
    km = check_nonnegative("kappa_memory", kappa_memory)
    tg, trs = gemm_seconds(layer, hardware), reduce_scatter_seconds(layer, hardware)
    return max(tg, trs * (1 + km)) + min(tg, trs) / c


def dram_bytes(layer: RowParallelLayer, schedule: str) -> float:
    """DRAM bytes one rank moves for the layer under ``schedule`` (one of :data:`SCHEDULES`):
    b·(M·K/p + K/p·N + M·N) for the GEMM plus (p − 1)·3·S/p for the reduce-scatter ("sequential",
    "software": read local + read received + write sum per step), or (p − 1)·S/p for "t3" (the
    reduction is done in memory: 2·S/p less per step)."""
    check_choice("schedule", schedule, SCHEDULES)
    m, n, k_local = layer.tokens, layer.out_features, layer.in_features // layer.ranks
    gemm = layer.bytes_per_value * (m * k_local + k_local * n + m * n)
    per_step = (1 if schedule == "t3" else 3) * layer.output_bytes / layer.ranks
    return gemm + (layer.ranks - 1) * per_step


# -- the event model ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    rank: int
    remaining: float  # FLOP
    done: simpy.Event
    rate: float = 0.0  # FLOP/s


class ContendedNetwork(Network):
    """A :class:`~commlab.systems.events.Network` whose ranks' compute and links share one memory system.

    While rank r runs a compute task, its wires tx[r] and rx[r] carry B/(1 + κ_m) instead of B; while bits
    flow on tx[r] or rx[r] (not during a message's latency), its compute task runs at F/(1 + κ_c) instead
    of F. Compute is a fluid like the bits: a task's rate changes the moment a flow or task on its rank
    starts or ends. With κ_c = κ_m = 0 it is the plain network.

    Args: as :class:`~commlab.systems.events.Network` (``flops_per_second`` finite), plus
        ``kappa_compute`` κ_c >= 0 and ``kappa_memory`` κ_m >= 0.
    """

    def __init__(self, n_ranks: int, links: Link | Sequence[Link], *, flops_per_second: float | Sequence[float],
                 kappa_compute: float = 0.0, kappa_memory: float = 0.0, jitter: float = 0.0,
                 seed: int | None = None):
        super().__init__(n_ranks, links, flops_per_second=flops_per_second, jitter=jitter, seed=seed)
        if math.inf in self.flops_per_second:
            raise ValueError("flops_per_second must be finite on a ContendedNetwork")
        self.kappa_compute = check_nonnegative("kappa_compute", kappa_compute)
        self.kappa_memory = check_nonnegative("kappa_memory", kappa_memory)
        self._nominal = {wire: wire.bandwidth for wire in self.tx + self.rx}
        self._owner = {wire: rank for rank in range(self.n_ranks) for wire in (self.tx[rank], self.rx[rank])}
        self._tasks: list[_Task] = []
        self._task_last = 0.0
        self._task_version = 0

    def _compute(self, rank: int, flops: float) -> Generator:
        with self.units[rank].request() as granted:
            yield granted
            self.log.append(Record(self.now, rank, "compute_start", flops))
            task = _Task(rank, flops * self._stretch(), self.env.event())
            self._advance()
            self._tasks.append(task)
            self._reschedule()
            yield task.done
            self.log.append(Record(self.now, rank, "compute_end", flops))

    def _reschedule(self) -> None:
        """Bring the tasks up to now, set every wire's and task's contended rate, then let the network
        recompute the flows' rates and both wake up when their next flow or task ends."""
        self._advance_tasks()
        computing = {task.rank for task in self._tasks}
        moving = {self._owner[wire] for flow in self._flows for wire in flow.wires}
        for wire, bandwidth in self._nominal.items():  # B/(1 + κ_m) while the wire's rank computes
            wire.bandwidth = bandwidth / (1 + self.kappa_memory) if self._owner[wire] in computing else bandwidth
        for task in self._tasks:  # F/(1 + κ_c) while bits flow on the task's rank
            rate = self.flops_per_second[task.rank]
            task.rate = rate / (1 + self.kappa_compute) if task.rank in moving else rate
        super()._reschedule()
        self._task_version += 1
        if self._tasks:
            left = [task.remaining / task.rate for task in self._tasks]
            wait = min(left)
            ending = [task for task, seconds in zip(self._tasks, left, strict=True) if seconds == wait]
            version = self._task_version
            self.env.timeout(max(wait, 0.0)).callbacks.append(lambda _: self._task_wake(version, ending))

    def _advance_tasks(self) -> None:
        elapsed, self._task_last = self.now - self._task_last, self.now
        for task in self._tasks:
            task.remaining -= task.rate * elapsed

    def _task_wake(self, version: int, ending: list[_Task]) -> None:
        if version != self._task_version:  # a flow or task started or ended since this wake-up was set
            return
        self._advance()
        self._advance_tasks()
        self._tasks = [task for task in self._tasks if task not in ending]
        for task in ending:
            task.done.succeed()
        self._reschedule()


def sequential(net: Network, layer: RowParallelLayer) -> Generator:
    """Process: every rank computes its whole GEMM, then the ring reduce-scatter of its S bytes runs
    (:func:`~commlab.systems.collectives.reduce_scatter`). Its value is the end time (s); on an idle
    network T_seq = T_g + T_rs."""
    _check_net(net, layer)

    def program():
        yield net.env.all_of([net.start(net.compute(rank, layer.flops)) for rank in range(layer.ranks)])
        yield net.start(collectives.reduce_scatter(net, layer.output_bits))
        return float(net.now)

    return program()


def chunked_overlap(net: Network, layer: RowParallelLayer, chunks: int) -> Generator:
    """Process: software overlap in ``chunks`` = c pieces of M/c rows. Each rank computes the GEMM of
    chunk 0, 1, ... back to back; its communication stream reduce-scatters chunk i (p − 1 ring steps of
    S/(c·p) bytes, each step's latency α paid again) once chunk i is computed and chunk i − 1 is done.
    With c = 1 it is :func:`sequential`. Its value is the end time (s)."""
    _check_net(net, layer)
    c = check_int("chunks", chunks, low=1)
    p, token = layer.ranks, object()
    step_bits = layer.output_bits / (c * p)

    def rank_program(rank):
        computed = [net.env.event() for _ in range(c)]

        def gemm():
            for chunk in range(c):
                yield from net.compute(rank, layer.flops / c)
                computed[chunk].succeed()

        def communicate():
            for chunk in range(c):
                yield computed[chunk]
                for step in range(p - 1):
                    yield from net.sendrecv(rank, (rank + 1) % p, step_bits, (rank - 1) % p, (token, chunk, step))

        yield net.env.all_of([net.start(gemm()), net.start(communicate())])

    return _all_ranks(net, rank_program)


def track_and_trigger(net: Network, layer: RowParallelLayer, tiles: int, trigger: str = "tile") -> Generator:
    """Process: T3's fused GEMM and reduce-scatter at the granularity of ``tiles`` = c_tile output tiles
    per rank (a multiple of p: c_tile/p tiles in each of the p chunks of the ring).

    In ring step k = 0, …, p − 2 rank r sends chunk (r − k − 1) mod p to rank r + 1, which adds its own
    partial of that chunk and forwards it in step k + 1; after the last step rank r holds chunk r reduced.
    The GEMM of rank r therefore writes its chunks in the order the ring consumes them, (r − 1), (r − 2),
    …, r, tile by tile, and each tile of step k is sent (its own message, a DMA) as soon as the local tile
    is written and, for k >= 1, the same tile of step k − 1 has arrived from rank r − 1 (the near-memory
    reduction adds it on arrival, taking no compute). With ``trigger="chunk"`` a step's whole chunk is
    one message instead, sent once all its tiles are written and the previous step's chunk has arrived
    (each step then pays its latency α in turn, as T_rs does). Its value is the end time (s)."""
    _check_net(net, layer)
    p = layer.ranks
    c = check_int("tiles", tiles, low=1)
    if c % p:
        raise ValueError(f"tiles must be a multiple of ranks (tiles per ring chunk), got {c} and {p}")
    check_choice("trigger", trigger, ("tile", "chunk"))
    per_chunk, token = c // p, object()
    messages = per_chunk if trigger == "tile" else 1  # per ring step
    tile_flops, message_bits = layer.flops / c, layer.output_bits / (p * messages)
    tiles_of = [range(m * per_chunk // messages, (m + 1) * per_chunk // messages) for m in range(messages)]

    def rank_program(rank):
        env = net.env
        computed = [[env.event() for _ in range(per_chunk)] for _ in range(p)]
        arrived = [[net.start(net.recv(rank, (rank - 1) % p, (token, step, message))) for message in range(messages)]
                   for step in range(p - 1)]

        def gemm():
            for step in range(p):  # step p − 1: the rank's own chunk, reduced with the last arrival
                for tile in range(per_chunk):
                    yield from net.compute(rank, tile_flops)
                    computed[step][tile].succeed()

        def send(step, message):
            written = [computed[step][tile] for tile in tiles_of[message]]
            yield env.all_of(written + ([arrived[step - 1][message]] if step else []))
            yield from net.send(rank, (rank + 1) % p, message_bits, (token, step, message))

        sends = [net.start(send(step, message)) for step in range(p - 1) for message in range(messages)]
        yield env.all_of([net.start(gemm()), *sends, *(event for row in arrived for event in row)])

    return _all_ranks(net, rank_program)


_PROCESSES = {"sequential": lambda net, layer, chunks, tiles, trigger: sequential(net, layer),
              "software": lambda net, layer, chunks, tiles, trigger: chunked_overlap(net, layer, chunks),
              "t3": lambda net, layer, chunks, tiles, trigger: track_and_trigger(net, layer, tiles, trigger)}


def simulate(layer: RowParallelLayer, hardware: Hardware, schedule: str, *, chunks: int = 4, tiles: int = 64,
             trigger: str = "tile", kappa_compute: float = 0.0,
             kappa_memory: float = 0.0) -> tuple[float, ContendedNetwork]:
    """Run ``schedule`` ("sequential", "software" with ``chunks``, "t3" with ``tiles`` and ``trigger``) on a
    :class:`ContendedNetwork` of ``layer.ranks`` ranks with ``hardware``'s link and F·e_g and the given
    κ_c, κ_m; return (seconds, network) — the network's ``log`` holds the events."""
    check_choice("schedule", schedule, SCHEDULES)
    if not isinstance(hardware, Hardware):
        raise TypeError(f"hardware must be a Hardware, got {type(hardware).__name__}")
    net = ContendedNetwork(layer.ranks, hardware.link, flops_per_second=hardware.flops_per_second,
                           kappa_compute=kappa_compute, kappa_memory=kappa_memory)
    process = net.start(_PROCESSES[schedule](net, layer, chunks, tiles, trigger))
    net.run()
    return process.value, net


def busy_intervals(log: Sequence[Record], rank: int) -> dict[str, list[tuple[float, float]]]:
    """Rank ``rank``'s activity from an event log, for a Gantt chart: ``"compute"``, its compute tasks
    (start, end) in s, and ``"send"``, its outgoing messages from leaving to the last bit's arrival (the
    k-th "send" from rank to a peer paired with the k-th "recv" there, which holds when a rank's messages to
    one peer are of equal size, as in these schedules)."""
    rank = check_int("rank", rank, low=0)
    compute, starts = [], []
    leaving, arriving = defaultdict(list), defaultdict(list)
    for record in log:
        if record.rank == rank and record.kind == "compute_start":
            starts.append(record.time)
        elif record.rank == rank and record.kind == "compute_end":
            compute.append((starts.pop(0), record.time))
        elif record.kind == "send" and record.rank == rank:
            leaving[record.peer].append(record.time)
        elif record.kind == "recv" and record.peer == rank:
            arriving[record.rank].append(record.time)
    sends = sorted((start, end) for peer, times in leaving.items()
                   for start, end in zip(times, arriving[peer], strict=True))
    return {"compute": compute, "send": sends}


def _all_ranks(net: Network, rank_program) -> Generator:
    def program():
        yield net.env.all_of([net.start(rank_program(rank)) for rank in range(net.n_ranks)])
        return float(net.now)

    return program()


def _check_net(net: Network, layer: RowParallelLayer) -> None:
    if not isinstance(net, Network):
        raise TypeError(f"net must be a Network, got {type(net).__name__}")
    if not isinstance(layer, RowParallelLayer):
        raise TypeError(f"layer must be a RowParallelLayer, got {type(layer).__name__}")
    if net.n_ranks != layer.ranks:
        raise ValueError(f"the network has {net.n_ranks} ranks but the layer is split over {layer.ranks}")
