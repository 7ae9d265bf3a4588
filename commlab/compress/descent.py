"""Distributed (stochastic) gradient descent with compressed uplinks, for any error-feedback mechanism.

One round t, with n workers holding the oracle gradients G_t = [g_1(x_t); …; g_n(x_t)] (shape [n, d]):

    v_t     = mechanism.step(G_t)          # workers send compressed messages, the server decodes
    x_{t+1} = x_t − γ v_t                  # Plain (CSGD), EF21, EF21-W, EControl, DIANA

and for mechanisms that communicate the step itself (``mechanism.takes_step``, classic error
feedback :class:`~commlab.compress.ef.EF14`), ``v_t = mechanism.step(γ G_t)`` and x_{t+1} = x_t − v_t.
An uncompressed reference is ``Plain(Identity())``.

With ``start=True`` (EF21, EF21-W, EControl) round 0 is the dense initial message h_i = g_i(x_0):
the server then knows ∇f(x_0) = (1/n) Σ_i g_i(x_0) exactly and takes x_1 = x_0 − γ ∇f(x_0);
later rounds are compressed. Bits are counted from the payloads (values in the dtype of ``x0``).
A run whose gradients become NaN or Inf stops there: the remaining iterates are NaN and
``Trace.diverged`` is true.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch

from commlab.compress.ef import Mechanism


@dataclass(frozen=True)
class Trace:
    """What :func:`compressed_descent` records over T rounds.

    Attributes:
        iterates: x_0, …, x_T, shape [T + 1, d], dtype of ``x0``.
        grad_norm_sq: ‖(1/n) Σ_i g_i(x_t)‖² of the oracle's gradients at each iterate, float64 [T + 1]
            (‖∇f(x_t)‖² when the oracle is exact).
        bits: uplink bits per worker (mean over workers) spent before x_t, float64 [T + 1]; bits[0] = 0.
    """

    iterates: torch.Tensor
    grad_norm_sq: torch.Tensor
    bits: torch.Tensor

    @property
    def diverged(self) -> bool:
        """Whether the run stopped early on a non-finite gradient."""
        return not bool(torch.isfinite(self.iterates[-1]).all())


def compressed_descent(mechanism: Mechanism, oracle: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *,
                       gamma: float, steps: int, start: bool = False,
                       generator: torch.Generator | None = None) -> Trace:
    """Run ``steps`` rounds of compressed gradient descent from ``x0`` (see the module docstring).

    Args:
        mechanism: a fresh (or reset) :class:`~commlab.compress.ef.Mechanism`; it is reset here.
        oracle: ``x [d] -> [n, d]`` stacked worker gradients (exact or stochastic; a stochastic oracle
            owns its generator).
        x0: starting point, float tensor [d].
        gamma: step size γ > 0.
        steps: number of rounds T ≥ 1.
        start: send the dense initial message h_i = g_i(x_0) in round 0 (mechanisms with ``start``).
        generator: passed to the compressor (needed by randomised compressors).
    """
    if not isinstance(mechanism, Mechanism):
        raise TypeError(f"mechanism must be a commlab Mechanism, got {type(mechanism).__name__}")
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.ndim != 1:
        raise ValueError("x0 must be a floating torch.Tensor of shape [d]")
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if start and not hasattr(mechanism, "start"):
        raise ValueError(f"start=True needs a mechanism with a dense initial message, not {type(mechanism).__name__}")
    mechanism.reset()
    iterates = torch.empty(steps + 1, x0.numel(), dtype=x0.dtype)
    grad_norm_sq = torch.empty(steps + 1, dtype=torch.float64)
    bits = torch.zeros(steps + 1, dtype=torch.float64)
    x = x0.detach().clone()
    spent = 0.0
    for t in range(steps):
        iterates[t] = x
        grads = _checked(oracle(x), x)
        grad_norm_sq[t] = grads.mean(0).double().square().sum()
        if not bool(torch.isfinite(grads).all()):
            iterates[t:], grad_norm_sq[t:], bits[t + 1:] = math.nan, math.inf, spent
            return Trace(iterates, grad_norm_sq, bits)
        if t == 0 and start:
            payload = mechanism.start(grads)
            x = x - gamma * grads.mean(0)
        elif mechanism.takes_step:
            estimate, payload = mechanism.step(gamma * grads, generator)
            x = x - estimate
        else:
            estimate, payload = mechanism.step(grads, generator)
            x = x - gamma * estimate
        spent += payload.bits / grads.shape[0]
        bits[t + 1] = spent
    iterates[steps] = x
    grad_norm_sq[steps] = _checked(oracle(x), x).mean(0).double().square().sum()
    return Trace(iterates, grad_norm_sq, bits)


def _checked(grads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(grads, torch.Tensor) or grads.ndim != 2 or grads.shape[1] != x.numel():
        raise ValueError(f"oracle must return a tensor of shape [n, {x.numel()}], got "
                         f"{tuple(grads.shape) if isinstance(grads, torch.Tensor) else type(grads).__name__}")
    return grads
