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

The message is one little-endian bit stream (bit ``j`` is bit ``j % 8`` of byte ``j // 8``): the parts
in order, each part row after row, each value's ``width`` bits lowest first (a float's bits are those
of its dtype's integer view; a bitmap sets bit ``p`` of its ``dim`` bits for each kept position
``p``), zero bits padding the last byte.

Collectives move equal-sized byte rows: :meth:`Payload.pack_rows` writes several payloads as the rows
of one uint8 tensor (zero-padded to the longest when their sizes differ, as a sparsifier's do) and
:meth:`Payload.unpack_rows` reads them back given their headers. Every algorithm puts its payloads on
the wire through this one pair. Both work with torch integer ops on the tensors' own device: a CUDA
payload packs into a CUDA uint8 tensor and a CUDA byte tensor decodes into CUDA parts, with no copy
of the data to the host (only the few scalars the checks below test). ``to_bytes`` and
``from_bytes`` hand Python ``bytes`` across, so they end and start on the host.

Decoding checks what it reads (:meth:`Payload.from_bytes`): a truncated or extended message, nonzero
padding, an index list out of range, unsorted or repeated, or a bitmap whose population is not its
count raises a ``ValueError`` naming the part. Flipped bits inside values pass those checks; to catch
them, :meth:`Payload.with_crc` appends a ``"crc"`` part: for each row, the CRC-32 of that row's own
message without it (``zlib.crc32``, the IEEE 802.3 polynomial), 32 bits counted in the bits like any
other part, so ``ceil(bits / 8) == len(to_bytes())`` still holds. The header then carries the part,
the receiver recomputes the CRC and a mismatch raises a ``ValueError`` naming the CRC: every pattern of
1 to 3 flipped bits in a row message of up to 91,607 bits before its CRC is caught (CRC-32's Hamming
distance is 4 up to that length), and any other error escapes with probability about 2^-32. With
:meth:`pack_rows` each row is one message with its own CRC. The CRC is computed by zlib on the host:
with a CRC, each row's bytes are copied to the host once at either end (and the sender packs each row
twice). Add it last, after any :meth:`~commlab.compress.base.Compressor.reduce`, which does not
recompute it.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

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


