"""Packing payloads for the wire: Payload.pack_rows / unpack_rows (torch ops) against NumPy bit packing.

Eight worker rows of d = 10^6 float32 N(0, 1) values, compressed by Top-k (density 1%: 10,000 values
and 20-bit indices per row), sign (1 bit per value) and QSGD(4) (a sign bit, a 3-bit level, a norm),
each row packed into one byte row of a uint8 tensor and read back. Baseline, timed interleaved with
commlab in the same run and threads: the same wire format built with NumPy, each part's bits expanded
one uint8 per bit and joined by ``np.packbits`` (read back by ``np.unpackbits``), as commlab did
before issue 18; the bytes are checked to agree. Target (issue 18, item 6): Top-k no slower than with
NumPy (speed-up >= 1) while staying on the tensors' device; the others are reported. Decoding sign
codes is bound by allocating their int64 codes (8 bytes per bit), which NumPy backs with huge pages and
torch with 4 KB ones, so that ratio moves with the machine's memory state. ``--smoke`` runs d = 10^4
to check the script.

    .venv/bin/python benchmarks/payload_packing.py [--threads 1] [--repeats 7] [--smoke]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import interleaved_best, parse_args

from commlab.compress import QSGD, Payload, Sign, TopK

_INT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _bits(codes: np.ndarray, width: int) -> np.ndarray:
    """The little-endian bits of unsigned codes, ``width`` each, one uint8 per bit."""
    if width % 8 == 0:
        return np.unpackbits(codes.astype(_INT[width]).view(np.uint8), bitorder="little")
    shifts = np.arange(width, dtype=np.uint64)
    return ((codes.astype(np.uint64)[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)


def _codes(bits: np.ndarray, width: int) -> np.ndarray:
    if width % 8 == 0:
        return np.packbits(bits, bitorder="little").view(_INT[width]).astype(np.uint64)
    return (bits.reshape(-1, width).astype(np.uint64) << np.arange(width, dtype=np.uint64)).sum(axis=1)


def numpy_pack(payload: Payload) -> bytes:
    """The message of ``payload`` (parts in order, rows in order, index lists or bitmaps) with NumPy."""
    chunks = []
    for part in payload.parts:
        if part.kind == "index":
            for positions in part.rows():
                if len(positions) * part.width > part.dim:
                    bitmap = np.zeros(part.dim, dtype=np.uint8)
                    bitmap[positions.numpy()] = 1
                    chunks.append(bitmap)
                else:
                    chunks.append(_bits(positions.numpy(), part.width))
        elif part.kind != "shared":
            data = part.data.numpy().view(_INT[part.width]) if part.kind == "float" else part.data.numpy()
            chunks.append(_bits(data, part.width))
    return np.packbits(np.concatenate(chunks), bitorder="little").tobytes()


def numpy_unpack(message: np.ndarray, payload: Payload) -> list[np.ndarray]:
    """The parts' codes read back from ``message`` with NumPy (no validation)."""
    stream, at, out = np.unpackbits(message, bitorder="little"), 0, []
    for part in payload.parts:
        if part.kind == "index":
            for count in part.counts:
                if count * part.width > part.dim:
                    out.append(np.flatnonzero(stream[at : at + part.dim]))
                    at += part.dim
                else:
                    out.append(_codes(stream[at : at + count * part.width], part.width))
                    at += count * part.width
        elif part.kind != "shared":
            n = sum(part.counts) * part.width
            out.append(_codes(stream[at : at + n], part.width))
            at += n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_args(parser, threads=1, repeats=7)
    d = 10_000 if args.smoke else 1_000_000
    x = torch.randn(8, d, generator=torch.Generator().manual_seed(0))
    print(f"8 rows x d = {d:,} float32, {args.threads} threads, best of {args.repeats}")
    speedups = {}
    for compressor in (TopK(0.01), Sign(), QSGD(4)):
        rows = compressor.compress(x, torch.Generator().manual_seed(1)).split_rows()
        headers = [row.header for row in rows]
        width = max(h.nbytes for h in headers)
        packed = Payload.pack_rows(rows, width=width)
        if [numpy_pack(row) for row in rows] != [bytes(r[: h.nbytes].tolist()) for r, h in zip(packed, headers,
                                                                                                 strict=True)]:
            raise SystemExit(f"{compressor!r}: the torch and NumPy messages differ")
        messages = [r[: h.nbytes].numpy() for r, h in zip(packed, headers, strict=True)]
        t = interleaved_best({
            "pack_rows": lambda rows=rows, width=width: Payload.pack_rows(rows, width=width),
            "numpy pack": lambda rows=rows: [numpy_pack(row) for row in rows],
            "unpack_rows": lambda packed=packed, headers=headers: Payload.unpack_rows(packed, headers),
            "numpy unpack": lambda rows=rows, messages=messages: [numpy_unpack(m, r) for m, r in
                                                                  zip(messages, rows, strict=True)],
        }, args.repeats)
        pack, unpack = t["numpy pack"] / t["pack_rows"], t["numpy unpack"] / t["unpack_rows"]
        speedups[type(compressor).__name__] = (pack, unpack)
        print(f"  {compressor!r:22} {width:>9,} bytes/row   pack_rows {t['pack_rows'] * 1e3:7.2f} ms "
              f"(NumPy {t['numpy pack'] * 1e3:7.2f} ms, {pack:.2f}x)   unpack_rows {t['unpack_rows'] * 1e3:7.2f} ms "
              f"(NumPy {t['numpy unpack'] * 1e3:7.2f} ms, {unpack:.2f}x)")
    (pack, unpack), slowest = speedups["TopK"], min(min(pair) for pair in speedups.values())
    print(f"speed-up over NumPy packing for Top-k: {pack:.2f}x packing, {unpack:.2f}x unpacking (target >= 1x); "
          f"smallest of all six {slowest:.2f}x; bytes identical")


if __name__ == "__main__":
    main()
