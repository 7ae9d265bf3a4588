"""Federated rounds with partial participation: FedAvg, Fed-EF, SCAFFOLD, SCALLION and SCAFCOM.

One round of every method has the same shape (Huang, Li & Li 2023, "Stochastic Controlled
Averaging for Federated Learning with Communication Compression")::

    S_t = sample_clients(N, S, generator)                   # shared by the server and every rank
    client i in S_t:  y ← x;  repeat K:  y ← y − η_l (g_i(y) + corr_i)
                      ḡ_i = (x − y) / (η_l K)                 # the corrected average local gradient
                      m_i = message(ḡ_i);  send C(m_i);  update the client's own state
    server:           x, c ← server_update(x, c, {Ĉ(m_i)}_{i∈S_t})

with corr_i = c − c_i for the controlled methods (SCAFFOLD, SCALLION, SCAFCOM) and 0 otherwise;
γ = η_g η_l K is the server step. The classes below define only what differs:

==============  ==========================  ==========================  ==================================
method          message m_i                 client state after send     server
==============  ==========================  ==========================  ==================================
FedAvg          ḡ_i                         —                           x ← x − γ mean m̂_i
FedEF           e_i + ḡ_i                   e_i ← m_i − m̂_i (EF14)      x ← x − γ mean m̂_i
Scaffold        δ_i = ḡ_i − c               c_i ← c_i + m̂_i             x ← x − γ (c + mean m̂_i),
                                                                        c ← c + (1/N) Σ_{i∈S} m̂_i
Scaffold        [y − x, ḡ_i − c]            c_i ← c_i + (Δc_i)^         x ← x + η_g mean Δy_i,
(two_vector)    (original option II)                                    c ← c + (1/N) Σ Δc_i
Scallion        α δ_i ("before") or δ_i     c_i ← c_i + m̂_i, or         as Scaffold, with
                ("after")                   c_i ← c_i + α m̂_i           c ← c + (α/N) Σ m̂_i ("after")
Scafcom         v_i − c_i, where            c_i ← c_i + m̂_i (EF21-      as Scaffold
                v_i ← (1−β) v_i + β ḡ'_i    style tracking)
==============  ==========================  ==========================  ==================================

Here ḡ'_i = ḡ_i + c_i − c is the plain average local gradient and m̂_i = decompress(C(m_i)). Without
compression (the default :class:`~commlab.compress.Identity`), the one-vector SCAFFOLD has the
same iterates as the original two-vector SCAFFOLD with half the uplink; SCAFCOM with β = 1 and
SCALLION with α = 1 are SCAFFOLD. The control variates c_i, momenta v_i and errors e_i of clients
that are not sampled persist (``[N, d]`` each).

**Bits.** The uplink of a round is the exact wire size of the sampled clients' payloads (values +
indices + scales, :attr:`~commlab.compress.payload.Payload.row_bits`); the downlink counts, per
sampled client, the dense model x and — for the controlled methods — the dense control c
(:attr:`FederatedMethod.downlink_vectors` vectors of ``d`` values of the model's dtype). Both are
cumulative over all clients in :attr:`FederatedMethod.bits`.

**Simulated and real clients.** The communicator's workers are the S *participation slots* of a
round: with ``SimComm(S)`` one process runs all S sampled clients stacked on the leading axis;
with ``DistComm`` on S ranks, rank j runs slot j. Every rank keeps a replica of the server state
(x, c) and applies the same server update to the all-gathered messages (dense messages as float
tensors, compressed ones as packed payload bytes), so the replicas stay equal and no separate
downlink message is sent (the downlink is counted as the server would send it). A client's private
state must stay on the rank that runs it, so on ``DistComm`` the sampling is *stratified*
(``sampling="stratified"``): client i belongs to group i mod S, rank j hosts group j's state, and
each round slot j samples one client of group j uniformly. Every client is still sampled with
probability S/N, but two clients of one group are never sampled together; ``sampling="uniform"``
(S of N without replacement, the papers' scheme) needs all client state in one process
(``SimComm``). ``SimComm`` with stratified sampling runs exactly what S gloo ranks run.

Randomness: round t's sample comes from ``SeedTree(seed).torch("sample", t)``, a randomised
compressor's draw for client i from ``SeedTree(seed).torch("compress", t, i)``; minibatches are the
caller's (the oracle of :meth:`FederatedMethod.round`), so a run is a function of its seed and
continues exactly after :meth:`~commlab.distributed.method.Method.state_dict` /
:meth:`~commlab.distributed.method.Method.load_state_dict`.

These are round methods (:mod:`commlab.distributed.method`): ``params`` ``[L, d]`` holds the local
slots' copies of the server model x, set to x after every ``round(oracle)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from commlab._checks import check_choice, check_int, check_positive, check_real_number, check_seed
from commlab.comm import Communicator
from commlab.compress.base import Compressor
from commlab.compress.payload import Payload
from commlab.compress.quantize import Identity
from commlab.distributed.compressed import gather_payloads
from commlab.distributed.method import Method, SyncEvent
from commlab.seeding import SeedTree

SAMPLINGS = ("uniform", "stratified")
PLACEMENTS = ("after", "before")

GradFn = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def sample_clients(n_clients: int, per_round: int, generator: torch.Generator, *,
                   stratified: bool = False) -> torch.Tensor:
    """The clients of one round, ``[per_round]`` int64.

    Args:
        n_clients: N >= 1.
        per_round: S, 1 <= S <= N.
        generator: a ``torch.Generator``; the same generator state gives the same clients.
        stratified: False: S distinct clients uniformly without replacement, ascending (the clients
            with the S smallest of N uniform keys). True: client i belongs to group i mod S (N must
            be a multiple of S); entry j is a uniform member of group j.
    """
    n_clients = check_int("n_clients", n_clients, low=1)
    per_round = check_int("per_round", per_round, low=1, high=n_clients)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not stratified:
        keys = torch.rand(n_clients, generator=generator, dtype=torch.float64)
        return keys.argsort()[:per_round].sort().values
    if n_clients % per_round:
        raise ValueError(f"stratified sampling needs n_clients ({n_clients}) to be a multiple of per_round "
                         f"({per_round}), so that every client is sampled with probability S/N")
    members = torch.randint(n_clients // per_round, (per_round,), generator=generator)
    return torch.arange(per_round) + per_round * members


class FederatedMethod(Method):
    """The common round driver: sampling, K local steps on the stacked sampled clients, the wire,
    the bit count and the state; subclasses say what the clients send and how the server updates.

    Args:
        comm: a communicator whose ``world_size`` is S (``SimComm(S)``, or S ``DistComm`` ranks).
        params: ``[L, d]`` floating: every row the initial server model (its dtype is the model's);
            after each round every row is the new server model x.
        n_clients: N >= S.
        local_steps: K >= 1.
        local_lr: η_l > 0.
        server_lr: η_g > 0; the server step is γ = η_g η_l K.
        compressor: the uplink compressor (default: none, dense messages).
        seed: root seed for sampling and compression draws.
        sampling: ``"uniform"`` or ``"stratified"`` (required on DistComm; see the module docstring).

    Attributes:
        x: ``[d]`` server model; c: ``[d]`` server control (zero and unused for FedAvg/FedEF).
        buffers: per-client state, each ``[n_hosted, d]`` (rows: :attr:`hosted` clients).
        steps: rounds done; bits: cumulative ``{"uplink": ..., "downlink": ...}`` over all clients.
    """

    controlled = False  # local steps corrected by c − c_i
    downlink_vectors = 1  # dense vectors the server sends each sampled client
    client_buffers: tuple[str, ...] = ()

    def __init__(self, comm: Communicator, params: torch.Tensor, *, n_clients: int, local_steps: int,
                 local_lr: float, server_lr: float = 1.0, compressor: Compressor | None = None,
                 seed: int = 0, sampling: str = "uniform"):
        super().__init__(comm, params)
        compressor = Identity() if compressor is None else compressor
        if not isinstance(compressor, Compressor):
            raise TypeError(f"compressor must be a commlab Compressor, got {type(compressor).__name__}")
        self.compressor = compressor
        self.per_round = comm.world_size
        self.n_clients = check_int("n_clients", n_clients, low=self.per_round)
        self.local_steps = check_int("local_steps", local_steps, low=1)
        self.local_lr = check_positive("local_lr", local_lr)
        self.server_lr = check_positive("server_lr", server_lr)
        self.seed = check_seed(seed)
        self.sampling = check_choice("sampling", sampling, SAMPLINGS)
        self.seeds = SeedTree(self.seed)
        if comm.local_workers != comm.world_size:
            if sampling != "stratified":
                raise ValueError("on a communicator with remote workers (DistComm) client state stays with the "
                                 "rank that hosts it: use sampling='stratified'")
            self.hosted = torch.cat([torch.arange(int(r), self.n_clients, self.per_round) for r in comm.ranks])
        else:
            self.hosted = torch.arange(self.n_clients)
        if sampling == "stratified" and self.n_clients % self.per_round:
            raise ValueError(f"stratified sampling needs n_clients ({self.n_clients}) to be a multiple of the "
                             f"clients per round ({self.per_round})")
        self._row_of = torch.full((self.n_clients,), -1, dtype=torch.int64)
        self._row_of[self.hosted] = torch.arange(len(self.hosted))
        self.x = params[0].detach().clone()
        self.c = torch.zeros_like(self.x)
        self.buffers = {name: torch.zeros(len(self.hosted), self.x.numel(), dtype=self.x.dtype)
                        for name in self.client_buffers}
        self.bits = {"uplink": 0, "downlink": 0}

    @property
    def gamma(self) -> float:
        """The server step γ = η_g η_l K."""
        return self.server_lr * self.local_lr * self.local_steps

    # -- the round ------------------------------------------------------------------------------

    def sample(self, t: int) -> torch.Tensor:
        """Round ``t``'s clients ``[S]`` in slot order (the same on every rank)."""
        return sample_clients(self.n_clients, self.per_round, self.seeds.torch("sample", t),
                              stratified=self.sampling == "stratified")

    def round(self, grad_fn: GradFn) -> list[SyncEvent]:
        """One round. The oracle ``grad_fn(y, clients, t, k)`` returns the stochastic gradients ``[L, d]`` of
        the local clients ``clients`` (``[L]`` int64) at their iterates ``y`` ``[L, d]`` in local step k
        of round t.

        Returns:
            the round's synchronisation; its ``info`` holds ``clients`` (the S ids), ``uplink_bits`` and
            ``downlink_bits`` of this round (all clients together).
        """
        if not callable(grad_fn):
            raise TypeError(f"grad_fn must be callable as grad_fn(y, clients, t, k), got {type(grad_fn).__name__}")
        t = self.steps
        clients = self.sample(t)
        local = clients[self.comm.ranks]
        rows = self._row_of[local]
        start, downlink = self._download(rows, local, t)
        y = start.clone()
        corr = (self.c - self.buffers["c"][rows]) if self.controlled else None
        for k in range(self.local_steps):
            g = grad_fn(y, local, t, k)
            if g.shape != y.shape:
                raise ValueError(f"grad_fn returned shape {tuple(g.shape)}, expected {tuple(y.shape)}")
            y = y - self.local_lr * (g if corr is None else g + corr)
        g_bar = (start - y) / (self.local_lr * self.local_steps)
        message = self._message(rows, g_bar, y)
        payload = self._compress(message, local, t)
        decoded = self.compressor.decompress(payload)
        self._client_update(rows, message, decoded)
        everyone, uplink = self._logged("sync", lambda: self._gather(message, payload, decoded))
        self._server_update(everyone)
        self.params.copy_(self.x.expand_as(self.params))
        self.bits["uplink"] += uplink
        self.bits["downlink"] += downlink
        self.steps += 1
        self.events[-1].info.update(clients=tuple(clients.tolist()), uplink_bits=uplink, downlink_bits=downlink)
        return self.events[-1:]

    def _download(self, rows: torch.Tensor, clients: torch.Tensor, t: int) -> tuple[torch.Tensor, int]:
        """The local clients' starting iterates ``[L, d]`` and the round's downlink bits (all S slots).

        Here every client starts from the server model x, sent dense: :attr:`downlink_vectors` vectors
        of d values per sampled client. A subclass with a compressed download overrides this.
        """
        bits = self.per_round * self.downlink_vectors * self.x.numel() * self.x.element_size() * 8
        return self.x.expand(len(rows), -1).clone(), bits

    def _compress(self, message: torch.Tensor, clients: torch.Tensor, t: int) -> Payload:
        if not self.compressor.random:
            return self.compressor.compress(message)
        return Payload.stack([self.compressor.compress(row, self.seeds.torch("compress", t, int(i)))
                              for row, i in zip(message, clients.tolist(), strict=True)])

    def _gather(self, message, payload, decoded) -> tuple[torch.Tensor, int]:
        """Every slot's decoded message ``[S, width]`` and the round's uplink bits (all slots)."""
        if isinstance(self.compressor, Identity):
            return self.comm.all_gather(message).wait(), self.per_round * payload.row_bits[0]
        received = gather_payloads(self.comm, payload)
        if self.comm.local_workers == self.comm.world_size:
            return decoded, received.bits
        return self.compressor.decompress(received), received.bits

    # -- state ----------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {"x": self.x.clone(), "c": self.c.clone(), "bits": dict(self.bits),
                "buffers": {n: b.clone() for n, b in self.buffers.items()}, "hosted": self.hosted.clone()}

    def _load(self, state: dict) -> None:
        if not torch.equal(state["hosted"], self.hosted) or set(state["buffers"]) != set(self.buffers):
            raise ValueError("the state was saved by a method with other client buffers or hosted clients")
        self.x, self.c = state["x"].clone(), state["c"].clone()
        self.buffers = {n: b.clone() for n, b in state["buffers"].items()}
        self.bits = dict(state["bits"])

    # -- what the methods define ----------------------------------------------------------------

    def _message(self, rows: torch.Tensor, g_bar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the local clients compress, ``[L, width]`` (may update state the send does not affect)."""
        raise NotImplementedError

    def _client_update(self, rows: torch.Tensor, message: torch.Tensor, decoded: torch.Tensor) -> None:
        pass

    def _server_update(self, decoded: torch.Tensor) -> None:
        """Update x and c from every slot's decoded message ``[S, width]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(N={self.n_clients}, S={self.per_round}, K={self.local_steps}, "
                f"local_lr={self.local_lr}, server_lr={self.server_lr}, compressor={self.compressor!r})")


class FedAvg(FederatedMethod):
    """FedAvg (McMahan et al. 2017); with a compressor, compressed FedAvg without error feedback
    (FedPAQ-style with an unbiased C, "CFedAvg" with Top-k): x ← x − γ mean_i Ĉ(ḡ_i)."""

    def _message(self, rows, g_bar, y):
        return g_bar

    def _server_update(self, decoded):
        self.x = self.x - self.gamma * decoded.mean(dim=0)


class FedEF(FedAvg):
    """Fed-EF (Li & Li 2023): compressed FedAvg with EF14 error feedback on each client's update:
    p_i = C(e_i + ḡ_i), e_i ← e_i + ḡ_i − p̂_i (e_i persists while client i is not sampled)."""

    client_buffers = ("e",)

    def _message(self, rows, g_bar, y):
        return self.buffers["e"][rows] + g_bar

    def _client_update(self, rows, message, decoded):
        self.buffers["e"][rows] = message - decoded


class Scaffold(FederatedMethod):
    """SCAFFOLD (Karimireddy et al. 2020), option II control variates.

    One-vector form (the default; Huang et al. 2023): client i sends δ_i = ḡ_i − c, which
    equals its average local gradient minus c_i; c_i ← c_i + δ_i; the server does
    x ← x − γ (c + mean δ_i) and c ← c + (1/N) Σ_{i∈S} δ_i.

    ``two_vector=True`` is the original algorithm: client i sends Δy_i = y_i − x and
    Δc_i = c_i⁺ − c_i (with c_i⁺ = c_i − c + (x − y_i)/(η_l K)), twice the uplink; the server does
    x ← x + η_g mean Δy_i and c ← c + (1/N) Σ Δc_i. The iterates are the same.
    """

    controlled = True
    downlink_vectors = 2
    client_buffers = ("c",)
    control_rate = 1.0  # c_i and c move by this multiple of the decoded message

    def __init__(self, comm: Communicator, params: torch.Tensor, *, two_vector: bool = False, **kwargs):
        super().__init__(comm, params, **kwargs)
        if two_vector and type(self) is not Scaffold:
            raise ValueError(f"two_vector is the original SCAFFOLD's message; {type(self).__name__} has one form")
        self.two_vector = bool(two_vector)

    def _message(self, rows, g_bar, y):
        if self.two_vector:
            return torch.cat([y - self.x, g_bar - self.c], dim=1)
        return g_bar - self.c

    def _client_update(self, rows, message, decoded):
        delta = decoded[:, self.x.numel():] if self.two_vector else decoded
        self.buffers["c"][rows] += self.control_rate * delta

    def _server_update(self, decoded):
        d = self.x.numel()
        if self.two_vector:
            self.x = self.x + self.server_lr * decoded[:, :d].mean(dim=0)
            self.c = self.c + decoded[:, d:].sum(dim=0) / self.n_clients
            return
        self.x = self.x - self.gamma * (self.c + decoded.mean(dim=0))
        self.c = self.c + self.control_rate * decoded.sum(dim=0) / self.n_clients


