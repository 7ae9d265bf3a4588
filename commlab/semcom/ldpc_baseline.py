"""A real separate source–channel digital baseline: PCA + quantiser bits → 5G LDPC → QAM → commlab channel →
soft demapping → belief-propagation decoding (NVIDIA Sionna 2.2 for the code and the constellation).

Pipeline per block of ``n_symbols`` complex channel uses, for one modulation and coding scheme (:class:`MCS`:
``m`` bits per QAM symbol, code rate ``r``): ``n = n_symbols·m`` coded bits, ``k = round(r·n)`` information bits,

* :class:`LDPCQAMLink`: ``k`` bits → ``LDPC5GEncoder(k, n)`` (rate matching and the 5G bit interleaver for
  ``m``) → unit-energy Gray QAM (``Mapper``) → commlab's :class:`~commlab.channels.AWGN` or
  :class:`~commlab.channels.RayleighBlockFading` (perfect CSI, zero-forcing) → ``Demapper("app")`` → ``LDPC5GDecoder``
  (``num_iter`` BP iterations, hard bits);
* LLRs: the symbol SNR is commlab's ``Es/N0`` per complex symbol with ``Es = 1`` (conventions §4), the noise is
  ``CN(0, N0)``, and Sionna's demapper computes ``ln Σ exp(−|y − c|²/no)``, i.e. its ``no`` is the same ``N0`` (the
  noise variance per complex symbol). After zero-forcing ``y/h`` the noise is ``CN(0, N0/|h|²)``, so the demapper gets
  ``no = N0/|h|²`` per symbol;
* :func:`block_error_rate`: measured block error rate (a block is in error if any of its ``k`` bits is wrong) and the
  delivered bits per block ``k·(1 − BLER)``;
* :func:`best_rate_that_decodes`: the highest-efficiency entry of an MCS table whose measured BLER is at most a
  target (default ``1e-2`` over ``300`` blocks: at most 3 block errors), the operational counterpart of
  :meth:`~commlab.semcom.SeparationBaseline.at_capacity`, whose ``floor(n_symbols·log2(1 + SNR))`` bits of an ideal
  code stay the bound;
* :func:`pca_source_bits` / :func:`pca_from_bits`: the bits of :class:`~commlab.semcom.SeparationBaseline`'s PCA
  quantiser (redesigned for exactly ``k`` bits) and the reconstruction from (possibly wrong) decoded bits;
  :func:`ldpc_separation` sends images through the whole chain.

All randomness (payload bits, noise, fading) is drawn by commlab from explicit generators; Sionna's blocks used
here are deterministic. Sionna is imported through :func:`~commlab.semcom.sionna_import.import_sionna_phy`, which
keeps torch's global RNG state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from commlab.channels import AWGN, BlockFading, bounds
from commlab.semcom.digital import SeparationBaseline
from commlab.semcom.sionna_import import import_sionna_phy

BITS_PER_SYMBOL = (2, 4, 6)
"""QPSK, 16-QAM, 64-QAM."""


@dataclass(frozen=True)
class MCS:
    """A modulation and coding scheme: ``bits_per_symbol`` (2, 4 or 6) and LDPC ``code_rate`` in (0, 1)."""

    bits_per_symbol: int
    code_rate: float

    def __post_init__(self):
        if isinstance(self.bits_per_symbol, bool) or self.bits_per_symbol not in BITS_PER_SYMBOL:
            raise ValueError(f"bits_per_symbol must be one of {BITS_PER_SYMBOL}, got {self.bits_per_symbol!r}")
        if not (isinstance(self.code_rate, int | float) and 0.0 < float(self.code_rate) < 1.0):
            raise ValueError(f"code_rate must be a number in (0, 1), got {self.code_rate!r}")

    @property
    def efficiency(self) -> float:
        """Nominal information bits per complex symbol, ``m·r``."""
        return self.bits_per_symbol * float(self.code_rate)


MCS_TABLE = tuple(MCS(m, r) for m, rates in ((2, (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4)),
                                             (4, (1 / 2, 3 / 5, 2 / 3, 3 / 4, 5 / 6)),
                                             (6, (2 / 3, 3 / 4, 5 / 6)))
                  for r in rates)
"""The default table (13 entries, 0.5 to 5 bits per symbol; 5G-like rates)."""


class LDPCQAMLink:
    """5G LDPC + QAM for blocks of ``n_symbols`` complex channel uses.

    Args:
        n_symbols: complex channel uses per block (one codeword per block).
        mcs: the modulation and coding scheme.
        num_iter: belief-propagation iterations of the decoder.

    Attributes:
        k: information bits per block, ``round(r·n)``; ``n``: coded bits per block, ``n_symbols·m``.
    """

    def __init__(self, n_symbols: int, mcs: MCS, *, num_iter: int = 20):
        if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or n_symbols < 1:
            raise ValueError(f"n_symbols must be a positive integer, got {n_symbols!r}")
        if not isinstance(mcs, MCS):
            raise TypeError(f"mcs must be an MCS, got {type(mcs).__name__}")
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
            raise ValueError(f"num_iter must be a positive integer, got {num_iter!r}")
        import_sionna_phy()
        from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
        from sionna.phy.mapping import Demapper, Mapper

        self.n_symbols, self.mcs, self.num_iter = n_symbols, mcs, num_iter
        self.n = n_symbols * mcs.bits_per_symbol
        self.k = int(round(mcs.code_rate * self.n))
        m = mcs.bits_per_symbol
        self._encoder = LDPC5GEncoder(self.k, self.n, num_bits_per_symbol=m, device="cpu")
        self._decoder = LDPC5GDecoder(self._encoder, hard_out=True, num_iter=num_iter, device="cpu")
        self._mapper = Mapper("qam", m, device="cpu")
        self._demapper = Demapper("app", "qam", m, device="cpu")

    def encode(self, bits: torch.Tensor) -> torch.Tensor:
        """``[B, k]`` bits (0/1) → ``[B, n_symbols]`` complex64 unit-energy QAM symbols."""
        if bits.ndim != 2 or bits.shape[1] != self.k:
            raise ValueError(f"bits must have shape [B, {self.k}], got {tuple(bits.shape)}")
        if bool(((bits != 0) & (bits != 1)).any()):
            raise ValueError("bits must be 0 or 1")
        return self._mapper(self._encoder(bits.float()))

    def llr(self, y: torch.Tensor, no) -> torch.Tensor:
        """``[B, n]`` coded-bit LLRs ``ln p(b = 1 | y)/p(b = 0 | y)`` (Sionna's sign) of ``[B, n_symbols]`` received
        symbols with noise variance ``no`` (N0 per complex symbol, a number or a tensor broadcastable to ``y``):
        ``ln Σ_{c: b=1} exp(−|y − c|²/N0) − ln Σ_{c: b=0} exp(−|y − c|²/N0)`` (exact APP demapping)."""
        if not y.is_complex() or y.ndim != 2 or y.shape[1] != self.n_symbols:
            raise ValueError(f"y must be complex with shape [B, {self.n_symbols}], got {y.dtype} {tuple(y.shape)}")
        no = torch.as_tensor(no, dtype=torch.float32)
        if not bool(torch.isfinite(no).all()) or bool((no < 0).any()):
            raise ValueError(f"no must be finite and >= 0, got {no!r}")
        return self._demapper(y.to(torch.complex64), no.expand(y.shape))

    def decode(self, y: torch.Tensor, no) -> torch.Tensor:
        """``[B, n_symbols]`` received symbols and ``no`` (as in :meth:`llr`) → ``[B, k]`` decoded bits (float 0/1)."""
        return self._decoder(self.llr(y, no))

    def transmit(self, bits: torch.Tensor, channel, *, generator: torch.Generator | None, snr_db=None) -> torch.Tensor:
        """Encode, send over ``channel`` (commlab :class:`AWGN`, or :class:`BlockFading` with ``csi="perfect"`` and
        ``equalizer="zf"``) at its SNR or ``snr_db``, and decode; returns the ``[B, k]`` decoded bits."""
        x = self.encode(bits)
        if isinstance(channel, AWGN):
            if channel.real or channel.power != "nominal" or channel.es != 1.0:
                raise ValueError("the AWGN channel must be complex, nominal power, es = 1")
            y = channel(x, generator=generator, snr_db=snr_db)
            no = channel.noise_variance(x, snr_db)
        elif isinstance(channel, BlockFading):
            if channel.csi != "perfect" or channel.equalizer != "zf":
                raise ValueError("fading channels must have csi='perfect' and equalizer='zf' "
                                 f"(got csi={channel.csi!r}, equalizer={channel.equalizer!r})")
            result = channel.transmit(x, generator=generator, snr_db=snr_db)
            y = result.y
            no = result.no / result.h.abs().square()  # ZF: y/h = x + w/h, w/h ~ CN(0, N0/|h|^2)
        else:
            raise TypeError(f"channel must be a commlab AWGN or BlockFading, got {type(channel).__name__}")
        return self.decode(y, no)


@dataclass(frozen=True)
class BlerResult:
    """``errors`` block errors in ``blocks`` blocks of ``k`` information bits each."""

    errors: int
    blocks: int
    k: int

    @property
    def bler(self) -> float:
        """Measured block error rate."""
        return self.errors / self.blocks

    @property
    def delivered_bits(self) -> float:
        """Mean correctly delivered information bits per block, ``k·(1 − BLER)``."""
        return self.k * (1.0 - self.bler)


def block_error_rate(link: LDPCQAMLink, channel, n_blocks: int, *, generator: torch.Generator | None,
                     snr_db=None, batch: int = 100, max_errors: int | None = None) -> BlerResult:
    """Measured BLER of ``link`` over ``channel`` on ``n_blocks`` blocks of uniform random bits from ``generator``.

    Blocks are sent ``batch`` at a time; with ``max_errors`` the measurement stops as soon as more than
    ``max_errors`` blocks have failed (the result then counts only the blocks sent).
    """
    for name, value in (("n_blocks", n_blocks), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    errors = sent = 0
    while sent < n_blocks:
        size = min(batch, n_blocks - sent)
        bits = torch.randint(0, 2, (size, link.k), generator=generator).float()
        decoded = link.transmit(bits, channel, generator=generator, snr_db=snr_db)
        errors += int((decoded != bits).any(dim=1).sum())
        sent += size
        if max_errors is not None and errors > max_errors:
            break
    return BlerResult(errors, sent, link.k)


def best_rate_that_decodes(snr_db: float, n_symbols: int, *, generator: torch.Generator | None, channel=None,
                           table=MCS_TABLE, target_bler: float = 1e-2, n_blocks: int = 300,
                           num_iter: int = 20, batch: int = 100) -> tuple[MCS, BlerResult] | None:
    """The highest-efficiency MCS of ``table`` whose measured BLER at ``snr_db`` is at most ``target_bler`` over
    ``n_blocks`` blocks (entries are tried from the highest ``m·r`` down; a candidate is abandoned as soon as it has
    more than ``floor(target_bler·n_blocks)`` block errors). ``channel`` defaults to commlab's AWGN.

    Returns:
        ``(mcs, result)``, or None when no entry decodes.
    """
    snr_db = float(snr_db)
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db!r}")
    if not 0.0 <= float(target_bler) < 1.0:
        raise ValueError(f"target_bler must be in [0, 1), got {target_bler!r}")
    if not table:
        raise ValueError("table must hold at least one MCS")
    channel = AWGN(snr_db) if channel is None else channel
    allowed = int(math.floor(target_bler * n_blocks + 1e-9))
    for mcs in sorted(table, key=lambda entry: -entry.efficiency):
        link = LDPCQAMLink(n_symbols, mcs, num_iter=num_iter)
        result = block_error_rate(link, channel, n_blocks, generator=generator, snr_db=snr_db, batch=batch,
                                  max_errors=allowed)
        if result.errors <= allowed and result.blocks == n_blocks:
            return mcs, result
    return None


def gap_to_capacity_db(bits_per_block: float, n_symbols: int, snr_db: float) -> float:
    """How many dB above the SNR at which ``bits_per_block`` equals the ideal code's ``n_symbols·log2(1 + SNR)``
    the link operates: ``snr_db − 10·log10(2^(bits/n_symbols) − 1)``."""
    if bits_per_block <= 0:
        raise ValueError(f"bits_per_block must be > 0, got {bits_per_block!r}")
    return float(snr_db) - 10.0 * math.log10(2.0 ** (bits_per_block / n_symbols) - 1.0)


def _coder_for_bits(baseline: SeparationBaseline, k: int) -> SeparationBaseline:
    """``baseline``'s PCA quantiser redesigned for a budget of exactly ``k`` bits (``floor(n·log2(1 + SNR)) = k``)."""
    n = baseline.n_symbols
    snr_db = 10.0 * math.log10(2.0 ** (k / n) - 1.0)
    while int(bounds.separation_bits(n, snr_db)) < k:  # rounding can leave floor(n·log2(1 + SNR)) at k − 1
        snr_db += 1e-9
    coder = baseline.redesign(n, snr_db)
    if coder.total_bits != k:
        raise RuntimeError(f"could not size the quantiser to {k} bits (got {coder.total_bits})")
    return coder


def pca_source_bits(coder: SeparationBaseline, images: torch.Tensor) -> torch.Tensor:
    """``[N, total_bits]`` bits (0/1, float) of the quantiser indices of ``coder`` for ``[N, ...]`` images: the
    index of each used PCA component, offset to ``0..2^b − 1`` and written MSB first in its ``b`` bits, components
    in PCA order; unused trailing bits (when the allocation spends fewer than ``total_bits``) are 0. The used
    components, levels and steps are the ones :class:`SeparationBaseline` designed (its ``_used``, ``_levels``,
    ``_steps``)."""
    n = images.shape[0]
    coeff = (images.reshape(n, -1).double() - coder.mean) @ coder.basis[:, coder._used]
    levels = coder._levels
    idx = torch.clamp(torch.floor(coeff / coder._steps), -levels / 2, levels / 2 - 1)
    unsigned = (idx + levels / 2).long()
    out = torch.zeros(n, coder.total_bits)
    position = 0
    for j, b in enumerate(coder.bits[coder.bits > 0]):
        shifts = torch.arange(int(b) - 1, -1, -1)
        out[:, position:position + int(b)] = ((unsigned[:, j:j + 1] >> shifts) & 1).float()
        position += int(b)
    return out


def pca_from_bits(coder: SeparationBaseline, bits: torch.Tensor) -> torch.Tensor:
    """Reconstructions ``[N, ...]`` in [0, 1] from ``[N, total_bits]`` (possibly wrong) bits, the inverse of
    :func:`pca_source_bits` (each index read back, its cell centre ``(idx + 1/2)·step`` taken)."""
    if bits.ndim != 2 or bits.shape[1] != coder.total_bits:
        raise ValueError(f"bits must have shape [N, {coder.total_bits}], got {tuple(bits.shape)}")
    n = bits.shape[0]
    columns, position = [], 0
    for b in coder.bits[coder.bits > 0]:
        weights = 2.0 ** torch.arange(int(b) - 1, -1, -1, dtype=torch.float64)
        columns.append(bits[:, position:position + int(b)].double().round() @ weights)
        position += int(b)
    unsigned = torch.stack(columns, dim=1) if columns else torch.zeros(n, 0, dtype=torch.float64)
    idx = unsigned - coder._levels / 2
    rec = coder.mean + ((idx + 0.5) * coder._steps) @ coder.basis[:, coder._used].T
    return rec.clamp(0.0, 1.0).float().reshape(n, *coder.shape)


def ldpc_separation(baseline: SeparationBaseline, images: torch.Tensor, snr_db: float, *,
                    generator: torch.Generator | None, channel=None, table=MCS_TABLE, target_bler: float = 1e-2,
                    n_blocks: int = 300, num_iter: int = 20) -> tuple[torch.Tensor, MCS | None, BlerResult | None]:
    """Send ``[N, ...]`` images one block (``baseline.n_symbols`` channel uses) each through the real digital chain
    at ``snr_db``: the MCS is :func:`best_rate_that_decodes` (measured on random bits), the PCA quantiser is sized to
    its ``k``, the images' bits are encoded, sent over ``channel`` (default AWGN) and decoded, and the images are
    reconstructed from the decoded bits as they are (no error detection). When no MCS decodes, every image is the
    mean image.

    Returns:
        ``(reconstructions, mcs, bler_result)`` (``mcs`` and ``bler_result`` None when nothing decodes).
    """
    n = images.shape[0]
    chosen = best_rate_that_decodes(snr_db, baseline.n_symbols, generator=generator, channel=channel, table=table,
                                    target_bler=target_bler, n_blocks=n_blocks, num_iter=num_iter)
    if chosen is None:
        mean_image = baseline.mean.float().reshape(baseline.shape)
        return mean_image.expand(n, *baseline.shape).clone(), None, None
    mcs, result = chosen
    link = LDPCQAMLink(baseline.n_symbols, mcs, num_iter=num_iter)
    coder = _coder_for_bits(baseline, link.k)
    decoded = link.transmit(pca_source_bits(coder, images), AWGN(snr_db) if channel is None else channel,
                            generator=generator, snr_db=float(snr_db))
    return pca_from_bits(coder, decoded), mcs, result


__all__ = [
    "BITS_PER_SYMBOL",
    "BlerResult",
    "LDPCQAMLink",
    "MCS",
    "MCS_TABLE",
    "best_rate_that_decodes",
    "block_error_rate",
    "gap_to_capacity_db",
    "ldpc_separation",
    "pca_from_bits",
    "pca_source_bits",
]

