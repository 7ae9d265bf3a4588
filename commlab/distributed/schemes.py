"""Named gradient-compression schemes for data-parallel training, shared by the DDP hook, the
torchrun entry point and the simulated trainer, so every path builds the same thing.

=========  ==========================================  ============================================
name       mechanism (on each gradient bucket)         wire per worker and step (d values)
=========  ==========================================  ============================================
none       dense mean, ``Plain(Identity())``           32·d bits, all-reduced
topk       ``EF14(TopK(ratio))`` (Stich et al. 2018)   k values + min(k·⌈log₂ d⌉, d) index bits
powersgd   ``EF14(PowerSGD(rank))`` (Vogels 2019)      (n + m)·r float32 for the n × m view
sign       ``EF14(ScaledSign())``, EF-SignSGD          d sign bits + one float32 scale
           (Karimireddy et al. 2019)
=========  ==========================================  ============================================

Error feedback here acts on gradients (e ← e + g − C(e + g)), the usual choice inside DDP; with a
constant learning rate it is the same as feeding back γ·g. ``powersgd`` compresses each worker's
bucket (viewed as a near-square matrix) separately and all-gathers the factors; PowerSGD's own
protocol, which all-reduces P and Q in two rounds, is not implemented.
"""

from __future__ import annotations

from commlab._checks import check_choice, check_fraction, check_int
from commlab.compress import TopK
from commlab.compress.ef import EF14, Mechanism, Plain
from commlab.compress.lowrank import PowerSGD
from commlab.compress.quantize import Identity, ScaledSign

SCHEMES = ("none", "topk", "powersgd", "sign")


def gradient_scheme(name: str, *, ratio: float = 0.01, rank: int = 2) -> Mechanism:
    """A fresh mechanism for scheme ``name`` (one per gradient bucket: it holds that bucket's state).

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
        return EF14(PowerSGD(check_int("rank", rank, low=1)))
    return EF14(ScaledSign())
