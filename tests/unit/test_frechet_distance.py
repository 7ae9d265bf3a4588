"""Fréchet distance: the closed form between two Gaussians (diagonal, 1-D and a non-commuting pair),
the sample version converging to it, symmetry, zero on identical samples, bad input."""

import numpy as np
import pytest
import scipy.linalg
import torch

from commlab.ensembles.sample_distances import frechet_distance, gaussian_frechet_distance


def test_diagonal_closed_form():
    # commuting covariances: FD = ‖Δμ‖² + Σ (σ_x − σ_y)²
    mx, my = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    sx, sy = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    fd = gaussian_frechet_distance(mx, torch.diag(sx**2), my, torch.diag(sy**2))
    assert fd == pytest.approx(float((mx - my).square().sum() + (sx - sy).square().sum()), abs=1e-10)


def test_non_commuting_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    cx, cy = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mx, my = rng.normal(size=5), rng.normal(size=5)
    reference = float(np.sum((mx - my) ** 2) + np.trace(cx + cy - 2 * scipy.linalg.sqrtm(cx @ cy).real))
    assert gaussian_frechet_distance(mx, cx, my, cy) == pytest.approx(reference, rel=1e-9)
    assert gaussian_frechet_distance(my, cy, mx, cx) == pytest.approx(reference, rel=1e-9)
    assert gaussian_frechet_distance(mx, cx, mx, cx) == pytest.approx(0.0, abs=1e-9)


def test_samples_converge_to_the_closed_form():
    gen = torch.Generator().manual_seed(1)
    n, d = 200_000, 3
    x = torch.randn(n, d, dtype=torch.float64, generator=gen) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    y = 0.5 + torch.randn(n, d, dtype=torch.float64, generator=gen) * torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)
    assert frechet_distance(x, y) == pytest.approx(3 * 0.25 + 1 + 0 + 0.25, rel=0.01)
    assert frechet_distance(x[:1000], x[:1000]) == pytest.approx(0.0, abs=1e-8)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\[N >= 1, 2\]"):
        frechet_distance(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_frechet_distance([0, 0], [[1, 0.5], [0, 1]], [0, 0], np.eye(2))
    with pytest.raises(ValueError, match="means must be"):
        gaussian_frechet_distance([0, 0], np.eye(3), [0, 0], np.eye(2))
