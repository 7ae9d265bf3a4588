"""Multi-user superposition (uplink multiple-access channel) with per-user power.

``y = Σ_k h_k·sqrt(P_k)·x_k + w`` for unit-power user signals ``x_k``, ``w ~ CN(0, N0)``. With
``fading="rayleigh"`` each user has its own block gain ``h_k ~ CN(0, 1)`` per example; with
``"none"`` all ``h_k = 1``. Treating the others as noise, user k sees
``SINR_k = |h_k|² P_k / (Σ_{j≠k} |h_j|² P_j + N0)`` (conventions §4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_choice, check_generator, check_real_number, require_complex
from .awgn import AWGN, complex_normal
from .power import linear_to_db


@dataclass
class MACResult:
    """``y`` ``[B, ...]``: the superposition; ``h`` ``[B, K]``: the per-user gains (amplitude ``sqrt(P_k)``
    not included); ``no``: N0."""

    y: torch.Tensor
    h: torch.Tensor
    no: torch.Tensor


class MultiUserMAC(nn.Module):
    """K-user superposition channel; call as ``mac(x, generator=g)`` with ``x`` complex ``[B, K, ...]``.

    Args:
        snr_db / no: per-user SNR ``P/N0`` at unit power, or the noise variance, as in :class:`AWGN`.
        powers: per-user transmit powers ``P_k`` (linear, length K; default all 1).
        fading: ``"none"`` (``h_k = 1``) or ``"rayleigh"`` (``h_k ~ CN(0, 1)`` per example and user).
    """

    def __init__(self, snr_db: float | None = None, *, no: float | None = None, powers=None, fading: str = "none"):
        super().__init__()
        self.awgn = AWGN(snr_db, no=no)
        self.fading = check_choice("fading", fading, ("none", "rayleigh"))
        if powers is None:
            self.powers = None
        else:
            self.powers = torch.tensor([check_real_number("powers[k]", p, low=0.0) for p in powers],
                                       dtype=torch.float32)

    def _power_vector(self, n_users: int, device) -> torch.Tensor:
        if self.powers is None:
            return torch.ones(n_users, device=device)
        if self.powers.numel() != n_users:
            raise ValueError(f"powers has {self.powers.numel()} entries but x carries {n_users} users (axis 1)")
        return self.powers.to(device)

    def transmit(self, x: torch.Tensor, *, generator: torch.Generator | None) -> MACResult:
        """Superpose the users of ``x`` (complex ``[B, K, ...]``) and add noise."""
        require_complex("x", x)
        if x.ndim < 3:
            raise ValueError(f"x must be [batch, users, ..., n_symbols], got shape {tuple(x.shape)}")
        check_generator(generator, x)
        batch, n_users = x.shape[:2]
        amp = self._power_vector(n_users, x.device).sqrt()
        if self.fading == "rayleigh":
            h = complex_normal((batch, n_users), generator=generator, device=x.device)
        else:
            h = torch.ones(batch, n_users, dtype=x.dtype, device=x.device)
        gains = (h * amp).reshape((batch, n_users) + (1,) * (x.ndim - 2))
        clean = (gains * x).sum(dim=1)
        no_t = self.awgn.noise_variance(clean)
        return MACResult(self.awgn(clean, generator=generator, no=no_t), h, no_t)

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
        return self.transmit(x, generator=generator).y

    def sinr(self, h: torch.Tensor, no) -> torch.Tensor:
        """Per-user SINR (linear, ``[B, K]``) treating the other users as noise, for gains ``h`` ``[B, K]``."""
        received = h.abs().square() * self._power_vector(h.shape[1], h.device)
        total = received.sum(dim=1, keepdim=True)
        no_t = torch.as_tensor(no, dtype=torch.float32, device=h.device)
        if no_t.numel() > 1:  # per-example N0, shaped [B, 1, ...] or [B]
            no_t = no_t.reshape(no_t.shape[0], -1)[:, :1]
        return received / (total - received + no_t)

    def sinr_db(self, h: torch.Tensor, no) -> torch.Tensor:
        return linear_to_db(self.sinr(h, no))
