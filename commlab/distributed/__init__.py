"""Communication between workers: the Communicator, what runs on it, launchers and cost models.

The transport and its costs:

* :mod:`~commlab.distributed.comm` — :class:`Communicator` with :class:`SimComm` (N workers stacked
  in one process) and :class:`DistComm` (one worker per ``torch.distributed`` rank), the meter and
  overlapped collectives on the simulated clock;
* :mod:`~commlab.distributed.link` — the latency/bandwidth (α–β) model of a link;
  :mod:`~commlab.distributed.netmodel` — collective times, compute utilisation, overlapped rounds;
* :mod:`~commlab.distributed.launch` — run a function on N local gloo processes, never hanging;
  :mod:`~commlab.distributed.netns` — a real rate-limited link between two network namespaces;
* :mod:`~commlab.distributed.membership` — which machines take part in each round (churn);
  :mod:`~commlab.distributed.hashing` — fingerprints to check that replicas are bit-identical.

Algorithms, each written once against the Communicator:

* gradient compression in data-parallel training: :mod:`~commlab.distributed.compressed` (one
  compressed aggregation round), :mod:`~commlab.distributed.schemes`, :mod:`~commlab.distributed.ddp_hook`
  (as a DDP communication hook), :mod:`~commlab.distributed.data_parallel` (simulated DDP),
  :mod:`~commlab.distributed.train` (torchrun entry point), :mod:`~commlab.distributed.dgc` (Deep
  Gradient Compression), :mod:`~commlab.distributed.onebit_adam` (1-bit Adam);
* :mod:`~commlab.distributed.spsa` — shared-randomness SPSA, one byte per projected gradient;
* :mod:`~commlab.distributed.fl` — federated rounds: FedAvg, Fed-EF, SCAFFOLD, SCALLION, SCAFCOM;
* :mod:`~commlab.distributed.outer` — DiLoCo, Streaming DiLoCo, NoLoCo, CO2, local SGD (with
  :mod:`~commlab.distributed.outer_train`, their torchrun entry point);
* :mod:`~commlab.distributed.gossip` — decentralised SGD: topologies, schedules, a single final merge;
* :mod:`~commlab.distributed.placement` — expert placement for mixture-of-experts layers.

The communicator classes are re-exported here; other sub-modules are imported directly.
"""

from commlab.distributed.comm import CommunicationError, Communicator, DistComm, Meter, SimComm, Work
from commlab.distributed.link import Link

__all__ = ["CommunicationError", "Communicator", "DistComm", "Link", "Meter", "SimComm", "Work"]
