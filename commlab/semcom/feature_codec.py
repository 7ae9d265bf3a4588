"""Feature coding for split models: truncate → quantise → pack → code, the anchor pipeline of Gao et al. (2024,
"Feature Coding in the Era of Large Models: Dataset, Test Conditions, and Benchmark"), with every codec writing
real bytes, so that the rate is counted from them.

For a feature tensor ``F`` ``[C, H, W]`` of one sample, taken at the split point of a frozen model::

    truncate   F_t = clip(F, lo, hi)                          lo, hi from the TRAINING features (truncation_range)
    quantise   q   = round((F_t − lo)/(hi − lo)·(2^b − 1))    b-bit uniform (b = 10 in the paper's VTM anchor)
    pack       the C channel maps tiled into one near-square 2-D frame (pack_frame), for the image codecs
    code       "raw" b-bit packing, "zlib" (level 9), "png" (8 / 16-bit), "jpeg" (8-bit, lossy; Pillow)
    decode     F̂   = lo + q/(2^b − 1)·(hi − lo)
    rate       BPFP = 8·len(bitstream bytes) / F.numel()      (commlab.semcom.metrics.bpfp)

Every bitstream is self-describing: a :data:`HEADER_BYTES`-byte header (codec, b, JPEG quality, C, H, W, and lo,
hi as float32) precedes the body, and it is counted in the rate (side information matters at low BPFP for small
features). :func:`encode` quantises with the float32 values of lo and hi that it writes, so that :func:`decode`
reproduces the quantised features exactly on the lossless paths.

Also :func:`feature_statistics` (range, standard deviation, excess kurtosis, the share beyond ±5σ), the statistics
by which the paper motivates truncation.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from commlab._checks import check_choice, check_int, check_real_number
from commlab.compress.payload import Part, Payload
from commlab.semcom.digital import jpeg_scan_start

CODECS = ("raw", "zlib", "png", "jpeg")
"""Codec names; their position is the codec id written in the header."""

TRUNCATION_RULES = ("minmax", "sigma", "percentile")
"""Rules of :func:`truncation_range`."""

_HEADER = struct.Struct("<BBBHHHff")  # codec id, bits, JPEG quality (0 if none), C, H, W, lo, hi
HEADER_BYTES = _HEADER.size
"""Bytes of the header in front of every bitstream (17): counted in the rate."""

MAX_BITS = 16


def _check_features(name: str, x: torch.Tensor, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.ndim != ndim or x.is_complex() or not x.is_floating_point():
        raise ValueError(f"{name} must be a real floating tensor with {ndim} dimensions, got {x.dtype} "
                         f"of shape {tuple(x.shape)}")
    if x.numel() == 0 or not torch.isfinite(x).all():
        raise ValueError(f"{name} must be non-empty and finite")
    return x


def _check_range(lo, hi) -> tuple[float, float]:
    lo, hi = check_real_number("lo", lo), check_real_number("hi", hi)
    if not lo < hi:
        raise ValueError(f"need lo < hi, got lo={lo}, hi={hi}")
    return lo, hi


def _check_bits(bits) -> int:
    return check_int("bits", bits, low=1, high=MAX_BITS)


# ------------------------------------------------------------------------------------------- statistics

def feature_statistics(features: torch.Tensor) -> dict[str, float]:
    """Statistics of all elements of ``features`` (any shape): ``min``, ``max``, ``mean``, ``std``,
    ``excess_kurtosis`` (E[(F − μ)⁴]/σ⁴ − 3; 0 for a Gaussian), ``beyond_5sigma`` (share with |F − μ| > 5σ) and
    ``zero`` (share exactly 0, e.g. after a ReLU)."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch tensor, got {type(features).__name__}")
    x = _check_features("features", features, features.ndim).detach().double().reshape(-1)
    mu, sigma = x.mean(), x.std(correction=0)
    z = (x - mu) / sigma if sigma > 0 else torch.zeros_like(x)
    return {"min": float(x.min()), "max": float(x.max()), "mean": float(mu), "std": float(sigma),
            "excess_kurtosis": float(z.pow(4).mean() - 3.0) if sigma > 0 else float("nan"),
            "beyond_5sigma": float((z.abs() > 5).double().mean()), "zero": float((x == 0).double().mean())}


