"""Keyed shuffle orthogonalisation (Zhang et al. 2025, "Enhanced OMDMA").

Each user permutes where its JSCC symbols sit on the channel with a permutation derived from a key by a
version-stable hash: ``perm = argsort(BLAKE2b(key ‖ i) for i in range(n))`` (conventions §7; never
``torch.randperm``, whose stream is not promised stable across versions). After the receiver undoes user
k's permutation, the other users' symbols land at positions given by ``Π_k⁻¹Π_j``, a permutation that looks
uniformly random, so their interference is decorrelated from user k's signal and spatially white.

With a fixed permutation, the interference that lands on each coordinate is uncorrelated but its variance
per coordinate depends on the key pair; a per-frame key schedule (:func:`frame_key`, ``frames=`` in
:meth:`Shuffler.shuffle`) draws a fresh keyed permutation for every transmitted block, so that this
averages out over blocks.

The key space is ``n!`` but this is **not** cryptographic security: a known-plaintext attack recovers a
permutation easily.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

GRANULARITIES = ("element", "token")


def _check_key(key) -> str:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"key must be an int or a str, got {type(key).__name__}: {key!r}")
    return f"{type(key).__name__}:{key}"


@functools.lru_cache(maxsize=16384)
def _permutation(tagged_key: str, n: int) -> np.ndarray:
    prefix = f"commlab.shuffle|{tagged_key}|".encode()
    digests = np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "little")
         for i in range(n)),
        dtype=np.uint64, count=n)
    perm = np.argsort(digests, kind="stable")
    perm.setflags(write=False)
    return perm


def keyed_permutation(key: int | str, n: int) -> torch.Tensor:
    """The permutation of ``range(n)`` (int64 ``[n]``) that ``key`` names; identical in every version and process."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return torch.from_numpy(_permutation(_check_key(key), n).copy())


def frame_key(key: int | str, frame: int) -> str:
    """The key of frame ``frame`` of a per-frame key schedule: a fresh permutation for every transmitted block."""
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise ValueError(f"frame must be a non-negative integer, got {frame!r}")
    return f"{_check_key(key)}#frame:{frame}"


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[perm] = arange(n)``, so ``s[..., inv]`` undoes ``z[..., perm]``."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


class Shuffler:
    """User-keyed permutation of the last axis (``n_symbols``) of a ``[..., n_symbols]`` tensor.

    Args:
        n_symbols: length of the last axis.
        key: the user's key (int or str).
        granularity: ``"element"`` permutes every symbol; ``"token"`` views the last axis as
            ``[n_symbols // tokens, tokens]`` (feature-major, which is how :func:`~commlab.channels.real_to_complex`
            lays out a ``[C, H, W]`` latent, with ``tokens = H·W``) and permutes the tokens, keeping each
            token's feature vector together.
        tokens: number of tokens (spatial positions) for ``granularity="token"``.

    ``shuffle`` and ``unshuffle`` are exact inverses and differentiable (plain indexing).
    """

    def __init__(self, n_symbols: int, key: int | str, granularity: str = "element", tokens: int | None = None):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or n_symbols < 1:
            raise ValueError(f"n_symbols must be a positive integer, got {n_symbols!r}")
        if granularity == "token":
            if not isinstance(tokens, int) or tokens < 1 or n_symbols % tokens:
                raise ValueError(f"tokens must be a positive divisor of n_symbols={n_symbols}, got {tokens!r}")
        elif tokens is not None:
            raise ValueError("tokens is only used with granularity='token'")
        self.n_symbols, self.key, self.granularity, self.tokens = n_symbols, key, granularity, tokens
        self.perm = self._expand(keyed_permutation(key, tokens if granularity == "token" else n_symbols))
        self.inverse = inverse_permutation(self.perm)

    def _expand(self, base: torch.Tensor) -> torch.Tensor:
        """A token permutation lifted to all symbols (each feature row moves its tokens the same way)."""
        if self.granularity == "element":
            return base
        features = self.n_symbols // self.tokens
        return (torch.arange(features)[:, None] * self.tokens + base[None, :]).reshape(-1)

    def frame_permutations(self, frames) -> torch.Tensor:
        """Per-frame permutations ``[len(frames), n_symbols]`` from the key schedule :func:`frame_key`."""
        size = self.tokens if self.granularity == "token" else self.n_symbols
        return torch.stack([self._expand(keyed_permutation(frame_key(self.key, int(f)), size)) for f in frames])

    def _check(self, z: torch.Tensor, frames) -> torch.Tensor | None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(z).__name__}")
        if z.shape[-1] != self.n_symbols:
            raise ValueError(f"the last axis must have n_symbols={self.n_symbols} entries, got shape {tuple(z.shape)}")
        if frames is None:
            return None
        frames = [int(f) for f in frames]
        if z.ndim < 2 or len(frames) != z.shape[0]:
            raise ValueError(f"frames must give one frame index per example ({z.shape[0]}), got {len(frames)}")
        return frames

    @staticmethod
    def _gather(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        index = index.to(z.device).reshape((z.shape[0],) + (1,) * (z.ndim - 2) + (z.shape[-1],))
        return torch.gather(z, -1, index.expand(z.shape))

    def shuffle(self, z: torch.Tensor, frames=None) -> torch.Tensor:
        """``s = z[..., perm]``; with ``frames`` (one index per example) example b uses frame ``frames[b]``'s
        permutation of the key schedule."""
        frames = self._check(z, frames)
        if frames is None:
            return z[..., self.perm.to(z.device)]
        return self._gather(z, self.frame_permutations(frames))

    def unshuffle(self, s: torch.Tensor, frames=None) -> torch.Tensor:
        """``z = s[..., inverse]`` (exact inverse of :meth:`shuffle` with the same ``frames``)."""
        frames = self._check(s, frames)
        if frames is None:
            return s[..., self.inverse.to(s.device)]
        return self._gather(s, torch.argsort(self.frame_permutations(frames), dim=-1))

    def __repr__(self) -> str:
        return f"Shuffler(n_symbols={self.n_symbols}, key={self.key!r}, granularity={self.granularity!r})"
