"""Logistic regression with the non-convex regulariser (EF21, EF21-W and EControl experiments).

Worker i holds m examples (a_ij ∈ R^d, y_ij ∈ {−1, +1}) stacked as A_i [m, d], y_i [m]:

    f_i(x) = (1/m) Σ_j log(1 + exp(−y_ij a_ijᵀx)) + λ Σ_k x_k² / (1 + x_k²)
    ∇f_i(x) = −(1/m) Σ_j y_ij σ(−y_ij a_ijᵀx) a_ij + λ · 2x / (1 + x²)²

The logistic loss has curvature at most 1/4, so f_i is L_i-smooth with

    L_i = λ_max(A_iᵀA_i) / (4m) + 2λ,       L = λ_max((1/(nm)) Σ_i A_iᵀA_i) / 4 + 2λ

(upper bounds, the constants the EF21 papers use for their theoretical step sizes).

Data: :func:`synthetic_classification` (seeded) or :func:`sklearn_binary` (scikit-learn's bundled
breast-cancer and digits sets, no download); :func:`nonconvex_logreg` splits rows over workers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from commlab.problems._checks import (
    check_choice,
    check_dtype,
    check_generator,
    check_int,
    check_nonnegative,
    check_positive,
    check_tensor,
)
from commlab.problems.finite_sum import FiniteSum, worker_matvec, worker_rmatvec
from commlab.problems.penalty import PENALTY_SMOOTHNESS, nonconvex_penalty, nonconvex_penalty_grad
from commlab.problems.smoothness import lambda_max


class NonconvexLogReg(FiniteSum):
    """f(x) = (1/n) Σ_i f_i(x) with f_i the regularised logistic loss of worker i.

    Args:
        A: features, float tensor [n, m, d] (worker, example, feature).
        y: labels, tensor [n, m] with entries in {−1, +1}.
        lam: regulariser weight λ ≥ 0 (the papers use 0.1).

    Attributes:
        L_i: float64 [n]; L: float (see the module docstring).
    """

    def __init__(self, A: torch.Tensor, y: torch.Tensor, lam: float = 0.1):
        if not isinstance(A, torch.Tensor) or A.ndim != 3:
            raise ValueError("A must be a float tensor of shape [n, m, d]")
        n, m, d = A.shape
        check_tensor("A", A, ((n, m, d),))
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (n, m):
            raise ValueError(f"y must be a tensor of shape [{n}, {m}]")
        if not bool(((y == 1) | (y == -1)).all()):
            raise ValueError("y must contain only -1 and +1")
        self.lam = check_nonnegative("lam", lam)
        self.n, self.m, self.d = n, m, d
        self.dtype = check_dtype(A.dtype)
        self.A, self.y = A, y.to(A.dtype)
        A64 = A.double()
        grams = A64.transpose(1, 2) @ A64 / m
        self.L_i = lambda_max(grams) / 4 + PENALTY_SMOOTHNESS * self.lam
        self.L = float(lambda_max(grams.mean(0))) / 4 + PENALTY_SMOOTHNESS * self.lam

    def _losses(self, x: torch.Tensor) -> torch.Tensor:
        margins = self.y * worker_matvec(self.A, x)
        return torch.nn.functional.softplus(-margins).mean(-1) + nonconvex_penalty(x, self.lam)

    def _grads(self, x: torch.Tensor) -> torch.Tensor:
        margins = self.y * worker_matvec(self.A, x)
        weights = -self.y * torch.sigmoid(-margins) / self.m
        return worker_rmatvec(self.A, weights) + nonconvex_penalty_grad(x, self.lam)


def nonconvex_logreg(features: torch.Tensor, labels: torch.Tensor, n: int, *, lam: float = 0.1,
                     split: str = "random", generator: torch.Generator | None = None,
                     scales: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> NonconvexLogReg:
    """Split a labelled data set over n workers with m = N // n examples each (the last N mod n rows
    of the ordering are dropped).

    Args:
        features: float tensor [N, d].
        labels: tensor [N] with entries in {−1, +1} or {0, 1} (0 is mapped to −1).
        n: number of workers, 1 ≤ n ≤ N.
        lam: regulariser weight λ ≥ 0.
        split: ``"random"`` (a permutation drawn from ``generator``) or ``"sorted_norm"`` (rows sorted by
            decreasing ‖a‖, so worker 0 gets the largest rows and the L_i are heterogeneous).
        generator: torch.Generator, required for ``split="random"``.
        scales: optional per-worker feature multipliers s_i > 0, tensor [n]; L_i's data term grows by s_i².
        dtype: torch.float32 (default) or torch.float64.
    """
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ValueError("features must be a float tensor of shape [N, d]")
    N, d = features.shape
    check_tensor("features", features, ((N, d),))
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (N,):
        raise ValueError(f"labels must be a tensor of shape [{N}]")
    if not bool(((labels == 1) | (labels == -1) | (labels == 0)).all()):
        raise ValueError("labels must be in {-1, +1} or {0, 1}")
    n = check_int("n", n, low=1, high=N)
    check_choice("split", split, ("random", "sorted_norm"))
    check_dtype(dtype)
    if split == "random":
        order = torch.randperm(N, generator=check_generator(generator))
    else:
        order = torch.argsort(features.double().norm(dim=1), descending=True, stable=True)
    m = N // n
    order = order[: n * m]
    A = features.double()[order].reshape(n, m, d)
    y = torch.where(labels[order] == 0, -1.0, labels[order].double()).reshape(n, m)
    if scales is not None:
        check_tensor("scales", scales, ((n,),))
        if not bool((scales > 0).all()):
            raise ValueError("scales must be > 0")
        A = A * scales.double()[:, None, None]
    return NonconvexLogReg(A.to(dtype), y.to(dtype), lam=lam)


def synthetic_classification(N: int, d: int, *, generator: torch.Generator, flip: float = 0.1,
                             feature_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded linearly separable data with label noise.

    a_j ~ N(0, feature_scale² I_d / d) (rows of norm ≈ feature_scale), y_j = sign(a_jᵀw) with
    w ~ N(0, I_d), then each label flipped with probability ``flip``.

    Returns:
        features float64 [N, d] and labels float64 [N] in {−1, +1}.
    """
    N, d = check_int("N", N, low=1), check_int("d", d, low=1)
    check_generator(generator)
    flip = check_nonnegative("flip", flip)
    if flip > 0.5:
        raise ValueError(f"flip must be in [0, 0.5], got {flip}")
    feature_scale = check_positive("feature_scale", feature_scale)
    f64 = torch.float64
    w = torch.randn(d, generator=generator, dtype=f64)
    features = torch.randn(N, d, generator=generator, dtype=f64) * (feature_scale / math.sqrt(d))
    labels = torch.where(features @ w >= 0, 1.0, -1.0).to(f64)
    flips = torch.rand(N, generator=generator, dtype=f64) < flip
    return features, torch.where(flips, -labels, labels)


def sklearn_binary(name: str, *, standardise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A binary task from scikit-learn's bundled data (no download).

    Args:
        name: ``"breast_cancer"`` (569 × 30, malignant vs benign) or ``"digits_parity"``
            (1797 × 64, even vs odd digit).
        standardise: scale each feature to zero mean and unit variance (constant features stay 0).

    Returns:
        features float64 [N, d] and labels float64 [N] in {−1, +1}.
    """
    from sklearn import datasets

    check_choice("name", name, ("breast_cancer", "digits_parity"))
    if name == "breast_cancer":
        X, t = datasets.load_breast_cancer(return_X_y=True)
        y = np.where(t == 1, 1.0, -1.0)
    else:
        X, t = datasets.load_digits(return_X_y=True)
        y = np.where(t % 2 == 0, 1.0, -1.0)
    X = X.astype(np.float64)
    if standardise:
        std = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return torch.from_numpy(X), torch.from_numpy(y)