def truncation_range(train_features: torch.Tensor, rule: str, *, k: float = 3.0,
                     percentile: float = 99.9) -> tuple[float, float]:
    """The truncation interval ``(lo, hi)``, computed on training features (never on the features to be coded).

    Rules:
        ``"minmax"``: no truncation, ``(min F, max F)``;
        ``"sigma"``: ``[μ − kσ, μ + kσ]`` intersected with ``[min F, max F]``, so that non-negative (post-ReLU)
            features get ``[0, μ + kσ]`` (the brief's pitfall: otherwise half the levels are wasted);
        ``"percentile"``: the ``100 − percentile`` and ``percentile`` percentiles (two-sided).

    Returns ``lo`` and ``hi`` rounded to float32, the precision :func:`encode` writes them in, so that quantising
    with them here and through a bitstream gives the same codes.

    Args:
        train_features: float tensor of any shape (all elements are pooled).
        k: σ multiple of the ``"sigma"`` rule, > 0.
        percentile: upper percentile of the ``"percentile"`` rule, in (50, 100].
    """
    check_choice("rule", rule, TRUNCATION_RULES)
    x = _check_features("train_features", train_features, train_features.ndim).detach().double().reshape(-1)
    low, high = float(x.min()), float(x.max())
    if rule == "minmax":
        lo, hi = low, high
    elif rule == "sigma":
        k = check_real_number("k", k, low=0.0, low_open=True)
        mu, sigma = float(x.mean()), float(x.std(correction=0))
        lo, hi = max(mu - k * sigma, low), min(mu + k * sigma, high)
    else:
        p = check_real_number("percentile", percentile, low=50.0, high=100.0, low_open=True)
        lo, hi = (float(v) for v in np.percentile(x.numpy(), [100.0 - p, p]))
    lo, hi = float(np.float32(lo)), float(np.float32(hi))  # the precision the bitstream header carries
    if not lo < hi:
        raise ValueError(f"the {rule!r} rule gives an empty range [{lo}, {hi}]: the features are (nearly) constant")
    return lo, hi


# --------------------------------------------------------------------------------------- quantisation

def quantise(features: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """b-bit uniform quantisation after truncation: ``q = round((clip(F, lo, hi) − lo)/(hi − lo)·(2^b − 1))``,
    int64 codes in ``[0, 2^b − 1]`` of ``features``' shape, computed in float32 (float64 for float64 input). Round
    half to even; the error of :func:`dequantise` is at most half a step, ``(hi − lo)/(2(2^b − 1))``, inside
    ``[lo, hi]`` (plus float32 rounding)."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch tensor, got {type(features).__name__}")
    x = _check_features("features", features, features.ndim).detach()
    lo, hi = _check_range(lo, hi)
    levels = 2 ** _check_bits(bits) - 1
    x = x if x.dtype == torch.float64 else x.float()  # float32 arithmetic unless the features are float64
    t = (x.clamp(lo, hi) - lo) / (hi - lo)  # truncate, then map [lo, hi] -> [0, 1]
    return torch.round(t * levels).to(torch.int64)  # q = round(t·(2^b − 1))


def dequantise(codes: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """``F̂ = lo + q/(2^b − 1)·(hi − lo)``, float32, of ``codes``' shape (integer codes in ``[0, 2^b − 1]``)."""
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex() \
            or codes.dtype == torch.bool:
        raise TypeError("codes must be an integer torch tensor")
    lo, hi = _check_range(lo, hi)
    levels = 2 ** _check_bits(bits) - 1
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > levels):
        raise ValueError(f"codes must be in [0, {levels}] for bits={bits}")
    return lo + codes.float() * ((hi - lo) / levels)  # F̂ = lo + q/(2^b − 1)·(hi − lo)


# ------------------------------------------------------------------------------------------- packing

def frame_grid(channels: int) -> tuple[int, int]:
    """``(rows, cols)`` of channel tiles in the packed frame: the most nearly square exact factorisation
    ``rows·cols = C`` with ``rows <= cols <= 2·rows`` if there is one (32 → 4 × 8), else the square-ish grid
    ``cols = ⌈√C⌉, rows = ⌈C/cols⌉`` with the last tiles left empty (zero)."""
    channels = check_int("channels", channels, low=1)
    rows = max(r for r in range(1, math.isqrt(channels) + 1) if channels % r == 0)
    if channels // rows <= 2 * rows:
        return rows, channels // rows
    cols = math.ceil(math.sqrt(channels))
    return math.ceil(channels / cols), cols


