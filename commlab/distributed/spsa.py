"""Shared-randomness SPSA: machines train one model by exchanging one byte per projected gradient.

Zelikman, Huang, Liang, Haber, Goodman (2023), "Just One Byte (per gradient): A Note on Low-Bandwidth
Decentralized Language Model Finetuning Using Shared Randomness", arXiv 2306.10015; the estimator is
SPSA as used by MeZO (Malladi et al. 2023). In round t every active machine m, for each of its
samples s = 0, …, S − 1:

* regenerates a perturbation z_{t,m,s} ~ N(0, I_d) from the generator
  ``SeedTree(seed).torch("spsa", t, m, s)`` (:func:`perturbation`; never stored, never sent);
* computes one scalar, the central-difference projected gradient on its own minibatch B_{t,m,s}::

      p_{t,m,s} = (L(θ + ε z; B) − L(θ − ε z; B)) / (2ε)  ≈  zᵀ∇L(θ; B)

* sends it through the ``scalars`` compressor (:class:`~commlab.compress.LogByte`: one byte).

Every machine then decodes all n = K_t·S scalars of the round's K_t active machines and applies them
one at a time in the canonical order (machine id, then sample), regenerating each z_j::

      θ ← θ − c_j z_j,   c_j = lr · p̂_j / √n   (``normalize="sqrt"``, the public code's choice)
                              or lr · p̂_j / n    (``normalize="mean"``, an average of the n estimates)

Each update is two exactly rounded float operations (u = z_j·c_j, then θ ← θ − u) on identical
inputs, so every replica, on any backend, computes the same bits: the replicas stay bit-identical
without ever sending a parameter (checked with :func:`~commlab.comm.hashing.state_hash`), and
θ_T can be rebuilt from θ_0 and the scalar log alone (:func:`replay`).

**Machines and the communicator.** Machine m is worker (rank) m of the communicator, whose
``world_size`` must exceed every machine id of the :class:`~commlab.comm.membership.Membership`
schedule; on :class:`~commlab.comm.communicator.SimComm` all machines live in one process (row l of
:attr:`SharedSeedSPSA.params` is machine l's replica), on :class:`~commlab.comm.communicator.DistComm`
each rank holds its own replica. In each round, for each active machine m in ascending order, one
``broadcast`` from m carries its S packed scalars (a ``uint8`` tensor of ``ceil(bits/8)`` bytes; S
bytes with LogByte). The meter therefore charges exactly what active machines send; a machine that
is not active sends nothing and keeps its parameters frozen (on DistComm its rank still joins the
broadcasts as a listener, since every rank of a gloo group must). A machine that joins before round
t receives θ by one ``broadcast`` of the full parameters from ``membership.source(t)`` (8·d bytes in
float64, charged to that peer and reported separately as the join cost).

It is a round method (:mod:`commlab.distributed.method`): ``round(loss)`` runs one round, calling
the loss oracle for every sample of every local active machine.

**Real processes.** :func:`run_on_ranks` runs the same method on N gloo processes
(:func:`commlab.comm.launch.run_workers`, one machine per rank, each with its own replica) and
returns every rank's parameter hash after every round, so bit-identity is checked between
processes that share nothing but the seed and the scalars, not between rows of one tensor.
:class:`commlab.problems.SoftmaxRegression` is a picklable loss oracle for those ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from commlab._checks import check_choice, check_int, check_positive, check_seed
from commlab.comm import Communicator, DistComm
from commlab.comm.hashing import state_hash
from commlab.comm.launch import run_workers
from commlab.comm.membership import Membership
from commlab.compress.base import Compressor
from commlab.compress.payload import Payload
from commlab.compress.quantize import LogByte
from commlab.distributed.method import Method, SyncEvent
from commlab.seeding import SeedTree

NORMALIZE = ("sqrt", "mean")


def perturbation(seed: int, step: int, machine: int, sample: int, d: int,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """z_{step,machine,sample} ~ N(0, I_d), shape ``[d]``: the same bits in every process for the same keys."""
    generator = SeedTree(seed).torch("spsa", step, machine, sample)
    return torch.randn(d, generator=generator, dtype=dtype)


def update_coefficients(p_hat: torch.Tensor, lr: float, normalize: str) -> list[float]:
    """c_j = lr·p̂_j/√n or lr·p̂_j/n for the round's decoded scalars ``p_hat`` ``[K, S]``, in canonical order."""
    n = p_hat.numel()
    scale = lr / math.sqrt(n) if normalize == "sqrt" else lr / n
    return [scale * float(p) for p in p_hat.reshape(-1).tolist()]


