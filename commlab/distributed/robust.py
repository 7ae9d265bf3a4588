"""Byzantine-robust aggregation of worker messages, and the attacks they are tested against.

**Aggregators** map a stack of N worker messages ``x [N, d]`` (float32 or float64) to one ``[d]``
message of the same dtype and device. Each is a small object called as ``agg(x)``; those that
assume f Byzantine workers take ``f`` and refuse an N too small for it. :data:`AGGREGATORS` names
them all, so a notebook swaps one for another by name::

    agg = AGGREGATORS["bulyan"](f=2)
    update = agg(grads)                              # grads [N, d] -> [d]

* :class:`Mean` — the plain average (breaks with a single Byzantine worker);
* :class:`CoordinateMedian` — the median of each coordinate;
* :class:`TrimmedMean` — per coordinate, drop the f largest and f smallest values, average the rest;
* :class:`Krum`, :class:`MultiKrum` — Blanchard et al. (2017): score each message by the squared
  distances to its N − f − 2 nearest others; Krum returns the best one, Multi-Krum the mean of the m best;
* :class:`Bulyan` — El Mhamdi et al. (2018): θ = N − 2f recursive Krum selections, then per coordinate
  the mean of the β = θ − 2f selected values closest to their median;
* :class:`GeometricMedian` — argmin_z Σ_i ‖x_i − z‖ by smoothed Weiszfeld iterations;
* :class:`FlagAggregator` — Almasi et al. (2024): the subspace that best reconstructs the normalised
  messages, found by iteratively re-weighted least squares, and the messages projected onto it.

Krum, Multi-Krum and Bulyan first put the rows in lexicographic order, so their index-based tie rules
(``argmin`` picks the first) depend on the set of messages only: every aggregator is invariant to
the order of the workers (the sum-based ones up to floating-point rounding).

**Attacks** take the messages every worker computed honestly, ``x [N, d]``, and return them with the
last f rows replaced by what the Byzantine workers send (the aggregators do not care which rows):
:class:`SignFlip`, :class:`GaussianNoise`, :class:`Drop`, :class:`ALittleIsEnough` (Baruch et al.,
2019), :class:`InnerProductManipulation` (Xie et al., 2020); :data:`ATTACKS` names them. Statistics
an attack uses (mean, standard deviation) are those of the N − f honest rows (an omniscient attacker).
:func:`flip_labels` is the data-level attack: the Byzantine workers train on labels C − 1 − y.

References: P. Blanchard, E. M. El Mhamdi, R. Guerraoui, J. Stainer, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017. E. M. El Mhamdi, R. Guerraoui,
S. Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium", ICML 2018. H. Almasi,
H. Mishra, B. Vamanan, S. N. Ravi, "Flag Aggregator: Scalable Distributed Training under Failures and
Augmented Losses using Convex Optimization", ICLR 2024. G. Baruch, M. Baruch, Y. Goldberg, "A Little
Is Enough: Circumventing Defenses For Distributed Learning", NeurIPS 2019. C. Xie, O. Koyejo,
I. Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2020.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar

import torch

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive


def _check_stack(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating torch.Tensor of shape [N, d], got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape [N, d] with N, d >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf")
    return x


def _median(x: torch.Tensor) -> torch.Tensor:
    """``[N, d] -> [d]``: per coordinate, the middle value (the mean of the two middle ones for even N)."""
    s = x.sort(dim=0).values
    n = x.shape[0]
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its norm (a zero row stays zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)


def _lexsorted(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` in lexicographic order (equal rows next to each other)."""
    _, group = torch.unique(x, dim=0, sorted=True, return_inverse=True)
    return x[group.argsort(stable=True)]


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """``[N, d] -> [N, N]``: ‖x_i − x_j‖², exactly symmetric (no Gram-matrix cancellation)."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").square()


def _krum_scores(d2: torch.Tensor, k: int) -> torch.Tensor:
    """``[n, n] -> [n]``: score(i) = Σ_{j ∈ N_k(i)} ‖x_i − x_j‖², N_k(i) the k nearest others of i."""
    off = d2 + torch.diag(torch.full((d2.shape[0],), math.inf, dtype=d2.dtype, device=d2.device))
    return off.sort(dim=1).values[:, :k].sum(dim=1)


class Aggregator:
    """An aggregation rule ``x [N, d] -> [d]``; ``min_workers`` is the smallest N it accepts."""

    name: ClassVar[str]

    @property
    def min_workers(self) -> int:
        return 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_stack(x)
        if x.shape[0] < self.min_workers:
            assumed = f" with f = {self.f}" if hasattr(self, "f") else ""
            raise ValueError(f"{self.name}{assumed} needs N >= {self.min_workers} workers, got N = {x.shape[0]}")
        return self._aggregate(x)

    def _aggregate(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class Mean(Aggregator):
    """The average (1/N) Σ_i x_i."""

    name: ClassVar[str] = "mean"

    def _aggregate(self, x):
        return x.mean(dim=0)


@dataclass
class CoordinateMedian(Aggregator):
    """Per coordinate k, median_i x_ik (the mean of the two middle values for even N)."""

    name: ClassVar[str] = "median"

    def _aggregate(self, x):
        return _median(x)


@dataclass
class TrimmedMean(Aggregator):
    """Per coordinate k, the mean of x_(f+1),k … x_(N−f),k, the sorted values without the f lowest and
    f highest. Needs N >= 2f + 1."""

    f: int
    name: ClassVar[str] = "trimmed_mean"

    def __post_init__(self):
        self.f = check_int("f", self.f, low=0)

    @property
    def min_workers(self):
        return 2 * self.f + 1

    def _aggregate(self, x):
        n = x.shape[0]
        return x.sort(dim=0).values[self.f:n - self.f].mean(dim=0)


def _multi_krum(x: torch.Tensor, f: int, m: int) -> torch.Tensor:
    x = _lexsorted(x)
    scores = _krum_scores(_squared_distances(x), x.shape[0] - f - 2)   # Σ over the N − f − 2 nearest
    best = scores.argsort(stable=True)[:m]                              # the m lowest scores
    return x[best].mean(dim=0)


@dataclass
class Krum(Aggregator):
    """The message x_i* with the lowest score(i) = Σ_{j ∈ N(i)} ‖x_i − x_j‖², N(i) the N − f − 2 messages
    nearest to x_i (itself excluded). Needs N >= 2f + 3. Ties go to the lexicographically first row."""

    f: int
    name: ClassVar[str] = "krum"

    def __post_init__(self):
        self.f = check_int("f", self.f, low=0)

    @property
    def min_workers(self):
        return 2 * self.f + 3

    def _aggregate(self, x):
        return _multi_krum(x, self.f, 1)


@dataclass
class MultiKrum(Aggregator):
    """The mean of the m messages with the lowest Krum scores (see :class:`Krum`); ``m = None`` means
    m = N − f. Needs N >= 2f + 3 and 1 <= m <= N."""

    f: int
    m: int | None = None
    name: ClassVar[str] = "multi_krum"

    def __post_init__(self):
        self.f = check_int("f", self.f, low=0)
        if self.m is not None:
            self.m = check_int("m", self.m, low=1)

    @property
    def min_workers(self):
        return max(2 * self.f + 3, self.m or 1)

    def _aggregate(self, x):
        return _multi_krum(x, self.f, x.shape[0] - self.f if self.m is None else self.m)


@dataclass
class Bulyan(Aggregator):
    """Bulyan over Krum. Needs N >= 4f + 3.

    1. Selection: θ = N − 2f times, apply Krum to the remaining set R (score over the |R| − f − 2
       nearest others, at least one) and move its choice from R to the selection S.
    2. Per coordinate k, with μ_k the median of S's values: the mean of the β = θ − 2f values of S
       closest to μ_k.

    In the last selections |R| − f − 2 falls below one (for f <= 2); there Krum scores by the single
    nearest neighbour, and a set of one is its own choice.
    """

    f: int
    name: ClassVar[str] = "bulyan"

    def __post_init__(self):
        self.f = check_int("f", self.f, low=0)

    @property
    def min_workers(self):
        return 4 * self.f + 3

    def _aggregate(self, x):
        x = _lexsorted(x)
        n, f = x.shape[0], self.f
        d2 = _squared_distances(x)
        remaining, chosen = list(range(n)), []
        for _ in range(n - 2 * f):                                          # θ = N − 2f selections
            sub = d2[remaining][:, remaining]
            k = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
            chosen.append(remaining.pop(int(_krum_scores(sub, k).argmin())))
        s = x[chosen]                                                       # S [θ, d]
        beta = len(chosen) - 2 * f
        closest = (s - _median(s)).abs().argsort(dim=0, stable=True)[:beta]  # β closest to μ_k
        return s.gather(0, closest).mean(dim=0)


@dataclass
class GeometricMedian(Aggregator):
    """argmin_z Σ_i ‖x_i − z‖ (breakdown point 1/2) by smoothed Weiszfeld iterations from the mean::

        z ← Σ_i w_i x_i / Σ_i w_i,   w_i = 1 / max(‖x_i − z‖, eps)

    until the objective falls by less than ``tol`` times its value, or ``max_iter`` iterations.
    """

    eps: float = 1e-8
    tol: float = 1e-6
    max_iter: int = 100
    name: ClassVar[str] = "geomed"

    def __post_init__(self):
        self.eps = check_positive("eps", self.eps)
        self.tol = check_nonnegative("tol", self.tol)
        self.max_iter = check_int("max_iter", self.max_iter, low=1)

    def _aggregate(self, x):
        z = x.mean(dim=0)
        objective = (x - z).norm(dim=1).sum()
        for _ in range(self.max_iter):
            w = 1.0 / (x - z).norm(dim=1).clamp(min=self.eps)              # w_i = 1 / max(‖x_i − z‖, eps)
            z = (w[:, None] * x).sum(dim=0) / w.sum()                      # z = Σ w_i x_i / Σ w_i
            previous, objective = objective, (x - z).norm(dim=1).sum()
            if previous - objective <= self.tol * objective:
                break
        return z


@dataclass
class FlagAggregator(Aggregator):
    """The Flag Aggregator (Almasi et al., 2024): a subspace Y fitted to the normalised messages.

    Each message is normalised, x_i = g_i / ‖g_i‖ (a zero message stays zero). Worker i's
    reconstruction ratio with respect to an orthonormal basis Y ``[d, r]`` is s_i = ‖Yᵀ x_i‖² ∈ [0, 1].
    The paper derives the fit from a maximum-likelihood estimate with Beta densities on the s_i; it is
    solved by iteratively re-weighted least squares. Starting from a seeded random Y (QR of uniform
    noise), each of ``n_its`` iterations sets

        w_i = (|1 − s_i| + ε)^(−1/4),   Y = top-r left singular vectors of [w_1 x_1, …, w_N x_N]

    and with ``lam`` = λ > 0 also the pairwise columns λ/(N(N−1)) · w_ij (x_i − x_j), i ≠ j, with
    w_ij = (|1 − ‖Yᵀ(x_i − x_j)‖²| + ε)^(−1/4). For λ = 0 an iteration is a majorise–minimise step on
    J(Y) = Σ_i sqrt(1 − s_i + ε), the smoothed flag median objective (Σ of the sines of the angles
    between the x_i and the subspace), so J never increases. The aggregate is

        (1/r) Σ_i Y Yᵀ x_i

    whose norm carries no gradient magnitude; ``rescale = "median_norm"`` returns its direction times
    the median ‖g_i‖ instead. The singular vectors are computed from a thin QR of the ``[d, N]``
    stack and N×N eigenproblems (the cost of one Gram matrix), never a d×d problem.

    Args:
        r: subspace dimension, 1 <= r <= min(N, d).
        n_its: IRLS iterations (the authors' code uses 1).
        lam: weight λ >= 0 of the pairwise term.
        eps: ε > 0 in the weights.
        rescale: ``"none"`` or ``"median_norm"``.
        seed: seed of the initial basis (the same basis at every call, as in the authors' code).
    """

    r: int = 1
    n_its: int = 1
    lam: float = 0.0
    eps: float = 1e-7
    rescale: str = "none"
    seed: int = 0
    name: ClassVar[str] = "flag"

    def __post_init__(self):
        self.r = check_int("r", self.r, low=1)
        self.n_its = check_int("n_its", self.n_its, low=1)
        self.lam = check_nonnegative("lam", self.lam)
        self.eps = check_positive("eps", self.eps)
        self.rescale = check_choice("rescale", self.rescale, ("none", "median_norm"))
        self.seed = check_int("seed", self.seed, low=0)

    def subspace(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """The fitted basis Y ``[d, r]``, its reconstruction ratios s ``[N]`` and the objective J of
        every iterate (``n_its + 1`` values, the random start first)."""
        x = _check_stack(x)
        n, d = x.shape
        if self.r > min(n, d):
            raise ValueError(f"r must be <= min(N, d) = {min(n, d)}, got r = {self.r}")
        unit = _unit(x)                                      # x_i = g_i / ‖g_i‖
        q, coords = torch.linalg.qr(unit.T)                  # unit.T = Q Z, Q [d, k], Z [k, N], k = min(d, N)
        generator = torch.Generator().manual_seed(self.seed)
        y0 = torch.linalg.qr(torch.rand(d, self.r, generator=generator, dtype=x.dtype) - 0.5).Q.to(x.device)
        proj = y0.T @ unit.T                                 # Yᵀ x_i for every i: [r, N]
        objectives, basis = [], None
        for _ in range(self.n_its):
            s = proj.square().sum(dim=0)                     # s_i = ‖Yᵀ x_i‖²
            objectives.append(float((1 - s + self.eps).clamp(min=0).sqrt().sum()))
            weights = torch.diag(((1 - s).abs() + self.eps) ** -0.5)        # w_i² on the diagonal
            if self.lam > 0 and n > 1:
                pair_s = torch.cdist(proj.T, proj.T).square()                # ‖Yᵀ(x_i − x_j)‖²
                c2 = (self.lam / (n * (n - 1)) * ((1 - pair_s).abs() + self.eps) ** -0.25) ** 2
                c2.fill_diagonal_(0)
                weights += 2 * (torch.diag(c2.sum(dim=1)) - c2)              # Σ_{i≠j} c_ij² (e_i − e_j)(e_i − e_j)ᵀ
            gram = coords @ weights @ coords.T                               # B Bᵀ for the weighted columns B
            basis = torch.linalg.eigh((gram + gram.T) / 2).eigenvectors[:, -self.r:]  # top-r, in Q's coordinates
            proj = basis.T @ coords
        s = proj.square().sum(dim=0)
        objectives.append(float((1 - s + self.eps).clamp(min=0).sqrt().sum()))
        return q @ basis, s, objectives

    def _aggregate(self, x):
        y, _, _ = self.subspace(x)
        out = y @ (y.T @ _unit(x).sum(dim=0)) / self.r                      # (1/r) Σ_i Y Yᵀ x_i
        if self.rescale == "median_norm":
            size = out.norm()
            out = out / size * _median(x.norm(dim=1, keepdim=True))[0] if size > 0 else out
        return out


AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls for cls in (Mean, CoordinateMedian, TrimmedMean, Krum, MultiKrum, Bulyan, GeometricMedian,
                              FlagAggregator)
}


# -- attacks --------------------------------------------------------------------------------------------


class Attack:
    """``attack(x, f, generator=None)``: the honest messages ``x [N, d]`` with the last f rows replaced
    by Byzantine ones (a new tensor; ``x`` is not changed). 0 <= f <= N − 1."""

    name: ClassVar[str]
    min_honest: ClassVar[int] = 1

    def __call__(self, x: torch.Tensor, f: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _check_stack(x)
        n = x.shape[0]
        f = check_int("f", f, low=0, high=n - self.min_honest)
        out = x.clone()
        if f > 0:
            out[n - f:] = self._forge(x[:n - f], x[n - f:], generator)
        return out

    def _forge(self, honest: torch.Tensor, own: torch.Tensor, generator) -> torch.Tensor:
        """``[f, d]`` Byzantine rows from the honest rows ``[N − f, d]`` and the attackers' own ``[f, d]``."""
        raise NotImplementedError


@dataclass
class SignFlip(Attack):
    """Each Byzantine worker sends −scale · (its own honest message)."""

    scale: float = 4.0
    name: ClassVar[str] = "sign_flip"

    def __post_init__(self):
        self.scale = check_positive("scale", self.scale)

    def _forge(self, honest, own, generator):
        return -self.scale * own


@dataclass
class GaussianNoise(Attack):
    """Each Byzantine worker sends N(0, σ² I) noise, drawn from the ``generator`` (required)."""

    sigma: float = 200.0
    name: ClassVar[str] = "gaussian"

    def __post_init__(self):
        self.sigma = check_positive("sigma", self.sigma)

    def _forge(self, honest, own, generator):
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{self.name} attack needs an explicit torch.Generator, got {type(generator).__name__}")
        noise = torch.randn(own.shape, generator=generator, dtype=own.dtype, device=generator.device)
        return self.sigma * noise.to(own.device)


@dataclass
class Drop(Attack):
    """Each Byzantine worker sends zeros (a dropped message)."""

    name: ClassVar[str] = "drop"

    def _forge(self, honest, own, generator):
        return torch.zeros_like(own)


def alie_z_max(n: int, f: int) -> float:
    """Baruch et al. (2019): z_max = Φ⁻¹((N − s) / N) with s = ⌊N/2 + 1⌋ − f, the number of honest workers
    the attackers must sway for a majority. Needs 0 <= f <= ⌊N/2⌋ (so s >= 1)."""
    n = check_int("n", n, low=2)
    f = check_int("f", f, low=0, high=n // 2)
    s = n // 2 + 1 - f                                   # s = ⌊N/2 + 1⌋ − f
    return NormalDist().inv_cdf((n - s) / n)             # z_max = Φ⁻¹((N − s)/N)


@dataclass
class ALittleIsEnough(Attack):
    """"A little is enough" (Baruch et al., 2019): every Byzantine worker sends μ − z σ, with μ and σ the
    per-coordinate mean and (unbiased) standard deviation of the honest messages and z = ``z`` or, if
    ``None``, :func:`alie_z_max` (N, f). Needs N − f >= 2."""

    z: float | None = None
    name: ClassVar[str] = "alie"
    min_honest: ClassVar[int] = 2

    def __post_init__(self):
        if self.z is not None:
            self.z = check_nonnegative("z", self.z)

    def _forge(self, honest, own, generator):
        f = own.shape[0]
        z = alie_z_max(honest.shape[0] + f, f) if self.z is None else self.z
        row = honest.mean(dim=0) - z * honest.std(dim=0)     # μ − z σ
        return row.expand_as(own).clone()


@dataclass
class InnerProductManipulation(Attack):
    """Inner-product manipulation (Xie et al., 2020): every Byzantine worker sends −ε · (mean of the honest
    messages), so that the aggregate's inner product with the true gradient turns negative."""

    epsilon: float = 0.1
    name: ClassVar[str] = "ipm"

    def __post_init__(self):
        self.epsilon = check_positive("epsilon", self.epsilon)

    def _forge(self, honest, own, generator):
        return (-self.epsilon * honest.mean(dim=0)).expand_as(own).clone()   # −ε μ


ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (SignFlip, GaussianNoise, Drop, ALittleIsEnough, InnerProductManipulation)
}


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label flipping, a data-level attack: apply to the Byzantine workers' training labels, which then
    become y ↦ C − 1 − y (C = ``num_classes``); their gradients are honest computations on wrong data."""
    num_classes = check_int("num_classes", num_classes, low=2)
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer torch.Tensor of labels, got {type(y).__name__}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes - 1}], got range [{int(y.min())}, {int(y.max())}]")
    return num_classes - 1 - y
