"""Power normalisation, dB conversion and the real/complex packing convention (conventions §4).

Signals are complex baseband tensors ``[batch, ..., n_symbols]`` (``torch.complex64``). Power is the
mean of ``|z_i|^2`` over the symbols of one example, so ``P = 1`` per complex symbol means a mean
square of ``1/2`` per real entry.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._checks import check_choice, check_real_number, require_complex, require_real

NORM_MODES = ("per_example", "per_batch", "peak")


def db_to_linear(db):
    """``10^(db/10)`` for floats, numpy arrays or tensors."""
    if isinstance(db, torch.Tensor):
        return torch.pow(10.0, db / 10.0)
    return np.power(10.0, np.asarray(db, dtype=float) / 10.0) if np.ndim(db) else 10.0 ** (float(db) / 10.0)


def linear_to_db(x):
    """``10·log10(x)`` for floats, numpy arrays or tensors (``x > 0``)."""
    if isinstance(x, torch.Tensor):
        return 10.0 * torch.log10(x)
    return 10.0 * np.log10(np.asarray(x, dtype=float)) if np.ndim(x) else 10.0 * math.log10(float(x))


def snr_db_to_no(snr_db, es: float = 1.0):
    """Noise variance per complex symbol ``N0 = Es · 10^(-SNR_dB/10)``."""
    return es / db_to_linear(snr_db)


def ebnodb2no(ebno_db, bits_per_symbol: float, coderate: float, es: float = 1.0):
    """``N0 = Es / (10^(EbN0_dB/10) · coderate · bits_per_symbol)`` (Sionna's convention)."""
    check_real_number("bits_per_symbol", bits_per_symbol, low=0.0, low_open=True)
    check_real_number("coderate", coderate, low=0.0, low_open=True)
    return es / (db_to_linear(ebno_db) * coderate * bits_per_symbol)


def real_to_complex(x: torch.Tensor, start_dim: int = 1) -> torch.Tensor:
    """Pack real entries into complex symbols: ``[B, ..., 2k]`` (flattened from ``start_dim``) -> ``[B, k]``.

    The first half of the flattened real vector gives the real parts and the second half the imaginary
    parts. :func:`complex_to_real` inverts it exactly.
    """
    require_real("x", x)
    flat = x.flatten(start_dim) if x.ndim > start_dim else x
    if flat.shape[-1] % 2:
        raise ValueError(f"x must hold an even number of reals per example to pair them, got {flat.shape[-1]}")
    k = flat.shape[-1] // 2
    return torch.complex(flat[..., :k].float(), flat[..., k:].float())


def complex_to_real(z: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Inverse of :func:`real_to_complex`: ``[B, k]`` complex -> ``[B, 2k]`` real (or ``[B, *shape]`` if given)."""
    require_complex("z", z)
    flat = torch.cat([z.real, z.imag], dim=-1)
    return flat if shape is None else flat.reshape(flat.shape[:-1] + tuple(shape))


def average_power(z: torch.Tensor, mode: str = "per_example") -> torch.Tensor:
    """Mean ``|z|^2`` per example (``[B]``), over the batch (scalar), or the peak ``|z|^2`` per example."""
    require_complex("z", z)
    check_choice("mode", mode, NORM_MODES)
    p = z.real.square() + z.imag.square()
    if mode == "per_batch":
        return p.mean()
    p = p.reshape(p.shape[0], -1)
    return p.amax(dim=1) if mode == "peak" else p.mean(dim=1)


def power_normalize(z: torch.Tensor, power: float = 1.0, mode: str = "per_example") -> torch.Tensor:
    """Scale ``z`` so that its power (see :func:`average_power`) equals ``power`` exactly; differentiable.

    ``per_example``: ``(1/k) Σ_i |z_i|^2 = P`` for each example (the default, per-image in Deep JSCC);
    ``per_batch``: the mean over the whole batch is ``P``; ``peak``: ``max_i |z_i|^2 = P`` per example.

    Exact at any amplitude: the power is measured on ``z / max|z|`` (so ``|z|^2`` neither underflows
    for weak signals nor overflows for strong ones), which does not change the result,
    ``z·sqrt(P / power(z))`` being invariant to that scale. An all-zero example stays zero.
    """
    power = check_real_number("power", power, low=0.0, low_open=True)
    require_complex("z", z)
    check_choice("mode", mode, NORM_MODES)
    magnitude = z.abs()
    peak = magnitude.amax() if mode == "per_batch" else magnitude.reshape(z.shape[0], -1).amax(dim=1)
    peak = peak.detach()  # the result does not depend on it (see above), so neither does the gradient
    silent = peak == 0
    peak = torch.where(silent, torch.ones_like(peak), peak)
    if mode != "per_batch":
        peak = peak.reshape((-1,) + (1,) * (z.ndim - 1))
        silent = silent.reshape(peak.shape)
    unit = z / peak
    current = average_power(unit, mode)
    current = current if mode == "per_batch" else current.reshape(peak.shape)
    scale = torch.sqrt(power / torch.where(silent, torch.ones_like(current), current))
    return torch.where(silent, torch.zeros_like(z), unit * scale)


class PowerNorm(nn.Module):
    """Module form of :func:`power_normalize` (``P = 1`` per complex symbol by default)."""

    def __init__(self, power: float = 1.0, mode: str = "per_example"):
        super().__init__()
        self.power = check_real_number("power", power, low=0.0, low_open=True)
        self.mode = check_choice("mode", mode, NORM_MODES)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return power_normalize(z, self.power, self.mode)

    def extra_repr(self) -> str:
        return f"power={self.power}, mode={self.mode!r}"
