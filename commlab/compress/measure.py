"""Monte-Carlo checks of a compressor's stated constants on a given vector.

For a vector x and N independent compressions C_1(x), …, C_N(x):

* ``error`` = (1/N) Σ_t ‖C_t(x) − x‖² / ‖x‖²: estimates E‖C(x) − x‖²/‖x‖², which is at most ω for an
  unbiased compressor and at most 1 − α for a contractive one;
* ``bias`` = ‖x̄ − x‖² / ‖x‖² with x̄ = (1/N) Σ_t C_t(x): for an unbiased compressor its expectation
  is error/N, so ``bias_z`` = bias · N / error is about 1 (a χ²-like ratio); a biased compressor
  gives a ``bias_z`` that grows with N;
* ``bits_per_value`` = payload bits / d.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from commlab.compress.base import Compressor


@dataclass(frozen=True)
class Measured:
    """Empirical constants of one compressor on one vector (see the module docstring)."""

    error: float
    bias: float
    bias_z: float
    bits_per_value: float
    trials: int


def measure(compressor: Compressor, x: torch.Tensor, trials: int, generator: torch.Generator) -> Measured:
    """Compress ``x`` (shape ``[d]``, not all zero) ``trials`` times, one call each, and measure.

    Calls are separate because a stacked call may share randomness across rows (shared-index
    Rand-k, PowerSGD's Q). Deterministic compressors are compressed once: their error is exact and
    their bias equals their error.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise ValueError(f"x must be a 1-D tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an integer >= 1, got {trials!r}")
    norm_sq = x.double().pow(2).sum()
    if norm_sq == 0:
        raise ValueError("x must not be the zero vector")
    runs = trials if compressor.random else 1
    payloads = [compressor.compress(x, generator) for _ in range(runs)]
    samples = torch.stack([compressor.decompress(p) for p in payloads]).double()
    error = (samples - x.double()).pow(2).sum(dim=1).mean() / norm_sq
    bias = (samples.mean(dim=0) - x.double()).pow(2).sum() / norm_sq
    bias_z = float(bias * runs / error) if error > 0 else 0.0
    return Measured(float(error), float(bias), bias_z, payloads[0].bits / x.numel(), runs)
