"""``python -m commlab.train.ddp`` under torchrun, alone, and its command line (CPU, gloo)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import hook_workers
import pytest
import torch

from commlab.comm.launch import run_workers
from commlab.compress import TopK
from commlab.train.ddp import TrainConfig, parse_config

D = 114_314  # SmallCNN's parameters
SMALL = ["--steps", "6", "--eval-every", "3", "--train-n", "400", "--test-n", "200", "--batch-size", "16",
         "--timeout", "20"]


def environment():
    """This environment without a torchrun rendezvous of our own, one thread per process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(command, log: Path) -> list[dict]:
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def torchrun_logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchrun")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    logs = {}
    for scheme in ("none", "topk"):
        log = folder / f"{scheme}.jsonl"
        logs[scheme] = run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "commlab.train.ddp",
                            "--scheme", scheme, "--ratio", "0.01", "--log-file", str(log), *SMALL], log)
    return logs


@pytest.mark.timeout(150)
def test_torchrun_two_processes_write_the_json_log(torchrun_logs):
    topk_bytes = math.ceil(TopK(0.01).compress(torch.randn(D)).bits / 8)
    for scheme, records in torchrun_logs.items():
        assert [r["step"] for r in records] == [0, 3, 6]
        assert all(r["scheme"] == scheme and r["world_size"] == 2 for r in records)
        assert all(0 <= r["test_accuracy"] <= 1 for r in records)
        assert records[0]["train_loss"] is None and all(math.isfinite(r["train_loss"]) for r in records[1:])
        assert records[0]["bytes_sent"] == 0 and records[-1]["bytes_sent"] > 0
        walls = [r["wall_s"] for r in records]
        assert walls == sorted(walls)
    none, topk = torchrun_logs["none"][-1], torchrun_logs["topk"][-1]
    assert none["bytes_sent"] == 6 * 4 * D and none["bytes_per_step"] == 4 * D
    assert topk["bytes_sent"] == 2 * 4 * D + 4 * topk_bytes and topk["bytes_per_step"] == topk_bytes
    assert topk["bytes_sent"] < none["bytes_sent"] / 2


@pytest.mark.timeout(90)
def test_without_torchrun_it_trains_as_a_world_of_one(tmp_path):
    log = tmp_path / "one.jsonl"
    records = run([sys.executable, "-m", "commlab.train.ddp", "--scheme", "sign", "--log", str(log),
                   *SMALL], log)
    assert [r["step"] for r in records] == [0, 3, 6]
    assert all(r["world_size"] == 1 for r in records) and records[-1]["bytes_sent"] > 0


@pytest.mark.timeout(90)
def test_target_accuracy_stops_every_rank_at_the_same_evaluation():
    config = dict(scheme="powersgd", steps=40, eval_every=2, train_n=400, test_n=200, batch_size=16,
                  target_accuracy=0.01, seed=1)
    results = run_workers(hook_workers.train_entry, 2, (config,), timeout=60)
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    assert [r["step"] for r in results[0].value] == [0, 2] == [r["step"] for r in results[1].value]


def test_command_line_options_and_their_checks():
    config = parse_config(["--scheme", "powersgd", "--rank", "4", "--batch-size", "8", "--log-file", "x.jsonl"])
    assert (config.scheme, config.rank, config.batch_size, config.log, config.threads) == ("powersgd", 4, 8,
                                                                                          "x.jsonl", 1)
    assert config.factory()().rank == 4
    with pytest.raises(SystemExit):
        parse_config(["--scheme", "randk"])
    for bad, match in ((["--steps", "0"], "steps"), (["--ratio", "1.5"], "ratio"),
                       (["--target-accuracy", "2"], "target_accuracy"), (["--timeout", "0"], "timeout"),
                       (["--start-iter", "0"], "start_iter"), (["--momentum", "1"], "momentum")):
        with pytest.raises(ValueError, match=match):
            parse_config(bad)


def test_a_configuration_round_trips_through_its_command_line():
    cfg = TrainConfig(scheme="sign", steps=7, target_accuracy=0.5, log="runs/x.jsonl", timeout=60.0)
    assert parse_config(cfg.argv()) == cfg
    assert parse_config(TrainConfig().argv()) == TrainConfig()
