"""Noisy links: a Communicator whose wire adds channel noise to what crosses it.

:class:`NoisyLinks` wraps a :class:`~commlab.comm.SimComm` or :class:`~commlab.comm.DistComm` and
applies a :mod:`commlab.channels` model to every message, the **uplink** (what a worker transmits)
and the **downlink** (what a worker receives) separately, so any algorithm written against the
Communicator interface runs over noisy links unchanged::

    from commlab.channels import AWGN, BinarySymmetricChannel
    comm = NoisyLinks(SimComm(8), uplink=AWGN(no=1e-3, real=True), downlink=AWGN(no=1e-3, real=True), seed=0)
    mean = comm.all_reduce(grads, op="mean").wait()   # Σ_j (x_j + u_j) / N + d_i on worker i

Two kinds of channel:

* :class:`~commlab.channels.AWGN` on the analog values: ``x + w``, ``w ~ N(0, N0)`` per real entry
  (``real=True``; a complex-mode AWGN on complex tensors adds ``CN(0, N0)``). Its noise variance is
  the nominal ``N0`` (``no=``, or ``es/SNR`` from ``snr_db=``), independent of the signal;
* :class:`~commlab.channels.BinarySymmetricChannel` on the serialised message: every bit of the
  tensor's bytes (any dtype; a float's sign, exponent and mantissa alike) flips with probability
  ``p``. A flipped exponent bit can make a float huge, Inf or NaN, as on a real wire without a check.

What each collective delivers to worker i (u: uplink noise of the sender, d: downlink noise of the
receiver, each drawn independently per message):

* ``all_reduce``: ``Σ_j (x_j + u_j) + d_i`` (``"mean"``: the sum over N, then ``+ d_i``);
* ``broadcast(src)``: ``x_src + u_src + d_i``; the source keeps its own ``x_src``;
* ``mix(W)`` (gossip): ``W_ii x_i + Σ_{j≠i} W_ij (x_j + u_j + d_ij)``, one downlink draw per received
  message;
* ``exchange(pairs)``: ``x_j + u_j + d_i`` from partner j; a worker in no pair keeps ``x_i``;
* ``all_gather``: row j is ``x_j + u_j`` for everyone. Its result is one ``[N, ...]`` tensor shared by
  the local workers (SimComm), so each row crosses once: only the uplink applies.

The noise of worker r in the c-th collective is drawn from ``SeedTree(seed).torch(c, r, direction
[, sender])``: it depends on the seed, the call's index and the worker alone, so SimComm and
DistComm (``deterministic=True``) deliver bit-identical results, and a run resumed from
:meth:`NoisyLinks.state_dict` continues the same noise. All ranks must make the same collective calls
in the same order (as every collective requires). The wrapped communicator's meter counts the bytes
(noise does not change a message's size); :attr:`NoisyLinks.noise` counts what the channels did.
"""

from __future__ import annotations

import torch

from commlab.channels import AWGN, BinarySymmetricChannel
from commlab.comm.communicator import Communicator, Work
from commlab.seeding import SeedTree

DIRECTIONS = ("uplink", "downlink")
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)  # bit b of a byte, MSB first


def _check_channel(name: str, channel):
    if channel is None:
        return None
    if isinstance(channel, AWGN):
        if channel.power != "nominal":
            raise ValueError(f"{name}: an AWGN link needs power='nominal' (noise independent of the signal), "
                             f"got power={channel.power!r}")
        return channel
    if isinstance(channel, BinarySymmetricChannel):
        return channel
    raise TypeError(f"{name} must be a commlab.channels.AWGN, a BinarySymmetricChannel or None, "
                    f"got {type(channel).__name__}")


class _Counts:
    """What one direction's channel did to the local workers' messages."""

    def __init__(self):
        self.messages, self.entries, self.energy, self.bits, self.bit_flips = 0, 0, 0.0, 0, 0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for key in vars(self):
            setattr(self, key, type(getattr(self, key))(state[key]))


