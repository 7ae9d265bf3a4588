"""Compressed aggregation over a Communicator: error feedback on the workers, the wire in between.

One round (the same code for :class:`~commlab.comm.communicator.SimComm` and
:class:`~commlab.comm.communicator.DistComm`)::

    estimate, payload = compressed_round(comm, mechanism, g, generator)   # g [L, d] -> [d]

1. every local worker runs the mechanism's client step on its row of ``g`` (error feedback state
   stays with the worker);
2. the messages cross the wire:
   * a *linear* compressor whose mechanism aggregates through the mean (Identity, shared-seed
     Rand-k) all-reduces its ``values`` part: each worker sends its values, nothing else;
   * any other compressor packs each worker's payload into exactly ``ceil(bits / 8)`` bytes
     (:meth:`~commlab.compress.payload.Payload.to_bytes`) and all-gathers them;
3. every worker decodes what it received and runs the same ``mechanism.aggregate``, so the server
   state is replicated and identical on all ranks.

The meter therefore counts the compressor's own bits, rounded up to whole bytes per message.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from commlab.comm import Communicator
from commlab.compress.ef import Mechanism
from commlab.compress.payload import Header, Part, Payload


def compressed_round(comm: Communicator, mechanism: Mechanism, g: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, Payload]:
    """One compressed aggregation of the local workers' vectors ``g`` ``[L, d]``.

    Returns:
        ``(estimate, payload)``: the server's vector ``[d]`` (equal on every worker) and the
        local workers' payload (``payload.row_bits`` are their uplink bits).
    """
    if not isinstance(mechanism, Mechanism):
        raise TypeError(f"mechanism must be a commlab.compress.ef Mechanism, got {type(mechanism).__name__}")
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
    if isinstance(g, torch.Tensor) and g.dim() == 2 and g.shape[0] != comm.local_workers:
        raise ValueError(f"g has {g.shape[0]} worker rows but the communicator hosts {comm.local_workers} workers")
    payload = mechanism.client_step(g, generator)
    if mechanism.compressor.linear and mechanism.mean_aggregate:
        return mechanism.aggregate(_all_reduce_mean(comm, mechanism, payload)), payload
    received = gather_payloads(comm, payload)
    if comm.local_workers == comm.world_size:
        # every sender is local and the wire is lossless: what arrived is what the workers decoded
        return mechanism.server_step(payload), payload
    return mechanism.aggregate(mechanism.compressor.decompress(received)), payload


def gather_payloads(comm: Communicator, payload: Payload) -> Payload:
    """All-gather the local workers' ``[L, d]`` payload as packed bytes; returns the ``[N, d]`` payload."""
    rows = payload.split_rows()
    everyone = comm.all_gather(pack_payloads(rows).to(comm.device)).wait()
    return Payload.stack(unpack_payloads(everyone, rows[0].header))


def pack_payloads(payloads: Sequence[Payload]) -> torch.Tensor:
    """The wire bytes of each payload as one row of a uint8 tensor ``[len(payloads), B]`` (CPU).

    Every payload must pack to the same B = ceil(bits / 8) bytes (a fixed-size compressor), since
    a collective moves equal-sized rows.
    """
    blobs = [p.to_bytes() for p in payloads]
    if len({len(blob) for blob in blobs}) > 1:
        raise ValueError("the workers' payloads differ in size; packing them needs a fixed-size compressor")
    return torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8).reshape(len(blobs), -1)


def unpack_payloads(rows: torch.Tensor, header: Header) -> list[Payload]:
    """Inverse of :func:`pack_payloads`: one payload per received byte row of ``rows`` ``[N, B]`` (any device)."""
    return [Payload.from_bytes(bytes(row.numpy()), header) for row in rows.cpu()]


def _all_reduce_mean(comm: Communicator, mechanism: Mechanism, payload: Payload) -> torch.Tensor:
    """The mean of all workers' decoded messages as one row ``[1, d]``, through an all-reduce."""
    values = payload["values"]
    rows = torch.stack(values.rows())
    total = comm.all_reduce(rows, op="sum").wait()[0]
    first = payload.split_rows()[0]
    parts = tuple(Part(p.name, total, p.kind, p.counts, p.width, p.dim) if p.name == "values" else p
                  for p in first.parts)
    summed = Payload(parts, first.shape, first.dtype)
    return (mechanism.compressor.decompress(summed) / comm.world_size)[None]
