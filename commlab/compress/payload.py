"""What a compressor puts on the wire, and how many bits that is.

A :class:`Payload` is a tuple of :class:`Part` objects (values, indices, scales, codes), the
original shape and dtype. Every part knows its exact wire size, row by row (one row per worker):

* ``"float"`` parts send the raw bit pattern of their dtype (32 bits for float32, 16 for fp16/bf16,
  8 for fp8); ``"uint"`` parts send unsigned integer codes of ``width`` bits each (sign bits,
  QSGD levels, E3M0 codes);
* ``"index"`` parts send the sorted positions of the kept coordinates of a length-``dim`` row as
  whichever is cheaper: a list of ``k`` indices of ``ceil(log2 dim)`` bits, or a ``dim``-bit bitmap,
  so a row costs ``min(k * ceil(log2 dim), dim)`` bits (briefs/_conventions.md §5);
* ``"shared"`` parts cost nothing: both ends derive them from shared randomness (a shared seed),
  like the coordinates of shared-index Rand-k. They travel in the header.

Shapes, dtypes, the number of kept coordinates per row and the compressor's settings are static
metadata known to both ends (the :class:`Header`); they are not counted. :meth:`Payload.to_bytes`
writes exactly ``ceil(bits / 8)`` bytes and :meth:`Payload.from_bytes` reads them back.

Collectives move equal-sized byte rows: :meth:`Payload.pack_rows` writes several payloads as the rows
of one uint8 tensor (zero-padded to the longest when their sizes differ, as a sparsifier's do) and
:meth:`Payload.unpack_rows` reads them back given their headers. Every algorithm puts its payloads on
the wire through this one pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

_FLOAT_WIDTH = {
    torch.float64: 64,
    torch.float32: 32,
    torch.float16: 16,
    torch.bfloat16: 16,
    torch.float8_e4m3fn: 8,
    torch.float8_e5m2: 8,
}
_UINT_VIEW = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}


def index_width(dim: int) -> int:
    """Bits of one index into a row of ``dim`` coordinates: ``ceil(log2 dim)``, at least 1."""
    return max(1, math.ceil(math.log2(dim))) if dim > 1 else 1


def float_width(dtype: torch.dtype) -> int:
    """Bits of one value of floating dtype ``dtype`` on the wire."""
    if dtype not in _FLOAT_WIDTH:
        raise TypeError(f"no wire format for dtype {dtype}; use one of {sorted(map(str, _FLOAT_WIDTH))}")
    return _FLOAT_WIDTH[dtype]


@dataclass(frozen=True)
class Part:
    """One field of a payload, flattened over rows.

    Attributes:
        name: field name, e.g. ``"values"``, ``"indices"``, ``"scale"``.
        data: 1-D tensor holding the field for all rows, row after row.
        kind: ``"float"`` (raw bits of ``data.dtype``), ``"uint"`` (codes of ``width`` bits),
            ``"index"`` (sorted positions within a row of length ``dim``) or ``"shared"`` (known to
            both ends from a shared seed; 0 bits).
        counts: elements of ``data`` in each row (length W).
        width: bits per element for ``"uint"``; ``ceil(log2 dim)`` for ``"index"``; the dtype's width
            for ``"float"``.
        dim: row length the indices point into (``"index"`` parts only).
    """

    name: str
    data: torch.Tensor
    kind: str
    counts: tuple[int, ...]
    width: int
    dim: int = 0

    @classmethod
    def floats(cls, name: str, values: torch.Tensor) -> Part:
        """Values of shape ``[W, n]`` sent with the raw bits of their dtype."""
        rows, n = values.shape
        return cls(name, values.reshape(-1), "float", (n,) * rows, float_width(values.dtype))

    @classmethod
    def codes(cls, name: str, codes: torch.Tensor, width: int) -> Part:
        """Unsigned integer codes of shape ``[W, n]``, each below ``2**width``."""
        rows, n = codes.shape
        return cls(name, codes.reshape(-1).to(torch.int64), "uint", (n,) * rows, width)

    @classmethod
    def indices(cls, name: str, positions: torch.Tensor, counts, dim: int) -> Part:
        """Sorted positions, concatenated over rows; ``counts[w]`` of them belong to row ``w``."""
        counts = tuple(int(c) for c in counts)
        return cls(name, positions.reshape(-1).to(torch.int64), "index", counts, index_width(dim), dim)

    def row_bits(self) -> tuple[int, ...]:
        """Wire bits of this part in each row."""
        if self.kind == "index":
            return tuple(min(c * self.width, self.dim) for c in self.counts)
        if self.kind == "shared":
            return (0,) * len(self.counts)
        return tuple(c * self.width for c in self.counts)

    def rows(self) -> list[torch.Tensor]:
        """The part split back into its rows."""
        return list(torch.split(self.data, list(self.counts)))

    def header(self) -> tuple:
        dtype = self.data.dtype if self.kind == "float" else None
        shared = self.data if self.kind == "shared" else None
        return (self.name, self.kind, self.counts, self.width, self.dim, dtype, shared)


@dataclass(frozen=True)
class Header:
    """Static metadata both ends know: the original shape and dtype, and each part's layout."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    parts: tuple[tuple, ...]

    @property
    def bits(self) -> int:
        """Wire bits of a one-row payload with this header (what :attr:`Payload.bits` would give)."""
        total = 0
        for _, kind, counts, width, dim, _, _ in self.parts:
            if kind == "index":
                total += min(counts[0] * width, dim)
            elif kind != "shared":
                total += counts[0] * width
        return total

    @property
    def nbytes(self) -> int:
        """Bytes a one-row payload with this header packs to, ceil(bits / 8)."""
        return math.ceil(self.bits / 8)

    def with_count(self, count: int) -> Header:
        """The header of a one-row payload of the same layout whose parts each hold ``count`` entries
        (the kept values and their indices of a sparsifier that keeps a varying number)."""
        return Header(self.shape, self.dtype, tuple((p[0], p[1], (count,), *p[3:]) for p in self.parts))


