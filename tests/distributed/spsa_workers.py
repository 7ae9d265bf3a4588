"""The shared-seed SPSA problem the SimComm/DistComm agreement test runs (module-level for ``spawn``)."""

from __future__ import annotations

import torch

from commlab.comm import Communicator, DistComm
from commlab.comm.membership import Membership
from commlab.distributed.spsa import SharedSeedSPSA

D, ROWS = 7, 12


def _data(machine: int, step: int, sample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Machine ``machine``'s least-squares minibatch for (step, sample): A [ROWS, D], b [ROWS]."""
    g = torch.Generator().manual_seed(10_000 * machine + 100 * step + sample)
    return torch.randn(ROWS, D, generator=g, dtype=torch.float64), torch.randn(ROWS, generator=g, dtype=torch.float64)


def least_squares_loss(params: torch.Tensor, machine: int, step: int) -> torch.Tensor:
    """mean (A θ − b)² for each of ``params`` ``[S, 2, D]`` on sample s's batch -> ``[S, 2]``."""
    out = []
    for s in range(params.shape[0]):
        A, b = _data(machine, step, s)
        out.append(((params[s] @ A.T - b) ** 2).mean(dim=-1))
    return torch.stack(out)


def churn_schedule(world_size: int) -> Membership:
    """All machines at first; the last leaves at round 2 and comes back at round 4."""
    return Membership(range(world_size)).leave(world_size - 1, at=2).join(world_size - 1, at=4)


def run_spsa(comm: Communicator, steps: int, scalars=None) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """``steps`` rounds on ``comm``; returns θ [L, D], the meter's bytes [L] and each round's hashes."""
    params = torch.linspace(-1, 1, D, dtype=torch.float64).repeat(comm.local_workers, 1)
    algo = SharedSeedSPSA(comm, params, lr=0.05, samples=3, seed=11, membership=churn_schedule(comm.world_size),
                          scalars=scalars)
    hashes = []
    for _ in range(steps):
        algo.round(least_squares_loss)
        hashes.append(algo.hashes())
    return algo.params.clone(), algo.comm.meter.bytes_sent.clone(), hashes


def spsa_rank(rank, world_size, steps):
    """:func:`run_spsa` on this rank's machine."""
    return run_spsa(DistComm(), steps)
