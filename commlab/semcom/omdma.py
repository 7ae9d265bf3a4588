"""Multi-user uplink with one shared JSCC model and keyed shuffles (Zhang et al. 2025, reconstructed).

``s_k = Π_k z_k``; ``y = Σ_k a_k s_k + w`` with ``a_k = h_k·sqrt(P_k)``; the receiver for user k computes
``r_k = Π_k⁻¹(y / a_k)`` (zero-forcing by the user's own gain), so
``r_k = z_k + Σ_{j≠k} (a_j/a_k) Π_k⁻¹Π_j z_j + Π_k⁻¹ w / a_k``. Without shuffling (``keys=None``) every ``Π`` is
the identity and the interference stays aligned with the wanted features.

The receiver (a base station) knows every key and gain, so it knows the interference mean
``m_k = Σ_{j≠k} (a_j/a_k) Π_k⁻¹Π_j μ`` (μ: the mean feature vector) and its variance per real component,
``Σ_{j≠k} |a_j/a_k|²·s²/2 + N0/(2|a_k|²)`` with ``s² = mean_i E|z_i − μ_i|²``
(:meth:`ShuffledAccess.interference_model`).
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

    def transmit(self, z: torch.Tensor, *, generator: torch.Generator | None, frames=None) -> MACResult:
        """``z``: complex ``[B, K, n_symbols]`` unit-power features of the K users; ``frames`` (one index per
        example) selects per-frame permutations from each key's schedule (see :class:`Shuffler`)."""
        require_complex("z", z)
        if z.ndim != 3 or z.shape[-1] != self.n_symbols:
            raise ValueError(f"z must be [batch, users, {self.n_symbols}], got shape {tuple(z.shape)}")
        if self.shufflers is not None:
            if z.shape[1] != len(self.shufflers):
                raise ValueError(f"z carries {z.shape[1]} users but {len(self.shufflers)} keys were given")
            z = torch.stack([sh.shuffle(z[:, k], frames) for k, sh in enumerate(self.shufflers)], dim=1)
        return self.mac.transmit(z, generator=generator)

    def amplitudes(self, result: MACResult) -> torch.Tensor:
        """Effective gains ``a_k = h_k·sqrt(P_k)``, complex ``[B, K]``."""
        return result.h * self.mac._power_vector(result.h.shape[1], result.h.device).sqrt()

    def _unshuffle(self, y: torch.Tensor, user: int, key=None, frames=None) -> torch.Tensor:
        if key is not None:
            return self.shuffler(key).unshuffle(y, frames)
        return y if self.shufflers is None else self.shufflers[user].unshuffle(y, frames)

    def receive(self, result: MACResult, user: int, key=None, frames=None) -> torch.Tensor:
        """``r_k = Π_k⁻¹(y / a_k)`` for ``user`` (``[B, n_symbols]``), with the ``frames`` used to transmit.

        ``key`` replaces the user's key (the wrong-key privacy test)."""
        return self._unshuffle(result.y / self.amplitudes(result)[:, user:user + 1], user, key, frames)

    def interference_model(self, result: MACResult, user: int, feature_mean: torch.Tensor,
                           feature_spread: float, frames=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the receiver knows about ``r_k − z_k``: its mean ``[B, n]``, its variance per real component
        ``[B]`` and the SINR ``[B]`` (linear), from the features' mean vector ``μ`` ``[n]`` and spread ``s²``
        (see :func:`~commlab.semcom.feature_moments`)."""
        a = self.amplitudes(result)
        rel = a / a[:, user:user + 1]
        mean = torch.zeros(a.shape[0], self.n_symbols, dtype=torch.complex64, device=a.device)
        mu = feature_mean if frames is None else feature_mean.expand(a.shape[0], self.n_symbols)
        for j in range(a.shape[1]):
            if j != user:
                moved = mu
                if self.shufflers is not None:
                    moved = self._unshuffle(self.shufflers[j].shuffle(mu, frames), user, frames=frames)
                mean = mean + rel[:, j:j + 1] * moved
        others = rel.abs().square().sum(dim=1) - 1.0
        noise = torch.as_tensor(result.no, dtype=torch.float32).reshape(-1)
        noise = noise if noise.numel() == 1 else noise.reshape(a.shape[0], -1)[:, 0]
        var = others * feature_spread / 2 + noise / (2 * a[:, user].abs().square())
        sinr = 1.0 / (others * feature_spread + noise / a[:, user].abs().square())
        return mean, var, sinr

    def sinr(self, result: MACResult) -> torch.Tensor:
        """Per-user SINR (linear, ``[B, K]``) treating the other users as noise."""
        return self.mac.sinr(result.h, result.no)
