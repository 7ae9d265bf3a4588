"""Costs of elastic recovery after a rank is lost (ElasWave, arXiv 2510.00606): re-partitioning a
pipeline, moving the lost rank's state, repairing communicators; on the lab's α–β
:class:`~commlab.comm.link.Link` (bit/s, s) and the simpy engine (:mod:`~commlab.systems.events`).

**Pipeline re-partitioning.** L layers of costs c_1..c_L (seconds per micro-batch, forward and backward
together) in P contiguous stages of sizes n_1..n_P; stage p costs C_p = Σ_{l ∈ p} c_l. The min–max
partition minimises max_p C_p by dynamic programming over prefix sums (:func:`min_max_partition`):

    F(p, i) = min_{j < i} max(F(p − 1, j), c_{j+1} + … + c_i),   F(1, i) = c_1 + … + c_i,

the answer F(P, L), O(P·L²). The naive repair gives the lost stage's layers to its lighter neighbour
(:func:`absorb_lost_stage`). A pipeline of m micro-batches with transfer lag τ between stages ends at

    T = Σ_p C_p + (P − 1)·τ + (m − 1)·max_p C_p                      (:func:`pipeline_seconds`)

(the last micro-batch leaves the bottleneck m − 1 stage-times after the first), so its bubble — the idle
share of the P·T stage-seconds — is 1 − m·Σ_p C_p/(P·T), (P − 1)/(m + P − 1) for equal stages and τ = 0
(:func:`bubble_fraction`). :func:`simulate_pipeline` runs the same pipeline on the engine. With several
data-parallel pipelines, one of them degraded, :func:`balance_micro_batches` re-slices the global batch's
micro-batches over them so that the slowest finishes first.

**Recovery of the lost state.** A ZeRO-sharded state of S bits over W data-parallel ranks: rank r holds
shard r (S/W bits) and an in-memory snapshot of others' shards. After rank v is lost, its shard is
re-sliced over the W − 1 survivors: survivor i receives S/(W(W − 1)) bits, its share.

* interleaved snapshot (ElasWave): the piece survivor i needs is held by the survivor after it (ring
  order, v skipped), so the transfers form a permutation of disjoint rank-to-rank messages, all at once:
  T = ℓ + S/(W(W − 1)·B);
* neighbour snapshot (a plain replica on rank v + 1): that one rank sends W − 2 pieces,
  T = ℓ + (W − 2)·S/(W(W − 1)·B) (its link is the bottleneck);
* checkpoint reload: every survivor reads its whole new shard S/(W − 1) from storage of aggregate
  bandwidth B_s, T = S/B_s, and the steps since the checkpoint are computed again.

(:func:`recovery_traffic`, :func:`transfer_seconds`; :func:`simulate_transfers` on the engine.)

**Communicator repair** (:func:`communicator_seconds`): editing the groups that held the lost rank costs
ℓ per edited group; rebuilding a full mesh of W' ranks costs ℓ per pair, W'(W' − 1)/2·ℓ.

**DVFS** (:func:`dvfs_plan`): a stage run at relative frequency f takes C/f and spends energy ∝ C·f²
(dynamic power ∝ f³); running stage p at f_p = max(C_p/max_q C_q, f_min) keeps every stage within the
bottleneck's time and saves 1 − Σ_p C_p f_p²/Σ_p C_p of the energy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator

import numpy as np

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm.link import Link
from commlab.systems import collectives
from commlab.systems.events import Network


def _costs(costs) -> np.ndarray:
    c = np.asarray(costs, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0 or not np.isfinite(c).all() or (c < 0).any():
        raise ValueError(f"costs must be a non-empty 1-D sequence of finite non-negative numbers, got shape {c.shape}")
    return c


def _sizes(sizes, layers: int) -> tuple[int, ...]:
    sizes = tuple(check_int("stage size", n, low=1) for n in sizes)
    if sum(sizes) != layers:
        raise ValueError(f"stage sizes {sizes} must add up to the {layers} layers")
    return sizes


def stage_costs(costs, sizes) -> np.ndarray:
    """float64 ``[P]``: C_p, the summed costs of the contiguous stages of ``sizes`` (layers per stage)."""
    c = _costs(costs)
    edges = np.cumsum((0, *_sizes(sizes, len(c))))
    return np.array([c[a:b].sum() for a, b in itertools.pairwise(edges)])


def min_max_partition(costs, stages: int) -> tuple[int, ...]:
    """Stage sizes (layers per stage, P = ``stages`` of them, each >= 1) minimising max_p C_p, by the
    dynamic programme F(p, i) of the module docstring; among optimal partitions, the one whose cuts
    come first at each stage from the last."""
    c = _costs(costs)
    L = len(c)
    P = check_int("stages", stages, low=1, high=L)
    prefix = np.concatenate(([0.0], np.cumsum(c)))
    F = np.full((P + 1, L + 1), math.inf)
    cut = np.zeros((P + 1, L + 1), dtype=np.int64)
    F[1, 1:] = prefix[1:]
    for p in range(2, P + 1):
        for i in range(p, L + 1):
            j = np.arange(p - 1, i)  # the last stage is layers j+1..i
            value = np.maximum(F[p - 1, j], prefix[i] - prefix[j])  # max(F(p − 1, j), c_{j+1} + … + c_i)
            best = int(np.argmin(value))
            F[p, i], cut[p, i] = value[best], j[best]
    sizes, i = [], L
    for p in range(P, 1, -1):
        sizes.append(i - int(cut[p, i]))
        i = int(cut[p, i])
    sizes.append(i)
    return tuple(reversed(sizes))


def brute_force_partition(costs, stages: int) -> float:
    """min over every placement of the P − 1 cuts of max_p C_p, each partition's C_p by :func:`stage_costs`
    (C(L − 1, P − 1) partitions: small L only)."""
    c = _costs(costs)
    L = len(c)
    P = check_int("stages", stages, low=1, high=L)
    if math.comb(L - 1, P - 1) > 1_000_000:
        raise ValueError(f"{math.comb(L - 1, P - 1)} partitions are too many to enumerate; use min_max_partition")
    best = math.inf
    for cuts in itertools.combinations(range(1, L), P - 1):
        best = min(best, float(stage_costs(c, np.diff((0, *cuts, L))).max()))
    return best


def absorb_lost_stage(costs, sizes, lost: int) -> tuple[int, ...]:
    """The naive repair: stage ``lost``'s layers join its neighbour with the smaller C_p (the only one at
    either end); P − 1 stage sizes."""
    c = _costs(costs)
    sizes = list(_sizes(sizes, len(c)))
    if len(sizes) < 2:
        raise ValueError("a pipeline of one stage has no neighbour to absorb a lost stage")
    lost = check_int("lost", lost, low=0, high=len(sizes) - 1)
    C = stage_costs(c, sizes)
    neighbours = [p for p in (lost - 1, lost + 1) if 0 <= p < len(sizes)]
    target = min(neighbours, key=lambda p: (C[p], p))
    sizes[target] += sizes[lost]
    del sizes[lost]
    return tuple(sizes)


def pipeline_seconds(stage_cost, micro_batches: int, *, lag: float = 0.0) -> float:
    """T = Σ_p C_p + (P − 1)·τ + (m − 1)·max_p C_p: a pipeline of m = ``micro_batches`` through stages of
    ``stage_cost`` seconds each, ``lag`` = τ seconds between consecutive stages."""
    C = _costs(stage_cost)
    m = check_int("micro_batches", micro_batches, low=1)
    return float(C.sum() + (len(C) - 1) * check_nonnegative("lag", lag) + (m - 1) * C.max())


def bubble_fraction(stage_cost, micro_batches: int, *, lag: float = 0.0) -> float:
    """1 − m·Σ_p C_p/(P·T), the idle share of the stages' time ((P − 1)/(m + P − 1) for equal stages, τ = 0)."""
    C = _costs(stage_cost)
    T = pipeline_seconds(C, micro_batches, lag=lag)
    return float(1 - micro_batches * C.sum() / (len(C) * T)) if T > 0 else 0.0


