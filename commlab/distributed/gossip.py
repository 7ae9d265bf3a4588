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

Reference: T. Zhu, T. Zhang, J. Wang, Y. Zhou, L. Wang, "A Single Merging Suffices: Recovering
Server-based Learning Performance in Decentralized Learning", arXiv:2507.06542 (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
