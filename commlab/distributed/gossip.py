"""Decentralised SGD with gossip: topologies, communication schedules, budgets and the driver.

N nodes each hold their own parameters x_i (a row of a replica tensor ``[L, d]``, written once for
any :class:`~commlab.comm.communicator.Communicator`). One round of decentralised SGD (D-SGD) is::

    x_i ← x_i − η ∇f_i(x_i; ξ)          k local SGD steps on node i's own data
    x_i ← Σ_j W_ij x_j                    one gossip round with a mixing matrix W (``comm.mix``)

**Mixing matrices** (``[N, N]`` float64, rows sum to one):

* :func:`ring`: node i averages itself and its two ring neighbours (1/3 each);
* :func:`complete`: every row is 1/N (an exact average: the "global merge");
* :func:`exponential`: peers at distances 1, 2, 4, … around the ring, uniform weights;
* :func:`random_r_regular`: node i keeps itself and ⌊r⌋ peers drawn uniformly without replacement
  (plus one more with probability r − ⌊r⌋), uniform weights 1/(1 + peers). In expectation every
  node receives from r peers. This matrix is **row-stochastic but not doubly stochastic**: the
  average of the local models is *not* preserved by a gossip round (Σ_i W_ij ≠ 1 in general),
  as in the reference implementation of Zhu et al. (2025).

**Schedules** (:class:`Schedule`) give r, the expected number of peers per node, as a function of
training progress p ∈ [0, 1] (round k of R happens at p = k/R, after its local steps): fixed,
linear, cosine, truncate (r_start before a switch point, r_end from it on), dense window (r_end
inside [point, point + width), r_start elsewhere), and the "single merge at the end" preset
(truncate with r_start = 0.2, r_end = N − 1 and switch point 0.997, so only the last round(s) of
training are a complete graph). The **budget** of a schedule is what the paper equalises when it
compares schedules: Σ_rounds Σ_nodes (peers node i receives from) × model bytes.

:class:`DecentralizedSGD` is the method (one shape with the others, :mod:`commlab.distributed.method`):
``step(grads)`` takes one local SGD step on every node and gossips after every ``sync_every`` of
them, so any model and training loop fits. ``comm.meter`` counts the
bytes each node sends (one message per peer per round) and the peak bytes of one synchronisation;
``comm.clock`` adds the link's α–β time of every gossip round to the simulated compute time.

**Graph constants** of asynchronous gossip with edge rates λ_ij (events per second):
:func:`rate_matrix`, :func:`rate_laplacian` (Λ = Σ λ_ij (e_i − e_j)(e_i − e_j)ᵀ), DADAO's :func:`chi_1`
(1/λ_min⁺(Λ)) and :func:`chi_2` (half the largest edge effective resistance), :func:`graph_constants`,
:func:`algebraic_connectivity` (λ₂ of a Laplacian) and :func:`mixing_spectral_gap` (1 − |λ₂(W)|). The
Poisson clocks that drive such methods are in :mod:`commlab.distributed.clocks`.

Reference: T. Zhu, T. Zhang, J. Wang, Y. Zhou, L. Wang, "A Single Merging Suffices: Recovering
Server-based Learning Performance in Decentralized Learning", arXiv:2507.06542 (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_real_in
from commlab.comm import Communicator
from commlab.distributed.method import Method, StepSchedule, SyncEvent, check_schedule, schedule_at
from commlab.seeding import SeedTree

# -- mixing matrices ----------------------------------------------------------------------------------


def _uniform_rows(neighbours: list[list[int]]) -> torch.Tensor:
    """Row i puts weight 1/|neighbours[i]| on each of its (distinct) neighbours, itself included."""
    n = len(neighbours)
    W = torch.zeros(n, n, dtype=torch.float64)
    for i, row in enumerate(neighbours):
        W[i, sorted(set(row))] = 1.0 / len(set(row))
    return W


def ring(n: int) -> torch.Tensor:
    """``[n, n]``: node i averages itself and its ring neighbours i ± 1 with equal weights (1/3 for n ≥ 3)."""
    n = check_int("n", n, low=1)
    return _uniform_rows([[i, (i - 1) % n, (i + 1) % n] for i in range(n)])


def complete(n: int) -> torch.Tensor:
    """``[n, n]`` with every entry 1/n: one round is an exact global average (the single merge)."""
    n = check_int("n", n, low=1)
    return torch.full((n, n), 1.0 / n, dtype=torch.float64)


def exponential(n: int) -> torch.Tensor:
    """``[n, n]``: node i averages itself and nodes i + 1, i + 2, i + 4, … (mod n) with equal weights."""
    n = check_int("n", n, low=1)
    hops = [2**k for k in range(max(n - 1, 1).bit_length()) if 2**k < n]
    return _uniform_rows([[i] + [(i + h) % n for h in hops] for i in range(n)])


def random_r_regular(n: int, r: float, *, generator: torch.Generator) -> torch.Tensor:
    """A random row-stochastic mixing matrix in which every node receives from r peers in expectation.

    Node i keeps itself and ⌊r⌋ peers drawn uniformly without replacement from the other n − 1 nodes,
    plus one more peer with probability r − ⌊r⌋; its row puts weight 1/(1 + peers) on each. Rows are
    drawn independently, so W is row-stochastic but in general neither symmetric nor doubly
    stochastic: gossip with it does not preserve the average of the nodes' models.

    Args:
        n: number of nodes, >= 1.
        r: expected number of peers per node, in [0, n − 1]; r = n − 1 gives :func:`complete`.
        generator: the ``torch.Generator`` the peers are drawn from (share its seed between ranks).

    Returns:
        ``[n, n]`` float64.
    """
    n = check_int("n", n, low=1)
    r = check_real_in("r", r, 0.0, n - 1.0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    base, extra = int(math.floor(r)), r - math.floor(r)
    neighbours = []
    for i in range(n):
        coin = torch.rand((), generator=generator, dtype=torch.float64).item()
        k = base + (1 if coin < extra else 0)
        others = [j for j in range(n) if j != i]
        chosen = torch.randperm(n - 1, generator=generator)[:k].tolist()
        neighbours.append([i] + [others[c] for c in chosen])
    return _uniform_rows(neighbours)


# -- schedules ----------------------------------------------------------------------------------------

SCHEDULES = ("fixed", "linear", "cosine", "truncate", "window")
_EDGE = 1e-9  # switch points are compared with this slack, so k/R lands on 0.8 + 0.1 = 0.9000000000000001 as meant


@dataclass(frozen=True)
class Schedule:
    """Expected peers per node r as a function of training progress p ∈ [0, 1].

    Build it with a constructor: :meth:`fixed`, :meth:`linear`, :meth:`cosine`, :meth:`truncate`,
    :meth:`window` or :meth:`single_merge`. Calling it gives r(p):

    * fixed: r_start;
    * linear: r_start + (r_end − r_start)·p;
    * cosine: r_end + (r_start − r_end)·(1 + cos πp)/2;
    * truncate: r_start for p < point, r_end from p = point on;
    * window: r_end for point ≤ p < point + width, r_start elsewhere.

    Switch points are compared with a slack of 1e-9, so that on a grid of rounds k/R a window
    [0.8, 0.8 + 0.1) holds as many rounds as [0.1, 0.1 + 0.1) despite float rounding.

    Attributes:
        kind: one of ``SCHEDULES``.
        r_start, r_end: peers per node (>= 0) at the start and the end (or inside the window).
        point: the switch point (truncate) or the window's start (window), in [0, 1].
        width: the window's width, with point + width <= 1 (window only; 0 otherwise).
    """

    kind: str
    r_start: float
    r_end: float = 0.0
    point: float = 0.0
    width: float = 0.0

    def __post_init__(self):
        check_choice("kind", self.kind, SCHEDULES)
        check_nonnegative("r_start", self.r_start)
        check_nonnegative("r_end", self.r_end)
        check_real_in("point", self.point, 0.0, 1.0)
        check_real_in("width", self.width, 0.0, 1.0)
        if self.kind == "window":
            check_positive("width", self.width)
            if self.point + self.width > 1.0 + 1e-12:
                raise ValueError(f"the window [point, point + width) = [{self.point}, {self.point + self.width}) "
                                 "must lie inside [0, 1]")

    @classmethod
    def fixed(cls, r: float) -> Schedule:
        return cls("fixed", r)

    @classmethod
    def linear(cls, r_start: float, r_end: float) -> Schedule:
        return cls("linear", r_start, r_end)

    @classmethod
    def cosine(cls, r_start: float, r_end: float) -> Schedule:
        return cls("cosine", r_start, r_end)

    @classmethod
    def truncate(cls, r_start: float, r_end: float, point: float) -> Schedule:
        return cls("truncate", r_start, r_end, point)

    @classmethod
    def window(cls, r_base: float, r_dense: float, start: float, width: float) -> Schedule:
        """Dense communication (r_dense) only inside [start, start + width), r_base elsewhere."""
        return cls("window", r_base, r_dense, start, width)

    @classmethod
    def single_merge(cls, world_size: int, r: float = 0.2, point: float = 0.997) -> Schedule:
        """The paper's preset: sparse gossip r until ``point``, then the complete graph (r = N − 1)."""
        world_size = check_int("world_size", world_size, low=1)
        return cls.truncate(r, world_size - 1.0, point)

    def __call__(self, progress: float) -> float:
        p = check_real_in("progress", progress, 0.0, 1.0)
        if self.kind == "fixed":
            return self.r_start
        if self.kind == "linear":
            return self.r_start + (self.r_end - self.r_start) * p
        if self.kind == "cosine":
            return self.r_end + (self.r_start - self.r_end) * (1.0 + math.cos(math.pi * p)) / 2.0
        if self.kind == "truncate":
            return self.r_start if p < self.point - _EDGE else self.r_end
        inside = self.point - _EDGE <= p < self.point + self.width - _EDGE
        return self.r_end if inside else self.r_start

    def per_round(self, rounds: int) -> list[float]:
        """r of rounds k = 1, …, R (progress k/R: each round's gossip follows its local steps)."""
        rounds = check_int("rounds", rounds, low=1)
        return [self(k / rounds) for k in range(1, rounds + 1)]