def apply_round(theta: torch.Tensor, step: int, machines, p_hat: torch.Tensor, *, seed: int, lr: float,
                normalize: str = "sqrt", cache: dict | None = None) -> None:
    """Apply one round's scalars in place: θ ← θ − c_j z_j for j in canonical order.

    Args:
        theta: ``[d]`` or ``[R, d]`` parameters; every row gets the same update.
        step: the round t.
        machines: the round's active machine ids, ascending (row i of ``p_hat`` is machine ``machines[i]``).
        p_hat: ``[K, S]`` decoded scalars.
        seed, lr, normalize: as in :class:`SharedSeedSPSA`.
        cache: optional ``{(machine, sample): z}`` of perturbations already generated this round.
    """
    S = p_hat.shape[1]
    d = theta.shape[-1]
    coefficients = iter(update_coefficients(p_hat, lr, normalize))
    for machine in machines:
        for sample in range(S):
            z = cache.get((machine, sample)) if cache else None
            if z is None:
                z = perturbation(seed, step, machine, sample, d, theta.dtype)
            theta.sub_(z * next(coefficients))  # two exactly rounded operations: no fused multiply-add


def replay(theta0: torch.Tensor, log, *, seed: int, lr: float, normalize: str = "sqrt") -> torch.Tensor:
    """θ after the rounds of ``log`` (entries with ``.step``, ``.active``, ``.p_hat``, as in
    :attr:`SharedSeedSPSA.log`), rebuilt from θ_0 ``[d]`` and the scalars alone (joins change nothing:
    a joiner copies the same θ)."""
    theta = theta0.detach().clone()
    for entry in log:
        apply_round(theta, entry.step, entry.active, entry.p_hat, seed=seed, lr=lr, normalize=normalize)
    return theta


@dataclass(frozen=True)
class LogEntry:
    """The scalars of one round: what a machine needs to replay it."""

    step: int
    active: tuple[int, ...]
    p_hat: torch.Tensor  # [K, S] float64, rows in `active` order


LossFn = Callable[[torch.Tensor, int, int], torch.Tensor]


