"""The rate-limited veth link between two network namespaces, and two torchrun ranks across it.

The checks of the environment run everywhere; the real link needs root, iproute2 and the right to
make namespaces (a probe tries one), and is skipped without them.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from commlab.comm import netns
from commlab.comm.netns import NetnsError, run_ranks, veth_link


def _can_make_namespaces() -> bool:
    """Root, iproute2, and the right to make a namespace (containers may lack CAP_NET_ADMIN)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("ip") and shutil.which("tc")):
        return False
    try:
        with veth_link(prefix="clpb"):
            return True
    except NetnsError:
        return False


CAN_RUN = _can_make_namespaces()
needs_root = pytest.mark.skipif(not CAN_RUN, reason="needs root, iproute2 (ip, tc) and CAP_NET_ADMIN")

SERVER = """
import socket
s = socket.socket(); s.bind(("0.0.0.0", 5201)); s.listen(1)
c, _ = s.accept()
while c.recv(1 << 20):
    pass
c.sendall(b"k")
"""
CLIENT = """
import socket, sys, time
n = int(sys.argv[2]); c = socket.create_connection((sys.argv[1], 5201), timeout=20); t = time.perf_counter()
c.sendall(bytes(n)); c.shutdown(socket.SHUT_WR); c.recv(1); print(n * 8 / (time.perf_counter() - t))
"""


def namespaces() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()


def throughput(link, nbytes: int) -> float:
    """Bit/s of one TCP transfer of ``nbytes`` from side 0 to side 1."""
    server = subprocess.Popen(link.command(1, [sys.executable, "-c", SERVER]))
    try:
        for _ in range(50):  # wait until the server listens
            probe = subprocess.run(link.command(1, ["ss", "-ltn"]), capture_output=True, text=True)
            if ":5201" in probe.stdout or probe.returncode != 0:
                break
            time.sleep(0.1)
        time.sleep(0.2)
        done = subprocess.run(link.command(0, [sys.executable, "-c", CLIENT, link.addresses[1], str(nbytes)]),
                              capture_output=True, text=True, timeout=60, check=True)
        return float(done.stdout)
    finally:
        server.kill()
        server.wait()


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match="root"), veth_link(100e6):
        pass


@pytest.mark.parametrize("missing", ["ip", "tc"])
def test_missing_tools_are_a_clear_error(monkeypatch, missing):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == missing else f"/sbin/{tool}")
    with pytest.raises(NetnsError, match=f"'{missing}' was not found"), veth_link(100e6):
        pass


def test_unshaped_link_does_not_need_tc(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "tc" else f"/sbin/{tool}")
    netns.require_tools(shaping=False)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rate": 0}, "rate"), ({"rate": float("inf")}, "rate=None"), ({"rate": 1e6, "burst": 10}, "burst"),
    ({"rate": 1e6, "queue": 0}, "queue"), ({"prefix": "a-b"}, "prefix"), ({"prefix": "toolong"}, "prefix"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match), veth_link(**kwargs):
        pass


@needs_root
def test_rate_limit_holds_and_namespaces_are_removed():
    with veth_link(rate=40e6) as link:
        assert set(link.namespaces) <= set(namespaces())
        rate = throughput(link, 3_000_000)  # 0.6 s at 40 Mbit/s
    # the shaper caps the rate (unshaped, a veth pair carries several Gbit/s); the loose lower bound
    # only catches a shaper set far too low, since a busy machine may be slower than the link
    assert 0.5 * 40e6 < rate < 1.05 * 40e6
    assert not set(link.namespaces) & set(namespaces())


@needs_root
def test_namespaces_are_removed_after_an_error():
    with pytest.raises(RuntimeError, match="boom"), veth_link() as link:
        raise RuntimeError("boom")
    assert not set(link.namespaces) & set(namespaces())


@needs_root
def test_two_ranks_train_across_the_link(tmp_path):
    log = tmp_path / "none.jsonl"
    args = ["--scheme", "none", "--steps", "4", "--eval-every", "2", "--train-n", "200", "--test-n", "100",
            "--batch-size", "16", "--timeout", "30", "--log-file", log]
    with veth_link() as link:
        results = run_ranks(link, "commlab.train.ddp", args, timeout=120)
    assert [r.returncode for r in results] == [0, 0]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["step"] == 4 and records[-1]["world_size"] == 2
    assert records[-1]["bytes_per_step"] == 4 * 114_314


@needs_root
def test_ranks_past_the_deadline_are_killed_and_reported():
    with veth_link() as link:
        with pytest.raises(NetnsError, match="deadline"):
            run_ranks(link, "commlab.train.ddp", ["--steps", "1000"], timeout=1.0)
        leftover = [subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
                    for ns in link.namespaces]
    assert leftover == [[], []]
    with pytest.raises(ValueError, match="module"), veth_link() as link:
        run_ranks(link, "", timeout=1.0)
