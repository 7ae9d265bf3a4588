"""Fitting and evaluating a classifier: the few lines every notebook and program would otherwise repeat.

* :func:`fit_classifier` — Adam on cross-entropy for a budget of minibatch steps over reshuffled
  epochs (:class:`~commlab.data.batches.EpochBatches`);
* :func:`predict_proba` — softmax probabilities in eval mode, in batches;
* :func:`accuracy` — the fraction of correct arg-max predictions, in batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from commlab._checks import check_int
from commlab.data.batches import EpochBatches


def fit_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int, batch_size: int,
                   lr: float, generator: torch.Generator,
                   on_step: Callable[[int, torch.optim.Optimizer], None] | None = None) -> list[float]:
    """Train ``model`` with Adam on cross-entropy for ``steps`` minibatch steps (reshuffled epochs).

    Args:
        model: maps ``images[idx]`` to logits ``[B, C]``.
        images: float ``[N, ...]``; labels: int64 ``[N]``.
        steps: optimiser steps (the budget is counted in steps, not epochs).
        batch_size: minibatch size, <= N.
        lr: Adam learning rate.
        generator: torch generator for the shuffling.
        on_step: called as ``on_step(step, optimizer)`` after each optimiser step (step counts
            from 1), e.g. to rewire a sparse model and reset the optimiser state of moved edges.

    Returns:
        The training loss of every step.
    """
    steps, batch_size = check_int("steps", steps, low=1), check_int("batch_size", batch_size, low=1)
    if len(images) != len(labels) or batch_size > len(labels):
        raise ValueError(f"need len(images) == len(labels) >= batch_size, got {len(images)}, {len(labels)}, "
                         f"{batch_size}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses, batches = [], EpochBatches(len(labels), batch_size, generator)
    for step in range(1, steps + 1):
        idx = next(batches)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, optimizer)
    model.eval()
    return losses




@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Softmax probabilities ``[N, C]`` of ``model`` in eval mode, computed in batches."""
    model.eval()
    return torch.cat([F.softmax(model(images[i:i + batch_size]), dim=1) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` ``[N, ...]`` whose arg-max logit equals ``labels`` ``[N]`` (eval mode)."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    model.train(was_training)
    return correct / len(labels)
