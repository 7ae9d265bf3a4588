"""The Communicator: one interface for N simulated workers in one process and for real ranks.

Every tensor handed to a communicator carries a leading *local-worker* axis L (briefs/_conventions.md
§6): :class:`SimComm` hosts all N workers stacked in one process (L = N); :class:`DistComm` is one
``torch.distributed`` rank hosting one worker (L = 1). An algorithm written against this interface
runs unchanged on both::

    comm = SimComm(4, link=Link(bandwidth=100e6))     # or DistComm() inside torchrun
    mean = comm.all_reduce(grads, op="mean").wait()   # grads [L, d] -> [L, d], rows all equal
    comm.advance(0.012)                               # 12 ms of computation on the simulated clock

Collectives (x has shape ``[L, ...]``):

* ``all_reduce(x, op)``: every row becomes Σ_j x_j (``"sum"``) or its mean over the N workers;
* ``all_gather(x)``: ``[N, ...]``, worker j's row at position j, on every worker;
* ``broadcast(x, src)``: every row becomes worker ``src``'s row;
* ``mix(x, W)``: gossip, row i becomes Σ_j W_ij x_j with a mixing matrix W of shape ``[N, N]``;
  each worker sends its row to every j ≠ i with W_ji ≠ 0;
* ``exchange(x, pairs)``: disjoint pairs (i, j) swap rows; workers in no pair keep theirs.

Each returns a :class:`Work` whose ``wait()`` gives the result and whose ``finish_time`` is the
communicator's clock (s) when it completed. :meth:`Communicator.start` launches a collective in the
background of the simulated clock instead (communication overlapped with computation)::

    work = comm.start("all_reduce", x, op="mean")   # the clock does not move
    comm.advance(tau * c)                             # τ inner steps of computation meanwhile
    mean = work.wait()                                # clock = max(now, launch + link time)

On SimComm the result is computed at once and only the simulated clock overlaps; on DistComm an
``all_reduce`` or ``all_gather`` launched with :meth:`~Communicator.start` really runs in the background
(``async_op=True``): the call returns as soon as the collective is queued, ``wait()`` blocks until it
completes, and :meth:`Work.future` gives a ``torch.futures.Future`` for chaining (a DDP hook returns
one). Collectives launched while another is in flight queue behind it on the link.

SimComm is deterministic: a sum reduces the stacked ``[N, ...]`` tensor of all workers with one fixed
kernel, and ``DistComm(deterministic=True)`` gathers that same stacked tensor and reduces it the same
way, so the two agree bit for bit. A gossip ``mix`` adds W_ij·x_j in order j = 0, 1, …, N − 1 on both.

The :class:`Meter` counts what each local worker puts on the wire: the bytes it contributes to an
all-reduce or all-gather, the source's bytes in a broadcast, one message per neighbour in a gossip
round; the number of synchronisations (collective calls) and the largest number of bytes one
worker sent in a single synchronisation. Time on a slow link comes from :class:`~commlab.comm.link.Link`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from commlab._checks import check_choice, check_int, check_nonnegative
from commlab.comm.link import Link

REDUCE_OPS = ("sum", "mean")
ASYNC_OPS = ("all_reduce", "all_gather", "broadcast", "mix", "exchange")


class CommunicationError(RuntimeError):
    """A collective failed on a real process group: a peer died, closed its connection or timed out."""


class Pending:
    """A result still on the wire: a ``torch.distributed`` work handle and what turns its buffers into
    the result once it has completed (a division, a concatenation, a view)."""

    def __init__(self, handle, finish: Callable[[], torch.Tensor], comm: DistComm, op: str):
        self.handle, self.finish, self.comm, self.op = handle, finish, comm, op

    def then(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Pending:
        """The same collective, its result passed through ``fn``."""
        return Pending(self.handle, lambda: fn(self.finish()), self.comm, self.op)


class Work:
    """A collective: :meth:`wait` returns its result; ``finish_time`` is the clock (s) when it completes.

    A Work from :meth:`Communicator.start` also carries its ``start_time``, and waiting on it moves
    the communicator's clock on to ``finish_time`` if the clock has not reached it yet. A Work whose
    collective is still running on a real process group (``DistComm.start``) learns its
    ``finish_time`` (the wall clock) when :meth:`wait` returns.
    """

    def __init__(self, result: torch.Tensor | Pending, finish_time: float, *, start_time: float | None = None,
                 comm: Communicator | None = None):
        self._result = result
        self.finish_time = finish_time
        self.start_time = finish_time if start_time is None else start_time
        self._comm = comm

    def is_completed(self) -> bool:
        """Whether :meth:`wait` would return without blocking."""
        return not isinstance(self._result, Pending) or self._result.handle.is_completed()

    def wait(self) -> torch.Tensor:
        self._resolve()
        if self._comm is not None:
            self._comm._clock = max(self._comm._clock, self.finish_time)
        return self._result

    def then(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Work:
        """The same collective with its result passed through ``fn`` (at once, or when a collective
        running in the background completes); its times, and the clock it moves, are this one's."""
        return Work(_then(self._result, fn), self.finish_time, start_time=self.start_time, comm=self._comm)

    def future(self) -> torch.futures.Future:
        """A ``torch.futures.Future`` completed with :meth:`wait`'s result when the collective
        completes (already completed unless the collective is running in the background)."""
        if isinstance(self._result, Pending):
            pending = self._result
            # the callback runs when the collective has completed; waiting on its handle there would block
            return pending.handle.get_future().then(lambda _: self._complete(pending))
        future = torch.futures.Future()
        future.set_result(self.wait())
        return future

    def _resolve(self) -> torch.Tensor:
        """The result, blocking until a collective running in the background has completed."""
        if isinstance(self._result, Pending):
            pending = self._result
            pending.comm._call(pending.op, pending.handle.wait)
            self._complete(pending)
        return self._result

    def _complete(self, pending: Pending) -> torch.Tensor:
        """Turn the completed collective's buffers into the result (once)."""
        if self._result is pending:
            self._result = pending.finish()
            if pending.comm.link is None:
                self.finish_time = pending.comm.clock
        return self._result

    def state_dict(self) -> dict:
        """The result and times of a Work still to be waited for, so a checkpoint can carry it (a
        collective still running in the background is waited for first)."""
        return {"result": self._resolve().clone(), "start": self.start_time, "finish": self.finish_time,
                "started": self._comm is not None}

    @staticmethod
    def from_state(state: dict, comm: Communicator) -> Work:
        """The Work :meth:`state_dict` saved; a started one moves ``comm``'s clock when waited for."""
        return Work(state["result"].clone(), state["finish"], start_time=state["start"],
                    comm=comm if state["started"] else None)


