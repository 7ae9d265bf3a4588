"""commlab.distributed.admm: the dual-free recursion started from one standard ADMM step equals standard
ADMM without noise and with full participation (the brief's admm-equivalence), and ADMM solves the WLS problem."""

import torch

from commlab.distributed.admm import dual_free_admm, standard_admm
from commlab.problems.weighted_least_squares import weighted_least_squares_clients


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_dual_free_equals_standard_admm_without_noise():
    # the brief's problem: K = 50, d = 16, 20 samples, rho = 1, 300 iterations
    p = weighted_least_squares_clients(50, 16, 20, generator=gen())
    w0 = torch.randn(16, generator=gen(1), dtype=torch.float64)
    for rho in (0.3, 1.0, 3.0):
        standard = standard_admm(p.A, p.b, iterations=300, runs=1, generator=gen(2), rho=rho, w0=w0).w
        dual_free = dual_free_admm(p.A, p.b, iterations=300, runs=1, generator=gen(3), rho=rho, w0=w0).w
        difference = (standard - dual_free).norm(dim=-1) / standard.norm(dim=-1)
        assert float(difference[2:].max()) <= 1e-10, rho  # the brief's threshold, n = 2 ... 300
        assert float(difference.max()) <= 1e-10  # here from the start: the first step is the same standard step


def test_noise_breaks_the_equivalence():
    p = weighted_least_squares_clients(5, 3, 8, generator=gen())
    standard = standard_admm(p.A, p.b, iterations=50, runs=1, generator=gen(2), noise_var=1e-4).w
    dual_free = dual_free_admm(p.A, p.b, iterations=50, runs=1, generator=gen(2), noise_var=1e-4).w
    assert float((standard - dual_free).norm(dim=-1)[2:].min()) > 1e-8


def test_admm_converges_to_the_wls_solution():
    p = weighted_least_squares_clients(8, 4, 10, generator=gen(4))
    for run in (standard_admm, dual_free_admm):
        trace = run(p.A, p.b, iterations=400, runs=2, generator=gen(5))
        assert float(trace.mse(p.w_star)[-1].max()) < 1e-8
        assert float(trace.mse(p.w_star)[0].min()) == 1.0  # w_0 = 0


def test_per_run_problems_on_a_leading_axis():
    p = weighted_least_squares_clients(6, 3, 10, generator=gen(6), runs=3)
    trace = standard_admm(p.A, p.b, iterations=300, runs=3, generator=gen(7))
    assert trace.w.shape == (301, 3, 3)
    assert float(trace.mse(p.w_star)[-1].max()) < 1e-8
    for r in range(3):  # run r solves problem r: the same iterates as that problem alone
        alone = standard_admm(p.A[r], p.b[r], iterations=300, runs=1, generator=gen(7)).w[:, 0]
        assert torch.allclose(trace.w[:, r], alone, atol=1e-12)