def simulate_pipeline(stage_cost, micro_batches: int, *, link: Link | None = None,
                      activation_bits: float = 0.0) -> float:
    """Seconds until the last micro-batch leaves the last stage, on the engine: stage p is rank p, a
    compute unit of 1 FLOP/s running C_p "FLOP" per micro-batch in order, which sends ``activation_bits``
    to stage p + 1 over ``link`` (default: an unlimited one) while it computes the next micro-batch. It
    equals :func:`pipeline_seconds` with τ = ℓ + a/B while no two activations share a wire (τ <= min_p C_p)."""
    C = _costs(stage_cost)
    m = check_int("micro_batches", micro_batches, low=1)
    bits = check_nonnegative("activation_bits", activation_bits)
    P = len(C)
    net = Network(P, link if link is not None else Link(), flops_per_second=1.0)

    def stage(p: int) -> Generator:
        # every receive is posted at once (the stage prefetches its inputs), so a transfer waits for its
        # sender only
        inputs = [net.start(net.recv(p, p - 1, tag=k)) for k in range(m)] if p > 0 else []
        for k in range(m):
            if p > 0:
                yield inputs[k]
            yield from net.compute(p, float(C[p]))
            if p < P - 1:
                net.start(net.send(p, p + 1, bits, tag=k))  # buffered: the stage goes on to the next one
        return net.now

    last = [net.start(stage(p)) for p in range(P)][-1]
    net.run()
    return float(last.value)


def balance_micro_batches(pipelines, micro_batches: int) -> tuple[int, ...]:
    """Micro-batches per data-parallel pipeline (ElasWave's dataflow re-slicing), the global batch kept:
    the m_q >= 1, Σ_q m_q = ``micro_batches``, minimising the step time max_q T_q(m_q) with T_q of
    :func:`pipeline_seconds`. T_q(m) = Σ_p C_qp + (m − 1)·max_p C_qp is affine in m, so giving each
    micro-batch in turn to the pipeline whose T_q grows to the smallest value is optimal.

    Args:
        pipelines: one sequence of stage costs C_qp (seconds) per pipeline q.
        micro_batches: the total number of micro-batches, at least one per pipeline.
    """
    C = [_costs(stages) for stages in pipelines]
    if not C:
        raise ValueError("pipelines must hold at least one pipeline")
    total = check_int("micro_batches", micro_batches, low=len(C))
    m = [1] * len(C)
    for _ in range(total - len(C)):
        q = min(range(len(C)), key=lambda q: (pipeline_seconds(C[q], m[q] + 1), q))
        m[q] += 1
    return tuple(m)


