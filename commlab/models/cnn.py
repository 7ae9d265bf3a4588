"""A small convolutional classifier for 28 × 28 grey images (Fashion-MNIST), the lab's DDP workhorse.

    x [B, 1, 28, 28] → conv 5×5 (c₁) → ReLU → max-pool 2 → conv 5×5 (c₂) → ReLU → max-pool 2
      → flatten [B, c₂·7·7] → linear (hidden) → ReLU → linear (classes) → logits [B, classes]

With the defaults (c₁, c₂, hidden) = (16, 32, 64) it has 114,314 float32 parameters (457 KB), so one
dense gradient exchange is large next to its compute: the regime where gradient compression pays.
No BatchNorm, so replicas stay exact copies under data parallelism (briefs/_conventions.md §6).
"""

from __future__ import annotations

import torch
from torch import nn

from commlab._checks import check_int


class SmallCNN(nn.Module):
    """Two conv blocks and two linear layers; ``forward`` maps ``[B, 1, 28, 28]`` to logits ``[B, classes]``."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 64, classes: int = 10):
        super().__init__()
        c1, c2 = (check_int("channels", c, low=1) for c in channels)
        hidden, classes = check_int("hidden", hidden, low=1), check_int("classes", classes, low=2)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"x must have shape [B, 1, 28, 28], got {tuple(x.shape)}")
        return self.head(self.features(x))
