"""PowerSGD's own protocol over a Communicator (Vogels et al. 2019, Alg. 1 with error feedback and
warm start): every layer's gradient a matrix, two all-reduces, the result the rank-r estimate of the
*mean* gradient.

One round on a flat gradient row ``g`` ``[L, d]`` laid out as tensors of ``shapes`` (a DDP bucket's
parameters, or a model's): a tensor of shape ``(n, ...)`` with two or more dimensions is the matrix
``n × m`` (m the product of the other dimensions), compressed at rank r = min(rank, n, m) when that
sends fewer values by the *minimum compression rate* ρ, (n + m)·r·ρ < n·m (torch's
``powerSGD_hook`` rule; ρ = 2 by default); 1-D tensors and matrices failing the rule are sent dense.
For worker i and each compressed matrix::

    M_i = G_i + e_i                       error feedback (e_i = 0 at first)
    P_i = M_i Q                           Q ∈ R^{m×r}: last round's Q (warm start), else N(0, 1) drawn
    P   = Σ_i P_i                         all-reduce 1 (together with the dense tensors' values)
    P̂   = orthonormalise(P)               (QR; the span of P, so the sum's scale does not matter)
    Q_i = M_iᵀ P̂
    Q   = (1/N) Σ_i Q_i                   all-reduce 2
    Ĝ   = P̂ Qᵀ                            the estimate of the mean (1/N) Σ_i M_i, equal on all workers
    e_i ← M_i − Ĝ                         what the estimate missed stays with worker i

Per worker and round this sends 32·(Σ n·r + dense values) bits in the first all-reduce and
32·Σ m·r in the second (float32), where the generic compressor path
(:class:`~commlab.compress.lowrank.PowerSGD` inside :func:`~commlab.distributed.compressed.compressed_round`)
all-gathers every worker's factors of one flattened matrix.

The first Q of each matrix is drawn from the round's generator, which every worker must seed alike
(``shared_draws``). The reducer holds state (warm Qs, the local workers' error memories) in
:meth:`PowerSGDReducer.state_dict`; one reducer serves one gradient layout (one DDP bucket).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from commlab._checks import check_int, check_positive
from commlab.comm import Communicator

Shapes = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Block:
    """One tensor of the layout: values ``[offset, offset + n·m)`` of the row, seen as ``n × m``,
    compressed at rank ``r`` (``r = 0``: sent dense)."""

    offset: int
    n: int
    m: int
    r: int

    @property
    def size(self) -> int:
        return self.n * self.m


class PowerSGDReducer:
    """PowerSGD with its two all-reduces, per-layer matrices and warm start (see the module docstring).

    Args:
        rank: r >= 1 (capped at min(n, m) per matrix).
        warm_start: reuse each matrix's Q as the next round's Q (the paper's Alg. 2; torch's default).
        min_compression_rate: ρ > 0; a matrix is compressed only if (n + m)·r·ρ < n·m.
        error_feedback: keep what each worker's estimate missed and add it next round.
    """

    random = True
    shared_draws = True  # every worker must draw the same first Q

    def __init__(self, rank: int = 2, *, warm_start: bool = True, min_compression_rate: float = 2.0,
                 error_feedback: bool = True):
        self.rank = check_int("rank", rank, low=1)
        if not isinstance(warm_start, bool) or not isinstance(error_feedback, bool):
            raise TypeError("warm_start and error_feedback must be bools")
        self.warm_start, self.error_feedback = warm_start, error_feedback
        self.min_compression_rate = check_positive("min_compression_rate", min_compression_rate)
        self.reset()

    def reset(self) -> None:
        """Forget the layout, the warm Qs and the error memories."""
        self.shapes: Shapes | None = None
        self.blocks: list[Block] = []
        self._q: list[torch.Tensor | None] = []
        self._error: torch.Tensor | None = None  # [L, d]

    # -- the layout ---------------------------------------------------------------------------------

    def plan(self, shapes: Sequence[Sequence[int]]) -> list[Block]:
        """The blocks of a row laid out as tensors of ``shapes`` (in order)."""
        blocks, offset = [], 0
        for shape in shapes:
            size = math.prod(shape)
            n, m = (shape[0], size // shape[0]) if len(shape) >= 2 and size > 0 else (1, size)
            r = min(self.rank, n, m)
            compress = len(shape) >= 2 and (n + m) * r * self.min_compression_rate < n * m
            blocks.append(Block(offset, n, m, r if compress else 0))
            offset += size
        return blocks

    def bits(self, shapes: Sequence[Sequence[int]], value_bits: int = 32) -> int:
        """Bits one worker sends per round (both all-reduces) for a row of ``shapes``."""
        blocks = self.plan(shapes)
        return value_bits * sum(b.r * (b.n + b.m) if b.r else b.size for b in blocks)

    def _bind(self, shapes: Sequence[Sequence[int]], g: torch.Tensor) -> None:
        shapes = tuple(tuple(int(v) for v in shape) for shape in shapes)
        if self.shapes is None:
            self.shapes, self.blocks = shapes, self.plan(shapes)
            self._q = [None] * len(self.blocks)
        elif shapes != self.shapes:
            raise ValueError(f"this reducer serves tensors of shapes {list(self.shapes)}, got {list(shapes)}")
        d = sum(math.prod(s) for s in shapes)
        if g.dim() != 2 or g.shape[1] != d:
            raise ValueError(f"g must be [L, {d}] for tensors of shapes {list(shapes)}, got {tuple(g.shape)}")
        if self._error is None or self._error.shape != g.shape:
            self._error = torch.zeros_like(g, dtype=torch.float32)

    # -- one round ----------------------------------------------------------------------------------

    def reduce(self, comm: Communicator, g: torch.Tensor, generator: torch.Generator | None,
               shapes: Sequence[Sequence[int]]) -> torch.Tensor:
        """One round on the local workers' gradients ``g`` ``[L, d]`` (see the module docstring);
        returns the estimate of the mean gradient ``[d]`` (float32, equal on every worker).
        ``generator`` draws the first Q of each matrix (needed on the first round, and on every
        round without warm start)."""
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
        if not isinstance(g, torch.Tensor) or g.dim() != 2 or g.shape[0] != comm.local_workers:
            raise ValueError(f"g must be [local workers = {comm.local_workers}, d], got "
                             f"{tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}")
        self._bind(shapes, g)
        M = g.detach().to(torch.float32) + (self._error if self.error_feedback else 0.0)  # M_i = G_i + e_i
        compressed = [b for b in self.blocks if b.r]
        Qs = []
        for index, block in enumerate(self.blocks):
            if block.r:
                q = self._q[index] if self.warm_start else None
                if q is None:
                    if generator is None:
                        raise ValueError("PowerSGD draws its first Q from a generator: pass one (seeded alike on "
                                         "every worker)")
                    q = torch.randn(block.m, block.r, generator=generator).to(M.device)  # drawn where the generator is
                Qs.append(q)
        mats = [_matrix(M, b) for b in compressed]                           # [L, n, m] each
        P_local = [mat @ q for mat, q in zip(mats, Qs, strict=True)]         # P_i = M_i Q, [L, n, r]
        dense = [M[:, b.offset : b.offset + b.size] for b in self.blocks if not b.r]
        first = torch.cat([p.flatten(1) for p in P_local] + dense, dim=1)
        total = comm.all_reduce(first, op="sum").wait()[0]
        P_hat, at = [], 0
        for block in compressed:
            P = total[at : at + block.n * block.r].reshape(block.n, block.r)   # P = Σ_i P_i
            P_hat.append(torch.linalg.qr(P).Q)                                 # P̂ = orthonormalise(P)
            at += block.n * block.r
        dense_mean = total[at:] / comm.world_size
        estimate = torch.empty(M.shape[1], dtype=torch.float32, device=M.device)
        if compressed:
            Q_local = [mat.transpose(1, 2) @ p for mat, p in zip(mats, P_hat, strict=True)]  # Q_i = M_iᵀ P̂
            second = torch.cat([q.flatten(1) for q in Q_local], dim=1).contiguous()
            Q_mean = comm.all_reduce(second, op="mean").wait()[0]                              # Q = (1/N) Σ_i Q_i
            at, indices = 0, [i for i, b in enumerate(self.blocks) if b.r]
            for index, block, p in zip(indices, compressed, P_hat, strict=True):
                Q = Q_mean[at : at + block.m * block.r].reshape(block.m, block.r)
                estimate[block.offset : block.offset + block.size] = (p @ Q.T).reshape(-1)  # Ĝ = P̂ Qᵀ
                self._q[index] = Q.clone() if self.warm_start else None
                at += block.m * block.r
        at = 0
        for block in self.blocks:
            if not block.r:
                estimate[block.offset : block.offset + block.size] = dense_mean[at : at + block.size]
                at += block.size
        if self.error_feedback:
            self._error = M - estimate  # e_i ← M_i − Ĝ (zero on the dense tensors)
            for block in self.blocks:
                if not block.r:
                    self._error[:, block.offset : block.offset + block.size] = 0.0
        return estimate

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The layout, the warm Qs (None where none is kept yet) and the error memories ``[L, d]``."""
        return {"shapes": self.shapes, "q": [None if q is None else q.clone() for q in self._q],
                "error": None if self._error is None else self._error.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if not isinstance(state, dict) or set(state) != {"shapes", "q", "error"}:
            raise ValueError("state must be a dict from PowerSGDReducer.state_dict() (keys 'shapes', 'q', 'error')")
        self.reset()
        if state["shapes"] is None:
            return
        self.shapes = tuple(tuple(int(v) for v in shape) for shape in state["shapes"])
        self.blocks = self.plan(self.shapes)
        if len(state["q"]) != len(self.blocks):
            raise ValueError(f"state holds {len(state['q'])} Qs for {len(self.blocks)} tensors")
        for block, q in zip(self.blocks, state["q"], strict=True):
            if q is not None and tuple(q.shape) != (block.m, block.r):
                raise ValueError(f"a warm Q of shape {tuple(q.shape)} does not fit a {block.n} x {block.m} matrix "
                                 f"at rank {block.r}")
        self._q = [None if q is None else q.to(torch.float32).clone() for q in state["q"]]
        self._error = None if state["error"] is None else state["error"].to(torch.float32).clone()


def _matrix(M: torch.Tensor, block: Block) -> torch.Tensor:
    """The block's values of every local worker's row, ``[L, n, m]``."""
    return M[:, block.offset : block.offset + block.size].reshape(M.shape[0], block.n, block.m)