STRATEGIES = ("interleaved", "neighbour")


def recovery_traffic(state_bits: float, world_size: int, lost: int, *, strategy: str = "interleaved") -> np.ndarray:
    """float64 ``[W, W]``: bits rank g sends rank h to re-slice the lost rank's shard over the survivors.

    Args:
        state_bits: S, the whole sharded state (each of the W ranks holds S/W).
        world_size: W >= 2, before the loss.
        lost: v, the lost rank (sends and receives nothing).
        strategy: ``"interleaved"`` (survivor i's piece comes from the next survivor in ring order) or
            ``"neighbour"`` (every piece comes from rank v + 1, which keeps its own).
    """
    S = check_nonnegative("state_bits", state_bits)
    W = check_int("world_size", world_size, low=2)
    v = check_int("lost", lost, low=0, high=W - 1)
    check_choice("strategy", strategy, STRATEGIES)
    survivors = [r for r in range(W) if r != v]
    piece = S / (W * (W - 1))  # the lost shard S/W in W − 1 pieces
    traffic = np.zeros((W, W))
    for index, i in enumerate(survivors):
        holder = survivors[(index + 1) % len(survivors)] if strategy == "interleaved" else (v + 1) % W
        if holder != i:
            traffic[holder, i] = piece
    return traffic


def transfer_seconds(traffic_bits, link: Link) -> float:
    """ℓ + (bits the busiest rank sends or receives)/B: all the messages at once (0 if there are none)."""
    return float(link.alltoall_seconds(traffic_bits))


def simulate_transfers(traffic_bits, link: Link) -> float:
    """The same transfers on the engine (messages share each rank's wires max-min fairly)."""
    traffic = np.asarray(traffic_bits, dtype=np.float64)
    net = Network(traffic.shape[0], link)
    done = net.start(collectives.all_to_all(net, traffic))
    net.run()
    return float(done.value)


def checkpoint_seconds(state_bits: float, *, storage_bandwidth: float, steps_lost: float = 0.0,
                       step_seconds: float = 0.0) -> float:
    """S/B_s + k·t: reload the whole state from storage of aggregate ``storage_bandwidth`` B_s bit/s and
    compute the ``steps_lost`` = k steps since the checkpoint again (``step_seconds`` = t each)."""
    S = check_nonnegative("state_bits", state_bits)
    return S / check_positive("storage_bandwidth", storage_bandwidth) + (
        check_nonnegative("steps_lost", steps_lost) * check_nonnegative("step_seconds", step_seconds))


def communicator_seconds(survivors: int, latency: float, *, mode: str = "edit", edited_groups: int = 1) -> float:
    """Repair time of the communicators: ``"edit"``: ℓ per edited group; ``"rebuild"``: ℓ per pair of a
    full mesh of the W' = ``survivors`` ranks, W'(W' − 1)/2·ℓ."""
    W = check_int("survivors", survivors, low=1)
    latency = check_nonnegative("latency", latency)
    check_choice("mode", mode, ("edit", "rebuild"))
    if mode == "edit":
        return check_int("edited_groups", edited_groups, low=0) * latency
    return W * (W - 1) / 2 * latency


def dvfs_plan(stage_cost, *, min_frequency: float = 0.5) -> tuple[np.ndarray, float]:
    """``(f [P], energy ratio)``: f_p = max(C_p/max_q C_q, f_min) and Σ_p C_p f_p² / Σ_p C_p."""
    C = _costs(stage_cost)
    f_min = check_real_number("min_frequency", min_frequency, low=0.0, high=1.0, low_open=True)
    if C.max() == 0:
        return np.ones_like(C), 1.0
    f = np.maximum(C / C.max(), f_min)
    return f, float((C * f**2).sum() / C.sum())


def random_costs(layers: int, rng: np.random.Generator, *, low: float = 0.5, high: float = 1.5) -> np.ndarray:
    """float64 ``[L]`` layer costs uniform in [``low``, ``high``) seconds, from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    L = check_int("layers", layers, low=1)
    low, high = check_nonnegative("low", low), check_positive("high", high)
    if high <= low:
        raise ValueError(f"high must exceed low, got [{low}, {high})")
    return rng.uniform(low, high, size=L)


__all__ = ["STRATEGIES", "absorb_lost_stage", "balance_micro_batches", "brute_force_partition", "bubble_fraction",
           "checkpoint_seconds", "communicator_seconds", "dvfs_plan", "min_max_partition", "pipeline_seconds",
           "random_costs", "recovery_traffic", "simulate_pipeline", "simulate_transfers", "stage_costs",
           "transfer_seconds"]
