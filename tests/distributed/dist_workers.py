"""Functions the multi-process tests run on each rank (module-level, so ``spawn`` can pickle them).

Each takes ``(rank, world_size, *args)`` as :func:`commlab.comm.launch.run_workers` calls it.
"""

from __future__ import annotations

import os
import time

import torch

from commlab.comm import DistComm
from commlab.distributed.compressed import compressed_round


def collectives(rank, world_size, x, weights, pairs, deterministic):
    """Every collective on this rank's row of ``x`` ``[N, ...]``; returns the results and the meter."""
    comm = DistComm(deterministic=deterministic)
    mine = x[rank : rank + 1]
    out = {
        "sum": comm.all_reduce(mine, "sum").wait(),
        "mean": comm.all_reduce(mine, "mean").wait(),
        "gather": comm.all_gather(mine).wait(),
        "broadcast": comm.broadcast(mine, src=world_size - 1).wait(),
        "mix": comm.mix(mine, weights).wait(),
        "exchange": comm.exchange(mine, pairs).wait(),
    }
    return out, comm.meter.bytes_sent.clone(), comm.meter.syncs


def least_squares_descent(comm, scheme, steps=15, seed=0, m=12, d=40, lr=0.05):
    """Distributed least squares with a compressed gradient exchange, written once for any backend.

    Worker i holds (A_i [m, d], b_i [m]) drawn from ``seed``; each step every local worker computes
    g_i = A_iᵀ(A_i x − b_i)/m (row by row, so the arithmetic is the same on every backend), the
    round returns the server's estimate and x ← x − lr·estimate (EF14 is fed lr·g_i, ``takes_step``).

    Returns:
        The iterates ``[steps + 1, d]`` (float64) and the local workers' meter (bytes ``[L]``, syncs).
    """
    n = comm.world_size
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, m, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, m, generator=g, dtype=torch.float64)
    mechanism = scheme()
    x = torch.zeros(d, dtype=torch.float64)
    iterates = [x.clone()]
    for step in range(steps):
        grads = torch.stack([A[i].T @ (A[i] @ x - b[i]) / m for i in comm.ranks.tolist()])
        message = lr * grads if mechanism.takes_step else grads
        shared = torch.Generator().manual_seed(1000 * seed + step)  # the same on every worker
        estimate, _ = compressed_round(comm, mechanism, message, shared)
        x = x - (estimate if mechanism.takes_step else lr * estimate)
        iterates.append(x.clone())
    return torch.stack(iterates), comm.meter.bytes_sent.clone(), comm.meter.syncs


def descent(rank, world_size, scheme, deterministic):
    """:func:`least_squares_descent` on this rank's worker."""
    return least_squares_descent(DistComm(deterministic=deterministic), scheme)


def dies_after_one_collective(rank, world_size):
    """Rank 1 exits abruptly after the first all-reduce; the others go on to a second one."""
    comm = DistComm()
    comm.all_reduce(torch.ones(1, 4)).wait()
    if rank == 1:
        os._exit(3)
    started = time.perf_counter()
    try:
        comm.all_reduce(torch.ones(1, 4)).wait()
    finally:
        print(f"rank {rank} waited {time.perf_counter() - started:.2f} s", flush=True)


def stalls(rank, world_size, seconds):
    """The last rank sleeps instead of joining the all-reduce; the others must time out, not hang."""
    comm = DistComm()
    if rank == world_size - 1:
        time.sleep(seconds)
        return "slept"
    comm.all_reduce(torch.ones(1, 4)).wait()
    return "reduced"


def mismatched(rank, world_size):
    """Rank r passes a tensor of length 3 + r."""
    DistComm().all_reduce(torch.ones(1, 3 + rank)).wait()


def wrong_local_axis(rank, world_size):
    """A rank hosts one worker, so a leading axis of 2 is an error."""
    DistComm().all_gather(torch.ones(2, 3)).wait()


def vote(rank, world_size, g):
    """signSGD's majority vote of the rows of ``g`` ``[N, d]``, rank ``rank`` holding row ``rank``."""
    from commlab.distributed.compressed import majority_vote

    comm = DistComm()
    result, _ = majority_vote(comm, g[rank : rank + 1])
    return result, float(comm.meter.bytes_sent.sum())


def background(rank, world_size, flag, deterministic):
    """Rank 0 launches an all-reduce and an all-gather with ``start`` and checks that neither has
    completed before rank 1 joins (rank 1 waits for the file ``flag`` that rank 0 writes only then);
    returns what rank 0 got through ``wait`` and through ``future``, and its meter."""
    comm = DistComm(deterministic=deterministic, check_shapes=False)
    x = torch.arange(3.0)[None] + 10 * rank
    if rank == 0:
        reduced, gathered = comm.start("all_reduce", x, op="mean"), comm.start("all_gather", x)
        pending = (reduced.is_completed(), gathered.is_completed())
        x += 100  # the caller may reuse its tensor once start has returned
        open(flag, "w").close()
        chained = gathered.future().then(lambda f: f.value().sum())
        return {"pending": pending, "mean": reduced.wait(), "gather": gathered.wait(), "chained": chained.wait(),
                "bytes": comm.meter.bytes_sent.clone(), "done": (reduced.is_completed(), gathered.is_completed())}
    while not os.path.exists(flag):
        time.sleep(0.01)
    comm.all_reduce(x, op="mean").wait()
    comm.all_gather(x).wait()
    return None
