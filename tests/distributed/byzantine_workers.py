"""The robust-SGD run the SimComm/DistComm agreement test repeats on gloo ranks (module-level for ``spawn``)."""

from __future__ import annotations

import torch

from commlab.comm import Communicator, DistComm
from commlab.distributed import robust as R
from commlab.distributed.byzantine import RobustSGD

D = 9
RULES = {"median": lambda: R.CoordinateMedian(), "trimmed_mean": lambda: R.TrimmedMean(f=1),
         "flag": lambda: R.FlagAggregator(r=2, n_its=2, seed=4)}


def honest_gradient(params: torch.Tensor, worker: int, step: int) -> torch.Tensor:
    """Worker ``worker``'s noisy gradient of ½‖θ − c_w‖² at ``step``: ``[D]`` from ``params`` ``[D]``."""
    g = torch.Generator().manual_seed(1_000 * step + worker)
    target = torch.linspace(-1, 1, D, dtype=torch.float64) + 0.1 * worker
    return params - target + 0.3 * torch.randn(D, generator=g, dtype=torch.float64)


def run_robust(comm: Communicator, rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` steps of RobustSGD with one Gaussian attacker; returns θ ``[L, D]`` and the meter's bytes ``[L]``."""
    params = torch.zeros(comm.local_workers, D, dtype=torch.float64)
    params[:, 0] = comm.ranks.to(torch.float64)                  # different starts: the broadcast must equalise them
    method = RobustSGD(comm, params, aggregator=RULES[rule](), lr=0.1, momentum=0.5,
                       attack=R.GaussianNoise(sigma=5.0), byzantine=1, seed=7)
    for t in range(steps):
        grads = torch.stack([honest_gradient(params[row], int(w), t) for row, w in enumerate(comm.ranks.tolist())])
        method.step(grads)
    return params.clone(), comm.meter.bytes_sent.clone()


def robust_rank(rank, world_size, steps):
    """:func:`run_robust` of every rule on this rank (a fresh communicator each)."""
    return {rule: run_robust(DistComm(), rule, steps) for rule in RULES}
