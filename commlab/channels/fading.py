"""Rayleigh and Rician block fading with perfect, noisy or no channel knowledge at the receiver.

``y = h·x + w`` with one gain ``h`` per example (or per block of ``block_size`` symbols along the last
axis), ``E|h|^2 = 1``, ``w ~ CN(0, N0)`` as in :class:`~commlab.channels.AWGN`, so the average received
SNR equals the requested SNR. Rician: ``h = sqrt(K/(K+1))·e^{jθ} + sqrt(1/(K+1))·CN(0,1)``; ``K = 0``
is Rayleigh.

Receiver channel knowledge (``csi``): ``"perfect"`` (``ĥ = h``), ``"noisy"`` (``ĥ = h + e`` with
``e ~ CN(0, σ_e²)``, by default ``σ_e² = N0``, one pilot at the data SNR) or ``"none"`` (no
equalisation; the receiver gets ``y``). Equalisers: ``"zf"`` (``y/ĥ``) or ``"mmse"``
(``ĥ*·y/(|ĥ|² + N0)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_choice, check_generator, check_real_number, require_complex
from .awgn import AWGN, complex_normal

CSI_MODES = ("perfect", "noisy", "none")
EQUALIZERS = ("zf", "mmse", None)


@dataclass
class FadingResult:
    """What one transmission produced: ``y`` as handed to the decoder (equalised unless ``csi="none"``),
    the raw received ``y_raw``, the true gains ``h`` and the receiver's estimate ``h_hat`` (both broadcastable
    against ``y``: ``[B, 1, ..., 1]`` with one gain per example, the shape of ``y`` with blocks; ``h_hat`` is
    None without CSI), and ``no`` (N0)."""

    y: torch.Tensor
    y_raw: torch.Tensor
    h: torch.Tensor
    h_hat: torch.Tensor | None
    no: torch.Tensor


class BlockFading(nn.Module):
    """Rician block fading (``k_factor = 0``: Rayleigh); call as ``channel(x, generator=g)``.

    Args:
        snr_db / no: average SNR (Es/N0 per complex symbol) or noise variance, as in :class:`AWGN`.
        k_factor: Rician K (LOS-to-scattered power ratio, linear, >= 0).
        los_phase: phase θ of the line-of-sight component, radians.
        block_size: symbols per fading block along the last axis (None: one gain per example).
        csi: ``"perfect"``, ``"noisy"`` or ``"none"``.
        csi_error_var: variance of the CSI error for ``csi="noisy"`` (None: equal to N0).
        equalizer: ``"zf"``, ``"mmse"`` (default with CSI) or None (return ``y`` unequalised).
    """

    def __init__(self, snr_db: float | None = None, *, no: float | None = None, k_factor: float = 0.0,
                 los_phase: float = 0.0, block_size: int | None = None, csi: str = "perfect",
                 csi_error_var: float | None = None, equalizer: str | None = "mmse"):
        super().__init__()
        self.awgn = AWGN(snr_db, no=no)
        self.k_factor = check_real_number("k_factor", k_factor, low=0.0)
        self.los_phase = check_real_number("los_phase", los_phase)
        if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)
                                       or block_size < 1):
            raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
        self.block_size = block_size
        self.csi = check_choice("csi", csi, CSI_MODES)
        self.csi_error_var = None if csi_error_var is None else check_real_number("csi_error_var", csi_error_var,
                                                                                  low=0.0)
        self.equalizer = check_choice("equalizer", equalizer, EQUALIZERS)
        if csi == "none" and equalizer is not None:
            raise ValueError("csi='none' cannot equalise: pass equalizer=None")

    def sample_gains(self, shape, *, generator: torch.Generator | None, device=None) -> torch.Tensor:
        """``shape`` i.i.d. gains with ``E|h|^2 = 1`` (Rician with this module's K and LOS phase)."""
        scattered = complex_normal(shape, generator=generator, device=device)
        k = self.k_factor
        los = complex(math.cos(self.los_phase), math.sin(self.los_phase)) * math.sqrt(k / (k + 1.0))
        return los + scattered * math.sqrt(1.0 / (k + 1.0))

    def _expand(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example gains ``g`` shaped to broadcast against ``x``, or per-block gains repeated to its shape."""
        if self.block_size is None:
            return g.reshape((-1,) + (1,) * (x.ndim - 1))
        return g.repeat_interleave(self.block_size, dim=-1)[..., :x.shape[-1]]

    def transmit(self, x: torch.Tensor, *, generator: torch.Generator | None, snr_db=None, no=None) -> FadingResult:
        """Send ``x`` (complex ``[batch, ..., n]``) and return everything the receiver and the analyst need."""
        require_complex("x", x)
        check_generator(generator, x)
        if self.block_size is None:
            gain_shape = (x.shape[0],)
        else:
            gain_shape = tuple(x.shape[:-1]) + (math.ceil(x.shape[-1] / self.block_size),)
        h = self._expand(self.sample_gains(gain_shape, generator=generator, device=x.device), x)
        no_t = self.awgn.noise_variance(x, snr_db, no)
        y_raw = self.awgn(h * x, generator=generator, no=no_t)
        if self.csi == "none":
            return FadingResult(y_raw, y_raw, h, None, no_t)
        h_hat = h
        if self.csi == "noisy":
            err_var = no_t if self.csi_error_var is None else torch.as_tensor(self.csi_error_var, device=x.device)
            err = self._expand(complex_normal(gain_shape, generator=generator, device=x.device), x)
            h_hat = h + err * torch.sqrt(err_var)
        y = equalize(y_raw, h_hat, no_t, self.equalizer)
        return FadingResult(y, y_raw, h, h_hat, no_t)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None, snr_db=None, no=None) -> torch.Tensor:
        """The signal handed to the decoder (equalised with the estimated gains unless ``csi="none"``)."""
        return self.transmit(x, generator=generator, snr_db=snr_db, no=no).y

    def extra_repr(self) -> str:
        return (f"k_factor={self.k_factor}, block_size={self.block_size}, csi={self.csi!r}, "
                f"equalizer={self.equalizer!r}")


def equalize(y: torch.Tensor, h_hat: torch.Tensor, no, method: str | None = "mmse") -> torch.Tensor:
    """One-tap equaliser: ``"zf"`` gives ``y/ĥ``, ``"mmse"`` gives ``ĥ*·y/(|ĥ|² + N0)``, None returns ``y``."""
    check_choice("method", method, EQUALIZERS)
    if method is None:
        return y
    if method == "zf":
        return y * (1.0 / h_hat)
    return y * (h_hat.conj() / (h_hat.abs().square() + no))


class RayleighBlockFading(BlockFading):
    """Rayleigh block fading, ``h ~ CN(0, 1)``: :class:`BlockFading` with ``k_factor = 0``."""

    def __init__(self, snr_db: float | None = None, **kwargs):
        if "k_factor" in kwargs:
            raise TypeError("RayleighBlockFading has no k_factor; use RicianBlockFading")
        super().__init__(snr_db, **kwargs)


class RicianBlockFading(BlockFading):
    """Rician block fading with factor ``k_factor`` (required): :class:`BlockFading`."""

    def __init__(self, snr_db: float | None = None, *, k_factor: float, **kwargs):
        super().__init__(snr_db, k_factor=k_factor, **kwargs)
