"""Argument checks shared by the problem constructors and solvers.

``TypeError`` for a value of the wrong type, ``ValueError`` for a value out of range; the message
names the argument and the allowed range. Scalar checks come from :mod:`commlab._checks`.
"""

from __future__ import annotations

import torch

from commlab._checks import check_choice, check_generator, check_int, check_nonnegative, check_positive, check_real_in

__all__ = ["check_choice", "check_dtype", "check_generator", "check_int", "check_nonnegative", "check_positive",
           "check_real_in", "check_tensor"]

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_dtype(dtype) -> torch.dtype:
    """``dtype`` if it is torch.float32 or torch.float64."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def check_tensor(name: str, value, shapes: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """``value`` if it is a finite floating tensor whose shape is one of ``shapes``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if tuple(value.shape) not in shapes:
        allowed = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {allowed}, got {list(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite (no NaN or Inf)")
    return value
