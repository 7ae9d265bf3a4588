"""EF21-W has EF21's iterates for Top-k at the EF21-W notebook's configuration (commlab.compress.ef,
commlab.compress.descent): n = 200 clients, d = 40, 2 % heavy clients scaled by 30, the non-convex
regulariser λ = 0.1, the theory step γ_AM. Top-k is positively homogeneous, so EF21-W's weighted
estimate equals EF21's (a two-line induction); this was the notebook's claim ``ef21w-equals-ef21``
(max_t ‖x_t^W − x_t^EF21‖ / max(1, ‖x_t^EF21‖) ≤ 1e-8), which holds by construction and is tested here."""

from __future__ import annotations

import pytest
import torch

from commlab.compress import TopK
from commlab.compress.descent import compressed_descent
from commlab.compress.ef import EF21, EF21W
from commlab.compress.theory import ef21_stepsize
from commlab.problems import heterogeneous_least_squares


@pytest.fixture(scope="module")
def problem():
    return heterogeneous_least_squares(200, 40, 30, generator=torch.Generator().manual_seed(4), heavy_frac=0.02,
                                       scale=30.0, lam=0.1, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 4])
def test_ef21w_iterates_equal_ef21_iterates_at_the_theory_step(problem, k):
    compressor = TopK(k=k)
    gamma = ef21_stepsize(problem.L, problem.L_i, compressor.alpha_for(problem.d), mean="AM")
    x0 = torch.zeros(problem.d, dtype=torch.float64)
    weighted = compressed_descent(EF21W(compressor, smoothness=problem.L_i), problem.grads, x0, gamma=gamma,
                                  steps=400, start=True)
    plain = compressed_descent(EF21(compressor), problem.grads, x0, gamma=gamma, steps=400, start=True)
    gap = ((weighted.iterates - plain.iterates).norm(dim=1) / plain.iterates.norm(dim=1).clamp(min=1.0)).max()
    assert float(gap) <= 1e-8
    assert float((plain.iterates[-1] - x0).norm()) > 0.1  # the runs did move
    assert float(plain.grad_norm_sq[-1]) < 0.5 * float(plain.grad_norm_sq[0])
    assert torch.equal(weighted.bits, plain.bits)  # the same messages sizes
    # the weights differ from uniform (heavy clients), so this is not the trivial case w_i = 1/n
    weights = problem.L_i / problem.L_i.sum()
    assert float(weights.max() / weights.min()) > 100
