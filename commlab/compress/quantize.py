"""Quantisers: every coordinate is sent, each in fewer bits.

* :class:`Identity` — the dense reference (the input dtype's width per value).
* :class:`Sign` — 1 bit per value (signSGD, Bernstein et al. 2018); :class:`ScaledSign` adds one
  32-bit scale per row (EF-signSGD, Karimireddy et al. 2019; 1-bit Adam's ‖x‖₂/√d scale).
* :class:`OneBitSGD` — 1 bit per value decoded as one of two row means (Seide et al. 2014).
* :class:`TernGrad` — a stochastic ternary code {−s, 0, s} with s = max |x| (Wen et al. 2017).
* :class:`QSGD` — s levels with stochastic rounding and a 32-bit norm (Alistarh et al. 2017).
* :class:`Natural` — stochastic rounding to a power of two, 9 bits (Horváth et al. 2019).
* :class:`Uniform` — b-bit min–max quantisation with stochastic rounding.
* :class:`LowPrecision` — casts to fp16, bf16, fp8 (E4M3, E5M2) or the 4-bit E3M0 format used by
  Streaming DiLoCo, with a 32-bit per-row scale for the 8- and 4-bit formats.
* :class:`LogByte` — one signed byte per value on a logarithmic grid (sign + 7-bit log-magnitude),
  the scalar code of shared-randomness SPSA (Zelikman et al. 2023, "Just One Byte").
"""

from __future__ import annotations

import math

import torch

from commlab._checks import check_positive
from commlab.compress.base import Compressor, draw
from commlab.compress.payload import Part


def _rows_of(payload, name: str, W: int) -> torch.Tensor:
    return payload[name].data.reshape(W, -1)


