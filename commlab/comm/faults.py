"""Fault injection: a replica dies, stalls, or leaves and rejoins at a given step.

One schedule serves both worlds. In a real replica process (:func:`~commlab.comm.ft_launch.run_replicas`,
:func:`~commlab.comm.launch.run_workers`) the training loop calls :meth:`Faults.inject` before each step,
and the fault happens for real; on :class:`~commlab.comm.communicator.SimComm` the same schedule is a
:class:`~commlab.comm.membership.Membership` (the methods that take one, e.g. SPSA, drop and re-admit
the machine)::

    faults = Faults([Fault(2, at=7, kind="exit", rejoin=12), Fault(1, at=20, kind="stall", seconds=3.0)])
    for step in range(steps):                   # in replica `replica`, process attempt `attempt`
        faults.inject(replica, step, attempt)   # replica 2 exits at step 7 of its first attempt
        ...
    faults.membership(world_size=3)             # SimComm: machine 2 leaves at 7 and joins at 12

Kinds: ``"exit"`` (``os._exit(1)``: no cleanup, sockets closed by the kernel), ``"kill"`` (SIGKILL to
itself), ``"stall"`` (sleeps ``seconds``, e.g. past the collective timeout, then continues). A dead
replica comes back only if its launcher restarts it (``run_replicas(restarts=...)``); ``rejoin`` is the
step at which the simulated one re-joins (None: never). Faults fire in a process's first attempt only,
so a restarted replica does not die again at the same step.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

from commlab._checks import check_choice, check_int, check_nonnegative
from commlab.comm.membership import Membership

KINDS = ("exit", "kill", "stall")


@dataclass(frozen=True)
class Fault:
    """Replica ``replica`` fails before its step ``at`` (0-based) in the way ``kind`` says.

    Attributes:
        replica: the replica (machine) id.
        at: the step before which the fault happens.
        kind: ``"exit"``, ``"kill"`` or ``"stall"``.
        seconds: how long a stall lasts (s).
        rejoin: for ``"exit"`` / ``"kill"``, the step at which it takes part again in a simulation
            (> ``at``), or None.
    """

    replica: int
    at: int
    kind: str = "exit"
    seconds: float = 0.0
    rejoin: int | None = None

    def __post_init__(self):
        check_int("replica", self.replica, low=0)
        check_int("at", self.at, low=0)
        check_choice("kind", self.kind, KINDS)
        check_nonnegative("seconds", self.seconds)
        if self.kind == "stall" and self.rejoin is not None:
            raise ValueError("a stalled replica does not leave, so it has no rejoin step")
        if self.rejoin is not None and check_int("rejoin", self.rejoin, low=0) <= self.at:
            raise ValueError(f"rejoin must come after the fault: at = {self.at}, rejoin = {self.rejoin}")


class Faults:
    """A schedule of :class:`Fault` s (at most one per replica and step)."""

    def __init__(self, faults: Iterable[Fault] = ()):
        self.faults = tuple(faults)
        for fault in self.faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"faults must be Fault objects, got {type(fault).__name__}")
        keys = [(f.replica, f.at) for f in self.faults]
        if len(set(keys)) != len(keys):
            raise ValueError("at most one fault per replica and step")

    def due(self, replica: int, step: int) -> Fault | None:
        """The fault of ``replica`` before ``step``, or None."""
        return next((f for f in self.faults if f.replica == replica and f.at == step), None)

    def inject(self, replica: int, step: int, attempt: int = 0) -> None:
        """In a real replica process: make the fault due before ``step`` happen (first attempt only)."""
        fault = self.due(replica, step)
        if fault is None or check_int("attempt", attempt, low=0) > 0:
            return
        if fault.kind == "exit":
            os._exit(1)
        if fault.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(fault.seconds)

    def membership(self, world_size: int) -> Membership:
        """The schedule for SimComm: a dead replica leaves at ``at`` and joins at ``rejoin`` (stalls
        change nothing here: a simulated replica is never late)."""
        members = Membership.static(check_int("world_size", world_size, low=1))
        for fault in sorted(self.faults, key=lambda f: f.at):
            if fault.replica >= world_size:
                raise ValueError(f"fault names replica {fault.replica}, but there are only {world_size}")
            if fault.kind != "stall":
                members.leave(fault.replica, at=fault.at)  # Membership refuses at = 0
                if fault.rejoin is not None:
                    members.join(fault.replica, at=fault.rejoin)
        return members


__all__ = ["Fault", "Faults", "KINDS"]
