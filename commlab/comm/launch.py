"""Run a function on N local gloo processes and collect what each returned, without ever hanging.

This is the test and notebook launcher (briefs/_conventions.md §6); across machines use torchrun
and :mod:`commlab.train.ddp`. Each child uses the ``spawn`` start method, one thread,
rendezvous through a ``file://`` store in a fresh temporary folder (no ports), a barrier right
after init and a 30 s collective timeout, and destroys its process group on the way out. The
parent manages the ``Process`` objects itself (not ``mp.spawn``, which kills the survivors as soon
as one child fails), so a test can see how the other ranks ended when one dies::

    results = run_workers(my_fn, world_size=2, args=(seed,), timeout=60)
    [r.value for r in results]        # what my_fn(rank, world_size, seed) returned on each rank
"""

from __future__ import annotations

import pickle
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from commlab._checks import check_int, check_positive

COLLECTIVE_TIMEOUT = timedelta(seconds=30)


@dataclass
class WorkerResult:
    """How one rank ended.

    Attributes:
        rank: the rank.
        status: ``"ok"`` (returned), ``"error"`` (raised), ``"died"`` (exited without reporting,
            e.g. killed or ``os._exit``) or ``"timeout"`` (still running at the deadline; killed).
        value: what the function returned (``"ok"`` only).
        error: ``"ExceptionType: message"`` for ``"error"``, else None.
        traceback: the child's formatted traceback for ``"error"``.
        exitcode: the process exit code (negative: killed by that signal).
        seconds: wall time from start until the parent saw it end.
    """

    rank: int
    status: str
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    exitcode: int | None = None
    seconds: float = 0.0


def run_workers(fn: Callable, world_size: int, args: tuple = (), *, timeout: float = 120.0,
                backend: str = "gloo", collective_timeout: timedelta = COLLECTIVE_TIMEOUT,
                threads: int = 1) -> list[WorkerResult]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` processes joined in a process group.

    Args:
        fn: a module-level (picklable) function; its return value must be picklable.
        world_size: number of processes, an integer >= 1.
        args: extra positional arguments, picklable.
        timeout: seconds after which ranks still running are killed and reported ``"timeout"``.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank).
        collective_timeout: how long a rank waits in a collective before it fails.
        threads: torch threads per child.

    Returns:
        One :class:`WorkerResult` per rank, in rank order.
    """
    world_size = check_int("world_size", world_size, low=1)
    timeout = check_positive("timeout", timeout)
    threads = check_int("threads", threads, low=1)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    context = mp.get_context("spawn")
    reports = context.Queue()
    with tempfile.TemporaryDirectory(prefix="commlab-store-") as folder:
        store = f"file://{Path(folder) / 'store'}"
        processes = [
            context.Process(
                target=_child,
                args=(fn, rank, world_size, args, store, backend, collective_timeout, threads, reports),
                daemon=True,
            )
            for rank in range(world_size)
        ]
        started = time.perf_counter()
        for process in processes:
            process.start()
        results = _collect(processes, reports, started, timeout)
    reports.close()
    return results


def _collect(processes, reports, started: float, timeout: float) -> list[WorkerResult]:
    results: dict[int, WorkerResult] = {}
    ended: dict[int, float] = {}
    deadline = started + timeout
    while True:
        try:
            rank, status, value, error, trace = reports.get(timeout=0.05)
            results[rank] = WorkerResult(rank, status, pickle.loads(value), error, trace)
        except queue.Empty:
            pass
        now = time.perf_counter()
        for rank, process in enumerate(processes):
            if rank not in ended and not process.is_alive():
                ended[rank] = now - started
        if len(ended) == len(processes) and reports.empty():
            break
        if now > deadline:
            break
    out = []
    for rank, process in enumerate(processes):
        if process.is_alive():
            process.kill()
            process.join(5)
            result = WorkerResult(rank, "timeout", seconds=time.perf_counter() - started)
        else:
            process.join()
            result = results.get(rank) or WorkerResult(rank, "died")
            result.seconds = ended.get(rank, time.perf_counter() - started)
        result.exitcode = process.exitcode
        out.append(result)
    return out


def _child(fn, rank, world_size, args, store, backend, collective_timeout, threads, reports):
    torch.set_num_threads(threads)
    status, value, error, trace = "ok", None, None, None
    try:
        dist.init_process_group(backend, init_method=store, rank=rank, world_size=world_size,
                                timeout=collective_timeout)
        dist.barrier()
        value = fn(rank, world_size, *args)
    except BaseException as exc:  # report everything, including SystemExit from the function
        status, error, trace = "error", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # plain pickle: tensors travel by value, not as shared-memory handles that die with this process
    reports.put((rank, status, pickle.dumps(value), error, trace))
    if status != "ok":
        raise SystemExit(1)
