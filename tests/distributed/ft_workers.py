"""Replica functions for test_ft_comm.py (module level, so spawn can pickle them)."""

import time

import torch

from commlab.comm.ft import FaultTolerant
from commlab.comm.ft_launch import PRELOAD as PRELOAD_FT
from commlab.comm.hashing import state_hash
from commlab.distributed import make_method

D, ROWS = 8, 16
MIXING = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
PRELOAD = (*PRELOAD_FT, "commlab.distributed", "ft_workers")


def values(replica: int) -> torch.Tensor:
    """``[1, 2, 5]``: a dyadic part (sums exact in any order) and a random part."""
    dyadic = torch.arange(5, dtype=torch.float32) * 0.25 + replica
    noise = torch.randn(5, generator=torch.Generator().manual_seed(replica))
    return torch.stack([dyadic, noise]).unsqueeze(0)


def collectives(comm, replica, attempt):
    comm.manager.register_state_dict_fn("none", lambda state: None, dict)  # the first quorum heals replicas 1, 2
    n = comm.quorum()
    x = values(replica)
    mean = comm.all_reduce(x, op="mean").wait().clone()
    total = comm.all_reduce(x, op="sum").wait().clone()
    gathered = comm.all_gather(x).wait().clone()
    mixed = comm.mix(x, MIXING).wait().clone()
    swapped = comm.exchange(x, [(0, 2)]).wait().clone()
    comm.check_same("seed", 7)
    try:
        comm.check_same("seed", replica)
        refused = None
    except ValueError as error:
        refused = str(error)
    return {"n": n, "rank": int(comm.ranks[0]), "x": x, "mean": mean, "sum": total, "gathered": gathered,
            "mixed": mixed, "swapped": swapped, "refused": refused, "committed": comm.commit()}


def problem(replica: int):
    gen = torch.Generator().manual_seed(100 + replica)
    return torch.randn(ROWS, D, generator=gen), torch.randn(ROWS, generator=gen)


def diloco(comm, replica, attempt, faults, sync_every, min_commits, seconds_per_step, deadline):
    """commlab's DiLoCo on FTComm; ``faults`` (a :class:`~commlab.comm.faults.Faults`) fire before inner
    steps of a replica's first attempt. Every replica stops after the quorum in which the last three quorums all had
    3 participants and the Manager's step is at least ``min_commits``: the same quorum for all."""
    A, b = problem(replica)
    params = torch.randn(1, D, generator=torch.Generator().manual_seed(0))
    method = make_method("diloco", comm, params, sync_every=sync_every, sync_init=False,
                         inner=lambda p: torch.optim.SGD([p], lr=0.05))
    began, entered = time.perf_counter(), time.time()
    run = FaultTolerant(method, comm)
    joined = time.time()
    healed_at = method.steps if run.heals else None
    while True:
        faults.inject(replica, method.steps, attempt)
        if time.perf_counter() - began > deadline:
            raise TimeoutError(f"replica {replica}: no stop after {deadline} s; quorums {comm.history}")
        time.sleep(seconds_per_step)
        residual = A @ params[0].detach() - b
        run.step((A.T @ residual / ROWS).unsqueeze(0))
        last = comm.history[-3:]
        if len(last) == 3 and all(n == 3 for _, n in last) and last[-1][0] >= min_commits:
            break
    outer = method.outer.state_dict()["buffer"]
    return {"hash": state_hash(torch.cat([method.outer_params, params[0].detach(), outer])),
            "steps": method.steps, "manager_step": comm.manager.current_step(), "history": comm.history,
            "commits": run.commits, "rollbacks": run.rollbacks, "heals": run.heals, "healed_at": healed_at,
            "outer_params": method.outer_params.clone(),
            "entered": entered, "joined": joined}