class NoisyLinks(Communicator):
    """A Communicator over noisy links: ``comm``'s collectives with channel noise on what crosses.

    Args:
        comm: the :class:`Communicator` that carries the messages (SimComm, or DistComm with
            ``deterministic=True`` to agree with SimComm bit for bit).
        uplink: the channel each transmitted message passes (AWGN, BinarySymmetricChannel or None).
        downlink: the channel each received message passes (the same kinds, or None).
        seed: non-negative integer root of the noise's :class:`~commlab.seeding.SeedTree`.

    Attributes:
        noise: per direction, counts over the local workers' messages: ``messages``, ``entries``
            (values passed through an AWGN link), ``energy`` (Σ w² of the AWGN noise added),
            ``bits`` (bits passed through a bit channel) and ``bit_flips``.
        calls: the number of collectives so far (the counter that keys the noise).
    """

    def __init__(self, comm: Communicator, *, uplink=None, downlink=None, seed: int):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
        self.comm = comm
        self.channels = {"uplink": _check_channel("uplink", uplink), "downlink": _check_channel("downlink", downlink)}
        self.seeds = SeedTree(seed)
        self.world_size, self.ranks, self.local_workers = comm.world_size, comm.ranks, comm.local_workers
        self._local = {int(r): row for row, r in enumerate(comm.ranks.tolist())}
        self.device = comm.device
        self.noise = {direction: _Counts() for direction in DIRECTIONS}
        self.calls = 0
        self._starter = None

    # -- what the wrapped communicator keeps -------------------------------------------------------

    @property
    def lossless(self) -> bool:
        return self.channels["uplink"] is None and self.channels["downlink"] is None

    @property
    def meter(self):
        return self.comm.meter

    @property
    def link(self):
        return self.comm.link

    @property
    def clock(self) -> float:
        return self.comm.clock

    def advance(self, seconds: float) -> float:
        return self.comm.advance(seconds)

    def check_same(self, what: str, value) -> None:
        self.comm.check_same(what, value)  # a check of agreement, not a message of the algorithm: noiseless

    def state_dict(self) -> dict:
        """The wrapped communicator's state, the call counter and the noise counts."""
        return {"comm": self.comm.state_dict(), "calls": self.calls,
                "noise": {d: counts.state_dict() for d, counts in self.noise.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.comm.load_state_dict(state["comm"])
        self.calls = int(state["calls"])
        for direction, counts in self.noise.items():
            counts.load_state_dict(state["noise"][direction])

    # -- collectives -------------------------------------------------------------------------------

    def all_reduce(self, x: torch.Tensor, op: str = "sum") -> Work:
        x, call = self._begin("all_reduce", x), self._next()
        sent = self._transmit(x, call)
        down = self._draws("downlink", x, call)
        return self._inner("all_reduce", sent, op).then(lambda total: self._receive(total, down))

    def all_gather(self, x: torch.Tensor) -> Work:
        x, call = self._begin("all_gather", x), self._next()
        return self._inner("all_gather", self._transmit(x, call))

    def broadcast(self, x: torch.Tensor, src: int = 0) -> Work:
        x, call = self._begin("broadcast", x), self._next()
        sent = self._transmit(x, call, only=lambda rank: rank == src)
        down = self._draws("downlink", x, call, only=lambda rank: rank != src)
        source = [row for row, rank in enumerate(self.ranks.tolist()) if rank == src]

        def deliver(value):
            out = self._receive(value, down)
            for row in source:
                out[row] = x[row]  # the source does not receive its own message
            return out

        return self._inner("broadcast", sent, src).then(deliver)

    def mix(self, x: torch.Tensor, weights: torch.Tensor) -> Work:
        x, call = self._begin("mix", x), self._next()
        W = self._mixing_matrix(weights)
        received = self._edge_noise(x, W.to(x.dtype), call)
        if self.channels["uplink"] is None:
            return self._inner("mix", x, W).then(lambda mixed: mixed + received)
        # the own term W_ii x_i never crosses the wire: mix the transmitted rows without it, add it here
        own = torch.diagonal(W)[self.ranks].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        across = W - torch.diag(torch.diagonal(W))
        return self._inner("mix", self._transmit(x, call), across).then(lambda mixed: mixed + own * x + received)

    def exchange(self, x: torch.Tensor, pairs) -> Work:
        x, call = self._begin("exchange", x), self._next()
        partner = self._partners(pairs)
        paired = lambda rank: partner[rank] >= 0  # noqa: E731  (a worker in no pair sends and hears nothing)
        sent = self._transmit(x, call, only=paired)
        down = self._draws("downlink", x, call, only=paired)
        return self._inner("exchange", sent, pairs).then(lambda out: self._receive(out, down))

    # -- noise -------------------------------------------------------------------------------------

    def _begin(self, op: str, x: torch.Tensor) -> torch.Tensor:
        x = self._check(op, x)
        for channel in self.channels.values():
            if isinstance(channel, AWGN) and not (x.is_floating_point() or x.is_complex()):
                raise TypeError(f"{op}: an AWGN link adds noise to analog values; x has dtype {x.dtype} "
                                "(pass bytes through a BinarySymmetricChannel instead)")
            if isinstance(channel, AWGN) and channel.real == x.is_complex():
                kind = "complex" if x.is_complex() else "real"
                raise TypeError(f"{op}: x is {kind}; use AWGN(real={not x.is_complex()})")
        return x

    def _next(self) -> int:
        self.calls += 1
        return self.calls - 1

    def _inner(self, op: str, *args) -> Work:
        """``op`` on the wrapped communicator, in the background if this call came through :meth:`start`."""
        return self.comm.start(op, *args) if self._starting else getattr(self.comm, op)(*args)

    def _generator(self, call: int, rank: int, direction: str, *keys: int) -> torch.Generator:
        return self.seeds.torch(call, rank, direction, *keys, device=str(self.device))

    def _draws(self, direction: str, x: torch.Tensor, call: int, only=lambda rank: True) -> list:
        """Per local row, the noise its ``direction`` channel adds to one message like ``x[row]`` (None:
        no noise), drawn now so that the order of draws never depends on when a collective completes."""
        channel = self.channels[direction]
        return [self._draw(direction, x[row], self._generator(call, rank, direction))
                if channel is not None and only(rank) else None
                for row, rank in enumerate(self.ranks.tolist())]

    def _draw(self, direction: str, row: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """AWGN: the noise ``w`` (the channel applied to zeros); bit channel: the XOR mask of the row's bytes."""
        channel, counts = self.channels[direction], self.noise[direction]
        counts.messages += 1
        if isinstance(channel, AWGN):
            w = channel(torch.zeros_like(row), generator=generator)
            counts.entries += row.numel() * (2 if row.is_complex() else 1)
            counts.energy += float(torch.sum(torch.abs(w) ** 2))
            return w
        nbytes = row.numel() * row.element_size()
        flips = channel(torch.zeros(nbytes * 8, dtype=torch.int8, device=row.device), generator=generator)
        counts.bits += nbytes * 8
        counts.bit_flips += int(flips.sum())
        return (flips.view(nbytes, 8).to(torch.uint8) * _BIT_WEIGHTS.to(row.device)).sum(dim=1, dtype=torch.uint8)

    def _apply(self, direction: str, row: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """``row`` through one draw of ``direction``'s channel: plus the AWGN noise, or its bytes XOR the mask."""
        if noise is None:
            return row
        if isinstance(self.channels[direction], AWGN):
            return row + noise
        flipped = row.contiguous().reshape(-1).view(torch.uint8) ^ noise  # the serialised bytes
        return flipped.view(row.dtype).reshape(row.shape)

    def _transmit(self, x: torch.Tensor, call: int, only=lambda rank: True) -> torch.Tensor:
        """``x`` as it leaves the local workers: each row through the uplink."""
        noise = self._draws("uplink", x, call, only)
        if all(n is None for n in noise):
            return x
        return torch.stack([self._apply("uplink", x[row], n) for row, n in enumerate(noise)])

    def _receive(self, value: torch.Tensor, noise: list) -> torch.Tensor:
        """``value`` ``[L, ...]`` as each local worker hears it: row l through its downlink draw."""
        return torch.stack([self._apply("downlink", value[row], n) for row, n in enumerate(noise)])

    def _edge_noise(self, x: torch.Tensor, W: torch.Tensor, call: int) -> torch.Tensor:
        """``[L, ...]``: Σ_{j≠i} W_ij d_ij, receiver i's downlink noise on each neighbour's message.

        A bit channel's flips act on the received message itself, so a gossip round over a bit
        channel is refused (flip the bytes of a payload sent with ``exchange`` instead)."""
        out = torch.zeros_like(x)
        channel = self.channels["downlink"]
        if channel is None:
            return out
        if not isinstance(channel, AWGN):
            raise TypeError("mix: a gossip round sums its received messages; a bit-flip downlink needs each "
                            "message on its own (use exchange or all_gather for bit channels)")
        for row, i in enumerate(self.ranks.tolist()):
            for j in range(self.world_size):
                if j != i and W[i, j] != 0:
                    out[row] += W[i, j] * self._draw("downlink", x[row], self._generator(call, i, "downlink", j))
        return out

