"""The simulated data-parallel trainer: exactness of the dense scheme, the clock, the bytes, the errors."""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from commlab.comm import Link, SimComm
from commlab.distributed.powersgd import PowerSGDReducer
from commlab.distributed.schemes import gradient_scheme
from commlab.seeding import seeded_init
from commlab.train.ddp_simulator import DataParallelTrainer, History, fit_interleaved, time_to_accuracy

N_ITEMS, SIDE, CLASSES = 96, 4, 3


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(N_ITEMS, 1, SIDE, SIDE, generator=generator)
    labels = torch.randint(CLASSES, (N_ITEMS,), generator=generator)
    shards = [np.arange(0, N_ITEMS, 2), np.arange(1, N_ITEMS, 2)]
    return images, labels, shards


def model(seed: int = 0) -> nn.Module:
    with seeded_init(seed):
        return nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 8), nn.Tanh(), nn.Linear(8, CLASSES))


def trainer(data, scheme="none", link=None, **kwargs) -> DataParallelTrainer:
    images, labels, shards = data
    kwargs = {"batch_size": 8, "lr": 0.1, "momentum": 0.9, "seed": 3, **kwargs}
    return DataParallelTrainer(model(), scheme, SimComm(2, link=link), images, labels, shards, **kwargs)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dense_scheme_is_single_process_sgd_on_the_concatenated_batch(data):
    images, labels, _ = data
    sim = trainer(data, "none")
    reference = model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for step in range(6):
        index = torch.cat([sim.batch_indices(step, worker) for worker in range(2)])
        optimizer.zero_grad()
        F.cross_entropy(reference(images[index]), labels[index]).backward()
        optimizer.step()
        sim.step()
    for mine, theirs in zip(sim.model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)


def test_workers_take_their_own_shards(data):
    sim = trainer(data)
    for worker, shard in enumerate(data[2]):
        assert set(sim.batch_indices(0, worker).tolist()) <= set(shard.tolist())
    assert not torch.equal(sim.batch_indices(0, 0), sim.batch_indices(1, 0))


@pytest.mark.parametrize("scheme", ["none", "topk"])
def test_link_time_is_the_link_model_of_each_collective(data, scheme):
    """With a timer that never moves, the clock is pure link time: one collective per step."""
    steps, d = 4, n_params(model())
    times = {}
    for bandwidth in (1e9, 1e6):
        link = Link(bandwidth=bandwidth, latency=1e-3)
        sim = trainer(data, scheme, link=link, timer=lambda: 0.0)
        history = sim.fit(steps, data[:2], eval_every=steps)
        if scheme == "none":
            expected = steps * link.seconds("all_reduce", 4 * d, 2)
        else:
            expected = steps * link.seconds("all_gather", history.bytes_per_step[-1], 2)
        assert history.compute_seconds[-1] == 0.0
        assert history.sim_seconds[-1] == pytest.approx(expected, rel=1e-9)
        times[bandwidth] = history.sim_seconds[-1]
    assert times[1e6] > times[1e9] > 0


def test_clock_adds_measured_computation_to_link_time(data):
    link = Link(bandwidth=1e6)
    sim = trainer(data, "none", link=link)
    history = sim.fit(3, data[:2], eval_every=1)
    link_time = 3 * link.seconds("all_reduce", 4 * n_params(model()), 2)
    assert all(b > a for a, b in zip(history.compute_seconds, history.compute_seconds[1:], strict=False))
    assert history.sim_seconds[-1] == pytest.approx(history.compute_seconds[-1] + link_time, rel=1e-9)
    assert history.seconds("compute") is history.compute_seconds


@pytest.mark.parametrize("scheme", ["none", "topk", "powersgd", "sign"])
def test_bytes_per_step_are_the_payload_bits_rounded_up_to_bytes(data, scheme):
    d = n_params(model())
    sim = trainer(data, scheme, start_iter=2)
    history = sim.fit(4, data[:2], eval_every=1)
    made = gradient_scheme(scheme)
    if isinstance(made, PowerSGDReducer):
        bits = made.bits([p.shape for p in model().parameters()])
    else:
        bits = made.compressor.compress(torch.randn(1, d), torch.Generator().manual_seed(0)).row_bits[0]
    assert math.isnan(history.bytes_per_step[0])
    assert history.bytes_per_step[1:3] == [4 * d, 4 * d]  # the dense warm-up, as in the DDP hook
    assert history.bytes_per_step[3:] == [math.ceil(bits / 8)] * 2
    assert history.bytes_per_worker[-1] == sum(history.bytes_per_step[1:])
    if scheme == "none":
        assert bits == 32 * d


