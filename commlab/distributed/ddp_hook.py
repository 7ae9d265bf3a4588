"""Any commlab gradient scheme (a compressor with or without error feedback, or PowerSGD's own
protocol) as a DDP communication hook, its communication overlapped with the backward pass.

The hook runs the simulator's code path (briefs/_conventions.md §6) on each gradient bucket of a
:class:`~torch.nn.parallel.DistributedDataParallel` model::

    state = register_compression(ddp_model, functools.partial(gradient_scheme, "topk", ratio=0.01), seed=0)
    loss.backward()                     # each bucket: compressed_round(comm, mechanism, buffer[None], gen)
    state.meter.bytes_sent              # [1] float64, bytes this rank has put on the wire so far

For every bucket (a flat float32 vector ``buffer`` of d gradient values, the local mean gradient):

* iterations ``< start_iter``: a dense mean all-reduce through the :class:`DistComm` (4·d bytes sent
  per worker, counted by the meter), which is what DDP does without a hook;
* from ``start_iter`` on, a :class:`~commlab.compress.ef.Mechanism`:
  :func:`~commlab.distributed.compressed.start_round` on ``buffer[None]`` (shape ``[1, d]``): the
  client step (error feedback memory stays on this rank), then an all-reduce of the values when the
  compressor is linear and the mechanism aggregates through the mean, else an all-gather of each
  rank's payload packed into ``ceil(bits / 8)`` bytes, then the same ``mechanism.aggregate`` on
  every rank. That aggregate is the mean over the N ranks (it divides by N), so the bucket receives
  the **mean** gradient estimate, as plain DDP's gradients are the mean of the ranks' gradients;
* from ``start_iter`` on, a :class:`~commlab.distributed.powersgd.PowerSGDReducer`: its two
  all-reduces on the bucket's tensors, each parameter its own matrix.

**Overlap** (``overlap=True``, the default). The hook hands the bucket's round (compression, the
collectives, decoding) to the state's one communication thread and returns at once a future that
the thread completes when the round has, so DDP goes on computing the gradients of the next buckets
meanwhile, as its own all-reduce does. One thread runs the rounds of all buckets in the order DDP
hands them over, so every rank issues its collectives in the same order (PowerSGD's second
all-reduce depends on its first: launched from callbacks, the order would depend on timing).
``overlap=False`` runs each bucket's round to the end inside the hook (what DDP then waits for is
already done): the baseline the overlap is measured against.

The meter therefore counts the compressor's own bits rounded up to whole bytes per message and
bucket, and the dense warm-up at 32 bits per value.

Buckets and their state. Mechanisms are made by ``factory()`` (one per bucket, so error feedback
memories are per bucket) and keyed by ``bucket.index()``. DDP builds provisional buckets for its
first iteration and rebuilds them, in gradient-ready order, before its second; an index then names
different parameters. So compression starts at ``start_iter >= 1`` (default 2), and each mechanism
remembers the layout of its bucket (the shapes of its parameters, in order). A state restored into
a fresh DDP model (from :meth:`CompressionHookState.state_dict` or pickle) checks the layout of
every bucket: while DDP's buckets are still provisional and do not match, that bucket is reduced
densely for the iteration (error feedback memory kept); a mismatch once DDP has rebuilt its
buckets raises a ValueError (the checkpoint belongs to another model or bucket size).

Randomness. A randomised compressor draws from ``SeedTree(seed).torch("ddp_hook", iteration,
bucket)``, keyed further by the rank unless the compressor's ``shared_draws`` says one draw serves
all rows of a stacked call on :class:`~commlab.comm.communicator.SimComm` (shared-index Rand-k,
PowerSGD), so that every rank must draw the same one.

On CUDA buckets (NCCL) the dense warm-up stays on the device; the compressed round runs on a CPU
copy (payloads are packed with NumPy), so the process group needs a CPU backend as well, e.g.
``init_process_group("cpu:gloo,cuda:nccl")``.
"""

# No ``from __future__ import annotations``: DDP compares the hook's annotations with the real
# classes (dist.GradBucket, torch.futures.Future[torch.Tensor]) and rejects strings.
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from commlab._checks import check_int, check_seed
from commlab.comm import DistComm, Meter
from commlab.distributed.schemes import Scheme, draws, gradient_round, is_scheme
from commlab.seeding import SeedTree

Layout = tuple[tuple[int, ...], ...]