@dataclass(frozen=True, eq=False)
class Part:
    """One field of a payload, flattened over rows. Two parts are equal when their fields are and their
    data has the same dtype, device and elements (so a payload equals its decoded message).

    Attributes:
        name: field name, e.g. ``"values"``, ``"indices"``, ``"scale"``.
        data: 1-D tensor holding the field for all rows, row after row.
        kind: ``"float"`` (raw bits of ``data.dtype``), ``"uint"`` (codes of ``width`` bits),
            ``"index"`` (sorted positions within a row of length ``dim``), ``"shared"`` (known to
            both ends from a shared seed; 0 bits) or ``"crc"`` (one 32-bit CRC-32 per row, from
            :meth:`Payload.with_crc`).
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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Part):
            return NotImplemented
        same = (self.name, self.kind, self.counts, self.width, self.dim, self.data.dtype, self.data.device) == \
            (other.name, other.kind, other.counts, other.width, other.dim, other.data.dtype, other.data.device)
        # bit for bit: float8 has no equality kernel, and NaN payloads compare equal to themselves
        return same and torch.equal(_as_bits(self.data), _as_bits(other.data))

    __hash__ = None  # equality looks at the data, which can change


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
        """The header of a one-row payload of the same layout that keeps ``count`` coordinates (a
        sparsifier that keeps a varying number): its ``"values"`` part and index parts hold ``count``
        entries; the other parts (a count field, a scale, a CRC) keep theirs."""
        parts = tuple((p[0], p[1], (count,) if p[1] == "index" or p[0] == "values" else p[2], *p[3:])
                      for p in self.parts)
        return Header(self.shape, self.dtype, parts)


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

    @property
    def device(self) -> torch.device:
        """The device the payload's tensors live on (that of its first part; CPU when it has none)."""
        return self.parts[0].data.device if self.parts else torch.device("cpu")

    def with_crc(self) -> Payload:
        """This payload with a ``"crc"`` part appended: one CRC-32 per row, 32 bits each, over the row's
        message without it (``zlib.crc32(row.to_bytes())``); see the module docstring."""
        if any(part.kind == "crc" for part in self.parts):
            raise ValueError("the payload already has a CRC part")
        sums = torch.tensor([zlib.crc32(row.to_bytes()) for row in self.split_rows()], device=self.device)
        return Payload((*self.parts, Part("crc", sums, "crc", (1,) * self.workers, 32)), self.shape, self.dtype)

    def to_bytes(self) -> bytes:
        """Pack every part into one bit stream of exactly ``ceil(self.bits / 8)`` bytes."""
        return _pack([self])[0].cpu().numpy().tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, header: Header) -> Payload:
        """Inverse of :meth:`to_bytes`, given the static ``header`` of the payload (tensors on the CPU).

        The message is checked before and while it is parsed: its length must be the header's
        ``ceil(bits / 8)`` bytes with zero padding bits, and every index part must hold positions in
        ``[0, dim)`` in strictly increasing order (a bitmap exactly ``count`` set bits). A header with a
        ``"crc"`` part (:meth:`with_crc`) has its CRC-32 recomputed too, which catches flipped bits inside
        values. A message that fails raises ``ValueError`` naming the part or the CRC.
        """
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        message = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
        return _unpack(message[None], [header])[0]

    @staticmethod
    def pack_rows(payloads: list[Payload], *, width: int | None = None) -> torch.Tensor:
        """The wire bytes of each payload as one row of a uint8 tensor ``[len(payloads), B]`` on the
        payloads' device (all on one; CPU for an empty list), packed there with torch ops.

        Args:
            payloads: the payloads, one per row.
            width: None: every payload must pack to the same B = ceil(bits / 8) bytes (a fixed-size
                compressor); a number of bytes B: each payload is zero-padded to it (payloads whose
                sizes differ, padded to the longest of all workers; the padding crosses the wire and a
                meter counts it; :meth:`unpack_rows` needs their headers).
        """
        devices = {p.device for p in payloads}
        if len(devices) > 1:
            raise ValueError(f"the payloads to pack live on several devices: {sorted(map(str, devices))}")
        sizes = [math.ceil(p.bits / 8) for p in payloads]
        longest = max(sizes, default=0)
        if width is None:
            if any(size != longest for size in sizes):
                raise ValueError("the payloads differ in size; packing them needs a fixed-size compressor or a width")
            width = longest
        elif width < longest:
            raise ValueError(f"width = {width} bytes is shorter than a payload of {longest} bytes")
        rows = torch.zeros(len(payloads), width, dtype=torch.uint8, device=devices.pop() if devices else None)
        for start, stop in _batches([_layout(p.header) for p in payloads], sizes):
            rows[start:stop, : sizes[start]] = _pack(payloads[start:stop])
        return rows

    @staticmethod
    def unpack_rows(rows: torch.Tensor, headers: Header | list[Header]) -> list[Payload]:
        """Inverse of :meth:`pack_rows`: one payload per byte row of ``rows`` (uint8 ``[N, B]``), decoded on
        ``rows``' device, given one header for all rows (each row must then be exactly its ``ceil(bits / 8)``
        bytes) or one per row (each row's padding beyond ``ceil(bits / 8)`` is dropped)."""
        if not isinstance(rows, torch.Tensor) or rows.dtype != torch.uint8:
            raise TypeError(f"rows must be a uint8 tensor, got {getattr(rows, 'dtype', type(rows).__name__)}")
        if rows.dim() != 2:
            raise ValueError(f"rows must have shape [N, B], got {list(rows.shape)}")
        whole = isinstance(headers, Header)  # one header: each row is exactly a message
        if whole:
            headers = [headers] * len(rows)
        elif len(headers) != len(rows):
            raise ValueError(f"unpack_rows got {len(rows)} rows and {len(headers)} headers")
        return [payload for start, stop in _batches([_layout(h) for h in headers], [h.nbytes for h in headers])
                for payload in _unpack(rows[start:stop] if whole else rows[start:stop, : headers[start].nbytes],
                                       headers[start:stop])]


