"""Every training algorithm by name: ``make_method("diloco", comm, params, sync_every=30, inner=adam)``.

Swapping one method for another in a notebook or a program is a change of the name (and of the
hyper-parameters that belong to it); :data:`METHODS` lists the names.
"""

from __future__ import annotations

import torch

from commlab.comm import Communicator
from commlab.distributed.dgc import DGC
from commlab.distributed.fl import FedAvg, FedEF, Scafcom, Scaffold, Scallion
from commlab.distributed.gossip import DecentralizedSGD
from commlab.distributed.method import Method
from commlab.distributed.onebit_adam import OneBitAdam
from commlab.distributed.outer import CO2, AsyncDiLoCo, DataParallel, DiLoCo, LocalSGD, NoLoCo, StreamingDiLoCo
from commlab.distributed.spsa import SharedSeedSPSA

METHODS: dict[str, type[Method]] = {
    "data_parallel": DataParallel,
    "diloco": DiLoCo,
    "local_sgd": LocalSGD,
    "streaming_diloco": StreamingDiLoCo,
    "noloco": NoLoCo,
    "co2": CO2,
    "async_diloco": AsyncDiLoCo,
    "gossip": DecentralizedSGD,
    "dgc": DGC,
    "onebit_adam": OneBitAdam,
    "spsa": SharedSeedSPSA,
    "fedavg": FedAvg,
    "fedef": FedEF,
    "scaffold": Scaffold,
    "scallion": Scallion,
    "scafcom": Scafcom,
}


def make_method(name: str, comm: Communicator, params: torch.Tensor, /, **hyper) -> Method:
    """The method registered as ``name`` (one of :data:`METHODS`), built as ``cls(comm, params, **hyper)``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; the methods are {', '.join(sorted(METHODS))}")
    return METHODS[name](comm, params, **hyper)
