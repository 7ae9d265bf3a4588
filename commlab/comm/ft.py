"""A fault-tolerant Communicator on torchft: quorums, commit or roll back, heal a joining replica.

:class:`FTComm` is the :class:`~commlab.comm.communicator.Communicator` interface (L = 1: one replica
per process) backed by a ``torchft.manager.Manager`` and its reconfigurable ``ProcessGroupGloo``.
:class:`FaultTolerant` runs any commlab :class:`~commlab.distributed.method.Method` on it unchanged::

    comm = FTComm(manager)                                   # one per replica process
    method = make_method("diloco", comm, params, sync_every=4, inner=sgd, sync_init=False)
    run = FaultTolerant(method, comm)                         # the first quorum; a joiner is healed here
    while run.method.steps < steps:
        run.step(grad_of(params))                             # False: this step's sync failed, rolled back

What happens at a synchronisation (a step in which the method ran a collective):

1. the collective runs over the process group of the current quorum: ``all_reduce(op="mean")`` is the
   Manager's average, Σ_j x_j / n over the n live participants; a failure (a peer died or timed out)
   is recorded by the Manager, not raised, and the result is then garbage;
2. ``Manager.should_commit()``: on success the method's ``state_dict()`` becomes the committed state,
   on failure the method is rolled back to the last committed state (the round's inner steps are lost,
   as in torchft's DiLoCo);
3. a new quorum (``Manager.start_quorum``, synchronous): the process group is reconfigured for the
   live replicas, and a replica whose committed step is behind the others (one that joined or rejoined,
   or failed a commit the others made) is healed: it loads a peer's committed ``state_dict`` (the
   outer parameters, outer optimiser state, Streaming DiLoCo's global fragments, steps, meter), sent
   by torchft's checkpoint transport (HTTP).

The quorum sits after the commit, so a joiner is healed with the state the others have just committed and
both continue from the same step; the very first quorum (in :class:`FaultTolerant`) heals replicas 1..
N − 1 from replica 0 (torchft's ``init_sync``), which replaces the methods' initial broadcast (build
them with ``sync_init=False``). ``all_gather`` and ``broadcast`` run on the quorum's process group;
``mix`` and ``exchange`` are served from an all-gather (N − 1 times the traffic of the point-to-point
messages the meter counts). Every wait is bounded by the Manager's ``timeout`` and ``quorum_timeout``.

:func:`~commlab.comm.ft_launch.run_replicas` starts a Lighthouse and the replica processes on localhost.
"""

from __future__ import annotations

from datetime import timedelta

import torch
from torch.distributed.distributed_c10d import AllgatherOptions, BroadcastOptions, ReduceOp

from commlab.comm.communicator import Communicator
from commlab.comm.link import Link