def pack_frame(x: torch.Tensor) -> torch.Tensor:
    """Tile the channels of ``x`` ``[C, H, W]`` row by row into one frame ``[rows·H, cols·W]`` (:func:`frame_grid`;
    empty tiles are zero)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"x must be a [C, H, W] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    c, h, w = x.shape
    rows, cols = frame_grid(c)
    tiles = torch.zeros((rows * cols, h, w), dtype=x.dtype)
    tiles[:c] = x
    return tiles.reshape(rows, cols, h, w).permute(0, 2, 1, 3).reshape(rows * h, cols * w)


def unpack_frame(frame: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`pack_frame`: the first ``channels`` tiles of ``frame`` ``[rows·H, cols·W]``, ``[C, H, W]``."""
    rows, cols = frame_grid(channels)
    if not isinstance(frame, torch.Tensor) or frame.ndim != 2 or frame.shape[0] % rows or frame.shape[1] % cols:
        raise ValueError(f"frame must be a 2-D tensor whose sides divide by the grid {rows} x {cols} of "
                         f"{channels} channels, got {getattr(frame, 'shape', type(frame).__name__)}")
    h, w = frame.shape[0] // rows, frame.shape[1] // cols
    return frame.reshape(rows, h, cols, w).permute(0, 2, 1, 3).reshape(rows * cols, h, w)[:channels]


# --------------------------------------------------------------------------------------------- codecs

def _raw_payload(codes: torch.Tensor, bits: int) -> Payload:
    flat = codes.reshape(1, -1)
    return Payload((Part.codes("codes", flat, bits),), (flat.shape[1],), torch.float32)


def _pil_frame(codes: torch.Tensor, bits: int):
    from PIL import Image

    frame = pack_frame(codes).numpy()
    return Image.fromarray(frame.astype(np.uint8 if bits <= 8 else np.uint16))  # mode "L" or "I;16"


