"""Elastic data parallelism that keeps the computation of a step unchanged when ranks are lost
(ElasWave, arXiv 2510.00606: micro-batches re-sliced over the survivors without changing the global
batch or the gradient scaling; the RNG resharded).

**A step.** The step's sampler draws a global batch of G samples, positions i = 0, …, G − 1, cut into
M = G/m micro-batches of m samples: micro-batch j holds positions jm, …, (j + 1)m − 1. The gradient is

    g = (1/G) Σ_{j=0}^{M−1} g_j,      g_j = ∇_θ Σ_{i ∈ micro-batch j} ℓ_i(θ; ξ_i),

with ξ_i the sample's randomness (its dropout mask). A :class:`SlicingPlan` says which micro-batches
each of W ranks computes and which random stream each sample draws:

* ``policy="elastic"`` (ElasWave): whatever W, the same G samples; rank k takes the contiguous block of
  micro-batches [k·q + min(k, r), (k + 1)·q + min(k + 1, r)), q = ⌊M/W⌋, r = M mod W (the first r
  ranks take one more), and the scale stays 1/G;
* ``policy="naive"`` (shrink the world, as a static launcher would): every rank keeps the per-rank
  batch b₀ = G/W₀ of the starting world W₀, so W ranks compute positions [0, W·b₀), rank k the
  positions [k·b₀, (k + 1)·b₀), and the gradient is their mean, scale 1/(W·b₀);
* ``rng="sample"``: the sample at position i draws stream i, whoever computes it (the RNG resharded);
  ``rng="rank"``: the p-th sample a rank k computes draws stream k·b₀ + p, a per-rank generator's p-th
  draw. In the starting world both give every sample the same stream.

**Reductions.** ``reduction="canonical"``: each rank writes its g_j into row j of a zero ``[M, d]``
buffer, one all-reduce (sum) gives every rank every row exactly (each entry has one non-zero term, and
x + 0 = x in floating point), and every rank adds the rows in the order j = 0, 1, …, M − 1, one add at
a time: the bits of g do not depend on W or on the all-reduce's algorithm (M·d values per rank on the
wire instead of d). ``reduction="local"``: each rank adds its own g_j, one all-reduce adds the ranks:
d values per rank, and g changes with W in its last bits (floating-point reassociation).

**Losing a rank** (:func:`elastic_worker`, real processes). A failed collective raises
:class:`~commlab.comm.communicator.CommunicationError` (a peer's closed socket, or the collective
timeout). The survivors then agree on who is left through the process group's store: each writes a
key for the failed round, waits at most ``grace`` seconds (more than the collective timeout) for the
other members' keys, and counts the missing ones dead; after a bounded barrier they build a process
group of the survivors (``new_group`` with local synchronisation, so the dead rank is not waited for),
check that they agree (one hash), and redo the step that failed from the parameters before it (the
step was never applied: an in-memory snapshot of one step). Every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.nn.functional as F

from commlab._checks import check_choice, check_int, check_positive, check_probability
from commlab.comm.communicator import CommunicationError, Communicator, DistComm, SimComm
from commlab.comm.faults import Faults
from commlab.comm.hashing import state_hash
from commlab.comm.membership import Membership
from commlab.models.stacked import StackedMLP
from commlab.seeding import SeedTree

POLICIES = ("elastic", "naive")
RNGS = ("sample", "rank")
REDUCTIONS = ("canonical", "local")


@dataclass(frozen=True)
class SlicingPlan:
    """Which micro-batches each rank computes and which random stream each sample draws.

    Args:
        global_batch: G, samples per step in the starting world.
        micro_batch: m, samples per micro-batch (divides G and the per-rank batch b₀ = G/W₀).
        world_size: W₀, the ranks the run starts with (divides G).
        policy: ``"elastic"`` (keep G, re-slice the micro-batches) or ``"naive"`` (keep b₀ per rank).
        rng: ``"sample"`` (stream = position in the global batch) or ``"rank"`` (stream = k·b₀ + p).
    """

    global_batch: int
    micro_batch: int
    world_size: int
    policy: str = "elastic"
    rng: str = "sample"

    def __post_init__(self):
        G = check_int("global_batch", self.global_batch, low=1)
        m = check_int("micro_batch", self.micro_batch, low=1)
        W0 = check_int("world_size", self.world_size, low=1)
        check_choice("policy", self.policy, POLICIES)
        check_choice("rng", self.rng, RNGS)
        if G % W0 or (G // W0) % m:
            raise ValueError(f"global_batch = {G} must split into world_size = {W0} per-rank batches of whole "
                             f"micro-batches of {m} samples")

    @property
    def per_rank(self) -> int:
        """b₀ = G/W₀, the per-rank batch of the starting world."""
        return self.global_batch // self.world_size

    def samples(self, world_size: int) -> int:
        """Samples in one step on ``world_size`` ranks: G (elastic) or W·b₀ (naive)."""
        W = check_int("world_size", world_size, low=1)
        return self.global_batch if self.policy == "elastic" else W * self.per_rank

    def micro_batches(self, rank: int, world_size: int) -> range:
        """The global indices j of the micro-batches rank ``rank`` of ``world_size`` computes."""
        W = check_int("world_size", world_size, low=1)
        k = check_int("rank", rank, low=0, high=W - 1)
        M = self.samples(W) // self.micro_batch
        if self.policy == "naive":
            per = self.per_rank // self.micro_batch
            return range(k * per, (k + 1) * per)
        q, r = divmod(M, W)
        return range(k * q + min(k, r), (k + 1) * q + min(k + 1, r))

    def streams(self, rank: int, world_size: int) -> torch.Tensor:
        """int64 ``[n, m]``: the random stream of each sample of the rank's n micro-batches, in order."""
        blocks = self.micro_batches(rank, world_size)
        m = self.micro_batch
        positions = torch.arange(blocks.start * m, blocks.stop * m, dtype=torch.int64)
        if self.rng == "rank":
            positions = rank * self.per_rank + torch.arange(len(positions), dtype=torch.int64)
        return positions.view(len(blocks), m)