def budget(schedule: Schedule, world_size: int, rounds: int, model_bytes: float) -> float:
    """Expected bytes on the wire of a schedule: Σ_rounds Σ_nodes r_k × ``model_bytes`` = N·Σ_k r_k·bytes.

    Exact for integer r_k; for fractional r_k it is the expectation over the random peer draws.
    """
    world_size = check_int("world_size", world_size, low=1)
    model_bytes = check_nonnegative("model_bytes", model_bytes)
    per_round = schedule.per_round(rounds)
    too_many = [r for r in per_round if r > world_size - 1]
    if too_many:
        raise ValueError(f"schedule asks for r = {too_many[0]} peers but {world_size} nodes have at most "
                         f"{world_size - 1}")
    return world_size * sum(per_round) * model_bytes


# -- decentralised SGD --------------------------------------------------------------------------------


def consensus_distance(x: torch.Tensor) -> float:
    """(1/N) Σ_i ‖x_i − x̄‖² of all N nodes' parameters ``x`` ``[N, d]`` (the paper's consensus error)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be [N, d], got {tuple(getattr(x, 'shape', ()))}")
    x = x.detach().double()
    return float(((x - x.mean(dim=0)) ** 2).sum(dim=1).mean())


class DecentralizedSGD(Method):
    """Decentralised SGD: ``sync_every`` local SGD steps per node, then one gossip round.

    Step t (0-based) on every local node: x ← x − lr_t·(g + weight_decay·x). After steps
    k·``sync_every`` (round k = 1, 2, …) the nodes mix x ← W x with ``comm.mix``: W is the fixed
    ``topology`` if given, else :func:`random_r_regular` with r = ``schedule(k / rounds)``, its peers
    drawn from ``SeedTree(seed).torch("gossip", k)`` (the same on every rank). A round with r = 0 sends
    nothing.

    Args:
        comm: the communicator (SimComm: L = N rows; DistComm: one row per rank).
        params: ``[L, d]`` floating parameters of the local nodes, changed in place.
        lr: step size > 0, or a schedule ``step -> lr``.
        sync_every: local steps per round (>= 1).
        schedule, topology: exactly one: a :class:`Schedule` of random gossip, or a fixed ``[N, N]``
            row-stochastic mixing matrix (e.g. :func:`ring`).
        rounds: R, the rounds of the run: the progress k/R at which the schedule is read (needed with a
            schedule; the run may not go beyond R rounds).
        seed: root seed of the peer draws.
        complete_as: how a complete round (r = N − 1) goes over the wire: ``"gossip"`` (every node
            sends its model to the N − 1 others, as the paper counts it) or ``"all_reduce"`` (a
            ring all-reduce of the mean, the server-based baseline's collective).
        weight_decay: L2 coefficient (>= 0) added to the gradient.
        step_seconds: simulated compute seconds per local step, added to ``comm.clock``.

    Attributes:
        premix: ``[L, d]`` the local models as the latest round trained them, *before* its gossip, so
            their mean over all N nodes is exactly what a global merge (a complete round) at that
            round would give every node (None before the first round).
        r: the expected peers per node of each round (None with a fixed topology).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, lr: StepSchedule, sync_every: int = 1,
                 schedule: Schedule | None = None, topology: torch.Tensor | None = None, rounds: int | None = None,
                 seed: int = 0, complete_as: str = "gossip", weight_decay: float = 0.0, step_seconds: float = 0.0):
        super().__init__(comm, params, step_seconds=step_seconds)
        self.lr = check_schedule("lr", lr)
        self.sync_every = check_int("sync_every", sync_every, low=1)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.complete_as = check_choice("complete_as", complete_as, ("gossip", "all_reduce"))
        n = comm.world_size
        if (schedule is None) == (topology is None):
            raise ValueError("pass exactly one of schedule (random gossip) and topology (a fixed mixing matrix)")
        self.topology, self.r, self.rounds = None, None, None
        if schedule is not None:
            if not isinstance(schedule, Schedule):
                raise TypeError(f"schedule must be a gossip Schedule, got {type(schedule).__name__}")
            if rounds is None:
                raise ValueError("a schedule is read at progress k / rounds: pass rounds, the run's number of rounds")
            self.rounds = check_int("rounds", rounds, low=1)
            budget(schedule, n, self.rounds, 0.0)  # raises if some round asks for more than N - 1 peers
            self.r = schedule.per_round(self.rounds)
        else:
            self.topology = _check_row_stochastic(topology, n)
        self.seeds = SeedTree(seed)
        self.premix: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, grads: torch.Tensor) -> list[SyncEvent]:
        """One local step on every node from ``grads`` ``[L, d]``; gossip when a round ends. Returns the
        round's gossip event (empty list between rounds and for rounds with r = 0)."""
        grads = self._check_grads(grads, finite=False)
        if self.weight_decay:
            grads = grads + self.weight_decay * self.params
        self.params.sub_(schedule_at("lr", self.lr, self.steps) * grads)
        self.comm.advance(self.step_seconds)
        self.steps += 1
        if self.steps % self.sync_every:
            return []
        k = self.steps // self.sync_every
        if self.rounds is not None and k > self.rounds:
            raise RuntimeError(f"the run was set up for rounds = {self.rounds}; round {k} has no schedule value")
        self.premix = self.params.clone()
        before = len(self.events)
        self.params.copy_(self._gossip(k))
        return self.events[before:]

    def _gossip(self, k: int) -> torch.Tensor:
        x, n = self.params, self.comm.world_size
        if self.topology is not None:
            return self._run("sync", self.comm.mix, x, self.topology).wait()
        r = self.r[k - 1]
        if r == 0:
            return x
        if r >= n - 1 and self.complete_as == "all_reduce":
            return self._run("sync", self.comm.all_reduce, x, "mean", info={"r": r}).wait()
        W = random_r_regular(n, r, generator=self.seeds.torch("gossip", k))
        return self._run("sync", self.comm.mix, x, W, info={"r": r}).wait()

    def _state(self) -> dict:
        return {"premix": None if self.premix is None else self.premix.clone()}

    def _load(self, state: dict) -> None:
        self.premix = None if state["premix"] is None else state["premix"].clone()


