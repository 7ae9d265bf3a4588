"""Entropy coding with a static model: range asymmetric numeral systems (rANS, Duda 2013), vectorised over many
independent streams, so that a learned density's rate is measured in real bytes rather than as −log2 p.

Each stream codes a sequence of symbols ``s_i`` with a per-position context ``c_i`` (e.g. the channel of a
feature), whose integer frequencies ``f[c, s] >= 1`` sum to ``M = 2^precision`` and start at ``F[c, s] =
Σ_{t<s} f[c, t]``. With a state ``x`` kept in ``[L, 256·L)``, ``L = 2^23``, symbols are pushed in reverse order::

    renormalise   while x >= 2^(23 − precision + 8)·f:  emit x mod 256;  x ← ⌊x/256⌋
    encode        x ← ⌊x/f⌋·M + (x mod f) + F                   (the rANS step: C(s, x))
    decode        slot = x mod M,  s: F ≤ slot < F + f,  x ← f·⌊x/M⌋ + slot − F,  then read bytes while x < L

and the final state is written in 4 bytes at the front of the stream. A stream of n symbols costs about
``Σ_i −log2(f/M)`` bits plus at most 32 bits of flushed state (tests check both ends). The decoder checks
that it ends in the encoder's initial state: a truncated or corrupted stream usually raises ``ValueError``.

* :func:`quantised_frequencies` — integer tables from probabilities (every symbol keeps frequency >= 1);
* :func:`rans_encode` / :func:`rans_decode` — ``[N, n]`` symbols <-> N byte strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from commlab._checks import check_int

_LOW = 1 << 23  # L: the state lives in [L, 256·L)
_MAX_PRECISION = 16


def quantised_frequencies(pmf: np.ndarray, precision: int = _MAX_PRECISION) -> np.ndarray:
    """Integer frequencies ``[n_ctx, S]`` (int64, each >= 1, each row summing to ``2^precision``) close to
    ``pmf · 2^precision``; ``pmf`` ``[n_ctx, S]`` non-negative rows (normalised here), S <= 2^(precision−1)."""
    precision = check_int("precision", precision, low=8, high=_MAX_PRECISION)
    pmf = np.asarray(pmf, dtype=np.float64)
    if pmf.ndim != 2 or pmf.shape[1] < 1:
        raise ValueError(f"pmf must be [contexts, symbols], got shape {pmf.shape}")
    if pmf.shape[1] > 2 ** (precision - 1):
        raise ValueError(f"at most {2 ** (precision - 1)} symbols at precision {precision}, got {pmf.shape[1]}")
    if not np.isfinite(pmf).all() or (pmf < 0).any() or (pmf.sum(axis=1) <= 0).any():
        raise ValueError("pmf rows must be finite, non-negative and not all zero")
    total = 2**precision
    p = pmf / pmf.sum(axis=1, keepdims=True)
    freqs = np.maximum(1, np.round(p * (total - pmf.shape[1])).astype(np.int64) + 1)
    rows = np.arange(len(freqs))
    while True:  # move the rounding surplus or deficit onto each row's largest entries, keeping every f >= 1
        excess = freqs.sum(axis=1) - total
        if not excess.any():
            return freqs
        top = freqs.argmax(axis=1)
        freqs[rows, top] -= np.minimum(excess, freqs[rows, top] - 1)


def _check_tables(freqs: np.ndarray, contexts: np.ndarray, n: int, precision: int) -> tuple[np.ndarray, np.ndarray]:
    freqs = np.asarray(freqs)
    if freqs.ndim != 2 or not np.issubdtype(freqs.dtype, np.integer) or (freqs < 1).any() \
            or (freqs.sum(axis=1) != 2**precision).any():
        raise ValueError(f"freqs must be [contexts, symbols] integers >= 1 whose rows sum to 2^{precision}")
    contexts = np.asarray(contexts)
    if contexts.shape != (n,) or not np.issubdtype(contexts.dtype, np.integer) or \
            (n and (contexts.min() < 0 or contexts.max() >= len(freqs))):
        raise ValueError(f"contexts must be {n} integers in [0, {len(freqs)})")
    starts = np.concatenate([np.zeros((len(freqs), 1), np.int64), np.cumsum(freqs, axis=1)[:, :-1]], axis=1)
    return freqs.astype(np.int64), starts


def rans_encode(symbols: np.ndarray, freqs: np.ndarray, contexts: np.ndarray, *,
                precision: int = _MAX_PRECISION) -> list[bytes]:
    """One rANS stream per row of ``symbols`` ``[N, n]`` (integers in ``[0, S)``), position i coded with the
    frequencies ``freqs[contexts[i]]`` (``freqs`` ``[n_ctx, S]`` from :func:`quantised_frequencies` at the same
    ``precision``)."""
    precision = check_int("precision", precision, low=8, high=_MAX_PRECISION)
    symbols = np.asarray(symbols)
    if symbols.ndim != 2 or not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(f"symbols must be an [N, n] integer array, got {symbols.dtype} {symbols.shape}")
    lanes, n = symbols.shape
    freqs, starts = _check_tables(freqs, contexts, n, precision)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= freqs.shape[1]):
        raise ValueError(f"symbols must be in [0, {freqs.shape[1]})")
    x = np.full(lanes, _LOW, dtype=np.uint64)
    out = np.zeros((lanes, 2 * n + 4), dtype=np.uint8)  # at most 2 renormalisation bytes per symbol at precision 16
    pos = np.zeros(lanes, dtype=np.int64)
    shift = np.uint64(23 - precision + 8)
    for i in range(n - 1, -1, -1):  # rANS is a stack: push in reverse so the decoder reads forward
        ctx = contexts[i]
        f = freqs[ctx, symbols[:, i]].astype(np.uint64)
        x_max = f << shift
        while True:
            emit = np.flatnonzero(x >= x_max)
            if not emit.size:
                break
            out[emit, pos[emit]] = (x[emit] & np.uint64(255)).astype(np.uint8)
            pos[emit] += 1
            x[emit] >>= np.uint64(8)
        x = (x // f << np.uint64(precision)) + x % f + starts[ctx, symbols[:, i]].astype(np.uint64)  # C(s, x)
    for _ in range(4):  # flush the state; reversed below, it is read first, big-endian
        out[np.arange(lanes), pos] = (x & np.uint64(255)).astype(np.uint8)
        pos += 1
        x >>= np.uint64(8)
    return [out[k, :pos[k]][::-1].tobytes() for k in range(lanes)]


def rans_decode(streams: Sequence[bytes], n: int, freqs: np.ndarray, contexts: np.ndarray, *,
                precision: int = _MAX_PRECISION) -> np.ndarray:
    """Inverse of :func:`rans_encode`: ``[N, n]`` int64 symbols from N streams of ``n`` symbols each. Raises
    ``ValueError`` when a stream runs out of bytes, has bytes left over, or does not end in the initial state."""
    precision = check_int("precision", precision, low=8, high=_MAX_PRECISION)
    n = check_int("n", n, low=0)
    if isinstance(streams, bytes | bytearray) or not all(isinstance(s, bytes | bytearray) for s in streams):
        raise TypeError("streams must be a sequence of bytes")
    freqs, starts = _check_tables(freqs, contexts, n, precision)
    lanes = len(streams)
    lengths = np.array([len(s) for s in streams], dtype=np.int64)
    if lanes and lengths.min() < 4:
        raise ValueError("a rANS stream has at least 4 bytes (the state)")
    width = int(lengths.max()) if lanes else 4
    data = np.zeros((lanes, width + 2 * n + 1), dtype=np.uint64)  # zero padding: reading past the end is detected
    for k, s in enumerate(streams):
        data[k, :len(s)] = np.frombuffer(bytes(s), dtype=np.uint8)
    x = (data[:, 0] << np.uint64(24)) | (data[:, 1] << np.uint64(16)) | (data[:, 2] << np.uint64(8)) | data[:, 3]
    pos = np.full(lanes, 4, dtype=np.int64)
    mask = np.uint64(2**precision - 1)
    lut = np.concatenate([np.repeat(np.arange(freqs.shape[1]), f)[None] for f in freqs])  # slot -> symbol
    out = np.zeros((lanes, n), dtype=np.int64)
    for i in range(n):
        ctx = contexts[i]
        slot = x & mask
        s = lut[ctx, slot.astype(np.int64)]
        out[:, i] = s
        x = freqs[ctx, s].astype(np.uint64) * (x >> np.uint64(precision)) + slot - starts[ctx, s].astype(np.uint64)
        while True:
            read = np.flatnonzero(x < np.uint64(_LOW))
            if not read.size:
                break
            x[read] = (x[read] << np.uint64(8)) | data[read, pos[read]]
            pos[read] += 1
    if (pos != lengths).any() or (x != np.uint64(_LOW)).any():
        bad = int(np.flatnonzero((pos != lengths) | (x != np.uint64(_LOW)))[0])
        raise ValueError(f"rANS stream {bad} is corrupted or truncated (read {pos[bad]} of {lengths[bad]} bytes)")
    return out
