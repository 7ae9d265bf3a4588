"""One mixture-of-experts layer on the discrete-event engine: dispatch all-to-all, expert GEMMs, combine
all-to-all, with no overlap, coarse chunk pipelining, or Comet-style tile-level overlap on a split GPU.

Comet (ByteDance, 2025, "Comet: Fine-grained Computation-communication Overlapping for Mixture-of-Experts")
overlaps the MoE layer's all-to-alls with its expert GEMMs inside one fused kernel, whose thread blocks are
split between communication and computation. The model here (brief: systems/comet_moe_overlap.md):

**Layer.** W ranks (GPUs), E experts (``E >= W``: expert e on rank e mod W, the round-robin placement of
:mod:`~commlab.systems.placement`; ``E < W``: expert e replicated on the W/E ranks e + E·r, and rank g sends
to replica r = g mod (W/E)), top-k routing of T tokens per rank, model width h, expert FFN width m
(SwiGLU: an up-projection h -> 2m and a down-projection m -> h, 6·h·m FLOP per routed token). A token
copy crosses as h values of ``bits_per_value`` bits; the combine sends the results back (the transpose).

**GPU** (:class:`GPU`). N_sm streaming multiprocessors run the thread blocks. A GEMM is cut into tiles of
t_M tokens × t_N output columns; one tile of depth K takes τ = 2·t_M·t_N·K / (F·e_tile / N_sm) on one SM.
Communication driven by n thread blocks reaches B·min(1, n / n_sat) (n_sat blocks saturate the link).

* A **GEMM kernel** (no overlap, coarse chunks; grouped over a rank's local experts) of ``tiles`` tiles
  runs in waves on the N_sm SMs: ⌈tiles / N_sm⌉·τ at the full GPU (wave quantisation; each expert's
  tokens padded to whole tiles), so the efficiency e(n) = e_tile·(useful tiles)/(N_sm·waves) drops for
  small chunks.
* In **coarse** pipelining the all-to-all kernel holds n_sat SMs (full bandwidth B) while it runs, and
  a GEMM running beside it gets (N_sm − n_sat)/N_sm of the GPU; alone it gets all of it.
* The **fused** kernel (Comet) takes tiles as their tokens arrive, so it has no waves: its GEMM blocks
  compute at F·e_tile·(N_sm − n_comm)/N_sm and its n_comm communication blocks move B·min(1, n_comm/n_sat).

**Schedules** (simpy processes on :class:`~commlab.systems.events.Network`, every all-to-all
:func:`~commlab.systems.collectives.all_to_all`; every process's value is the time its layer ended):

* :func:`no_overlap`: dispatch, GEMMs, combine, one after the other. On an idle network
  T = a2a(dispatch) + max_g GEMM_g + a2a(combine), a2a =
  :meth:`Link.alltoall_seconds <commlab.comm.link.Link.alltoall_seconds>`.
* :func:`coarse_overlap` with c chunks: each rank's tokens are cut into c chunks; the communication
  stream runs dispatch 1..c, then combine i as soon as every rank's GEMM of chunk i is done; a rank's GEMM
  of chunk i starts when chunk i has fully arrived (and its GEMM of chunk i − 1 is done). c = 1 is
  :func:`no_overlap`.
* :func:`fine_overlap` with n_comm blocks and S rounds: tokens routed to a rank's own experts are
  computed at once; the remote tokens arrive in S all-to-all rounds (the arrival order of the A2A
  schedule; :data:`GRADED_ROUNDS` by default), each round's tiles start as soon as the round has arrived,
  and each round's combine starts as soon as its tiles are done on every rank, sharing the links with the
  dispatch rounds still running. The layer is one kernel, so n_comm is fixed for the whole layer;
  :func:`best_comm_sms` grid-searches it (Comet's adaptive workload assignment, per layer). n_comm = 0
  cannot communicate and n_comm = N_sm cannot compute: the layer then never ends (``math.inf``), except
  that n_comm = 0 on a layer with nothing to send (W = 1) is the GEMMs alone at the full GPU.

Any schedule takes at least :func:`lower_bound`, the busiest rank's GEMM work at the full GPU (fused, no
waves) or the busiest wire's bits at B, whichever is longer.

Units: seconds, bits, FLOP, bit/s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import simpy

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm.link import Link
from commlab.systems.collectives import all_to_all
from commlab.systems.events import Network, Record
from commlab.systems.placement import round_robin_placement

LANES = ("dispatch", "gemm", "combine")
"""The lanes of :class:`Interval`: the two all-to-alls and the expert GEMMs."""

GRADED_ROUNDS = (1, 2, 3, 4, 4, 3, 2, 1)
"""Default dispatch rounds of :func:`fine_overlap`: the tile stream discretised into 8 all-to-all rounds,
finer at both ends, where the first remote tiles (head) and the last tiles' GEMM and combine (tail) are
exposed; the tile level is the limit of many equal rounds."""


@dataclass(frozen=True)
class GPU:
    """The a-priori constants of one GPU (defaults: H800/H100 SXM, bf16).

    Args:
        sms: N_sm, streaming multiprocessors (thread-block slots) of the GPU.
        saturating_sms: n_sat, the thread blocks that saturate the link (1 <= n_sat <= N_sm).
        peak_flops: F, dense bf16 FLOP/s (989e12 for H100/H800).
        tile_efficiency: e_tile in (0, 1], the fraction of F a GEMM tile reaches.
        tile_tokens: t_M, tokens (rows) of a GEMM tile.
        tile_width: t_N, output columns of a GEMM tile.
    """

    sms: int = 132
    saturating_sms: int = 20
    peak_flops: float = 989e12
    tile_efficiency: float = 0.6
    tile_tokens: int = 128
    tile_width: int = 128

    def __post_init__(self):
        check_int("sms", self.sms, low=1)
        check_int("saturating_sms", self.saturating_sms, low=1, high=self.sms)
        check_positive("peak_flops", self.peak_flops)
        check_real_number("tile_efficiency", self.tile_efficiency, low=0.0, high=1.0, low_open=True)
        check_int("tile_tokens", self.tile_tokens, low=1)
        check_int("tile_width", self.tile_width, low=1)

    def bandwidth_factor(self, comm_sms: int) -> float:
        """min(1, n / n_sat): the fraction of the link's bandwidth ``comm_sms`` = n thread blocks reach."""
        return min(1.0, self._comm_sms(comm_sms) / self.saturating_sms)

    def gemm_share(self, comm_sms: int) -> float:
        """(N_sm − n) / N_sm: the fraction of the GPU's GEMM throughput left beside n communication blocks."""
        return (self.sms - self._comm_sms(comm_sms)) / self.sms

    def _comm_sms(self, comm_sms) -> int:
        return check_int("comm_sms", comm_sms, low=0, high=self.sms)


