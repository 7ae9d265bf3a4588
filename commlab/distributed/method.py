"""The one shape of every training algorithm, and the record of what it sent.

Every method in :mod:`commlab.distributed` is a :class:`Method`:

* built as ``Method(comm, params, *, hyper...)``: ``comm`` a :class:`~commlab.comm.Communicator`,
  ``params`` the ``[L, d]`` floating tensor of this process's replicas (L = N on a ``SimComm``, 1 on a
  ``DistComm`` rank), changed in place; schedules (learning rates, densities) are
  ``float | Callable[[int], float]`` of the step;
* per-step methods take ``step(grads [L, d])``; round methods (federated, SPSA) take
  ``round(oracle)`` and call the oracle as often as they need. Both return the :class:`SyncEvent`
  they launched;
* ``summary()`` gives the same keys everywhere — ``steps`` (steps or rounds done), ``syncs``
  (synchronisations, the initial broadcast excluded), ``bytes_per_worker`` (mean bytes a local
  worker sent in all, from the communicator's meter), ``peak_bytes_per_sync`` (the most bytes one
  worker sent in one synchronisation) and ``clock`` (the simulated seconds);
* ``state_dict()`` / ``load_state_dict()`` carry everything a run needs to continue bit for bit —
  the parameters, the method's own state, the communicator's meter and clock, the log of events and
  any collective still in flight — as tensors, numbers, strings, lists and dicts (``torch.save``
  and ``torch.load`` take them as they are); ``finish()`` completes what is still in flight.

Units: bits for payloads, bytes for the meter, bit/s for links, seconds for clocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from commlab._checks import check_int, check_nonnegative
from commlab.comm import Communicator, Work

StepSchedule = float | Callable[[int], float]


def schedule_at(name: str, schedule: StepSchedule, step: int, *, low: float = 0.0, high: float = float("inf"),
                low_open: bool = True) -> float:
    """The value of ``schedule`` (a number, or a function of the 0-based ``step``) at ``step``, checked to
    lie in (low, high] (or [low, high] with ``low_open=False``)."""
    value = schedule(step) if callable(schedule) else schedule
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise TypeError(f"{name} must be a number or a function of the step giving one, got {value!r} at step {step}")
    value = float(value)
    if not ((value > low if low_open else value >= low) and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r} at step {step}")
    return value


def check_schedule(name: str, schedule: StepSchedule, **bounds) -> StepSchedule:
    """``schedule`` if it is callable, else the number checked as :func:`schedule_at` checks it."""
    if callable(schedule):
        return schedule
    return schedule_at(name, schedule, 0, **bounds)


@dataclass
class SyncEvent:
    """One synchronisation a method ran (one or several collectives).

    Attributes:
        step: steps (or rounds) done when it was launched (0 for the initial broadcast).
        kind: ``"init"`` (initial broadcast), ``"sync"``, ``"fragment"`` (Streaming DiLoCo) or
            ``"join"`` (state handed to joining machines).
        bytes: the most bytes one local worker sent in it.
        start: simulated clock (s) at launch; finish: when its result was available.
        fragment: the fragment index (Streaming DiLoCo), else None.
        info: what the method reports of it (e.g. DGC's density and wire bits, a federated round's
            clients); plain numbers, tuples and tensors.
    """

    step: int
    kind: str
    bytes: float
    start: float
    finish: float
    fragment: int | None = None
    info: dict = field(default_factory=dict)


class Method:
    """What every method shares: argument checks, the step counter, the clock, the event log, the summary
    and the checkpoint (see the module docstring).

    Args:
        comm: the communicator.
        params: ``[L, d]`` floating tensor of the local replicas' parameters, changed in place.
        step_seconds: simulated computation time c of one step (s), added to ``comm.clock`` by the
            methods that model it.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, step_seconds: float = 0.0):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
        if not isinstance(params, torch.Tensor) or not params.is_floating_point():
            raise TypeError(f"params must be a floating torch.Tensor of shape [L, d], got {_describe(params)}")
        if params.dim() != 2 or params.shape[0] != comm.local_workers:
            raise ValueError(f"params must have shape [L, d] with L = {comm.local_workers} local workers, "
                             f"got {tuple(params.shape)}")
        if not torch.isfinite(params).all():
            raise ValueError("params contain NaN or Inf")
        self.comm = comm
        self.params = params
        self.d = params.shape[1]
        self.step_seconds = check_nonnegative("step_seconds", step_seconds)
        self.steps = 0
        self.events: list[SyncEvent] = []
        self._syncs, self._peak = 0, 0.0  # running counts of the events (init excluded), for summary()

    # -- what every method offers ---------------------------------------------------------------

    def summary(self) -> dict:
        """``steps``, ``syncs`` (init excluded), ``bytes_per_worker`` (mean over local workers, init
        included), ``peak_bytes_per_sync`` (init excluded) and ``clock`` (s)."""
        return {
            "steps": self.steps,
            "syncs": self._syncs,
            "bytes_per_worker": float(self.comm.meter.bytes_sent.mean()),
            "peak_bytes_per_sync": self._peak,
            "clock": self.comm.clock,
        }

    def finish(self) -> None:
        """Complete what is still in flight (nothing, for most methods)."""

    def state_dict(self) -> dict:
        """A checkpoint: parameters, steps, events, the communicator's meter and clock, the method's state."""
        return {"method": type(self).__name__, "steps": self.steps, "params": self.params.detach().clone(),
                "events": [asdict(e) for e in self.events], "comm": self.comm.state_dict(), **self._state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of the same method with the same settings and communicator layout;
        the parameters are copied into ``params`` in place."""
        if state.get("method") != type(self).__name__:
            raise ValueError(f"the state was saved by {state.get('method')!r}, not {type(self).__name__}")
        params = state["params"]
        if not isinstance(params, torch.Tensor) or params.shape != self.params.shape:
            raise ValueError(f"the state's params have shape {tuple(getattr(params, 'shape', ()))}, "
                             f"expected {tuple(self.params.shape)}")
        with torch.no_grad():
            self.params.copy_(params)
        self.steps = check_int("steps", state["steps"], low=0)
        self.events = []
        self._syncs, self._peak = 0, 0.0
        for event in state["events"]:
            self._append(SyncEvent(**event))
        self.comm.load_state_dict(state["comm"])
        self._load(state)

    # -- what the methods define ----------------------------------------------------------------

    def _state(self) -> dict:
        """The method's own state (clones)."""
        return {}

    def _load(self, state: dict) -> None:
        """Restore what :meth:`_state` saved."""

    # -- helpers --------------------------------------------------------------------------------

    def _run(self, kind: str, collective, *args, overlap: bool = False, fragment: int | None = None,
             info: dict | None = None, **kwargs) -> Work:
        """Run one collective (launched in the background if ``overlap``) and log it as a SyncEvent."""
        sent, start = self.comm.meter.bytes_sent.clone(), self.comm.clock
        work = self.comm.start(collective.__name__, *args, **kwargs) if overlap else collective(*args, **kwargs)
        self._record(kind, sent, work.start_time if overlap else start, work.finish_time, fragment, info)
        return work

    def _logged(self, kind: str, action: Callable[[], object], info: dict | None = None):
        """Run ``action`` (any number of collectives), log it as one SyncEvent and return its result."""
        sent, start = self.comm.meter.bytes_sent.clone(), self.comm.clock
        result = action()
        self._record(kind, sent, start, self.comm.clock, None, info)
        return result

    def _record(self, kind: str, sent: torch.Tensor, start: float, finish: float, fragment: int | None,
                info: dict | None) -> None:
        """Log a SyncEvent whose bytes are the most one local worker sent since the meter read ``sent``."""
        per_worker = self.comm.meter.bytes_sent - sent
        self._append(SyncEvent(self.steps, kind, float(per_worker.max()), start, finish, fragment, dict(info or {})))

    def _append(self, event: SyncEvent) -> None:
        self.events.append(event)
        if event.kind != "init":
            self._syncs += 1
            self._peak = max(self._peak, event.bytes)

    def _check_grads(self, grads: torch.Tensor, *, finite: bool = True) -> torch.Tensor:
        """``grads`` ``[L, d]`` as a detached tensor of the parameters' dtype; ``finite``: NaN or Inf is an
        error (methods that let a diverging run go on, as the outer methods do, pass False)."""
        if not isinstance(grads, torch.Tensor) or not grads.is_floating_point():
            raise TypeError(f"grads must be a floating torch.Tensor of shape [L, d], got {_describe(grads)}")
        if grads.shape != self.params.shape:
            raise ValueError(f"grads must have the shape of params {tuple(self.params.shape)}, "
                             f"got {tuple(grads.shape)}")
        if finite and not torch.isfinite(grads).all():
            raise ValueError("grads contain NaN or Inf")
        return grads.detach().to(self.params.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(L={self.params.shape[0]}, d={self.d}, steps={self.steps})"


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
