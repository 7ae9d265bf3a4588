"""Packing on torch ops (issue 18, item 6): the bytes are exactly the documented wire format, checked
against a plain Python encoder written from the module docstring, for every compressor; pack_rows and
unpack_rows return tensors on the payloads' device; on a GPU a CUDA round trip stays on CUDA and equals
the CPU one."""

import math

import pytest
import torch
from compressor_cases import EVERY
from hypothesis import given, settings
from hypothesis import strategies as st

from commlab.compress import (
    Identity,
    OneBitSGD,
    Part,
    Payload,
    ScaledSign,
    Sign,
    Threshold,
    TopK,
)

_INT = {8: torch.uint8, 16: torch.int16, 32: torch.int32, 64: torch.int64}


def _reference_bytes(payload: Payload) -> bytes:
    """The message as the module docstring defines it, one value at a time into a Python integer."""
    stream, at = 0, 0
    for part in payload.parts:
        if part.kind == "shared":
            continue
        if part.kind == "index":
            for positions in part.rows():
                if len(positions) * part.width > part.dim:  # a bitmap: bit p of dim bits for each position p
                    for p in positions.tolist():
                        stream |= 1 << (at + p)
                    at += part.dim
                else:
                    for p in positions.tolist():
                        stream, at = stream | p << at, at + part.width
            continue
        data = part.data.view(_INT[part.width]) if part.kind == "float" else part.data
        for code in data.tolist():
            stream, at = stream | (code % 2**part.width) << at, at + part.width  # % : a float's two's complement
    assert at == payload.bits
    return stream.to_bytes(math.ceil(at / 8), "little")


@pytest.mark.parametrize("compressor", EVERY, ids=repr)
@settings(max_examples=6, deadline=None)
@given(d=st.integers(3, 200), workers=st.integers(0, 3), seed=st.integers(0, 2**31),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
def test_the_bytes_are_the_documented_wire_format(compressor, d, workers, seed, dtype):
    x = (torch.randn((d,) if workers == 0 else (workers, d), generator=torch.Generator().manual_seed(seed)) * 3)
    payload = compressor.compress(x.to(dtype), torch.Generator().manual_seed(seed + 1))
    data = payload.to_bytes()
    assert data == _reference_bytes(payload)
    assert Payload.from_bytes(data, payload.header) == payload
    rows = payload.split_rows()
    width = max(row.header.nbytes for row in rows) + 2
    packed = Payload.pack_rows(rows, width=width)
    assert [bytes(r[: row.header.nbytes].tolist()) for r, row in zip(packed, rows, strict=True)] == \
        [_reference_bytes(row) for row in rows]
    assert not packed[:, -2:].any()  # the zero padding
    assert Payload.unpack_rows(packed, [r.header for r in rows]) == rows


def test_values_that_straddle_words_and_runs_that_start_mid_byte_pack_as_specified():
    # widths that do not divide 64 cross word boundaries; a 13-bit prefix shifts what follows off the bytes
    for width in (1, 3, 7, 9, 20, 31, 33, 63, 64):
        codes = torch.randint(0, 2**min(width, 62), (1, 150), generator=torch.Generator().manual_seed(width))
        if width == 64:
            codes[0, :3] = torch.tensor([-1, -2**63, 2**63 - 1])  # every bit pattern of a 64-bit code
        payload = Payload((Part.codes("prefix", torch.ones(1, 13, dtype=torch.int64), 1), Part.codes("c", codes, width),
                           Part.floats("f", torch.tensor([[-1.5, 2.0**-140, -0.0]]))), (150,), torch.float32)
        assert payload.to_bytes() == _reference_bytes(payload)
        assert Payload.from_bytes(payload.to_bytes(), payload.header) == payload


def test_codes_wider_than_their_width_are_cut_to_it_as_the_reference_does():
    payload = Payload((Part.codes("c", torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13]]), 2),), (9,), torch.float32)
    assert payload.to_bytes() == _reference_bytes(payload)  # each code % 4


