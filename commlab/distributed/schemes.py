"""Named gradient-compression schemes for data-parallel training, shared by the DDP hook, the
torchrun entry point and the simulated trainer, so every path builds the same thing.

=========  ==========================================  ============================================
name       on each gradient bucket                     wire per worker and step (d values)
=========  ==========================================  ============================================
none       dense mean, ``Plain(Identity())``           32·d bits, all-reduced
topk       ``EF14(TopK(ratio))`` (Stich et al. 2018)   k values + min(k·⌈log₂ d⌉, d) index bits,
                                                       all-gathered
powersgd   :class:`~commlab.distributed.powersgd.      32·(n + m)·r per compressed layer matrix,
           PowerSGDReducer` (Vogels et al. 2019):      32 per dense value, in two all-reduces
           per-layer matrices, warm start, error
           feedback, two all-reduces
sign       ``EF14(ScaledSign())``, EF-SignSGD          d sign bits + one float32 scale,
           (Karimireddy et al. 2019)                   all-gathered
=========  ==========================================  ============================================

Error feedback in ``topk`` and ``sign`` acts on gradients (e ← e + g − C(e + g)), the usual choice
inside DDP; with a constant learning rate it is the same as feeding back γ·g. A scheme is either a
:class:`~commlab.compress.ef.Mechanism` (its round: :func:`~commlab.distributed.compressed.start_round`
on the flat bucket) or a :class:`~commlab.distributed.powersgd.PowerSGDReducer` (its own protocol on
the bucket's tensors); :func:`gradient_round` runs either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from commlab._checks import check_choice, check_fraction, check_int
from commlab.comm import Communicator
from commlab.compress import TopK
from commlab.compress.ef import EF14, Mechanism, Plain
from commlab.compress.quantize import Identity, ScaledSign
from commlab.distributed.compressed import compressed_round
from commlab.distributed.powersgd import PowerSGDReducer

SCHEMES = ("none", "topk", "powersgd", "sign")
Scheme = Mechanism | PowerSGDReducer


def gradient_scheme(name: str, *, ratio: float = 0.01, rank: int = 2) -> Scheme:
    """A fresh scheme ``name`` (one per gradient bucket: it holds that bucket's state).

    Args:
        name: one of :data:`SCHEMES`.
        ratio: fraction of coordinates Top-k keeps, in (0, 1).
        rank: PowerSGD's rank r >= 1.
    """
    check_choice("name", name, SCHEMES)
    if name == "none":
        return Plain(Identity())
    if name == "topk":
        return EF14(TopK(check_fraction("ratio", ratio)))
    if name == "powersgd":
        return PowerSGDReducer(check_int("rank", rank, low=1))
    return EF14(ScaledSign())


def is_scheme(scheme) -> bool:
    """Whether ``scheme`` is something :func:`gradient_round` runs."""
    return isinstance(scheme, Mechanism | PowerSGDReducer)


def draws(scheme: Scheme) -> tuple[bool, bool]:
    """``(random, shared)``: whether the scheme draws random numbers, and whether every worker must
    draw the same ones (shared-index Rand-k, PowerSGD's first Q)."""
    holder = scheme.compressor if isinstance(scheme, Mechanism) else scheme
    return holder.random, holder.shared_draws


def gradient_round(comm: Communicator, scheme: Scheme, g: torch.Tensor, generator: torch.Generator | None,
                   shapes: Sequence[Sequence[int]]) -> torch.Tensor:
    """One aggregation of the local workers' gradients ``g`` ``[L, d]``, laid out as tensors of
    ``shapes`` (PowerSGD's per-layer matrices); returns the mean estimate ``[d]``, equal on every worker."""
    if isinstance(scheme, PowerSGDReducer):
        return scheme.reduce(comm, g, generator, shapes)
    return compressed_round(comm, scheme, g, generator)[0]
