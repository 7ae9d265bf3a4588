"""Transport between workers: what crosses the wire, how long it takes, who takes part.

* :mod:`~commlab.comm.communicator` — :class:`Communicator` with :class:`SimComm` (N workers stacked
  in one process) and :class:`DistComm` (one worker per ``torch.distributed`` rank), the
  :class:`Meter` of bytes sent and :class:`Work` (overlapped collectives on the simulated clock);
* :mod:`~commlab.comm.noisy` — :class:`NoisyLinks`, any Communicator over noisy links (AWGN or bit flips);
* :mod:`~commlab.comm.link` — :class:`Link`, the one latency/bandwidth (α–β) model, in bit/s;
* :mod:`~commlab.comm.launch` — run a function on N local gloo processes, never hanging;
* :mod:`~commlab.comm.ft` — :class:`FTComm`, the fault-tolerant Communicator on a torchft Manager
  (quorum, commit or roll back, heal a replica from a peer's ``state_dict``), and
  :class:`FaultTolerant`, which runs any method on it; :mod:`~commlab.comm.ft_launch` —
  :func:`run_replicas`, a Lighthouse and restartable replica processes (needs the ``ft`` extra);
* :mod:`~commlab.comm.faults` — :class:`Fault` / :class:`Faults`: a replica dies, stalls, or leaves
  and rejoins at a given step, for real processes and as a membership schedule for SimComm;
* :mod:`~commlab.comm.netns` — a real rate-limited link between two network namespaces;
* :mod:`~commlab.comm.membership` — which machines take part in each round (churn);
* :mod:`~commlab.comm.hashing` — fingerprints to check that replicas are bit-identical.
"""

from commlab.comm.communicator import CommunicationError, Communicator, DistComm, Meter, SimComm, Work
from commlab.comm.faults import Fault, Faults
from commlab.comm.ft import FaultTolerant, FTComm
from commlab.comm.ft_launch import run_replicas
from commlab.comm.link import Link
from commlab.comm.membership import Membership
from commlab.comm.noisy import NoisyLinks

__all__ = ["CommunicationError", "Communicator", "DistComm", "FTComm", "Fault", "FaultTolerant", "Faults", "Link",
           "Membership", "Meter", "NoisyLinks", "SimComm", "Work", "run_replicas"]
