"""The optional CRC-32 part (issue 18, item 5): ``Payload.with_crc`` adds 32 counted bits per row, the
checksum of that row's message, and decoding recomputes it, so flipped bits inside values, which pass
every structural check, are refused with an error naming the CRC."""

import math
import zlib

import pytest
import torch

from commlab.compress import QSGD, Identity, Payload, RandK, ScaledSign, Threshold, TopK


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def _g():
    return torch.Generator().manual_seed(1)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << bit % 8
    return bytes(out)


@pytest.mark.parametrize("compressor", [Identity(), TopK(k=3), ScaledSign(), QSGD(4), Threshold(1.0)], ids=repr)
@pytest.mark.parametrize("shape", [(13,), (1, 40), (3, 40)])
def test_the_crc_costs_32_counted_bits_per_row_and_is_the_rows_checksum(compressor, shape):
    plain = compressor.compress(_x(shape), _g())
    checked = plain.with_crc()
    assert checked.row_bits == tuple(bits + 32 for bits in plain.row_bits)
    assert len(checked.to_bytes()) == math.ceil(checked.bits / 8)
    assert checked.header.parts[-1][:4] == ("crc", "crc", (1,) * plain.workers, 32)
    assert checked["crc"].data.tolist() == [zlib.crc32(row.to_bytes()) for row in plain.split_rows()]
    back = Payload.from_bytes(checked.to_bytes(), checked.header)
    assert back == checked and torch.equal(compressor.decompress(back), compressor.decompress(plain))


def test_every_single_flipped_bit_is_refused_and_names_the_crc():
    payload = ScaledSign().compress(_x(13)).with_crc()  # 13 sign bits, a 32-bit scale, the CRC: 77 bits
    data = payload.to_bytes()
    assert payload.bits == 77 and len(data) == 10
    for bit in range(payload.bits):
        with pytest.raises(ValueError, match="CRC-32 mismatch in row 0"):
            Payload.from_bytes(_flip(data, bit), payload.header)
    for bit in range(payload.bits, 8 * len(data)):
        with pytest.raises(ValueError, match="padding"):
            Payload.from_bytes(_flip(data, bit), payload.header)


def test_a_flipped_value_passes_the_structure_checks_without_a_crc_but_not_with_one():
    plain = TopK(k=3).compress(_x(50))
    flipped = _flip(plain.to_bytes(), 5)  # inside the first value
    assert not torch.equal(Payload.from_bytes(flipped, plain.header)["values"].data, plain["values"].data)
    checked = plain.with_crc()
    with pytest.raises(ValueError, match="CRC-32 mismatch"):
        Payload.from_bytes(_flip(checked.to_bytes(), 5), checked.header)


def test_a_stacked_payload_checks_each_row_and_names_the_corrupted_one():
    payload = QSGD(4).compress(_x((3, 40)), _g()).with_crc()
    data = payload.to_bytes()
    names = [part.name for part in payload.parts]  # the parts one after another, each row after row
    levels = sum(sum(part.row_bits()) for part in payload.parts[: names.index("levels")])
    with pytest.raises(ValueError, match="CRC-32 mismatch in row 1"):
        Payload.from_bytes(_flip(data, levels + 40 * payload["levels"].width + 1), payload.header)
    with pytest.raises(ValueError, match="CRC-32 mismatch in row 2"):
        Payload.from_bytes(_flip(data, payload.bits - 1), payload.header)  # the last row's own CRC
    rows = payload.split_rows()
    assert [row["crc"].data.item() for row in rows] == payload["crc"].data.tolist()
    assert Payload.stack(rows).to_bytes() == data
    other = QSGD(4).compress(_x((3, 40), seed=5), _g()).with_crc()
    packed = Payload.pack_rows([payload, other])  # two stacked messages, decoded together
    assert Payload.unpack_rows(packed, payload.header) == [payload, other]
    packed[1, -1] ^= 0x80
    with pytest.raises(ValueError, match="CRC-32 mismatch in row 2"):
        Payload.unpack_rows(packed, payload.header)


def test_pack_rows_carries_one_crc_per_row_and_unpack_rows_checks_each():
    x = _x((3, 60))
    rows = [row.with_crc() for row in Threshold(1.5).compress(x).split_rows()]  # counts differ by row
    headers = [row.header for row in rows]
    assert [h.with_count(row["values"].counts[0]) for h, row in zip(headers, rows, strict=True)] == headers
    packed = Payload.pack_rows(rows, width=max(h.nbytes for h in headers))
    assert Payload.unpack_rows(packed, headers) == rows
    packed[1, 0] ^= 4
    with pytest.raises(ValueError, match="CRC-32 mismatch"):
        Payload.unpack_rows(packed, headers)


def test_a_crc_is_added_once():
    payload = Identity().compress(_x(5)).with_crc()
    with pytest.raises(ValueError, match="already has a CRC"):
        payload.with_crc()


def test_reducing_drops_the_rows_crcs_and_the_sum_takes_its_own():
    compressor = RandK(0.2, shared=True)
    payload = compressor.compress(torch.randn(3, 40, generator=torch.Generator().manual_seed(0)),
                                  torch.Generator().manual_seed(1)).with_crc()
    reduced = compressor.reduce(payload)
    assert "crc" not in [p.name for p in reduced.parts]  # row 0's checksum does not check the sum
    checked = reduced.with_crc()
    assert checked.bits == reduced.bits + 32
    assert Payload.from_bytes(checked.to_bytes(), checked.header) == checked
