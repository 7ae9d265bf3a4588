"""PowerSGD: a rank-r approximation from one step of subspace iteration (Vogels et al. 2019).

Each row of length d is viewed as an ``n × m`` matrix M (zero-padded; by default the most square
shape with n·m ≥ d, or the layer's own shape). With a random Gaussian Q ∈ R^{m×r} drawn from the
generator (shared by all workers when they use the same seed):

    P = M Q,   P̂ = orthonormalise(P),   Q' = Mᵀ P̂,   C(M) = P̂ Q'ᵀ        (Alg. 1 of the paper)

The wire carries P̂ and Q' (``(n + m)·r`` float32 values per row): every input dtype is cast to
float32 (a float64 row is approximated in float32 and decoded back to float64). In PowerSGD proper the P and Q'
of all workers are all-reduced in two rounds so the result approximates the *mean* matrix; that
protocol belongs to the Communicator. As a per-worker compressor it is biased, not linear.

**Warm start** (``warm_start=True``, the paper's Alg. 2 and torch's ``powerSGD_hook`` default): the Q'
of one call is the Q of the next call on rows of the same shape, instead of a fresh Gaussian draw,
so compressing the same matrix repeatedly is subspace iteration and converges to its best rank-r
approximation. The compressor then holds state (one Q per ``(rows, n, m, r)``): it is in
:meth:`PowerSGD.state_dict` and cleared by :meth:`PowerSGD.reset`; the first call of each shape, and
the first after ``reset``, draws Q from the generator.
"""

from __future__ import annotations

import math

import torch

from commlab.compress.base import Compressor, draw
from commlab.compress.payload import Part


class PowerSGD(Compressor):
    """Rank-``rank`` PowerSGD of each row seen as a matrix of shape ``matrix`` (or near-square).

    Args:
        rank: r >= 1 (capped at min(n, m)).
        matrix: the ``(n, m)`` shape a row of length d = n·m is viewed as; None: near-square, padded.
        warm_start: reuse each call's Q' ``[rows, m, r]`` as the next call's Q for rows of the same
            shape (see the module docstring); the payload and its bits are the same either way.
    """

    random = True
    shared_draws = True  # one Gaussian Q for all rows
    homogeneous = True

    def __init__(self, rank: int = 1, *, matrix: tuple[int, int] | None = None, warm_start: bool = False):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        if matrix is not None and (len(matrix) != 2 or min(matrix) < 1):
            raise ValueError(f"matrix must be a shape (n, m) with n, m >= 1, got {matrix!r}")
        if not isinstance(warm_start, bool):
            raise TypeError(f"warm_start must be a bool, got {warm_start!r}")
        self.rank, self.matrix = rank, None if matrix is None else tuple(int(v) for v in matrix)
        self.warm_start = warm_start
        self._q: dict[tuple[int, int, int, int], torch.Tensor] = {}  # (rows, n, m, r) -> Q [rows, m, r]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The warm-start Qs, keyed ``"<rows>x<n>x<m>x<r>"`` (empty without ``warm_start``)."""
        return {"x".join(map(str, key)): q.clone() for key, q in self._q.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the Qs of :meth:`state_dict`."""
        loaded = {}
        for name, q in state.items():
            key = tuple(int(v) for v in name.split("x"))
            if len(key) != 4 or not isinstance(q, torch.Tensor) or tuple(q.shape) != (key[0], key[2], key[3]):
                raise ValueError(f"state entry {name!r} is not a Q of shape [rows, m, r]")
            loaded[key] = q.to(torch.float32).clone()
        self._q = loaded

    def reset(self) -> None:
        """Forget the warm-start Qs: the next call of each shape draws Q afresh."""
        self._q = {}

    def shape_for(self, d: int) -> tuple[int, int]:
        """The matrix shape a row of length ``d`` is viewed as."""
        if self.matrix is not None:
            if self.matrix[0] * self.matrix[1] != d:
                raise ValueError(f"matrix {self.matrix} does not hold d={d} values")
            return self.matrix
        n = math.isqrt(d - 1) + 1 if d > 1 else 1
        return n, -(-d // n)

    def _encode(self, rows, generator):
        W, d = rows.shape
        n, m = self.shape_for(d)
        r = min(self.rank, n, m)
        M = torch.nn.functional.pad(rows.to(torch.float32), (0, n * m - d)).reshape(W, n, m)
        key = (W, n, m, r)
        Q = self._q.get(key) if self.warm_start else None
        if Q is not None:
            Q = Q.to(M.device)  # a Q restored by load_state_dict may come from another device
        else:
            Q = draw(torch.randn, m, r, generator=generator, device=M.device)  # one draw shared by every row
        P, _ = torch.linalg.qr(M @ Q)
        Q_next = M.transpose(1, 2) @ P
        if self.warm_start:
            self._q[key] = Q_next.clone()
        return Part.floats("p", P.reshape(W, -1)), Part.floats("q", Q_next.reshape(W, -1))

    def _decode(self, payload, W, d):
        n, m = self.shape_for(d)
        r = payload["p"].counts[0] // n
        P = payload["p"].data.reshape(W, n, r)
        Q = payload["q"].data.reshape(W, m, r)
        return (P @ Q.transpose(1, 2)).reshape(W, n * m)[:, :d]
