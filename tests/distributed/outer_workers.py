"""Outer-optimiser runs written once for any communicator, and their per-rank entry points for
:func:`commlab.comm.launch.run_workers` (module-level, so ``spawn`` can pickle them)."""

from __future__ import annotations

import torch

from commlab.comm import Communicator, DistComm
from commlab.distributed.outer import DiLoCo, NoLoCo, StreamingDiLoCo


def least_squares_run(comm: Communicator, algo: str, steps: int = 12, seed: int = 0, m: int = 10, d: int = 24):
    """Heterogeneous least squares with Adam inner steps under an outer method, on the local workers.

    Worker i holds (A_i [m, d], b_i [m]) drawn from ``seed``, starts from its own random point (the
    method's initial broadcast makes them equal) and takes ``steps`` Adam steps on
    ‖A_i x − b_i‖²/(2m), gradients computed row by row so the arithmetic is the same on every backend.

    Returns:
        The local replicas' parameters after every inner step ``[steps + 1, L, d]``, the outer
        parameters at the end, and the local meter's bytes ``[L]`` and syncs.
    """
    n = comm.world_size
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, m, d, generator=g)
    b = torch.randn(n, m, generator=g)
    x0 = torch.randn(n, d, generator=g)
    params = x0[comm.ranks].clone()
    methods = {
        "diloco": lambda: DiLoCo(comm, params, sync_every=3, inner=_adam),
        "noloco": lambda: NoLoCo(comm, params, sync_every=2, seed=seed, inner=_adam),
        "noloco-general": lambda: NoLoCo(comm, params, sync_every=2, pull_weight=0.3, seed=seed, inner=_adam),
        "streaming": lambda: StreamingDiLoCo(comm, params, sync_every=4, fragments=2, overlap_steps=1,
                                             layers=[(0, 8), (8, 16), (16, 24)], inner=_adam),
    }
    method = methods[algo]()
    trajectory = [params.detach().clone()]
    for _ in range(steps):
        grad = torch.stack([A[i].T @ (A[i] @ params[row].detach() - b[i]) / m
                            for row, i in enumerate(comm.ranks.tolist())])
        method.step(grad)
        trajectory.append(params.detach().clone())
    method.finish()
    return torch.stack(trajectory), method.outer_params.clone(), comm.meter.bytes_sent.clone(), comm.meter.syncs


def _adam(p):
    return torch.optim.Adam([p], lr=0.05)


def outer_on_rank(rank, world_size, algos, steps, seed):
    """:func:`least_squares_run` of each method in ``algos`` on this rank's worker, each over a fresh
    deterministic DistComm; returns ``{algo: result}``."""
    return {algo: least_squares_run(DistComm(deterministic=True), algo, steps, seed) for algo in algos}
