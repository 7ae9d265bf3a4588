"""Monte-Carlo checks of a compressor's stated constants on a given vector.

For a vector x and N independent compressions C_1(x), …, C_N(x), with e_t = ‖C_t(x) − x‖²/‖x‖²:

* ``error`` = mean_t e_t estimates E‖C(x) − x‖²/‖x‖², which is at most ω for an unbiased compressor
  and at most 1 − α for a contractive one; ``error_se`` = std_t(e_t)/√N is its standard error, so a
  stated bound B is contradicted only when ``(error − B) / error_se`` is large (:func:`excess_z`);
* ``bias_z`` = mean over coordinates j of t_j², with t_j = (x̄_j − x_j) / (s_j/√N) the t-statistic of
  coordinate j (x̄_j and s_j the mean and standard deviation of the N draws; coordinates that never
  vary are left out). Standardising each coordinate keeps a few large coordinates from dominating:
  for an unbiased compressor ``bias_z`` ≈ 1, for a biased one it grows like N;
* ``bits_per_value`` = payload bits / d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from commlab.compress.base import Compressor


@dataclass(frozen=True)
class Measured:
    """Empirical constants of one compressor on one vector (see the module docstring)."""

    error: float
    error_se: float
    bias_z: float
    bits_per_value: float
    trials: int


def measure(compressor: Compressor, x: torch.Tensor, trials: int, generator: torch.Generator) -> Measured:
    """Compress ``x`` (shape ``[d]``, not all zero) ``trials`` times, one call each, and measure.

    Calls are separate because a stacked call may share randomness across rows (shared-index
    Rand-k, PowerSGD's Q). A deterministic compressor is compressed once: its error is exact
    (``error_se`` = 0) and its ``bias_z`` is NaN (there is no spread to standardise by).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise ValueError(f"x must be a 1-D tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials must be an integer >= 2, got {trials!r}")
    norm_sq = x.double().pow(2).sum()
    if norm_sq == 0:
        raise ValueError("x must not be the zero vector")
    runs = trials if compressor.random else 1
    payloads = [compressor.compress(x, generator) for _ in range(runs)]
    samples = torch.stack([compressor.decompress(p) for p in payloads]).double()
    errors = (samples - x.double()).pow(2).sum(dim=1) / norm_sq
    if runs == 1:
        return Measured(float(errors[0]), 0.0, math.nan, payloads[0].bits / x.numel(), 1)
    spread = samples.std(dim=0)
    varies = spread > 0
    t = (samples.mean(dim=0) - x.double())[varies] / (spread[varies] / math.sqrt(runs))
    bias_z = float(t.pow(2).mean()) if bool(varies.any()) else math.nan
    error_se = float(errors.std() / math.sqrt(runs))
    return Measured(float(errors.mean()), error_se, bias_z, payloads[0].bits / x.numel(), runs)


def excess_z(measured: Measured, bound: float) -> float:
    """How many standard errors the measured error lies above ``bound`` (−inf/+inf when exact)."""
    if measured.error_se > 0:
        return (measured.error - bound) / measured.error_se
    return math.inf if measured.error > bound * (1 + 1e-9) + 1e-12 else -math.inf
