"""Schedules of mixture-of-experts layers across nodes (FSMoE, Pan et al., ASPLOS 2025), on the event engine.

**One MoE layer** on a cluster of ``nodes`` × g GPUs (:class:`Cluster`): each GPU holds T tokens of width
d; a gate picks k of E experts per token; the E experts are spread over an expert-parallel group of
E_p = min(E, N) GPUs (contiguous ranks, so a group lies inside one node when E_p <= g), E/E_p experts per
GPU. Per GPU (:class:`MoELayer`, times in :func:`stage_seconds`):

* forward: gate (2·T·d·E FLOP) → dispatch all-to-all → expert FFN (two GEMMs) → combine all-to-all;
* backward: combine all-to-all → expert FFN at 2× the forward FLOP → dispatch all-to-all → gate at 2×;
  then the all-reduce of the layer's dense (non-expert) gradient over all N GPUs.

**Costs** (the brief's model; every constant is a field of :class:`Cluster` or :class:`MoELayer`):

* a GEMM of n tokens per expert costs 2·n·d·h·2 FLOP at the rate F·e(n), e(n) = e_max·n/(n + n_half)
  (:func:`gemm_efficiency`: small chunks are inefficient);
* an all-to-all of n bits per GPU sends n/E_p to each group peer: the intra-node part I = n(g_e − 1)/E_p
  over NVLink (``intra``: B_in, α_in) and the inter-node part O = n(E_p − g_e)/E_p over the NIC (``inter``:
  B_out, α_out), g_e = min(E_p, g); the parts proceed at once: α_in + I/B_in and α_out + O/B_out;
* the dense all-reduce of G bits is the lab's ring over N GPUs on the slowest tier (the NIC when
  nodes > 1, else NVLink): 2(N − 1)·α + 2(N − 1)/N · G/B
  (:meth:`Link.collective_seconds <commlab.comm.link.Link.collective_seconds>`).

**Schedules** (:func:`build_schedule`; ops on in-order streams, an op waits for its stream predecessor and
its dependencies):

1. ``"sequential"``: one stream, every phase back to back, the all-reduce after each layer's backward;
2. ``"pipelined"`` (Tutel-like, fixed degree r): tokens in r chunks; a compute stream and one
   communication stream whose all-to-alls are atomic (both tiers, ending at the slower); the dispatch of
   chunk i + 1 is issued before the combine of chunk i, so it overlaps the expert GEMM of chunk i; the
   all-reduce still blocks after each layer's backward;
3. ``"fsmoe"``: r per layer by exhaustive search over :data:`CHUNK_CHOICES` on the model
   (:func:`search_chunks`), the intra- and inter-node parts of every all-to-all on their own streams
   (joint scheduling of the two tiers), and, with ``partition=True``, **adaptive gradient partitioning**
   (:func:`partition_gradients`): the dense gradient of layer l, ready when its backward ends, is cut
   greedily into pieces that fill the predicted idle intervals of the all-reduce's link during the
   backward of the layers after it (l − 1, ..., 0); what does not fit is all-reduced at the end.

:func:`predict` computes every op's start and end on idle resources from the closed forms (the model the
search uses); :func:`simulate` runs the same ops as processes on a :class:`TwoTierNetwork` (a
:class:`~commlab.systems.events.Network` whose intra-node messages cross NVLink wires), with the
all-to-alls of :func:`commlab.systems.collectives.all_to_all` and the engine's seeded jitter.

**Folding** (uniform routing). All GPUs run the same program, so the simulation uses the smallest
two-tier network that gives one GPU the same loads (:func:`folded_traffic`): two GPUs per node and
min(nodes, 2) nodes, every rank sending its intra-node bits to its node peer and its inter-node bits
split over the remote ranks. On an idle network this reproduces the closed forms exactly (tested against
the unfolded network). A routing imbalance enters as ``load_factor`` λ >= 1, the busiest GPU's share of
tokens over the mean, applied to every rank (a symmetric bound: the busiest GPU sets the pace).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import simpy

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm.link import Link
from commlab.systems import collectives
from commlab.systems.events import Network, Record, Wire

SCHEDULES = ("sequential", "pipelined", "fsmoe")
CHUNK_CHOICES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Cluster:
    """GPUs on nodes with two link tiers and a GEMM efficiency curve (a-priori constants of a paper).

    Args:
        nodes: number of nodes >= 1.
        gpus_per_node: g >= 1.
        intra: NVLink of every GPU (:class:`~commlab.comm.link.Link`: bandwidth B_in bit/s, latency α_in s).
        inter: NIC of every GPU (B_out bit/s, α_out s).
        flops_per_second: F, the peak GEMM rate of one GPU (FLOP/s).
        peak_efficiency: e_max in (0, 1].
        half_tokens: n_half > 0, the tokens per GEMM at which e(n) = e_max / 2.
    """

    nodes: int
    gpus_per_node: int
    intra: Link
    inter: Link
    flops_per_second: float
    peak_efficiency: float = 1.0
    half_tokens: float = 0.0

    def __post_init__(self):
        check_int("nodes", self.nodes, low=1)
        check_int("gpus_per_node", self.gpus_per_node, low=1)
        for name in ("intra", "inter"):
            if not isinstance(getattr(self, name), Link):
                raise TypeError(f"{name} must be a commlab.comm.Link, got {type(getattr(self, name)).__name__}")
        check_positive("flops_per_second", self.flops_per_second)
        check_real_number("peak_efficiency", self.peak_efficiency, low=0.0, high=1.0, low_open=True)
        check_nonnegative("half_tokens", self.half_tokens)

    @property
    def gpus(self) -> int:
        """N = nodes · g."""
        return self.nodes * self.gpus_per_node

    @property
    def reduce_link(self) -> Link:
        """The tier that paces the ring all-reduce over all GPUs: the NIC when nodes > 1, else NVLink."""
        return self.inter if self.nodes > 1 else self.intra


@dataclass(frozen=True)
class MoELayer:
    """One MoE layer, per GPU.

    Args:
        hidden: d. ffn: h (the expert's inner width). experts: E. top_k: k <= E.
        tokens: T, tokens per GPU per iteration.
        bytes_per_value: of activations and gradients (2: bf16).
        dense_params: non-expert parameters whose gradient is all-reduced (default 4·d²).
        load_factor: λ >= 1, the busiest GPU's tokens over the mean (1: uniform routing).
    """

    hidden: int
    ffn: int
    experts: int
    top_k: int
    tokens: int
    bytes_per_value: int = 2
    dense_params: float | None = None
    load_factor: float = 1.0

    def __post_init__(self):
        for name in ("hidden", "ffn", "experts", "tokens", "bytes_per_value"):
            check_int(name, getattr(self, name), low=1)
        check_int("top_k", self.top_k, low=1, high=self.experts)
        if self.dense_params is None:
            object.__setattr__(self, "dense_params", 4.0 * self.hidden**2)
        check_nonnegative("dense_params", self.dense_params)
        check_real_number("load_factor", self.load_factor, low=1.0)

    def group(self, cluster: Cluster) -> int:
        """E_p = min(E, N), the expert-parallel group size; N must be divisible by it."""
        group = min(self.experts, cluster.gpus)
        if cluster.gpus % group or self.experts % group:
            raise ValueError(f"experts ({self.experts}) and GPUs ({cluster.gpus}) must be multiples of "
                             f"the expert-parallel group size {group}")
        return group


def gemm_efficiency(tokens, peak_efficiency: float, half_tokens: float):
    """e(n) = e_max · n / (n + n_half), the fraction of peak a GEMM over n tokens reaches (n > 0)."""
    n = np.asarray(tokens, dtype=np.float64)
    if not np.isfinite(n).all() or (n <= 0).any():
        raise ValueError("tokens must be finite and positive")
    check_real_number("peak_efficiency", peak_efficiency, low=0.0, high=1.0, low_open=True)
    check_nonnegative("half_tokens", half_tokens)
    e = peak_efficiency * n / (n + half_tokens)
    return float(e) if e.ndim == 0 else e


def fit_gemm_efficiency(tokens, seconds, flops) -> tuple[float, float]:
    """Online profiling: fit the rate curve r(n) = R·n/(n + n_half) (FLOP/s) to measured GEMM times.

    Args:
        tokens: ``[M]`` tokens of each timed GEMM; seconds: ``[M]`` its time; flops: ``[M]`` its FLOP.

    Returns:
        (R, n_half): the asymptotic rate (FLOP/s; R = F·e_max) and the half-rate tokens. The fit is the
        least-squares line of 1/r = 1/R + (n_half/R)·(1/n), with every point weighted alike in relative
        terms (1/r is fitted, so the small, slow GEMMs are not drowned by the large ones).
    """
    n, t, f = (np.asarray(a, dtype=np.float64) for a in (tokens, seconds, flops))
    if not (n.shape == t.shape == f.shape) or n.ndim != 1 or n.size < 2:
        raise ValueError(f"tokens, seconds and flops must be 1-D of one length >= 2, got {n.shape}, {t.shape}, "
                         f"{f.shape}")
    if not all(np.isfinite(a).all() and (a > 0).all() for a in (n, t, f)):
        raise ValueError("tokens, seconds and flops must be finite and positive")
    inverse_rate = t / f  # 1/r(n) = 1/R + (n_half/R) / n
    design = np.stack([np.ones_like(n), 1.0 / n], axis=1) / inverse_rate[:, None]
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(n), rcond=None)
    if a <= 0:
        raise ValueError("the timings do not fit a saturating rate curve (fitted 1/R <= 0)")
    return 1.0 / a, max(b / a, 0.0)


# -- stage closed forms ----------------------------------------------------------------------------------

def a2a_bits(layer: MoELayer, cluster: Cluster, chunks: int = 1) -> tuple[float, float]:
    """(I, O): bits one GPU sends (and receives) over NVLink and over the NIC in one dispatch or combine
    all-to-all of one of ``chunks`` chunks: n = 8·b·T·k·d·λ/r, I = n(g_e − 1)/E_p, O = n(E_p − g_e)/E_p."""
    chunks = check_int("chunks", chunks, low=1)
    group = layer.group(cluster)
    local = min(group, cluster.gpus_per_node)
    bits = 8.0 * layer.bytes_per_value * layer.tokens * layer.top_k * layer.hidden * layer.load_factor / chunks
    return bits * (local - 1) / group, bits * (group - local) / group


def expert_tokens(layer: MoELayer, cluster: Cluster, chunks: int = 1) -> float:
    """n_e: tokens per expert GEMM in one chunk, T·k·λ·E_p/(E·r) (the GPU receives T·k·λ token copies)."""
    return layer.tokens * layer.top_k * layer.load_factor * layer.group(cluster) / (layer.experts * chunks)


def stage_seconds(layer: MoELayer, cluster: Cluster, chunks: int = 1) -> dict[str, float]:
    """Closed-form seconds of each stage of one chunk on an idle cluster (all-reduce: whole gradient).

    Keys: ``gate`` (forward; backward is 2×), ``expert`` (the FFN of one chunk, forward; backward 2×),
    ``a2a_intra``, ``a2a_inter`` (one all-to-all of one chunk, each tier), ``a2a`` (both at once: the
    slower), ``all_reduce``.
    """
    F = cluster.flops_per_second
    eff = lambda n: gemm_efficiency(n, cluster.peak_efficiency, cluster.half_tokens)  # noqa: E731
    intra, inter = a2a_bits(layer, cluster, chunks)
    tier = lambda bits, link: link.latency + bits / link.bandwidth if bits > 0 else 0.0  # noqa: E731 α + n/B
    n_e = expert_tokens(layer, cluster, chunks)
    return {
        "gate": _gate_flops(layer) / (F * eff(layer.tokens)),  # 2·T·d·E / (F·e(T))
        "expert": _expert_flops(layer, chunks) / (F * eff(n_e)),  # 2·n·d·h·2 / (F·e(n)), n = T·k·λ/r
        "a2a_intra": tier(intra, cluster.intra),
        "a2a_inter": tier(inter, cluster.inter),
        "a2a": max(tier(intra, cluster.intra), tier(inter, cluster.inter)),
        "all_reduce": cluster.reduce_link.collective_seconds(_gradient_bits(layer), cluster.gpus, "ring"),
    }


def sequential_seconds(layers: Sequence[MoELayer], cluster: Cluster) -> float:
    """The sequential iteration as a sum of closed forms: per layer 3·gate + 3·expert + 4·a2a + all_reduce."""
    total = 0.0
    for layer in _check_layers(layers):
        s = stage_seconds(layer, cluster)
        total += 3 * s["gate"] + 3 * s["expert"] + 4 * s["a2a"] + s["all_reduce"]
    return total


def _gate_flops(layer: MoELayer) -> float:
    return 2.0 * layer.tokens * layer.hidden * layer.experts


def _expert_flops(layer: MoELayer, chunks: int) -> float:
    return 2.0 * (layer.tokens * layer.top_k * layer.load_factor / chunks) * layer.hidden * layer.ffn * 2


def _gradient_bits(layer: MoELayer) -> float:
    return 8.0 * layer.bytes_per_value * layer.dense_params


# -- schedules as ops --------------------------------------------------------------------------------------

@dataclass(eq=False)
class Op:
    """One task of a schedule.

    ``kind``: ``"compute"`` (``flops``: FLOP at the peak rate, i.e. divided by the efficiency),
    ``"a2a"`` (``intra_bits`` / ``inter_bits`` per GPU; one of them 0 for a split part) or
    ``"all_reduce"`` (``bits`` of gradient). ``stream``: ops of one stream run in list order; ``deps``:
    ops that must end first. ``layer``, ``phase`` (``"forward"`` / ``"backward"``), ``label`` describe it.
    """

    label: str
    kind: str
    stream: str
    layer: int
    phase: str
    deps: list[Op] = field(default_factory=list)
    flops: float = 0.0
    intra_bits: float = 0.0
    inter_bits: float = 0.0
    bits: float = 0.0


@dataclass
class Schedule:
    """The ops of one iteration (forward then backward of a stack of layers), in stream order.
    ``chunks``: the pipeline degree r of every layer; ``pieces``: per layer, the bits of each all-reduce
    piece of its dense gradient (one piece when it is not partitioned)."""

    kind: str
    ops: list[Op]
    chunks: list[int]
    pieces: list[list[float]]


def build_schedule(layers: Sequence[MoELayer], cluster: Cluster, kind: str, *, chunks=None,
                   partition: bool = False) -> Schedule:
    """The ops of one training iteration of ``layers`` under schedule ``kind`` (:data:`SCHEDULES`).

    Args:
        chunks: r, one int or one per layer (``"pipelined"``: required; ``"fsmoe"``: default the
            per-layer :func:`search_chunks`; ``"sequential"``: must be None or 1).
        partition: ``"fsmoe"`` only: adaptive gradient partitioning (:func:`partition_gradients`).
    """
    layers = _check_layers(layers)
    check_choice("kind", kind, SCHEDULES)
    if partition and kind != "fsmoe":
        raise ValueError(f"partition=True needs kind='fsmoe', got {kind!r}")
    if kind == "sequential":
        if chunks not in (None, 1):
            raise ValueError(f"the sequential schedule has one chunk, got chunks={chunks!r}")
        chunks = 1
    elif kind == "pipelined" and chunks is None:
        raise ValueError("the pipelined schedule needs chunks (its fixed degree r)")
    elif kind == "fsmoe" and chunks is None:
        chunks = [search_chunks(layer, cluster) for layer in layers]
    per_layer = [chunks] * len(layers) if isinstance(chunks, int | np.integer) else list(chunks)
    if len(per_layer) != len(layers):
        raise ValueError(f"chunks must be one int or {len(layers)} ints (one per layer), got {chunks!r}")
    per_layer = [check_int("chunks", r, low=1) for r in per_layer]
    ops = _layer_ops(layers, cluster, kind, per_layer, blocking_reduce=not partition)
    pieces = [[_gradient_bits(layer)] for layer in layers]
    schedule = Schedule(kind, ops, per_layer, pieces)
    return partition_gradients(schedule, layers, cluster) if partition else schedule


def _layer_ops(layers, cluster, kind, chunks, *, blocking_reduce: bool) -> list[Op]:
    ops: list[Op] = []
    streams = {"sequential": ("main", "main", "main", "main"), "pipelined": ("compute", "comm", "comm", "comm"),
               "fsmoe": ("compute", "intra", "inter", "inter" if cluster.nodes > 1 else "intra")}[kind]
    compute_stream, intra_stream, inter_stream, reduce_stream = streams

    def add(op):
        ops.append(op)
        return op

    def compute(label, layer_index, phase, flops, tokens, deps):
        eff = gemm_efficiency(tokens, cluster.peak_efficiency, cluster.half_tokens)
        return add(Op(label, "compute", compute_stream, layer_index, phase, list(deps), flops=flops / eff))

    def a2a(label, layer_index, phase, layer, r, deps):
        intra, inter = a2a_bits(layer, cluster, r)
        if kind != "fsmoe":  # one atomic all-to-all over both tiers
            return [add(Op(label, "a2a", intra_stream, layer_index, phase, list(deps), intra_bits=intra,
                           inter_bits=inter))]
        parts = []  # FSMoE: the two tiers on their own streams
        if intra > 0:
            parts.append(add(Op(label + ".intra", "a2a", intra_stream, layer_index, phase, list(deps),
                                intra_bits=intra)))
        if inter > 0:
            parts.append(add(Op(label + ".inter", "a2a", inter_stream, layer_index, phase, list(deps),
                                inter_bits=inter)))
        return parts

    def chunked(layer_index, phase, layer, r, first, second, flop_scale, deps):
        """first all-to-all → expert GEMM → second all-to-all per chunk, the first of chunk i + 1 issued
        before the second of chunk i. Returns the second all-to-alls' parts."""
        flops = flop_scale * _expert_flops(layer, r)
        tokens = expert_tokens(layer, cluster, r)
        firsts = [a2a(f"L{layer_index}.{phase}.{first}.{0}", layer_index, phase, layer, r, deps)]
        outputs = []
        for i in range(r):
            if i + 1 < r:
                firsts.append(a2a(f"L{layer_index}.{phase}.{first}.{i + 1}", layer_index, phase, layer, r, deps))
            gemm = compute(f"L{layer_index}.{phase}.expert.{i}", layer_index, phase, flops, tokens, firsts[i])
            outputs += a2a(f"L{layer_index}.{phase}.{second}.{i}", layer_index, phase, layer, r, [gemm])
        return outputs

    previous: list[Op] = []
    for index, (layer, r) in enumerate(zip(layers, chunks, strict=True)):
        gate = compute(f"L{index}.forward.gate", index, "forward", _gate_flops(layer), layer.tokens, previous)
        previous = chunked(index, "forward", layer, r, "dispatch", "combine", 1.0, [gate])
    for index in reversed(range(len(layers))):
        layer, r = layers[index], chunks[index]
        outputs = chunked(index, "backward", layer, r, "combine", "dispatch", 2.0, previous)
        gate = compute(f"L{index}.backward.gate", index, "backward", 2.0 * _gate_flops(layer), layer.tokens, outputs)
        previous = [gate]
        if blocking_reduce:  # the next layer's backward waits for this all-reduce
            previous = [add(Op(f"L{index}.all_reduce", "all_reduce", reduce_stream, index, "backward", [gate],
                               bits=_gradient_bits(layer)))]
    return ops


def search_chunks(layer: MoELayer, cluster: Cluster, choices: Sequence[int] = CHUNK_CHOICES) -> int:
    """FSMoE's per-layer choice of r: the degree in ``choices`` whose predicted forward + backward time
    of the layer (split tiers, no all-reduce) is least; ties go to the smaller r."""
    choices = [check_int("choices", r, low=1) for r in choices]
    if not choices:
        raise ValueError("choices must not be empty")
    times = [predict(Schedule("fsmoe", _layer_ops([layer], cluster, "fsmoe", [r], blocking_reduce=False),
                              [r], [[]]), cluster).makespan for r in choices]
    return choices[int(np.argmin(times))]


def partition_gradients(schedule: Schedule, layers: Sequence[MoELayer], cluster: Cluster) -> Schedule:
    """Adaptive gradient partitioning (FSMoE §3): insert all-reduce pieces into the idle link time.

    On the predicted timeline of ``schedule`` (which has no all-reduce), the idle intervals of the
    all-reduce's link (the inter-node stream, or the intra-node one on a single node) are visited in time
    order; each is filled greedily with pieces of the dense gradients that are ready by then (layer l's
    gradient when its backward gate ends), oldest first. A piece of b bits takes
    t(b) = 2(N − 1)·α + 2(N − 1)/N · b/B, so an interval of length s at or after the ready time holds
    b = (s − 2(N − 1)·α) · N·B / (2(N − 1)). Each piece is placed in its stream right before the op that
    ends the interval; the bits left over are all-reduced after the last op.

    Returns a new :class:`Schedule` whose ``pieces[l]`` sum to layer l's gradient bits.
    """
    stream = "inter" if cluster.nodes > 1 else "intra"
    link, n = cluster.reduce_link, cluster.gpus
    timing = predict(schedule, cluster)
    on_link = sorted((op for op in schedule.ops if op.stream == stream), key=lambda op: timing.start[op])
    bounds = [0.0] + [t for op in on_link for t in (timing.start[op], timing.end[op])] + [timing.makespan]
    gaps = [(bounds[2 * i], bounds[2 * i + 1], on_link[i] if i < len(on_link) else None)
            for i in range(len(bounds) // 2)]
    gates = {op.layer: op for op in schedule.ops if op.label.endswith("backward.gate")}
    remaining = {index: _gradient_bits(layer) for index, layer in enumerate(layers)}
    order = sorted(remaining, key=lambda index: timing.end[gates[index]])
    pieces: dict[int, list[float]] = {index: [] for index in remaining}
    ops = list(schedule.ops)
    a, b = 2.0 * (n - 1), 2.0 * (n - 1) / n  # t(bits) = a·α + b·bits/B

    for start, end, before in gaps:
        cursor = start
        for index in order:
            if remaining[index] <= 0:
                continue
            begin = max(cursor, timing.end[gates[index]])
            fits = (end - begin - a * link.latency) * link.bandwidth / b if n > 1 else math.inf
            if fits <= 0:
                continue
            bits = min(fits, remaining[index])
            piece = Op(f"L{index}.all_reduce.{len(pieces[index])}", "all_reduce", stream, index, "backward",
                       [gates[index]], bits=bits)
            ops.insert(ops.index(before) if before is not None else len(ops), piece)
            pieces[index].append(bits)
            remaining[index] -= bits
            cursor = begin + link.collective_seconds(bits, n, "ring")
    for index in order:  # the rest, at the end
        if remaining[index] > 0:
            ops.append(Op(f"L{index}.all_reduce.{len(pieces[index])}", "all_reduce", stream, index, "backward",
                          [gates[index]], bits=remaining[index]))
            pieces[index].append(remaining[index])
    return Schedule(schedule.kind, ops, list(schedule.chunks), [pieces[index] for index in range(len(layers))])


# -- prediction on idle resources ------------------------------------------------------------------------

@dataclass
class Timeline:
    """Start and end (s) of every op, and the makespan (s) of the iteration."""

    start: dict
    end: dict
    makespan: float


def op_seconds(op: Op, cluster: Cluster) -> float:
    """Closed-form seconds of one op on idle resources."""
    if op.kind == "compute":
        return op.flops / cluster.flops_per_second
    if op.kind == "a2a":
        tier = lambda bits, link: link.latency + bits / link.bandwidth if bits > 0 else 0.0  # noqa: E731
        return max(tier(op.intra_bits, cluster.intra), tier(op.inter_bits, cluster.inter))
    return cluster.reduce_link.collective_seconds(op.bits, cluster.gpus, "ring")


def predict(schedule: Schedule, cluster: Cluster) -> Timeline:
    """List scheduling on idle resources: an op starts when its stream predecessor and its dependencies
    have ended, and lasts :func:`op_seconds`. Returns the :class:`Timeline`."""
    start, end = {}, {}
    for op, before in _with_predecessors(schedule.ops):
        begin = max([0.0] + ([end[before]] if before is not None else []) + [end[d] for d in op.deps])
        start[op], end[op] = begin, begin + op_seconds(op, cluster)
    return Timeline(start, end, max(end.values(), default=0.0))


def _with_predecessors(ops: list[Op]):
    """(op, stream predecessor) in an order where every dependency and predecessor comes first."""
    last: dict[str, Op] = {}
    pairs = []
    for op in ops:
        pairs.append((op, last.get(op.stream)))
        last[op.stream] = op
    done, ordered, pending = set(), [], pairs
    while pending:
        waiting = []
        for op, before in pending:
            if (before is None or before in done) and all(d in done for d in op.deps):
                done.add(op)
                ordered.append((op, before))
            else:
                waiting.append((op, before))
        if len(waiting) == len(pending):
            raise ValueError("the schedule's dependencies form a cycle")
        pending = waiting
    return ordered


def busy_bound(schedule: Schedule, cluster: Cluster) -> float:
    """max over the compute unit, NVLink and the NIC of its total busy time (s): no schedule is shorter."""
    busy = {"compute": 0.0, "intra": 0.0, "inter": 0.0}
    for op in schedule.ops:
        if op.kind == "compute":
            busy["compute"] += op.flops / cluster.flops_per_second
        elif op.kind == "a2a":
            for tier, bits, link in (("intra", op.intra_bits, cluster.intra), ("inter", op.inter_bits, cluster.inter)):
                busy[tier] += link.latency + bits / link.bandwidth if bits > 0 else 0.0
        else:
            busy["inter" if cluster.nodes > 1 else "intra"] += op_seconds(op, cluster)
    return max(busy.values())


# -- simulation on the event engine ----------------------------------------------------------------------

class TwoTierNetwork(Network):
    """A :class:`~commlab.systems.events.Network` of ``nodes`` × ``gpus_per_node`` ranks (rank = node·g + local):
    a message between two GPUs of one node crosses their NVLink wires (``intra``), any other their NIC
    wires (``inter``, the engine's own ``tx``/``rx``). Wires: ``tx_in[r]``, ``rx_in[r]`` besides ``tx``, ``rx``."""

    def __init__(self, nodes: int, gpus_per_node: int, intra: Link, inter: Link, *,
                 flops_per_second: float = math.inf, jitter: float = 0.0, seed: int | None = None):
        self.nodes = check_int("nodes", nodes, low=1)
        self.gpus_per_node = check_int("gpus_per_node", gpus_per_node, low=1)
        super().__init__(nodes * gpus_per_node, inter, flops_per_second=flops_per_second, jitter=jitter, seed=seed)
        self.tx_in = [Wire(f"tx_in{r}", intra.bandwidth, intra.latency / 2) for r in range(self.n_ranks)]
        self.rx_in = [Wire(f"rx_in{r}", intra.bandwidth, intra.latency / 2) for r in range(self.n_ranks)]

    def node(self, rank: int) -> int:
        """The node of ``rank``."""
        return rank // self.gpus_per_node

    def route(self, src: int, dst: int) -> list[Wire]:
        """NVLink wires inside a node, NIC wires across nodes."""
        if self.node(src) == self.node(dst):
            return [self.tx_in[src], self.rx_in[dst]]
        return [self.tx[src], self.rx[dst]]


def folded_network(cluster: Cluster, *, jitter: float = 0.0, seed: int | None = None) -> TwoTierNetwork:
    """The smallest two-tier network with one GPU's loads: min(nodes, 2) nodes × 2 GPUs (1 × 1 for one GPU)."""
    g = min(cluster.gpus_per_node, 2)
    return TwoTierNetwork(min(cluster.nodes, 2), g, cluster.intra, cluster.inter,
                          flops_per_second=cluster.flops_per_second, jitter=jitter, seed=seed)


def folded_traffic(net: TwoTierNetwork, intra_bits: float, inter_bits: float) -> np.ndarray:
    """``[R, R]`` bits of one all-to-all on the folded network: every rank sends ``intra_bits`` split over
    its node peers and ``inter_bits`` split over the ranks of other nodes."""
    n, g = net.n_ranks, net.gpus_per_node
    traffic = np.zeros((n, n))
    for src in range(n):
        for dst in range(n):
            if src == dst:
                continue
            same = net.node(src) == net.node(dst)
            peers = g - 1 if same else n - g
            traffic[src, dst] = (intra_bits if same else inter_bits) / peers
    if (intra_bits > 0 and g == 1) or (inter_bits > 0 and net.nodes == 1):
        raise ValueError("the folded network has no peer on the tier that carries bits")
    return traffic


def rail_all_reduce(net: TwoTierNetwork, bits: float, world: int) -> simpy.events.Process:
    """Process: the ring all-reduce of ``bits`` over ``world`` = N GPUs, seen from the folded network.
    Every rank exchanges with its rail peer (the same local GPU on the other node; its node peer on one
    node) the ring's whole per-link volume 2(N − 1)/N · bits after the ring's 2(N − 1) latencies, so on an
    idle network it takes 2(N − 1)·α + 2(N − 1)/N · bits/B, the ring's closed form."""
    world = check_int("world", world, low=1)
    g = net.gpus_per_node
    tag = object()

    def rank_program(rank):
        peer = (rank + g) % net.n_ranks if net.nodes > 1 else rank ^ 1
        latency = sum(w.latency for w in net.route(rank, peer))
        yield net.env.timeout((2 * (world - 1) - 1) * latency)  # the ring's other 2(N − 1) − 1 latencies
        yield from net.sendrecv(rank, peer, 2 * (world - 1) / world * bits, peer, tag)
        net.log.append(Record(net.now, rank, "all_reduce", bits))

    def program():
        if world > 1 and bits > 0 and net.n_ranks > 1:
            yield net.env.all_of([net.env.process(rank_program(rank)) for rank in range(net.n_ranks)])
        return float(net.now)

    return net.start(program())


def simulate(schedule: Schedule, cluster: Cluster, *, jitter: float = 0.0, seed: int | None = None,
             ) -> tuple[Timeline, TwoTierNetwork]:
    """Run ``schedule`` on the folded :class:`TwoTierNetwork` of ``cluster``: every op a simpy process that
    waits for its stream predecessor and dependencies, then computes on every rank, runs its all-to-all
    (:func:`commlab.systems.collectives.all_to_all` of :func:`folded_traffic`) or its all-reduce
    (:func:`rail_all_reduce`). Returns the simulated :class:`Timeline` and the network (its ``log``)."""
    net = folded_network(cluster, jitter=jitter, seed=seed)
    env = net.env
    done = {op: env.event() for op in schedule.ops}
    start, end = {}, {}
    last: dict[str, Op] = {}

    def run(op, before):
        waits = [done[d] for d in op.deps] + ([done[before]] if before is not None else [])
        if waits:
            yield env.all_of(waits)
        start[op] = env.now
        if op.kind == "compute":
            yield env.all_of([env.process(net.compute(rank, op.flops)) for rank in range(net.n_ranks)])
        elif op.kind == "a2a":
            yield env.process(collectives.all_to_all(net, folded_traffic(net, op.intra_bits, op.inter_bits)))
        else:
            yield rail_all_reduce(net, op.bits, cluster.gpus)
        end[op] = env.now
        done[op].succeed()

    for op in schedule.ops:
        net.start(run(op, last.get(op.stream)))
        last[op.stream] = op
    net.run()
    if len(end) != len(schedule.ops):
        raise RuntimeError("the schedule deadlocked: some ops never ran")
    return Timeline(start, end, max(end.values(), default=0.0)), net


def busy_intervals(net: TwoTierNetwork, rank: int = 0) -> dict[str, list[tuple[float, float]]]:
    """Gantt rows of one rank from the engine's log: ``compute`` (start, end) of its tasks, and the
    ``intra`` / ``inter`` link (first send, last arrival) of each group of its messages that overlap."""
    rows = {"compute": [], "intra": [], "inter": []}
    opened = None
    for record in net.log:
        if record.rank == rank and record.kind == "compute_start":
            opened = record.time
        elif record.rank == rank and record.kind == "compute_end":
            rows["compute"].append((opened, record.time))
    sends = {}
    for record in net.log:
        if record.kind == "send" and record.rank == rank:
            sends.setdefault(record.peer, []).append(record.time)
        elif record.kind == "recv" and record.peer == rank and sends.get(record.rank):
            began = sends[record.rank].pop(0)
            tier = "intra" if net.node(rank) == net.node(record.rank) else "inter"
            rows[tier].append((began, record.time))
    for tier in ("intra", "inter"):
        merged = []
        for began, ended in sorted(rows[tier]):
            if merged and began <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], ended))
            else:
                merged.append((began, ended))
        rows[tier] = merged
    return rows


def _check_layers(layers) -> list[MoELayer]:
    layers = [layers] if isinstance(layers, MoELayer) else list(layers)
    if not layers or not all(isinstance(layer, MoELayer) for layer in layers):
        raise TypeError("layers must be a MoELayer or a non-empty sequence of MoELayer")
    return layers


__all__ = ["CHUNK_CHOICES", "SCHEDULES", "Cluster", "MoELayer", "Op", "Schedule", "Timeline", "TwoTierNetwork",
           "a2a_bits", "build_schedule", "busy_bound", "busy_intervals", "expert_tokens", "fit_gemm_efficiency",
           "folded_network", "folded_traffic", "gemm_efficiency", "op_seconds", "partition_gradients", "predict",
           "rail_all_reduce", "search_chunks", "sequential_seconds", "simulate", "stage_seconds"]
