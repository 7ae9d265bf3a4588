"""Training algorithms, each written once against a :class:`commlab.comm.Communicator`.

Every method follows one shape (design.md, "One shape for training algorithms"): built as
``Method(comm, params, *, hyper...)`` with ``params`` the ``[L, d]`` replicas of this process,
updated in place; ``step(grads)`` for per-step methods, ``round(oracle)`` for round methods;
``summary()``, ``state_dict()`` / ``load_state_dict()`` and ``finish()`` everywhere. The base and
its record of collectives are in :mod:`~commlab.distributed.method`; :func:`make_method` builds any of
them by name.

* gradient compression in data-parallel training: :mod:`~commlab.distributed.compressed` (one
  compressed aggregation round, and the method that steps with it),
  :mod:`~commlab.distributed.schemes`, :mod:`~commlab.distributed.ddp_hook` (as a DDP communication
  hook), :mod:`~commlab.distributed.dgc` (Deep Gradient Compression),
  :mod:`~commlab.distributed.onebit_adam` (1-bit Adam);
* :mod:`~commlab.distributed.spsa` — shared-randomness SPSA, one byte per projected gradient;
* :mod:`~commlab.distributed.fl` — federated rounds: FedAvg, Fed-EF, SCAFFOLD, SCALLION, SCAFCOM;
* :mod:`~commlab.distributed.federated_lora` — FLASC: federated LoRA with Top-k sparse download and upload
  (optional error feedback) on the same round driver;
* :mod:`~commlab.distributed.representation_fl` — CreamFL: heterogeneous clients that exchange
  representations of a public set, and the server trained from their contrastive ensemble;
* :mod:`~commlab.distributed.outer` — DiLoCo, async DiLoCo, Streaming DiLoCo, NoLoCo, CO2, local SGD;
* :mod:`~commlab.distributed.robust` — Byzantine-robust aggregators (``AGGREGATORS``) and attacks (``ATTACKS``);
* :mod:`~commlab.distributed.gossip` — decentralised SGD: topologies, schedules, a single final merge;
  graph constants (χ₁, χ₂, spectral gaps);
* :mod:`~commlab.distributed.clocks` — independent Poisson clocks for asynchronous computation and gossip;
* :mod:`~commlab.distributed.graphs` — DADAO's graph families as edge lists (complete, cycle, path,
  star, grid, barbell, random geometric, time-varying);
* :mod:`~commlab.distributed.dadao` — DADAO (decoupled accelerated asynchronous gossip) on the clocks,
  with :mod:`~commlab.distributed.gradient_tracking` (DIGing, centralised AGD) as references;
* :mod:`~commlab.distributed.byzantine` — Byzantine-robust data-parallel SGD on any robust aggregator;
* :mod:`~commlab.distributed.admm` — consensus ADMM and its dual-free recursion for federated weighted
  least squares over noisy links, with Bernoulli client scheduling and the recursions' noise floors.
"""

from commlab.distributed.registry import METHODS, make_method

__all__ = ["METHODS", "make_method"]