class DropoutMLPTask:
    """The notebook's toy: an MLP (the :class:`~commlab.models.stacked.StackedMLP` layout, one model)
    with dropout on its hidden layers, every sample's mask keyed by (step, stream), not by rank.

    Args:
        x: ``[n, ...]`` training inputs (features flatten to ``sizes[0]``); y: ``[n]`` int64 labels.
        sizes: layer widths ``(n₀, …, n_L)``.
        dropout: p in [0, 1), the probability that a hidden unit is dropped (kept ones scaled by 1/(1 − p)).
        seed: root of the :class:`~commlab.seeding.SeedTree`: initial parameters ``("init",)``, the step's
            global batch ``("batch", step)`` (the first G of a permutation of the n samples), the mask of
            stream s at step t ``("dropout", t, s)``.
        eval_x, eval_y: the set :meth:`loss` evaluates on (default: the training set).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, sizes, *, dropout: float, seed: int,
                 eval_x: torch.Tensor | None = None, eval_y: torch.Tensor | None = None):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or y.dim() != 1 or len(x) != len(y):
            raise ValueError("x must be a tensor [n, ...] and y a tensor [n] of as many labels")
        self.tree = SeedTree(seed)
        self.model = StackedMLP(tuple(sizes), 1, generator=self.tree.torch("init"))
        self.x, self.y = x.reshape(len(x), -1).float(), y
        if self.x.shape[1] != self.model.sizes[0]:
            raise ValueError(f"x has {self.x.shape[1]} features, sizes[0] = {self.model.sizes[0]}")
        self.eval_x = self.x if eval_x is None else eval_x.reshape(len(eval_x), -1).float()
        self.eval_y = self.y if eval_y is None else eval_y
        self.dropout = check_probability("dropout", dropout)
        if self.dropout >= 1:
            raise ValueError("dropout must be < 1")
        self.hidden = sum(self.model.sizes[1:-1])

    @property
    def d(self) -> int:
        return self.model.d

    def init_params(self) -> torch.Tensor:
        """float32 ``[d]``: the initial parameters."""
        return self.model.flat.detach()[0].clone()

    def batch(self, step: int, size: int) -> torch.Tensor:
        """int64 ``[size]``: dataset indices of positions 0, …, size − 1 of step ``step``'s global batch."""
        size = check_int("size", size, low=1, high=len(self.y))
        return torch.randperm(len(self.y), generator=self.tree.torch("batch", check_int("step", step, low=0)))[:size]

    def masks(self, step: int, streams: torch.Tensor) -> torch.Tensor:
        """float32 ``[len(streams), H]`` dropout masks (0 or 1/(1 − p)) of all H hidden units, one
        generator ``("dropout", step, s)`` per stream s."""
        rows = [torch.rand(self.hidden, generator=self.tree.torch("dropout", step, int(s))) for s in streams]
        keep = torch.stack(rows) >= self.dropout
        return keep.float() / (1 - self.dropout)

    def micro_gradient(self, flat: torch.Tensor, step: int, positions: torch.Tensor,
                       streams: torch.Tensor) -> torch.Tensor:
        """float32 ``[d]``: ∇ Σ_i ℓ_i of the samples at ``positions`` of the step's batch, with the masks
        of ``streams``."""
        idx = self.batch(step, int(positions.max()) + 1)[positions]
        flat = flat.detach().clone().requires_grad_(True)
        masks = self.masks(step, streams).split(list(self.model.sizes[1:-1]), dim=1)
        h = self.x[idx]
        layers = self.model.layers(flat.unsqueeze(0))
        for index, (W, b) in enumerate(layers):
            h = h @ W[0] + b[0]
            if index < len(layers) - 1:
                h = torch.relu(h) * masks[index]
        (grad,) = torch.autograd.grad(F.cross_entropy(h, self.y[idx], reduction="sum"), flat)
        return grad

    @torch.no_grad()
    def loss(self, flat: torch.Tensor) -> float:
        """Mean cross-entropy (nats) of ``flat`` ``[d]`` on the evaluation set, without dropout."""
        loss, _ = self.model.evaluate(self.eval_x, self.eval_y, flat=flat.unsqueeze(0))
        return float(loss[0])


