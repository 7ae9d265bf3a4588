"""Scalar argument checks shared across commlab (data loaders, problems, channels).

Each check raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a value out of
range, and the message names the argument and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python int, if it is an integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            allowed = f">= {low}"
        elif low is None:
            allowed = f"<= {high}"
        else:
            allowed = f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_seed(seed) -> int:
    """A seed for ``np.random.default_rng``: a non-negative integer."""
    return check_int("seed", seed, low=0)


def check_choice(name: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)!r}, got {value!r}")
    return value


def check_real_number(name: str, value, *, low: float | None = None, high: float | None = None,
                      low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the optional bounds (open at an end if ``*_open``)."""
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low}"
    else:
        allowed = "" if high is None else f"{'<' if high_open else '<='} {high}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite real number{' ' + allowed if allowed else ''}, "
                        f"got {type(value).__name__}: {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_fraction(name: str, value) -> float:
    """``value`` as a float strictly between 0 and 1."""
    return check_real_number(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


def check_positive(name: str, value) -> float:
    """``value`` as a float that is finite and > 0."""
    return check_real_number(name, value, low=0.0, low_open=True)


def check_nonnegative(name: str, value) -> float:
    """``value`` as a float that is finite and >= 0."""
    return check_real_number(name, value, low=0.0)


def check_real_in(name: str, value, low: float, high: float) -> float:
    """``value`` as a float in the closed interval ``[low, high]``."""
    return check_real_number(name, value, low=low, high=high)


def check_probability(name: str, value) -> float:
    """``value`` as a float in [0, 1]."""
    return check_real_number(name, value, low=0.0, high=1.0)


def check_generator(generator):
    """``generator`` if it is a ``torch.Generator`` (everything random in commlab takes one explicitly;
    the global RNG is never used)."""
    import torch

    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator
