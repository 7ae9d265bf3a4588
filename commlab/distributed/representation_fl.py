"""Federated learning by exchanging representations of a public set: CreamFL (Yu et al., ICLR 2023,
"Multimodal Federated Learning via Contrastive Representation Ensemble"), as commlab reconstructs it
(the exact weighting and loss forms are unverified; briefs/distributed/creamfl_representation_ensemble_fl.md).

Clients of any architecture and modality set M_c ⊆ {image, text} and a (larger) server share a public set
P of N_pub paired samples. One round::

    server → every client:   G_m = server_m(P_m)  [N_pub, d] for m ∈ {image, text}     (2·N_pub·d·32 bits)
    client c, K local steps: task loss on its private data
                             + λ_inter · InfoNCE(local_m(P_m[B]), G_{m̄}[B])   (other modality m̄)
                             + λ_intra · InfoNCE(local_m(P_m[B]), G_m[B])      for each m ∈ M_c
    client c → server:       R_{c,m} = local_m(P_m)  [N_pub, d] for m ∈ M_c             (N_pub·d·|M_c|·32 bits)
    server:                  A_m[j] = Σ_c softmax_c(s_{c,j} / T) R_{c,m}[j],
                             s_{c,j} = log softmax_k(R_{c,m}[j]·G_{m̄}[k] / τ)[j]       (global–local cross-modal)
                             then K_s steps of its own task loss on P + λ_kd · Σ_m InfoNCE(server_m(P_m[B]), Â_m[B])

with B a minibatch of public indices, every representation L2-normalised (Â = A / ‖A‖), and InfoNCE,
the scores and the ensemble from :mod:`commlab.models.contrastive`. The task loss of a client with
both modalities is the symmetric InfoNCE of its private pairs; a uni-modal client classifies its private
samples with a linear head on the representation (cross-entropy). The messages are
:class:`~commlab.compress.payload.Payload` objects of the raw float32 representations
(:class:`~commlab.compress.Identity`), serialised and read back, so the bytes counted are the bytes
sent: an upload never depends on the client's model size. :func:`average_modules` is the reference it
is compared with: FedAvg of identical models, whose upload is the whole model.

This is not a :class:`~commlab.distributed.method.Method` (those hold ``[L, d]`` replicas of one model;
here every client has its own architecture), but :class:`RepresentationFL` offers the same
``round()``, ``summary()``, ``state_dict()`` / ``load_state_dict()`` and ``finish()``.

Randomness: initial weights from ``seeded_init`` of :func:`mlp_encoder`'s seed; client c's minibatch at
local step k of round t from :func:`commlab.data.batches.batch_indices` keyed by (seed, t·K + k, c), so a
run is a function of its seeds and continues exactly from a checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_seed
from commlab.compress.payload import Payload
from commlab.compress.quantize import Identity
from commlab.data.batches import batch_indices
from commlab.models.contrastive import WEIGHTINGS, ensemble_representations, info_nce
from commlab.models.mlp import relu_mlp
from commlab.seeding import seeded_init

MODALITIES = ("image", "text")
OTHER = {"image": "text", "text": "image"}


def mlp_encoder(n_in: int, hidden: Sequence[int], dim: int, *, seed: int) -> nn.Sequential:
    """An MLP ``[B, n_in] -> [B, dim]`` with ReLU hidden layers of widths ``hidden``, initialised from ``seed``
    (:func:`~commlab.models.mlp.relu_mlp`)."""
    return relu_mlp((n_in, *hidden, dim), seed=seed)


def n_params(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


# -- messages -------------------------------------------------------------------------------------


def encode_representations(reps: Mapping[str, torch.Tensor]) -> dict[str, bytes]:
    """The wire message of representations ``{modality: [N, d]}``: per modality, the bytes of an fp32
    :class:`~commlab.compress.Identity` payload of the ``[N, d]`` rows (``N·d·32`` bits each)."""
    message = {}
    for m, x in reps.items():
        check_choice("modality", m, MODALITIES)
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.float32:
            raise ValueError(f"representations of {m!r} must be float32 [N, d], got "
                             f"{getattr(x, 'dtype', None)} {tuple(getattr(x, 'shape', ()))}")
        message[m] = Identity().compress(x.detach().contiguous()).to_bytes()
    return message


def decode_representations(message: Mapping[str, bytes], n: int, dim: int) -> dict[str, torch.Tensor]:
    """Inverse of :func:`encode_representations` for ``[n, dim]`` rows (the static header both ends know)."""
    header = Identity().compress(torch.zeros(n, dim)).header
    return {m: Identity().decompress(Payload.from_bytes(data, header)) for m, data in message.items()}


def message_bits(message: Mapping[str, bytes]) -> int:
    """Bits on the wire of a message of :func:`encode_representations`: 8 × its bytes."""
    return 8 * sum(len(data) for data in message.values())


def average_modules(modules: Sequence[nn.Module]) -> int:
    """FedAvg of identical models in place: every module's parameters become their mean.

    Returns:
        the uplink bits of one client: the exact wire size of an fp32 Identity payload of its
        flattened parameters (``n_params · 32``).
    """
    if len(modules) < 1:
        raise ValueError("average_modules needs at least one module")
    vectors = [nn.utils.parameters_to_vector(m.parameters()).detach() for m in modules]
    if len({v.numel() for v in vectors}) != 1:
        raise ValueError("FedAvg needs modules of one architecture (same number of parameters)")
    payloads = [Identity().compress(v) for v in vectors]
    mean = torch.stack([Identity().decompress(p) for p in payloads]).mean(dim=0)
    for m in modules:
        nn.utils.vector_to_parameters(mean.clone(), m.parameters())
    return payloads[0].bits


# -- clients --------------------------------------------------------------------------------------


class RepresentationClient:
    """A client (or the server) with encoders for its modalities, its private data and an Adam optimiser.

    Args:
        encoders: ``{modality: module [B, n_m] -> [B, d]}``, modalities a non-empty subset of
            ``("image", "text")``; the outputs are L2-normalised.
        data: private data ``{modality: [N, n_m] float, "labels": [N] int64}`` with every modality of
            ``encoders`` (the labels are needed by uni-modal clients only).
        n_classes: classes of the uni-modal task head.
        lr: Adam learning rate.
        temperature: τ of the task InfoNCE (and the head's logit scale 1/τ).
        index: the client's number in the minibatch keys.
        seed: root seed of its minibatches (and its head's initialisation).
    """

    def __init__(self, encoders: Mapping[str, nn.Module], data: Mapping[str, torch.Tensor], *, n_classes: int = 10,
                 lr: float = 1e-3, temperature: float = 0.1, index: int = 0, seed: int = 0):
        if not encoders or any(m not in MODALITIES for m in encoders):
            raise ValueError(f"encoders must map a non-empty subset of {MODALITIES} to modules, got {list(encoders)}")
        self.modalities = tuple(m for m in MODALITIES if m in encoders)
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        missing = [m for m in self.modalities if m not in data]
        if missing:
            raise ValueError(f"data lacks the client's modalities {missing}")
        self.data = {m: data[m].reshape(len(data[m]), -1).float() for m in self.modalities}
        self.n = check_int("data size", len(self.data[self.modalities[0]]), low=1)
        if any(len(x) != self.n for x in self.data.values()):
            raise ValueError("every modality of data must have the same number of samples")
        self.temperature = check_positive("temperature", temperature)
        self.index = check_int("index", index, low=0)
        self.seed = check_seed(seed)
        self.head = None
        if len(self.modalities) == 1:
            if "labels" not in data or data["labels"].shape != (self.n,):
                raise ValueError(f"a uni-modal client needs data['labels'] int64 [{self.n}]")
            self.data["labels"] = data["labels"]
            dim = self.represent({m: self.data[m][:1] for m in self.modalities})[self.modalities[0]].shape[1]
            with seeded_init(self.seed + 7919 * (self.index + 1)):
                self.head = nn.Linear(dim, check_int("n_classes", n_classes, low=2))
        modules = list(self.encoders.parameters()) + ([] if self.head is None else list(self.head.parameters()))
        self.optimizer = torch.optim.Adam(modules, lr=check_positive("lr", lr))
        self.steps = 0
        self._shard = torch.arange(self.n)

    def parameter_count(self) -> int:
        """Parameters of the encoders (the head, used for the local task only, excluded)."""
        return n_params(self.encoders)

    def _embed(self, m: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoders[m](x), dim=-1)

    def task_loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The local task on private samples ``idx``: symmetric InfoNCE of the pairs, or the head's cross-entropy."""
        if self.head is None:
            z_i, z_t = (self._embed(m, self.data[m][idx]) for m in MODALITIES)
            return 0.5 * (info_nce(z_i, z_t, self.temperature) + info_nce(z_t, z_i, self.temperature))
        m = self.modalities[0]
        logits = self.head(self._embed(m, self.data[m][idx])) / self.temperature
        return F.cross_entropy(logits, self.data["labels"][idx])

    def local_train(self, steps: int, batch_size: int, *, round_index: int = 0,
                    public: Mapping[str, torch.Tensor] | None = None,
                    anchors: Sequence[tuple[str, torch.Tensor, float]] = (), public_batch: int = 128,
                    anchor_temperature: float | None = None) -> float:
        """``steps`` Adam steps on the task loss plus Σ_a λ_a · InfoNCE(local_{m_a}(P_{m_a}[B]), target_a[B]).

        Args:
            steps: K >= 1; batch_size: private minibatch size.
            round_index: t, for the minibatch keys (step t·K + k).
            public: ``{modality: [N_pub, n_m]}``, needed when ``anchors`` is not empty.
            anchors: ``(modality m, target [N_pub, d], weight λ >= 0)``: the local representation of modality m
                of public sample j is contrasted with target row j against the other rows of the batch.
            public_batch: size of the public minibatch B.
            anchor_temperature: τ of the anchor terms (default: the task's τ).

        Returns:
            the mean total loss over the steps.
        """
        steps, batch_size = check_int("steps", steps, low=1), check_int("batch_size", batch_size, low=1)
        tau = self.temperature if anchor_temperature is None else check_positive("anchor_temperature",
                                                                                  anchor_temperature)
        anchors = [(check_choice("anchor modality", m, self.modalities), target,
                    check_nonnegative("anchor weight", w)) for m, target, w in anchors]
        anchors = [a for a in anchors if a[2] > 0]
        if anchors and public is None:
            raise ValueError("anchors need the public inputs")
        n_pub = len(public[self.modalities[0]]) if anchors else 0
        total = 0.0
        for k in range(steps):
            step = check_int("round_index", round_index, low=0) * steps + k
            idx = batch_indices(self._shard, step, min(batch_size, self.n), seed=self.seed, worker=self.index)
            loss = self.task_loss(idx)
            if anchors:
                pub = batch_indices(torch.arange(n_pub), step, min(public_batch, n_pub), seed=self.seed + 1,
                                    worker=self.index)
                local = {m: self._embed(m, public[m][pub].reshape(len(pub), -1)) for m in {a[0] for a in anchors}}
                for m, target, w in anchors:
                    loss = loss + w * info_nce(local[m], target[pub], tau)  # λ · InfoNCE(local_m[j], target[j])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
        self.steps += steps
        return total / steps

    @torch.no_grad()
    def represent(self, inputs: Mapping[str, torch.Tensor], batch_size: int = 4096) -> dict[str, torch.Tensor]:
        """L2-normalised representations ``{m: [N, d]}`` of ``inputs[m]`` ``[N, ...]`` for the client's modalities."""
        out = {}
        for m in self.modalities:
            x = inputs[m].reshape(len(inputs[m]), -1).float()
            out[m] = torch.cat([self._embed(m, x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        return out

    def state_dict(self) -> dict:
        """A copy of the encoders, head, optimiser state and step count (nothing aliases the live tensors)."""
        return copy.deepcopy({"encoders": self.encoders.state_dict(),
                              "head": None if self.head is None else self.head.state_dict(),
                              "optimizer": self.optimizer.state_dict(), "steps": self.steps})

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of a client with the same architecture."""
        state = copy.deepcopy(state)
        self.encoders.load_state_dict(state["encoders"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = check_int("steps", state["steps"], low=0)


# -- the round --------------------------------------------------------------------------------------


class RepresentationFL:
    """CreamFL rounds (module docstring) over ``clients`` and a ``server`` with both modalities.

    Args:
        clients: the clients (any architectures and modality sets).
        server: a :class:`RepresentationClient` with both modalities, whose private data is the public set
            (its task loss is the symmetric InfoNCE of the public pairs).
        public: ``{"image": [N_pub, ...], "text": [N_pub, n_t]}``, the public set P.
        local_steps: K; server_steps: K_s; batch_size, public_batch: private and public minibatch sizes.
        lambda_inter, lambda_intra: weights of the inter- and intra-modal regularisers (>= 0).
        lambda_kd: weight of the server's distillation to the ensemble (>= 0).
        weighting: ``"contrastive"`` (global–local cross-modal ensemble) or ``"mean"`` (plain average).
        temperature: τ of the regularisers, the distillation and the scores; weight_temperature: T.

    Attributes:
        rounds: rounds done; bits: cumulative ``{"uplink": ..., "downlink": ...}`` over all clients;
        history: per round ``{"uplink_bits": [per client], "downlink_bits": per client, "weights": {m: [C, N]}}``.
    """

    def __init__(self, clients: Sequence[RepresentationClient], server: RepresentationClient,
                 public: Mapping[str, torch.Tensor], *, local_steps: int, server_steps: int, batch_size: int = 128,
                 public_batch: int = 128, lambda_inter: float = 1.0, lambda_intra: float = 1.0, lambda_kd: float = 1.0,
                 weighting: str = "contrastive", temperature: float = 0.1, weight_temperature: float = 1.0):
        if not clients or not all(isinstance(c, RepresentationClient) for c in clients):
            raise TypeError("clients must be a non-empty sequence of RepresentationClient")
        if not isinstance(server, RepresentationClient) or server.modalities != MODALITIES:
            raise ValueError(f"the server must be a RepresentationClient with modalities {MODALITIES}")
        self.clients, self.server = list(clients), server
        self.public = {m: public[m].reshape(len(public[m]), -1).float() for m in MODALITIES}
        self.n_pub = len(self.public["image"])
        if len(self.public["text"]) != self.n_pub:
            raise ValueError("the public images and texts must be paired (same length)")
        self.local_steps = check_int("local_steps", local_steps, low=1)
        self.server_steps = check_int("server_steps", server_steps, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.public_batch = check_int("public_batch", public_batch, low=2)
        self.lambda_inter = check_nonnegative("lambda_inter", lambda_inter)
        self.lambda_intra = check_nonnegative("lambda_intra", lambda_intra)
        self.lambda_kd = check_nonnegative("lambda_kd", lambda_kd)
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)
        self.temperature = check_positive("temperature", temperature)
        self.weight_temperature = check_positive("weight_temperature", weight_temperature)
        self.rounds = 0
        self.bits = {"uplink": 0, "downlink": 0}
        self.history: list[dict] = []

    def _global(self) -> tuple[dict[str, torch.Tensor], int]:
        """The server's representations of P as the clients receive them, and the bits of one download."""
        reps = self.server.represent(self.public)
        message = encode_representations(reps)
        return decode_representations(message, self.n_pub, reps["image"].shape[1]), message_bits(message)

    def round(self) -> dict:
        """One round (module docstring); returns its entry of :attr:`history`."""
        t = self.rounds
        g, down_bits = self._global()
        dim = g["image"].shape[1]
        uploads, up_bits = [], []
        for client in self.clients:
            anchors = [a for m in client.modalities
                       for a in ((m, g[OTHER[m]], self.lambda_inter), (m, g[m], self.lambda_intra))]
            client.local_train(self.local_steps, self.batch_size, round_index=t, public=self.public, anchors=anchors,
                               public_batch=self.public_batch, anchor_temperature=self.temperature)
            message = encode_representations(client.represent(self.public))
            up_bits.append(message_bits(message))
            uploads.append(decode_representations(message, self.n_pub, dim))
        targets, weights = {}, {}
        for m in MODALITIES:
            reps = torch.stack([u[m] for u in uploads if m in u])  # [C_m, N_pub, d]
            anchor = g[OTHER[m]] if self.weighting == "contrastive" else None
            a, weights[m] = ensemble_representations(reps, anchor, weighting=self.weighting,
                                                     score_temperature=self.temperature,
                                                     weight_temperature=self.weight_temperature)
            targets[m] = F.normalize(a, dim=-1)  # Â_m = A_m / ‖A_m‖
        if self.server_steps:
            self.server.local_train(self.server_steps, self.public_batch, round_index=t,
                                    public=self.public, anchors=[(m, targets[m], self.lambda_kd) for m in MODALITIES],
                                    public_batch=self.public_batch, anchor_temperature=self.temperature)
        self.bits["uplink"] += sum(up_bits)
        self.bits["downlink"] += down_bits * len(self.clients)
        self.rounds += 1
        entry = {"round": t, "uplink_bits": up_bits, "downlink_bits": down_bits, "weights": weights}
        self.history.append(entry)
        return entry

    def summary(self) -> dict:
        """The keys every method's summary has: ``steps`` (rounds), ``syncs``, ``bytes_per_worker`` (mean
        uplink bytes of a client in all), ``peak_bytes_per_sync`` (the largest upload of one client in one
        round) and ``clock`` (0: no link model)."""
        peak = max((max(h["uplink_bits"]) for h in self.history), default=0) / 8
        return {"steps": self.rounds, "syncs": self.rounds,
                "bytes_per_worker": self.bits["uplink"] / 8 / len(self.clients), "peak_bytes_per_sync": peak,
                "clock": 0.0}

    def finish(self) -> None:
        """Nothing is in flight between rounds."""

    def state_dict(self) -> dict:
        """Rounds, bit counts, history and every client's and the server's state."""
        return {"rounds": self.rounds, "bits": dict(self.bits), "history": list(self.history),
                "server": self.server.state_dict(), "clients": [c.state_dict() for c in self.clients]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of a run with the same clients and settings."""
        if len(state["clients"]) != len(self.clients):
            raise ValueError(f"the state has {len(state['clients'])} clients, this run {len(self.clients)}")
        self.server.load_state_dict(state["server"])
        for client, s in zip(self.clients, state["clients"], strict=True):
            client.load_state_dict(s)
        self.rounds, self.bits, self.history = state["rounds"], dict(state["bits"]), list(state["history"])