def test_pack_rows_batches_runs_of_one_layout_and_keeps_every_row_its_own_message():
    # messages of one layout are packed (and unpacked) together, large ones alone: the rows are the same
    g = torch.Generator().manual_seed(2)
    small = [TopK(k=k).compress(torch.randn(300, generator=g)) for k in (1, 2, 2, 2, 1, 1)]
    large = [Identity().compress(torch.randn(20_000, generator=g)) for _ in range(3)]  # 80 kB each
    rows = small[:3] + large + small[3:] + [Sign().compress(torch.randn(300, generator=g)) for _ in range(2)]
    headers = [row.header for row in rows]
    packed = Payload.pack_rows(rows, width=max(h.nbytes for h in headers) + 3)
    assert [bytes(r[: h.nbytes].tolist()) for r, h in zip(packed, headers, strict=True)] == \
        [row.to_bytes() for row in rows]
    assert not any(r[h.nbytes :].any() for r, h in zip(packed, headers, strict=True))
    assert Payload.unpack_rows(packed, headers) == rows
    same = Payload.pack_rows(large)
    assert Payload.unpack_rows(same, large[0].header) == large


def _on(payload: Payload, device: str) -> Payload:
    parts = tuple(Part(p.name, p.data.to(device), p.kind, p.counts, p.width, p.dim) for p in payload.parts)
    return Payload(parts, payload.shape, payload.dtype)


def test_pack_rows_gives_uint8_rows_on_the_payloads_device_and_unpack_rows_decodes_there():
    x = torch.randn(3, 100, generator=torch.Generator().manual_seed(0))
    rows = TopK(k=7).compress(x).split_rows()
    packed = Payload.pack_rows(rows)
    assert packed.dtype == torch.uint8 and packed.device == torch.device("cpu")
    assert packed.shape == (3, rows[0].header.nbytes) and rows[0].device == torch.device("cpu")
    back = Payload.unpack_rows(packed, rows[0].header)
    assert all(part.data.device == torch.device("cpu") for payload in back for part in payload.parts)
    assert Payload.pack_rows([]).shape == (0, 0)
    elsewhere = _on(rows[0], "meta")  # a second device, which needs no accelerator
    with pytest.raises(ValueError, match=r"several devices: \['cpu', 'meta'\]"):
        Payload.pack_rows([rows[0], elsewhere])
    with pytest.raises(TypeError, match="uint8 tensor"):
        Payload.unpack_rows(packed.to(torch.int32), rows[0].header)
    with pytest.raises(TypeError, match="uint8 tensor"):
        Payload.unpack_rows(packed.numpy(), rows[0].header)
    with pytest.raises(ValueError, match=r"shape \[N, B\]"):
        Payload.unpack_rows(packed[0], rows[0].header)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
@pytest.mark.parametrize("compressor", EVERY, ids=repr)
def test_packing_a_cuda_payload_stays_on_cuda_and_gives_the_cpu_bytes(compressor):
    x = torch.randn(4, 300, generator=torch.Generator().manual_seed(3))
    cpu = compressor.compress(x, torch.Generator().manual_seed(4)).split_rows()
    gpu = [_on(row, "cuda") for row in cpu]
    width = max(row.header.nbytes for row in cpu)
    packed = Payload.pack_rows(gpu, width=width)
    assert packed.is_cuda and torch.equal(packed.cpu(), Payload.pack_rows(cpu, width=width))
    back = Payload.unpack_rows(packed, [row.header for row in gpu])
    assert back == gpu  # on CUDA (equal parts have the same device), equal
    assert [row.to_bytes() for row in gpu] == [row.to_bytes() for row in cpu]


@CUDA
@pytest.mark.parametrize("compressor", EVERY, ids=repr)
def test_a_cuda_round_trip_through_pack_rows_returns_cuda_tensors_equal_to_the_cpu_result(compressor):
    x = torch.randn(4, 300, generator=torch.Generator().manual_seed(5))
    payload = compressor.compress(x.cuda(), torch.Generator(device="cuda").manual_seed(6))
    rows = payload.split_rows()
    packed = Payload.pack_rows(rows, width=max(row.header.nbytes for row in rows))
    received = Payload.unpack_rows(packed, [row.header for row in rows])
    assert packed.is_cuda and all(p.data.is_cuda for row in received for p in row.parts)
    out = compressor.decompress(Payload.stack(received))
    assert out.is_cuda and out.dtype == x.dtype
    # the same message decoded on the CPU gives the same tensor, bit for bit
    torch.testing.assert_close(out.cpu(), compressor.decompress(_on(payload, "cpu")), rtol=0, atol=0)
    if isinstance(compressor, Identity | TopK | Threshold | Sign | ScaledSign | OneBitSGD):  # no draws, no rounding
        torch.testing.assert_close(out.cpu(), compressor(x))  # the CPU's result, up to the order of a sum
