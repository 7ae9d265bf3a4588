"""Functions the DGC multi-process tests run on each rank (module-level, so ``spawn`` can pickle them)."""

from __future__ import annotations

import torch

from commlab.comm import DistComm
from commlab.distributed.dgc import DGC, DensityWarmup


def dgc_descent(comm, steps=8, seed=0, m=10, d=300, density=0.02):
    """DGC on a distributed least-squares problem, written once for any backend.

    Worker i holds (A_i [m, d], b_i [m]) drawn from ``seed`` and computes g_i = A_iᵀ(A_i w − b_i)/m row by
    row; the optimiser has every technique on (clipping, a density warm-up, momentum correction,
    masking, weight decay). Returns the iterates ``[steps + 1, d]``, the local rows of u and v, the
    step records and the bytes the meter counted.
    """
    n = comm.world_size
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, m, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, m, generator=g, dtype=torch.float64)
    params = torch.zeros(comm.local_workers, d, dtype=torch.float64)
    opt = DGC(comm, params, lr=0.05, momentum=0.9, weight_decay=1e-3, density=DensityWarmup(density, 4, phases=2),
              clip_norm=5.0, seed=seed)
    iterates, records = [params[0].clone()], []
    for _ in range(steps):
        w = params[0]
        grads = torch.stack([A[i].T @ (A[i] @ w - b[i]) / m for i in comm.ranks.tolist()])
        records.extend(opt.step(grads))
        iterates.append(params[0].clone())
    return torch.stack(iterates), opt.u.clone(), opt.v.clone(), records, comm.meter.bytes_sent.clone()


def dgc_rank(rank, world_size, seed):
    """:func:`dgc_descent` on this rank's worker, bit-identical collectives."""
    return dgc_descent(DistComm(deterministic=True), seed=seed)
