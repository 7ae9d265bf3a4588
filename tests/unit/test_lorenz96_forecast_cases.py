"""commlab.data.lorenz96.forecast_cases: shapes and lead times, the truth and the members start
from perturbations of one centre, a perfect-model ensemble is calibrated (spread-skill ratio near
1), a biased truth model is not, seeding, and refusals."""

from __future__ import annotations

import pytest
import torch

from commlab.data.lorenz96 import Lorenz96, forecast_cases
from commlab.ensembles.scores import spread_skill


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_times_and_start():
    model = Lorenz96(8, dt=0.02)
    cases = forecast_cases(model, 3, 5, 20, generator=_gen(0), save_every=10, init_std=0.1,
                           noise_std=0.3, transient=1.0)
    assert cases.times.tolist() == pytest.approx([0.0, 0.2, 0.4])
    assert cases.centre.shape == (3, 8) and cases.truth.shape == (3, 3, 8)
    assert cases.members.shape == (3, 3, 5, 8) and cases.members.dtype == torch.float64
    # Entry 0 is the perturbed start: c + 0.1 xi, so the offsets have std ~0.1 (18 x 8 draws).
    offsets = torch.cat([cases.truth[0].unsqueeze(1), cases.members[0]], 1) - cases.centre.unsqueeze(1)
    assert 0.07 < float(offsets.std()) < 0.13
    # Stochastic forcing makes different members differ later on.
    assert float((cases.members[2, :, 0] - cases.members[2, :, 1]).abs().max()) > 1e-3


def test_no_perturbation_and_no_noise_gives_identical_runs():
    model = Lorenz96(10)
    cases = forecast_cases(model, 2, 3, 30, generator=_gen(1), save_every=15, transient=0.5)
    assert torch.equal(cases.members, cases.truth.unsqueeze(2).expand_as(cases.members))
    expected = model.integrate(cases.centre, 30, save_every=15)
    assert torch.equal(cases.truth, expected)


def test_same_generator_seed_same_cases():
    model = Lorenz96(12)
    a = forecast_cases(model, 2, 4, 10, generator=_gen(7), init_std=0.05, noise_std=0.2, transient=0.5)
    b = forecast_cases(model, 2, 4, 10, generator=_gen(7), init_std=0.05, noise_std=0.2, transient=0.5)
    c = forecast_cases(model, 2, 4, 10, generator=_gen(8), init_std=0.05, noise_std=0.2, transient=0.5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.members, c.members)


def test_perfect_model_ensemble_is_calibrated_and_a_biased_one_is_not():
    # 150 cases x 20 members at lead 0.4 MTU: the truth is exchangeable with the members, so the
    # corrected spread/RMSE ratio is ~1 (its sampling error here is a few per cent).
    model = Lorenz96(40)
    cases = forecast_cases(model, 150, 20, 40, generator=_gen(3), save_every=40, init_std=0.1,
                           noise_std=0.1, transient=5.0)
    ratio = float(spread_skill(cases.members[-1], cases.truth[-1], member_dim=-2).ratio)
    assert 0.9 < ratio < 1.1
    biased = forecast_cases(Lorenz96(40, forcing=10.0), 150, 20, 40, generator=_gen(3), save_every=40,
                            init_std=0.1, noise_std=0.1, transient=5.0, truth_model=model)
    assert float(spread_skill(biased.members[-1], biased.truth[-1], member_dim=-2).ratio) < 0.8


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"n_cases": 0}, ValueError, "n_cases"),
    ({"n_members": 0}, ValueError, "n_members"),
    ({"n_steps": 7, "save_every": 2}, ValueError, "multiple of save_every"),
    ({"init_std": -0.1}, ValueError, "init_std"),
    ({"noise_std": -1.0}, ValueError, "noise_std"),
    ({"generator": 3}, TypeError, "generator"),
    ({"truth_model": Lorenz96(9)}, ValueError, "truth_model"),
    ({"truth_model": "L96"}, TypeError, "truth_model"),
    ({"model": object()}, TypeError, "model"),
])
def test_bad_input_is_refused(kwargs, error, match):
    args = {"model": Lorenz96(8), "n_cases": 2, "n_members": 2, "n_steps": 4, "generator": _gen(0)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        forecast_cases(**args)
