"""Argument checks shared by the problem constructors and solvers.

``TypeError`` for a value of the wrong type, ``ValueError`` for a value out of range; the message
names the argument and the allowed range. Integer and positivity checks come from
:mod:`commlab.data._checks`.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from commlab.data._checks import check_choice, check_int, check_positive

__all__ = ["check_choice", "check_dtype", "check_generator", "check_int", "check_nonnegative", "check_positive",
           "check_real_in", "check_tensor"]

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_nonnegative(name: str, value) -> float:
    """``value`` as a float that is finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a non-negative real number, got {type(value).__name__}: {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def check_real_in(name: str, value, low: float, high: float) -> float:
    """``value`` as a float in the closed interval ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number in [{low}, {high}], got {type(value).__name__}: {value!r}")
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_generator(generator) -> torch.Generator:
    """``generator`` if it is a ``torch.Generator`` (problems never use the global RNG)."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


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
