"""Seeded minibatch samplers: which examples a worker trains on at each step.

Two ways to draw a minibatch, each written once:

* :func:`batch_indices` — counter-based draws *with* replacement from a worker's shard, keyed by
  ``(seed, step, worker)``: any process computes any worker's batch at any step without replaying
  the ones before, so simulated workers and real ranks (and a run resumed from a checkpoint) see
  the same batches.
  :func:`stacked_batch_indices` stacks them for the rows of a replica tensor ``[L, d]``.
* :class:`EpochBatches` — reshuffled epochs *without* replacement from one ``torch.Generator``:
  a permutation of ``[0, n)`` is consumed ``batch_size`` at a time, and a new permutation is drawn
  when the rest of the current one is shorter than a batch (that rest is skipped).
"""

from __future__ import annotations

import numpy as np
import torch

from commlab._checks import check_int
from commlab.seeding import SeedTree


def batch_indices(shard, step: int, batch_size: int, *, seed: int, worker: int) -> torch.Tensor:
    """Indices ``[batch_size]`` (int64) of worker ``worker``'s minibatch at ``step`` (0-based).

    Positions are drawn uniformly with replacement from ``shard`` (an index array of the worker's
    examples) by ``SeedTree(seed).torch("batch", step, worker)``.
    """
    shard = torch.as_tensor(np.asarray(shard), dtype=torch.int64)
    draw = torch.randint(len(shard), (batch_size,), generator=SeedTree(seed).torch("batch", step, worker))
    return shard[draw]


def stacked_batch_indices(shards, step: int, batch_size: int, *, seed: int, workers=None) -> torch.Tensor:
    """``[L, batch_size]`` int64: row l is :func:`batch_indices` of worker ``workers[l]`` (default: every
    worker ``0 … len(shards) − 1``) at ``step`` — the minibatches of stacked replicas, the same as the
    ranks of a real run draw."""
    workers = range(len(shards)) if workers is None else [int(w) for w in workers]
    return torch.stack([batch_indices(shards[w], step, batch_size, seed=seed, worker=w) for w in workers])


class EpochBatches:
    """Minibatches of ``batch_size`` indices from reshuffled permutations of ``[0, n)``.

    The first permutation is drawn from ``generator`` on construction, later ones when the current
    permutation has fewer than ``batch_size`` indices left; between batches the caller may draw
    other numbers from the same generator (noise, SNRs), which then interleave deterministically.

    Args:
        n: number of examples (>= 1).
        batch_size: indices per batch, 1 <= batch_size <= n.
        generator: the ``torch.Generator`` of the permutations.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n = check_int("n", n, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1, high=self.n)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        self.order = torch.randperm(self.n, generator=generator)
        self.position = 0

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> torch.Tensor:
        """The next batch ``[batch_size]`` (int64)."""
        if self.position + self.batch_size > self.n:
            self.order, self.position = torch.randperm(self.n, generator=self.generator), 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch
