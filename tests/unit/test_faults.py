"""Fault injection: real exits and kills (in a forked child), stalls, first attempt only, and the same
schedule as a SimComm Membership."""

import os
import signal
import time

import pytest

from commlab.comm.faults import Fault, Faults


def outcome(faults, replica, step, attempt=0):
    """Run ``faults.inject`` in a forked child; its exit code, or -signal; 0 if it went on."""
    pid = os.fork()
    if pid == 0:
        faults.inject(replica, step, attempt)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_exit_and_kill_happen_for_real_at_their_step_and_attempt_only():
    faults = Faults([Fault(2, at=7, kind="exit"), Fault(1, at=3, kind="kill")])
    assert outcome(faults, 2, 7) == 1
    assert outcome(faults, 1, 3) == -signal.SIGKILL
    assert outcome(faults, 2, 6) == outcome(faults, 0, 7) == 0  # other steps and replicas go on
    assert outcome(faults, 2, 7, attempt=1) == 0  # a restarted replica does not die again


def test_a_stall_sleeps_then_continues():
    faults = Faults([Fault(0, at=2, kind="stall", seconds=0.2)])
    began = time.perf_counter()
    faults.inject(0, 2)
    assert 0.2 <= time.perf_counter() - began < 2.0
    began = time.perf_counter()
    faults.inject(0, 3)
    assert time.perf_counter() - began < 0.1


def test_the_schedule_as_a_membership():
    faults = Faults([Fault(2, at=7, rejoin=12), Fault(1, at=9, kind="kill"), Fault(0, at=4, kind="stall", seconds=1)])
    members = faults.membership(3)
    assert members.active(6) == (0, 1, 2)
    assert members.active(7) == (0, 1) and members.active(9) == (0,)
    assert members.active(12) == (0, 2) and members.joining(12) == (2,)


def test_refusals():
    with pytest.raises(ValueError, match="kind"):
        Fault(0, at=1, kind="crash")
    with pytest.raises(ValueError, match="rejoin must come after"):
        Fault(0, at=5, rejoin=5)
    with pytest.raises(ValueError, match="no rejoin"):
        Fault(0, at=5, kind="stall", rejoin=8)
    with pytest.raises(ValueError, match="one fault per replica and step"):
        Faults([Fault(0, at=1), Fault(0, at=1, kind="kill")])
    with pytest.raises(TypeError, match="Fault objects"):
        Faults([(0, 1)])
    with pytest.raises(ValueError, match="only 2"):
        Faults([Fault(3, at=1)]).membership(2)
