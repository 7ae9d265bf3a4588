"""Train SmallCNN on Fashion-MNIST with DDP and a compressed gradient hook: the torchrun entry point.

Each rank trains :class:`~commlab.models.cnn.SmallCNN` wrapped in ``DistributedDataParallel`` on its
own IID shard of a seeded Fashion-MNIST subset, with SGD (momentum optional); the gradients cross the wire
through :func:`~commlab.distributed.ddp_hook.register_compression` with one of the schemes of
:mod:`commlab.distributed.schemes` (``none``, ``topk``, ``powersgd``, ``sign``). Worker i's
minibatch at step t is :func:`~commlab.data.batches.batch_indices` (B draws with replacement from its shard, seeded by
``(t, i)``), so a simulator on a :class:`~commlab.comm.communicator.SimComm` can feed its N stacked
workers the very same batches.

One machine, two processes (torchrun's ``--standalone`` rendezvous)::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m commlab.train.ddp \\
        --scheme topk --ratio 0.01 --steps 300 --log-file runs/topk.jsonl

Two machines (or two network namespaces), one process each; run on node 0 (address 10.0.0.1)::

    OMP_NUM_THREADS=1 torchrun --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 \\
        --nproc-per-node 1 -m commlab.train.ddp \\
        --scheme topk --ratio 0.01 --steps 300 --log-file runs/topk.jsonl

and the same command with ``--node-rank 1`` on node 1 (the log is written by rank 0 only). If gloo
picks the wrong network interface, set ``GLOO_SOCKET_IFNAME`` (e.g. ``GLOO_SOCKET_IFNAME=veth0``).

Without torchrun (no ``WORLD_SIZE`` in the environment) ``python -m commlab.train.ddp ...``
runs one process as a world of size 1 (a ``file://`` rendezvous in a temporary folder): the hook
and the meter run, nothing crosses a wire.

Rendezvous under torchrun is ``env://`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``),
followed by a barrier; collectives time out after ``--timeout`` seconds; the process group is
destroyed on the way out. ``--backend nccl`` puts rank r on ``cuda:LOCAL_RANK`` and joins
``cpu:gloo,cuda:nccl`` (the compressed round packs payloads on the CPU).

Log (``--log-file PATH``): JSON lines written by rank 0, one record per evaluation (before the
first step, every ``--eval-every`` steps and after the last step)::

    {"step": 50, "wall_s": 12.3, "eval_s": 0.8, "test_accuracy": 0.71, "train_loss": 0.84,
     "bytes_sent": 1.2e6, "bytes_per_step": 4.8e3, "scheme": "topk", "world_size": 2}

* ``step``: optimizer steps done (0: the initial model, with ``train_loss`` null);
* ``wall_s``: seconds of training since the start on rank 0, evaluations excluded (their total is
  ``eval_s``);
* ``test_accuracy``: on ``--test-n`` test images; ``train_loss``: mean minibatch loss over all
  ranks and the steps since the previous record;
* ``bytes_sent``: bytes one worker has sent so far (the hook's meter, dense warm-up steps
  included); ``bytes_per_step``: bytes it sent in the latest step.

Gradients cross in DDP's buckets of at most ``--bucket-cap-mb`` MB; with ``--overlap`` (the default)
each bucket's communication runs while the backward pass computes the next buckets' gradients, and
``--no-overlap`` finishes it inside the hook (the baseline for the overlap).

Each evaluation adds one small all-reduce (loss statistics and the early-stop flag), which is
bookkeeping and not metered. ``--target-accuracy A`` stops every rank after the first evaluation
reaching A.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from commlab._checks import check_choice, check_int, check_positive, check_real_number
from commlab.data import fashion_mnist, iid
from commlab.data.batches import batch_indices
from commlab.distributed.ddp_hook import register_compression
from commlab.distributed.schemes import SCHEMES, gradient_scheme
from commlab.models.cnn import SmallCNN
from commlab.models.fit import accuracy
from commlab.seeding import SeedTree, seeded_init

BACKENDS = ("gloo", "nccl")


@dataclass
class TrainConfig:
    """Everything one run depends on (the command-line options, same names)."""

    scheme: str = "topk"
    ratio: float = 0.01
    rank: int = 2
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0  # with 0.9, error feedback on the whole-bucket sign and PowerSGD schemes diverges
    seed: int = 0
    train_n: int = 12000
    test_n: int = 2000
    eval_every: int = 25
    target_accuracy: float | None = None
    start_iter: int = 2
    log: str | None = None
    threads: int = 1
    timeout: float = 30.0
    backend: str = "gloo"
    bucket_cap_mb: float = 25.0  # DDP's bucket size; smaller buckets: more overlap with the backward pass
    overlap: bool = True  # the hook returns before its bucket's communication has completed

    def __post_init__(self):
        gradient_scheme(self.scheme, ratio=self.ratio, rank=self.rank)  # checks scheme, ratio, rank
        for name in ("steps", "batch_size", "train_n", "test_n", "eval_every", "start_iter", "threads"):
            check_int(name, getattr(self, name), low=1)
        check_positive("lr", self.lr)
        check_real_number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if self.target_accuracy is not None:
            check_real_number("target_accuracy", self.target_accuracy, low=0.0, high=1.0, low_open=True)
        check_positive("timeout", self.timeout)
        check_positive("bucket_cap_mb", self.bucket_cap_mb)
        if not isinstance(self.overlap, bool):
            raise TypeError(f"overlap must be a bool, got {self.overlap!r}")
        check_choice("backend", self.backend, BACKENDS)

    def argv(self) -> list[str]:
        """The command line that :func:`parse_config` turns back into this configuration."""
        args = []
        for action in build_parser()._actions:
            value = getattr(self, action.dest, None) if action.option_strings else None
            if isinstance(value, bool):
                args.append(action.option_strings[0] if value else action.option_strings[1])
            elif value is not None:
                args += [action.option_strings[0], str(value)]
        return args

    def factory(self) -> functools.partial:
        """A picklable factory of fresh per-bucket mechanisms for this scheme."""
        return functools.partial(gradient_scheme, self.scheme, ratio=self.ratio, rank=self.rank)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m commlab.train.ddp",
                                description="Train SmallCNN on Fashion-MNIST with DDP and a compressed gradient hook.")
    p.add_argument("--scheme", choices=SCHEMES, default=d.scheme, help="gradient compression scheme")
    p.add_argument("--ratio", type=float, default=d.ratio, help="Top-k: fraction of coordinates kept, in (0, 1)")
    p.add_argument("--rank", type=int, default=d.rank, help="PowerSGD rank")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per worker and step")
    p.add_argument("--lr", type=float, default=d.lr, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of data subset, shards, batches, init, hook")
    p.add_argument("--train-n", type=int, default=d.train_n, help="Fashion-MNIST training images used (all workers)")
    p.add_argument("--test-n", type=int, default=d.test_n, help="test images for the accuracy")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between evaluations")
    p.add_argument("--target-accuracy", type=float, default=None, help="stop once the test accuracy reaches it")
    p.add_argument("--start-iter", type=int, default=d.start_iter, help="first compressed iteration (>= 1)")
    p.add_argument("--log-file", dest="log", default=None,
                   help="JSON-lines log written by rank 0 (not --log: torchrun would take it for its own --log-dir)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per process")
    p.add_argument("--timeout", type=float, default=d.timeout, help="collective timeout in seconds")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend, help="gloo (CPU) or nccl (one GPU per rank)")
    p.add_argument("--bucket-cap-mb", type=float, default=d.bucket_cap_mb, help="DDP's gradient bucket size in MB")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=d.overlap,
                   help="overlap each bucket's communication with the rest of the backward pass")
    return p


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line (``sys.argv[1:]`` by default)."""
    args = build_parser().parse_args(argv)
    return TrainConfig(**vars(args))