class SharedSeedSPSA(Method):
    """Seeded SPSA with shared randomness over a communicator (one byte per projected gradient).

    Args:
        comm: the communicator; machine m is its worker m.
        params: ``[L, d]`` floating, finite parameters of the local machines (row l is worker
            ``comm.ranks[l]``), all rows the same, changed in place.
        lr: learning rate, > 0.
        eps: perturbation size ε, > 0.
        samples: S, scalars per machine per round, >= 1.
        scalars: the :class:`~commlab.compress.Compressor` the scalars cross the wire with; they enter it
            as float32 and every machine applies the float32 values it decodes. Default
            :class:`~commlab.compress.LogByte` (8 bits each); ``Identity()`` sends fp32 (32 bits each).
            Must give a fixed-size payload.
        seed: the shared seed of the perturbations (non-negative integer).
        membership: the churn schedule; default every worker of ``comm`` in every round.
        normalize: ``"sqrt"`` (lr/√n per scalar) or ``"mean"`` (lr/n).

    The oracle of :meth:`round` is ``loss(params, machine, step) -> [S, 2]``: ``params`` is ``[S, 2, d]``
    with ``params[s, 0] = θ + εz_s`` and ``params[s, 1] = θ − εz_s``; both rows of sample s are
    evaluated on the same minibatch, which the function draws from ``machine``'s own data for
    ``(step, s)`` (seeded, so a restored run draws the same batches).

    Attributes:
        steps: rounds done.
        log: one :class:`LogEntry` per round done (for :func:`replay`).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, lr: float = 0.1, eps: float = 1e-3,
                 samples: int = 8, scalars: Compressor | None = None, seed: int = 0,
                 membership: Membership | None = None, normalize: str = "sqrt"):
        super().__init__(comm, params)
        if params.numel() == 0:
            raise ValueError("params must be non-empty")
        scalars = LogByte() if scalars is None else scalars
        if not isinstance(scalars, Compressor):
            raise TypeError(f"scalars must be a commlab Compressor, got {type(scalars).__name__}")
        membership = Membership.static(comm.world_size) if membership is None else membership
        if not isinstance(membership, Membership):
            raise TypeError(f"membership must be a Membership or None, got {type(membership).__name__}")
        if max(membership.machines()) >= comm.world_size:
            raise ValueError(f"membership names machine {max(membership.machines())} but the communicator has "
                             f"only workers 0..{comm.world_size - 1}")
        self.lr = check_positive("lr", lr)
        self.eps = check_positive("eps", eps)
        self.samples = check_int("samples", samples, low=1)
        self.seed = check_seed(seed)
        comm.check_same("SPSA seed", self.seed)  # every machine must draw the same perturbations
        self.normalize = check_choice("normalize", normalize, NORMALIZE)
        self.scalars, self.membership = scalars, membership
        self.log: list[LogEntry] = []
        self._machines = comm.ranks.tolist()
        template = scalars.compress(torch.zeros(self.samples), self._scalar_generator(0, 0))
        self._header, self._nbytes = template.header, len(template.to_bytes())

    def round(self, loss: LossFn) -> list[SyncEvent]:
        """One round: joins, local projected gradients from ``loss``, the scalar exchange, the update.

        Returns the round's events: a ``"join"`` event when machines joined (θ handed to them), then the
        ``"sync"`` event, whose ``info`` holds ``active`` (machines that took part, ascending),
        ``joined``, ``p`` (``[L, S]`` float64 projected gradients of the local machines, NaN for
        inactive ones), ``p_hat`` (``[K, S]`` float64 decoded scalars every machine applied, rows in
        ``active`` order), ``bytes_sent`` (``[L]`` bytes of scalars each local machine sent) and
        ``join_bytes`` (``[L]`` bytes each local machine sent to hand θ to joiners).
        """
        if not callable(loss):
            raise TypeError(f"loss must be callable as loss(params [S, 2, d], machine, step), "
                            f"got {type(loss).__name__}")
        t, comm, S = self.steps, self.comm, self.samples
        before = len(self.events)
        active = self.membership.active(t)
        joined = self.membership.joining(t)
        join_bytes = torch.zeros(comm.local_workers, dtype=torch.float64)
        if joined:
            join_bytes = self._metered(lambda: self._logged("join", lambda: self._hand_over(t, joined),
                                                            info={"joined": joined}))
        rows = [row for row, m in enumerate(self._machines) if m in active]
        p = torch.full((comm.local_workers, S), math.nan, dtype=torch.float64)
        cache = {}
        for row in rows:
            p[row] = self._projected_gradients(loss, row, t, cache)
        decoded = []
        sent = self._metered(lambda: self._logged("sync", lambda: decoded.extend(self._exchange(t, m, p)
                                                                                for m in active)))
        p_hat = torch.stack(decoded)
        if rows:
            target = self.params if len(rows) == comm.local_workers else self.params[rows]
            apply_round(target, t, active, p_hat, seed=self.seed, lr=self.lr, normalize=self.normalize, cache=cache)
            if target is not self.params:
                self.params[rows] = target
        self.log.append(LogEntry(t, active, p_hat))
        self.events[-1].info.update(active=active, joined=joined, p=p, p_hat=p_hat, bytes_sent=sent,
                                    join_bytes=join_bytes)
        self.steps += 1
        return self.events[before:]

    def hashes(self) -> dict[int, str]:
        """:func:`state_hash` of the replica of each local machine active in the last round done (or round 0)."""
        active = self.membership.active(max(self.steps - 1, 0))
        return {m: state_hash(self.params[row]) for row, m in enumerate(self._machines) if m in active}

    def max_gap(self) -> float:
        """max |θ_a − θ_b| over the local replicas of the machines active in the last round done."""
        active = self.membership.active(max(self.steps - 1, 0))
        rows = [row for row, m in enumerate(self._machines) if m in active]
        if not rows:
            return 0.0
        replicas = self.params[rows]
        return float((replicas - replicas[0]).abs().max())

    def _state(self) -> dict:
        return {"log": [(e.step, e.active, e.p_hat.clone()) for e in self.log]}

    def _load(self, state: dict) -> None:
        self.log = [LogEntry(step, tuple(active), p_hat.clone()) for step, active, p_hat in state["log"]]

    # -- the pieces of a round -------------------------------------------------------------------

    def _projected_gradients(self, loss: LossFn, row: int, t: int, cache: dict) -> torch.Tensor:
        """p_{t,m,s} for s < S on local row ``row`` (machine m); fills ``cache`` with the z's."""
        m, S = self._machines[row], self.samples
        Z = torch.stack([perturbation(self.seed, t, m, s, self.d, self.params.dtype) for s in range(S)])
        cache.update({(m, s): Z[s] for s in range(S)})
        step = Z * self.eps
        params = torch.stack([self.params[row] + step, self.params[row] - step], dim=1)
        losses = loss(params, m, t)
        if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (S, 2):
            raise ValueError(f"loss must return a tensor of shape [{S}, 2] (samples, +/-), got {_describe(losses)} "
                             f"for machine {m} at round {t}")
        if not torch.isfinite(losses).all():
            raise ValueError(f"loss returned NaN or Inf for machine {m} at round {t}")
        losses = losses.detach().to(torch.float64)
        return (losses[:, 0] - losses[:, 1]) / (2 * self.eps)

    def _exchange(self, t: int, machine: int, p: torch.Tensor) -> torch.Tensor:
        """Broadcast ``machine``'s packed scalars from it to all; every machine decodes the same bytes."""
        wire = torch.zeros(self.comm.local_workers, self._nbytes, dtype=torch.uint8)
        if machine in self._machines:
            row = self._machines.index(machine)
            payload = self.scalars.compress(p[row].to(torch.float32), self._scalar_generator(t, machine))
            packed = Payload.pack_rows([payload])
            if packed.shape[1] != self._nbytes:
                raise ValueError(f"{self.scalars!r} gave {packed.shape[1]} bytes instead of {self._nbytes}: "
                                 "the scalars compressor must have a fixed-size payload")
            wire[row] = packed[0]
        received = self.comm.broadcast(wire.to(self.comm.device), src=machine).wait()
        (payload,) = Payload.unpack_rows(received[:1], self._header)
        return self.scalars.decompress(payload).to(torch.float64)

    def _hand_over(self, t: int, joined: tuple[int, ...]) -> None:
        """Joiners copy θ from the round's source peer (one broadcast of the full parameters)."""
        source = self.membership.source(t)
        theta = self.comm.broadcast(self.params.detach().to(self.comm.device), src=source).wait().cpu()
        for row, m in enumerate(self._machines):
            if m in joined:
                self.params[row] = theta[row]

    def _metered(self, action) -> torch.Tensor:
        before = self.comm.meter.bytes_sent.clone()
        action()
        return self.comm.meter.bytes_sent - before

    def _scalar_generator(self, t: int, machine: int) -> torch.Generator | None:
        return SeedTree(self.seed).torch("scalars", t, machine) if self.scalars.random else None

    def __repr__(self) -> str:
        return (f"SharedSeedSPSA(d={self.d}, lr={self.lr}, eps={self.eps}, samples={self.samples}, "
                f"scalars={self.scalars!r}, seed={self.seed}, membership={self.membership!r}, "
                f"normalize={self.normalize!r})")


