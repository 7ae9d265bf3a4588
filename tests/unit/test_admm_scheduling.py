"""commlab.distributed.admm: Bernoulli scheduling, idle clients and server averages, transmissions counted,
the local-GD baseline, seeding and refusals."""

import pytest
import torch

from commlab.distributed.admm import dual_free_admm, local_gd, standard_admm
from commlab.problems.weighted_least_squares import weighted_least_squares_clients


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def problem():
    return weighted_least_squares_clients(6, 3, 8, generator=gen(21))


def test_full_participation_counts_one_message_each_way_per_client(problem):
    for run in (standard_admm, dual_free_admm):
        trace = run(problem.A, problem.b, iterations=7, runs=2, generator=gen())
        assert torch.equal(trace.uplinks[:, 0], 6.0 * torch.arange(8))
        assert torch.equal(trace.downlinks, trace.uplinks)
        assert torch.equal(trace.transmissions, 2 * trace.uplinks)


def test_bernoulli_schedule_counts_the_selected_clients(problem):
    p, T, R = 0.3, 400, 50
    trace = standard_admm(problem.A, problem.b, iterations=T, runs=R, generator=gen(1), participation=p)
    per_iteration = trace.uplinks.diff(dim=0)
    assert bool(((per_iteration >= 0) & (per_iteration <= 6) & (per_iteration == per_iteration.round())).all())
    mean, std = float(per_iteration.mean()), (6 * p * (1 - p) / (T * R)) ** 0.5
    assert abs(mean - 6 * p) < 4 * std
    # the dual-free recursion's first (standard) step involves every client, then Bernoulli(p)
    trace = dual_free_admm(problem.A, problem.b, iterations=T, runs=R, generator=gen(2), participation=p)
    assert bool((trace.uplinks[1] == 6).all())
    assert abs(float(trace.uplinks.diff(dim=0)[1:].mean()) - 6 * p) < 4 * std


def test_options_do_not_matter_at_full_participation(problem):
    runs = [dual_free_admm(problem.A, problem.b, iterations=30, runs=2, generator=gen(3), noise_var=1e-3,
                           idle_clients=idle, server_average=average).w
            for idle in ("freeze", "continue") for average in ("all_latest", "selected_only")]
    for w in runs[1:]:
        assert torch.allclose(w, runs[0], atol=1e-13)
    a = standard_admm(problem.A, problem.b, iterations=30, runs=2, generator=gen(3), server_average="all_latest").w
    b = standard_admm(problem.A, problem.b, iterations=30, runs=2, generator=gen(3), server_average="selected_only").w
    assert torch.allclose(a, b, atol=1e-13)


def test_idle_clients_and_server_average_change_a_scheduled_run(problem):
    def run(**kw):
        return dual_free_admm(problem.A, problem.b, iterations=40, runs=3, generator=gen(4), participation=0.3, **kw).w
    freeze, cont = run(idle_clients="freeze"), run(idle_clients="continue")
    latest, selected = run(server_average="all_latest"), run(server_average="selected_only")
    assert torch.equal(freeze, latest)  # the defaults
    assert float((freeze - cont).abs().max()) > 1e-6
    assert float((latest - selected).abs().max()) > 1e-6


def test_standard_admm_with_scheduling_still_solves_the_problem(problem):
    # clients freeze and owe their dual update until selected again: without noise ADMM still converges to w*
    trace = standard_admm(problem.A, problem.b, iterations=1500, runs=2, generator=gen(5), participation=0.5)
    assert float(trace.mse(problem.w_star)[-1].max()) < 1e-8


def test_selected_only_keeps_the_model_when_nobody_uploads():
    p = weighted_least_squares_clients(1, 2, 4, generator=gen(6))
    trace = standard_admm(p.A, p.b, iterations=200, runs=1, generator=gen(7), participation=0.2,
                          server_average="selected_only")
    quiet = trace.uplinks.diff(dim=0)[:, 0] == 0
    assert bool(quiet.any())
    assert torch.equal(trace.w[1:][quiet], trace.w[:-1][quiet])


def test_local_gd_is_gradient_descent_on_the_sum(problem):
    lr = 0.5 / float(torch.linalg.eigvalsh(problem.A).max())
    trace = local_gd(problem.A, problem.b, iterations=3, runs=1, generator=gen(), lr=lr)
    w = torch.zeros(3, dtype=torch.float64)
    for n in range(3):  # one local step = one step on the mean of the client costs
        w = w - lr * (problem.A @ w - problem.b).mean(0)
        assert torch.allclose(trace.w[n + 1, 0], w, atol=1e-13)
    long = local_gd(problem.A, problem.b, iterations=3000, runs=1, generator=gen(), lr=lr)
    assert float(long.mse(problem.w_star)[-1, 0]) < 1e-12
    # several local steps drift towards the local minimisers: a biased fixed point
    drift = local_gd(problem.A, problem.b, iterations=3000, runs=1, generator=gen(), lr=lr, local_steps=5)
    assert float(drift.mse(problem.w_star)[-1, 0]) > 1e-10
    assert torch.equal(long.uplinks[:, 0], 6.0 * torch.arange(3001))


def test_seeded(problem):
    def run(seed):
        return dual_free_admm(problem.A, problem.b, iterations=20, runs=2, generator=gen(seed), noise_var=1e-3,
                              participation=0.5, idle_clients="continue").w
    assert torch.equal(run(8), run(8))
    assert not torch.equal(run(8), run(9))
    global_state = torch.get_rng_state()
    run(8)
    assert torch.equal(torch.get_rng_state(), global_state)


@pytest.mark.parametrize("kwargs, error", [
    (dict(rho=0.0), ValueError), (dict(participation=0.0), ValueError), (dict(participation=1.5), ValueError),
    (dict(iterations=0), ValueError), (dict(runs=0), ValueError), (dict(noise_var=-1.0), ValueError),
    (dict(generator=None), TypeError), (dict(idle_clients="sleep"), ValueError),
    (dict(server_average="median"), ValueError), (dict(w0=torch.zeros(4)), ValueError),
])
def test_bad_options_are_refused(problem, kwargs, error):
    options = dict(iterations=5, runs=2, generator=gen())
    options.update(kwargs)
    with pytest.raises(error):
        dual_free_admm(problem.A, problem.b, **options)


def test_bad_problems_are_refused(problem):
    A, b = problem.A, problem.b
    with pytest.raises(ValueError):
        standard_admm(A[0], b, iterations=5, runs=1, generator=gen())  # A [d, d]
    with pytest.raises(ValueError):
        standard_admm(A, b[:, :2], iterations=5, runs=1, generator=gen())
    with pytest.raises(ValueError):
        standard_admm(A.expand(3, -1, -1, -1), b, iterations=5, runs=2, generator=gen())  # 3 problems, 2 runs
    with pytest.raises(ValueError):
        standard_admm(A * float("nan"), b, iterations=5, runs=1, generator=gen())
    with pytest.raises(TypeError):
        standard_admm(A, b.float(), iterations=5, runs=1, generator=gen())
    with pytest.raises(TypeError):
        local_gd(A.numpy(), b, iterations=5, runs=1, generator=gen(), lr=0.1)
    with pytest.raises(ValueError):
        local_gd(A, b, iterations=5, runs=1, generator=gen(), lr=0.1, local_steps=0)
