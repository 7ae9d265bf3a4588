"""Character language-model training and evaluation for sequence models (e.g.
:class:`~commlab.models.transformer.TinyTransformer`, or any module with ``loss(x, y)`` and
``token_log_probs(x, y)`` on int64 ``[B, T]`` ids).

* :func:`sequence_batch` — ``B`` windows of ``T + 1`` characters at start positions drawn from a
  generator, as inputs ``x = w[:, :T]`` and next-character targets ``y = w[:, 1:]`` (teacher forcing:
  every position is a prediction);
* :func:`sequence_windows` — the same at given start positions (fixed evaluation sets);
* :func:`train_lm` — AdamW on a batch source, linear warm-up then cosine decay of the learning rate;
* :func:`bits_per_char_at` — the mean cross-entropy in bits per character of a model on fixed windows.

Example::

    model = TinyTransformer(context=16, generator=tree.torch("init"))
    train_lm(model, lambda t: sequence_batch(corpus, 32, 16, tree.torch("batch", t)), steps=800, lr=3e-3)
    bpc = bits_per_char_at(model, val, starts, 16)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from commlab._checks import check_int, check_positive, check_real_number
from commlab.data.text import TextCorpus


def sequence_windows(corpus: TextCorpus, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x`` and targets ``y``, int64 ``[*S, length]`` each: ``x[..., j] = ids[s + j]`` and
    ``y[..., j] = ids[s + j + 1]`` for the starts ``s`` (``[*S]``, each in ``[0, len − length − 1]``)."""
    x, last = corpus.windows(starts, length)
    return x, torch.cat([x[..., 1:], last[..., None]], dim=-1)


def sequence_batch(corpus: TextCorpus, size, length: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_windows` at start positions drawn uniformly (with replacement) from ``generator``;
    ``size`` an int or a batch shape."""
    x, last = corpus.sample_windows(size, length, generator)
    return x, torch.cat([x[..., 1:], last[..., None]], dim=-1)


def train_lm(model: nn.Module, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]], *, steps: int,
             lr: float, warmup: int = 0, final_fraction: float = 0.1, weight_decay: float = 0.0,
             betas: tuple[float, float] = (0.9, 0.95)) -> list[float]:
    """Train ``model`` in place with AdamW on ``model.loss(x, y)`` for ``steps`` steps.

    The learning rate rises linearly over ``warmup`` steps to ``lr``, then follows a cosine from ``lr``
    down to ``final_fraction · lr`` at the last step: lr_t = lr·(f + (1 − f)·(1 + cos(π u))/2),
    u = (t − warmup)/(steps − warmup).

    Args:
        batches: ``batches(t) -> (x, y)``, the minibatch of step t (0-based).
        steps: >= 1; lr: > 0; warmup: 0 <= warmup < steps; final_fraction f in [0, 1].

    Returns:
        the training loss (nats) of every step.
    """
    steps = check_int("steps", steps, low=1)
    lr = check_positive("lr", lr)
    warmup = check_int("warmup", warmup, low=0, high=steps - 1)
    final_fraction = check_real_number("final_fraction", final_fraction, low=0.0, high=1.0)
    if not callable(batches):
        raise TypeError(f"batches must be callable as batches(step), got {type(batches).__name__}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters")
    optimiser = torch.optim.AdamW(trainable, lr=lr, betas=betas, weight_decay=weight_decay)

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        u = (t - warmup) / max(1, steps - 1 - warmup)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * u))

    losses = []
    for t in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = lr * factor(t)
        x, y = batches(t)
        loss = model.loss(x, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def bits_per_char_at(model: nn.Module, corpus: TextCorpus, starts: torch.Tensor, length: int, *,
                     chunk: int = 512) -> float:
    """Mean cross-entropy in bits per character of ``model`` on the windows of :func:`sequence_windows`
    (every position of every window, ``chunk`` windows per forward pass)."""
    chunk = check_int("chunk", chunk, low=1)
    total, count = 0.0, 0
    for part in torch.as_tensor(starts).reshape(-1).split(chunk):
        x, y = sequence_windows(corpus, part, length)
        logp = model.token_log_probs(x, y)
        total += float(-logp.double().sum())
        count += logp.numel()
    if count == 0:
        raise ValueError("starts is empty")
    return total / count / math.log(2)
