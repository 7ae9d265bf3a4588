"""Cost models of systems: collective times on the α–β link of :class:`commlab.comm.Link` (bit/s),
compute utilisation and overlapped rounds (:mod:`~commlab.systems.netmodel`), and the placement of
mixture-of-experts layers on devices (:mod:`~commlab.systems.placement`). Sub-modules are imported
directly."""