def _check_row_stochastic(W, n: int) -> torch.Tensor:
    W = torch.as_tensor(W, dtype=torch.float64)
    if W.shape != (n, n):
        raise ValueError(f"topology must be an [{n}, {n}] mixing matrix, got shape {tuple(W.shape)}")
    if not torch.isfinite(W).all() or (W < 0).any():
        raise ValueError("topology must have finite, non-negative entries")
    worst = float((W.sum(dim=1) - 1).abs().max())
    if worst > 1e-9:
        raise ValueError(f"topology must be row-stochastic (rows sum to 1), a row is off by {worst:.3g}")
    return W


# -- graph constants ----------------------------------------------------------------------------------
#
# Asynchronous gossip (DADAO, Nabli & Oyallon, ICML 2023, arXiv:2208.00779) activates edge (i, j) at
# the points of a Poisson process of rate λ_ij (events per second). The graph enters the method through
# the Laplacian weighted by those rates,
#
#     Λ = Σ_{(i,j) ∈ E} λ_ij (e_i − e_j)(e_i − e_j)ᵀ        (units: 1/s)
#
# and two constants of it:
#
#     χ₁ = 1 / λ_min⁺(Λ)                                  (inverse smallest positive eigenvalue; s)
#     χ₂ = max_{(i,j) ∈ E} ½ (e_i − e_j)ᵀ Λ⁺ (e_i − e_j)   (half the largest effective resistance
#                                                          of an edge, conductances λ_ij; s)
#
# with χ₂ ≤ χ₁ (since ‖e_i − e_j‖² = 2). These are the brief's "graph quantities" and the definitions
# the authors' code evaluates; with uniform edge sampling at a total gossip rate λ_mix, every edge has
# λ_ij = λ_mix/|E|, Λ = λ_mix·L/|E| (L the combinatorial Laplacian), and χ₁(Λ) = χ₁(L/|E|)/λ_mix is the
# brief's χ₁* = χ₁/λ_mix. Scaling every rate by c scales both χ₁ and χ₂ by 1/c.


