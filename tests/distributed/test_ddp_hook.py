"""The compressed DDP communication hook on real gloo processes (CPU, world size 2-3, bounded waits)."""

import functools
import math

import hook_workers
import pytest
import torch

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.compress import RandK, TopK
from commlab.compress.ef import EF14, Plain
from commlab.compress.quantize import Identity
from commlab.distributed.compressed import compressed_round
from commlab.distributed.ddp_hook import CompressionHookState, register_compression
from commlab.distributed.schemes import gradient_scheme
from commlab.train.ddp import TrainConfig, load_data, make_model, shards
from commlab.train.ddp_simulator import DataParallelTrainer

SEED = 3
D = 114_314  # SmallCNN's parameters: one DDP bucket


def ok(results):
    for r in results:
        assert r.status == "ok", f"rank {r.rank}: {r.status} {r.error}\n{r.traceback}"
    return [r.value for r in results]


@pytest.fixture(scope="module")
def hooked():
    """Three ranks, four iterations (two dense, two compressed), parameters fixed."""
    return ok(run_workers(hook_workers.hooked_gradients, 3, (SEED, 4, 2), timeout=60))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", ["none", "topk_full"])
def test_lossless_hooks_give_plain_ddp_mean_gradient(hooked, name):
    # "none" (Plain(Identity()), all-reduced) and EF14(TopK(ratio=1)) (all-gathered) must reproduce
    # DDP's own mean gradient, before and after start_iter; 3 ranks so a wrong divisor shows.
    for value in hooked:
        for step, (plain, mine) in enumerate(zip(value["grads"]["plain"], value["grads"][name], strict=True)):
            torch.testing.assert_close(mine, plain, rtol=0, atol=1e-6, msg=f"{name}, step {step}")


@pytest.mark.timeout(90)
def test_topk_hook_equals_simcomm_compressed_round_bitwise(hooked):
    # The hook's output at each compressed iteration equals compressed_round on SimComm(3) fed the
    # three ranks' bucket buffers, with one EF14(TopK) mechanism carried across iterations: bitwise.
    logs = [value["log"] for value in hooked]
    assert [(it, index) for it, index, _, _ in logs[0]] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    mechanism = hook_workers.TOPK_FACTORY()
    for entries in zip(*logs, strict=True):
        iteration = entries[0][0]
        before = torch.stack([entry[2] for entry in entries])
        if iteration < 2:  # dense warm-up: the mean
            expected = SimComm(3).all_reduce(before, "mean").wait()[0]
            for entry in entries:
                torch.testing.assert_close(entry[3], expected, rtol=0, atol=1e-6)
        else:
            expected, _ = compressed_round(SimComm(3), mechanism, before)
            for entry in entries:
                assert torch.equal(entry[3], expected), f"iteration {iteration}"
    assert all(value["iterations"] == 4 for value in hooked)


def wire_bytes(compressor) -> int:
    """Bytes of one packed SmallCNN bucket: the compressor's bits rounded up."""
    return math.ceil(compressor.compress(torch.randn(D)).bits / 8)


@pytest.mark.timeout(90)
def test_hook_meter_counts_dense_warmup_and_compressor_bytes(hooked):
    dense = 4 * D  # float32 all-reduce
    for value in hooked:
        meters = value["meters"]
        assert meters["none"]["bytes_per_worker"] == 4 * dense and meters["none"]["calls"] == {"all_reduce": 4}
        for name, compressor in (("topk_full", TopK(1.0)), ("topk", TopK(0.05))):
            assert meters[name]["calls"] == {"all_reduce": 2, "all_gather": 2}
            assert meters[name]["bytes_per_worker"] == 2 * dense + 2 * wire_bytes(compressor)
    assert wire_bytes(TopK(1.0)) == math.ceil(33 * D / 8)  # all values + a d-bit bitmap of positions
    assert wire_bytes(TopK(0.05)) < dense / 10


@pytest.mark.timeout(90)
def test_checkpoint_and_pickle_round_trip_and_resume_exactly():
    results = ok(run_workers(hook_workers.checkpoint_resume, 2, (SEED,), timeout=60))
    e_saved = torch.cat([value["saved"]["buckets"][0]["mechanism"]["e"] for value in results])  # [2, d]
    for value in results:
        saved = value["saved"]
        assert saved["iteration"] == 4 and saved["meter"]["calls"] == {"all_reduce": 2, "all_gather": 2}
        for other in (value["loaded"], value["unpickled"]):
            assert other["iteration"] == saved["iteration"] and other["buckets"].keys() == saved["buckets"].keys()
            assert other["buckets"][0]["layout"] == saved["buckets"][0]["layout"]
            assert torch.equal(other["buckets"][0]["mechanism"]["e"], saved["buckets"][0]["mechanism"]["e"])
            assert torch.equal(other["meter"]["bytes_sent"], saved["meter"]["bytes_sent"])
        assert value["dropped"] == {"comm": True, "process_group": True}
        assert value["iteration"] == 6
        # the fresh DDP model's first iteration runs on its provisional buckets (parameters in
        # registration order, not the saved gradient-ready order): reduced densely, state kept
        assert value["bytes_after"] - value["bytes_before"] == 4 * D + wire_bytes(TopK(0.05))
        assert value["mismatch"] is not None and "another model or bucket size" in value["mismatch"]
    # the resumed compressed iteration continues from the saved error-feedback memory, bitwise
    mechanism = hook_workers.TOPK_FACTORY()
    mechanism.load_state_dict({"e": e_saved})
    dense_entries, compressed_entries = zip(*[value["log"] for value in results], strict=True)
    assert all(entry[:2] == (4, 0) for entry in dense_entries) and all(e[:2] == (5, 0) for e in compressed_entries)
    dense_mean = torch.stack([entry[2] for entry in dense_entries]).mean(dim=0)
    for entry in dense_entries:
        torch.testing.assert_close(entry[3], dense_mean, rtol=0, atol=1e-6)
    expected, _ = compressed_round(SimComm(2), mechanism, torch.stack([entry[2] for entry in compressed_entries]))
    for entry in compressed_entries:
        assert torch.equal(entry[3], expected)