@dataclass(frozen=True)
class MoELayer:
    """One MoE layer under expert parallelism.

    Args:
        ranks: W >= 1 GPUs.
        experts: E >= 1; W must divide E (E >= W) or E must divide W (E < W: replicated experts).
        top_k: k in [1, E], experts per token.
        hidden: h, the model width (values per token copy).
        ffn: m, the expert FFN width.
        tokens: T >= 1 tokens per rank.
        bits_per_value: bits of one activation on the wire (16: bf16).
    """

    ranks: int
    experts: int
    top_k: int
    hidden: int
    ffn: int
    tokens: int
    bits_per_value: int = 16

    def __post_init__(self):
        check_int("ranks", self.ranks, low=1)
        check_int("experts", self.experts, low=1)
        check_int("top_k", self.top_k, low=1, high=self.experts)
        check_int("hidden", self.hidden, low=1)
        check_int("ffn", self.ffn, low=1)
        check_int("tokens", self.tokens, low=1)
        check_int("bits_per_value", self.bits_per_value, low=1)
        if self.experts % self.ranks and self.ranks % self.experts:
            raise ValueError(f"ranks ({self.ranks}) must divide experts ({self.experts}) or the reverse")

    @property
    def local_experts(self) -> int:
        """Experts (or expert replicas) held by each rank: max(1, E / W)."""
        return max(1, self.experts // self.ranks)

    @property
    def token_bits(self) -> int:
        """Bits of one token copy on the wire: h · bits_per_value."""
        return self.hidden * self.bits_per_value


class Interval(NamedTuple):
    """What ran when: ``lane`` one of :data:`LANES`, ``rank`` (-1: an all-to-all of all ranks), seconds."""

    lane: str
    rank: int
    start: float
    end: float
    label: str


@dataclass
class LayerRun:
    """The outcome of one schedule: ``seconds`` (the layer's time), the :class:`Interval` s, the engine's log."""

    seconds: float
    intervals: list[Interval] = field(default_factory=list)
    log: list[Record] = field(default_factory=list)

    def lane_seconds(self, lane: str) -> float:
        """Seconds during which ``lane`` was busy on some rank (the union of its intervals)."""
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, got {lane!r}")
        spans = sorted((i.start, i.end) for i in self.intervals if i.lane == lane)
        total, reach = 0.0, -math.inf
        for start, end in spans:
            total += max(0.0, end - max(start, reach))
            reach = max(reach, end)
        return total


# -- routing ---------------------------------------------------------------------------------------------


def expert_loads(layer: MoELayer, *, rng: np.random.Generator | None = None, zipf: float = 0.0) -> np.ndarray:
    """Token copies each rank routes to each expert, int64 ``[W, E]`` (rows sum to T·k).

    Args:
        layer: the :class:`MoELayer`.
        rng: None: the balanced expected loads T·k/E (the remainder to the first experts); a
            ``numpy.random.Generator``: each rank draws Multinomial(T·k, p).
        zipf: s >= 0, with ``rng``: p_e ∝ 1/(rank_e + 1)^s, the popularity ranks a random permutation of
            the experts (s = 0: uniform routing).
    """
    zipf = check_nonnegative("zipf", zipf)
    copies = layer.tokens * layer.top_k
    if rng is None:
        if zipf:
            raise ValueError("zipf > 0 needs an rng (skewed loads are drawn)")
        row = _split(copies, [1.0] * layer.experts)
        return np.tile(row, (layer.ranks, 1))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    weights = 1.0 / (rng.permutation(layer.experts) + 1.0) ** zipf
    return rng.multinomial(copies, weights / weights.sum(), size=layer.ranks).astype(np.int64)


def route(layer: MoELayer, loads) -> np.ndarray:
    """Token copies from each rank to each local expert of each rank, int64 ``[W, W, E_local]``.

    ``[g, d, j]``: tokens of rank g routed to the j-th expert held by rank d (see the module docstring
    for the placement); the diagonal g = d stays on the rank.
    """
    loads = _check_loads(layer, loads)
    W, E = layer.ranks, layer.experts
    routed = np.zeros((W, W, layer.local_experts), dtype=np.int64)
    if E >= W:
        device = round_robin_placement(1, E, W)[0]  # expert e on rank e mod W, local slot e // W
        routed[:, device, np.arange(E) // W] = loads
    else:
        replica = np.arange(W) % (W // E)  # rank g sends to replica g mod (W / E): ranks e + E·r
        for src in range(W):
            routed[src, np.arange(E) + E * replica[src], 0] = loads[src]
    return routed


def dispatch_bits(layer: MoELayer, routed) -> np.ndarray:
    """Bits of the dispatch all-to-all, float64 ``[W, W]``: h·bits_per_value per token copy; the combine
    sends the transpose."""
    return np.asarray(routed).sum(axis=-1).astype(np.float64) * layer.token_bits


# -- GEMM times ------------------------------------------------------------------------------------------


def gemm_seconds(layer: MoELayer, gpu: GPU, tokens_per_expert, *, fused: bool = False) -> float:
    """Seconds of one rank's expert GEMMs (up-projection h -> 2m, down-projection m -> h) at the full GPU.

    Args:
        tokens_per_expert: ``[E_local]`` token copies of each local expert.
        fused: False: a grouped GEMM kernel per projection, ⌈tiles / N_sm⌉ waves of τ each;
            True: tiles drawn as their tokens arrive, tiles·τ / N_sm (no waves).

    Each expert's tokens are padded to whole tiles of t_M; τ = 2·t_M·t_N·K / (F·e_tile / N_sm).
    """
    tokens = np.asarray(tokens_per_expert)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu" or (tokens < 0).any():
        raise ValueError(f"tokens_per_expert must be non-negative integers [E_local], got {tokens_per_expert!r}")
    row_tiles = int(np.ceil(tokens / gpu.tile_tokens).sum())
    tile_rate = gpu.peak_flops * gpu.tile_efficiency / gpu.sms  # FLOP/s of one SM
    seconds = 0.0
    for depth, width in ((layer.hidden, 2 * layer.ffn), (layer.ffn, layer.hidden)):  # (K, N) of each GEMM
        tiles = row_tiles * math.ceil(width / gpu.tile_width)
        tau = 2.0 * gpu.tile_tokens * gpu.tile_width * depth / tile_rate
        seconds += tau * (tiles / gpu.sms if fused else math.ceil(tiles / gpu.sms))
    return seconds


def lower_bound(layer: MoELayer, gpu: GPU, link: Link, loads, comm_sms: int | None = None) -> float:
    """Seconds no schedule of the layer can beat: the longer of the busiest rank's GEMM work (fused, no waves)
    and ℓ + the busiest wire's dispatch and combine bits over the bandwidth.

    Args:
        comm_sms: None: the full GPU and the full bandwidth B (any schedule); n: the split of
            :func:`fine_overlap`, GEMM at (N_sm − n)/N_sm and bandwidth B·min(1, n/n_sat) (``math.inf``
            where that leaves no GEMM blocks, or no bandwidth for bits to send).
    """
    routed = route(layer, loads)
    share, factor = (1.0, 1.0) if comm_sms is None else (gpu.gemm_share(comm_sms), gpu.bandwidth_factor(comm_sms))
    compute = max(gemm_seconds(layer, gpu, routed[:, rank].sum(axis=0), fused=True) for rank in range(layer.ranks))
    bits = dispatch_bits(layer, routed)
    off = bits - np.diag(np.diag(bits))
    wire = float((off.sum(axis=0) + off.sum(axis=1)).max())  # tx: dispatch sent + combine sent (= received)
    if share == 0 or (factor == 0 and wire > 0):
        return math.inf
    comm = 0.0 if wire == 0 else link.latency + wire / (link.bandwidth * factor)
    return max(compute / share, comm)


# -- schedules -------------------------------------------------------------------------------------------


def no_overlap(layer: MoELayer, gpu: GPU, link: Link, loads) -> LayerRun:
    """Dispatch, GEMMs and combine one after the other (:func:`coarse_overlap` with one chunk)."""
    return coarse_overlap(layer, gpu, link, loads, chunks=1)


def coarse_overlap(layer: MoELayer, gpu: GPU, link: Link, loads, chunks: int) -> LayerRun:
    """Coarse pipelining of c = ``chunks`` chunks (see the module docstring); returns the :class:`LayerRun`."""
    chunks = check_int("chunks", chunks, low=1)
    routed = route(layer, loads)
    parts = _split(routed, [1.0] * chunks)  # [c, W, W, E_local]
    W = layer.ranks
    net = Network(W, link)
    gpus = _SharedGPU(net, 1.0, gpu.gemm_share(gpu.saturating_sms))
    stream = simpy.Resource(net.env, capacity=1)  # the communication stream: one all-to-all at a time
    run = LayerRun(math.nan, log=net.log)
    arrived = [net.env.event() for _ in range(chunks)]
    computed = [[net.env.event() for _ in range(W)] for _ in range(chunks)]

    def a2a(lane, i, bits, done):
        with stream.request() as turn:
            yield turn
            start = net.now
            gpus.comm_started()
            yield net.start(all_to_all(net, bits))
            gpus.comm_ended()
            run.intervals.append(Interval(lane, -1, start, net.now, f"{lane} {i + 1}"))
        if done is not None:
            done.succeed()

    def gemms(rank):
        for i in range(chunks):
            yield arrived[i]
            seconds = gemm_seconds(layer, gpu, parts[i, :, rank].sum(axis=0))
            yield from gpus.gemm(rank, seconds, _flops(layer, parts[i, :, rank]), run, f"chunk {i + 1}")
            computed[i][rank].succeed()

    def combine(i):
        yield net.env.all_of(computed[i])
        yield from a2a("combine", i, dispatch_bits(layer, parts[i]).T, None)

    for i in range(chunks):
        net.start(a2a("dispatch", i, dispatch_bits(layer, parts[i]), arrived[i]))
    for rank in range(W):
        net.start(gemms(rank))
    for i in range(chunks):
        net.start(combine(i))
    net.run()
    run.seconds = float(max(i.end for i in run.intervals))
    return run


def fine_overlap(layer: MoELayer, gpu: GPU, link: Link, loads, comm_sms: int, rounds=GRADED_ROUNDS) -> LayerRun:
    """Comet-style tile-level overlap with ``comm_sms`` = n_comm communication blocks (see the module
    docstring); ``seconds`` is ``math.inf`` when the split leaves the layer no bandwidth (n_comm = 0) while
    it has tokens to send, or no GEMM blocks (n_comm = N_sm).

    Args:
        rounds: the dispatch rounds: S for S equal rounds, or S positive weights (round i carries
            weights[i] / sum of every pair's remote tokens); default :data:`GRADED_ROUNDS`.
    """
    rounds = _check_rounds(rounds)
    bandwidth, share = gpu.bandwidth_factor(comm_sms), gpu.gemm_share(comm_sms)
    routed = route(layer, loads)
    W = layer.ranks
    local = np.stack([routed[rank, rank] for rank in range(W)])  # [W, E_local]
    remote = routed.copy()
    remote[np.arange(W), np.arange(W)] = 0
    if (bandwidth == 0 and remote.any()) or share == 0:
        return LayerRun(math.inf)
    if bandwidth > 0:  # (with nothing to send the link is never used)
        link = Link(link.bandwidth * bandwidth, link.latency)
    parts = _split(remote, rounds)  # [S, W, W, E_local]
    slices = len(parts)
    net = Network(W, link)
    gpus = _SharedGPU(net, share, share)  # one fused kernel: a fixed split
    run = LayerRun(math.nan, log=net.log)
    arrived = [net.env.event() for _ in range(slices)]
    computed = [[net.env.event() for _ in range(W)] for _ in range(slices)]

    def dispatch():
        for i in range(slices):
            start = net.now
            yield net.start(all_to_all(net, dispatch_bits(layer, parts[i])))
            run.intervals.append(Interval("dispatch", -1, start, net.now, f"dispatch {i + 1}"))
            arrived[i].succeed()

    def gemms(rank):
        total = routed[:, rank].sum(axis=0)
        seconds = gemm_seconds(layer, gpu, total, fused=True)
        copies = max(int(total.sum()), 1)
        pieces = [("local", local[rank], None)] + [(f"round {i + 1}", parts[i, :, rank].sum(axis=0), i)
                                                   for i in range(slices)]
        for label, tokens, i in pieces:
            if i is not None:
                yield arrived[i]
            tokens = np.asarray(tokens)
            if tokens.sum():  # the rank's fused GEMM time, shared out by token copies
                yield from gpus.gemm(rank, seconds * tokens.sum() / copies, _flops(layer, tokens[None]), run, label)
            if i is not None:
                computed[i][rank].succeed()

    def combine(i):
        yield net.env.all_of(computed[i])
        start = net.now
        yield net.start(all_to_all(net, dispatch_bits(layer, parts[i]).T))
        run.intervals.append(Interval("combine", -1, start, net.now, f"combine {i + 1}"))

    net.start(dispatch())
    for rank in range(W):
        net.start(gemms(rank))
    for i in range(slices):
        net.start(combine(i))
    net.run()
    run.seconds = float(max((i.end for i in run.intervals), default=0.0))
    return run


def best_comm_sms(layer: MoELayer, gpu: GPU, link: Link, loads, grid: Sequence[int],
                  rounds=GRADED_ROUNDS) -> tuple[int, np.ndarray]:
    """Grid search of n_comm (Comet's adaptive assignment, per layer), branch and bound: the n_comm are
    simulated in the order of their :func:`lower_bound`, and one whose bound already exceeds the best time
    found is not simulated (it cannot win), so the result is the exact grid minimum.

    Returns:
        ``(best n_comm, seconds)``: ``seconds[i]`` the layer time at ``grid[i]``, NaN where pruned; ties go
        to the first in the grid.
    """
    grid = [check_int("grid", n, low=0, high=gpu.sms) for n in grid]
    if not grid:
        raise ValueError("grid must hold at least one n_comm")
    bounds = [lower_bound(layer, gpu, link, loads, comm_sms=n) for n in grid]
    seconds = np.full(len(grid), np.nan)
    best = math.inf
    for i in sorted(range(len(grid)), key=lambda i: (bounds[i], i)):
        if bounds[i] > best:
            break
        seconds[i] = fine_overlap(layer, gpu, link, loads, grid[i], rounds).seconds
        best = min(best, seconds[i])
    return grid[int(np.nanargmin(seconds))], seconds


# -- helpers ---------------------------------------------------------------------------------------------


class _SharedGPU:
    """The GEMM blocks of every rank's GPU: a GEMM of ``seconds`` at the full GPU runs at ``idle_share`` of it,
    or, while an all-to-all kernel runs (coarse pipelining), at ``busy_share``; its rate follows the
    all-to-alls starting and ending (a fluid: the rate is re-read whenever they change)."""

    def __init__(self, net: Network, idle_share: float, busy_share: float):
        self.net, self.idle_share, self.busy_share = net, idle_share, busy_share
        self.in_flight = 0
        self.changed = net.env.event()

    @property
    def share(self) -> float:
        return self.busy_share if self.in_flight else self.idle_share

    def comm_started(self):
        self.in_flight += 1
        self._signal()

    def comm_ended(self):
        self.in_flight -= 1
        self._signal()

    def _signal(self):
        changed, self.changed = self.changed, self.net.env.event()
        changed.succeed()

    def gemm(self, rank: int, seconds: float, flops: float, run: LayerRun, label: str):
        net = self.net
        with net.units[rank].request() as granted:  # the rank's compute stream: one GEMM at a time
            yield granted
            start = net.now
            net.log.append(Record(start, rank, "compute_start", flops))
            left = seconds  # seconds of work at the full GPU
            while left > 0:
                rate, since = self.share, net.now
                if rate == 0:  # every SM is held by communication: wait until that changes
                    yield self.changed
                    continue
                timer = net.env.timeout(left / rate)
                yield timer | self.changed
                if timer.processed:
                    break
                left -= (net.now - since) * rate
            net.log.append(Record(net.now, rank, "compute_end", flops))
            run.intervals.append(Interval("gemm", rank, start, net.now, label))


def _flops(layer: MoELayer, routed) -> float:
    """Useful FLOP of the routed token copies (6·h·m each), without tile padding."""
    return 6.0 * layer.hidden * layer.ffn * float(np.asarray(routed).sum())


def _split(counts, weights) -> np.ndarray:
    """Integer counts cut into ``len(weights)`` pieces along a new leading axis, piece i about
    weights[i] / sum(weights) of each count (floors of the cumulative shares, so the pieces sum to
    ``counts``; equal weights give pieces that differ by at most one)."""
    counts = np.asarray(counts, dtype=np.int64)
    edges = np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])
    edges = (edges / edges[-1]).reshape((-1,) + (1,) * counts.ndim)
    return np.diff(np.floor(edges * counts + 1e-9).astype(np.int64), axis=0)


def _check_rounds(rounds) -> tuple[float, ...]:
    if isinstance(rounds, int | np.integer) and not isinstance(rounds, bool):
        return (1.0,) * check_int("rounds", rounds, low=1)
    if isinstance(rounds, str | bytes) or not isinstance(rounds, Sequence) or not rounds:
        raise TypeError(f"rounds must be a positive int or a non-empty sequence of positive weights, got {rounds!r}")
    return tuple(check_positive("rounds", w) for w in rounds)


def _check_loads(layer: MoELayer, loads) -> np.ndarray:
    loads = np.asarray(loads)
    if loads.shape != (layer.ranks, layer.experts) or loads.dtype.kind not in "iu" or (loads < 0).any():
        raise ValueError(f"loads must be non-negative integers [W, E] = [{layer.ranks}, {layer.experts}], "
                         f"got dtype {loads.dtype}, shape {loads.shape}")
    return loads.astype(np.int64)