@dataclass(frozen=True)
class GraphConstants:
    """Spectral constants of a gossip graph with edge rates (see :func:`graph_constants`).

    Attributes:
        n: nodes; edges: the number of edges with a positive rate.
        total_rate: Σ_{(i,j) ∈ E} λ_ij, gossip events per second over the whole graph.
        algebraic_connectivity: λ_min⁺(Λ) = λ₂(Λ), 1/s.
        lambda_max: the largest eigenvalue of Λ, 1/s.
        chi_1: 1/λ_min⁺(Λ), seconds.
        chi_2: max over edges of ½ (e_i − e_j)ᵀ Λ⁺ (e_i − e_j), seconds (≤ chi_1).
    """

    n: int
    edges: int
    total_rate: float
    algebraic_connectivity: float
    lambda_max: float
    chi_1: float
    chi_2: float


def _check_symmetric_square(name: str, M) -> torch.Tensor:
    if isinstance(M, torch.Tensor):
        M = M.detach().to(device="cpu", dtype=torch.float64)
    else:
        M = torch.as_tensor(M, dtype=torch.float64)
    if M.dim() != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 2:
        raise ValueError(f"{name} must be a square [n, n] matrix with n >= 2, got shape {tuple(M.shape)}")
    if not torch.isfinite(M).all():
        raise ValueError(f"{name} must have finite entries")
    scale = max(float(M.abs().max()), 1.0)
    asym = float((M - M.T).abs().max())
    if asym > 1e-12 * scale:
        raise ValueError(f"{name} must be symmetric (undirected gossip), |M - M^T| reaches {asym:.3g}")
    return (M + M.T) / 2


