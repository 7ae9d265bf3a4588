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

import torch

from commlab.comm import Communicator
from commlab.compress.ef import Mechanism
from commlab.compress.payload import Part, Payload
from commlab.compress.quantize import Sign


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
    if comm.local_workers == comm.world_size and comm.lossless:
        # every sender is local and the wire is lossless: what arrived is what the workers decoded
        return mechanism.server_step(payload), payload
    return mechanism.aggregate(mechanism.compressor.decompress(received)), payload


def majority_vote(comm: Communicator, g: torch.Tensor) -> tuple[torch.Tensor, Payload]:
    """signSGD with majority vote (Bernstein et al. 2018, Alg. 3): each worker sends the signs of its
    row of ``g`` ``[L, d]`` (one bit per coordinate, packed) and every worker takes the vote.

    vote_j = sign(Σ_i sign(g_ij)), a tie counting as +1 (``Sign``'s code for g ≥ 0), so the result
    ``[d]`` has entries ±1 and is equal on every worker. The signs cross in one all-gather of
    ``ceil(d / 8)`` bytes per worker; the vote is computed by every receiver, so no downlink message
    is needed (with a parameter server it would be one bit per coordinate down).

    Returns:
        ``(vote, payload)``: the vote ``[d]`` (float32) and the local workers' sign payload.
    """
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
    if not isinstance(g, torch.Tensor) or g.dim() != 2 or g.shape[0] != comm.local_workers:
        raise ValueError(f"g must be [local workers = {comm.local_workers}, d], got "
                         f"{tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}")
    payload = Sign().compress(g)
    signs = Sign().decompress(gather_payloads(comm, payload)).to(torch.float32)  # [N, d] of ±1
    return torch.where(signs.sum(dim=0) >= 0, 1.0, -1.0), payload


def gather_payloads(comm: Communicator, payload: Payload) -> Payload:
    """All-gather the local workers' ``[L, d]`` payload as packed bytes; returns the ``[N, d]``
    payload. A payload whose rows carry a ``"count"`` part (their size varies: SampledTopK,
    Threshold) crosses through :func:`gather_varying`."""
    rows = payload.split_rows()
    if "count" in (part.name for part in payload.parts):
        return Payload.stack(gather_varying(comm, rows))
    everyone = comm.all_gather(Payload.pack_rows(rows).to(comm.device)).wait()
    return Payload.stack(Payload.unpack_rows(everyone, rows[0].header))


def gather_varying(comm: Communicator, rows: list[Payload]) -> list[Payload]:
    """All-gather one-row payloads whose sizes differ between workers; returns the N workers' payloads.

    The local workers' ``rows`` (``[d]`` payloads of one layout whose parts each hold the same,
    varying, number of entries, e.g. from :meth:`SampledTopK.compress_at`) cross in two all-gathers:
    the counts first (a 32-bit count per worker), then the packed payloads, zero-padded to the longest.
    """
    if len(rows) != comm.local_workers:
        raise ValueError(f"rows must hold one payload per local worker ({comm.local_workers}), got {len(rows)}")
    counts = torch.tensor([[row["indices"].counts[0]] for row in rows], dtype=torch.int32)
    everyone = comm.all_gather(counts.to(comm.device)).wait().cpu()[:, 0].tolist()
    headers = [rows[0].header.with_count(c) for c in everyone]
    packed = Payload.pack_rows(rows, width=max(h.nbytes for h in headers))  # the longest of all N
    return Payload.unpack_rows(comm.all_gather(packed.to(comm.device)).wait(), headers)


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
