"""Cost models of systems: collective times on the α–β link of :class:`commlab.comm.Link` (bit/s),
compute utilisation and overlapped rounds (:mod:`~commlab.systems.netmodel`), the placement of
mixture-of-experts layers on devices (:mod:`~commlab.systems.placement`), and a discrete-event model
on simpy of ranks that compute and share their links (:mod:`~commlab.systems.events`) with ring, tree,
reduce-scatter, all-gather and all-to-all collectives as its processes
(:mod:`~commlab.systems.collectives`). Sub-modules are imported directly."""
