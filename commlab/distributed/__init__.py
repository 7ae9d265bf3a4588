"""Communication between workers: the Communicator, its cost model, launchers and expert placement.

* :mod:`~commlab.distributed.comm` — :class:`Communicator` with :class:`SimComm` (N workers stacked
  in one process) and :class:`DistComm` (one worker per ``torch.distributed`` rank), and the meter;
* :mod:`~commlab.distributed.link` — the latency/bandwidth (α–β) model of a link;
* :mod:`~commlab.distributed.compressed` — one compressed aggregation round over any communicator;
* :mod:`~commlab.distributed.launch` — run a function on N local gloo processes, never hanging;
* :mod:`~commlab.distributed.placement` — expert placement for mixture-of-experts layers.

The communicator classes are re-exported here; other sub-modules are imported directly.
"""

from commlab.distributed.comm import CommunicationError, Communicator, DistComm, Meter, SimComm, Work
from commlab.distributed.link import Link

__all__ = ["CommunicationError", "Communicator", "DistComm", "Link", "Meter", "SimComm", "Work"]
