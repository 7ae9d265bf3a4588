"""PowerSGD's own protocol (commlab.distributed.powersgd): per-layer matrices with the minimum
compression rate, two all-reduces, warm start and error feedback, against torch's powerSGD_hook."""

import numpy as np
import pytest
import torch
from powersgd_workers import gradients, layers, torch_hook

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.distributed.powersgd import PowerSGDReducer

pytestmark = pytest.mark.timeout(180)

SHAPES = [tuple(p.shape) for p in layers().parameters()]  # (24, 32), (24,), (2, 24)


def _flat(rank, step):
    return torch.cat([g.reshape(-1) for g in gradients(rank, step)])


def _split(vector):
    out, at = [], 0
    for shape in SHAPES:
        size = int(np.prod(shape))
        out.append(vector[at : at + size].reshape(shape))
        at += size
    return out


def test_the_plan_compresses_only_matrices_that_pay_by_the_minimum_rate():
    reducer = PowerSGDReducer(4)
    blocks = reducer.plan([(24, 32), (24,), (2, 24), (10, 1, 3, 3), (5, 5)])
    assert [(b.n, b.m, b.r) for b in blocks] == [(24, 32, 4), (1, 24, 0), (2, 24, 0), (10, 9, 0), (5, 5, 0)]
    assert [b.offset for b in blocks] == [0, 768, 792, 840, 930]
    # (24 + 32)·4 values instead of 768; the rest dense: what the d = 10 case needs (never more than dense)
    assert reducer.bits(SHAPES) == 32 * ((24 + 32) * 4 + 24 + 48)
    assert PowerSGDReducer(4).bits([(10,)]) == 320
    assert PowerSGDReducer(1, min_compression_rate=1.0).plan([(5, 5)])[0].r == 1  # 10 < 25


def test_it_follows_torchs_hook_from_the_same_first_q_after_one_and_several_warm_steps(tmp_path):
    steps, start_iter, seed = 6, 2, 0
    results = run_workers(torch_hook, 2, (steps, start_iter, seed))
    assert [r.status for r in results] == ["ok", "ok"], [r.traceback for r in results]
    hooked, first_step = results[0].value
    torch.testing.assert_close(hooked, results[1].value[0])  # every rank gets the same estimate
    first_seed = int(np.random.RandomState(seed).randint(1_000_000_000))  # the hook's first Q draw
    generator = torch.Generator().manual_seed(first_seed)
    reducer, comm = PowerSGDReducer(4), SimComm(2)
    errors = []
    for k in range(steps):
        g = torch.stack([_flat(rank, first_step + k) for rank in range(2)])
        ours = _split(reducer.reduce(comm, g, generator, SHAPES))
        for name, a, b in zip(("weight", "bias", "small weight"), ours, hooked[k], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"step {k}: {name}")
        mean = g.mean(dim=0)[:768].reshape(24, 32)
        errors.append(float(torch.linalg.norm(ours[0] - mean) / torch.linalg.norm(mean)))
    # the criterion: after 5 warm steps within 2 % of the hook's relative error
    hook_error = float(torch.linalg.norm(hooked[-1][0] - mean) / torch.linalg.norm(mean))
    assert errors[-1] == pytest.approx(hook_error, rel=0.02)
    assert comm.meter.calls == {"all_reduce": 2 * steps}  # two all-reduces per round


def test_two_all_reduces_carry_exactly_the_counted_values_and_dense_tensors_are_exact():
    comm, reducer = SimComm(3), PowerSGDReducer(4)
    g = torch.stack([_flat(rank, 0) for rank in range(3)])
    estimate = reducer.reduce(comm, g, torch.Generator().manual_seed(0), SHAPES)
    assert comm.meter.bytes_sent.tolist() == [reducer.bits(SHAPES) / 8] * 3
    torch.testing.assert_close(estimate[768:], g.mean(dim=0)[768:])  # bias and small weight: the exact mean
    e = reducer.state_dict()["error"]
    torch.testing.assert_close(e[:, :768], g[:, :768] - estimate[:768])  # e_i = M_i − Ĝ on the compressed matrix
    assert not e[:, 768:].any()


def test_warm_steps_on_a_fixed_gradient_converge_to_the_best_rank_r_approximation_of_the_mean():
    comm, reducer = SimComm(2), PowerSGDReducer(4, error_feedback=False)
    g = torch.stack([_flat(rank, 0) for rank in range(2)])
    mean = g.mean(dim=0)[:768].reshape(24, 32)
    optimum = float(torch.linalg.svdvals(mean)[4:].square().sum().sqrt() / torch.linalg.norm(mean))
    generator = torch.Generator().manual_seed(0)
    errors = [float(torch.linalg.norm(reducer.reduce(comm, g, generator, SHAPES)[:768].reshape(24, 32) - mean)
                    / torch.linalg.norm(mean)) for _ in range(8)]
    assert errors[0] > optimum * 1.01 and errors[-1] <= optimum * 1.001
    cold = PowerSGDReducer(4, warm_start=False, error_feedback=False)
    cold_errors = [float(torch.linalg.norm(cold.reduce(comm, g, generator, SHAPES)[:768].reshape(24, 32) - mean)
                         / torch.linalg.norm(mean)) for _ in range(8)]
    assert min(cold_errors) > optimum * 1.01


def test_state_dict_restores_the_run_and_bad_input_is_refused():
    g = torch.stack([_flat(rank, 0) for rank in range(2)])
    a = PowerSGDReducer(4)
    a.reduce(SimComm(2), g, torch.Generator().manual_seed(0), SHAPES)
    b = PowerSGDReducer(4)
    b.load_state_dict(a.state_dict())
    expected = a.reduce(SimComm(2), g, None, SHAPES)  # warm: no draw needed
    torch.testing.assert_close(b.reduce(SimComm(2), g, None, SHAPES), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="serves tensors of shapes"):
        a.reduce(SimComm(2), g, None, [(768,), (72,)])
    with pytest.raises(ValueError, match="must be \\[L, 840\\]"):
        PowerSGDReducer(4).reduce(SimComm(2), g[:, :-1], None, SHAPES)
    with pytest.raises(ValueError, match="first Q from a generator"):
        PowerSGDReducer(4).reduce(SimComm(2), g, None, SHAPES)
    with pytest.raises(ValueError, match="keys 'shapes'"):
        b.load_state_dict({"q": []})
    a.reset()
    assert a.state_dict() == {"shapes": None, "q": [], "error": None}