def test_fit_records_every_evaluation_and_can_stop_at_a_target(data):
    sim = trainer(data)
    history = sim.fit(10, data[:2], eval_every=4)
    assert history.step == [0, 4, 8, 10]
    assert math.isnan(history.train_loss[0]) and all(np.isfinite(history.train_loss[1:]))
    assert set(history.as_dict()) == {"step", "sim_seconds", "compute_seconds", "test_accuracy", "train_loss",
                                      "bytes_per_worker", "bytes_per_step"}
    early = trainer(data).fit(10, data[:2], eval_every=2, stop_at=0.0)
    assert early.step == [0, 2]


def test_interleaved_training_equals_separate_runs(data):
    alone = {scheme: trainer(data, scheme).fit(6, data[:2], eval_every=3) for scheme in ("none", "sign")}
    together = fit_interleaved({scheme: trainer(data, scheme) for scheme in ("none", "sign")}, 6, data[:2],
                               eval_every=3)
    for scheme, history in alone.items():
        assert together[scheme].step == history.step == [0, 3, 6]
        assert together[scheme].test_accuracy == history.test_accuracy
        assert together[scheme].train_loss == history.train_loss
        assert together[scheme].bytes_per_worker == history.bytes_per_worker
    stopped = fit_interleaved({"a": trainer(data), "b": trainer(data, lr=1e-9)}, 6, data[:2], eval_every=3,
                              stop_at=0.0)
    assert stopped["a"].step == stopped["b"].step == [0, 3]
    with pytest.raises(TypeError, match="trainers"):
        fit_interleaved({}, 6, data[:2])
    with pytest.raises(TypeError, match="trainers"):
        fit_interleaved({"a": object()}, 6, data[:2])


def test_default_timer_is_thread_cpu_time_on_one_thread(data):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert trainer(data).timer is time.thread_time
        torch.set_num_threads(2)
        assert trainer(data).timer is time.perf_counter
    finally:
        torch.set_num_threads(threads)


def test_time_to_accuracy_is_the_first_crossing():
    assert time_to_accuracy([0, 1, 2, 3], [0.1, 0.8, 0.7, 0.9], 0.75) == 1
    assert time_to_accuracy([0, 1, 2], [0.1, 0.5, 0.6], 0.75) == math.inf
    history = History("x", step=[0, 5], sim_seconds=[0.0, 2.0], compute_seconds=[0.0, 1.0], test_accuracy=[0.1, 0.9])
    assert history.time_to(0.5) == 2.0 and history.time_to(0.5, "compute") == 1.0
    with pytest.raises(ValueError, match="clock"):
        history.time_to(0.5, "wall")
    with pytest.raises(ValueError, match="equal length"):
        time_to_accuracy([0, 1], [0.5], 0.5)
    with pytest.raises(ValueError, match="target"):
        time_to_accuracy([0, 1], [0.5, 0.6], 1.5)


def test_bad_arguments_are_clear_errors(data):
    images, labels, shards = data
    with pytest.raises(ValueError, match="name"):
        trainer(data, "nope")
    with pytest.raises(TypeError, match="scheme"):
        trainer(data, 3)
    with pytest.raises(ValueError, match="one index array per worker"):
        DataParallelTrainer(model(), "none", SimComm(3), images, labels, shards)
    with pytest.raises(TypeError, match="SimComm"):
        DataParallelTrainer(model(), "none", object(), images, labels, shards)
    with pytest.raises(TypeError, match="Module"):
        DataParallelTrainer("model", "none", SimComm(2), images, labels, shards)
    with pytest.raises(ValueError, match="labels"):
        DataParallelTrainer(model(), "none", SimComm(2), images, labels[:-1], shards)
    with pytest.raises(ValueError, match=r"shards\[1\]"):
        DataParallelTrainer(model(), "none", SimComm(2), images, labels, [shards[0], np.array([0, N_ITEMS])])
    with pytest.raises(ValueError, match="batch_size"):
        trainer(data, batch_size=0)
    with pytest.raises(ValueError, match="batch_size=64"):
        trainer(data, batch_size=64)
    with pytest.raises(ValueError, match="momentum"):
        trainer(data, momentum=1.0)
    with pytest.raises(ValueError, match="lr"):
        trainer(data, lr=0.0)
    with pytest.raises(ValueError, match="start_iter"):
        trainer(data, start_iter=-1)
    with pytest.raises(TypeError, match="timer"):
        trainer(data, timer=0.0)
    sim = trainer(data)
    with pytest.raises(ValueError, match="steps"):
        sim.fit(0, data[:2])
    with pytest.raises(ValueError, match="eval_every"):
        sim.fit(1, data[:2], eval_every=0)
    with pytest.raises(ValueError, match="stop_at"):
        sim.fit(1, data[:2], stop_at=2.0)