def data_parallel_gradient(comm: Communicator, plan: SlicingPlan,
                           micro_gradient: Callable[[int, torch.Tensor], torch.Tensor], d: int, *,
                           reduction: str = "canonical") -> torch.Tensor:
    """One step's gradient g = (1/S) Σ_j g_j on every local worker of ``comm``, S = ``plan.samples(W)``.

    Args:
        comm: the communicator of the current world (W = ``comm.world_size``, ranks ``comm.ranks``).
        plan: the :class:`SlicingPlan`.
        micro_gradient: ``(j, streams [m]) -> [d]``, g_j of global micro-batch j with its samples' streams.
        d: parameters.
        reduction: ``"canonical"`` (bits independent of W) or ``"local"`` (see the module docstring).

    Returns:
        float32 ``[L, d]``, equal rows.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    d = check_int("d", d, low=1)
    W, L = comm.world_size, comm.local_workers
    S = plan.samples(W)
    M = S // plan.micro_batch
    rows = torch.zeros(L, M if reduction == "canonical" else 1, d)
    for local, rank in enumerate(comm.ranks.tolist()):
        blocks, streams = plan.micro_batches(rank, W), plan.streams(rank, W)
        for j, stream in zip(blocks, streams, strict=True):
            g = micro_gradient(j, stream)
            if reduction == "canonical":
                rows[local, j] = g
            else:
                rows[local, 0] += g  # this rank's micro-batches, j ascending
    everyone = comm.all_reduce(rows, op="sum").wait()  # canonical: x + 0 + … + 0 = x, exact
    total = everyone[:, 0].clone()
    for j in range(1, everyone.shape[1]):  # j = 1, …, M − 1, one add at a time: the canonical order
        total += everyone[:, j]
    return total / S  # the gradient scale 1/S: 1/G for the elastic policy whatever W


def _sgd_step(comm, plan, task, params, step, lr, reduction) -> None:
    """θ ← θ − γ g on every local row of ``params`` ``[L, d]`` (rows equal)."""
    flat = params[0]

    def micro(j, streams):
        m = plan.micro_batch
        return task.micro_gradient(flat, step, torch.arange(j * m, (j + 1) * m), streams)

    params -= lr * data_parallel_gradient(comm, plan, micro, task.d, reduction=reduction)


def train_simulated(task: DropoutMLPTask, plan: SlicingPlan, members: Membership, *, steps: int, lr: float,
                    reduction: str = "canonical") -> dict:
    """SGD on :class:`~commlab.comm.communicator.SimComm` over a churn schedule: in step t the ranks are
    ``members.active(t)`` (renumbered 0, …, W_t − 1 in id order), a joiner takes the current parameters.

    Returns:
        ``{"loss": [steps + 1] evaluation losses (before step 0 and after every step), "world": [steps]
        ranks per step, "bytes_per_rank": bytes one rank sent (mean over steps), "params": final [d]}``.
    """
    steps = check_int("steps", steps, low=0)
    lr = check_positive("lr", lr)
    params = task.init_params().unsqueeze(0)
    losses, worlds, sent = [task.loss(params[0])], [], []
    comms: dict[int, SimComm] = {}
    for step in range(steps):
        W = len(members.active(step))
        comm = comms.setdefault(W, SimComm(W))
        before = float(comm.meter.bytes_sent.mean())
        rows = params.expand(W, -1).clone()
        _sgd_step(comm, plan, task, rows, step, lr, reduction)
        params = rows[:1]
        sent.append(float(comm.meter.bytes_sent.mean()) - before)
        losses.append(task.loss(params[0]))
        worlds.append(W)
    return {"loss": losses, "world": worlds, "bytes_per_rank": sum(sent) / max(len(sent), 1),
            "params": params[0].clone()}


@dataclass(frozen=True)
class RealRun:
    """What :func:`elastic_worker` runs on each gloo rank (picklable).

    Attributes:
        x, y, eval_x, eval_y, sizes, dropout, seed: the :class:`DropoutMLPTask`.
        plan: the :class:`SlicingPlan` (its ``world_size`` is the launched world).
        steps, lr, reduction: the training run.
        faults: a :class:`~commlab.comm.faults.Faults` schedule (e.g. a rank's ``os._exit`` before a step).
        collective_timeout: seconds a collective may wait, on the survivors' groups; give
            :func:`~commlab.comm.launch.run_workers` the same for the launched world.
        grace: seconds a survivor waits for the other members after a failed collective; more than
            ``collective_timeout``, which bounds how much later than the first a live survivor notices.
        group_timeout: seconds the survivors wait for each other before they build their group.
    """

    x: torch.Tensor
    y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    sizes: tuple
    dropout: float
    seed: int
    plan: SlicingPlan
    steps: int
    lr: float
    reduction: str = "canonical"
    faults: Faults = Faults()
    collective_timeout: float = 30.0
    grace: float = 35.0
    group_timeout: float = 60.0

    def __post_init__(self):
        timeout = check_positive("collective_timeout", self.collective_timeout)
        if check_positive("grace", self.grace) <= timeout:
            raise ValueError(f"grace = {self.grace} s must exceed collective_timeout = {timeout} s, or a live "
                             "survivor still waiting in the failed collective would be counted dead")
        check_positive("group_timeout", self.group_timeout)

    def task(self) -> DropoutMLPTask:
        return DropoutMLPTask(self.x, self.y, self.sizes, dropout=self.dropout, seed=self.seed,
                              eval_x=self.eval_x, eval_y=self.eval_y)


def elastic_worker(rank: int, world_size: int, runs: Sequence[RealRun]) -> list[dict]:
    """One gloo rank of elastic runs, one after the other (for :func:`~commlab.comm.launch.run_workers`):
    SGD with :func:`data_parallel_gradient` on :class:`~commlab.comm.communicator.DistComm`; a rank whose
    fault is due dies; after a failed collective the survivors agree on who is left, form a new group
    and redo the step. Each run starts on the whole launched world.

    Returns:
        One dict per run: ``{"loss": evaluation losses as in :func:`train_simulated`, "world": ranks per step, "hash":
        :func:`~commlab.comm.hashing.state_hash` of the final parameters, "recoveries": [{"step",
        "survivors", "detect_s", "agree_s", "group_s"}] (seconds to notice the failure, to agree on the
        survivors, to build their group), "bytes_per_rank": bytes sent (mean over steps)}``.
    """
    if isinstance(runs, RealRun):
        raise TypeError("runs must be a sequence of RealRun (wrap a single run in a tuple)")
    return [_real_run(rank, world_size, run, index) for index, run in enumerate(runs)]


def _real_run(rank: int, world_size: int, run: RealRun, index: int) -> dict:
    import torch.distributed as dist

    if not isinstance(run, RealRun):
        raise TypeError(f"runs must hold RealRun objects, got {type(run).__name__}")
    if world_size != run.plan.world_size:
        raise ValueError(f"the plan is for {run.plan.world_size} ranks, the launcher started {world_size}")
    task = run.task()
    comm = DistComm()
    members = list(range(world_size))
    params = task.init_params().unsqueeze(0)
    losses, worlds, sent, recoveries = [task.loss(params[0])], [], [], []
    for step in range(run.steps):
        run.faults.inject(rank, step)
        while True:
            started, before = time.perf_counter(), float(comm.meter.bytes_sent[0])
            trial = params.clone()  # the step is applied only if its collective succeeds
            try:
                _sgd_step(comm, run.plan, task, trial, step, run.lr, run.reduction)
                break
            except CommunicationError:
                detected = time.perf_counter()
                members = _agree_on_survivors(dist, members, rank, f"{index}/{step}", run.grace,
                                              run.group_timeout)
                agreed = time.perf_counter()
                group = dist.new_group(members, timeout=timedelta(seconds=run.collective_timeout),
                                       use_local_synchronization=True)
                comm = DistComm(group)
                comm.check_same("survivor set", tuple(members))
                recoveries.append({"step": step, "survivors": tuple(members), "detect_s": detected - started,
                                   "agree_s": agreed - detected, "group_s": time.perf_counter() - agreed})
        params = trial
        sent.append(float(comm.meter.bytes_sent[0]) - before)
        worlds.append(comm.world_size)
        losses.append(task.loss(params[0]))
    return {"loss": losses, "world": worlds, "hash": state_hash(params[0]), "recoveries": recoveries,
            "bytes_per_rank": sum(sent) / max(len(sent), 1)}


def _agree_on_survivors(dist, members: list[int], rank: int, round_name: str, grace: float,
                        timeout: float) -> list[int]:
    """The members that reach the failed round within ``grace`` seconds: each survivor sets its key in
    the process group's store and polls the others' until its deadline (a bounded wait). Then a
    barrier of the survivors (at most ``timeout`` seconds), so that they build their group together."""
    store = dist.distributed_c10d._get_default_store()
    prefix = f"commlab/elastic/{round_name}/{','.join(map(str, members))}"
    seen = _wait_for_keys(store, f"{prefix}/alive", members, rank, grace)
    ready = _wait_for_keys(store, f"{prefix}/ready/{','.join(map(str, seen))}", seen, rank, timeout)
    if ready != seen:
        raise CommunicationError(f"rank {rank}: survivors {sorted(set(seen) - set(ready))} did not come to "
                                 f"build the new group within {timeout} s")
    return seen


def _wait_for_keys(store, prefix: str, ranks: list[int], rank: int, seconds: float) -> list[int]:
    """Set ``prefix/rank``; return the ranks whose key appears within ``seconds`` (sorted)."""
    store.set(f"{prefix}/{rank}", "1")
    deadline = time.perf_counter() + seconds
    seen = {rank}
    while len(seen) < len(ranks) and time.perf_counter() < deadline:
        seen |= {r for r in ranks if r not in seen and store.check([f"{prefix}/{r}"])}
        time.sleep(0.01)
    return sorted(seen)


def max_relative_deviation(losses, reference, *, start: int = 0) -> float:
    """max_{t >= start} |losses[t] − reference[t]| / |reference[t]| (the brief's consistency metric)."""
    a, b = torch.as_tensor(losses, dtype=torch.float64), torch.as_tensor(reference, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"losses and reference must be 1-D of equal length, got {tuple(a.shape)} and {tuple(b.shape)}")
    start = check_int("start", start, low=0, high=len(a) - 1)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()) or (b[start:] == 0).any():
        raise ValueError("losses must be finite and the reference non-zero")
    return float(((a[start:] - b[start:]).abs() / b[start:].abs()).max())


__all__ = ["DropoutMLPTask", "RealRun", "SlicingPlan", "data_parallel_gradient", "elastic_worker",
           "max_relative_deviation", "train_simulated"]
