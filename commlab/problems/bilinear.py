"""Distributed strongly-monotone bilinear saddle problem (MASHA brief, "Problem").

    min_x max_y (1/M) Σ_m [ xᵀA_m y + a_mᵀx − b_mᵀy + (λ/2)‖x‖² − (λ/2)‖y‖² ],   x, y ∈ R^{d/2}.

With z = [x; y] ∈ R^d the saddle operator of device m is affine,

    F_m(z) = [∇_x f_m; −∇_y f_m] = B_m z + c_m,   B_m = [[λI, A_m], [−A_mᵀ, λI]],   c_m = [a_m; b_m],

F = (1/M) Σ_m F_m is λ-strongly monotone (the symmetric part of every B_m is λI) and
L-Lipschitz with L = ‖B̄‖₂ ≤ L_max = max_m ‖B_m‖₂. The solution z* solves B̄ z* = −c̄.
"""

from __future__ import annotations

import math

import torch

from commlab.problems._checks import check_dtype, check_generator, check_int, check_positive, check_tensor


class BilinearSaddle:
    """F_m(z) = B_m z + c_m for m = 1..M.

    Args:
        B: operator matrices, float tensor [M, d, d].
        c: offsets, float tensor [M, d].
        mu: strong-monotonicity constant of F (λ for :func:`bilinear_saddle`), > 0.

    Attributes:
        M, d: devices and dimension. z_star: [d] solution (problem dtype). L_max: max_m ‖B_m‖₂.
        L: ‖B̄‖₂ (Lipschitz constant of F). mu: strong monotonicity.
    """

    def __init__(self, B: torch.Tensor, c: torch.Tensor, mu: float):
        if not isinstance(B, torch.Tensor) or B.ndim != 3 or B.shape[1] != B.shape[2]:
            raise ValueError("B must be a float tensor of shape [M, d, d]")
        M, d, _ = B.shape
        check_tensor("B", B, ((M, d, d),))
        check_tensor("c", c, ((M, d),))
        self.mu = check_positive("mu", mu)
        self.M, self.d = M, d
        self.dtype = check_dtype(B.dtype)
        self.B, self.c = B, c.to(B.dtype)
        B64, c64 = B.double(), c.double()
        self.L_max = float(torch.linalg.matrix_norm(B64, ord=2).max())
        self.L = float(torch.linalg.matrix_norm(B64.mean(0), ord=2))
        self.z_star = torch.linalg.solve(B64.mean(0), -c64.mean(0)).to(self.dtype)

    def points(self, z: torch.Tensor, name: str = "z") -> torch.Tensor:
        """Validate a point [d] or per-device points [M, d] and cast it to the problem's dtype."""
        check_tensor(name, z, ((self.d,), (self.M, self.d)))
        return z.to(self.dtype)

    def operators(self, z: torch.Tensor) -> torch.Tensor:
        """F_m(z) stacked over devices: z [d] or Z [M, d] (device m at Z[m]) -> [M, d]."""
        return self.apply(self.points(z))

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`operators` without input checks, for solver loops (z in the problem's dtype)."""
        if z.ndim == 1:
            return self.B @ z + self.c
        return torch.bmm(self.B, z.unsqueeze(-1)).squeeze(-1) + self.c

    def operator(self, z: torch.Tensor) -> torch.Tensor:
        """F(z) = (1/M) Σ_m F_m(z) for z [d]: [d]."""
        check_tensor("z", z, ((self.d,),))
        return self.operators(z).mean(0)

    def dist_sq(self, z: torch.Tensor) -> float:
        """‖z − z*‖² for z [d], accumulated in float64."""
        check_tensor("z", z, ((self.d,),))
        return float((z.double() - self.z_star.double()).square().sum())


def bilinear_saddle(M: int, d: int, *, generator: torch.Generator, lam: float = 0.1,
                    dtype: torch.dtype = torch.float32) -> BilinearSaddle:
    """Draw the MASHA benchmark: A_m with i.i.d. N(0, 1/(d/2)) entries [d/2, d/2], a_m, b_m ~ N(0, I).

    Args:
        M: devices (≥ 1). d: total dimension of z = [x; y], even, ≥ 2.
        generator: torch.Generator for all draws (made in float64, then cast).
        lam: regularisation λ > 0 (strong monotonicity).
        dtype: torch.float32 (default) or torch.float64.
    """
    M, d = check_int("M", M, low=1), check_int("d", d, low=2)
    if d % 2:
        raise ValueError(f"d must be even (z = [x; y] with x, y in R^(d/2)), got {d}")
    check_generator(generator)
    lam = check_positive("lam", lam)
    check_dtype(dtype)
    h = d // 2
    f64 = torch.float64
    A = torch.randn(M, h, h, generator=generator, dtype=f64) / math.sqrt(h)
    c = torch.randn(M, d, generator=generator, dtype=f64)
    eye = lam * torch.eye(h, dtype=f64).expand(M, h, h)
    B = torch.cat([torch.cat([eye, A], dim=2), torch.cat([-A.transpose(1, 2), eye], dim=2)], dim=1)
    return BilinearSaddle(B.to(dtype), c.to(dtype), mu=lam)