# Chosen before the first run: after 80 steps of Top-k 1% + EF on 2 workers the real run's test
# accuracy is within 0.03 of the simulated one, and above 0.5 (chance: 0.1).
BAND = 0.03
FLOOR = 0.5


def simulate(cfg: TrainConfig, world_size: int) -> float:
    """The same run on SimComm with the library's simulator: same data, shards, batches, init, warm-up."""
    train_x, train_y, test_x, test_y = load_data(cfg)
    trainer = DataParallelTrainer(make_model(cfg), cfg.scheme, SimComm(world_size), train_x, train_y,
                                  shards(cfg, world_size), batch_size=cfg.batch_size, lr=cfg.lr,
                                  momentum=cfg.momentum, seed=cfg.seed, start_iter=cfg.start_iter, ratio=cfg.ratio)
    return trainer.fit(cfg.steps, (test_x, test_y), eval_every=cfg.steps).test_accuracy[-1]


@pytest.mark.timeout(120)
def test_compressed_ddp_trains_to_the_simulated_accuracy_band():
    config = dict(scheme="topk", ratio=0.01, steps=80, batch_size=32, lr=0.05, momentum=0.9, seed=SEED,
                  train_n=3000, test_n=1000, eval_every=80)
    records = ok(run_workers(hook_workers.train_entry, 2, (config,), timeout=90))[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        simulated = simulate(TrainConfig(**config), 2)
    finally:
        torch.set_num_threads(threads)
    distributed = records[-1]["test_accuracy"]
    print(f"accuracy after 80 steps: distributed {distributed:.4f}, simulated {simulated:.4f}")
    assert records[-1]["step"] == 80
    assert distributed >= FLOOR
    assert abs(distributed - simulated) <= BAND


# -- argument checks (no process group needed) --------------------------------------------------------


def test_start_iter_below_one_is_refused():
    with pytest.raises(ValueError, match="start_iter must be >= 1"):
        CompressionHookState(functools.partial(gradient_scheme, "topk"), seed=0, start_iter=0)


@pytest.mark.parametrize("factory, error, match", [
    (lambda: TopK(0.1), TypeError, "must return a commlab.compress.ef Mechanism"),
    ("topk", TypeError, "factory must be a callable"),
    (functools.partial(lambda m: m, Plain(Identity())), ValueError, "new mechanism on every call"),
])
def test_a_factory_that_does_not_make_fresh_mechanisms_is_refused(factory, error, match):
    with pytest.raises(error, match=match):
        CompressionHookState(factory, seed=0)


def test_register_needs_a_ddp_model_and_randomness_sharing_follows_the_compressor():
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        register_compression(torch.nn.Linear(2, 2), functools.partial(gradient_scheme, "none"), seed=0)
    shared = {name: CompressionHookState(functools.partial(gradient_scheme, name), seed=0).shared_randomness
              for name in ("none", "topk", "powersgd", "sign")}
    assert shared == {"none": False, "topk": False, "powersgd": True, "sign": False}
    shared_randk = functools.partial(EF14, RandK(0.1, shared=True))
    assert CompressionHookState(shared_randk, seed=0).shared_randomness
    assert not CompressionHookState(functools.partial(EF14, RandK(0.1)), seed=0).shared_randomness
    with pytest.raises(TypeError, match="shared_randomness"):
        CompressionHookState(functools.partial(EF14, TopK(0.1)), seed=0, shared_randomness="yes")


@pytest.mark.timeout(120)
def test_overlapped_hooks_return_before_the_communication_and_give_the_same_gradients(tmp_path):
    results = ok(run_workers(hook_workers.overlap_pairs, 2, (SEED, 4, str(tmp_path / "flag")), timeout=100))
    assert results[0]["pending"] == [True]  # the peer had not started its backward pass yet
    for scheme, out in results[0]["schemes"].items():
        assert out["buckets"] == 2, scheme  # DDP's 0.1 MB buckets: the overlap has something to overlap
        for step, (a, b) in enumerate(zip(out["grads"][True], out["grads"][False], strict=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{scheme}, step {step}")
        assert out["bytes"][True] == out["bytes"][False]