# -- data, shards, batches and the model (a simulator can reuse them) ----------------------------


def load_data(cfg: TrainConfig, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
    """``(train_x [train_n,1,28,28], train_y [train_n], test_x [test_n,1,28,28], test_y [test_n])``."""
    train_x, train_y = fashion_mnist("train", n=cfg.train_n, seed=cfg.seed)
    test_x, test_y = fashion_mnist("test", n=cfg.test_n, seed=cfg.seed)
    return tuple(t.to(device) for t in (train_x, train_y, test_x, test_y))


def shards(cfg: TrainConfig, world_size: int) -> list[np.ndarray]:
    """Each worker's training indices: :func:`commlab.data.iid` with the run's seed."""
    return iid(cfg.train_n, world_size, seed=cfg.seed)


def make_model(cfg: TrainConfig) -> SmallCNN:
    """SmallCNN with the run's initial weights (the same on every rank and in the simulator)."""
    with seeded_init(SeedTree(cfg.seed).seed_for("init")):
        return SmallCNN()


class _Recorder:
    """Evaluation schedule, records, the JSON-lines log and the progress line."""

    def __init__(self, cfg: TrainConfig, world_size: int, write: bool):
        self.cfg, self.world_size, self.write = cfg, world_size, write
        self.records: list[dict] = []
        self.loss_sum, self.loss_n = 0.0, 0
        self.path = Path(cfg.log) if (cfg.log and write) else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def due(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0 or step == self.cfg.steps

    def add(self, step: int, wall_s: float, eval_s: float, acc: float, loss: float | None, bytes_sent: float,
            bytes_per_step: float) -> None:
        """Keep one record, append it to the log and print the progress line (rank 0)."""
        record = {"step": step, "wall_s": wall_s, "eval_s": eval_s, "test_accuracy": acc, "train_loss": loss,
                  "bytes_sent": bytes_sent, "bytes_per_step": bytes_per_step, "scheme": self.cfg.scheme,
                  "world_size": self.world_size}
        self.records.append(record)
        if self.write:
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            shown = "   -  " if loss is None else f"{loss:.4f}"
            print(f"[{self.cfg.scheme} N={self.world_size}] step {step:5d}  acc {acc:.4f}  loss {shown}  "
                  f"sent {bytes_sent / 1e6:8.3f} MB ({bytes_per_step / 1e3:.1f} kB/step)  {wall_s:7.1f} s", flush=True)


# -- the distributed run ---------------------------------------------------------------------------


def train_ddp(cfg: TrainConfig, device: str | torch.device = "cpu") -> list[dict]:
    """Train on this rank (the process group must be initialised); returns rank 0's records
    (other ranks return their own view: accuracy NaN, loss and bytes as on rank 0)."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device(device)
    train_x, train_y, test_x, test_y = load_data(cfg, device)
    shard = shards(cfg, world_size)[rank]
    model = make_model(cfg).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  bucket_cap_mb=cfg.bucket_cap_mb)
    state = register_compression(ddp, cfg.factory(), seed=cfg.seed, start_iter=cfg.start_iter, overlap=cfg.overlap)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    recorder = _Recorder(cfg, world_size, write=rank == 0)
    wall = eval_s = last_bytes = 0.0
    started = time.perf_counter()
    initial = accuracy(model, test_x, test_y) if rank == 0 else math.nan
    eval_s += time.perf_counter() - started
    recorder.add(0, wall, eval_s, initial, None, 0.0, 0.0)
    for step in range(1, cfg.steps + 1):
        started = time.perf_counter()
        idx = batch_indices(shard, step - 1, cfg.batch_size, seed=cfg.seed, worker=rank).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(train_x[idx]), train_y[idx])
        loss.backward()
        optimizer.step()
        recorder.loss_sum += loss.item()
        recorder.loss_n += 1
        wall += time.perf_counter() - started
        sent = float(state.meter.bytes_sent[0])
        per_step, last_bytes = sent - last_bytes, sent
        if not recorder.due(step):
            continue
        started = time.perf_counter()
        acc = accuracy(model, test_x, test_y) if rank == 0 else math.nan
        reached = cfg.target_accuracy is not None and rank == 0 and acc >= cfg.target_accuracy
        stats = torch.tensor([recorder.loss_sum, recorder.loss_n, float(reached)], dtype=torch.float64,
                             device=device)
        dist.all_reduce(stats)  # bookkeeping: not metered
        recorder.loss_sum, recorder.loss_n = 0.0, 0
        eval_s += time.perf_counter() - started
        recorder.add(step, wall, eval_s, acc, float(stats[0] / stats[1]), sent, per_step)
        if stats[2] > 0:
            break
    return recorder.records


# -- the entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, join the process group, train, leave; returns the exit status."""
    cfg = parse_config(argv)
    torch.set_num_threads(cfg.threads)
    timeout = timedelta(seconds=cfg.timeout)
    device = torch.device("cpu")
    backend = "gloo"
    if cfg.backend == "nccl":
        if not torch.cuda.is_available():
            raise SystemExit("--backend nccl needs CUDA, which is not available here")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    with tempfile.TemporaryDirectory(prefix="commlab-train-") as folder:
        if "WORLD_SIZE" in os.environ:  # torchrun (or any env:// launcher)
            dist.init_process_group(backend, init_method="env://", timeout=timeout)
        else:  # a single process: a world of one
            dist.init_process_group(backend, init_method=f"file://{Path(folder) / 'store'}", rank=0, world_size=1,
                                    timeout=timeout)
        try:
            dist.barrier()
            if dist.get_rank() == 0:
                print(f"commlab.train.ddp: world size {dist.get_world_size()}, backend {backend}, "
                      f"config {json.dumps(asdict(cfg))}", flush=True)
            train_ddp(cfg, device)
        finally:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
