"""Simulated data-parallel training over a :class:`~commlab.comm.communicator.SimComm`: DDP in one process.

N workers hold identical replicas of one model (DDP keeps them identical, so one set of parameters
stands for all of them). One synchronous step::

    for each worker i:  g_i = ∇ (1/B) Σ_{b ∈ batch_i} ℓ(f_θ(x_b), y_b)           (its own shard)
    G = [g_1; …; g_N]                                                  # [N, d], the flat gradients
    ĝ = gradient_round(comm, scheme, G, …)                             # one bucket: the whole model
    v ← μ v + ĝ,   θ ← θ − γ v                                          # torch.optim.SGD(momentum=μ)

With the ``"none"`` scheme ĝ = (1/N) Σ_i g_i, which for equal batch sizes is the gradient of the mean
loss over the concatenated batch: exactly one step of single-process training on N·B examples.

**The simulated clock.** Workers run in parallel and wait for each other at the collective, so a
step costs the slowest worker's computation plus the collective::

    t_step = max_i t_grad,i + t_sync + t_link

* ``t_grad,i``: measured time of worker i's forward, backward and flattening;
* ``t_sync``: measured time of the compressed round (compressing the N rows, packing and
  unpacking the bytes, decompressing, aggregating), writing ĝ back and the optimiser step. The
  simulator compresses all N rows where a real worker compresses only its own, so for the
  compressed schemes this counts (N − 1) extra compressions: conservative against compression;
* ``t_link``: what the communicator's :class:`~commlab.comm.link.Link` adds for the
  collective (α–β model; all-reduce for the dense scheme, two all-reduces for PowerSGD, all-gather
  of the packed payloads for the others).

Times are measured with ``timer``. By default, when torch runs on one thread (one single-threaded
process per worker, as in the real runs), that is :func:`time.thread_time`, the CPU seconds of the
calling thread: the time the work takes on a core of its own, which, unlike wall time, does not
include the time other processes hold the core. With more torch threads the work leaves the calling
thread, so the default falls back to wall time (:func:`time.perf_counter`). CPU time is not immune
to a busy machine either (shared caches, hyper-threads), so to compare schemes train them in
lockstep with :func:`fit_interleaved`. Evaluation is not part of training and does not move the clock.

Since :class:`~commlab.comm.link.Link` ``()`` (infinite bandwidth, no latency) adds nothing,
``compute_seconds`` in the history is exactly the clock the same run shows on an unlimited link;
the training itself does not depend on the link, so one run gives both.

Settings mirror :mod:`commlab.train.ddp` (the torchrun entry point) so that simulated
and real runs compare: the same minibatches (:func:`commlab.data.batches.batch_indices`, seeded
draws with replacement from each worker's shard), SGD (optionally with momentum) on the cross-entropy, dense
all-reduces for the first ``start_iter`` steps (the DDP hook waits for DDP's bucket rebuild) and the
hook's generator for randomised compressors (``SeedTree(seed).torch("ddp_hook", step, 0)``, shared
by all workers as for bucket 0). Build the data, shards and model with
:func:`~commlab.train.ddp.load_data`, :func:`~commlab.train.ddp.shards` and
:func:`~commlab.train.ddp.make_model` to get the very run that ``train`` makes on real
processes.

Example::

    comm = SimComm(2, link=Link(bandwidth=100e6))
    trainer = DataParallelTrainer(model, "topk", comm, images, labels, iid(len(labels), 2, seed=0),
                                  batch_size=32, lr=0.1, momentum=0.0, seed=0)
    history = trainer.fit(300, (test_images, test_labels), eval_every=25)
    history.time_to(0.75)                 # simulated seconds to 75 % test accuracy (inf if never)
    history.time_to(0.75, "compute")      # the same on an unlimited link
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_in, check_seed
from commlab.comm import SimComm
from commlab.data.batches import batch_indices
from commlab.distributed.schemes import Scheme, draws, gradient_round, gradient_scheme, is_scheme
from commlab.models.fit import accuracy
from commlab.seeding import SeedTree

CLOCKS = ("sim", "compute")


def time_to_accuracy(seconds: Sequence[float], accuracy: Sequence[float], target: float) -> float:
    """The first time at which ``accuracy`` reaches ``target``; ``math.inf`` if it never does.

    Args:
        seconds: ``[E]`` increasing times of the evaluations (simulated or wall seconds).
        accuracy: ``[E]`` test accuracy at those times, in [0, 1].
        target: the accuracy to reach, in [0, 1].
    """
    seconds, accuracy = np.asarray(seconds, dtype=float), np.asarray(accuracy, dtype=float)
    if seconds.shape != accuracy.shape or seconds.ndim != 1:
        raise ValueError(f"seconds and accuracy must be 1-D of equal length, got {seconds.shape} and {accuracy.shape}")
    target = check_real_in("target", target, 0.0, 1.0)
    reached = np.flatnonzero(accuracy >= target)
    return float(seconds[reached[0]]) if reached.size else math.inf


@dataclass
class History:
    """What :meth:`DataParallelTrainer.fit` recorded at each evaluation (one entry per evaluation).

    Attributes:
        scheme: the scheme's name (or the mechanism's class name).
        step: optimiser steps taken before the evaluation (0 = the initial model).
        sim_seconds: the communicator's clock (s): computation plus link time.
        compute_seconds: computation alone (s): the clock on an unlimited link.
        test_accuracy: accuracy on the test set, in [0, 1].
        train_loss: mean training loss of the workers' minibatches since the previous evaluation
            (nan at step 0).
        bytes_per_worker: cumulative bytes each worker has sent (mean over workers).
        bytes_per_step: bytes each worker sent in the latest step (mean over workers; nan at step 0).
    """

    scheme: str
    step: list[int] = field(default_factory=list)
    sim_seconds: list[float] = field(default_factory=list)
    compute_seconds: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    bytes_per_worker: list[float] = field(default_factory=list)
    bytes_per_step: list[float] = field(default_factory=list)

    def seconds(self, clock: str = "sim") -> list[float]:
        """``sim_seconds`` (``clock="sim"``) or ``compute_seconds`` (``"compute"``)."""
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        return self.sim_seconds if clock == "sim" else self.compute_seconds

    def time_to(self, target: float, clock: str = "sim") -> float:
        """Seconds on ``clock`` to the first evaluation with accuracy >= ``target`` (inf if none)."""
        return time_to_accuracy(self.seconds(clock), self.test_accuracy, target)

    def as_dict(self) -> dict:
        """Plain lists, e.g. for a DataFrame."""
        return {name: list(getattr(self, name)) for name in
                ("step", "sim_seconds", "compute_seconds", "test_accuracy", "train_loss", "bytes_per_worker",
                 "bytes_per_step")}


class DataParallelTrainer:
    """Synchronous data-parallel SGD with a compressed gradient exchange, simulated on a SimComm.

    Args:
        model: the replicated model (its parameters are the shared replica); any classifier mapping
            ``images[idx]`` to logits ``[B, classes]``.
        scheme: a name from :data:`~commlab.distributed.schemes.SCHEMES` (``"none"``, ``"topk"``,
            ``"powersgd"``, ``"sign"``) or a ready scheme (a fresh
            :class:`~commlab.compress.ef.Mechanism` or
            :class:`~commlab.distributed.powersgd.PowerSGDReducer`; one bucket, the model's parameters
            in order).
        comm: a :class:`SimComm` with N = ``len(shards)`` workers; its link sets the link time.
        images: ``[n, ...]`` float training inputs shared by all workers.
        labels: ``[n]`` int64 class labels.
        shards: N integer index arrays into ``images``, worker i's data (e.g. ``partition.iid``).
        batch_size: B >= 1 examples per worker and step.
        lr: learning rate γ > 0.
        momentum: heavy-ball coefficient μ in [0, 1).
        seed: root seed of the minibatches and of randomised compressors.
        start_iter: steps (counted from 0) before this one exchange dense gradients (all-reduce of
            the mean); 0 compresses from the first step, :mod:`~commlab.train.ddp` uses 2.
        ratio, rank: Top-k's kept fraction and PowerSGD's rank, for a named scheme.
        timer: a function returning seconds, used to measure computation; None (default) picks
            :func:`time.thread_time` when torch runs on one thread, else :func:`time.perf_counter`
            (see the module docstring).

    Minibatches: worker i at step t (counted from 0) takes :meth:`batch_indices` ``(t, i)``, the batch
    a ``torch.distributed`` rank i takes in :mod:`commlab.train.ddp`.
    """

    def __init__(self, model: nn.Module, scheme: str | Scheme, comm: SimComm, images: torch.Tensor,
                 labels: torch.Tensor, shards: Sequence, *, batch_size: int = 32, lr: float = 0.1,
                 momentum: float = 0.0, seed: int = 0, start_iter: int = 0, ratio: float = 0.01,
                 rank: int = 2, timer: Callable[[], float] | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(comm, SimComm):
            raise TypeError(f"comm must be a commlab SimComm, got {type(comm).__name__}")
        if is_scheme(scheme):
            self.mechanism, self.scheme = scheme, type(scheme).__name__
        elif isinstance(scheme, str):
            self.mechanism, self.scheme = gradient_scheme(scheme, ratio=ratio, rank=rank), scheme
        else:
            raise TypeError(f"scheme must be a scheme name, a Mechanism or a PowerSGDReducer, got "
                            f"{type(scheme).__name__}")
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError("images must be a floating torch.Tensor [n, ...]")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be an int64 tensor of shape [{len(images)}] (one per image)")
        if len(shards) != comm.world_size:
            raise ValueError(f"shards must hold one index array per worker ({comm.world_size}), got {len(shards)}")
        self.shards = [self._shard(i, shard, len(images)) for i, shard in enumerate(shards)]
        self.model, self.comm, self.images, self.labels = model, comm, images, labels
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.lr = check_positive("lr", lr)
        momentum = check_nonnegative("momentum", momentum)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if any(len(shard) < self.batch_size for shard in self.shards):
            raise ValueError(f"every shard must hold at least batch_size={self.batch_size} examples, "
                             f"got sizes {[len(shard) for shard in self.shards]}")
        self.seed = check_seed(seed)
        self.start_iter = check_int("start_iter", start_iter, low=0)
        if timer is None:
            timer = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
        if not callable(timer):
            raise TypeError(f"timer must be a function returning seconds, got {type(timer).__name__}")
        self.timer = timer
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=self.lr, momentum=momentum)
        self.steps_done = 0
        self.compute_seconds = 0.0
        self._bytes_before_step = math.nan

    @staticmethod
    def _shard(worker: int, shard, n: int) -> np.ndarray:
        shard = np.asarray(shard)
        if shard.dtype.kind not in "iu" or shard.ndim != 1 or shard.size == 0:
            raise ValueError(f"shards[{worker}] must be a non-empty 1-D integer index array")
        if int(shard.min()) < 0 or int(shard.max()) >= n:
            raise ValueError(f"shards[{worker}] has indices outside [0, {n - 1}]")
        return shard.astype(np.int64)

    def batch_indices(self, step: int, worker: int) -> torch.Tensor:
        """``[B]`` int64 indices into ``images`` of worker ``worker``'s minibatch at step ``step``."""
        return batch_indices(self.shards[worker], step, self.batch_size, seed=self.seed, worker=worker)

    def step(self) -> float:
        """One synchronous step of all workers; returns the mean of their minibatch losses."""
        self._bytes_before_step = float(self.comm.meter.bytes_sent.mean())
        grads, losses, slowest = [], [], 0.0
        for worker in range(self.comm.world_size):
            started = self.timer()
            index = self.batch_indices(self.steps_done, worker)
            self.optimizer.zero_grad(set_to_none=False)
            loss = F.cross_entropy(self.model(self.images[index]), self.labels[index])
            loss.backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in self.params]))
            slowest = max(slowest, self.timer() - started)
            losses.append(loss.item())
        started = self.timer()
        grads = torch.stack(grads)
        if self.steps_done < self.start_iter:
            estimate = self.comm.all_reduce(grads, op="mean").wait()[0]
        else:
            random = draws(self.mechanism)[0]
            generator = SeedTree(self.seed).torch("ddp_hook", self.steps_done, 0) if random else None
            estimate = gradient_round(self.comm, self.mechanism, grads, generator, [p.shape for p in self.params])
        offset = 0
        for p in self.params:
            p.grad.copy_(estimate[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        self.optimizer.step()
        spent = slowest + self.timer() - started
        self.comm.advance(spent)
        self.compute_seconds += spent
        self.steps_done += 1
        return float(np.mean(losses))

    def evaluate(self, test: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Test accuracy of the shared model on ``(images, labels)``."""
        return accuracy(self.model, *test)

    def fit(self, steps: int, test: tuple[torch.Tensor, torch.Tensor], *, eval_every: int = 10,
            stop_at: float | None = None, progress: bool = False) -> History:
        """Run ``steps`` steps, evaluating on ``test`` at the start and every ``eval_every`` steps
        (see :func:`fit_interleaved`, of which this is the one-trainer case)."""
        return fit_interleaved({self.scheme: self}, steps, test, eval_every=eval_every, stop_at=stop_at,
                               progress=progress)[self.scheme]

    def _record(self, history: History, test, loss: float) -> None:
        history.step.append(self.steps_done)
        history.sim_seconds.append(self.comm.clock)
        history.compute_seconds.append(self.compute_seconds)
        history.test_accuracy.append(self.evaluate(test))
        history.train_loss.append(loss)
        sent = float(self.comm.meter.bytes_sent.mean())
        history.bytes_per_worker.append(sent)
        history.bytes_per_step.append(sent - self._bytes_before_step)


def fit_interleaved(trainers: Mapping[str, DataParallelTrainer], steps: int, test: tuple[torch.Tensor, torch.Tensor],
                    *, eval_every: int = 10, stop_at: float | None = None,
                    progress: bool = False) -> dict[str, History]:
    """Train several trainers in lockstep: step t of each, in turn, before step t + 1 of any.

    Their measured computation then shares the machine's conditions (other processes, clock
    frequency) step by step, so a busy minute slows every run alike instead of one of them, and the
    comparison of their clocks is fairer than with runs one after the other.

    Args:
        trainers: ``{name: trainer}``.
        steps: optimiser steps for each, >= 1 (the last one is always evaluated).
        test: ``(images, labels)`` of the test set.
        eval_every: steps between evaluations, >= 1; every trainer is also evaluated before its first step.
        stop_at: a trainer stops after its first evaluation whose accuracy reaches this value (None: never).
        progress: show a tqdm progress bar over the steps.

    Returns:
        ``{name: History}``.
    """
    if not trainers or not all(isinstance(t, DataParallelTrainer) for t in trainers.values()):
        raise TypeError("trainers must be a non-empty mapping of names to DataParallelTrainer")
    steps = check_int("steps", steps, low=1)
    eval_every = check_int("eval_every", eval_every, low=1)
    if stop_at is not None:
        stop_at = check_real_in("stop_at", stop_at, 0.0, 1.0)
    histories = {name: History(trainer.scheme) for name, trainer in trainers.items()}
    losses: dict[str, list[float]] = {name: [] for name in trainers}
    for name, trainer in trainers.items():
        trainer._record(histories[name], test, math.nan)
    running = list(trainers)
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=", ".join(trainers), leave=False)
    for done in bar:
        for name in list(running):
            losses[name].append(trainers[name].step())
            if (done + 1) % eval_every == 0 or done + 1 == steps:
                trainers[name]._record(histories[name], test, float(np.mean(losses[name])))
                losses[name] = []
                if stop_at is not None and histories[name].test_accuracy[-1] >= stop_at:
                    running.remove(name)
        if not running:
            break
    return histories
