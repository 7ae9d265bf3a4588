"""Binary symmetric and binary erasure channels for digital baselines.

Inputs are bit tensors (bool, integer or float holding only 0 and 1). Outputs are ``torch.int8``
(0/1; the erasure channel marks an erased bit with :data:`ERASED` = -1).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_generator, check_probability, require_tensor

ERASED = -1


def _bits(x) -> torch.Tensor:
    require_tensor("bits", x)
    if x.is_complex():
        raise TypeError(f"bits must be a real 0/1 tensor, got dtype {x.dtype}")
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("bits must contain only 0 and 1")
    return x.to(torch.int8)


class _MemorylessBitChannel(nn.Module):
    """What the bit channels share: the event probability ``p`` and one independent draw per bit."""

    def __init__(self, p: float):
        super().__init__()
        self.p = check_probability("p", p)

    def _events(self, bits: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bits as int8, mask)``: the mask is True, independently with probability ``p``, per bit."""
        b = _bits(bits)
        check_generator(generator, b)
        return b, torch.rand(b.shape, generator=generator, device=b.device) < self.p

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BinarySymmetricChannel(_MemorylessBitChannel):
    """Flip each bit independently with probability ``p``; capacity ``1 - h2(p)`` (see ``bounds``)."""

    def forward(self, bits: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        b, flips = self._events(bits, generator)
        return b ^ flips.to(torch.int8)


class BinaryErasureChannel(_MemorylessBitChannel):
    """Erase each bit independently with probability ``p`` (output :data:`ERASED`); capacity ``1 - p``."""

    def forward(self, bits: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        b, erased = self._events(bits, generator)
        return torch.where(erased, torch.full_like(b, ERASED), b)
