"""Compressors with honest bit accounting, and error feedback.

Compressors (``compress(x, generator) -> Payload``, ``decompress(payload) -> Tensor``; ``x`` of
shape ``[d]`` or a stack of worker rows ``[W, d]``): :class:`TopK`, :class:`RandK`,
:class:`SampledTopK`, :class:`Sign`, :class:`ScaledSign`, :class:`QSGD`, :class:`Natural`,
:class:`Uniform`, :class:`OneBitSGD`, :class:`TernGrad`, :class:`Threshold`, :class:`LowPrecision`, :class:`LogByte`,
:class:`PowerSGD`, :class:`Identity`.
Error feedback and shifts live in :mod:`commlab.compress.ef`.
"""

from commlab.compress.base import Compressor
from commlab.compress.lowrank import PowerSGD
from commlab.compress.payload import Header, Part, Payload
from commlab.compress.quantize import (
    QSGD,
    Identity,
    LogByte,
    LowPrecision,
    Natural,
    OneBitSGD,
    ScaledSign,
    Sign,
    TernGrad,
    Uniform,
)
from commlab.compress.sparsify import RandK, SampledTopK, Threshold, TopK

__all__ = [
    "QSGD",
    "Compressor",
    "Header",
    "Identity",
    "LogByte",
    "LowPrecision",
    "Natural",
    "OneBitSGD",
    "Part",
    "Payload",
    "PowerSGD",
    "RandK",
    "SampledTopK",
    "ScaledSign",
    "Sign",
    "TernGrad",
    "Threshold",
    "TopK",
    "Uniform",
]
