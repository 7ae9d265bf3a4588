"""Property tests of decoding (issue 18, item 5) over every compressor and random inputs: (a) with the
CRC on, a truncated, extended or bit-flipped message never decodes; (b) with it off, a structurally
impossible one never does (wrong length, index out of range, unsorted or repeated, a bitmap whose
population is not its count); (c) every message decodes back to the payload it came from."""

import pytest
import torch
from compressor_cases import EVERY
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from commlab.compress import (
    Payload,
    RandK,
    SampledTopK,
    Threshold,
    TopK,
)

SETTINGS = settings(max_examples=100, deadline=None)


@st.composite
def payloads(draw, compressors=EVERY, crc=False):
    """A payload of a drawn compressor for a drawn input: one row ``[d]`` or a stack of 1 to 3 rows."""
    compressor = draw(st.sampled_from(compressors))
    d, workers, seed = draw(st.integers(10, 300)), draw(st.integers(0, 3)), draw(st.integers(0, 2**31))
    x = torch.randn((d,) if workers == 0 else (workers, d), generator=torch.Generator().manual_seed(seed)) * 2
    payload = compressor.compress(x, torch.Generator().manual_seed(seed + 1))
    return payload.with_crc() if crc else payload


def _decodes(data: bytes, payload: Payload) -> bool:
    try:
        Payload.from_bytes(data, payload.header)
    except ValueError:
        return False
    return True


@SETTINGS
@given(payload=payloads(crc=True), data=st.data())
def test_a_with_the_crc_no_truncation_extension_or_flip_of_1_to_3_bits_decodes(payload, data):
    message = payload.to_bytes()
    cut = data.draw(st.integers(1, len(message)))
    extra = data.draw(st.binary(min_size=1, max_size=8))
    flips = data.draw(st.sets(st.integers(0, 8 * len(message) - 1), min_size=1, max_size=3))
    flipped = int.from_bytes(message, "little") ^ sum(1 << bit for bit in flips)
    assert not _decodes(message[:-cut], payload)
    assert not _decodes(message + extra, payload)
    assert not _decodes(flipped.to_bytes(len(message), "little"), payload)
    assert _decodes(message, payload)


@SETTINGS
@given(payload=payloads(), data=st.data())
def test_b_without_the_crc_a_message_of_the_wrong_length_never_decodes(payload, data):
    message = payload.to_bytes()
    assert not _decodes(message[: data.draw(st.integers(0, len(message) - 1))], payload)
    assert not _decodes(message + data.draw(st.binary(min_size=1, max_size=8)), payload)


def _row_at(payload: Payload, name: str, row: int) -> int:
    """The bit where row ``row`` of part ``name`` starts in the message (parts in order, rows in order)."""
    at = 0
    for part in payload.parts:
        if part.name == name:
            return at + sum(part.row_bits()[:row])
        at += sum(part.row_bits())
    raise KeyError(name)


def _with_bits(message: bytes, at: int, width: int, value: int) -> bytes:
    stream = int.from_bytes(message, "little") & ~(((1 << width) - 1) << at) | value << at
    return stream.to_bytes(len(message), "little")


SPARSE = [TopK(k=4), RandK(k=6), Threshold(3.0), SampledTopK(0.05, sample_ratio=0.5)]  # index lists


@SETTINGS
@given(payload=payloads(SPARSE), how=st.sampled_from(["out of range", "repeated", "unsorted"]), data=st.data())
def test_b_without_the_crc_an_impossible_index_list_never_decodes(payload, how, data):
    part = payload["indices"]
    rows = [w for w, count in enumerate(part.counts) if count >= 2 and count * part.width <= part.dim]
    assume(rows)
    row = data.draw(st.sampled_from(rows))
    positions = part.rows()[row].tolist()
    entry = data.draw(st.integers(1, len(positions) - 1))
    if how == "out of range":
        assume(2**part.width > part.dim)
        value = data.draw(st.integers(part.dim, 2**part.width - 1))
    elif how == "repeated":
        value = positions[entry - 1]
    else:
        value = data.draw(st.integers(0, positions[entry - 1]))  # at most the one before it
        if data.draw(st.booleans()):  # or: the one before it moved above this one
            entry, value = entry - 1, data.draw(st.integers(positions[entry], part.dim - 1))
    at = _row_at(payload, "indices", row) + entry * part.width
    with pytest.raises(ValueError, match="index part 'indices'"):
        Payload.from_bytes(_with_bits(payload.to_bytes(), at, part.width, value), payload.header)


@SETTINGS
@given(payload=payloads([TopK(0.5), TopK(0.9), Threshold(0.3)]), data=st.data())
def test_b_without_the_crc_a_bitmap_whose_population_is_not_its_count_never_decodes(payload, data):
    part = payload["indices"]
    rows = [w for w, count in enumerate(part.counts) if count * part.width > part.dim]
    assume(rows)
    row = data.draw(st.sampled_from(rows))
    bit = _row_at(payload, "indices", row) + data.draw(st.integers(0, part.dim - 1))
    flipped = int.from_bytes(payload.to_bytes(), "little") ^ 1 << bit  # sets or clears one position
    with pytest.raises(ValueError, match="the bitmap sets"):
        Payload.from_bytes(flipped.to_bytes(len(payload.to_bytes()), "little"), payload.header)


@SETTINGS
@given(payload=payloads(), crc=st.booleans())
def test_c_every_message_decodes_to_the_payload_it_came_from(payload, crc):
    payload = payload.with_crc() if crc else payload
    assert Payload.from_bytes(payload.to_bytes(), payload.header) == payload
    rows = payload.split_rows()
    packed = Payload.pack_rows(rows, width=max(row.header.nbytes for row in rows))
    assert Payload.unpack_rows(packed, [row.header for row in rows]) == rows
    assert (Payload.stack(rows) if len(payload.shape) == 2 else rows[0]) == payload


def test_payloads_differing_in_one_element_or_in_dtype_are_not_equal():
    x = torch.randn(2, 30, generator=torch.Generator().manual_seed(0))
    payload = TopK(k=3).compress(x)
    assert TopK(k=3).compress(x.clone()) == payload
    y = x.clone()
    y[1, payload["indices"].data[-1]] *= 2
    assert TopK(k=3).compress(y) != payload  # one value differs
    assert TopK(k=3).compress(x.double()) != payload
    assert TopK(k=4).compress(x) != payload
