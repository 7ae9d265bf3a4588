"""Sparsifiers: keep a few coordinates of each row and send them with their positions.

* :class:`TopK` — the ``k`` largest magnitudes (Stich et al. 2018): contractive, α = k/d.
* :class:`RandK` — ``k`` uniformly random coordinates, independent per worker or shared by all
  workers through a shared seed; scaled by d/k it is unbiased with ω = d/k − 1.
* :class:`Threshold` — every coordinate at or above a fixed magnitude (a count that varies).
* :class:`SampledTopK` — Deep Gradient Compression's threshold estimated on a random sample
  (Lin et al. 2018), lowered while too few pass, with the exact top-k among the survivors when too
  many pass (:func:`sampled_threshold_select` does one row and reports how it went).

Each kept coordinate costs its value (the dtype's width: 32 bits for float32, 64 for float64, whose
values are kept exactly) plus its share of the index part: ``min(k * ceil(log2 d), d)`` bits per row
(index list or bitmap, whichever is smaller). :class:`SampledTopK`, whose count varies by row, also
sends that count, 32 bits per row. k from a ratio follows one rule, :func:`~commlab.compress.base.k_for`:
``ceil(ratio * d)``, at least 1 and at most d.

Devices: positions, masks and decoded tensors live on the input's device; random draws follow
:func:`~commlab.compress.base.draw` (made on the generator's device, then moved to the input's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from commlab._checks import check_fraction, check_int, check_positive, check_real_in
from commlab.compress.base import Compressor, check_finite_input, check_ratio, draw, kept
from commlab.compress.payload import Part, Payload, float_width

_SPARSE_MIN_DIM = 1 << 16  # below this, one torch.topk over the rows is fast enough
_SAMPLE_HITS = 128  # expected number of the k largest inside the threshold sample
_SAMPLE_MARGIN = 1.35  # the threshold is the sample's (margin x expected hits)-th largest: 3.9 sigma below t*
_SAMPLE_BLOCK = 1024  # sampled in contiguous blocks, which is cache-friendly
_BLOCK = 64  # the long-row pass keeps the largest magnitude of each block of 64 contiguous values
_PASS_BLOCKS = 1 << 14  # blocks per reduction call: 4 MiB of float32, so the second reduction reads cache
_NUMPY_FLOATS = (torch.float32, torch.float64)
COUNT_BITS = 32  # the count field of a row whose number of kept entries varies


def top_indices(rows: torch.Tensor, k: int, *, check_finite: bool = False) -> torch.Tensor:
    """Positions of the ``k`` largest ``|rows|`` in each row, ascending; ``[W, d] -> [W, k]`` int64.

    Ties are broken deterministically: among equal magnitudes the lower position wins. Long rows
    (``d >= 65536`` and ``k <= d / 64``, float32/float64 on CPU) take one pass over memory instead of
    a partial sort (:func:`_top_indices_long_row`); the selected set is exactly the same.

    Args:
        check_finite: raise ``ValueError`` if ``rows`` holds NaN or Inf (the long-row pass always
            does, at no extra cost, which is why :class:`TopK` leaves its check to this function).
    """
    W, d = rows.shape
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, d={d}], got {k}")
    if d >= _SPARSE_MIN_DIM and 64 * k <= d and rows.device.type == "cpu" and rows.dtype in _NUMPY_FLOATS:
        picked = [_top_indices_long_row(row, k) for row in rows]
        if all(p is not None for p in picked):
            return torch.stack(picked)
    elif check_finite:
        check_finite_input(rows)
    mags = rows.abs()
    if k == d:
        return torch.arange(d, device=rows.device).expand(W, d).clone()
    # the (k+1)-th largest tells whether ties straddle the k-th place; torch.topk's choice among
    # ties is unspecified, so only those rows are redone with the deterministic rule
    top = mags.topk(k + 1, dim=1, sorted=True)
    picked = top.indices[:, :k].sort(dim=1).values
    crossing = (top.values[:, k] == top.values[:, k - 1]).nonzero()[:, 0]
    if crossing.numel():
        picked[crossing] = _first_k_at_least(mags[crossing], top.values[crossing, k - 1 : k], k)
    return picked


def _first_k_at_least(mags: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """All positions with ``mags > kth``, then the lowest-position ties ``== kth`` up to ``k``."""
    above = mags > kth
    need = k - above.sum(dim=1, keepdim=True)
    ties = mags == kth
    keep = above | (ties & (ties.cumsum(dim=1) <= need))
    return keep.nonzero()[:, 1].reshape(mags.shape[0], k)


def _top_indices_long_row(x: torch.Tensor, k: int) -> torch.Tensor | None:
    """The top-k positions of one long CPU row ``x`` ``[d]`` in about one read of memory, or None when
    the sampled threshold turns out too high (the caller then sorts).

    1. ``t``: a threshold read off a sample of contiguous blocks, a little below the k-th largest
       ``|x|`` (the ``_SAMPLE_MARGIN`` x expected-hits-th largest sampled magnitude);
    2. one pass over ``x``: the largest magnitude of each block of ``_BLOCK`` values (an amax and an
       amin over cache-sized chunks), which also proves ``x`` finite (NaN and Inf propagate);
    3. the blocks whose largest magnitude is ``>= t`` hold every ``|x_i| >= t``: those values are the
       candidates; if there are fewer than ``k``, ``t`` was above the k-th largest and None is returned;
    4. the exact top-k among those candidates (ties to the lower position, as in :func:`top_indices`).
    """
    d = x.numel()
    maxima = _block_maxima(x)
    check_finite_input(maxima)
    blocks = -(-_SAMPLE_HITS * d // (k * _SAMPLE_BLOCK))  # contiguous blocks spread evenly over x
    if blocks * _SAMPLE_BLOCK >= d:
        sample = x.abs()
    else:
        starts = torch.linspace(0, d - _SAMPLE_BLOCK, blocks, device=x.device).long()
        sample = x[(starts[:, None] + torch.arange(_SAMPLE_BLOCK, device=x.device)).reshape(-1)].abs()
    hits = min(sample.numel(), math.ceil(_SAMPLE_MARGIN * k * sample.numel() / d))
    threshold = float(sample.topk(hits, sorted=False).values.min())
    chosen = torch.from_numpy(np.flatnonzero(maxima.numpy() >= threshold))
    full = d // _BLOCK
    inner = chosen[chosen < full]
    mags = x[: full * _BLOCK].view(full, _BLOCK).index_select(0, inner).abs_()
    at = torch.from_numpy(np.flatnonzero(mags.numpy() >= threshold))
    candidates, mags = inner[at // _BLOCK] * _BLOCK + at % _BLOCK, mags.view(-1)[at]
    if chosen.numel() > inner.numel():  # the last, shorter block
        tail = x[full * _BLOCK :].abs()
        extra = (tail >= threshold).nonzero()[:, 0]
        candidates, mags = torch.cat([candidates, extra + full * _BLOCK]), torch.cat([mags, tail[extra]])
    if candidates.numel() < k:  # t was above the k-th largest magnitude
        return None
    kth = mags.topk(k, sorted=False).values.min()
    return candidates[_first_k_at_least(mags[None], kth, k)[0]]


def _block_maxima(x: torch.Tensor) -> torch.Tensor:
    """max |x_i| over each block of ``_BLOCK`` contiguous values of ``x`` ``[d]`` (the last block may
    be shorter): ``[ceil(d / _BLOCK)]``, NaN for a block holding NaN. One read of ``x`` from memory."""
    full = x.numel() // _BLOCK
    blocks = x[: full * _BLOCK].view(full, _BLOCK)
    high, low = torch.empty(full, dtype=x.dtype, device=x.device), torch.empty(full, dtype=x.dtype, device=x.device)
    for start in range(0, full, _PASS_BLOCKS):
        chunk = blocks[start : start + _PASS_BLOCKS]  # in cache for the second reduction
        torch.amax(chunk, dim=1, out=high[start : start + _PASS_BLOCKS])
        torch.amin(chunk, dim=1, out=low[start : start + _PASS_BLOCKS])
    maxima = torch.maximum(high, low.neg_())
    if full * _BLOCK < x.numel():
        maxima = torch.cat([maxima, x[full * _BLOCK :].abs().amax()[None]])
    return maxima


def _positions_at_least(x: np.ndarray, threshold: float, chunk: int = 1 << 16) -> np.ndarray:
    """Positions with ``|x| >= threshold``, in cache-sized chunks (one read of ``x`` from memory)."""
    magnitude, mask = np.empty(chunk, dtype=x.dtype), np.empty(chunk, dtype=bool)
    found = []
    for start in range(0, x.size, chunk):
        n = min(chunk, x.size - start)
        np.abs(x[start : start + n], out=magnitude[:n])
        np.greater_equal(magnitude[:n], threshold, out=mask[:n])
        positions = np.flatnonzero(mask[:n])
        if positions.size:
            found.append(positions + start)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _sparse_parts(rows: torch.Tensor, idx: torch.Tensor, counts) -> tuple[Part, Part]:
    """Values and index parts for kept positions ``idx`` (``[W, k]``, or flat with ``counts`` per row)."""
    if idx.dim() == 2:
        values = rows.gather(1, idx).reshape(-1)
    else:
        values = rows[_row_of(counts, rows.device), idx]
    return (
        Part("values", values, "float", tuple(counts), float_width(values.dtype)),
        Part.indices("indices", idx, counts, rows.shape[1]),
    )


def _counted_parts(rows: torch.Tensor, idx: torch.Tensor, counts) -> tuple[Part, Part, Part]:
    """:func:`_sparse_parts` behind a ``"count"`` part: each row's number of kept entries as a
    ``COUNT_BITS``-bit code, which the receiver reads first when the number varies by row."""
    count = Part.codes("count", torch.as_tensor(counts, dtype=torch.int64, device=rows.device)[:, None], COUNT_BITS)
    return (count, *_sparse_parts(rows, idx, counts))


def _row_of(counts, device: torch.device) -> torch.Tensor:
    """The row of each entry of a flat part whose row ``w`` holds ``counts[w]`` entries."""
    counts = torch.as_tensor(counts, dtype=torch.int64, device=device)
    return torch.arange(len(counts), device=device).repeat_interleave(counts)


def _scatter(payload: Payload, W: int, d: int, scale: float = 1.0) -> torch.Tensor:
    values, indices = payload["values"], payload["indices"]
    data = values.data * scale if scale != 1.0 else values.data
    out = torch.zeros(W, d, dtype=data.dtype, device=data.device)
    if len(set(indices.counts)) == 1:
        out.scatter_(1, indices.data.reshape(W, -1), data.reshape(W, -1))
    else:
        out[_row_of(indices.counts, data.device), indices.data] = data
    return out


class TopK(Compressor):
    """Keep the ``k`` largest-magnitude coordinates of each row (ties: lower position first).

    ``TopK(ratio=0.01)`` keeps ``ceil(0.01 d)``; ``TopK(k=10)`` keeps 10. Contractive with
    α = k/d: ‖C(x) − x‖² ≤ (1 − k/d)‖x‖²; homogeneous; not linear (supports differ across workers).
    """

    kind = "contractive"
    homogeneous = True
    encode_checks_finite = True  # top_indices checks NaN/Inf within its one pass over a long row

    def __init__(self, ratio: float | None = None, *, k: int | None = None):
        check_ratio(ratio, k)
        self.ratio, self.k = ratio, k
        self.alpha = ratio

    def alpha_for(self, d: int) -> float:
        return kept(self.ratio, self.k, d) / d

    def _encode(self, rows, generator):
        W, d = rows.shape
        k = kept(self.ratio, self.k, d)
        return _sparse_parts(rows, top_indices(rows, k, check_finite=True), [k] * W)

    def _decode(self, payload, W, d):
        return _scatter(payload, W, d)


class Threshold(Compressor):
    """Keep every coordinate with ``|x_i| >= threshold`` (a fixed threshold, as in Strom 2015 and DGC's
    baseline): the count varies by row and by step.

    Biased and without a contraction constant (a row below the threshold sends nothing, so α = 0),
    which is why it is used with error feedback. A row costs a 32-bit count (the receiver must learn
    how many entries follow, as for :class:`SampledTopK`), then each kept coordinate its value plus
    its share of the index part (list or bitmap, whichever is smaller).
    """

    homogeneous = False

    def __init__(self, threshold: float):
        self.threshold = check_positive("threshold", threshold)

    def _encode(self, rows, generator):
        keep = rows.abs() >= self.threshold
        return _counted_parts(rows, keep.nonzero()[:, 1], keep.sum(dim=1).tolist())

    def _decode(self, payload, W, d):
        return _scatter(payload, W, d)


class RandK(Compressor):
    """Keep ``k`` uniformly random coordinates of each row.

    Args:
        ratio, k: how many to keep (exactly one).
        scaled: multiply by d/k at the receiver, making the compressor unbiased with ω = d/k − 1;
            otherwise it is contractive in expectation with α = k/d.
        shared: all rows (workers) keep the same coordinates, drawn from a generator seeded the
            same way on every worker (e.g. ``SeedTree(seed).torch("randk", step)``); no index bits
            are sent (briefs/_conventions.md §5) and the compressor becomes linear (all-reducible).
    """

    random = True
    homogeneous = True

    def __init__(self, ratio: float | None = None, *, k: int | None = None, scaled: bool = True, shared: bool = False):
        check_ratio(ratio, k)
        self.ratio, self.k, self.scaled, self.shared = ratio, k, bool(scaled), bool(shared)
        self.kind = "unbiased" if scaled else "contractive"
        self.linear = self.shared_draws = self.shared
        self.omega = (1 / ratio - 1) if (scaled and ratio is not None) else None
        self.alpha = ratio if not scaled else None

    def omega_for(self, d: int) -> float | None:
        return d / kept(self.ratio, self.k, d) - 1 if self.scaled else None

    def alpha_for(self, d: int) -> float | None:
        return None if self.scaled else kept(self.ratio, self.k, d) / d

    def _encode(self, rows, generator):
        W, d = rows.shape
        k = kept(self.ratio, self.k, d)
        draws = 1 if self.shared else W
        keys = draw(torch.rand, draws, d, generator=generator, device=rows.device)
        idx = keys.topk(k, dim=1, sorted=False).indices.sort(dim=1).values.expand(W, k)
        values, indices = _sparse_parts(rows, idx, [k] * W)
        if self.shared:
            indices = Part(indices.name, indices.data, "shared", indices.counts, 0, d)
        return values, indices

    def _decode(self, payload, W, d):
        return _scatter(payload, W, d, d / payload["indices"].counts[0] if self.scaled else 1.0)


class SampledTopK(Compressor):
    """Deep Gradient Compression's top-k: a threshold estimated from a random sample, then adapted.

    For each row (Lin et al. 2018, and the brief's description of the reference code):

    1. draw ``n = max(sample_ratio * d, 1)`` positions uniformly (with replacement); the threshold
       ``t`` is the ``ceil(ratio * n)``-th largest sampled magnitude;
    2. candidates are the coordinates with ``|x| >= t``; while there are fewer than ``lower * k``
       of them (``k = ceil(ratio * d)``), lower the threshold ``t <- shrink * t``, at most
       ``adapt_steps`` times;
    3. if more than ``k`` candidates remain, keep the exact top-k among them (the hierarchical
       selection, ties to the lower position); otherwise keep them all.

    So a row keeps between ``lower * k`` (unless the ``adapt_steps`` are used up) and ``k``
    coordinates, all of them larger in magnitude than any it drops. The number kept varies per
    row, so each row sends it first: a ``"count"`` part of 32 bits, then the values and indices;
    a row costs ``32 + c * width + min(c * ceil(log2 d), d)`` bits for ``c`` kept. Biased; no
    contraction constant beyond the trivial one.
    ``adapt_steps=0`` turns the adaptation off (the one-shot threshold). The reference code
    truncates candidates between ``k`` and ``1.3 k`` by position and runs the exact top-k only
    above ``1.3 k``; here every surplus is resolved by magnitude, which keeps the larger entries.

    :func:`sampled_threshold_select` is the selection on one row, with its diagnostics.
    """

    random = True
    homogeneous = True

    def __init__(self, ratio: float, *, sample_ratio: float = 0.01, lower: float = 0.8, shrink: float = 0.8,
                 adapt_steps: int = 10):
        check_ratio(ratio, None)
        if not 0 < sample_ratio <= 1:
            raise ValueError(f"sample_ratio must be in (0, 1], got {sample_ratio!r}")
        self.ratio, self.sample_ratio = ratio, sample_ratio
        self.lower = check_real_in("lower", lower, 0.0, 1.0)
        self.shrink = check_fraction("shrink", shrink)
        self.adapt_steps = check_int("adapt_steps", adapt_steps, low=0)

    def select(self, x: torch.Tensor, generator: torch.Generator, k: int | None = None) -> Selection:
        """The selection on one row ``x`` ``[d]``, keeping at most ``k`` (default ``ceil(ratio * d)``)."""
        k = kept(self.ratio, None, x.numel()) if k is None else k
        return sampled_threshold_select(x, k, generator, sample_ratio=self.sample_ratio, lower=self.lower,
                                        shrink=self.shrink, adapt_steps=self.adapt_steps)

    def compress_at(self, x: torch.Tensor, indices: torch.Tensor) -> Payload:
        """The values and indices of one row ``x`` ``[d]`` keeping the ascending positions ``indices`` (from
        :meth:`select`), without the count part: :func:`commlab.distributed.compressed.gather_varying`
        sends the count in a message of its own (DGC counts its 32 bits)."""
        return Payload(_sparse_parts(x[None], indices, [indices.numel()]), tuple(x.shape), x.dtype)

    def _encode(self, rows, generator):
        W, d = rows.shape
        if W == 1:
            picked = self.select(rows[0], generator).indices
            return _counted_parts(rows, picked, [picked.numel()])
        # the same steps as sampled_threshold_select, on all rows at once (one draw of [W, n] samples)
        k = kept(self.ratio, None, d)
        n = max(1, int(self.sample_ratio * d))
        sample = rows.gather(1, draw(torch.randint, d, (W, n), generator=generator, device=rows.device)).abs()
        threshold = sample.topk(_hits(k, n, d), dim=1, sorted=False).values.min(dim=1, keepdim=True).values
        mags = rows.abs()
        keep = mags >= threshold
        for _ in range(self.adapt_steps):
            few = keep.sum(dim=1) < self.lower * k
            if not few.any():
                break
            threshold[few] *= self.shrink
            keep[few] = mags[few] >= threshold[few]
        over = keep.sum(dim=1) > k  # then the row's top-k are all candidates: take them
        if over.any():
            exact = torch.zeros_like(keep[over])
            exact.scatter_(1, top_indices(rows[over], k), True)
            keep[over] = exact
        return _counted_parts(rows, keep.nonzero()[:, 1], keep.sum(dim=1).tolist())

    def _decode(self, payload, W, d):
        return _scatter(payload, W, d)


@dataclass(frozen=True)
class Selection:
    """What :func:`sampled_threshold_select` picked from one row.

    Attributes:
        indices: kept positions, ascending, int64, between ``lower * k`` (normally) and ``k`` of them.
        sampled: candidates above the first (sampled) threshold, before any adaptation.
        candidates: candidates above the final threshold, before the exact top-k truncation.
        adaptations: how many times the threshold was lowered.
    """

    indices: torch.Tensor
    sampled: int
    candidates: int
    adaptations: int


def sampled_threshold_select(x: torch.Tensor, k: int, generator: torch.Generator, *, sample_ratio: float = 0.01,
                             lower: float = 0.8, shrink: float = 0.8, adapt_steps: int = 10) -> Selection:
    """DGC's sampled-threshold top-k of one row ``x`` ``[d]`` (see :class:`SampledTopK` for the steps).

    Draws ``max(sample_ratio * d, 1)`` sample positions from ``generator``; float32/float64 rows on
    the CPU are thresholded in cache-sized numpy chunks (one read of ``x``).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise ValueError(f"x must be a 1-D tensor [d], got {getattr(x, 'shape', type(x).__name__)}")
    d = x.numel()
    k = check_int("k", k, low=1, high=d)
    n = max(1, int(sample_ratio * d))
    sample = x[draw(torch.randint, d, (n,), generator=generator, device=x.device)].abs()
    threshold = sample.topk(_hits(k, n, d), sorted=False).values.min().item()
    candidates = _at_least(x, threshold)
    sampled, adaptations = candidates.numel(), 0
    while candidates.numel() < lower * k and adaptations < adapt_steps:
        threshold *= shrink
        adaptations += 1
        candidates = _at_least(x, threshold)
    count = candidates.numel()
    if count > k:
        mags = x[candidates].abs()[None]
        kth = mags.topk(k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
        candidates = candidates[_first_k_at_least(mags, kth, k)[0]]
    return Selection(candidates, sampled, count, adaptations)


def _hits(k: int, n: int, d: int) -> int:
    """Rank of the threshold in a sample of n out of d: ``ceil(k n / d)``, within [1, n]."""
    return max(1, min(n, -(-k * n // d)))


def _at_least(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions with ``|x| >= threshold``, ascending, int64 (long CPU rows: one chunked numpy pass)."""
    if x.numel() >= _SPARSE_MIN_DIM and x.device.type == "cpu" and x.dtype in _NUMPY_FLOATS:
        positions = _positions_at_least(x.detach().contiguous().numpy(), threshold)
        return torch.from_numpy(np.asarray(positions, dtype=np.int64))
    return (x.abs() >= threshold).nonzero()[:, 0]
