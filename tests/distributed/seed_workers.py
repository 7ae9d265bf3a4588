"""Rank functions for test_seed_agreement.py (module level, so spawn can pickle them)."""

import torch

from commlab.comm import DistComm
from commlab.compress import RandK, TopK
from commlab.compress.ef import Plain
from commlab.distributed.outer import DataParallel, StreamingDiLoCo
from commlab.distributed.spsa import SharedSeedSPSA

METHODS = ("spsa", "shared_randk", "streaming_shared_randk", "topk")


def build_all(rank, world_size, cases):
    """``{(method, seeds): outcome}`` of :func:`build` for every method and pair of seeds, in one process."""
    return {(method, seeds): build(rank, method, seeds) for method in METHODS for seeds in cases}


def build(rank, method, seeds):
    """Build ``method`` on a DistComm with this rank's seed ``seeds[rank]``; "built" or the ValueError."""
    comm, params, seed = DistComm(), torch.zeros(1, 8), seeds[rank]
    sgd = lambda p: torch.optim.SGD([p], lr=0.1)  # noqa: E731
    try:
        if method == "spsa":
            SharedSeedSPSA(comm, params.double(), seed=seed)
        elif method == "shared_randk":
            DataParallel(comm, params, inner=sgd, mechanism=Plain(RandK(k=2, shared=True)), seed=seed)
        elif method == "topk":  # no shared draws: the seeds may differ
            DataParallel(comm, params, inner=sgd, mechanism=Plain(TopK(k=2)), seed=seed)
        elif method == "streaming_shared_randk":
            StreamingDiLoCo(comm, params, sync_every=4, compressor=RandK(k=2, shared=True), block=4, seed=seed)
        comm.all_reduce(torch.ones(1, 1)).wait()  # the ranks are still in step afterwards
        return "built"
    except ValueError as error:
        return f"ValueError: {error}"


def unchecked_mismatch(rank, world_size):
    """check_shapes=False and an all-gather of rows of 3 and 4 values."""
    return tuple(DistComm(check_shapes=False).all_gather(torch.ones(1, 3 + rank)).wait().shape)