@dataclass
class Meter:
    """Bytes on the wire for the local workers.

    Attributes:
        bytes_sent: ``[L]`` float64, cumulative bytes each local worker has sent.
        syncs: number of synchronisations (collective calls).
        peak_bytes: the most bytes one local worker sent in a single synchronisation.
        calls: number of calls per collective name.
    """

    local_workers: int
    bytes_sent: torch.Tensor = field(init=False)
    syncs: int = 0
    peak_bytes: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.bytes_sent = torch.zeros(self.local_workers, dtype=torch.float64)

    def record(self, op: str, per_worker: torch.Tensor) -> None:
        """Count one synchronisation in which local worker l sent ``per_worker[l]`` bytes (safe from
        several threads: a DDP hook's callbacks launch collectives too)."""
        with _METER_LOCK:
            self.bytes_sent += per_worker
            self.syncs += 1
            self.peak_bytes = max(self.peak_bytes, float(per_worker.max()))
            self.calls[op] = self.calls.get(op, 0) + 1

    def reset(self) -> None:
        self.bytes_sent.zero_()
        self.syncs, self.peak_bytes, self.calls = 0, 0.0, {}

    def state_dict(self) -> dict:
        return {"bytes_sent": self.bytes_sent.clone(), "syncs": self.syncs, "peak_bytes": self.peak_bytes,
                "calls": dict(self.calls)}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["bytes_sent"].shape) != (self.local_workers,):
            raise ValueError(f"the meter state has {tuple(state['bytes_sent'].shape)} workers' counts, "
                             f"this meter {self.local_workers}")
        self.bytes_sent.copy_(state["bytes_sent"])
        self.syncs, self.peak_bytes, self.calls = int(state["syncs"]), float(state["peak_bytes"]), dict(state["calls"])

    def summary(self) -> dict:
        """Plain numbers: mean bytes per local worker, syncs, peak bytes and calls per collective."""
        return {
            "bytes_per_worker": float(self.bytes_sent.mean()),
            "syncs": self.syncs,
            "peak_bytes": self.peak_bytes,
            "calls": dict(self.calls),
        }


