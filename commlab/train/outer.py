"""Train a stacked MLP on digits with an outer method (DiLoCo, NoLoCo, ...): the torchrun entry point.

The same function, :func:`train_outer`, runs on any communicator: on N torchrun processes over a
:class:`~commlab.comm.communicator.DistComm` (one replica per rank), or on one
:class:`~commlab.comm.communicator.SimComm` hosting all N replicas, and with
``DistComm(deterministic=True)`` (the default here) both give bit-identical replicas. Each worker
trains a :class:`~commlab.models.stacked.StackedMLP` 64-hidden-10 on its IID shard of scikit-learn's
digits with Adam inner steps; its minibatch at step t is
:func:`~commlab.data.batches.batch_indices` seeded by (t, worker), and the outer method named by
``--algo`` (its name in :data:`commlab.distributed.METHODS`) synchronises; the loop is
:func:`commlab.train.loop.fit`::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m commlab.train.outer \\
        --algo noloco --steps 300 --sync-every 30 --log-file runs/noloco.jsonl

Without torchrun (no ``WORLD_SIZE`` in the environment) one process runs as a world of one.

Log (``--log-file PATH``, JSON lines by rank 0; one record before the first step, every
``--eval-every`` steps and after the last)::

    {"step": 30, "algo": "noloco", "world_size": 2, "test_loss": 0.41, "test_accuracy": 0.90,
     "train_loss": 0.52, "bytes_per_worker": 4.2e5, "syncs": 1, "peak_bytes_per_sync": 4.2e5,
     "clock": 0.83, "hashes": ["3f9c...", "a01b..."]}

``test_loss`` / ``test_accuracy``: mean over the workers' live replicas on the test split;
``train_loss``: mean minibatch loss since the previous record; bytes, syncs and peak bytes per
synchronisation from :meth:`Method.summary <commlab.distributed.method.Method.summary>`
(the initial broadcast counts in the bytes); ``clock``: the communicator's clock in seconds when the
record was taken, before its evaluation (on a DistComm, rank 0's wall clock since the communicator
was made; on a SimComm, the simulated clock); ``hashes``: :func:`~commlab.comm.hashing.state_hash`
of every worker's parameters, in rank order. The loss statistics and hashes are gathered outside
the communicator (bookkeeping, not metered).

``--no-overlap`` waits for every collective a method launches in the background as soon as it is
launched (Streaming DiLoCo's fragments, CO2's average), which changes the timing and nothing else: the
records are the same but for ``clock`` (benchmarks/streaming_overlap_veth.py times the two).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from commlab._checks import check_choice, check_int, check_positive, check_probability
from commlab.comm import Communicator, DistComm
from commlab.comm.hashing import replica_hashes
from commlab.data import digits, iid
from commlab.data.batches import stacked_batch_indices
from commlab.distributed import make_method
from commlab.distributed.method import Method
from commlab.models.stacked import StackedMLP
from commlab.seeding import SeedTree
from commlab.train.loop import fit

ALGOS = ("data_parallel", "diloco", "streaming_diloco", "noloco", "co2", "local_sgd")
FIELDS = ("step", "algo", "world_size", "test_loss", "test_accuracy", "train_loss", "bytes_per_worker", "syncs",
          "peak_bytes_per_sync", "clock", "hashes")


@dataclass
class OuterConfig:
    """One run (the command-line options, same names).

    ``sync_every`` is the synchronisation period of every method (DiLoCo's H, CO2's and local SGD's τ);
    ``fragments``, ``overlap_steps`` (τ) and ``mixing`` (α) are Streaming DiLoCo's; the outer optimisers
    keep their papers' defaults. ``overlap=False`` waits for each background collective at its launch.
    """

    algo: str = "diloco"
    steps: int = 300
    sync_every: int = 30
    fragments: int = 2
    overlap_steps: int = 1
    mixing: float = 0.5
    lr: float = 1e-3
    batch_size: int = 32
    hidden: int = 128
    seed: int = 0
    eval_every: int = 30
    deterministic: bool = True
    overlap: bool = True
    log: str | None = None
    threads: int = 1
    timeout: float = 30.0

    def __post_init__(self):
        check_choice("algo", self.algo, ALGOS)
        for name in ("steps", "sync_every", "fragments", "batch_size", "hidden", "eval_every", "threads"):
            check_int(name, getattr(self, name), low=1)
        check_int("overlap_steps", self.overlap_steps, low=0)
        check_int("seed", self.seed, low=0)
        check_probability("mixing", self.mixing)
        check_positive("lr", self.lr)
        check_positive("timeout", self.timeout)


def build_parser() -> argparse.ArgumentParser:
    d = OuterConfig()
    p = argparse.ArgumentParser(prog="python -m commlab.train.outer",
                                description="Train a stacked MLP on digits: data parallel, DiLoCo, NoLoCo, CO2, ...")
    p.add_argument("--algo", choices=ALGOS, default=d.algo, help="outer method")
    p.add_argument("--steps", type=int, default=d.steps, help="inner steps")
    p.add_argument("--sync-every", type=int, default=d.sync_every,
                   help="inner steps per synchronisation (DiLoCo: H; CO2 / local SGD: tau)")
    p.add_argument("--fragments", type=int, default=d.fragments, help="Streaming DiLoCo: fragments P")
    p.add_argument("--overlap-steps", type=int, default=d.overlap_steps,
                   help="Streaming DiLoCo: overlap tau in inner steps")
    p.add_argument("--mixing", type=float, default=d.mixing,
                   help="Streaming DiLoCo: mixing weight alpha of the local copy")
    p.add_argument("--lr", type=float, default=d.lr, help="inner Adam learning rate")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per worker and step")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden width of the MLP")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of split, shards, batches, init, permutations")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between evaluations")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=d.deterministic,
                   help="all-reduce as all-gather + ordered sum, bit-identical to the simulator")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=d.overlap,
                   help="overlap background collectives with computation (--no-overlap: wait at launch)")
    p.add_argument("--log-file", dest="log", default=None, help="JSON-lines log written by rank 0")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per process")
    p.add_argument("--timeout", type=float, default=d.timeout, help="collective timeout in seconds")
    return p


def parse_config(argv: list[str] | None = None) -> OuterConfig:
    """The :class:`OuterConfig` of a command line (``sys.argv[1:]`` by default)."""
    return OuterConfig(**vars(build_parser().parse_args(argv)))


def build_method(cfg: OuterConfig, comm: Communicator, model: StackedMLP) -> Method:
    """The outer method ``cfg.algo`` (by its registry name) around ``model.flat``, Adam(lr) inner steps."""
    hyper = {"inner": lambda p: torch.optim.Adam([p], lr=cfg.lr)}
    if cfg.algo != "data_parallel":
        hyper["sync_every"] = cfg.sync_every
    if cfg.algo == "streaming_diloco":
        hyper |= {"fragments": cfg.fragments, "overlap_steps": cfg.overlap_steps, "mixing": cfg.mixing,
                  "layers": model.layer_slices, "seed": cfg.seed}
    if cfg.algo == "noloco":
        hyper["seed"] = cfg.seed
    if cfg.algo == "co2":
        hyper["layers"] = model.layer_slices
    return make_method(cfg.algo, comm, model.flat, **hyper)


def wait_at_launch(comm: Communicator) -> Communicator:
    """``comm`` with :meth:`~commlab.comm.communicator.Communicator.start` waiting for the collective
    before it returns (the Work is complete; waiting on it again returns the same result): the same
    collectives, results and bytes, without overlap. Changes ``comm`` in place and returns it."""
    launch = comm.start

    def start_and_wait(op: str, /, *args, **kwargs):
        work = launch(op, *args, **kwargs)
        work.wait()
        return work

    comm.start = start_and_wait
    return comm


def train_outer(cfg: OuterConfig, comm: Communicator) -> list[dict]:
    """Train the local workers of ``comm`` (all N on a SimComm, this rank's on a DistComm); returns
    the records (on a DistComm every rank returns the same records but for ``clock``, the rank's own)."""
    if not cfg.overlap:
        comm = wait_at_launch(comm)
    train_x, train_y = digits("train", seed=cfg.seed)
    test_x, test_y = digits("test", seed=cfg.seed)
    train_x, test_x = train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)
    shards = iid(len(train_x), comm.world_size, seed=cfg.seed)
    model = StackedMLP((64, cfg.hidden, 10), replicas=comm.local_workers, generator=SeedTree(cfg.seed).torch("init"))
    method = build_method(cfg, comm, model)
    losses = {"sum": 0.0, "n": 0}  # minibatch losses since the previous record

    def oracle(t: int):
        idx = stacked_batch_indices(shards, t, cfg.batch_size, seed=cfg.seed, workers=comm.ranks)
        loss, grad = model.loss_and_grad(train_x[idx], train_y[idx])
        losses["sum"] += float(loss.sum())
        losses["n"] += comm.local_workers
        return loss, grad

    def evaluate(step: int) -> dict:
        test_loss, test_acc = model.evaluate(test_x, test_y)
        summary = method.summary()
        mine = {"stats": [float(test_loss.sum()), float(test_acc.sum()), losses["sum"], losses["n"],
                          float(comm.meter.bytes_sent.sum())],
                "peak": summary["peak_bytes_per_sync"], "hashes": replica_hashes(model.flat.detach())}
        everyone = [mine]
        if comm.local_workers < comm.world_size:  # bookkeeping across ranks, outside the meter
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, mine)
        stats = [sum(part["stats"][k] for part in everyone) for k in range(5)]  # rank order: the same sums
        n = comm.world_size
        losses["sum"], losses["n"] = 0.0, 0
        return {"algo": cfg.algo, "world_size": n, "test_loss": stats[0] / n, "test_accuracy": stats[1] / n,
                "train_loss": stats[2] / stats[3] if stats[3] > 0 else None, "bytes_per_worker": stats[4] / n,
                "syncs": summary["syncs"], "peak_bytes_per_sync": max(part["peak"] for part in everyone),
                "hashes": [h for part in everyone for h in part["hashes"]]}

    records = fit(method, oracle, cfg.steps, every=cfg.eval_every, evaluate=evaluate)
    return [{key: r[key] for key in FIELDS} for r in records]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, join the gloo process group, train, leave; returns the exit status."""
    cfg = parse_config(argv)
    torch.set_num_threads(cfg.threads)
    timeout = timedelta(seconds=cfg.timeout)
    with tempfile.TemporaryDirectory(prefix="commlab-outer-") as folder:
        if "WORLD_SIZE" in os.environ:  # torchrun (or any env:// launcher)
            dist.init_process_group("gloo", init_method="env://", timeout=timeout)
        else:  # a single process: a world of one
            dist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'store'}", rank=0, world_size=1,
                                    timeout=timeout)
        try:
            dist.barrier()
            rank = dist.get_rank()
            if rank == 0:
                print(f"commlab.train.outer: world size {dist.get_world_size()}, "
                      f"config {json.dumps(asdict(cfg))}", flush=True)
            records = train_outer(cfg, DistComm(deterministic=cfg.deterministic))
            if rank == 0:
                if cfg.log:
                    path = Path(cfg.log)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_name(path.name + ".partial")  # a failed write leaves the old log
                    partial.write_text("".join(json.dumps(r) + "\n" for r in records))
                    partial.replace(path)
                for r in records:
                    print(f"[{cfg.algo} N={r['world_size']}] step {r['step']:5d}  test loss {r['test_loss']:.4f}  "
                          f"acc {r['test_accuracy']:.4f}  sent {r['bytes_per_worker'] / 1e6:.3f} MB  "
                          f"syncs {r['syncs']}", flush=True)
            dist.barrier()  # leave together (one CI run saw rank 1 abort at teardown while rank 0 wrote the log)
        finally:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
