"""Decoding checks what it reads (issue 18, item 5, first part): a truncated or extended message, or
an index part no compressor could have sent, raises a ValueError naming the part instead of decoding
to something else."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from commlab.compress import QSGD, Payload, RandK, ScaledSign, Threshold, TopK

COMPRESSORS = [TopK(k=3), TopK(k=40), RandK(k=5), Threshold(1.0), ScaledSign(), QSGD(4)]


def _payload(compressor, d=50, seed=0):
    x = torch.randn(2, d, generator=torch.Generator().manual_seed(seed)) * 2
    return compressor.compress(x, torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("compressor", COMPRESSORS, ids=repr)
@settings(max_examples=20, deadline=None)
@given(cut=st.integers(1, 64), extra=st.integers(1, 8), seed=st.integers(0, 2**20))
def test_a_truncated_or_extended_message_never_decodes(compressor, cut, extra, seed):
    payload = _payload(compressor, seed=seed)
    data = payload.to_bytes()
    with pytest.raises(ValueError, match="truncated"):
        Payload.from_bytes(data[: max(0, len(data) - cut)], payload.header)
    with pytest.raises(ValueError, match="extended"):
        Payload.from_bytes(data + bytes(extra), payload.header)
    assert Payload.from_bytes(data, payload.header).bits == payload.bits


def _with_index_bits(payload, row: int, entry: int, value: int) -> bytes:
    """The message of a two-row Top-k payload (values part, then index lists) with one index replaced."""
    values = payload["values"]
    stream = np.unpackbits(np.frombuffer(payload.to_bytes(), dtype=np.uint8), bitorder="little")
    width = payload["indices"].width
    at = sum(values.counts) * values.width + (row * payload["indices"].counts[0] + entry) * width
    stream[at : at + width] = [(value >> b) & 1 for b in range(width)]
    return np.packbits(stream, bitorder="little").tobytes()


def test_impossible_index_lists_are_refused_with_the_part_named():
    payload = _payload(TopK(k=3), d=50)  # 3 indices of 6 bits per row: a list, not a bitmap
    first = payload["indices"].data[:3].tolist()
    with pytest.raises(ValueError, match=r"index part 'indices': position 63 is out of range for dim 50"):
        Payload.from_bytes(_with_index_bits(payload, 0, 2, 63), payload.header)
    with pytest.raises(ValueError, match="not strictly increasing"):
        Payload.from_bytes(_with_index_bits(payload, 0, 1, first[0]), payload.header)  # a repeat
    with pytest.raises(ValueError, match="not strictly increasing"):
        Payload.from_bytes(_with_index_bits(payload, 1, 0, 49), payload.header)  # first above the others


def test_a_bitmap_whose_population_differs_from_its_count_and_nonzero_padding_are_refused():
    payload = _payload(TopK(k=40), d=50)  # 40 * 6 bits > 50: each row's indices go as a 50-bit bitmap
    values = payload["values"]
    stream = np.unpackbits(np.frombuffer(payload.to_bytes(), dtype=np.uint8), bitorder="little")
    bitmap = sum(values.counts) * values.width
    unset = bitmap + int(np.flatnonzero(stream[bitmap : bitmap + 50] == 0)[0])
    stream[unset] = 1
    with pytest.raises(ValueError, match="the bitmap sets 41 positions, its header says 40"):
        Payload.from_bytes(np.packbits(stream, bitorder="little").tobytes(), payload.header)
    sign = ScaledSign().compress(torch.randn(13))  # 13 + 32 bits: 3 padding bits in the last byte
    data = bytearray(sign.to_bytes())
    data[-1] |= 0x80
    assert math.ceil(sign.bits / 8) == len(data)
    with pytest.raises(ValueError, match="padding bits after bit 45 are not zero"):
        Payload.from_bytes(bytes(data), sign.header)
    with pytest.raises(TypeError, match="data must be bytes"):
        Payload.from_bytes("text", sign.header)
