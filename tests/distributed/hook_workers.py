"""Functions the DDP-hook tests run on each rank (module-level, so ``spawn`` can pickle them).

Each takes ``(rank, world_size, *args)`` as :func:`commlab.comm.launch.run_workers` calls it.
"""

from __future__ import annotations

import copy
import functools
import pickle

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from commlab.compress import TopK
from commlab.compress.ef import EF14
from commlab.distributed.ddp_hook import CompressionHookState, compression_hook, register_compression
from commlab.distributed.schemes import gradient_scheme
from commlab.models.cnn import SmallCNN
from commlab.seeding import SeedTree, seeded_init
from commlab.train.ddp import TrainConfig, train_ddp

TOPK_FACTORY = functools.partial(gradient_scheme, "topk", ratio=0.05)


def recording_hook(state_and_log, bucket):
    """:func:`compression_hook`, logging ``(iteration, bucket index, buffer before, buffer after)``
    (after: once the hook's future has completed)."""
    state, log = state_and_log
    iteration, before = state.iteration, bucket.buffer().clone()
    future = compression_hook(state, bucket)
    log.append((iteration, bucket.index(), before, future.wait().clone()))
    return future


def batch(seed, step, rank, size=8):
    """This rank's random minibatch ``([size, 1, 28, 28], [size])`` at ``step``."""
    generator = SeedTree(seed).torch("batch", step, rank)
    return torch.randn(size, 1, 28, 28, generator=generator), torch.randint(10, (size,), generator=generator)


def model(seed, **kwargs):
    with seeded_init(SeedTree(seed).seed_for("init")):
        return SmallCNN(**kwargs)


def flat_grad(module):
    return torch.cat([p.grad.reshape(-1) for p in module.parameters()])


def hooked_gradients(rank, world_size, seed, steps, start_iter):
    """Gradients of plain DDP and of hooked DDP models after each of ``steps`` backward passes on
    the same batches (parameters fixed); the ``topk`` model logs its buckets before and after."""
    models = {name: DistributedDataParallel(model(seed)) for name in ("plain", "none", "topk_full", "topk")}
    states = {
        "none": register_compression(models["none"], functools.partial(gradient_scheme, "none"), seed=seed,
                                     start_iter=start_iter),
        "topk_full": register_compression(models["topk_full"], functools.partial(EF14, TopK(1.0)), seed=seed,
                                          start_iter=start_iter),
    }
    states["topk"] = CompressionHookState(TOPK_FACTORY, seed=seed, start_iter=start_iter)  # registered by hand
    log = []
    models["topk"].register_comm_hook((states["topk"], log), recording_hook)
    grads = {name: [] for name in models}
    for step in range(steps):
        x, y = batch(seed, step, rank)
        for name, ddp in models.items():
            ddp.zero_grad(set_to_none=True)
            F.cross_entropy(ddp(x), y).backward()
            grads[name].append(flat_grad(ddp.module))
    meters = {name: state.meter.summary() for name, state in states.items()}
    return {"grads": grads, "log": log, "meters": meters, "iterations": states["topk"].iteration}


def checkpoint_resume(rank, world_size, seed):
    """Train 4 steps with the Top-k hook, checkpoint, resume a fresh DDP model from the pickled
    hook state for 2 steps (logged), then load the state into a model of another shape."""
    ddp = DistributedDataParallel(model(seed))
    state = register_compression(ddp, TOPK_FACTORY, seed=seed, start_iter=2)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)

    def train_step(ddp, optimizer, step):
        x, y = batch(seed, step, rank)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()

    for step in range(4):
        train_step(ddp, optimizer, step)
    saved = state.state_dict()
    blob = pickle.dumps(state)
    weights, moments = copy.deepcopy(ddp.module.state_dict()), copy.deepcopy(optimizer.state_dict())

    loaded = CompressionHookState(TOPK_FACTORY, seed=seed, start_iter=2)
    loaded.load_state_dict(saved)
    unpickled = pickle.loads(blob)
    dropped = {"comm": unpickled._comm is None, "process_group": unpickled.process_group is None}

    fresh = model(seed)
    fresh.load_state_dict(weights)
    resumed = DistributedDataParallel(fresh)
    resumed_optimizer = torch.optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    resumed_optimizer.load_state_dict(moments)
    log = []
    resumed.register_comm_hook((unpickled, log), recording_hook)
    bytes_before = float(unpickled.meter.bytes_sent[0])
    for step in (4, 5):
        train_step(resumed, resumed_optimizer, step)

    other = DistributedDataParallel(model(seed, hidden=32))
    other.register_comm_hook(pickle.loads(blob), compression_hook)
    mismatch = None
    try:
        for step in (4, 5):
            x, y = batch(seed, step, rank)
            F.cross_entropy(other(x), y).backward()
    except Exception as error:  # raised inside the hook on every rank alike
        mismatch = f"{type(error).__name__}: {error}"
    return {"saved": saved, "loaded": loaded.state_dict(), "unpickled": pickle.loads(blob).state_dict(),
            "dropped": dropped, "log": log, "bytes_before": bytes_before,
            "bytes_after": float(unpickled.meter.bytes_sent[0]), "iteration": unpickled.iteration,
            "mismatch": mismatch}


def train_entry(rank, world_size, config):
    """:func:`commlab.train.ddp.train_ddp` with ``config`` (a dict of TrainConfig fields)."""
    return train_ddp(TrainConfig(**config))


def overlap_pairs(rank, world_size, seed, steps, flag):
    """For each scheme, two DDP models with small buckets (several per step), one hooked with
    ``overlap`` and one without, trained side by side on the same batches; returns their gradients,
    the number of buckets, and on rank 0 whether the first overlapped bucket's future was still pending
    when the hook returned (rank 1 starts its first backward pass only once rank 0 has written ``flag``)."""
    import os
    import time

    from commlab.distributed.ddp_hook import compression_hook as hook

    pending = []

    def watching(state, bucket):
        future = hook(state, bucket)
        if not pending:
            pending.append(not future.done())
            open(flag, "w").close()
        return future

    out = {}
    for scheme in ("none", "topk", "powersgd", "sign"):
        factory = functools.partial(gradient_scheme, scheme, ratio=0.05, rank=2)
        pair = {}
        for overlap in (True, False):
            ddp = DistributedDataParallel(model(seed), bucket_cap_mb=0.1)
            state = CompressionHookState(factory, seed=seed, start_iter=2, overlap=overlap)
            ddp.register_comm_hook(state, watching if (overlap and scheme == "none") else hook)
            pair[overlap] = (ddp, state)
        grads = {True: [], False: []}
        for step in range(steps):
            x, y = batch(seed, step, rank)
            for overlap, (ddp, _) in pair.items():
                while rank == 1 and not os.path.exists(flag):
                    time.sleep(0.01)
                ddp.zero_grad(set_to_none=True)
                F.cross_entropy(ddp(x), y).backward()
                grads[overlap].append(flat_grad(ddp.module))
        out[scheme] = {"grads": grads, "buckets": len(pair[True][1].layouts),
                       "bytes": {o: float(s.meter.bytes_sent[0]) for o, (_, s) in pair.items()}}
    return {"schemes": out, "pending": pending}
