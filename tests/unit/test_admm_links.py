"""commlab.distributed.admm links: each client's downlink copy and each uplink get their own noise, and the
dual-free recursion over real collectives (SimComm, NoisyLinks) is the vectorised one."""

import pytest
import torch

from commlab.channels import AWGN
from commlab.comm import SimComm
from commlab.comm.noisy import NoisyLinks
from commlab.distributed.admm import dual_free_admm, dual_free_admm_over, standard_admm
from commlab.problems.weighted_least_squares import weighted_least_squares_clients


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def problem():
    return weighted_least_squares_clients(4, 3, 5, generator=gen(31))


def first_step_covariance(A, rho, noise_var, shared_downlink=False):
    """Cov(w_1) after one step from w_0 = 0, z = 0: w_1 = (1/K) sum_k (N_k (b_k + rho eta_k) + eps_k)."""
    K, d = A.shape[0], A.shape[1]
    N = torch.linalg.inv(A + rho * torch.eye(d, dtype=A.dtype))
    if shared_downlink:  # one eta for every client (what the model must NOT do)
        down = (rho / K) ** 2 * N.sum(0) @ N.sum(0).T
    else:
        down = (rho / K) ** 2 * (N @ N.transpose(1, 2)).sum(0)
    return noise_var * (down + torch.eye(d, dtype=A.dtype) / K)


def test_every_downlink_copy_and_uplink_has_its_own_noise(problem):
    rho, noise_var, R = 20.0, 1e-2, 40000
    for run in (standard_admm, dual_free_admm):
        w1 = run(problem.A, problem.b, iterations=1, runs=R, generator=gen(1), rho=rho, noise_var=noise_var).w[1]
        empirical = torch.cov(w1.T)
        expected = first_step_covariance(problem.A, rho, noise_var)
        shared = first_step_covariance(problem.A, rho, noise_var, shared_downlink=True)
        assert torch.allclose(empirical, expected, atol=0.05 * float(expected.diagonal().min())), run.__name__
        assert float((expected - shared).abs().max()) > 0.2 * float(expected.diagonal().min())


def test_over_simcomm_equals_the_vectorised_recursion(problem):
    comm = SimComm(5)
    over = dual_free_admm_over(comm, comm, problem.A, problem.b, iterations=60, rho=0.7)
    vectorised = dual_free_admm(problem.A, problem.b, iterations=60, runs=1, generator=gen(), rho=0.7)
    assert torch.allclose(over.w, vectorised.w, atol=1e-12)
    assert torch.equal(over.uplinks, vectorised.uplinks)


def test_over_noisy_links_has_the_vectorised_noise(problem):
    noise_var, T, R = 1e-2, 3, 1500
    finals = []
    for r in range(R):
        base = SimComm(5)
        up = NoisyLinks(base, uplink=AWGN(no=noise_var, real=True), seed=2 * r)
        down = NoisyLinks(base, downlink=AWGN(no=noise_var, real=True), seed=2 * r + 1)
        finals.append(dual_free_admm_over(up, down, problem.A, problem.b, iterations=T).w[-1, 0])
        if r == 0:  # one uplink draw per worker and all-gather, one downlink draw per client and broadcast
            assert up.noise["uplink"].messages == 5 * T and up.noise["downlink"].messages == 0
            assert down.noise["downlink"].messages == 4 * T and down.noise["uplink"].messages == 0
    finals = torch.stack(finals)
    vectorised = dual_free_admm(problem.A, problem.b, iterations=T, runs=20000, generator=gen(2), noise_var=noise_var)
    noiseless = dual_free_admm(problem.A, problem.b, iterations=T, runs=1, generator=gen()).w[-1, 0]
    assert torch.allclose(finals.mean(0), noiseless, atol=4 * float(finals.std(0).max()) / R ** 0.5)
    ratio = torch.cov(finals.T).diagonal() / torch.cov(vectorised.w[-1].T).diagonal()
    assert bool(((ratio > 0.85) & (ratio < 1.15)).all()), ratio


def test_over_refuses_communicators_of_the_wrong_size(problem):
    with pytest.raises(ValueError):
        dual_free_admm_over(SimComm(4), SimComm(4), problem.A, problem.b, iterations=3)
    with pytest.raises(TypeError):
        dual_free_admm_over(SimComm(5), object(), problem.A, problem.b, iterations=3)
    with pytest.raises(ValueError):
        dual_free_admm_over(SimComm(5), SimComm(5), problem.A[None], problem.b[None], iterations=3)