@dataclass(frozen=True)
class Payload:
    """A compressed message for one vector ``[d]`` or a stack of worker rows ``[W, d]``.

    Attributes:
        parts: the fields that cross the wire.
        shape: shape of the compressed tensor.
        dtype: dtype of the compressed tensor (and of the decompressed one).
    """

    parts: tuple[Part, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype

    def __getitem__(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"payload has no part {name!r}; it has {[p.name for p in self.parts]}")

    @property
    def workers(self) -> int:
        return self.shape[0] if len(self.shape) == 2 else 1

    @cached_property
    def row_bits(self) -> tuple[int, ...]:
        """Wire bits sent by each row (worker); computed once."""
        totals = [0] * self.workers
        for part in self.parts:
            for w, bits in enumerate(part.row_bits()):
                totals[w] += bits
        return tuple(totals)

    @property
    def bits(self) -> int:
        """Total wire bits over all rows: values + indices + scales + codes."""
        return sum(self.row_bits)

    def split_rows(self) -> list[Payload]:
        """The payload of each row (worker) alone, each of shape ``[d]``; inverse of :meth:`stack`."""
        d = self.shape[-1]
        per_part = [part.rows() for part in self.parts]
        return [
            Payload(
                tuple(Part(p.name, rows[w], p.kind, (p.counts[w],), p.width, p.dim)
                      for p, rows in zip(self.parts, per_part, strict=True)),
                (d,),
                self.dtype,
            )
            for w in range(self.workers)
        ]

    @classmethod
    def stack(cls, rows: list[Payload]) -> Payload:
        """One ``[W, d]`` payload from W one-row payloads of shape ``[d]`` with the same layout."""
        if not rows:
            raise ValueError("stack needs at least one payload")
        first = rows[0]
        if len(first.shape) != 1:
            raise ValueError(f"stack takes one-row payloads of shape [d], got {first.shape}")
        def layout(payload: Payload) -> list[tuple]:
            return [(p.name, p.kind, p.width, p.dim) for p in payload.parts]

        for row in rows[1:]:
            if row.shape != first.shape or row.dtype != first.dtype or layout(row) != layout(first):
                raise ValueError("payloads to stack must come from the same compressor, shape and dtype")
        parts = tuple(
            Part(name, torch.cat([row.parts[i].data for row in rows]), kind,
                 tuple(row.parts[i].counts[0] for row in rows), width, dim)
            for i, (name, kind, width, dim) in enumerate(layout(first))
        )
        return cls(parts, (len(rows), first.shape[0]), first.dtype)

    @property
    def header(self) -> Header:
        return Header(tuple(self.shape), self.dtype, tuple(p.header() for p in self.parts))

    def to_bytes(self) -> bytes:
        """Pack every part into one bit stream of exactly ``ceil(self.bits / 8)`` bytes."""
        chunks = [_part_bits(part) for part in self.parts if part.kind != "shared"]
        stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
        assert stream.size == self.bits
        return np.packbits(stream, bitorder="little").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, header: Header) -> Payload:
        """Inverse of :meth:`to_bytes`, given the static ``header`` of the payload.

        The message is checked before and while it is parsed: its length must be the header's
        ``ceil(bits / 8)`` bytes with zero padding bits, and every index part must hold positions in
        ``[0, dim)`` in strictly increasing order (a bitmap exactly ``count`` set bits). A message
        that fails raises ``ValueError`` naming the part; bit flips inside values are not detected.
        """
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        bits = sum(_header_part_bits(kind, counts, width, dim) for _, kind, counts, width, dim, _, _ in header.parts)
        if len(data) != math.ceil(bits / 8):
            state = "truncated" if len(data) < math.ceil(bits / 8) else "extended"
            raise ValueError(f"payload of {len(data)} bytes is {state}: its header describes {bits} bits, "
                             f"{math.ceil(bits / 8)} bytes")
        stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        if stream[bits:].any():
            raise ValueError(f"payload padding bits after bit {bits} are not zero")
        parts, at = [], 0
        for name, kind, counts, width, dim, dtype, shared in header.parts:
            if kind == "shared":
                parts.append(Part(name, shared, kind, counts, width, dim))
                continue
            part, at = _read_part(stream, at, name, kind, counts, width, dim, dtype)
            parts.append(part)
        return cls(tuple(parts), header.shape, header.dtype)


    @staticmethod
    def pack_rows(payloads: list[Payload], *, width: int | None = None) -> torch.Tensor:
        """The wire bytes of each payload as one row of a uint8 tensor ``[len(payloads), B]`` (CPU).

        Args:
            payloads: the payloads, one per row.
            width: None: every payload must pack to the same B = ceil(bits / 8) bytes (a fixed-size
                compressor); a number of bytes B: each payload is zero-padded to it (payloads whose
                sizes differ, padded to the longest of all workers; the padding crosses the wire and a
                meter counts it; :meth:`unpack_rows` needs their headers).
        """
        blobs = [p.to_bytes() for p in payloads]
        longest = max((len(blob) for blob in blobs), default=0)
        if width is None:
            if any(len(blob) != longest for blob in blobs):
                raise ValueError("the payloads differ in size; packing them needs a fixed-size compressor or a width")
            width = longest
        elif width < longest:
            raise ValueError(f"width = {width} bytes is shorter than a payload of {longest} bytes")
        rows = torch.zeros(len(blobs), width, dtype=torch.uint8)
        for row, blob in zip(rows, blobs, strict=True):
            if blob:
                row[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        return rows

    @staticmethod
    def unpack_rows(rows: torch.Tensor, headers: Header | list[Header]) -> list[Payload]:
        """Inverse of :meth:`pack_rows`: one payload per byte row of ``rows`` ``[N, B]`` (any device), given
        one header for all rows or one per row (each row's padding beyond ``ceil(bits / 8)`` is dropped)."""
        rows = rows.cpu()
        if isinstance(headers, Header):
            return [Payload.from_bytes(bytes(row.numpy()), headers) for row in rows]
        if len(headers) != len(rows):
            raise ValueError(f"unpack_rows got {len(rows)} rows and {len(headers)} headers")
        return [Payload.from_bytes(bytes(row[: h.nbytes].numpy()), h)
                for row, h in zip(rows, headers, strict=True)]


def _uint_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Little-endian bits of unsigned integers, ``width`` bits each, as a flat uint8 array."""
    if width in _WHOLE_BYTES:  # the bits of the little-endian bytes, one unpack
        raw = np.ascontiguousarray(values.astype(_WHOLE_BYTES[width]))
        return np.unpackbits(raw.view(np.uint8), bitorder="little")
    shifts = np.arange(width, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)


def _bits_uint(bits: np.ndarray, width: int) -> np.ndarray:
    if width in _WHOLE_BYTES:
        return np.packbits(bits, bitorder="little").view(_WHOLE_BYTES[width]).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(width, dtype=np.uint64))
    return (bits.reshape(-1, width).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


_WHOLE_BYTES = {8: np.dtype("<u1"), 16: np.dtype("<u2"), 32: np.dtype("<u4"), 64: np.dtype("<u8")}


def _part_bits(part: Part) -> np.ndarray:
    if part.kind == "float":
        raw = part.data.contiguous().view(_UINT_VIEW[part.width]).numpy().view(f"u{part.width // 8}")
        return _uint_bits(raw, part.width)
    if part.kind == "uint":
        return _uint_bits(part.data.numpy(), part.width)
    out = []
    for positions in part.rows():
        if len(positions) * part.width > part.dim:  # a bitmap is cheaper than the index list
            bitmap = np.zeros(part.dim, dtype=np.uint8)
            bitmap[positions.numpy()] = 1
            out.append(bitmap)
        else:
            out.append(_uint_bits(positions.numpy(), part.width))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint8)


def _header_part_bits(kind: str, counts, width: int, dim: int) -> int:
    """Wire bits of one part of a header, over all its rows (:meth:`Part.row_bits` summed)."""
    if kind == "shared":
        return 0
    if kind == "index":
        return sum(min(count * width, dim) for count in counts)
    return sum(counts) * width


def _checked_positions(positions: np.ndarray, name: str, dim: int) -> np.ndarray:
    """``positions`` of a decoded index list, or a ``ValueError`` if they are out of ``[0, dim)``,
    unsorted or repeated (no compressor sends such a list)."""
    if positions.size and positions.max() >= dim:
        raise ValueError(f"index part {name!r}: position {int(positions.max())} is out of range for dim {dim}")
    if positions.size > 1 and not (np.diff(positions) > 0).all():
        raise ValueError(f"index part {name!r}: positions are not strictly increasing (unsorted or repeated)")
    return positions


def _read_part(stream, at, name, kind, counts, width, dim, dtype) -> tuple[Part, int]:
    if kind in ("float", "uint"):
        n = sum(counts) * width
        codes = _bits_uint(stream[at : at + n], width)
        if kind == "float":
            raw = torch.from_numpy(codes.astype(f"u{width // 8}").view(f"i{width // 8}").copy())
            data = raw.view(dtype) if width > 8 else raw.view(torch.uint8).view(dtype)
        else:
            data = torch.from_numpy(codes.astype(np.int64))
        return Part(name, data, kind, counts, width, dim), at + n
    rows = []
    for count in counts:
        if count * width > dim:
            positions = np.flatnonzero(stream[at : at + dim])
            if positions.size != count:
                raise ValueError(f"index part {name!r}: the bitmap sets {positions.size} positions, "
                                 f"its header says {count}")
            rows.append(positions)
            at += dim
        else:
            rows.append(_checked_positions(_bits_uint(stream[at : at + count * width], width).astype(np.int64),
                                           name, dim))
            at += count * width
    data = torch.from_numpy(np.concatenate(rows).astype(np.int64)) if rows else torch.zeros(0, dtype=torch.int64)
    return Part(name, data, kind, counts, width, dim), at