def _wide(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` in float32, or float64 when they are float64: norms, scales and ratios of half-precision
    input are computed where they cannot overflow (‖1‖₁ of 100,000 fp16 ones is Inf in fp16).

    The scales a quantiser sends (ScaledSign, OneBitSGD, TernGrad, QSGD, Uniform) are sent in this
    dtype: 32 bits each, 64 bits for float64 input, so a float64 vector keeps its float64 scale."""
    return rows if rows.dtype in (torch.float32, torch.float64) else rows.to(torch.float32)


def _stochastic_round(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """floor(x + u), u ~ U[0, 1): unbiased rounding of non-negative ``x`` to an integer."""
    return torch.floor(x + draw(torch.rand, x.shape, generator=generator, device=x.device, dtype=x.dtype))


class Identity(Compressor):
    """No compression: every value with the raw bits of its dtype (32 for float32)."""

    kind = "identity"
    omega = 0.0
    alpha = 1.0
    linear = True
    homogeneous = True

    def _encode(self, rows, generator):
        return (Part.floats("values", rows),)

    def _decode(self, payload, W, d):
        return _rows_of(payload, "values", W)


class Sign(Compressor):
    """sign(x) as one bit per coordinate (0 counts as +); the receiver sees ±1. Biased."""

    def _encode(self, rows, generator):
        return (Part.codes("signs", (rows >= 0).to(torch.int64), 1),)

    def _decode(self, payload, W, d):
        return _rows_of(payload, "signs", W).to(torch.float32) * 2 - 1


class ScaledSign(Compressor):
    """scale · sign(x): one bit per coordinate plus one 32-bit scale per row (64-bit for float64 input).

    ``norm="l1"``: scale = ‖x‖₁/d, the contractive form of Karimireddy et al. (2019) with
    α = ‖x‖₁²/(d‖x‖₂²) ≥ 1/d. ``norm="l2"``: scale = ‖x‖₂/√d, which keeps the norm (1-bit Adam's
    choice); biased and not contractive for sparse x.
    """

    homogeneous = True

    def __init__(self, norm: str = "l1"):
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        self.norm = norm
        self.kind = "contractive" if norm == "l1" else "biased"

    def alpha_for(self, d: int) -> float | None:
        return 1 / d if self.norm == "l1" else None

    def _encode(self, rows, generator):
        d = rows.shape[1]
        rows = _wide(rows)
        if self.norm == "l1":
            scale = rows.abs().sum(dim=1, keepdim=True) / d
        else:
            scale = rows.norm(dim=1, keepdim=True) / math.sqrt(d)
        return Part.codes("signs", (rows >= 0).to(torch.int64), 1), Part.floats("scale", scale)

    def _decode(self, payload, W, d):
        signs = _rows_of(payload, "signs", W).to(torch.float32) * 2 - 1
        return signs * _rows_of(payload, "scale", W)


class OneBitSGD(Compressor):
    """1-bit SGD's quantiser (Seide et al. 2014): one bit per coordinate, x_i ≥ 0 or not, decoded as
    the mean of the row's non-negative entries or the mean of its negative ones.

    The two means are the least-squares reconstruction for that split, so the error is
    ‖x‖² − (Σ₊x)²/n₊ − (Σ₋x)²/n₋, at most scaled sign's ‖x‖² − ‖x‖₁²/d: contractive with α = 1/d
    (used with error feedback, as in the paper). Wire: d bits plus two 32-bit means per row (64-bit for
    float64 input).
    """

    kind = "contractive"
    homogeneous = True

    def alpha_for(self, d: int) -> float:
        return 1 / d

    def _encode(self, rows, generator):
        rows = _wide(rows)
        up = rows >= 0
        n_up = up.sum(dim=1, keepdim=True)
        mean_up = torch.where(up, rows, 0).sum(dim=1, keepdim=True) / n_up.clamp(min=1)
        mean_down = torch.where(up, 0, rows).sum(dim=1, keepdim=True) / (rows.shape[1] - n_up).clamp(min=1)
        return (Part.codes("signs", up.to(torch.int64), 1),
                Part.floats("means", torch.cat([mean_up, mean_down], dim=1)))

    def _decode(self, payload, W, d):
        means = _rows_of(payload, "means", W)
        return torch.where(_rows_of(payload, "signs", W).bool(), means[:, :1], means[:, 1:])


class TernGrad(Compressor):
    """TernGrad (Wen et al. 2017): x_i ≈ s · sign(x_i) · b_i, b_i ~ Bernoulli(|x_i| / s), s = max |x|.

    Unbiased; E‖C(x) − x‖² = s‖x‖₁ − ‖x‖² ≤ (√d − 1)‖x‖², since s‖x‖₁ ≤ ‖x‖∞ √d ‖x‖₂ ≤ √d ‖x‖²,
    so ω = √d − 1. Wire: a 2-bit ternary code per coordinate (0, +1, −1) plus one 32-bit scale per
    row (64-bit for float64 input; the paper's per-layer scaler, without its gradient clipping).
    """

    kind = "unbiased"
    random = True
    homogeneous = True

    def omega_for(self, d: int) -> float:
        return math.sqrt(d) - 1

    def _encode(self, rows, generator):
        rows = _wide(rows)
        scale = rows.abs().amax(dim=1, keepdim=True)  # s = ‖x‖∞ per row
        u = draw(torch.rand, rows.shape, generator=generator, device=rows.device, dtype=rows.dtype)
        keep = u * scale < rows.abs()  # P = |x_i|/s
        codes = keep.to(torch.int64) * (1 + (rows < 0).to(torch.int64))  # 0: zero, 1: +s, 2: −s
        return Part.codes("ternary", codes, 2), Part.floats("scale", scale)

    def _decode(self, payload, W, d):
        codes = _rows_of(payload, "ternary", W)
        signs = (codes == 1).to(torch.float32) - (codes == 2).to(torch.float32)
        return signs * _rows_of(payload, "scale", W)


class QSGD(Compressor):
    """QSGD with ``s`` levels: x_i ≈ ‖x‖₂ · sign(x_i) · ξ_i / s, ξ_i stochastic rounding of s|x_i|/‖x‖₂.

    Unbiased with ω = min(d/s², √d/s) (Alistarh et al. 2017, Lemma 3.1). Wire: 1 sign bit and
    ``ceil(log2(s + 1))`` level bits per coordinate (fixed length, no Elias coding) plus a 32-bit norm
    (64-bit for float64 input).
    """

    kind = "unbiased"
    random = True

    def __init__(self, s: int = 1):
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"s (number of levels) must be an integer >= 1, got {s!r}")
        self.s = s

    def omega_for(self, d: int) -> float:
        return min(d / self.s**2, math.sqrt(d) / self.s)

    def _encode(self, rows, generator):
        rows = _wide(rows)
        norm = rows.norm(dim=1, keepdim=True)
        ratio = rows.abs() / torch.where(norm > 0, norm, torch.ones_like(norm))
        levels = _stochastic_round(ratio * self.s, generator).clamp_(0, self.s)
        width = math.ceil(math.log2(self.s + 1))
        return (
            Part.codes("signs", (rows >= 0).to(torch.int64), 1),
            Part.codes("levels", levels.to(torch.int64), width),
            Part.floats("norm", norm),
        )

    def _decode(self, payload, W, d):
        signs = _rows_of(payload, "signs", W).to(torch.float32) * 2 - 1
        levels = _rows_of(payload, "levels", W).to(torch.float32)
        return signs * levels * _rows_of(payload, "norm", W) / self.s


class Natural(Compressor):
    """Natural compression: stochastic rounding of |x| to one of the two nearest powers of two.

    For 2^e ≤ |x| < 2^(e+1) it sends 2^(e+1) with probability |x|/2^e − 1, else 2^e: unbiased with
    ω = 1/8 (Horváth et al. 2019, Thm. 1). On the wire: the sign and the 8-bit float32 exponent,
    9 bits per coordinate. Other dtypes are cast to float32 first (float64 input is rounded to float32,
    and must lie within its range, |x| ≤ 3.4e38); the receiver's values are cast back.
    """

    kind = "unbiased"
    omega = 1 / 8
    random = True

    def _encode(self, rows, generator):
        if rows.dtype == torch.float64 and rows.abs().max() > torch.finfo(torch.float32).max:
            raise ValueError("Natural sends float32 exponents: x must lie within the float32 range (|x| <= 3.4e38)")
        bits = rows.to(torch.float32).view(torch.int32).to(torch.int64)
        sign = (bits >> 31) & 1
        exponent = (bits >> 23) & 0xFF
        mantissa = (bits & 0x7FFFFF).to(torch.float64) / 2**23
        up = draw(torch.rand, rows.shape, generator=generator, device=rows.device, dtype=torch.float64) < mantissa
        exponent = exponent + up.to(torch.int64)
        return (Part.codes("codes", (sign << 8) | exponent, 9),)

    def _decode(self, payload, W, d):
        codes = _rows_of(payload, "codes", W)
        bits = ((codes >> 8) << 31) | ((codes & 0xFF) << 23)
        return bits.to(torch.int32).view(torch.float32)


class Uniform(Compressor):
    """b-bit min–max quantisation with stochastic rounding, per row.

    x_i ≈ m + Δ·q_i with m = min x, Δ = (max x − min x)/(2^b − 1) and q_i the stochastic rounding
    of (x_i − m)/Δ: unbiased, per-coordinate variance ≤ Δ²/4, hence ω ≤ d/(2^b − 1)². Wire: b bits
    per coordinate plus two scales (min and max) per row, 32 bits each (64 for float64 input).

    Codes are always in [0, 2^b − 1], for any finite input and any b ≤ 16: a constant row sends all
    zeros, and a float32 (or fp16/bf16) row whose range max − min overflows float32 (wider than
    3.4e38) is coded and decoded in float64. A float64 row whose range overflows float64 is rejected.
    """

    kind = "unbiased"
    random = True

    def __init__(self, bits: int = 8):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an integer in [1, 16], got {bits!r}")
        self.bits = bits

    def omega_for(self, d: int) -> float:
        return d / (2**self.bits - 1) ** 2

    def _step(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, Δ)`` of rows with range ``[lo, hi]`` (``[W, 1]`` each), in float64 when ``hi − lo``
        overflows their dtype: both ends compute Δ this way from the range that is sent."""
        span = hi - lo
        if not torch.isfinite(span).all():
            lo, span = lo.to(torch.float64), hi.to(torch.float64) - lo.to(torch.float64)
            if not torch.isfinite(span).all():
                raise ValueError("x's range max - min overflows float64; Uniform cannot code it")
        return lo, span / (2**self.bits - 1)

    def _encode(self, rows, generator):
        rows = _wide(rows)  # codes up to 2^16 - 1 and the range are not representable in fp16
        lo = rows.min(dim=1, keepdim=True).values
        hi = rows.max(dim=1, keepdim=True).values
        low, step = self._step(lo, hi)
        safe = torch.where(step > 0, step, torch.ones_like(step))
        q = _stochastic_round((rows.to(step.dtype) - low) / safe, generator).clamp_(0, 2**self.bits - 1)
        return Part.codes("codes", q.to(torch.int64), self.bits), Part.floats("range", torch.cat([lo, hi], dim=1))

    def _decode(self, payload, W, d):
        lo, hi = _rows_of(payload, "range", W).split(1, dim=1)
        low, step = self._step(lo, hi)
        out = low + _rows_of(payload, "codes", W).to(step.dtype) * step
        # in float64 the top code may land above hi by rounding, which near float64's maximum is Inf
        return torch.minimum(out, hi.to(out.dtype)) if out.dtype == torch.float64 else out


_CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
E3M0_MIN_EXPONENT = -6  # E3M0 magnitudes: scale · 2^e for e in [-6, 0], and zero


class LowPrecision(Compressor):
    """Round to a low-precision float format (round to nearest); deterministic and biased.

    Formats:
        ``"fp16"``, ``"bf16"``: a plain cast, 16 bits per value; linear (values can be summed by an
            all-reduce). fp16 overflows above 65504: such input is rejected.
        ``"fp8_e4m3"``, ``"fp8_e5m2"``: each row is scaled so that its largest magnitude maps to the
            format's largest finite value, then cast; 8 bits per value + a 32-bit scale per row.
        ``"e3m0"``: 4 bits (sign + 3-bit exponent, no mantissa): magnitudes scale·2^e for
            e ∈ {−6, …, 0} and 0, scale = max |x| of the row (32 bits); the outer-gradient format
            of Streaming DiLoCo.
    """

    def __init__(self, format: str = "bf16"):
        if format not in (*_CASTS, "e3m0"):
            raise ValueError(f"format must be one of {[*_CASTS, 'e3m0']}, got {format!r}")
        self.format = format
        self.linear = format in ("fp16", "bf16")

    def _encode(self, rows, generator):
        if self.format == "e3m0":
            return self._encode_e3m0(rows)
        dtype = _CASTS[self.format]
        if self.format in ("fp16", "bf16"):
            if self.format == "fp16" and rows.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError("x exceeds the fp16 range (65504); use format='bf16' or scale it")
            return (Part.floats("values", rows.to(dtype)),)
        scale = rows.abs().max(dim=1, keepdim=True).values / torch.finfo(dtype).max
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
        return Part.floats("values", (rows / scale).to(dtype)), Part.floats("scale", scale)

    def _encode_e3m0(self, rows):
        scale = rows.abs().max(dim=1, keepdim=True).values.to(torch.float32)
        r = rows.abs() / torch.where(scale > 0, scale, torch.ones_like(scale))
        e = torch.floor(torch.log2(r.clamp_min(2.0**E3M0_MIN_EXPONENT)))
        e = e + (r > 1.5 * torch.exp2(e)).to(e.dtype)  # nearest of 2^e and 2^(e+1)
        code = (e - E3M0_MIN_EXPONENT + 1).clamp(1, 7)
        code = torch.where(r < 2.0 ** (E3M0_MIN_EXPONENT - 1), torch.zeros_like(code), code)
        codes = ((rows < 0).to(torch.int64) << 3) | code.to(torch.int64)
        return Part.codes("codes", codes, 4), Part.floats("scale", scale)

    def _decode(self, payload, W, d):
        if self.format == "e3m0":
            codes = _rows_of(payload, "codes", W)
            e = (codes & 7).to(torch.float32)
            magnitude = torch.where(e > 0, torch.exp2(e + E3M0_MIN_EXPONENT - 1), torch.zeros_like(e))
            sign = 1 - 2 * (codes >> 3).to(torch.float32)
            return sign * magnitude * _rows_of(payload, "scale", W)
        values = _rows_of(payload, "values", W).to(torch.float32)
        if self.format in ("fp16", "bf16"):
            return values
        return values * _rows_of(payload, "scale", W)


LOGBYTE_MIDDLE = 64  # magnitude code of `center`; codes 1..127 span exponents -63..63 steps


class LogByte(Compressor):
    """One byte per value: a sign bit and a 7-bit code of ln|x| on a uniform grid; deterministic, biased.

    Layout of the byte ``b`` (sent as an unsigned 8-bit code): ``b = (s << 7) | m`` with ``s = 1`` for
    a negative value and ``m ∈ {0, …, 127}``:

    * ``m = 0`` is zero (``s = 0``; the byte 128 never appears and also decodes to 0);
    * ``m ∈ {1, …, 127}`` is the magnitude ``center · exp((m − 64) · step)``, so the 127 levels run from
      ``lowest = center·e^(−63·step)`` to ``highest = center·e^(63·step)`` (with the default
      ``step = 1/16``, ``center = 1``: 0.0195 … 51.4, a relative step of e^(1/16) ≈ 6.4 %).

    Encoding rounds ln|x| to the nearest level: ``m = round(ln(|x|/center)/step) + 64``; values with
    ``m < 1``, i.e. ``|x| < lowest·e^(−step/2)``, become 0; values above the grid saturate at
    ``±highest``. Round-trip error for ``|x| ≤ highest``:
    ``|x̂ − x| ≤ max((e^(step/2) − 1)·|x|, lowest·e^(−step/2))`` (3.2 % relative inside the grid with
    the default step).

    The paper's quantiser, ``q = clamp(round(16·ln|p|), −127, 127)`` plus a separate sign, spends 9 bits;
    folding the sign into the byte halves the number of levels, so this grid spans e^(±63/16) around
    ``center`` instead of e^(±127/16): pick ``center`` near the typical magnitude (or a coarser ``step``).

    Args:
        step: grid spacing in natural-log units, > 0 (1/16 as in the paper).
        center: magnitude of the middle code, > 0.
    """

    def __init__(self, step: float = 1 / 16, center: float = 1.0):
        self.step = check_positive("step", step)
        self.center = check_positive("center", center)

    @property
    def lowest(self) -> float:
        """The smallest non-zero magnitude on the grid."""
        return self.center * math.exp(-(LOGBYTE_MIDDLE - 1) * self.step)

    @property
    def highest(self) -> float:
        """The largest magnitude on the grid (where values saturate)."""
        return self.center * math.exp((127 - LOGBYTE_MIDDLE) * self.step)

    @property
    def relative_error(self) -> float:
        """Bound on |x̂ − x|/|x| for lowest ≤ |x| ≤ highest: e^(step/2) − 1."""
        return math.expm1(self.step / 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The bytes of ``x`` (any shape, floating, finite) as a ``torch.uint8`` tensor of the same shape."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating torch.Tensor, got {type(x).__name__}")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or Inf")
        x = x.detach().to(torch.float64)
        level = torch.round(torch.log(x.abs() / self.center) / self.step) + LOGBYTE_MIDDLE  # -inf for 0
        m = torch.where(level < 1, torch.zeros_like(level), level.clamp(max=127)).to(torch.int64)
        sign = ((x < 0) & (m > 0)).to(torch.int64)
        return ((sign << 7) | m).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """float64 values of ``torch.uint8`` codes (any shape)."""
        if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
            raise TypeError(f"codes must be a torch.uint8 tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
        codes = codes.to(torch.int64)
        m = (codes & 127).to(torch.float64)
        magnitude = torch.where(m > 0, self.center * torch.exp((m - LOGBYTE_MIDDLE) * self.step), torch.zeros_like(m))
        return torch.where(codes >= 128, -magnitude, magnitude)

    def _encode(self, rows, generator):
        return (Part.codes("codes", self.encode(rows).to(torch.int64), 8),)

    def _decode(self, payload, W, d):
        return self.decode(_rows_of(payload, "codes", W).to(torch.uint8))
