"""Keyed shuffle orthogonalisation (Zhang et al. 2025, "Enhanced OMDMA").

Each user permutes where its JSCC symbols sit on the channel with a permutation derived from a key by a
version-stable hash: ``perm = argsort(BLAKE2b(key ‖ i) for i in range(n))`` (conventions §7; never
``torch.randperm``, whose stream is not promised stable across versions). After the receiver undoes user
k's permutation, the other users' symbols land at positions given by ``Π_k⁻¹Π_j``, a permutation that looks
uniformly random, so their interference is decorrelated from user k's signal and spatially white.

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


@functools.lru_cache(maxsize=256)
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
        base = keyed_permutation(key, tokens if granularity == "token" else n_symbols)
        if granularity == "token":
            features = n_symbols // tokens
            base = (torch.arange(features)[:, None] * tokens + base[None, :]).reshape(-1)
        self.perm = base
        self.inverse = inverse_permutation(base)

    def _check(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(z).__name__}")
        if z.shape[-1] != self.n_symbols:
            raise ValueError(f"the last axis must have n_symbols={self.n_symbols} entries, got shape {tuple(z.shape)}")

    def shuffle(self, z: torch.Tensor) -> torch.Tensor:
        """``s = z[..., perm]``."""
        self._check(z)
        return z[..., self.perm.to(z.device)]

    def unshuffle(self, s: torch.Tensor) -> torch.Tensor:
        """``z = s[..., inverse]`` (exact inverse of :meth:`shuffle`)."""
        self._check(s)
        return s[..., self.inverse.to(s.device)]

    def __repr__(self) -> str:
        return f"Shuffler(n_symbols={self.n_symbols}, key={self.key!r}, granularity={self.granularity!r})"
