"""What the 1-bit Adam tests run on each rank (module-level, so ``spawn`` can pickle it), and the same
training loop for the simulator."""

from __future__ import annotations

import torch

from commlab.comm import Communicator, DistComm
from commlab.distributed.onebit_adam import OneBitAdam


def least_squares_onebit(comm: Communicator, steps=12, freeze_step=4, seed=0, m=10, d=21, lr=0.05):
    """1-bit Adam on distributed least squares, written once for any backend.

    Worker i holds (A_i [m, d], b_i [m]) drawn from ``seed``; its gradient A_iᵀ(A_i x − b_i)/m is
    computed row by row so the arithmetic is the same on every backend. d = 21 is not a multiple of
    the world size, so the last chunk is shorter.

    Returns:
        The iterates ``[steps + 1, d]``, the optimiser state of the local workers and the meter
        (bytes ``[L]``, syncs).
    """
    n = comm.world_size
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, m, d, generator=g)
    b = torch.randn(n, m, generator=g)
    x = torch.zeros(comm.local_workers, d)
    opt = OneBitAdam(comm, x, lr=lr, freeze_step=freeze_step)
    iterates = [x[0].clone()]
    for _ in range(steps):
        # x[row].clone(): a row of a stacked tensor may sit at an unaligned address, where BLAS sums in
        # another order than for a rank's own [1, d] tensor
        grads = torch.stack([A[i].T @ (A[i] @ x[row].clone() - b[i]) / m for row, i in enumerate(comm.ranks.tolist())])
        opt.step(grads)
        iterates.append(x[0].clone())
    state = opt.state_dict()
    return torch.stack(iterates), state, comm.meter.bytes_sent.clone(), comm.meter.syncs


def onebit_descent(rank, world_size, deterministic):
    """:func:`least_squares_onebit` on this rank's worker."""
    return least_squares_onebit(DistComm(deterministic=deterministic))
