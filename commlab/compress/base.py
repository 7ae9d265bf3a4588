"""The compressor interface shared by every scheme in :mod:`commlab.compress`.

A compressor maps a vector ``x`` of shape ``[d]``, or a stack of worker rows ``[W, d]`` compressed
row by row in one call, to a :class:`~commlab.compress.payload.Payload`, and back::

    payload = compressor.compress(x, generator=g)   # what crosses the wire; payload.bits is exact
    x_hat = compressor.decompress(payload)          # same shape and dtype as x

Constants (briefs/_conventions.md §5), where they exist:

* ``omega`` — unbiased compressors: E C(x) = x and E‖C(x) − x‖² ≤ ω‖x‖²;
* ``alpha`` — contractive compressors: E‖C(x) − x‖² ≤ (1 − α)‖x‖²;
* ``linear`` — payloads of different workers can be summed value by value (all-reduce) and the
  sum decompresses to the sum of the decompressed rows (:meth:`Compressor.reduce`);
* ``homogeneous`` — C(λx) = λC(x) for λ > 0.

``omega`` and ``alpha`` hold for every dimension; :meth:`Compressor.omega_for` and
:meth:`Compressor.alpha_for` give the (tighter) constant for a given ``d``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from commlab.compress.payload import Part, Payload


def check_ratio(ratio: float | None, k: int | None) -> None:
    """Exactly one of ``ratio`` in (0, 1] or ``k`` >= 1 must be given."""
    if (ratio is None) == (k is None):
        raise ValueError(f"give exactly one of ratio= or k=, got ratio={ratio!r}, k={k!r}")
    if ratio is not None and not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def kept(ratio: float | None, k: int | None, d: int) -> int:
    """Number of coordinates a sparsifier keeps out of ``d``: ``k`` itself, or ``k_for(ratio, d)``."""
    if k is not None:
        if k > d:
            raise ValueError(f"k={k} is larger than the dimension d={d}")
        return k
    return k_for(ratio, d)


def k_for(ratio: float, d: int) -> int:
    """The one rule for k from a ratio, used by every sparsifier (TopK, RandK, SampledTopK):
    ``k = ceil(ratio * d)`` (the product in float64), at least 1 and at most ``d``.

    So a ratio never keeps less than it asks for: ``k_for(0.1, 50) = 5``, ``k_for(0.1, 51) = 6``,
    ``k_for(1e-6, 50) = 1``.
    """
    return max(1, min(d, math.ceil(ratio * d)))


def draw(sample: Callable[..., torch.Tensor], *args, generator: torch.Generator, device: torch.device,
         **kwargs) -> torch.Tensor:
    """``sample(*args, **kwargs)`` (``torch.rand``, ``randn``, ``randint``) drawn from ``generator`` on the
    generator's own device, then moved to ``device`` (the input's).

    This is the rule for random draws and devices in every compressor: torch draws only where the
    generator lives, so a seeded CPU generator gives the same draws, hence the same payload, for a
    CPU and a CUDA copy of the input (at the cost of one host-to-device copy of the draws); a
    generator on the input's device (``torch.Generator("cuda")``) draws there with no copy.
    """
    return sample(*args, generator=generator, device=generator.device, **kwargs).to(device)


def check_finite_input(x: torch.Tensor) -> None:
    """``ValueError`` if ``x`` holds NaN or Inf.

    A finite sum proves every entry finite (NaN and Inf propagate, +Inf - Inf is NaN): one pass, no
    temporary; only a sum that overflows is checked again entry by entry.
    """
    if not torch.isfinite(x.sum()):
        low, high = torch.aminmax(x)
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ValueError("x contains NaN or Inf")


class Compressor:
    """Base class: input checks, the ``[d]`` / ``[W, d]`` convention and the constants.

    Subclasses implement ``_encode(rows [W, d], generator) -> tuple[Part, ...]`` and
    ``_decode(payload, W, d) -> [W, d]``.
    """

    kind: str = "biased"
    omega: float | None = None
    alpha: float | None = None
    linear: bool = False
    homogeneous: bool = False
    random: bool = False  # whether compress() draws from the generator
    encode_checks_finite: bool = False  # _encode raises on NaN/Inf itself, so compress() skips its own pass
    shared_draws: bool = False  # one draw serves every row, so all workers must use the same generator

    def compress(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Payload:
        """Compress ``x`` (shape ``[d]`` or ``[W, d]``, floating dtype, finite) row by row."""
        rows = self._rows(x)
        if not self.encode_checks_finite:
            check_finite_input(rows)
        if self.random and generator is None:
            raise ValueError(f"{type(self).__name__} is randomised: pass generator=torch.Generator()")
        return Payload(tuple(self._encode(rows, generator)), tuple(x.shape), x.dtype)

    def decompress(self, payload: Payload) -> torch.Tensor:
        """The tensor the receiver reconstructs, with the shape and dtype that were compressed."""
        if not isinstance(payload, Payload):
            raise TypeError(f"payload must be a Payload, got {type(payload).__name__}")
        rows = payload.workers
        d = payload.shape[-1]
        return self._decode(payload, rows, d).to(payload.dtype).reshape(payload.shape)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``decompress(compress(x))``: what the receiver sees."""
        return self.decompress(self.compress(x, generator))

    def reduce(self, payload: Payload) -> Payload:
        """Sum the rows of a stacked ``[W, d]`` payload value by value, as an all-reduce would.

        Only for linear compressors, whose rows share everything but their ``"values"`` part (no
        indices, or shared ones): the result is a one-row payload of shape ``[d]``. A ``"crc"`` part
        (:meth:`Payload.with_crc`) checks its own row only, so it is dropped: add one to the sum.
        """
        if not self.linear:
            raise TypeError(f"{type(self).__name__} is not linear: its payloads need an all-gather")
        if len(payload.shape) != 2:
            raise ValueError(f"reduce needs a stacked payload of shape [W, d], got {payload.shape}")
        parts = []
        for part in payload.parts:
            if part.name == "crc":
                continue
            row = part.rows()
            if part.name == "values":
                acc = torch.float64 if part.data.dtype == torch.float64 else torch.float32
                data = torch.stack(row).to(acc).sum(dim=0).to(part.data.dtype)
            else:
                data = row[0]
            parts.append(Part(part.name, data, part.kind, part.counts[:1], part.width, part.dim))
        return Payload(tuple(parts), payload.shape[1:], payload.dtype)

    def omega_for(self, d: int) -> float | None:
        """The variance constant ω for dimension ``d`` (unbiased compressors)."""
        return self.omega

    def alpha_for(self, d: int) -> float | None:
        """The contraction constant α for dimension ``d`` (contractive compressors)."""
        return self.alpha

    def error_bound(self, d: int) -> float | None:
        """The stated bound on E‖C(x) − x‖²/‖x‖² in dimension ``d``: ω for unbiased compressors,
        1 − α for contractive ones (0 for the identity), None when none is stated."""
        if self.kind == "unbiased":
            return self.omega_for(d)
        if self.kind in ("contractive", "identity"):
            return 1 - self.alpha_for(d)
        return None

    def __repr__(self) -> str:
        names = [n for n in inspect.signature(type(self).__init__).parameters if n != "self"]
        settings = ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))
        return f"{type(self).__name__}({settings})"

    # -- input checks -------------------------------------------------------------------------

    @staticmethod
    def _rows(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not (x.is_floating_point()):
            raise TypeError(f"x must have a floating dtype, got {x.dtype}")
        if x.dim() not in (1, 2):
            raise ValueError(f"x must have shape [d] or [W, d], got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
        return x.detach().reshape(-1, x.shape[-1])
