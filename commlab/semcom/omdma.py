"""Multi-user uplink with one shared JSCC model and keyed shuffles (Zhang et al. 2025, reconstructed).

``s_k = Π_k z_k``; ``y = Σ_k h_k s_k + w``; the receiver for user k computes ``r_k = Π_k⁻¹(y / h_k)``
(zero-forcing by the user's own gain), so ``r_k = z_k + Σ_{j≠k} (h_j/h_k) Π_k⁻¹Π_j z_j + Π_k⁻¹ w / h_k``.
Without shuffling (``keys=None``) every ``Π`` is the identity and the interference stays aligned with the
wanted features.
"""

from __future__ import annotations

import torch

from commlab.channels import MACResult, MultiUserMAC
from commlab.channels._checks import require_complex

from .shuffle import Shuffler


class ShuffledAccess:
    """K users sharing one channel; user k permutes its symbols with the key ``keys[k]``.

    Args:
        n_symbols: complex symbols per user.
        keys: one key per user, or None for no shuffling.
        mac: the :class:`~commlab.channels.MultiUserMAC` (noise, per-user powers, fading).
        granularity / tokens: passed to :class:`~commlab.semcom.Shuffler`.
    """

    def __init__(self, n_symbols: int, keys, mac: MultiUserMAC, granularity: str = "element",
                 tokens: int | None = None):
        self.n_symbols, self.mac, self.granularity, self.tokens = n_symbols, mac, granularity, tokens
        self.shufflers = None if keys is None else [self.shuffler(key) for key in keys]

    def shuffler(self, key) -> Shuffler:
        return Shuffler(self.n_symbols, key, self.granularity, self.tokens)

    def transmit(self, z: torch.Tensor, *, generator: torch.Generator | None) -> MACResult:
        """``z``: complex ``[B, K, n_symbols]`` unit-power features of the K users."""
        require_complex("z", z)
        if z.ndim != 3 or z.shape[-1] != self.n_symbols:
            raise ValueError(f"z must be [batch, users, {self.n_symbols}], got shape {tuple(z.shape)}")
        if self.shufflers is not None:
            if z.shape[1] != len(self.shufflers):
                raise ValueError(f"z carries {z.shape[1]} users but {len(self.shufflers)} keys were given")
            z = torch.stack([sh.shuffle(z[:, k]) for k, sh in enumerate(self.shufflers)], dim=1)
        return self.mac.transmit(z, generator=generator)

    def receive(self, result: MACResult, user: int, key=None) -> torch.Tensor:
        """``r_k = Π⁻¹(y / h_k)`` for ``user`` (``[B, n_symbols]``).

        ``key`` replaces the user's key (the wrong-key privacy test)."""
        y = result.y / result.h[:, user:user + 1]
        if key is not None:
            return self.shuffler(key).unshuffle(y)
        return y if self.shufflers is None else self.shufflers[user].unshuffle(y)

    def sinr(self, result: MACResult) -> torch.Tensor:
        """Per-user SINR (linear, ``[B, K]``) treating the other users as noise."""
        return self.mac.sinr(result.h, result.no)