class CompressionHookState:
    """What :func:`compression_hook` keeps between calls: per-bucket schemes, the iteration, the meter.

    Args:
        factory: a callable with no arguments returning a *fresh* commlab scheme on every call (a
            :class:`~commlab.compress.ef.Mechanism` or a
            :class:`~commlab.distributed.powersgd.PowerSGDReducer`, e.g.
            ``functools.partial(gradient_scheme, "topk", ratio=0.01)``); it must be picklable for the
            state to be pickled (a module-level function or ``functools.partial``, not a lambda).
        seed: non-negative integer root of the hook's generators.
        start_iter: the first iteration (counted from 0) that is compressed, an integer >= 1,
            because DDP rebuilds its buckets after iteration 0.
        process_group: the process group DDP reduces over; None for the default (world) group.
        shared_randomness: whether all ranks draw the same random numbers; None takes the
            compressor's ``shared_draws`` (shared-index Rand-k and PowerSGD share, others draw
            independently per rank).
        deterministic: passed to :class:`DistComm`: all-reduce as all-gather plus a sum in rank
            order, bit-identical to :class:`SimComm` (more receive traffic; meter unchanged).
        overlap: launch each bucket's communication in the background and return a future that
            completes with it (see the module docstring); False: finish it inside the hook.

    Attributes:
        iteration: training iterations completed (a bucket with ``is_last()`` ends one).
        mechanisms: ``{bucket index: mechanism}``.
        meter: the :class:`~commlab.comm.communicator.Meter` of this rank (``bytes_sent`` ``[1]``,
            bytes; ``syncs``; ``peak_bytes``), kept across pickling and in :meth:`state_dict`.
    """

    def __init__(self, factory: Callable[[], Scheme], *, seed: int, start_iter: int = 2, process_group=None,
                 shared_randomness: bool | None = None, deterministic: bool = False, overlap: bool = True):
        if not callable(factory):
            raise TypeError(f"factory must be a callable returning a commlab scheme, got {type(factory).__name__}")
        probe = factory()
        if not is_scheme(probe):
            raise TypeError("factory() must return a commlab.compress.ef Mechanism or a PowerSGDReducer, got "
                            f"{type(probe).__name__}")
        if factory() is probe:
            raise ValueError("factory() must return a new mechanism on every call (each bucket keeps its own state)")
        if isinstance(start_iter, int) and not isinstance(start_iter, bool) and start_iter < 1:
            raise ValueError(
                f"start_iter must be >= 1 (DDP rebuilds its gradient buckets after iteration 0, so state keyed "
                f"by bucket index is only valid from then on), got {start_iter}"
            )
        if shared_randomness is not None and not isinstance(shared_randomness, bool):
            raise TypeError(f"shared_randomness must be True, False or None, got {shared_randomness!r}")
        if not isinstance(overlap, bool):
            raise TypeError(f"overlap must be a bool, got {overlap!r}")
        self.factory = factory
        self.seed = check_seed(seed)
        self.start_iter = check_int("start_iter", start_iter, low=1)
        self.process_group = process_group
        self.shared_randomness = draws(probe)[1] if shared_randomness is None else shared_randomness
        self.deterministic = bool(deterministic)
        self.overlap = overlap
        self.iteration = 0
        self.mechanisms: dict[int, Scheme] = {}
        self.layouts: dict[int, Layout] = {}
        self.meter = Meter(1)
        self._attached = 0  # iterations since this object was made, loaded or unpickled
        self._comm: DistComm | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def comm(self) -> DistComm:
        """The :class:`DistComm` over :attr:`process_group`, made on first use (after unpickling too)."""
        if self._comm is None:
            # DDP has already checked that every rank holds the same parameter shapes, so the per-call
            # shape agreement (an extra all-gather per bucket) is left off.
            self._comm = DistComm(self.process_group, deterministic=self.deterministic, check_shapes=False)
            self._comm.meter = self.meter
        return self._comm

    @property
    def worker(self) -> ThreadPoolExecutor:
        """The one thread that runs the buckets' rounds with ``overlap``, made on first use."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commlab-ddp-hook")
        return self._worker

    def generator(self, bucket_index: int) -> torch.Generator:
        """The generator for this iteration and bucket (and rank, unless randomness is shared)."""
        keys = (self.iteration, bucket_index) if self.shared_randomness else (self.iteration, bucket_index,
                                                                              self.comm.rank)
        return SeedTree(self.seed).torch("ddp_hook", *keys)

    def mechanism_for(self, bucket_index: int, layout: Layout) -> Scheme | None:
        """The mechanism of bucket ``bucket_index`` if it may run now, else None (reduce densely).

        Raises:
            ValueError: the bucket's layout differs from the one its state was built for, after DDP
                has rebuilt its buckets.
        """
        known = self.layouts.get(bucket_index)
        if known is None:
            if self._attached == 0:  # DDP's provisional buckets: build nothing on them
                return None
            self.mechanisms[bucket_index] = self.factory()
            self.layouts[bucket_index] = layout
        elif known != layout:
            if self._attached == 0:
                return None
            raise ValueError(
                f"DDP bucket {bucket_index} holds parameters of shapes {list(layout)} but its hook state was "
                f"built for {list(known)}: the state belongs to another model or bucket size"
            )
        return self.mechanisms[bucket_index]

    def end_iteration(self) -> None:
        self.iteration += 1
        self._attached += 1

    # -- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain data for a checkpoint: the iteration, each bucket's layout and mechanism state, the meter."""
        return {
            "iteration": self.iteration,
            "buckets": {index: {"layout": self.layouts[index], "mechanism": mechanism.state_dict()}
                        for index, mechanism in self.mechanisms.items()},
            "meter": {"bytes_sent": self.meter.bytes_sent.clone(), "syncs": self.meter.syncs,
                      "peak_bytes": self.meter.peak_bytes, "calls": dict(self.meter.calls)},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (mechanisms are rebuilt with the factory)."""
        if not isinstance(state, dict) or not {"iteration", "buckets", "meter"} <= state.keys():
            raise ValueError("state must be a dict from CompressionHookState.state_dict() "
                             "(keys 'iteration', 'buckets', 'meter')")
        self.iteration = check_int("state['iteration']", state["iteration"], low=0)
        self.mechanisms, self.layouts = {}, {}
        for index, bucket in state["buckets"].items():
            mechanism = self.factory()
            mechanism.load_state_dict(bucket["mechanism"])
            self.mechanisms[int(index)] = mechanism
            self.layouts[int(index)] = tuple(tuple(shape) for shape in bucket["layout"])
        meter = state["meter"]
        self.meter.bytes_sent = meter["bytes_sent"].clone().to(torch.float64).reshape(1)
        self.meter.syncs, self.meter.peak_bytes = int(meter["syncs"]), float(meter["peak_bytes"])
        self.meter.calls = dict(meter["calls"])
        self._attached = 0

    def __getstate__(self):
        """Everything but the communicator and the process group, which cannot be pickled."""
        state = self.__dict__.copy()
        state["_comm"], state["process_group"], state["_worker"] = None, None, None
        return state

    def __setstate__(self, state):
        """Restore; the communicator is rebuilt on first use over the default group (set
        :attr:`process_group` first if DDP uses another one)."""
        self.__dict__.update(state)
        self._attached = 0


def compression_hook(state: CompressionHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The DDP communication hook: replaces the bucket's local gradients by the mean estimate.

    Args:
        state: the :class:`CompressionHookState` given to ``register_comm_hook``.
        bucket: DDP's bucket; ``bucket.buffer()`` is a flat ``[d]`` tensor of this rank's gradients.

    Returns:
        A future completed with the bucket buffer ``[d]``, overwritten with the estimate of the mean
        gradient over all ranks, once the bucket's communication has completed (already completed
        without ``overlap``).
    """
    if not isinstance(state, CompressionHookState):
        raise TypeError(f"state must be a CompressionHookState, got {type(state).__name__}")
    buffer = bucket.buffer()
    layout = tuple(tuple(p.shape) for p in bucket.parameters())
    mechanism = state.mechanism_for(bucket.index(), layout) if state.iteration >= state.start_iter else None
    generator = state.generator(bucket.index()) if mechanism is not None and draws(mechanism)[0] else None
    if bucket.is_last():
        state.end_iteration()

    def run() -> torch.Tensor:
        if mechanism is None:
            mean = state.comm.all_reduce(buffer.detach()[None], op="mean").wait()[0]
        else:
            mean = gradient_round(state.comm, mechanism, buffer.detach()[None].cpu(), generator, layout)
        buffer.copy_(mean)
        return buffer

    if not state.overlap:
        return _completed(run())
    future = torch.futures.Future()
    state.worker.submit(_settle, future, run)
    return future


def _settle(future: torch.futures.Future, run: Callable[[], torch.Tensor]) -> None:
    """Complete ``future`` with ``run()`` (or its exception), on the hook's communication thread."""
    try:
        future.set_result(run())
    except BaseException as error:  # DDP re-raises it at the end of the backward pass
        future.set_exception(error)


def _completed(value) -> torch.futures.Future:
    future = torch.futures.Future()
    future.set_result(value)
    return future


def register_compression(ddp_model: DistributedDataParallel, factory: Callable[[], Scheme], *, seed: int,
                         start_iter: int = 2, process_group=None, **options) -> CompressionHookState:
    """Register :func:`compression_hook` on ``ddp_model`` with a new :class:`CompressionHookState`.

    Args:
        ddp_model: a ``DistributedDataParallel`` model with no communication hook yet.
        factory, seed, start_iter: see :class:`CompressionHookState`.
        process_group: default: the model's own process group.
        options: ``shared_randomness`` and ``deterministic`` of :class:`CompressionHookState`.

    Returns:
        The state (its :attr:`~CompressionHookState.meter` counts this rank's bytes).
    """
    if not isinstance(ddp_model, DistributedDataParallel):
        raise TypeError(f"ddp_model must be a torch DistributedDataParallel model, got {type(ddp_model).__name__}")
    group = process_group if process_group is not None else ddp_model.process_group
    state = CompressionHookState(factory, seed=seed, start_iter=start_iter, process_group=group, **options)
    ddp_model.register_comm_hook(state, compression_hook)
    return state



