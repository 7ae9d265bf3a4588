"""Calibrated channel models: complex baseband, batched, differentiable, seeded by explicit generators.

Convention (``shared/briefs/_conventions.md`` §4, compatible with Sionna):

* signals are complex ``[batch, ..., n_symbols]`` tensors; :func:`real_to_complex` packs reals
  (first half real parts, second half imaginary parts) and :func:`complex_to_real` inverts it;
* :class:`PowerNorm` makes the mean ``|z|^2`` per example equal to ``P`` (1 by default);
* SNR is ``Es/N0`` per complex symbol with nominal ``Es``; the noise is ``CN(0, N0)`` (``N0/2`` per real
  component) and does not depend on the instantaneous signal;
* every random call takes ``generator=`` explicitly: ``AWGN(snr_db=10)(x, generator=g)``.

Reference curves live in :mod:`commlab.channels.bounds`.
"""

from . import bounds
from .awgn import AWGN, complex_normal
from .discrete import ERASED, BinaryErasureChannel, BinarySymmetricChannel
from .fading import BlockFading, FadingResult, RayleighBlockFading, RicianBlockFading, equalize
from .mac import MACResult, MultiUserMAC
from .power import (
    PowerNorm,
    average_power,
    complex_to_real,
    db_to_linear,
    ebnodb2no,
    linear_to_db,
    power_normalize,
    real_to_complex,
    snr_db_to_no,
)

__all__ = [
    "AWGN",
    "ERASED",
    "BinaryErasureChannel",
    "BinarySymmetricChannel",
    "BlockFading",
    "FadingResult",
    "MACResult",
    "MultiUserMAC",
    "PowerNorm",
    "RayleighBlockFading",
    "RicianBlockFading",
    "average_power",
    "bounds",
    "complex_normal",
    "complex_to_real",
    "db_to_linear",
    "ebnodb2no",
    "equalize",
    "linear_to_db",
    "power_normalize",
    "real_to_complex",
    "snr_db_to_no",
]