def _check_connected(name: str, adjacency: torch.Tensor) -> None:
    """Raise unless the graph with an edge wherever ``adjacency`` (off the diagonal) is non-zero is connected."""
    n = adjacency.shape[0]
    linked = (adjacency != 0) & ~torch.eye(n, dtype=torch.bool)
    seen, frontier = {0}, [0]
    while frontier:
        i = frontier.pop()
        for j in torch.nonzero(linked[i]).flatten().tolist():
            if j not in seen:
                seen.add(j)
                frontier.append(j)
    if len(seen) < n:
        missing = sorted(set(range(n)) - seen)
        raise ValueError(f"{name}: the graph is disconnected (node 0 cannot reach nodes {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}); gossip constants need a connected graph")


def _check_rates(rates) -> torch.Tensor:
    R = _check_symmetric_square("rates", rates)
    if (R < 0).any():
        raise ValueError("rates must be non-negative (events per second on each edge)")
    if bool((torch.diagonal(R) != 0).any()):
        raise ValueError("rates must have a zero diagonal (no self-loops: a node does not gossip with itself)")
    _check_connected("rates", R)
    return R


def rate_matrix(n: int, edges, rates=1.0) -> torch.Tensor:
    """The symmetric ``[n, n]`` float64 matrix of edge rates λ_ij (events per second), zero off the edges.

    Args:
        n: nodes, >= 2.
        edges: undirected pairs (i, j), i ≠ j, each once.
        rates: one rate >= 0 for every edge, or one per edge (e.g. λ_mix/|E| for uniform edge sampling).
    """
    n = check_int("n", n, low=2)
    edges = [tuple(e) for e in edges]
    values = [rates] * len(edges) if np.ndim(rates) == 0 else list(rates)
    if len(values) != len(edges):
        raise ValueError(f"rates must be a scalar or one value per edge ({len(edges)}), got {len(values)}")
    R = torch.zeros(n, n, dtype=torch.float64)
    for k, (edge, rate) in enumerate(zip(edges, values, strict=True)):
        if len(edge) != 2:
            raise ValueError(f"edges[{k}] must be a pair (i, j), got {edge!r}")
        i, j = (check_int(f"edges[{k}] node", v, low=0, high=n - 1) for v in edge)
        if i == j:
            raise ValueError(f"edges[{k}] = {edge!r} is a self-loop")
        if R[i, j] != 0:
            raise ValueError(f"edges[{k}] = {edge!r} repeats an edge")
        R[i, j] = R[j, i] = check_nonnegative(f"rates[{k}]", rate)
    return R