_METER_LOCK = threading.Lock()


def nbytes(x: torch.Tensor) -> int:
    """Bytes of one worker's row of ``x`` (shape ``[L, ...]``)."""
    return x[0].numel() * x.element_size()


class Communicator:
    """What both backends share: argument checks, the meter and the clock.

    Attributes:
        world_size: N, the number of workers in all.
        local_workers: L, the workers hosted here (N for SimComm, 1 for DistComm).
        ranks: ``[L]`` global indices of the local workers.
        link: the latency/bandwidth model that advances the clock, or None.
        meter: the :class:`Meter` of the local workers.
        device: where tensors must be to cross the wire (CUDA for a pure NCCL group, else CPU).
    """

    def __init__(self, world_size: int, ranks: torch.Tensor, link: Link | None):
        if link is not None and not isinstance(link, Link):
            raise TypeError(f"link must be a commlab.comm.Link or None, got {type(link).__name__}")
        self.world_size = world_size
        self.ranks = ranks
        self.local_workers = len(ranks)
        self._local = {int(r): row for row, r in enumerate(ranks.tolist())}
        self.link = link
        self.meter = Meter(self.local_workers)
        self.device = torch.device("cpu")
        self._clock = 0.0
        self._link_free = 0.0  # when the last collective launched with start() leaves the link
        self._starter: int | None = None  # the thread inside start(), if any (hooks launch from callbacks too)

    lossless = True  # what arrives is what was sent (NoisyLinks is not)

    @property
    def clock(self) -> float:
        """Seconds on the simulated clock: computation passed to :meth:`advance` plus link time."""
        return self._clock

    def state_dict(self) -> dict:
        """The meter and the simulated clock (a resumed run continues both)."""
        return {"meter": self.meter.state_dict(), "clock": self._clock, "link_free": self._link_free}

    def load_state_dict(self, state: dict) -> None:
        self.meter.load_state_dict(state["meter"])
        self._clock, self._link_free = float(state["clock"]), float(state["link_free"])

    def advance(self, seconds: float) -> float:
        """Move the clock on by ``seconds`` of computation; returns the new time."""
        self._clock += check_nonnegative("seconds", seconds)
        return self._clock

    def check_same(self, what: str, value) -> None:
        """Raise a ValueError on every process if they were given different ``value``s for ``what``
        (e.g. the seed of shared-index Rand-k or SPSA, which every worker must draw alike): one
        all-gather of a 64-bit BLAKE2b hash of ``repr(value)``, not metered. One process hosting every
        worker (SimComm) holds one value for all of them: nothing to check."""
        if self.local_workers == self.world_size:
            return
        digest = hashlib.blake2b(repr(value).encode(), digest_size=8).digest()
        mine = torch.tensor([[int.from_bytes(digest, "little", signed=True)]], dtype=torch.int64, device=self.device)
        everyone = self._gather(mine).reshape(-1).tolist()
        if len(set(everyone)) > 1:
            groups = {h: [r for r, g in enumerate(everyone) if g == h] for h in dict.fromkeys(everyone)}
            raise ValueError(f"the processes were given different {what}s (ranks with equal values: "
                             f"{list(groups.values())}; this rank: {value!r}); every worker must use the same one")

    def start(self, op: str, /, *args, **kwargs) -> Work:
        """Launch collective ``op`` (``"all_reduce"``, ``"all_gather"``, ``"broadcast"``, ``"mix"``,
        ``"exchange"``) without moving the clock: it occupies the link from max(now, the end of the
        previous started collective) for its link time, and :meth:`Work.wait` moves the clock on to
        its ``finish_time``. Arguments are those of the collective. Without a link there is no link
        time to overlap: the Work finishes at the current clock."""
        check_choice("op", op, ASYNC_OPS)
        self._starter = threading.get_ident()
        try:
            return getattr(self, op)(*args, **kwargs)
        finally:
            self._starter = None

    @property
    def _starting(self) -> bool:
        """Whether the calling thread is inside :meth:`start`."""
        return self._starter == threading.get_ident()

    # -- collectives -----------------------------------------------------------------------------

    def all_reduce(self, x: torch.Tensor, op: str = "sum") -> Work:
        """Every row becomes the sum (or mean) of the N workers' rows (a view: rows share memory)."""
        check_choice("op", op, REDUCE_OPS)
        x = self._check("all_reduce", x, floating=True)
        total = _then(self._reduce(x, op), lambda t: t.expand(x.shape))
        per = torch.full((self.local_workers,), float(nbytes(x)), dtype=torch.float64)
        return self._done("all_reduce", total, per, nbytes(x))

    def all_gather(self, x: torch.Tensor) -> Work:
        """``[N, ...]``: every worker's row, in worker order."""
        x = self._check("all_gather", x)
        per = torch.full((self.local_workers,), float(nbytes(x)), dtype=torch.float64)
        return self._done("all_gather", self._gather(x), per, nbytes(x))

    def broadcast(self, x: torch.Tensor, src: int = 0) -> Work:
        """Every row becomes worker ``src``'s row; only ``src`` sends."""
        src = check_int("src", src, low=0, high=self.world_size - 1)
        x = self._check("broadcast", x)
        per = (self.ranks == src).to(torch.float64) * nbytes(x)
        return self._done("broadcast", self._broadcast(x, src).expand(x.shape), per, nbytes(x))

    def mix(self, x: torch.Tensor, weights: torch.Tensor) -> Work:
        """Gossip: row i becomes Σ_j W_ij x_j (j ascending) for a mixing matrix W ``[N, N]``."""
        x = self._check("mix", x, floating=True)
        W = self._mixing_matrix(weights)
        links = (W != 0) & ~torch.eye(self.world_size, dtype=torch.bool)  # links[i, j]: j sends to i
        out_degree = links.sum(dim=0)
        received = self._p2p(x, links)
        out = torch.zeros_like(x)
        W = W.to(x.dtype)
        for j in range(self.world_size):
            column = W[self.ranks, j]
            if not column.any():
                continue
            x_j = x[self._local[j]] if j in self._local else received[j]
            out += column.view(-1, *[1] * (x.dim() - 1)) * x_j
        per = out_degree[self.ranks].to(torch.float64) * nbytes(x)
        return self._done("mix", out, per, nbytes(x), degree=int(out_degree.max()))

    def exchange(self, x: torch.Tensor, pairs) -> Work:
        """Disjoint pairs ``(i, j)`` swap rows; a worker in no pair keeps its own row."""
        x = self._check("exchange", x)
        partner = self._partners(pairs)
        links = torch.zeros(self.world_size, self.world_size, dtype=torch.bool)
        for i, j in enumerate(partner):
            if j >= 0:
                links[i, j] = True
        received = self._p2p(x, links)
        out = x.clone()
        for row, i in enumerate(self.ranks.tolist()):
            j = partner[i]
            if j >= 0:
                out[row] = x[self._local[j]] if j in self._local else received[j]
        per = torch.tensor([float(partner[i] >= 0) for i in self.ranks.tolist()], dtype=torch.float64) * nbytes(x)
        return self._done("exchange", out, per, nbytes(x), degree=int(bool(links.any())))

    # -- what the backends define ------------------------------------------------------------------

    def _reduce(self, x: torch.Tensor, op: str) -> torch.Tensor | Pending:
        """Σ_j x_j or its mean over all N workers, shape ``x.shape[1:]``; SimComm and deterministic
        DistComm both reduce the stacked ``[N, ...]`` tensor with the same kernel, so their bits agree.
        A collective launched in the background returns it :class:`Pending`."""
        raise NotImplementedError

    def _gather(self, x: torch.Tensor) -> torch.Tensor | Pending:
        raise NotImplementedError

    def _broadcast(self, x: torch.Tensor, src: int) -> torch.Tensor:
        raise NotImplementedError

    def _p2p(self, x: torch.Tensor, links: torch.Tensor) -> dict[int, torch.Tensor]:
        """Send local rows along ``links[i, j]`` (j sends to i); returns rows received from remote j."""
        raise NotImplementedError

    # -- shared helpers ---------------------------------------------------------------------------

    def _done(self, op: str, result: torch.Tensor, per_worker: torch.Tensor, message_bytes: int,
              degree: int = 1) -> Work:
        self.meter.record(op, per_worker)
        if self.link is None:  # no link time to simulate (DistComm's clock is then the wall clock)
            return Work(result, self.clock)
        kind = "p2p" if op in ("mix", "exchange") else op
        seconds = self.link.seconds(kind, message_bytes, self.world_size, degree)
        if self._starting:
            begin = max(self._clock, self._link_free)
            self._link_free = begin + seconds
            return Work(result, begin + seconds, start_time=begin, comm=self)
        self._clock = max(self._clock, self._link_free) + seconds  # behind any started collective
        return Work(result, self.clock)

    def _check(self, op: str, x: torch.Tensor, floating: bool = False) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{op}: x must be a torch.Tensor of shape [L, ...], got {type(x).__name__}")
        if floating and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{op}: x must have a floating dtype, got {x.dtype}")
        if x.dim() == 0 or x.shape[0] != self.local_workers:
            raise ValueError(
                f"{op}: x must have a leading worker axis of length {self.local_workers} "
                f"(the workers hosted here), got shape {tuple(x.shape)}"
            )
        return x

    def _mixing_matrix(self, weights) -> torch.Tensor:
        W = torch.as_tensor(weights, dtype=torch.float64)
        n = self.world_size
        if W.shape != (n, n):
            raise ValueError(f"mix: weights must have shape [{n}, {n}], got {tuple(W.shape)}")
        if not torch.isfinite(W).all():
            raise ValueError("mix: weights contain NaN or Inf")
        return W

    def _partners(self, pairs) -> list[int]:
        partner = [-1] * self.world_size
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"exchange: each pair must be (i, j), got {pair!r}")
            i, j = (check_int("pair member", v, low=0, high=self.world_size - 1) for v in pair)
            if i == j or partner[i] >= 0 or partner[j] >= 0:
                raise ValueError(f"exchange: pairs must be disjoint pairs of distinct workers, got {list(pairs)!r}")
            partner[i], partner[j] = j, i
        return partner


