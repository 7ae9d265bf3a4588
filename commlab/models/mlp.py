"""A seeded ReLU MLP: the small encoders, heads and message codecs of several notebooks.

``relu_mlp((n_in, h_1, …, n_out), seed=s)`` is ``nn.Sequential(Linear, ReLU, …, Linear)``, ``[B, n_in] →
[B, n_out]``, with PyTorch's default initialisation drawn from ``seed`` inside
:func:`~commlab.seeding.seeded_init` (torch's global generator is left as it was).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from commlab._checks import check_int, check_seed
from commlab.seeding import seeded_init


def relu_mlp(sizes: Sequence[int], *, seed: int) -> nn.Sequential:
    """Linear layers of widths ``sizes`` (at least an input and an output width) with a ReLU between
    consecutive ones (none after the last), initialised from ``seed``."""
    if isinstance(sizes, int) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes!r}")
    sizes = [check_int("sizes", n, low=1) for n in sizes]
    layers: list[nn.Module] = []
    with seeded_init(check_seed(seed)):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)
