"""Fingerprints of parameter tensors, to check that replicas on different machines are bit-identical.

``state_hash(theta)`` is a short hex digest of a tensor's dtype, shape and raw bytes (BLAKE2b, stable
across processes, machines and library versions): two tensors have the same hash exactly when their
dtype, shape and every bit agree (up to hash collisions, 2^-64 for the 8-byte digest). ``-0.0`` and
``0.0`` hash differently, and so do NaNs with different payloads, as they should for a bit check::

    state_hash(theta)                # '3f9c0a...'  (16 hex digits)
    replica_hashes(thetas)           # one hash per row of a [L, d] stack of replicas
"""

from __future__ import annotations

import hashlib

import torch


def state_hash(x: torch.Tensor, *, digest_size: int = 8) -> str:
    """Hex BLAKE2b digest (``2 * digest_size`` hex digits) of ``x``'s dtype, shape and bytes (any device)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(digest_size, bool) or not isinstance(digest_size, int) or not 1 <= digest_size <= 64:
        raise ValueError(f"digest_size must be an integer in [1, 64], got {digest_size!r}")
    h = hashlib.blake2b(digest_size=digest_size)
    h.update(f"{x.dtype}|{tuple(x.shape)}|".encode())
    flat = x.detach().cpu().contiguous().reshape(-1)
    h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def replica_hashes(x: torch.Tensor) -> list[str]:
    """:func:`state_hash` of each row ``x[l]`` of a stack of replicas ``[L, ...]``."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError("x must be a tensor of shape [L, ...] (one row per replica)")
    return [state_hash(row) for row in x]