@dataclass(frozen=True)
class RankTrace:
    """What one rank of :func:`run_on_ranks` reports.

    Attributes:
        rank: the rank (machine id).
        hashes: :func:`~commlab.comm.hashing.state_hash` of its replica after every round.
        theta: its final parameters ``[d]``.
        bytes_sent: what its communicator's meter charged it in all.
    """

    rank: int
    hashes: tuple[str, ...]
    theta: torch.Tensor
    bytes_sent: float


def run_on_ranks(world_size: int, loss: LossFn, theta0: torch.Tensor, rounds: int, *, timeout: float = 120.0,
                 **settings) -> list[RankTrace]:
    """``rounds`` rounds of :class:`SharedSeedSPSA` on ``world_size`` gloo processes, one machine per rank.

    Every rank starts from ``theta0`` ``[d]``, builds ``SharedSeedSPSA(DistComm(), theta0[None], **settings)``
    and hashes its replica after every round. ``loss`` must be picklable (a module-level function or,
    e.g., a :class:`commlab.problems.SoftmaxRegression`). Raises ``RuntimeError`` naming the rank and its
    error when a rank does not finish.
    """
    world_size = check_int("world_size", world_size, low=1)
    rounds = check_int("rounds", rounds, low=0)
    if not isinstance(theta0, torch.Tensor) or theta0.dim() != 1:
        raise ValueError(f"theta0 must be a tensor [d], got {_describe(theta0)}")
    results = run_workers(_rank_trace, world_size, args=(loss, theta0.detach().clone(), rounds, settings),
                          timeout=timeout)
    failed = [r for r in results if r.status != "ok"]
    if failed:
        r = failed[0]
        raise RuntimeError(f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback or ''}")
    return [r.value for r in results]


def _rank_trace(rank: int, world_size: int, loss: LossFn, theta0: torch.Tensor, rounds: int,
                settings: dict) -> RankTrace:
    comm = DistComm()
    algo = SharedSeedSPSA(comm, theta0[None].clone(), **settings)
    hashes = []
    for _ in range(rounds):
        algo.round(loss)
        hashes.append(state_hash(algo.params[0]))
    return RankTrace(rank, tuple(hashes), algo.params[0].clone(), float(comm.meter.bytes_sent.sum()))


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
