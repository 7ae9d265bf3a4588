"""commlab.problems.vi: extragradient and MASHA on a tiny bilinear saddle problem."""

import math

import pytest
import torch

from commlab.compress import RandK, TopK
from commlab.problems import bilinear_saddle
from commlab.problems.vi import compressed_extragradient, extragradient, masha1, masha2
from commlab.seeding import SeedTree


@pytest.fixture(scope="module")
def problem():
    return bilinear_saddle(4, 20, lam=0.2, generator=torch.Generator().manual_seed(0))


def test_extragradient_converges_and_counts_two_dense_messages(problem):
    history = extragradient(problem, gamma=0.5 / problem.L_max, iterations=3000, stop_below=1e-9)
    assert history.final <= 1e-9 and not history.diverged
    assert history.dist_sq[0] == pytest.approx(problem.dist_sq(torch.zeros(20)))
    assert history.bits[0] == 0 and history.bits[-1] == history.iterations * 2 * 32 * 20
    assert history.anchor_fraction() == 0


def test_masha1_converges_with_rand_k_and_counts_anchor_messages(problem):
    compressor = RandK(ratio=0.2)
    history = masha1(problem, compressor, gamma=0.45 / problem.L_max, iterations=4000, seeds=SeedTree(1),
                     stop_below=1e-9)
    assert history.final <= 1e-9
    dense, sparse = 32 * 20, 4 * 32 + min(4 * 5, 20)  # k = 4 values of 32 bits + a 20-bit bitmap
    assert history.bits[0] == history.anchor_bits[0] == dense  # the initial anchor F_m(w_0)
    assert history.bits[-1] == dense * (1 + history.refreshes) + sparse * history.iterations
    assert history.anchor_bits[-1] == dense * (1 + history.refreshes)
    # the refreshes follow the shared coin of seeds.torch("anchor") with p = 1/(1 + omega) = k/d
    coins = torch.rand(history.iterations, generator=SeedTree(1).torch("anchor"), dtype=torch.float64) < 0.2
    assert history.refreshes == int(coins.sum())


def test_masha_saves_bits_over_extragradient_and_naive_compression_stalls(problem):
    gamma = 0.45 / problem.L_max
    eg = extragradient(problem, gamma=0.5 / problem.L_max, iterations=3000, stop_below=1e-7)
    m1 = masha1(problem, RandK(ratio=0.2), gamma=gamma, iterations=4000, seeds=SeedTree(2), stop_below=1e-7)
    m2 = masha2(problem, TopK(ratio=0.2), gamma=gamma, iterations=4000, seeds=SeedTree(2), stop_below=1e-7)
    naive = compressed_extragradient(problem, RandK(ratio=0.2), gamma=0.05 / problem.L_max, iterations=3000,
                                     seeds=SeedTree(2))
    assert m1.bits_to(1e-6) < eg.bits_to(1e-6) and m2.final <= 1e-7
    assert naive.iterations == 3000 and naive.index_to(1e-2) is None and naive.bits_to(1e-2) == math.inf
    assert naive.final >= 100 * m1.final


def test_same_seeds_same_history(problem):
    def run(seed):
        return masha1(problem, RandK(ratio=0.2), gamma=0.1, iterations=200, seeds=SeedTree(seed))

    a, b, c = run(3), run(3), run(4)
    assert (a.dist_sq == b.dist_sq).all() and (a.bits == b.bits).all() and torch.equal(a.z, b.z)
    assert not (a.dist_sq == c.dist_sq).all()


def test_divergence_is_reported(problem):
    history = extragradient(problem, gamma=100.0, iterations=5000)
    assert history.diverged and history.iterations < 5000 and math.isfinite(history.final)
    history = masha1(problem, RandK(k=1), gamma=50.0, iterations=5000, seeds=SeedTree(0))
    assert history.diverged and history.iterations < 5000
    assert not masha1(problem, RandK(ratio=0.2), gamma=0.1, iterations=50, seeds=SeedTree(0)).diverged


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda P: extragradient(P, gamma=0.0, iterations=10), ValueError),
        (lambda P: extragradient(P, gamma=0.1, iterations=0), ValueError),
        (lambda P: extragradient(P, gamma=0.1, iterations=10, z0=torch.zeros(3)), ValueError),
        (lambda P: extragradient("problem", gamma=0.1, iterations=10), TypeError),
        (lambda P: masha1(P, TopK(ratio=0.2), gamma=0.1, iterations=10, seeds=SeedTree(0)), ValueError),
        (lambda P: masha1(P, RandK(ratio=0.2), gamma=0.1, iterations=10, seeds=0), TypeError),
        (lambda P: masha1(P, RandK(ratio=0.2), gamma=0.1, iterations=10, seeds=SeedTree(0), p=0.0), ValueError),
        (lambda P: masha1(P, RandK(ratio=0.2), gamma=0.1, iterations=10, seeds=SeedTree(0), tau=1.5), ValueError),
        (lambda P: masha1(P, "randk", gamma=0.1, iterations=10, seeds=SeedTree(0)), TypeError),
        (lambda P: masha2(P, RandK(ratio=0.2), gamma=0.1, iterations=10, seeds=SeedTree(0)), ValueError),
    ],
)
def test_bad_input_raises(problem, call, error):
    with pytest.raises(error):
        call(problem)
