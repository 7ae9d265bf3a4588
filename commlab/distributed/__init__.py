"""Communication between workers: expert placement and, later, the communicator, collectives and cost models.

The sub-modules are imported directly (``from commlab.distributed.placement import affinity_placement``);
this package re-exports nothing.
"""
