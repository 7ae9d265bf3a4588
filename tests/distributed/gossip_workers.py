"""Functions the gossip tests run on each rank (module-level, so ``spawn`` can pickle them)."""

from __future__ import annotations

import torch

from commlab.comm import DistComm
from commlab.distributed.gossip import DecentralizedSGD, Schedule
from commlab.train.loop import fit


def quadratic_problem(world_size, seed, d=5):
    """Node i minimises ½‖A_i x − b_i‖² with its own (A_i [d, d], b_i [d]), float64."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(world_size, d, d, generator=g, dtype=torch.float64) / d**0.5
    b = torch.randn(world_size, d, generator=g, dtype=torch.float64)
    x0 = torch.randn(d, generator=g, dtype=torch.float64)
    return A, b, x0


def dsgd(comm, x0, grad_fn, *, rounds, local_steps, lr, evaluate=None, eval_every=1, **kw):
    """``rounds`` rounds of ``local_steps`` steps of :class:`DecentralizedSGD` on a copy of ``x0`` through the
    shared loop; ``grad_fn(x, step, ranks) -> (loss [L], grads [L, d])``; ``evaluate(x)`` sees the models as a
    round trained them (before its gossip). Returns ``(method, records)``."""
    params = x0.clone()
    method = DecentralizedSGD(comm, params, lr=lr, sync_every=local_steps,
                              rounds=rounds if "schedule" in kw else None, **kw)

    def metrics(step):
        return evaluate(params if step == 0 else method.premix) if evaluate is not None else {}

    records = fit(method, lambda step: grad_fn(params, step, comm.ranks), rounds * local_steps,
                  every=eval_every * local_steps, evaluate=metrics)
    return method, records


def quadratic_dsgd(comm, seed, rounds=6, local_steps=3):
    """D-SGD with a dense window and a final merge on the quadratic problem, on any communicator.

    Gradients are computed row by row, so the arithmetic is the same on every backend. Returns the
    final local rows ``[L, d]``, the meter's bytes ``[L]`` and its number of synchronisations.
    """
    A, b, x0 = quadratic_problem(comm.world_size, seed)

    def grad_fn(x, step, ranks):
        grads = torch.stack([A[i].T @ (A[i] @ x[row] - b[i]) for row, i in enumerate(ranks.tolist())])
        losses = torch.stack([0.5 * (A[i] @ x[row] - b[i]).square().sum() for row, i in enumerate(ranks.tolist())])
        return losses, grads

    schedule = Schedule.window(0.5, comm.world_size - 1.0, 0.3, 0.2)
    x = x0.expand(comm.local_workers, -1).clone()
    method, _ = dsgd(comm, x, grad_fn, rounds=rounds, local_steps=local_steps, lr=0.1, schedule=schedule, seed=seed)
    return method.params, comm.meter.bytes_sent.clone(), comm.meter.syncs


def gossip_rank(rank, world_size, seed):
    """:func:`quadratic_dsgd` on this rank's node, with a deterministic DistComm."""
    return quadratic_dsgd(DistComm(deterministic=True), seed)
