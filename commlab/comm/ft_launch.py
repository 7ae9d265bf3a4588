"""Start a torchft Lighthouse and N replica processes on localhost, restart the ones that die, never hang.

The launcher of :mod:`commlab.comm.ft` (what :func:`~commlab.comm.launch.run_workers` is to
:class:`~commlab.comm.communicator.DistComm`)::

    results = run_replicas(train, replicas=3, args=(seed,), restarts={2: 1}, timeout=100)
    # train(comm, replica, attempt, seed) runs in each process on an FTComm; a replica that dies is
    # started again (attempt 1, 2, ...) as often as ``restarts`` allows, and heals from a peer
    results[2]   # the WorkerResult of replica 2's last attempt; results[2].attempts: how many ran

The Lighthouse runs in this process (``LighthouseServer``, a Rust server on its own threads). Each
replica is a process forked by the ``forkserver``, which imported torch and torchft once, before any of
their threads or servers existed (so a replica, or a restart, does not import torch again), with one torch
thread, its own TCPStore (port 0), a ``ProcessGroupGloo`` and a ``Manager`` (synchronous quorum,
``min_replicas`` replicas to commit). Waits: collectives, commits and healing ``timeout_s`` (Manager and
gloo), quorums ``quorum_timeout_s``; the Lighthouse forms a quorum once every heartbeating replica has
asked (a replica silent for ``heartbeat_timeout_ms`` no longer counts) or ``join_timeout_ms`` after the
first request; everything still running at ``timeout`` is killed and reported ``"timeout"``.
"""

from __future__ import annotations

import pickle
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.multiprocessing as mp

from commlab._checks import check_int, check_nonnegative, check_positive
from commlab.comm.launch import WorkerResult

# torch._dynamo: what the first torch.optim optimiser imports (10 s of wall time on a busy core)
PRELOAD = ("torch", "torch._dynamo", "torchft.manager", "torchft.process_group", "commlab.comm.ft")


@dataclass
class ReplicaResult(WorkerResult):
    """How a replica's last attempt ended (:class:`~commlab.comm.launch.WorkerResult`, ``rank`` = the
    replica), with ``attempts`` = how many processes it ran (1 + restarts used)."""

    attempts: int = 1


