"""commlab.distributed.admm noise floors: the Lyapunov steady state of standard ADMM and the offset + drift of the
dual-free recursion against long Monte-Carlo runs on tiny problems, and the drift's closed form."""

import numpy as np
import pytest
import torch

from commlab.distributed.admm import (
    NoiseFloor,
    dual_free_admm,
    dual_free_noise_floor,
    standard_admm,
    standard_admm_noise_floor,
)
from commlab.problems.weighted_least_squares import weighted_least_squares_clients


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny():
    return weighted_least_squares_clients(3, 2, 4, generator=gen(11))


def empirical(trace, w_star, window):
    """Mean over the runs and the window of ||w_n - w*||^2, and its standard error over runs."""
    per_run = (trace.w[window] - w_star).square().sum(-1).mean(0)
    return float(per_run.mean()), float(per_run.std() / len(per_run) ** 0.5)


def test_standard_admm_settles_at_its_lyapunov_steady_state(tiny):
    floor = standard_admm_noise_floor(tiny.A, rho=1.0)
    assert floor.drift == 0.0 and floor.offset > 0
    noise_var = 1e-2
    trace = standard_admm(tiny.A, tiny.b, iterations=400, runs=4000, generator=gen(1), noise_var=noise_var)
    mean, error = empirical(trace, tiny.w_star, slice(200, 401))
    prediction = float(floor.mse(300, noise_var))
    assert abs(mean - prediction) < max(4 * error, 0.03 * prediction), (mean, prediction, error)
    # the floor is per unit noise variance, and rho matters
    assert float(floor.mse(0, 2 * noise_var)) == pytest.approx(2 * float(floor.mse(0, noise_var)))
    assert standard_admm_noise_floor(tiny.A, rho=3.0).offset != pytest.approx(floor.offset, rel=1e-3)


def test_dual_free_offset_and_drift_match_monte_carlo(tiny):
    floor = dual_free_noise_floor(tiny.A, rho=1.0)
    assert floor.drift > 0
    noise_var = 1e-2
    trace = dual_free_admm(tiny.A, tiny.b, iterations=600, runs=4000, generator=gen(2), noise_var=noise_var)
    for window in (slice(100, 201), slice(500, 601)):
        mean, error = empirical(trace, tiny.w_star, window)
        prediction = float(floor.mse(np.arange(window.start, window.stop), noise_var).mean())
        assert abs(mean - prediction) < max(4 * error, 0.03 * prediction), (window, mean, prediction, error)
    # the MSE really grows: the later window is above the earlier one by about 400 drifts
    early, _ = empirical(trace, tiny.w_star, slice(100, 201))
    late, _ = empirical(trace, tiny.w_star, slice(500, 601))
    assert late - early == pytest.approx(400 * floor.drift * noise_var, rel=0.15)


def test_drift_closed_form():
    # the consensus takes (sum_k A_k)^-1 rho (sum_k eta_k + sum_k eps_k) per iteration: 2 K rho^2 tr((sum A)^-2)
    p = weighted_least_squares_clients(5, 3, 6, generator=gen(3))
    for rho in (0.5, 2.0):
        inverse = np.linalg.inv(p.A.sum(0).numpy())
        expected = 2 * 5 * rho ** 2 * np.trace(inverse @ inverse)
        assert dual_free_noise_floor(p.A, rho=rho).drift == pytest.approx(expected, rel=1e-9)


def test_noise_floor_mse_is_linear():
    floor = NoiseFloor(offset=2.0, drift=0.5)
    assert np.allclose(floor.mse([0, 10], 0.1), [0.2, 0.7])


@pytest.mark.parametrize("A, error", [
    (np.ones((2, 3)), ValueError), (np.ones((2, 3, 2)), ValueError), (np.full((2, 2, 2), np.nan), ValueError),
])
def test_bad_matrices_are_refused(A, error):
    for floor in (standard_admm_noise_floor, dual_free_noise_floor):
        with pytest.raises(error):
            floor(A)
    with pytest.raises(ValueError):
        dual_free_noise_floor(np.stack([np.eye(2)] * 2), rho=0.0)
