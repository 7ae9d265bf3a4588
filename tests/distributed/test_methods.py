"""Every registered method has the one shape: built by name, summary() with the same keys, and a
checkpoint (state_dict -> torch.save -> torch.load -> load_state_dict on a fresh communicator and fresh
parameters) that continues bit for bit, collectives in flight included."""

import copy
import io
import math

import pytest
import torch

from commlab.comm import Link, SimComm
from commlab.compress import TopK
from commlab.compress.ef import EF14
from commlab.distributed import METHODS, make_method
from commlab.distributed.gossip import Schedule
from commlab.distributed.method import Method

N, D = 3, 12
LINK = Link(bandwidth=1e6, latency=1e-3)
GEN = torch.Generator().manual_seed(7)
A = torch.randn(6, 8, D, generator=GEN, dtype=torch.float64)
B = torch.randn(6, 8, generator=GEN, dtype=torch.float64)
SUMMARY_KEYS = {"steps", "syncs", "bytes_per_worker", "peak_bytes_per_sync", "clock"}


def sgd(p):
    return torch.optim.SGD([p], lr=0.05, momentum=0.9)


OUTER = {"inner": sgd, "step_seconds": 0.01}
FEDERATED = {"n_clients": 6, "local_steps": 2, "local_lr": 0.05, "seed": 2}
HYPER = {
    "data_parallel": {"mechanism": EF14(TopK(k=3)), "compress_from": 2, **OUTER},
    "diloco": {"sync_every": 3, **OUTER},
    "local_sgd": {"sync_every": 3, **OUTER},
    "streaming_diloco": {"sync_every": 4, "fragments": 2, "overlap_steps": 1, "block": 4, "seed": 1, **OUTER},
    "noloco": {"sync_every": 3, "seed": 1, **OUTER},
    "co2": {"sync_every": 2, "gap_penalty": "relative", "penalty": 0.5, **OUTER},
    "async_diloco": {"sync_every": 3, **OUTER},
    "gossip": {"lr": 0.05, "sync_every": 2, "schedule": Schedule.linear(1.0, 2.0), "rounds": 5, "seed": 3},
    "dgc": {"lr": lambda t: 0.05 * 0.9**t, "density": 0.25, "clip_norm": 5.0, "seed": 4},
    "onebit_adam": {"lr": 0.01, "freeze_step": 3},
    "spsa": {"lr": 0.05, "samples": 2, "seed": 5},
    "fedavg": FEDERATED,
    "fedef": {"compressor": TopK(k=3), **FEDERATED},
    "scaffold": FEDERATED,
    "scallion": {"compressor": TopK(k=3), "alpha": 0.5, **FEDERATED},
    "scafcom": {"compressor": TopK(k=3), **FEDERATED},
}


def build(name, init=1.0):
    comm = SimComm(N, link=LINK)
    params = torch.full((N, D), init, dtype=torch.float64)
    return comm, params, make_method(name, comm, params, **copy.deepcopy(HYPER[name]))  # fresh stateful parts


def advance(method, steps):
    """``steps`` steps (or rounds) of least squares: worker i's data are (A_i, B_i)."""
    for _ in range(steps):
        if callable(getattr(method, "round", None)):
            if METHODS["spsa"] is type(method):
                method.round(lambda p, machine, t: 0.5 * (torch.einsum("md,skd->skm", A[machine], p) - B[machine])
                             .square().mean(dim=-1))
            else:
                method.round(lambda y, clients, t, k: torch.einsum(
                    "lmd,lm->ld", A[clients], torch.einsum("lmd,ld->lm", A[clients], y) - B[clients]) / 8)
        else:
            x = method.params.detach()
            residual = torch.einsum("lmd,ld->lm", A[:N], x) - B[:N]
            method.step(torch.einsum("lmd,lm->ld", A[:N], residual) / 8)


def test_every_method_class_is_registered_under_one_name():
    assert len(set(METHODS.values())) == len(METHODS) and set(HYPER) == set(METHODS)
    assert all(issubclass(cls, Method) for cls in METHODS.values())
    with pytest.raises(ValueError, match="unknown method 'diloko'; the methods are async_diloco, co2, data_parallel"):
        make_method("diloko", SimComm(2), torch.zeros(2, 3))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_checkpoint_resumes_bit_for_bit(name):
    comm, params, straight = build(name)
    advance(straight, 10)
    straight.finish()

    _, _, first = build(name)
    advance(first, 4)  # streaming DiLoCo has a fragment in flight here, CO2 its stale average
    blob = io.BytesIO()
    torch.save(first.state_dict(), blob)
    blob.seek(0)
    _, resumed_params, resumed = build(name, init=0.0)
    resumed.load_state_dict(torch.load(blob))
    advance(resumed, 6)
    resumed.finish()

    assert not torch.equal(params, torch.ones_like(params))  # it trained
    assert torch.equal(resumed_params, params)
    assert resumed.summary() == straight.summary() and set(straight.summary()) == SUMMARY_KEYS
    assert [(e.step, e.kind, e.bytes, e.start, e.finish) for e in resumed.events] == \
        [(e.step, e.kind, e.bytes, e.start, e.finish) for e in straight.events]
    assert math.isfinite(straight.summary()["clock"]) and straight.summary()["steps"] == 10


def test_a_checkpoint_of_another_method_is_refused():
    _, _, diloco = build("diloco")
    _, _, noloco = build("noloco")
    with pytest.raises(ValueError, match="saved by 'DiLoCo', not NoLoCo"):
        noloco.load_state_dict(diloco.state_dict())
