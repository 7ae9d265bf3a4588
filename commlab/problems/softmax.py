"""Multinomial logistic regression evaluated on per-machine minibatches: the loss oracle of the
one-byte (shared-seed SPSA) experiments, picklable so that separate processes can evaluate it."""

from __future__ import annotations

import torch

from commlab._checks import check_int, check_seed
from commlab.data.batches import batch_indices


class SoftmaxRegression:
    """Multinomial logistic regression as a zeroth-order loss oracle (e.g. of
    :class:`commlab.distributed.spsa.SharedSeedSPSA`), on per-machine shards.

    θ = (W ``[features, classes]`` row-major, then b ``[classes]``), d = features·classes + classes. The
    oracle ``loss(params [S, 2, d], machine, step) -> [S, 2]`` evaluates both rows of sample s on machine
    ``machine``'s minibatch ``batch_indices(shards[machine], step·S + s, batch_size, seed=seed,
    worker=machine)``: the cross-entropy averaged over the batch. A module-level class holding only
    tensors, so it pickles to processes started by
    :func:`commlab.distributed.spsa.run_on_ranks`.

    Args:
        x: ``[n, features]`` floating inputs (float64 for bit-identical replicas).
        y: ``[n]`` int64 labels in ``[0, classes)``.
        shards: one index array per machine (e.g. ``commlab.data.partition.iid``).
        batch_size: examples per loss evaluation, >= 1.
        seed: the minibatch seed.
        classes: number of classes (default ``max(y) + 1``).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, shards, batch_size: int, *, seed: int,
                 classes: int | None = None):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
            raise TypeError(f"x must be a floating tensor [n, features], got {_describe(x)}")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            raise TypeError(f"y must be an int64 tensor [{x.shape[0]}], got {_describe(y)}")
        self.x, self.y = x, y
        self.shards = [torch.as_tensor(s, dtype=torch.int64) for s in shards]
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.seed = check_seed(seed)
        self.classes = int(y.max()) + 1 if classes is None else check_int("classes", classes, low=2)
        self.features = x.shape[1]

    @property
    def d(self) -> int:
        """Number of parameters, features·classes + classes."""
        return self.features * self.classes + self.classes

    def logits(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``params`` ``[..., d]`` on inputs ``x`` ``[..., B, features]`` -> ``[..., B, classes]``."""
        F, C = self.features, self.classes
        W = params[..., : F * C].reshape(*params.shape[:-1], F, C)
        return x @ W + params[..., None, F * C :]

    def __call__(self, params: torch.Tensor, machine: int, step: int) -> torch.Tensor:
        n, B = params.shape[0], self.batch_size
        idx = torch.stack([batch_indices(self.shards[machine], step * n + s, B, seed=self.seed, worker=machine)
                           for s in range(n)])
        logits = self.logits(params, self.x[idx][:, None])  # [S, 2, B, classes]
        labels = self.y[idx][:, None].expand(n, 2, B)
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, self.classes), labels.reshape(-1),
                                                   reduction="none")
        return losses.view(n, 2, -1).mean(-1)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