def run_replicas(fn: Callable, replicas: int, args: tuple = (), *, restarts: dict[int, int] | int = 0,
                 min_replicas: int = 2, timeout: float = 100.0, timeout_s: float = 10.0,
                 quorum_timeout_s: float = 30.0, heartbeat_timeout_ms: int = 1500, join_timeout_ms: int = 3000,
                 quorum_tick_ms: int = 20, restart_delay: float = 0.0,
                 preload: tuple[str, ...] = PRELOAD) -> list[ReplicaResult]:
    """Run ``fn(comm, replica, attempt, *args)`` in ``replicas`` processes, each on an :class:`FTComm`.

    Args:
        fn: module-level (picklable) function; its return value must be picklable.
        replicas: N >= 1 replica processes (one rank each).
        args: extra positional arguments, picklable.
        restarts: how often each replica may be started again after its process ended without
            reporting success (an int for all, or ``{replica: count}``).
        min_replicas: the Lighthouse's and Managers' minimum quorum / commit size.
        timeout: s after which every process still running is killed (all of them, restarts included).
        timeout_s: the Manager's and gloo's timeout for collectives, commits and healing (s).
        quorum_timeout_s: how long a replica waits for a quorum (s).
        heartbeat_timeout_ms, join_timeout_ms, quorum_tick_ms: the Lighthouse's settings.
        restart_delay: s between a replica's end and its restart (the others run on without it meanwhile).
        preload: modules the fork server imports once, before it forks any replica (add what ``fn``
            imports, e.g. ``"commlab.distributed"``); it is started by the first call in a process and
            keeps the preload of that call.

    Returns:
        One :class:`ReplicaResult` per replica, in order.
    """
    from torchft._torchft import LighthouseServer

    replicas = check_int("replicas", replicas, low=1)
    min_replicas = check_int("min_replicas", min_replicas, low=1, high=replicas)
    timeout = check_positive("timeout", timeout)
    restart_delay = check_nonnegative("restart_delay", restart_delay)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    budget = {r: restarts for r in range(replicas)} if isinstance(restarts, int) else dict(restarts)
    for r, count in budget.items():
        check_int("replica", r, low=0, high=replicas - 1)
        check_int("restarts", count, low=0)
    lighthouse = LighthouseServer(bind="[::]:0", min_replicas=min_replicas, join_timeout_ms=join_timeout_ms,
                                  quorum_tick_ms=quorum_tick_ms, heartbeat_timeout_ms=heartbeat_timeout_ms)
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(list(preload))  # torch is imported once, in the fork server, not per replica
    reports = context.Queue()
    settings = (lighthouse.address(), min_replicas, timeout_s, quorum_timeout_s)
    started = time.perf_counter()
    processes: dict = {}

    def launch(replica: int, attempt: int):
        process = context.Process(target=_child, args=(fn, replica, attempt, args, settings, reports), daemon=True)
        process.start()
        return process

    def receive(wait: float) -> None:
        try:
            replica, attempt, status, value, error, trace = reports.get(timeout=wait)
        except queue.Empty:
            return
        if attempt == attempts[replica] - 1:  # the report of the replica's current attempt
            results[replica] = ReplicaResult(replica, status, pickle.loads(value), error, trace)

    try:
        attempts = dict.fromkeys(range(replicas), 1)
        processes.update({r: launch(r, 0) for r in range(replicas)})
        results: dict[int, ReplicaResult] = {}
        ended: dict[int, float] = {}
        due: dict[int, float] = {}  # replica -> when it restarts
        deadline = started + timeout
        while len(ended) < replicas and time.perf_counter() < deadline:
            receive(0.05)
            for r, process in processes.items():
                if r in due and time.perf_counter() >= due[r]:
                    del due[r]
                    processes[r] = launch(r, attempts[r])
                    attempts[r] += 1
                    continue
                if r in ended or r in due or process.is_alive():
                    continue
                process.join()
                if process.exitcode == 0:  # it reported before exiting: wait for the report (bounded)
                    for _ in range(100):
                        if r in results:
                            break
                        receive(0.05)
                elif budget.get(r, 0) > 0:  # died or raised: start it again, it heals from a peer
                    budget[r] -= 1
                    results.pop(r, None)
                    due[r] = time.perf_counter() + restart_delay
                    continue
                ended[r] = time.perf_counter() - started
        out = []
        for r in range(replicas):
            process = processes[r]
            if process.is_alive():
                process.kill()
                process.join(5)
                result = ReplicaResult(r, "timeout", seconds=time.perf_counter() - started)
            else:
                result = results.get(r) or ReplicaResult(r, "died")
                result.seconds = ended.get(r, time.perf_counter() - started)
            result.exitcode, result.attempts = process.exitcode, attempts[r]
            out.append(result)
        return out
    finally:
        for process in processes.values():
            if process.is_alive():
                process.kill()
        reports.close()
        lighthouse.shutdown()


def _child(fn, replica, attempt, args, settings, reports):
    from torchft.manager import Manager
    from torchft.process_group import ProcessGroupGloo

    from commlab.comm.ft import FTComm

    torch.set_num_threads(1)
    lighthouse, min_replicas, timeout_s, quorum_timeout_s = settings
    status, value, error, trace = "ok", None, None, None
    manager = None
    try:
        store = torch.distributed.TCPStore("localhost", 0, is_master=True, wait_for_workers=False)
        timeout, quorum_timeout = timedelta(seconds=timeout_s), timedelta(seconds=quorum_timeout_s)
        manager = Manager(pg=ProcessGroupGloo(timeout=timeout), load_state_dict=None, state_dict=None,
                          min_replica_size=min_replicas, use_async_quorum=False, timeout=timeout,
                          quorum_timeout=quorum_timeout, connect_timeout=timeout, rank=0, world_size=1,
                          store_addr="localhost", store_port=store.port, lighthouse_addr=lighthouse,
                          replica_id=f"replica_{replica}", hostname="localhost")
        value = fn(FTComm(manager), replica, attempt, *args)
    except BaseException as exc:  # report everything, including SystemExit from the function
        status, error, trace = "error", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    finally:
        if manager is not None:
            manager.shutdown(wait=False)
    reports.put((replica, attempt, status, pickle.dumps(value), error, trace))
    if status != "ok":
        raise SystemExit(1)


__all__ = ["ReplicaResult", "run_replicas"]