# -- the bit stream ------------------------------------------------------------------------------
# Messages are held as int64 words on the payloads' device, one row of words per message, N messages of
# one layout at a time: bit j of a message is bit j % 64 of its word j // 64, so the words' bytes
# (little-endian, as on every platform torch runs on) are the message. A run of values of ``width``
# bits is handled a group at a time: 64 / gcd(width, 64) values fill width / gcd(width, 64) words
# exactly (64 signs fill one word, 16 values of 20 bits five), so a run is built as whole groups (the
# last one zero-padded) and shifted into place with word-wide operations. Spare zero words after each
# message take a padded group's tail and the high bits of its last word.

_SPARE_WORDS = 66  # a group spans at most 63 words, plus the words a shift spills into
_BATCH_BYTES = 1 << 16  # messages up to this size are packed together (larger ones alone: no stacked copy)


def _stream(messages: int, nbytes: int, device: torch.device) -> torch.Tensor:
    """Zeroed words ``[messages, W]`` holding ``nbytes`` bytes per message and the spare words."""
    return torch.zeros(messages, nbytes // 8 + _SPARE_WORDS, dtype=torch.int64, device=device)


def _low_bits(width: int) -> int:
    """The int64 mask of the low ``width`` bits."""
    return -1 if width == 64 else (1 << width) - 1


class _Group(NamedTuple):
    """A group of ``per`` values of ``width`` bits filling ``count`` words, and where each value lies in
    them (the tensors, ``[per]``, int64)."""

    per: int
    count: int
    word: torch.Tensor  # the word the value starts in
    after: torch.Tensor  # the next word, where its high bits go if it runs over (the last word if not)
    shift: torch.Tensor  # the bit it starts at in its word
    spill: torch.Tensor  # 64 - shift
    kept: torch.Tensor  # its bits in its word, in place: the low-width mask << shift
    carried: torch.Tensor  # its bits in the next word, moved down: the mask >> spill (0 if none)
    read: torch.Tensor  # its low bits read back from its word, moved down: the mask below spill


@functools.cache
def _group(width: int, device: torch.device) -> _Group:
    per, count = 64 // math.gcd(width, 64), width // math.gcd(width, 64)
    start = torch.arange(per, device=device) * width
    word, shift = start >> 6, start & 63
    spill, mask = 64 - shift, torch.full_like(shift, _low_bits(width))
    return _Group(per, count, word, (word + 1).clamp(max=count - 1), shift, spill, mask << shift,
                  mask >> spill, mask & ~(-1 << spill))  # a shift by 64 gives 0 (mask >= 0 unless count is 1)


def _put_run(words: torch.Tensor, values: torch.Tensor, at: int, width: int) -> int:
    """Write each message's ``values`` (``[N, n]``) one after another from bit ``at``, ``width`` bits each:
    unsigned int64 codes (cut to their low ``width`` bits), or floats as the raw bits of their dtype
    (``width`` its width). Returns the bit after the last."""
    messages, n = values.shape
    if at % 8 == 0 and width % 8 == 0:  # whole bytes from a byte boundary: a copy of little-endian bytes
        raw = values.contiguous().view(torch.uint8)
        if not values.is_floating_point():
            raw = raw.view(messages, n, 8)[:, :, : width // 8]
        words.view(torch.uint8)[:, at // 8 : (at + n * width) // 8] = raw.reshape(messages, -1)
    elif n:
        if values.is_floating_point():
            values = values.contiguous().view(_UINT_VIEW[width]).to(torch.int64)
        group = _group(width, words.device)
        if n % group.per:  # zeros fill the last group
            values = torch.nn.functional.pad(values, (0, group.per - n % group.per))
        _or_words(words, at, _group_words(values.reshape(-1, group.per), group).view(messages, -1))
    return at + n * width


def _take_run(words: torch.Tensor, n: int, at: int, width: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``n`` values of ``width`` bits from bit ``at`` of each message (``[N, n]``): int64 codes, or floats of
    ``dtype`` from their raw bits; inverse of :func:`_put_run`."""
    messages = len(words)
    if n == 0:
        return torch.empty(messages, 0, dtype=dtype or torch.int64, device=words.device)
    if at % 8 == 0 and width % 8 == 0:
        raw = words.view(torch.uint8)[:, at // 8 : (at + n * width) // 8]
        if dtype is not None:
            return raw.clone().view(dtype)
        codes = torch.zeros(messages, n, 8, dtype=torch.uint8, device=words.device)
        codes[:, :, : width // 8] = raw.view(messages, n, width // 8)
        return codes.view(messages, n * 8).view(torch.int64)
    group = _group(width, words.device)
    groups = -(-n // group.per)
    block = _words_at(words, at, groups * group.count).reshape(messages * groups, group.count)
    codes = _group_values(block, group, width).view(messages, -1)[:, :n]
    return codes if dtype is None else codes.to(_UINT_VIEW[width]).view(dtype)


def _group_words(codes: torch.Tensor, group: _Group) -> torch.Tensor:
    """The words ``[G, count]`` holding groups ``[G, per]`` of codes."""
    low = (codes << group.shift).bitwise_and_(group.kept)
    if group.count == 1:  # width divides 64: one word per group, no value runs over
        return low.sum(dim=1, keepdim=True)  # the bits are disjoint, so adding them is OR
    words = torch.zeros(len(codes), group.count, dtype=torch.int64, device=codes.device)
    words.scatter_add_(1, group.word.expand_as(codes), low)
    return words.scatter_add_(1, group.after.expand_as(codes), (codes >> group.spill).bitwise_and_(group.carried))


def _group_values(block: torch.Tensor, group: _Group, width: int) -> torch.Tensor:
    """The groups ``[G, per]`` of codes held in ``block`` ``[G, count]``; inverse of :func:`_group_words`."""
    shape = (len(block), group.per)
    codes = torch.gather(block, 1, group.word.expand(shape)).bitwise_right_shift_(group.shift)
    codes.bitwise_and_(group.read)
    if group.count > 1:  # a value may run into the next word (where it does not, the bits taken lie above)
        high = torch.gather(block, 1, group.after.expand(shape)).bitwise_left_shift_(group.spill)
        codes.bitwise_or_(high.bitwise_and_(_low_bits(width)))
    return codes


def _or_words(words: torch.Tensor, at: int, block: torch.Tensor) -> None:
    """OR the words ``block`` ``[N, m]`` into the zeroed bits of ``words`` from bit ``at`` on."""
    first, shift, m = at >> 6, at & 63, block.shape[1]
    words[:, first : first + m] += block << shift
    if shift:
        words[:, first + 1 : first + m + 1] += (block >> (64 - shift)) & ((1 << shift) - 1)


def _words_at(words: torch.Tensor, at: int, count: int) -> torch.Tensor:
    """The ``count`` words of bits ``at`` to ``at + 64 count`` of each message; inverse of :func:`_or_words`."""
    first, shift = at >> 6, at & 63
    if not shift:
        return words[:, first : first + count]
    low = (words[:, first : first + count] >> shift) & ((1 << (64 - shift)) - 1)
    return low | (words[:, first + 1 : first + count + 1] << (64 - shift))


def _put_bits(words: torch.Tensor, at: torch.Tensor) -> None:
    """Set the bits at positions ``at`` ``[N, c]`` (distinct, each still 0) of each message."""
    row = torch.arange(len(words), device=words.device)[:, None] * words.shape[1]
    words.view(-1).index_add_(0, (row + (at >> 6)).reshape(-1), (torch.ones_like(at) << (at & 63)).reshape(-1))


def _bitmap(words: torch.Tensor, at: int, dim: int) -> torch.Tensor:
    """Bits ``at`` to ``at + dim`` of each message, one uint8 0/1 per bit (``[N, dim]``)."""
    raw = words.view(torch.uint8)[:, at // 8 : (at + dim + 7) // 8]
    bits = (raw[:, :, None] >> torch.arange(8, dtype=torch.uint8, device=words.device)) & 1
    return bits.reshape(len(words), -1)[:, at % 8 : at % 8 + dim]


# -- payloads to messages and back ---------------------------------------------------------------


def _layout(header: Header) -> tuple:
    """What fixes the layout of a message: its header but for the data of shared parts, which is not sent."""
    return header.shape, header.dtype, tuple(part[:6] for part in header.parts)


def _batches(layouts: list, sizes: list[int]):
    """``(start, stop)`` of the runs of consecutive items of one layout, each run cut into single items
    where the messages are larger than ``_BATCH_BYTES``."""
    start = 0
    for stop in range(1, len(layouts) + 1):
        if stop == len(layouts) or layouts[stop] != layouts[start] or sizes[start] > _BATCH_BYTES:
            yield start, stop
            start = stop


def _pack(payloads: list[Payload]) -> torch.Tensor:
    """The messages of payloads of one layout: a uint8 tensor ``[N, ceil(bits / 8)]`` on their device."""
    first = payloads[0]
    nbytes = math.ceil(first.bits / 8)
    words, at = _stream(len(payloads), nbytes, first.device), 0
    for i, part in enumerate(first.parts):
        if part.kind == "shared":
            continue
        data = torch.stack([p.parts[i].data for p in payloads]) if len(payloads) > 1 else part.data[None]
        if part.kind == "index":
            at = _put_positions(words, data, part, at)
        else:
            at = _put_run(words, data, at, part.width)
    assert at == first.bits
    return words.view(torch.uint8)[:, :nbytes]


def _put_positions(words: torch.Tensor, data: torch.Tensor, part: Part, at: int) -> int:
    """Write an index part (``data`` ``[N, sum(counts)]``) from bit ``at``, each of its rows as an index
    list or a bitmap, whichever is cheaper."""
    for positions in torch.split(data, list(part.counts), dim=1):
        if positions.shape[1] * part.width > part.dim:
            _put_bits(words, at + positions)
            at += part.dim
        else:
            at = _put_run(words, positions, at, part.width)
    return at


def _header_part_bits(kind: str, counts, width: int, dim: int) -> int:
    """Wire bits of one part of a header, over all its rows (:meth:`Part.row_bits` summed)."""
    if kind == "shared":
        return 0
    if kind == "index":
        return sum(min(count * width, dim) for count in counts)
    return sum(counts) * width


def _unpack(messages: torch.Tensor, headers: list[Header]) -> list[Payload]:
    """The payloads of the uint8 ``messages`` ``[N, B]`` (on any device) described by ``headers`` (one per
    message, all of one layout), decoded on the messages' device after the checks
    :meth:`Payload.from_bytes` lists."""
    header = headers[0]
    bits = sum(_header_part_bits(kind, counts, width, dim) for _, kind, counts, width, dim, _, _ in header.parts)
    nbytes = math.ceil(bits / 8)
    if messages.shape[1] != nbytes:
        state = "truncated" if messages.shape[1] < nbytes else "extended"
        raise ValueError(f"payload of {messages.shape[1]} bytes is {state}: its header describes {bits} bits, "
                         f"{nbytes} bytes")
    if bits % 8 and (messages[:, -1] >> (bits % 8)).any():
        raise ValueError(f"payload padding bits after bit {bits} are not zero")
    words = _stream(len(messages), nbytes, messages.device)
    words.view(torch.uint8)[:, :nbytes] = messages
    crc = bool(header.parts) and header.parts[-1][1] == "crc"
    if crc and len(header.parts[-1][2]) == 1:  # one row a message: its CRC covers the bits before it, checked first
        _check_crc(_body_crcs(messages, bits - 32), _take_run(words, 1, bits - 32, 32)[:, 0])
    columns, at = [], 0  # each part's data for all messages, [N, n]
    for name, kind, counts, width, dim, dtype, _ in header.parts:
        if kind == "index":
            data, at = _read_positions(words, at, name, counts, width, dim)
        elif kind != "shared":
            data = _take_run(words, sum(counts), at, width, dtype)
            at += sum(counts) * width
        columns.append(data if kind != "shared" else None)
    payloads = []
    for m, h in enumerate(headers):
        parts = tuple(Part(name, shared if kind == "shared" else data[m], kind, counts, width, dim)
                      for (name, kind, counts, width, dim, _, shared), data in zip(h.parts, columns, strict=True))
        payloads.append(Payload(parts, h.shape, h.dtype))
    if crc and len(header.parts[-1][2]) > 1:  # stacked rows: each CRC covers its row's own message
        for payload in payloads:
            body = Payload(payload.parts[:-1], payload.shape, payload.dtype)
            _check_crc([zlib.crc32(row.to_bytes()) for row in body.split_rows()], payload.parts[-1].data)
    return payloads


def _body_crcs(messages: torch.Tensor, bits: int) -> list[int]:
    """CRC-32 of the first ``bits`` bits of each message, zero-padded to a whole byte (computed on the host)."""
    body = messages[:, : math.ceil(bits / 8)].cpu()
    if bits % 8:
        body = body.clone()
        body[:, -1] &= (1 << bits % 8) - 1
    return [zlib.crc32(row.numpy().tobytes()) for row in body]


def _check_crc(expected: list[int], received: torch.Tensor) -> None:
    got = received.tolist()
    if got != expected:
        row = next(w for w, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        raise ValueError(f"CRC-32 mismatch in row {row}: the message says {got[row]:#010x}, its bytes give "
                         f"{expected[row]:#010x}: the message was corrupted")


def _read_positions(words, at, name, counts, width, dim) -> tuple[torch.Tensor, int]:
    """The positions ``[N, sum(counts)]`` of an index part of each message, row by row (an index list or a
    bitmap, whichever is cheaper), and the bit after them; a ``ValueError`` if a list holds a position out
    of ``[0, dim)`` or is not strictly increasing (unsorted or repeated), or a bitmap's population is not
    its count (no compressor sends such)."""
    rows = []
    for count in counts:
        if count * width > dim:
            bits = _bitmap(words, at, dim)
            population = bits.sum(dim=1, dtype=torch.int64)
            if (population != count).any():
                raise ValueError(f"index part {name!r}: the bitmap sets {int(population[population != count][0])} "
                                 f"positions, its header says {count}")
            positions = bits.nonzero()[:, 1].view(len(words), count)
            at += dim
        else:
            positions = _take_run(words, count, at, width)
            at += count * width
        rows.append(positions)
    data = torch.cat(rows, dim=1) if rows else torch.zeros(len(words), 0, dtype=torch.int64, device=words.device)
    if data.numel() and (top := int(data.max())) >= dim:
        raise ValueError(f"index part {name!r}: position {top} is out of range for dim {dim}")
    falls = [(row[:, 1:] <= row[:, :-1]).any() for row in rows if row.shape[1] > 1]
    if falls and torch.stack(falls).any():
        raise ValueError(f"index part {name!r}: positions are not strictly increasing (unsorted or repeated)")
    return data, at


def _as_bits(data: torch.Tensor) -> torch.Tensor:
    """Floating ``data`` viewed as integers of its width (to compare bits); other data as it is."""
    if data.is_floating_point() and data.dim() > 0:
        return data.contiguous().view(_INT_OF_SIZE[data.element_size()])
    return data


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
