"""Argument checks shared by the channel models.

Each check raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a value out of
range; the message names the argument and the allowed range.
"""

from __future__ import annotations

import torch

from commlab._checks import check_choice, check_probability, check_real_number

__all__ = ["as_finite_tensor", "broadcast_per_example", "check_choice", "check_generator", "check_probability",
           "check_real_number", "require_complex", "require_real", "require_tensor"]


def require_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_complex(name: str, x) -> torch.Tensor:
    """``x`` if it is a complex tensor (complex baseband); a real tensor is rejected, not reinterpreted."""
    require_tensor(name, x)
    if not x.is_complex():
        raise TypeError(
            f"{name} must be a complex tensor (complex baseband), got dtype {x.dtype}; "
            "use commlab.channels.real_to_complex to pair real entries into complex symbols"
        )
    return x


def require_real(name: str, x) -> torch.Tensor:
    require_tensor(name, x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got dtype {x.dtype}")
    return x


def check_generator(generator, x: torch.Tensor) -> torch.Generator | None:
    """``generator`` if it is None or a ``torch.Generator`` on the device of ``x``."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but the signal is on {x.device}")
    return generator


def as_finite_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """``value`` (number or tensor) as a real float tensor on ``like``'s device; non-finite values rejected."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got dtype {value.dtype}")
        t = value.to(device=like.device, dtype=torch.float32)
    else:
        t = torch.as_tensor(check_real_number(name, value), dtype=torch.float32, device=like.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def broadcast_per_example(name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar, or a ``[batch]`` tensor of per-example values, shaped to broadcast against ``x``."""
    if t.ndim == 0:
        return t
    if t.ndim == 1 and x.ndim >= 1 and t.shape[0] == x.shape[0]:
        return t.reshape((-1,) + (1,) * (x.ndim - 1))
    try:
        torch.broadcast_shapes(t.shape, x.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} must be a scalar, a [batch] tensor ({x.shape[0]}) or "
            f"broadcastable to the signal shape {tuple(x.shape)}"
        ) from None
    return t
