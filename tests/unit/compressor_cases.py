"""One instance of every compressor configuration that the unit tests run over (round trips, exact bits,
wire format, decoding, devices); a test file takes :data:`EVERY` rather than listing its own."""

from commlab.compress import (
    QSGD,
    Identity,
    LogByte,
    LowPrecision,
    Natural,
    OneBitSGD,
    PowerSGD,
    RandK,
    SampledTopK,
    ScaledSign,
    Sign,
    TernGrad,
    Threshold,
    TopK,
    Uniform,
)

EVERY = [
    Identity(), TopK(0.1), TopK(k=1), TopK(k=3), TopK(0.6), RandK(0.2), RandK(k=3, shared=True),
    RandK(0.3, scaled=False), SampledTopK(0.1, sample_ratio=0.5), Threshold(1.0), Threshold(0.2), Sign(), ScaledSign(),
    ScaledSign("l2"), OneBitSGD(), TernGrad(), QSGD(1), QSGD(4), QSGD(16), Natural(), Uniform(3), Uniform(8),
    Uniform(16), LowPrecision("fp16"), LowPrecision("bf16"), LowPrecision("fp8_e4m3"), LowPrecision("fp8_e5m2"),
    LowPrecision("e3m0"), LogByte(), PowerSGD(2),
]
