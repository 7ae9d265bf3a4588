"""DADAO's lazy ODE update (commlab.distributed.dadao.LinearFlow): e^{AΔt} from one eigendecomposition
equals a fine RK4 integration of ṡ = A s (the brief's dadao-ode-exact, Δt = 5, to 1e-9) and scipy's
expm, also where A has a repeated eigenvalue; bad matrices and times are refused."""

import numpy as np
import pytest
import scipy.linalg

from commlab.distributed.dadao import DadaoConstants, LinearFlow, ode_matrix


def _rk4(A, s, dt, steps):
    h = dt / steps
    for _ in range(steps):
        k1 = A @ s
        k2 = A @ (s + h / 2 * k1)
        k3 = A @ (s + h / 2 * k2)
        k4 = A @ (s + h * k3)
        s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return s


@pytest.mark.parametrize("kappa", [3.0, 30.0, 472.0, 5000.0])
def test_expm_update_equals_fine_rk4_over_dt_5(kappa):
    A = ode_matrix(DadaoConstants.from_problem(L=2.0, mu=2.0 / kappa, chi_1_star=0.7))
    s = np.random.default_rng(0).standard_normal((6, 4))
    exact = LinearFlow(A).propagator(5.0) @ s
    np.testing.assert_allclose(exact, _rk4(A, s, 5.0, 20000), rtol=0, atol=1e-9)


def test_propagator_matches_scipy_expm_and_composes():
    A = ode_matrix(DadaoConstants.from_problem(L=10.0, mu=0.1, chi_1_star=3.0))
    flow = LinearFlow(A)
    for dt in (0.0, 0.01, 1.0, 37.0):
        np.testing.assert_allclose(flow.propagator(dt), scipy.linalg.expm(A * dt), atol=1e-12)
    np.testing.assert_allclose(flow.propagator(1.5) @ flow.propagator(2.5), flow.propagator(4.0), atol=1e-12)
    batch = flow.propagator(np.array([0.5, 2.0]))
    assert batch.shape == (2, 6, 6)
    np.testing.assert_allclose(batch[1], flow.propagator(2.0), atol=1e-14)
    np.testing.assert_allclose(flow.first_row(np.array([0.5, 2.0])), batch[:, 0], atol=1e-14)


def test_repeated_zero_eigenvalue_gets_a_full_eigenspace():
    """A's eigenvalue 0 is double (consensus of the x- and z-blocks); LAPACK's eigenvectors for it can
    coincide, which the flow replaces by a basis of null(A)."""
    A = ode_matrix(DadaoConstants.from_problem(L=1.0, mu=0.1, chi_1_star=1.0))
    flow = LinearFlow(A)
    assert np.sum(np.abs(flow.eigenvalues) < 1e-12) == 2
    assert np.linalg.cond(flow.V) < 1e3
    np.testing.assert_allclose(flow.V @ np.diag(flow.eigenvalues) @ flow.V_inv, A, atol=1e-12)


def test_constants_are_the_papers():
    k = DadaoConstants.from_problem(L=8.0, mu=2.0, chi_1_star=0.5)
    root = np.sqrt(1.0 / 8.0)  # √(ν/L) with ν = 1
    assert k.nu == 1.0
    assert np.isclose(k.alpha, root / 4) and np.isclose(k.alpha_tilde, root / 8)
    assert np.isclose(k.eta, root / 8) and np.isclose(k.theta, 0.5 / root)
    assert np.isclose(k.gamma, 1 / 32) and np.isclose(k.gamma_tilde, 1 / (4 * np.sqrt(8.0)))
    assert np.isclose(k.delta, root / 4) and k.delta_tilde == 1.0 and k.beta == 0.5
    assert np.isclose(k.beta_tilde, 2 * 0.5 / root)


def test_refusals():
    with pytest.raises(ValueError, match="not diagonalisable"):
        LinearFlow(np.array([[0.0, 1.0], [0.0, 0.0]]))  # a Jordan block
    with pytest.raises(ValueError, match="square"):
        LinearFlow(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="square"):
        LinearFlow(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    flow = LinearFlow(np.diag([-1.0, -2.0]))
    with pytest.raises(ValueError, match="dt"):
        flow.propagator(-0.1)
    with pytest.raises(ValueError, match="mu must be <= L"):
        DadaoConstants.from_problem(L=1.0, mu=2.0, chi_1_star=1.0)
    with pytest.raises(ValueError, match="chi_1_star"):
        DadaoConstants.from_problem(L=1.0, mu=0.5, chi_1_star=0.0)
