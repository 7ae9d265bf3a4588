"""Federated rounds on a tiny heterogeneous quadratic, written once for SimComm and DistComm ranks
(module-level, so ``spawn`` can pickle the rank function)."""

from __future__ import annotations

import torch

from commlab.comm import DistComm


def quadratic(n_clients: int, d: int, seed: int = 0):
    """Client i's f_i(x) = ½ (x − a_i)ᵀ diag(h_i) (x − a_i); returns (a [N, d], h [N, d]) in float64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_clients, d, generator=g, dtype=torch.float64)
    h = 0.5 + torch.rand(n_clients, d, generator=g, dtype=torch.float64)
    return a, h


def noisy_gradients(a, h, seed: int = 0, noise: float = 0.1):
    """``grad_fn`` of the round driver: ∇f_i(y) plus noise seeded by (round, local step, client), so
    every backend draws the same noise for the same client."""
    def grad_fn(y, clients, t, k):
        noise_rows = [torch.randn(y.shape[1], dtype=y.dtype,
                                  generator=torch.Generator().manual_seed(seed * 10**6 + t * 10**4 + k * 100 + int(i)))
                      for i in clients.tolist()]
        return h[clients] * (y - a[clients]) + noise * torch.stack(noise_rows)
    return grad_fn


def run_rounds(method, a, h, rounds: int):
    """``rounds`` rounds; returns the server iterates ``[rounds + 1, d]`` and the per-round records."""
    grad_fn = noisy_gradients(a, h)
    xs, records = [method.x.clone()], []
    for _ in range(rounds):
        records.extend(method.round(grad_fn))
        xs.append(method.x.clone())
    return torch.stack(xs), records


def fl_rank(rank, world_size, make, n_clients, d, rounds):
    """``make(comm, params)`` builds the method on a deterministic DistComm; runs ``rounds`` rounds and
    returns the iterates, the records, this rank's client buffers with their client ids, and the meter."""
    comm = DistComm(deterministic=True)
    a, h = quadratic(n_clients, d)
    method = make(comm, torch.zeros(comm.local_workers, d, dtype=torch.float64))
    xs, records = run_rounds(method, a, h, rounds)
    return xs, records, method.hosted, method.buffers, method.c, float(comm.meter.bytes_sent[0])