class FTComm(Communicator):
    """One replica (L = 1) of a torchft job; world size and rank are those of the current quorum.

    Args:
        manager: a ``torchft.manager.Manager`` built with ``use_async_quorum=False`` (a quorum is
            then complete, and a healing replica loaded, when :meth:`quorum` returns).
        link: a :class:`Link` for a simulated clock beside the real run, or None.

    Attributes:
        quorums: quorums taken so far; ``history``: ``(manager step, participants)`` of each.
    """

    def __init__(self, manager, *, link: Link | None = None):
        if getattr(manager, "_use_async_quorum", False):
            raise ValueError("FTComm needs a Manager with use_async_quorum=False")
        super().__init__(1, torch.tensor([0]), link)
        self.manager = manager
        self.quorums = 0
        self.history: list[tuple[int, int]] = []

    def quorum(self, timeout: timedelta | None = None) -> int:
        """Take part in the next quorum (blocks until the Lighthouse forms it, at most the quorum
        timeout); reconfigures the group and heals this replica if it is behind. Returns the number of
        live participants."""
        self.manager.start_quorum(timeout=timeout)
        n, rank = self.manager.num_participants(), self.manager.participating_rank()
        if rank is None:
            raise RuntimeError("this replica is not participating in the quorum (a Manager in async-quorum "
                               "or spare mode?); FTComm needs every member of the quorum to participate")
        self.world_size, self.ranks, self._local = n, torch.tensor([rank]), {rank: 0}
        self.quorums += 1
        self.history.append((self.manager.current_step(), n))
        return n

    @property
    def errored(self) -> bool:
        """Whether a collective since the last quorum failed (the step cannot commit)."""
        return self.manager.errored() is not None

    def commit(self) -> bool:
        """``Manager.should_commit()``: whether the step's collectives all succeeded (and enough
        replicas took part); the Manager's step count moves on only if so."""
        return bool(self.manager.should_commit())

    def __getstate__(self):
        raise TypeError("an FTComm holds a torchft Manager and cannot be pickled; make one in each process")

    # -- the collectives on the quorum's process group ---------------------------------------------

    def _require_quorum(self) -> None:
        if self.quorums == 0:
            raise RuntimeError("FTComm: no quorum yet; call quorum() first (FaultTolerant does), and build "
                               "methods with sync_init=False (the first quorum heals replicas from replica 0)")

    def _reduce(self, x, op):
        self._require_quorum()
        total = x[0].detach().clone().contiguous()
        work = self.manager.allreduce(total, reduce_op=ReduceOp.AVG if op == "mean" else ReduceOp.SUM)
        work.wait()  # bounded by the Manager's timeout; a failure is recorded, not raised
        return total

    def _gather(self, x):
        self._require_quorum()
        mine = x[0].detach().clone().contiguous()
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._guarded(lambda: self.manager._pg.allgather([out], [mine], AllgatherOptions()))
        if self.errored:  # failed or skipped: the buffers hold no rows; zeros decode under every codec
            return torch.zeros(self.world_size, *mine.shape, dtype=mine.dtype)
        return torch.stack(out)

    def _broadcast(self, x, src):
        self._require_quorum()
        buffer = x[0].detach().clone().contiguous()
        options = BroadcastOptions()
        options.rootRank = src
        self._guarded(lambda: self.manager._pg.broadcast([buffer], options))
        return buffer

    def _p2p(self, x, links):
        gathered = self._gather(x)
        me = int(self.ranks[0])
        return {j: gathered[j] for j in range(self.world_size) if j != me and links[me, j]}

    def _guarded(self, launch) -> None:
        """Run a collective on the Manager's process group; a failure is reported to the Manager
        (the step will not commit) instead of raised, as the Manager's own all-reduce does."""
        if self.errored:
            return
        try:
            launch().wait(self.manager._timeout)
        except Exception as error:  # noqa: BLE001 — any failure of the group fails the step
            self.manager.report_error(error)


class FaultTolerant:
    """Run a Method on an :class:`FTComm`: commit or roll back each synchronisation, heal at quorums.

    Args:
        method: any commlab Method built on ``comm`` with ``sync_init=False`` (per-step methods).
        comm: the :class:`FTComm` it runs on.
        key: the name under which the committed state is registered with the Manager.
        heal: False for the *naive join* counterfactual (PCCL's arm (b)): a replica behind the others
            still takes their step number from the Manager, but keeps its own state (its initialisation,
            or what it held before) instead of loading theirs, so its state differs from theirs from then on.

    The constructor takes the first quorum (a joining replica is healed there). Attributes: ``commits``,
    ``rollbacks``, ``heals`` (how often this replica loaded a peer's state) and ``ignored_heals`` (how
    often it was sent one and, with ``heal=False``, kept its own).
    """

    def __init__(self, method, comm: FTComm, *, key: str = "commlab", heal: bool = True):
        if not isinstance(comm, FTComm):
            raise TypeError(f"comm must be an FTComm, got {type(comm).__name__}")
        if method.comm is not comm:
            raise ValueError("the method must be built on this FTComm")
        if not isinstance(heal, bool):
            raise TypeError(f"heal must be a bool, got {type(heal).__name__}")
        self.method, self.comm, self.heal = method, comm, heal
        self.commits = self.rollbacks = self.heals = self.ignored_heals = 0
        self.committed = method.state_dict()
        comm.manager.register_state_dict_fn(key, self._heal, lambda: self.committed)
        comm.quorum()

    def _heal(self, state: dict) -> None:
        if not self.heal:
            self.ignored_heals += 1
            return
        self.method.load_state_dict(state)
        self.committed = state
        self.heals += 1

    def step(self, grad: torch.Tensor) -> bool:
        """``method.step(grad)``; if it synchronised: commit (True) or roll back (False), then the next
        quorum. A step without a synchronisation returns True."""
        syncs = self.comm.meter.syncs
        self.method.step(grad)
        if self.comm.meter.syncs == syncs:
            return True
        ok = self.comm.commit()
        if ok:
            self.commits += 1
            self.committed = self.method.state_dict()
        else:
            self.rollbacks += 1
            self.method.load_state_dict(self.committed)
        self.comm.quorum()
        return ok


__all__ = ["FTComm", "FaultTolerant"]
