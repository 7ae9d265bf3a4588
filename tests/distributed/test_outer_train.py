"""``python -m commlab.train.outer`` on 2 gloo processes under torchrun agrees with the
same run on a SimComm bit for bit (DiLoCo and NoLoCo), and its command line is checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commlab.comm import SimComm
from commlab.train.outer import OuterConfig, parse_config, train_outer

SMALL = ["--steps", "12", "--sync-every", "4", "--eval-every", "6", "--hidden", "16", "--batch-size", "8", "--timeout",
         "20"]


def environment():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("algo", ["diloco", "noloco"])
def test_torchrun_two_processes_equal_the_simulator(algo, tmp_path):
    log = tmp_path / f"{algo}.jsonl"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "commlab.train.outer",
                           "--algo", algo, "--log-file", str(log), *SMALL],
                          env=environment(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    real = [json.loads(line) for line in log.read_text().splitlines()]
    simulated = train_outer(parse_config(["--algo", algo, *SMALL]), SimComm(2))
    assert [r["step"] for r in real] == [0, 6, 12]
    for got, want in zip(real, simulated, strict=True):
        assert got["hashes"] == want["hashes"]
        for key in ("bytes_per_worker", "syncs", "peak_bytes_per_sync"):
            assert got[key] == want[key], key
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-12)
    assert real[-1]["syncs"] == 3 and real[-1]["test_loss"] < real[0]["test_loss"]
    # step 12 is a synchronisation, after which both replicas are equal (with N = 2, NoLoCo's only pair is
    # everyone); step 6 is between synchronisations, where they differ
    assert len(set(real[-1]["hashes"])) == 1 and len(set(real[1]["hashes"])) == 2
    assert real[0]["hashes"] != real[-1]["hashes"]


def test_the_command_line_is_checked():
    assert parse_config(["--algo", "co2", "--sync-every", "3"]) == OuterConfig(algo="co2", sync_every=3)
    with pytest.raises(SystemExit):
        parse_config(["--algo", "adam"])
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        OuterConfig(sync_every=0)
    with pytest.raises(ValueError, match="mixing"):
        OuterConfig(mixing=2.0)


@pytest.mark.parametrize("algo", ["data_parallel", "streaming_diloco", "co2", "local_sgd"])
def test_every_method_trains_in_the_simulator(algo):
    config = OuterConfig(algo=algo, steps=60, sync_every=6, eval_every=60, hidden=32, lr=3e-3)
    records = train_outer(config, SimComm(3))
    assert records[-1]["test_loss"] < 0.8 * records[0]["test_loss"]
    # Streaming DiLoCo: 2 fragments per period
    assert records[-1]["syncs"] == {"data_parallel": 60, "streaming_diloco": 20}.get(algo, 10)
