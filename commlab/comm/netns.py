"""A real slow link on one machine: two network namespaces joined by a rate-limited veth pair.

Two processes in different namespaces talk over a virtual ethernet cable whose two ends each have
their own address, so ``torch.distributed`` (gloo) sends its bytes through the kernel's network
stack, and ``tc``'s token-bucket filter holds each direction to ``rate`` bit/s::

    with veth_link(rate=100e6) as link:                   # needs root, iproute2 (ip, tc)
        results = run_ranks(link, "commlab.train.ddp",
                            ["--scheme", "topk", "--steps", "300", "--log-file", "runs/topk.jsonl"],
                            timeout=600)
    [r.returncode for r in results]                         # [0, 0]

:func:`veth_link` creates a uniquely named pair of namespaces (``<prefix><pid>x<hex>a`` / ``…b``),
a veth pair with one end in each (``link.devices``, addresses ``link.addresses`` on a /30),
brings the ends and the namespaces' loopbacks up and, with ``rate``, puts a ``tbf`` qdisc on *both*
ends (egress shaping; a full-duplex link of ``rate`` each way). On the way out, also after an
exception or an interrupt, it deletes both namespaces, which removes the veth pair with them.
Nothing touches the host's own interfaces, routes or firewall: traffic exists only between the two
namespaces.

:func:`run_ranks` starts one ``torchrun`` agent (``python -m torch.distributed.run``, the module
behind the ``torchrun`` script) in each namespace with ``--nnodes 2 --node-rank R
--nproc-per-node 1 --master-addr <address of side 0> --master-port P`` and
``GLOO_SOCKET_IFNAME`` set to that side's veth end, waits for both within ``timeout`` seconds
(killing both process trees at the deadline), and returns their exit codes and output.

Shaping parameters (``tc-tbf(8)``): ``burst`` is the bucket size in bytes (default: 10 ms worth of
``rate``, at least 32 KiB, so the kernel timer resolution does not lower the achieved rate), and
``queue`` the most time a packet may wait in the queue before it is dropped (default 0.5 s, deep
enough that TCP is paced rather than losing packets).
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from commlab._checks import check_int, check_positive

SUBNET = "10.231.0.{}/30"
"""Addresses of the two ends (.1 and .2); private to the namespaces, so the same for every pair."""


_RENDEZVOUS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                         "MASTER_PORT", "TORCHELASTIC_RUN_ID")
"""Left out of the inherited environment, so a caller that is itself a torchrun worker starts a fresh world."""


class NetnsError(RuntimeError):
    """Setting up or tearing down the namespaces failed, or the ranks did not finish cleanly."""


@dataclass(frozen=True)
class VethLink:
    """A live pair of namespaces joined by a veth pair (made by :func:`veth_link`).

    Attributes:
        namespaces: ``(ns0, ns1)`` names, for ``ip netns exec``.
        devices: ``(dev0, dev1)`` the veth end inside each namespace.
        addresses: ``(ip0, ip1)`` their IPv4 addresses.
        rate: the shaped rate in bit/s each way, or None when unshaped.
    """

    namespaces: tuple[str, str]
    devices: tuple[str, str]
    addresses: tuple[str, str]
    rate: float | None

    def command(self, side: int, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside namespace ``side`` (0 or 1)."""
        side = check_int("side", side, low=0, high=1)
        return ["ip", "netns", "exec", self.namespaces[side], *argv]


@dataclass
class RankResult:
    """How one rank's process ended: ``returncode`` (None if killed at the deadline), its output."""

    rank: int
    returncode: int | None
    output: str
    timed_out: bool
    seconds: float