def rate_laplacian(rates) -> torch.Tensor:
    """Λ = Σ_{(i,j)} λ_ij (e_i − e_j)(e_i − e_j)ᵀ = diag(rates·1) − rates, ``[n, n]`` float64 (1/s).

    ``rates`` is a symmetric, non-negative ``[n, n]`` matrix with a zero diagonal (:func:`rate_matrix`)
    whose graph is connected; anything else raises ``ValueError``.
    """
    R = _check_rates(rates)
    return torch.diag(R.sum(dim=1)) - R


def _spectrum_and_resistances(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For checked rates ``R``: the eigenvalues of Λ (ascending; the first is the 0 of the constant
    vector, as the graph is connected) and the ``[n, n]`` effective resistances from Λ⁺."""
    values, vectors = torch.linalg.eigh(torch.diag(R.sum(dim=1)) - R)
    pinv = vectors[:, 1:] @ torch.diag(1.0 / values[1:]) @ vectors[:, 1:].T  # Λ⁺: drop the null space 1
    d = torch.diagonal(pinv)
    return values, d[:, None] + d[None, :] - 2 * pinv


def algebraic_connectivity(laplacian) -> float:
    """λ₂ of a graph Laplacian (Fiedler's algebraic connectivity, its spectral gap): the smallest
    positive eigenvalue of a connected graph's Laplacian, in the Laplacian's units.

    ``laplacian`` must be symmetric with non-positive off-diagonal entries and zero row sums (a
    weighted Laplacian, e.g. :func:`rate_laplacian`), of a connected graph; otherwise ``ValueError``.
    """
    Lap = _check_symmetric_square("laplacian", laplacian)
    off = Lap - torch.diag(torch.diagonal(Lap))
    if (off > 0).any():
        raise ValueError("laplacian must have non-positive off-diagonal entries (minus the edge weights)")
    scale = max(float(Lap.abs().max()), 1e-300)
    worst = float(Lap.sum(dim=1).abs().max())
    if worst > 1e-10 * scale:
        raise ValueError(f"laplacian rows must sum to zero, a row sums to {worst:.3g}")
    _check_connected("laplacian", off)
    return float(torch.linalg.eigvalsh(Lap)[1])


def effective_resistances(rates) -> torch.Tensor:
    """``[n, n]`` R_ij = (e_i − e_j)ᵀ Λ⁺ (e_i − e_j), the effective resistance between i and j when
    edge (i, j) is a conductance λ_ij (seconds), for Λ = :func:`rate_laplacian` ``(rates)``."""
    return _spectrum_and_resistances(_check_rates(rates))[1]


def chi_1(rates) -> float:
    """DADAO's χ₁ = 1/λ_min⁺(Λ), seconds, for the edge-rate matrix ``rates`` (events per second)."""
    return graph_constants(rates).chi_1


def chi_2(rates) -> float:
    """DADAO's χ₂ = max_{(i,j) ∈ E} ½ (e_i − e_j)ᵀ Λ⁺ (e_i − e_j), seconds (half the largest effective
    resistance over the edges with a positive rate); χ₂ ≤ χ₁."""
    return graph_constants(rates).chi_2


def graph_constants(rates) -> GraphConstants:
    """All of :class:`GraphConstants` for the edge-rate matrix ``rates`` (events per second), one eigh."""
    R = _check_rates(rates)
    values, resistance = _spectrum_and_resistances(R)
    return GraphConstants(n=R.shape[0], edges=int((R > 0).sum()) // 2, total_rate=float(R.triu(1).sum()),
                          algebraic_connectivity=float(values[1]), lambda_max=float(values[-1]),
                          chi_1=1.0 / float(values[1]), chi_2=0.5 * float(resistance[R > 0].max()))


def mixing_spectral_gap(W) -> float:
    """1 − |λ₂(W)| for a symmetric, doubly stochastic, non-negative mixing matrix ``W`` ``[n, n]``:
    one minus the second largest eigenvalue modulus (max over eigenvalues other than the top 1 of
    their absolute value), so one gossip round contracts the disagreement x − x̄ by at least |λ₂|.

    Complete averaging (:func:`complete`) has gap 1; :func:`ring` has 1 − max_{k≠0} |1 + 2cos(2πk/n)|/3.
    Non-symmetric matrices (e.g. :func:`random_r_regular`), entries < 0, rows that do not sum to 1 and a
    disconnected support raise ``ValueError``.
    """
    M = _check_symmetric_square("W", W)
    if (M < 0).any():
        raise ValueError("W must have non-negative entries")
    worst = float((M.sum(dim=1) - 1).abs().max())
    if worst > 1e-9:
        raise ValueError(f"W must be doubly stochastic (rows and columns sum to 1), a row is off by {worst:.3g}")
    _check_connected("W", M)
    moduli = torch.linalg.eigvalsh(M).abs().sort(descending=True).values
    return float(1.0 - moduli[1])
