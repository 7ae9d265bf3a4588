"""DiLoCo under churn on real torchft replicas: the replica function, its record, and the hash check.

The PCCL notebook's experiment (briefs/systems/pccl_fault_tolerant_collectives.md) on real processes:
:func:`churn_replica` is the function :func:`~commlab.comm.ft_launch.run_replicas` runs in every replica
process. It trains a :class:`~commlab.models.stacked.StackedMLP` (one replica, L = 1) on its IID shard
of digits with Adam inner steps, under an outer method built by name (``"diloco"``; ``"async_diloco"``,
PCCL's one-step-delayed DiLoCo; or ``"streaming_diloco"`` with one fragment and a uint8 min–max
quantiser: DiLoCo whose outer gradient crosses the wire as bytes), wrapped in
:class:`~commlab.comm.ft.FaultTolerant` (commit or roll back each outer step, heal a joiner from a peer,
or, with ``join="naive"``, let it keep its own state: the brief's arm (b))::

    cfg = ChurnConfig(outer_steps=30, faults=Faults([Fault(3, at=100)]), joiners=(4,), final=4)
    results = run_replicas(churn_replica, 5, args=(data, cfg), restarts={4: 1}, restart_delay=3.0, ...)
    table = revision_hashes(read_records(cfg.log_dir, 5))  # {revision: {replica: hash}}, all attempts
    mismatches(table)                                       # revisions where live replicas disagree

Churn: ``cfg.faults`` kill (or stall) replicas before given inner steps of their first attempt; a
replica in ``cfg.joiners`` is absent at the start (its first attempt exits before its first quorum) and
joins when the launcher starts it again, ``restart_delay`` later; either is healed at the quorum it
joins. A run stops at the first quorum with a committed revision >= ``outer_steps`` that follows another
quorum, both with ``final`` participants (the same quorum for every replica in it; stopping at the
quorum a joiner is healed at would take its source away while the state is in transit).

The **shared state** of a revision (the Manager's committed step r) is the outer parameters θ_g, the
outer optimiser's momentum and r itself (for async DiLoCo also the start of the round in flight and the
mean in flight, which a joiner must receive too); every replica records ``state_hash`` of its exact bytes
and the test loss of its θ_g after every quorum (so a healed joiner records the revision it received).
:class:`ShuffledSumFTComm` is the counter-example of the brief's arm (c): the same mean, but every
replica adds the N contributions in its own random order, so float32 rounding differs from replica to replica.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive
from commlab.comm.faults import Faults
from commlab.comm.ft import FaultTolerant, FTComm
from commlab.comm.hashing import state_hash
from commlab.comm.link import Link
from commlab.compress.quantize import Uniform
from commlab.data.batches import batch_indices
from commlab.distributed import make_method
from commlab.distributed.outer import AsyncDiLoCo, OuterSGD
from commlab.models.stacked import StackedMLP
from commlab.seeding import SeedTree

ALGOS = ("diloco", "uint8_diloco", "async_diloco")
REDUCTIONS = ("ring", "shuffled")
JOINS = ("heal", "naive")


class ShuffledSumFTComm(FTComm):
    """An :class:`FTComm` whose all-reduce adds the N rows in an order of each replica's own.

    ``all_reduce(x, op)`` gathers the N live rows ``[N, d]`` (the quorum's all-gather) and computes
    Σ_j x_{π(j)} (op ``"sum"``) or that sum / N (``"mean"``) sequentially in float32, with π a random
    permutation drawn from ``SeedTree(seed).torch("shuffled-sum", replica, call)``: the exact sum of every
    order, rounded differently (the brief's non-deterministic reduction). The meter counts what
    :meth:`FTComm.all_reduce` counts (d values per replica).

    Args:
        manager: as for :class:`FTComm`.
        replica: this replica's id (its draws differ from every other replica's).
        seed: root of the permutations.
    """

    def __init__(self, manager, *, replica: int, seed: int = 0, link=None):
        super().__init__(manager, link=link)
        replica = check_int("replica", replica, low=0)
        self.seeds = SeedTree(check_int("seed", seed, low=0)).child("shuffled-sum", replica)
        self.calls = 0

    def _reduce(self, x, op):
        rows = self._gather(x)  # [N, ...] in quorum-rank order
        order = torch.randperm(len(rows), generator=self.seeds.torch(self.calls))
        self.calls += 1
        total = rows[order[0]].clone()
        for j in order[1:]:
            total += rows[j]
        return total / len(rows) if op == "mean" else total


@dataclass(frozen=True)
class ChurnConfig:
    """One run of :func:`churn_replica` (the same in every replica).

    Attributes:
        seed: root of the split, shards, minibatches, initialisation and quantiser draws.
        outer_steps: committed revisions to reach before stopping.
        final: participants the last two quorums must have (the membership at the end of the schedule).
        sync_every: H, inner Adam steps per outer step.
        hidden: hidden width of the MLP 64-hidden-10.
        batch_size: images per replica and inner step.
        lr: inner Adam learning rate; ``outer_lr``, ``momentum``: the outer Nesterov's η and μ.
        algo: ``"diloco"`` (fp32 all-reduce of Δ), ``"async_diloco"`` (:class:`AsyncDiLoCo`: the same
            all-reduce, applied one round late) or ``"uint8_diloco"`` (Δ as uint8 min–max codes per
            ``block`` values plus a float32 min and max per block, all-gathered, averaged in rank order);
        block: values per quantisation block, None for one block of all d values (PCCL's per-tensor
            min–max).
        reduction: ``"ring"`` (the Manager's gloo all-reduce) or ``"shuffled"`` (:class:`ShuffledSumFTComm`).
        join: ``"heal"`` (a replica behind the others loads a peer's committed state) or ``"naive"`` (it
            keeps its own: its initialisation after a restart; the brief's arm (b)).
        faults: kills and stalls (inner steps of a replica's first attempt).
        joiners: replicas absent at the start (their first attempt exits before its first quorum).
        shards: the number of IID shards of the training set (>= the number of replicas).
        seconds_per_step: wall-clock pause per inner step (s), so that churn lands mid-run.
        link: a :class:`Link` for a simulated clock beside the real run (each replica's ``clock`` in its
            result), or None; ``step_seconds``: simulated computation per inner step on that clock (s).
        deadline: s after which a replica gives up (raises TimeoutError).
        log_dir: a folder where every replica appends each record as a JSON line to
            ``replica_<r>.jsonl`` as it is made (so a killed attempt's records survive it), or None.
    """

    seed: int = 0
    outer_steps: int = 30
    final: int = 4
    sync_every: int = 20
    hidden: int = 64
    batch_size: int = 32
    lr: float = 1e-3
    outer_lr: float = 0.7
    momentum: float = 0.9
    algo: str = "diloco"
    block: int | None = None
    reduction: str = "ring"
    join: str = "heal"
    faults: Faults = field(default_factory=Faults)
    joiners: tuple[int, ...] = ()
    shards: int = 5
    seconds_per_step: float = 0.0
    link: Link | None = None
    step_seconds: float = 0.0
    deadline: float = 60.0
    log_dir: str | None = None

    def __post_init__(self):
        check_int("seed", self.seed, low=0)
        for name in ("outer_steps", "final", "sync_every", "hidden", "batch_size", "shards"):
            check_int(name, getattr(self, name), low=1)
        if self.block is not None:
            check_int("block", self.block, low=1)
        for name in ("lr", "outer_lr", "deadline"):
            check_positive(name, getattr(self, name))
        check_nonnegative("momentum", self.momentum)
        check_nonnegative("seconds_per_step", self.seconds_per_step)
        check_nonnegative("step_seconds", self.step_seconds)
        check_choice("algo", self.algo, ALGOS)
        check_choice("reduction", self.reduction, REDUCTIONS)
        check_choice("join", self.join, JOINS)
        if self.link is not None and not isinstance(self.link, Link):
            raise TypeError(f"link must be a commlab.comm.Link or None, got {type(self.link).__name__}")
        if not isinstance(self.faults, Faults):
            raise TypeError(f"faults must be a commlab.comm.Faults, got {type(self.faults).__name__}")
        if self.algo == "uint8_diloco" and self.reduction != "ring":
            raise ValueError("uint8_diloco averages the gathered codes itself; use reduction='ring'")
        for j in self.joiners:
            check_int("joiner", j, low=0, high=self.shards - 1)


def digits_data(seed: int) -> dict:
    """The train and test splits of digits as flat float32 tensors (``{"train": (x [n, 64], y [n]), "test": ...}``),
    loaded once in the launching process and passed to every replica."""
    from commlab.data import digits

    out = {}
    for split in ("train", "test"):
        x, y = digits(split, seed=seed)
        out[split] = (x.reshape(len(x), -1), y)
    return out


@contextmanager
def stderr_to(path: str | Path) -> Iterator[None]:
    """Send this process's file descriptor 2 (and so the torchft Lighthouse's, and every process started
    meanwhile, their logs) to the file ``path`` (appended), and restore it on exit."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def build_outer(cfg: ChurnConfig, comm, model: StackedMLP):
    """The outer method of ``cfg`` by its registered name, on ``model.flat``, built for FaultTolerant."""
    hyper = {"sync_every": cfg.sync_every, "sync_init": False, "outer": OuterSGD(cfg.outer_lr, cfg.momentum),
             "inner": lambda p: torch.optim.Adam([p], lr=cfg.lr), "step_seconds": cfg.step_seconds}
    if cfg.algo in ("diloco", "async_diloco"):
        return make_method(cfg.algo, comm, model.flat, **hyper)
    # DiLoCo with a uint8 outer gradient: Streaming DiLoCo with one fragment, no overlap, no mixing
    return make_method("streaming_diloco", comm, model.flat, fragments=1, overlap_steps=0, mixing=0.0,
                       compressor=Uniform(8), block=cfg.block or model.d, layers=model.layer_slices, seed=cfg.seed,
                       **hyper)


def shared_state(method) -> tuple[torch.Tensor, ...]:
    """``(θ_g [d], outer momentum [d])`` of a DiLoCo or one-fragment Streaming DiLoCo (momentum zeros
    before the first outer step, as the optimiser then behaves); for an :class:`AsyncDiLoCo` also the
    outer parameters the round in flight started from and the mean in flight [d] (zeros before the first)."""
    outer = method.outer if hasattr(method, "outer") else method.outers[0]
    theta, buffer = method.outer_params, outer.state_dict()["buffer"]
    state = (theta, torch.zeros_like(theta) if buffer is None else buffer)
    if isinstance(method, AsyncDiLoCo):
        saved = method.state_dict()
        pending = saved["pending"]
        state += (saved["anchor_prev"], torch.zeros_like(theta) if pending is None else pending["result"].reshape(-1))
    return state


def revision_hash(method, revision: int) -> str:
    """``state_hash`` of the shared state's exact bytes (:func:`shared_state`) and the revision r."""
    counter = torch.tensor([revision], dtype=torch.int64).view(torch.float32)  # r's 8 bytes, as two floats
    return state_hash(torch.cat([*shared_state(method), counter]))


def churn_replica(comm: FTComm, replica: int, attempt: int, data: dict, cfg: ChurnConfig) -> dict:
    """One replica of a churn run (module level, for :func:`~commlab.comm.ft_launch.run_replicas`).

    Returns a dict: ``records`` (one per quorum: ``revision`` (the Manager's committed step),
    ``participants``, ``hash`` (:func:`revision_hash`), ``test_loss`` (mean test cross-entropy of this
    replica's θ_g, nats), ``time`` (s since the epoch)), ``test_loss`` (``{revision: that loss}``, replica 0
    only, else empty), ``heals`` and ``ignored_heals`` (checkpoints loaded, and kept out by a naive join),
    ``heal_seconds`` and ``heal_bytes`` (each checkpoint this replica received: the transfer's wall time
    and its size serialised by ``torch.save``), ``commits``, ``rollbacks``, ``bytes_sent`` (this replica's
    meter), ``clock`` (its simulated clock, s; 0 without ``cfg.link``), ``attempt``, ``cpu_seconds``
    (this process's CPU time).
    """
    if replica in cfg.joiners and attempt == 0:
        raise SystemExit(1)  # absent at the start: the launcher starts it again later
    cpu0, began = time.process_time(), time.perf_counter()
    if cfg.reduction == "shuffled":
        comm = ShuffledSumFTComm(comm.manager, replica=replica, seed=cfg.seed, link=cfg.link)
    elif cfg.link is not None:
        comm = FTComm(comm.manager, link=cfg.link)
    heal_seconds, heal_bytes = [], []
    transport = comm.manager._checkpoint_transport
    receive = transport.recv_checkpoint

    def timed_receive(*args, **kwargs):  # what the joiner is sent, and how long the transfer takes
        start = time.perf_counter()
        state = receive(*args, **kwargs)
        heal_seconds.append(time.perf_counter() - start)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        heal_bytes.append(buffer.tell())
        return state

    transport.recv_checkpoint = timed_receive
    train_x, train_y = data["train"]
    test_x, test_y = data["test"]
    from commlab.data import iid

    shard = iid(len(train_x), cfg.shards, seed=cfg.seed)[replica]
    model = StackedMLP((train_x.shape[1], cfg.hidden, 10), replicas=1, generator=SeedTree(cfg.seed).torch("init"))
    method = build_outer(cfg, comm, model)
    run = FaultTolerant(method, comm, heal=cfg.join == "heal")
    records, test_loss = [], {}

    def record() -> bool:
        revision = comm.manager.current_step()
        loss = float(model.evaluate(test_x, test_y, flat=method.outer_params)[0][0])
        records.append({"revision": revision, "participants": comm.world_size, "attempt": attempt,
                        "hash": revision_hash(method, revision), "test_loss": loss, "time": time.time()})
        if cfg.log_dir is not None:
            with open(f"{cfg.log_dir}/replica_{replica}.jsonl", "a") as log:
                log.write(json.dumps(records[-1]) + "\n")
        if replica == 0 and revision not in test_loss:
            test_loss[revision] = loss
        # stop after two quorums in a row with every replica: a replica healed at the first of them has then
        # received its state (its source stays until the next quorum) and taken an outer step with the others
        last = records[-2:]
        return revision >= cfg.outer_steps and len(last) == 2 and all(r["participants"] == cfg.final for r in last)

    done = record()
    while not done:
        cfg.faults.inject(replica, method.steps, attempt)
        if time.perf_counter() - began > cfg.deadline:
            raise TimeoutError(f"replica {replica}: no stop after {cfg.deadline} s; quorums {comm.history}")
        if cfg.seconds_per_step:
            time.sleep(cfg.seconds_per_step)
        idx = batch_indices(shard, method.steps, cfg.batch_size, seed=cfg.seed, worker=replica)
        _, grad = model.loss_and_grad(train_x[idx].unsqueeze(0), train_y[idx].unsqueeze(0))
        quorums = comm.quorums
        run.step(grad)
        if comm.quorums != quorums:  # an outer step, committed or rolled back (with the meter), then a quorum
            done = record()
    return {"records": records, "test_loss": test_loss, "heals": run.heals, "ignored_heals": run.ignored_heals,
            "heal_seconds": heal_seconds, "heal_bytes": heal_bytes, "commits": run.commits, "rollbacks": run.rollbacks,
            "bytes_sent": float(comm.meter.bytes_sent.sum()), "syncs": comm.meter.syncs, "clock": comm.clock,
            "attempt": attempt, "steps": method.steps, "cpu_seconds": time.process_time() - cpu0}


def read_records(log_dir: str, replicas: int) -> list[list[dict]]:
    """Every replica's records from ``log_dir`` (all its attempts, in order; [] for a silent replica)."""
    out = []
    for r in range(check_int("replicas", replicas, low=1)):
        path = Path(log_dir) / f"replica_{r}.jsonl"
        out.append([json.loads(line) for line in path.read_text().splitlines()] if path.exists() else [])
    return out


def revision_hashes(records: list[list[dict]]) -> dict[int, dict[int, str]]:
    """``{revision: {replica: hash}}`` from each replica's records (:func:`read_records`, or the
    ``records`` of its result): each replica's last record of each revision (a rolled-back step
    re-records the same revision)."""
    table: dict[int, dict[int, str]] = {}
    for replica, recs in enumerate(records):
        for rec in recs:
            table.setdefault(int(rec["revision"]), {})[replica] = rec["hash"]
    return dict(sorted(table.items()))


def mismatches(table: dict[int, dict[int, str]]) -> list[int]:
    """The revisions at which the replicas that recorded them hold more than one distinct hash."""
    return [r for r, hashes in table.items() if len(set(hashes.values())) > 1]


__all__ = ["ALGOS", "JOINS", "REDUCTIONS", "ChurnConfig", "ShuffledSumFTComm", "build_outer", "churn_replica",
           "digits_data", "mismatches", "read_records", "revision_hash", "revision_hashes", "shared_state", "stderr_to"]
