"""Additive white Gaussian noise with the commlab SNR convention (conventions §4).

SNR is ``Es/N0`` per complex symbol with the *nominal* symbol energy ``Es`` (the power that
:class:`~commlab.channels.PowerNorm` guarantees, 1 by default): ``N0 = Es·10^(-SNR_dB/10)`` and the
noise is ``CN(0, N0)``, i.e. variance ``N0/2`` on each real component. The noise never depends on the
instantaneous signal power unless ``power="measured"`` is asked for explicitly.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import (
    as_finite_tensor,
    broadcast_per_example,
    check_choice,
    check_generator,
    check_real_number,
    require_complex,
    require_real,
)
from .power import average_power


def complex_normal(shape, *, generator: torch.Generator | None, device=None, dtype=torch.complex64) -> torch.Tensor:
    """``CN(0, 1)`` samples (variance 1/2 per real component) drawn from ``generator``."""
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    pair = torch.randn(tuple(shape) + (2,), generator=generator, device=device, dtype=real_dtype)
    return torch.view_as_complex(pair.mul_(0.5**0.5))  # in place: the same values as view_as_complex(pair) * 0.5**0.5


def _noise_variance(snr_db, no, es, x: torch.Tensor) -> torch.Tensor:
    """``N0`` as a tensor broadcastable against ``x`` from either ``no`` or ``snr_db``."""
    if no is not None:
        no_t = as_finite_tensor("no", no, x)
        if bool((no_t < 0).any()):
            raise ValueError(f"no (noise variance) must be >= 0, got {no!r}")
        return broadcast_per_example("no", no_t, x)
    snr = as_finite_tensor("snr_db", snr_db, x)
    return broadcast_per_example("snr_db", es / torch.pow(10.0, snr / 10.0), x)


class AWGN(nn.Module):
    """``y = x + w`` with ``w ~ CN(0, N0)``; batched, differentiable in ``x``, seeded by an explicit generator.

    Args:
        snr_db: Es/N0 in dB (scalar; a per-call value, or a ``[batch]`` tensor, may be passed to ``forward``).
        no: noise variance per complex symbol; overrides ``snr_db`` (as in Sionna).
        es: nominal symbol energy used to turn SNR into ``N0`` (1 per complex symbol by default).
        real: real-channel mode for systems that are real by construction: ``x`` is a real tensor and the
            noise is ``N(0, N0)`` per real dimension with ``N0 = es/SNR`` (SNR per real dimension).
        power: ``"nominal"`` (default: ``es`` is used) or ``"measured"`` (``es`` is replaced by each
            example's measured mean power; not the convention, for comparisons only).

    Call as ``channel(x, generator=g)``; ``x`` is complex ``[batch, ..., n_symbols]`` (real in real mode).
    """

    def __init__(self, snr_db: float | None = None, *, no: float | None = None, es: float = 1.0,
                 real: bool = False, power: str = "nominal"):
        super().__init__()
        if snr_db is None and no is None:
            raise ValueError("give either snr_db or no (noise variance per complex symbol)")
        self.snr_db = None if snr_db is None else check_real_number("snr_db", snr_db)
        self.no = None if no is None else check_real_number("no", no, low=0.0)
        self.es = check_real_number("es", es, low=0.0, low_open=True)
        self.real = bool(real)
        self.power = check_choice("power", power, ("nominal", "measured"))

    def noise_variance(self, x: torch.Tensor, snr_db=None, no=None) -> torch.Tensor:
        """``N0`` that a call with these arguments uses, broadcastable against ``x``."""
        if snr_db is None and no is None:
            snr_db, no = self.snr_db, self.no
        es = self.es
        if self.power == "measured":
            # mean |x|^2 per example (per real entry in real mode)
            measured = average_power(x if x.is_complex() else torch.complex(x, torch.zeros_like(x)))
            es = measured.detach().reshape((-1,) + (1,) * (x.ndim - 1))
        return _noise_variance(snr_db, no, es, x)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None, snr_db=None, no=None) -> torch.Tensor:
        """Add noise to ``x``. ``generator`` is required (pass ``None`` explicitly to use torch's global RNG).

        ``snr_db`` / ``no`` given here override the module's value for this call; either may be a
        ``[batch]`` tensor of per-example values.
        """
        if self.real:
            require_real("x", x)
        else:
            require_complex("x", x)
        check_generator(generator, x)
        no_t = self.noise_variance(x, snr_db, no)
        if self.real:
            w = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            w.mul_(torch.sqrt(no_t).to(w.dtype))  # w·sqrt(N0), scaled in place
        else:
            w = complex_normal(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            # w·sqrt(N0) as one real scaling of the (re, im) pairs in place: the same values as the complex product
            # w·(sqrt(N0) + 0i), without the complex multiply and its temporary
            torch.view_as_real(w).mul_(torch.sqrt(no_t).to(w.real.dtype).unsqueeze(-1))
        return x + w

    def extra_repr(self) -> str:
        level = f"no={self.no}" if self.no is not None else f"snr_db={self.snr_db}"
        return f"{level}, es={self.es}, real={self.real}, power={self.power!r}"
