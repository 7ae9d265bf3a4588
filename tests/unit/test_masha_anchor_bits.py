"""MASHA1's anchor accounting at the notebook's configuration (commlab.problems.vi): every dense anchor
message F_m(w) is counted, and at p = k/d with scaled Rand-k the anchors take their expected share of
the uplink, 32k / (32k + 32k + min(k⌈log₂d⌉, d)) ≈ 0.45 at d = 100, k = 10. This was the MASHA notebook's
claim ``anchor-accounting`` (share in [0.2, 0.8]); it holds by construction of the accounting, so it is
a test of the library here."""

from __future__ import annotations

import math

import pytest
import torch

from commlab.compress import RandK, TopK
from commlab.problems import bilinear_saddle
from commlab.problems.vi import masha1, masha2
from commlab.seeding import SeedTree

D, K, ITERATIONS = 100, 10, 4000


@pytest.fixture(scope="module")
def problem():
    return bilinear_saddle(10, D, lam=0.1, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("solver, compressor", [(masha1, RandK(ratio=0.1)), (masha2, TopK(ratio=0.1))])
def test_anchor_share_of_the_uplink_is_its_expectation_at_p_equal_k_over_d(problem, solver, compressor):
    history = solver(problem, compressor, gamma=0.45 / problem.L_max, iterations=ITERATIONS, seeds=SeedTree(11))
    dense, sparse = 32 * D, 32 * K + min(K * math.ceil(math.log2(D)), D)  # 3,200 and 390 bits
    assert history.iterations == ITERATIONS and not history.diverged
    # exact: the initial anchor plus one dense message per refresh, and one compressed message per iteration
    assert history.anchor_bits[-1] == dense * (1 + history.refreshes)
    assert history.bits[-1] == history.anchor_bits[-1] + sparse * ITERATIONS
    assert (history.anchor_bits <= history.bits).all() and (history.anchor_bits[1:] >= history.anchor_bits[:-1]).all()
    # the shared coin refreshes with probability p = k/d: about 400 of 4,000 iterations (±4 sd)
    assert abs(history.refreshes - 0.1 * ITERATIONS) <= 4 * math.sqrt(ITERATIONS * 0.1 * 0.9)
    expected = 0.1 * dense / (0.1 * dense + sparse)  # 320 / 710
    assert expected == pytest.approx(0.4507, abs=1e-4)
    share = history.anchor_fraction()
    assert share == pytest.approx(expected, abs=0.02) and 0.2 <= share <= 0.8


def test_anchor_share_until_a_tolerance_counts_only_the_bits_spent_until_then(problem):
    history = masha1(problem, RandK(ratio=0.1), gamma=0.45 / problem.L_max, iterations=20000, seeds=SeedTree(12),
                     stop_below=1e-8)
    t = history.index_to(1e-6)
    assert t is not None and history.bits_to(1e-6) == history.bits[t]
    assert history.anchor_fraction(1e-6) == history.anchor_bits[t] / history.bits[t]
    assert 0.2 <= history.anchor_fraction(1e-6) <= 0.8
    assert math.isnan(history.anchor_fraction(1e-30))  # never reached
