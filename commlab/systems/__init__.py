"""Cost models of systems: collective times on the α–β link of :class:`commlab.comm.Link` (bit/s),
compute utilisation and overlapped rounds (:mod:`~commlab.systems.netmodel`), the placement of
mixture-of-experts layers on devices (:mod:`~commlab.systems.placement`), and a discrete-event model
on simpy of ranks that compute and share their links (:mod:`~commlab.systems.events`) with ring, tree,
reduce-scatter, all-gather and all-to-all collectives as its processes
(:mod:`~commlab.systems.collectives`), calibrated against this machine by
:mod:`~commlab.systems.calibration` (GEMM and gloo all-reduce timings, fitted F and α–β link). On it:
a row-parallel layer's GEMM + reduce-scatter overlap with memory contention (T3,
:mod:`~commlab.systems.overlap`), slow links and ranks and their detection (C4D,
:mod:`~commlab.systems.faults`), ECMP against planned paths on a leaf–spine fabric (C4P,
:mod:`~commlab.systems.paths`), one MoE layer's coarse and tile-level overlap (Comet,
:mod:`~commlab.systems.moe_overlap`) and MoE layer schedules with gradient partitioning (FSMoE,
:mod:`~commlab.systems.moe_schedule`), and the costs of elastic training after a rank is lost —
pipeline re-partitioning, recovery traffic, checkpoint reload (ElasWave, :mod:`~commlab.systems.elastic`).
Sub-modules are imported directly."""