class SimComm(Communicator):
    """N workers stacked on the leading axis of one process (L = N); deterministic.

    Args:
        world_size: N >= 1.
        link: a :class:`Link` whose latency/bandwidth advance :attr:`clock` for every collective;
            None leaves the clock to :meth:`advance` alone (an unlimited link).
    """

    def __init__(self, world_size: int, *, link: Link | None = None):
        world_size = check_int("world_size", world_size, low=1)
        super().__init__(world_size, torch.arange(world_size), link)

    def _reduce(self, x, op):
        return x.sum(dim=0) if op == "sum" else x.mean(dim=0)

    def _gather(self, x):
        return x

    def _broadcast(self, x, src):
        return x[src]

    def _p2p(self, x, links):
        return {}


class DistComm(Communicator):
    """One worker per ``torch.distributed`` rank (L = 1): gloo on CPU, NCCL on CUDA.

    Args:
        group: the process group (default: the world); ``init_process_group`` must have run.
        deterministic: all-reduce as an all-gather plus the simulator's sum of the stacked
            tensor, bit-identical to :class:`SimComm` (N/2 times the traffic of a ring all-reduce;
            the meter still counts the all-reduce, which is what the algorithm asks for).
        check_shapes: before each collective, gather every rank's shape and dtype (a few bytes,
            not metered) and raise a ValueError naming the ranks if they differ. False skips that
            collective: the caller promises equal shapes, and a mismatch is then undefined. Measured on
            2 gloo ranks (torch 2.13): ``all_gather`` aborts the rank that receives the longer row
            (SIGABRT, gloo's "Received data size doesn't match expected size"), ``all_reduce``
            returns a partial sum on one rank and raises CommunicationError on the other, and
            ``broadcast`` returns without error on both with rows of different lengths.
        link: a :class:`Link` to run a simulated clock beside the real one; None makes
            :attr:`clock` the wall-clock seconds since this communicator was made.

    A failed collective (a peer died or timed out) raises :class:`CommunicationError`.
    """

    def __init__(self, group=None, *, deterministic: bool = False, check_shapes: bool = True, link: Link | None = None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "DistComm needs torch.distributed: call torch.distributed.init_process_group first "
                "(torchrun, or commlab.comm.launch.run_workers)"
            )
        self.group = group
        rank, world_size = dist.get_rank(group), dist.get_world_size(group)
        super().__init__(world_size, torch.tensor([rank]), link)
        self.rank = rank
        if dist.get_backend(group) == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.deterministic = bool(deterministic)
        self.check_shapes = bool(check_shapes)
        self._start = time.perf_counter()

    @property
    def clock(self) -> float:
        return self._clock if self.link is not None else time.perf_counter() - self._start

    def __getstate__(self):
        raise TypeError("a DistComm holds a process group and cannot be pickled; make a new one in each process")

    def _reduce(self, x, op):
        if self.deterministic:
            return _then(self._gather(x), lambda stacked: stacked.sum(dim=0) if op == "sum" else stacked.mean(dim=0))
        total = x[0].clone()
        return self._launch("all_reduce", dist.all_reduce, total,
                            lambda: total if op == "sum" else total / self.world_size)

    def _gather(self, x):
        out = [torch.empty_like(x) for _ in range(self.world_size)]
        # in the background the caller may change x before the collective has read it: send a copy
        mine = x.clone() if self._starting else x.contiguous()
        return self._launch("all_gather", dist.all_gather, out, lambda: torch.cat(out), mine)

    def _launch(self, op: str, fn, buffer, finish: Callable[[], torch.Tensor], *inputs) -> torch.Tensor | Pending:
        """Run ``fn(buffer, *inputs)`` on the group: at once, returning ``finish()``, or, inside
        :meth:`start`, in the background, returning it :class:`Pending`."""
        if self._starting:
            handle = self._call(op, fn, buffer, *inputs, group=self.group, async_op=True)
            return Pending(handle, finish, self, op)
        self._call(op, fn, buffer, *inputs, group=self.group)
        return finish()

    def _broadcast(self, x, src):
        buffer = x[0].clone()
        self._call("broadcast", dist.broadcast, buffer, src=self._global(src), group=self.group)
        return buffer

    def _global(self, rank: int) -> int:
        return dist.get_global_rank(self.group, rank) if self.group is not None else rank

    def _p2p(self, x, links):
        me = self.rank
        ops, received = [], {}
        for j in range(self.world_size):
            if j != me and links[me, j]:  # j sends to me
                received[j] = torch.empty_like(x[0])
                ops.append(dist.P2POp(dist.irecv, received[j], self._global(j), self.group))
            if j != me and links[j, me]:  # I send to j
                ops.append(dist.P2POp(dist.isend, x[0].contiguous(), self._global(j), self.group))
        if ops:
            self._call("p2p", _wait_all, ops)
        return received

    def _check(self, op, x, floating=False):
        x = super()._check(op, x, floating)
        if self.check_shapes:
            self._agree(op, x)
        return x

    def _agree(self, op: str, x: torch.Tensor) -> None:
        """Raise on every rank alike if the ranks' shapes or dtypes differ."""
        code = [x.dim(), _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1, *x.shape]
        if len(code) > _SIGNATURE:
            raise ValueError(f"{op}: tensors of more than {_SIGNATURE - 2} dimensions are not supported")
        mine = torch.full((_SIGNATURE,), -2, dtype=torch.int64, device=x.device)
        mine[: len(code)] = torch.tensor(code, dtype=torch.int64)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._call(op, dist.all_gather, everyone, mine, group=self.group)
        if any(not torch.equal(sig, everyone[0]) for sig in everyone):
            described = ", ".join(f"rank {r}: {_describe(sig)}" for r, sig in enumerate(everyone))
            raise ValueError(f"{op}: the ranks passed tensors of different shapes or dtypes ({described})")

    def _call(self, op: str, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except RuntimeError as error:
            waited = time.perf_counter() - started
            raise CommunicationError(
                f"rank {self.rank}: {op} failed after {waited:.1f} s; another rank probably died or "
                f"stopped answering (see its log for the cause). torch.distributed said: {error}"
            ) from error


def _then(result: torch.Tensor | Pending, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | Pending:
    """``fn(result)``, or, for a collective still running, ``fn`` applied when it completes."""
    return result.then(fn) if isinstance(result, Pending) else fn(result)


def _wait_all(ops):
    for request in dist.batch_isend_irecv(ops):
        request.wait()


_SIGNATURE = 10
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int32,
           torch.int64, torch.bool, torch.complex64, torch.complex128]


def _describe(signature: torch.Tensor) -> str:
    values = [int(v) for v in signature.tolist()]
    ndim, dtype = values[0], values[1]
    shape = values[2 : 2 + ndim]
    return f"{tuple(shape)} {_DTYPES[dtype] if dtype >= 0 else 'other dtype'}"