def require_tools(shaping: bool = True) -> None:
    """Raise :class:`NetnsError` unless this process is root and ``ip`` (and ``tc``) are installed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise NetnsError("network namespaces and tc need root (run as root, or with CAP_NET_ADMIN and CAP_SYS_ADMIN)")
    for tool in ("ip", "tc") if shaping else ("ip",):
        if shutil.which(tool) is None:
            raise NetnsError(f"'{tool}' was not found on PATH; install iproute2 (Debian: apt-get install iproute2)")


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")


@contextmanager
def veth_link(rate: float | None = None, *, burst: int | None = None, queue: float = 0.5,
              prefix: str = "cl") -> Iterator[VethLink]:
    """Two fresh namespaces joined by a veth pair, shaped to ``rate`` bit/s each way; always torn down.

    Args:
        rate: bit/s each way (e.g. ``100e6``), or None for an unshaped veth (no qdisc added).
        burst: token-bucket size in bytes (default max(32 KiB, 10 ms of ``rate``)).
        queue: seconds a packet may wait in the shaper's queue before being dropped (tbf ``latency``).
        prefix: start of the namespace and device names (letters and digits, at most 4 characters).

    Raises:
        NetnsError: not root, ``ip``/``tc`` missing, or a set-up command failed (anything already
            created is removed before the error propagates).
    """
    if rate is not None:
        if isinstance(rate, int | float) and math.isinf(rate):
            raise ValueError("rate must be finite; pass rate=None for an unshaped link")
        rate = check_positive("rate", rate)
        burst = max(32 * 1024, math.ceil(rate / 8 * 0.010)) if burst is None else check_int("burst", burst, low=1600)
        queue = check_positive("queue", queue)
    if not (isinstance(prefix, str) and prefix.isalnum() and 1 <= len(prefix) <= 4):
        raise ValueError(f"prefix must be 1 to 4 letters or digits, got {prefix!r}")
    require_tools(shaping=rate is not None)
    tag = f"{prefix}{os.getpid() % 100000}x{secrets.token_hex(2)}"  # <= 15 characters with the suffix
    namespaces, devices = (f"{tag}a", f"{tag}b"), (f"{tag}a", f"{tag}b")
    addresses = (SUBNET.format(1).split("/")[0], SUBNET.format(2).split("/")[0])
    link = VethLink(namespaces, devices, addresses, rate)
    created: list[str] = []
    try:
        for ns in namespaces:
            _run(["ip", "netns", "add", ns])
            created.append(ns)
        _run(["ip", "link", "add", devices[0], "netns", namespaces[0], "type", "veth",
              "peer", "name", devices[1], "netns", namespaces[1]])
        for side in (0, 1):
            ns, dev = namespaces[side], devices[side]
            _run(["ip", "-n", ns, "addr", "add", SUBNET.format(side + 1), "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            if rate is not None:
                _run(link.command(side, ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate:.0f}bit",
                                         "burst", str(burst), "latency", f"{queue * 1000:.0f}ms"]))
        yield link
    finally:
        _kill_all(link)
        failures = []
        for ns in created:
            done = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                failures.append(f"{ns}: {done.stderr.strip()}")
        if failures and sys.exc_info()[0] is None:
            raise NetnsError(f"could not delete the namespaces: {'; '.join(failures)}")


def run_ranks(link: VethLink, module: str, args: Sequence[str] = (), *, timeout: float = 600.0,
              port: int = 29500, env: dict[str, str] | None = None, threads: int = 1,
              check: bool = True) -> list[RankResult]:
    """Run ``python -m <module> <args>`` as a world of two ranks, rank r in namespace r, via torchrun.

    Args:
        link: a live :class:`VethLink`.
        module: the training module, e.g. ``"commlab.train.ddp"``.
        args: its command-line arguments (the same on both ranks).
        timeout: seconds for both ranks together; at the deadline every process in the two
            namespaces is killed (torchrun puts its workers in sessions of their own).
        port: the rendezvous port on side 0's address.
        env: extra environment variables for both ranks.
        threads: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` of each rank.
        check: raise :class:`NetnsError` (with the tail of each rank's output) unless both exit 0.

    Returns:
        One :class:`RankResult` per rank, rank 0 first.
    """
    timeout = check_positive("timeout", timeout)
    port = check_int("port", port, low=1024, high=65535)
    threads = check_int("threads", threads, low=1)
    if not isinstance(module, str) or not module:
        raise ValueError(f"module must be a module name such as 'commlab.train.ddp', got {module!r}")
    with tempfile.TemporaryDirectory(prefix="commlab-netns-") as folder:
        logs = [open(Path(folder) / f"rank{rank}.log", "w+") for rank in (0, 1)]  # noqa: SIM115 (closed below)
        started = time.perf_counter()
        processes = []
        for rank in (0, 1):
            argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
                    "--nproc-per-node", "1", "--master-addr", link.addresses[0], "--master-port", str(port),
                    "-m", module, *map(str, args)]
            inherited = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS_VARIABLES}
            environment = {**inherited, **(env or {}), "GLOO_SOCKET_IFNAME": link.devices[rank],
                           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            processes.append(subprocess.Popen(link.command(rank, argv), env=environment, stdout=logs[rank],
                                              stderr=subprocess.STDOUT))
        timed_out, ended = [False, False], [0.0, 0.0]
        for rank, process in enumerate(processes):
            try:
                process.wait(timeout=max(0.0, timeout - (time.perf_counter() - started)))
            except subprocess.TimeoutExpired:
                timed_out[rank] = True
                _kill_all(link)
                process.wait()
            ended[rank] = time.perf_counter() - started
        results = []
        for rank, (process, log) in enumerate(zip(processes, logs, strict=True)):
            log.seek(0)
            results.append(RankResult(rank, None if timed_out[rank] else process.returncode, log.read(),
                                      timed_out[rank], ended[rank]))
            log.close()
    if check and any(r.returncode != 0 for r in results):
        described = "\n".join(f"--- rank {r.rank}: {_ending(r, timeout)}\n{_tail(r.output)}" for r in results)
        raise NetnsError(f"the two ranks did not both finish cleanly:\n{described}")
    return results


def _kill_all(link: VethLink) -> None:
    """SIGKILL every process inside the link's two namespaces (only this module starts any there)."""
    for ns in link.namespaces:
        done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
        for pid in done.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ending(result: RankResult, timeout: float) -> str:
    return f"killed at the {timeout:.0f} s deadline" if result.timed_out else f"exit status {result.returncode}"


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])