@functools.lru_cache(maxsize=64)
def _jpeg_headers(height: int, width: int, quality: int) -> bytes:
    """The bytes Pillow writes before the scan of a grey ``height × width`` frame at ``quality``: the standard
    tables and the frame header, known to both ends, so they are not sent."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), dtype=np.uint8), mode="L").save(
        buffer, format="JPEG", quality=quality, optimize=False)
    data = buffer.getvalue()
    return data[:jpeg_scan_start(data)]


def _encode_body(codes: torch.Tensor, bits: int, codec: str, quality: int) -> bytes:
    if codec == "raw":
        return _raw_payload(codes, bits).to_bytes()  # b bits per code, ceil(b·n/8) bytes
    if codec == "zlib":
        dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        return zlib.compress(codes.numpy().astype(dtype).tobytes(), 9)
    buffer = io.BytesIO()
    if codec == "png":
        _pil_frame(codes, bits).save(buffer, format="PNG", compress_level=9)
        return buffer.getvalue()  # the whole PNG file
    _pil_frame(codes, bits).save(buffer, format="JPEG", quality=quality, optimize=False)
    data = buffer.getvalue()
    return data[jpeg_scan_start(data):]  # the entropy-coded scan (with the end-of-image marker)


def encode(features: torch.Tensor, *, lo: float, hi: float, bits: int, codec: str,
           quality: int | None = None) -> bytes:
    """One sample's bitstream: header + body. ``features`` ``[C, H, W]`` float; C, H, W < 65,536.

    Args:
        lo, hi: the truncation range (from :func:`truncation_range` on training features); written as float32,
            and the features are quantised with those float32 values.
        bits: quantiser bit depth b, 1..16; ``"png"`` stores b ≤ 8 in an 8-bit frame and b > 8 in a 16-bit one;
            ``"jpeg"`` needs b = 8 (8-bit baseline JPEG of the packed frame).
        codec: one of :data:`CODECS`.
        quality: JPEG quality 1..95 (``"jpeg"`` only).
    """
    features = _check_features("features", features, 3)
    check_choice("codec", codec, CODECS)
    bits = _check_bits(bits)
    if any(s >= 2**16 for s in features.shape):
        raise ValueError(f"each side of features must be < 65536, got {tuple(features.shape)}")
    if codec == "jpeg":
        if bits != 8:
            raise ValueError(f"the jpeg codec codes 8-bit frames: bits must be 8, got {bits}")
        quality = check_int("quality", quality, low=1, high=95)
    elif quality is not None:
        raise ValueError(f"quality applies to the jpeg codec only, got quality={quality!r} for {codec!r}")
    lo, hi = _check_range(lo, hi)
    lo32, hi32 = float(np.float32(lo)), float(np.float32(hi))
    if not lo32 < hi32:
        raise ValueError(f"lo and hi must differ in float32, got {lo} and {hi}")
    codes = quantise(features, lo32, hi32, bits)
    header = _HEADER.pack(CODECS.index(codec), bits, quality or 0, *features.shape, lo32, hi32)
    return header + _encode_body(codes, bits, codec, quality or 0)


def decode_codes(data: bytes) -> tuple[torch.Tensor, float, float, int]:
    """Parse a bitstream of :func:`encode`: ``(codes [C, H, W] int64, lo, hi, bits)``. For ``"jpeg"`` the codes
    are the decoded (lossy) 8-bit samples. Raises ``ValueError`` for a malformed stream."""
    from PIL import Image

    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) < HEADER_BYTES:
        raise ValueError(f"a bitstream has at least {HEADER_BYTES} header bytes, got {len(data)}")
    codec_id, bits, quality, c, h, w, lo, hi = _HEADER.unpack_from(data)
    if codec_id >= len(CODECS) or not 1 <= bits <= MAX_BITS or min(c, h, w) < 1 or not lo < hi:
        raise ValueError("malformed bitstream header")
    codec, body, shape = CODECS[codec_id], bytes(data[HEADER_BYTES:]), (c, h, w)
    try:
        if codec == "raw":
            payload = _raw_payload(torch.zeros(c * h * w, dtype=torch.int64), bits)
            codes = Payload.from_bytes(body, payload.header)["codes"].data.reshape(shape)
        elif codec == "zlib":
            dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
            flat = np.frombuffer(zlib.decompress(body), dtype=dtype)
            if flat.size != c * h * w:
                raise ValueError(f"zlib body holds {flat.size} codes, the header says {c * h * w}")
            codes = torch.from_numpy(flat.astype(np.int64)).reshape(shape)
        else:
            rows, cols = frame_grid(c)
            if codec == "jpeg":
                body = _jpeg_headers(rows * h, cols * w, quality) + body
            image = Image.open(io.BytesIO(body))
            image.load()
            frame = torch.from_numpy(np.array(image).astype(np.int64))
            if tuple(frame.shape) != (rows * h, cols * w):
                raise ValueError(f"the {codec} frame is {tuple(frame.shape)}, the header implies "
                                 f"{(rows * h, cols * w)}")
            codes = unpack_frame(frame, c)
    except (zlib.error, OSError) as error:  # Pillow raises OSError subclasses for broken images
        raise ValueError(f"malformed {codec} body: {error}") from error
    if int(codes.max()) > 2**bits - 1:
        raise ValueError(f"decoded codes exceed {2**bits - 1} for bits={bits}")
    return codes, lo, hi, bits


def decode(data: bytes) -> torch.Tensor:
    """The decoded features ``F̂`` ``[C, H, W]`` float32 of a bitstream of :func:`encode`."""
    return dequantise(*decode_codes(data))


def encode_batch(features: torch.Tensor, **kwargs) -> list[bytes]:
    """:func:`encode` for each sample of ``features`` ``[N, C, H, W]``: one bitstream per sample (the paper codes
    each sample's features on its own)."""
    _check_features("features", features, 4)
    return [encode(f, **kwargs) for f in features]


def decode_batch(streams: Sequence[bytes]) -> torch.Tensor:
    """``[N, C, H, W]`` float32: :func:`decode` of each bitstream, stacked (all of one shape)."""
    if isinstance(streams, bytes | bytearray) or not len(streams):
        raise ValueError("streams must be a non-empty sequence of bitstreams")
    return torch.stack([decode(s) for s in streams])
