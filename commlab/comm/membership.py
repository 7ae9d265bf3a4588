"""Which machines take part in each round: a starting set plus leave and join events (churn).

A researcher writes the schedule the way they would say it::

    members = Membership([0, 1, 2, 3]).leave(3, at=100).join(5, at=150)
    members.active(99)     # (0, 1, 2, 3)
    members.active(100)    # (0, 1, 2)        machine 3 sends nothing from round 100 on
    members.joining(150)   # (5,)             machine 5 copies θ before round 150 and takes part in it
    members.source(150)    # 0                the peer it copies from: the lowest id active in round 149

Rounds are numbered from 0. ``leave(m, at=t)``: machine m takes part in rounds < t only.
``join(m, at=t)``: machine m is absent before round t and takes part from round t on, after copying
the parameters from :meth:`source` (t >= 1, so there is a previous round to copy from). A machine may
leave and join again later. Every round must keep at least one active machine. The schedule is
checked as each event is added; a ``ValueError`` names the event that does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable

from commlab._checks import check_int


class Membership:
    """A churn schedule over machine ids (non-negative integers).

    Args:
        machines: the ids active from round 0 (distinct, at least one).
    """

    def __init__(self, machines: Iterable[int]):
        start = [check_int("machine", m, low=0) for m in machines]
        if not start:
            raise ValueError("machines must name at least one machine active at round 0")
        if len(set(start)) != len(start):
            raise ValueError(f"machines must be distinct, got {start}")
        self.start = tuple(sorted(start))
        self.events: list[tuple[int, str, int]] = []  # (round, "leave" | "join", machine), sorted by round
        self._timeline = [(0, self.start)]

    @classmethod
    def static(cls, machines: int) -> Membership:
        """Machines 0, …, machines − 1, all active in every round."""
        return cls(range(check_int("machines", machines, low=1)))

    def leave(self, machine: int, *, at: int) -> Membership:
        """Machine ``machine`` takes no part in rounds >= ``at``; returns self to chain events."""
        return self._add("leave", machine, at)

    def join(self, machine: int, *, at: int) -> Membership:
        """Machine ``machine`` copies θ from :meth:`source` and takes part from round ``at`` (>= 1) on."""
        return self._add("join", machine, at)

    def active(self, step: int) -> tuple[int, ...]:
        """Sorted ids of the machines taking part in round ``step``."""
        step = check_int("step", step, low=0)
        current = self.start
        for at, machines in self._timeline:
            if at > step:
                break
            current = machines
        return current

    def joining(self, step: int) -> tuple[int, ...]:
        """Machines that are active in round ``step`` but were not in round ``step − 1``."""
        step = check_int("step", step, low=0)
        if step == 0:
            return ()
        before = set(self.active(step - 1))
        return tuple(m for m in self.active(step) if m not in before)

    def source(self, step: int) -> int:
        """The machine joiners copy θ from before round ``step``: the lowest id active in round ``step − 1``."""
        step = check_int("step", step, low=1)
        return self.active(step - 1)[0]

    def machines(self) -> tuple[int, ...]:
        """Every machine id that is ever active."""
        return tuple(sorted(set(self.start) | {m for _, _, m in self.events}))

    def _add(self, kind: str, machine: int, at: int) -> Membership:
        machine = check_int("machine", machine, low=0)
        at = check_int("at", at, low=1)
        # within a round, joins come before leaves, so a round never looks empty half-way
        events = sorted([*self.events, (at, kind, machine)], key=lambda e: (e[0], e[1] == "leave"))
        self._timeline = self._replay(events)
        self.events = events
        return self

    def _replay(self, events) -> list[tuple[int, tuple[int, ...]]]:
        touched = set()
        for at, _, machine in events:
            if (at, machine) in touched:
                raise ValueError(f"machine {machine} has two events at round {at}")
            touched.add((at, machine))
        current, timeline = set(self.start), [(0, self.start)]
        for at, kind, machine in events:
            if kind == "leave" and machine not in current:
                raise ValueError(f"machine {machine} cannot leave at round {at}: it is not active then")
            if kind == "join" and machine in current:
                raise ValueError(f"machine {machine} cannot join at round {at}: it is already active")
            (current.discard if kind == "leave" else current.add)(machine)
            if not current:
                raise ValueError(f"no machine would be active from round {at} on; keep at least one")
            if timeline[-1][0] == at:
                timeline.pop()
            timeline.append((at, tuple(sorted(current))))
        return timeline

    def __repr__(self) -> str:
        chain = "".join(f".{kind}({machine}, at={at})" for at, kind, machine in self.events)
        return f"Membership({list(self.start)}){chain}"
