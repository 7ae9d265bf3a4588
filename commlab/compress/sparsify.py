"""Sparsifiers: keep a few coordinates of each row and send them with their positions.

* :class:`TopK` — the ``k`` largest magnitudes (Stich et al. 2018): contractive, α = k/d.
* :class:`RandK` — ``k`` uniformly random coordinates, independent per worker or shared by all
  workers through a shared seed; scaled by d/k it is unbiased with ω = d/k − 1.
* :class:`SampledTopK` — Deep Gradient Compression's threshold estimated on a random sample
  (Lin et al. 2018), with the exact top-k among the survivors when too many pass.

Each kept coordinate costs its value (the dtype's width) plus its share of the index part:
``min(k * ceil(log2 d), d)`` bits per row (index list or bitmap, whichever is smaller).
"""

from __future__ import annotations

import numpy as np
import torch

from commlab.compress.base import Compressor, check_ratio, kept
from commlab.compress.payload import Part, Payload, float_width

_SPARSE_MIN_DIM = 1 << 16  # below this, one torch.topk over the rows is fast enough
_SAMPLE_HITS = 64  # expected number of the k largest inside the threshold sample
_SAMPLE_BLOCK = 1024  # sampled in contiguous blocks, which is cache-friendly
_NUMPY_FLOATS = (torch.float32, torch.float64)


def top_indices(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` largest ``|rows|`` in each row, ascending; ``[W, d] -> [W, k]`` int64.

    Ties are broken deterministically: among equal magnitudes the lower position wins. For a long
    single row (``d >= 65536`` and ``k <= d / 64``, float32/float64 on CPU) the candidates are first
    narrowed by a threshold read off a sample of contiguous blocks, so the cost is about one read of
    the row instead of a partial sort; the selected set is exactly the same.
    """
    W, d = rows.shape
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, d={d}], got {k}")
    if W == 1 and d >= _SPARSE_MIN_DIM and 64 * k <= d and rows.device.type == "cpu" and rows.dtype in _NUMPY_FLOATS:
        picked = _top_indices_long_row(rows[0], k)
        if picked is not None:
            return picked[None]
    mags = rows.abs()
    if k == d:
        return torch.arange(d).expand(W, d).clone()
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
    d = x.numel()
    blocks = -(-_SAMPLE_HITS * d // (k * _SAMPLE_BLOCK))  # contiguous blocks spread evenly over x
    if blocks * _SAMPLE_BLOCK >= d:
        sample = x.abs()
    else:
        starts = torch.linspace(0, d - _SAMPLE_BLOCK, blocks).long()
        sample = x[(starts[:, None] + torch.arange(_SAMPLE_BLOCK)).reshape(-1)].abs()
    hits = min(sample.numel(), 2 * (k * sample.numel()) // d + 1)  # twice the expected number
    threshold = sample.topk(hits, sorted=False).values.min().item()
    candidates = torch.from_numpy(_positions_at_least(x.numpy(), threshold))
    if candidates.numel() < k:  # unlucky sample: the caller falls back to the full partial sort
        return None
    mags = x[candidates].abs()[None]
    kth = mags.topk(k, dim=1, sorted=False).values.min()
    return candidates[_first_k_at_least(mags, kth, k)[0]]


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
        values = rows[_row_of(counts), idx]
    return (
        Part("values", values, "float", tuple(counts), float_width(values.dtype)),
        Part.indices("indices", idx, counts, rows.shape[1]),
    )


def _row_of(counts) -> torch.Tensor:
    return torch.arange(len(counts)).repeat_interleave(torch.as_tensor(counts, dtype=torch.int64))


def _scatter(payload: Payload, W: int, d: int, scale: float = 1.0) -> torch.Tensor:
    values, indices = payload["values"], payload["indices"]
    data = values.data * scale if scale != 1.0 else values.data
    out = torch.zeros(W, d, dtype=data.dtype)
    if len(set(indices.counts)) == 1:
        out.scatter_(1, indices.data.reshape(W, -1), data.reshape(W, -1))
    else:
        out[_row_of(indices.counts), indices.data] = data
    return out


class TopK(Compressor):
    """Keep the ``k`` largest-magnitude coordinates of each row (ties: lower position first).

    ``TopK(ratio=0.01)`` keeps ``ceil(0.01 d)``; ``TopK(k=10)`` keeps 10. Contractive with
    α = k/d: ‖C(x) − x‖² ≤ (1 − k/d)‖x‖²; homogeneous; not linear (supports differ across workers).
    """

    kind = "contractive"
    homogeneous = True

    def __init__(self, ratio: float | None = None, *, k: int | None = None):
        check_ratio(ratio, k)
        self.ratio, self.k = ratio, k
        self.alpha = ratio

    def alpha_for(self, d: int) -> float:
        return kept(self.ratio, self.k, d) / d

    def _encode(self, rows, generator):
        W, d = rows.shape
        k = kept(self.ratio, self.k, d)
        return _sparse_parts(rows, top_indices(rows, k), [k] * W)

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
        keys = torch.rand(draws, d, generator=generator)
        idx = keys.topk(k, dim=1, sorted=False).indices.sort(dim=1).values.expand(W, k)
        values, indices = _sparse_parts(rows, idx, [k] * W)
        if self.shared:
            indices = Part(indices.name, indices.data, "shared", indices.counts, 0, d)
        return values, indices

    def _decode(self, payload, W, d):
        return _scatter(payload, W, d, d / payload["indices"].counts[0] if self.scaled else 1.0)


class SampledTopK(Compressor):
    """Deep Gradient Compression's top-k: a threshold estimated from a random sample.

    For each row, ``max(sample_ratio * d, 1)`` positions are drawn uniformly (with replacement);
    the threshold ``t`` is the ``ceil(ratio * sample)``-th largest sampled magnitude; every
    coordinate with ``|x| >= t`` is kept, and if that is more than ``k = ceil(ratio * d)``, only the
    exact top-k of them (DGC's hierarchical selection). The number kept varies per row (at most
    k) and the bits follow it. Biased; no contraction constant beyond the trivial one.
    """

    random = True
    homogeneous = True

    def __init__(self, ratio: float, *, sample_ratio: float = 0.01):
        check_ratio(ratio, None)
        if not 0 < sample_ratio <= 1:
            raise ValueError(f"sample_ratio must be in (0, 1], got {sample_ratio!r}")
        self.ratio, self.sample_ratio = ratio, sample_ratio

    def _encode(self, rows, generator):
        W, d = rows.shape
        k = kept(self.ratio, None, d)
        n = max(1, int(self.sample_ratio * d))
        sample = rows.gather(1, torch.randint(d, (W, n), generator=generator)).abs()
        hits = kept(self.ratio, None, n)
        threshold = sample.topk(hits, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
        mags = rows.abs()
        keep = mags >= threshold
        over = keep.sum(dim=1) > k
        if over.any():
            exact = torch.zeros_like(keep[over])
            exact.scatter_(1, top_indices(rows[over], k), True)
            keep[over] = exact
        where = keep.nonzero()
        counts = keep.sum(dim=1).tolist()
        return _sparse_parts(rows, where[:, 1], counts)

    def _decode(self, payload, W, d):
        return _scatter(payload, W, d)