class Scallion(Scaffold):
    """SCALLION (Huang et al. 2023): one-vector SCAFFOLD with an unbiased compressor C (variance ω)
    and a damped control update, α ≈ 1/(1 + ω) by default.

    ``placement="after"``: send C(δ_i); c_i ← c_i + α Ĉ(δ_i); c ← c + (α/N) Σ Ĉ(δ_i).
    ``placement="before"`` (as a public third-party reproduction does): send C(α δ_i);
    c_i ← c_i + Ĉ(α δ_i); c ← c + (1/N) Σ Ĉ(α δ_i). Either way x ← x − γ (c + mean Ĉ(·)).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, compressor: Compressor,
                 alpha: float | None = None, placement: str = "after", **kwargs):
        super().__init__(comm, params, compressor=compressor, **kwargs)
        if alpha is None:
            omega = self.compressor.omega_for(self.d)
            if omega is None:
                raise ValueError(f"give alpha: {self.compressor!r} states no variance constant omega")
            alpha = 1 / (1 + omega)
        self.alpha = check_real_number("alpha", alpha, low=0.0, high=1.0, low_open=True)
        self.placement = check_choice("placement", placement, PLACEMENTS)
        self.control_rate = self.alpha if self.placement == "after" else 1.0

    def _message(self, rows, g_bar, y):
        delta = g_bar - self.c
        return self.alpha * delta if self.placement == "before" else delta


class Scafcom(Scaffold):
    """SCAFCOM (Huang et al. 2023): SCAFFOLD with a biased (contractive) compressor C, local momentum
    v_i and EF21-style tracking of v_i by c_i.

    v_i ← (1 − β) v_i + β ḡ'_i (ḡ'_i the plain average local gradient; β weights the *new* value),
    send d_i = C(v_i − c_i), c_i ← c_i + d̂_i; server as one-vector SCAFFOLD. v_i starts at 0.
    """

    client_buffers = ("c", "v")

    def __init__(self, comm: Communicator, params: torch.Tensor, *, compressor: Compressor, beta: float = 0.2,
                 **kwargs):
        super().__init__(comm, params, compressor=compressor, **kwargs)
        self.beta = check_real_number("beta", beta, low=0.0, high=1.0, low_open=True)

    def _message(self, rows, g_bar, y):
        c_i = self.buffers["c"][rows]
        v = (1 - self.beta) * self.buffers["v"][rows] + self.beta * (g_bar + c_i - self.c)
        self.buffers["v"][rows] = v
        return v - c_i
