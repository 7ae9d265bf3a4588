"""What the noisy-link tests run on each rank (module-level, so ``spawn`` can pickle it)."""

from __future__ import annotations

from commlab.channels import AWGN, BinarySymmetricChannel
from commlab.comm import DistComm, NoisyLinks, SimComm


def channels(kind: str) -> dict:
    """The uplink and downlink of one test case: ``"awgn"`` (analog) or ``"flips"`` (bit errors)."""
    if kind == "awgn":
        return {"uplink": AWGN(no=1e-2, real=True), "downlink": AWGN(no=3e-3, real=True)}
    return {"uplink": BinarySymmetricChannel(0.02), "downlink": BinarySymmetricChannel(0.01)}


def every_collective(comm, x, weights, pairs, kind):
    """The collectives a noisy link supports for ``kind``, on ``x`` ``[L, ...]``; the last all-reduce
    is launched in the background with ``start``."""
    out = {
        "sum": comm.all_reduce(x, "sum").wait(),
        "mean": comm.all_reduce(x, "mean").wait(),
        "gather": comm.all_gather(x).wait(),
        "broadcast": comm.broadcast(x, src=comm.world_size - 1).wait(),
        "exchange": comm.exchange(x, pairs).wait(),
    }
    if kind == "awgn":  # a gossip round sums its messages: only analog noise applies to it
        out["mix"] = comm.mix(x, weights).wait()
    out["started"] = comm.start("all_reduce", x, op="sum").wait()
    return out


def simulated(x, weights, pairs, kind, seed):
    comm = NoisyLinks(SimComm(x.shape[0]), **channels(kind), seed=seed)
    return every_collective(comm, x, weights, pairs, kind), comm.meter.bytes_sent.clone(), comm.state_dict()["noise"]


def on_rank(rank, world_size, x, weights, pairs, kind, seed):
    comm = NoisyLinks(DistComm(deterministic=True), **channels(kind), seed=seed)
    comm.check_same("seed", seed)  # the wrapped communicator checks agreement, without noise or a call count
    out = every_collective(comm, x[rank : rank + 1], weights, pairs, kind)
    return out, comm.meter.bytes_sent.clone(), comm.state_dict()["noise"]
