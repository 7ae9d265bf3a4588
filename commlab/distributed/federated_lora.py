"""Federated LoRA with sparse communication (FLASC: Kuo, Raje, Rajesh & Smith 2024, arXiv 2406.05233;
the method the withdrawn CELLM paper, arXiv 2407.20557, describes at abstract level).

The federated state is the flat vector P ``[d]`` of every LoRA adapter of a frozen base model (A and
B of each adapted layer; :func:`~commlab.models.lora.lora_vector`). Each client i keeps its own copy
P_i of what it last heard from the server. One round, on the round driver of
:class:`~commlab.distributed.fl.FederatedMethod` (clients sampled, K local SGD steps, stacked)::

    download   q_i = TopK_{δ_down}(P − P_i);  P_i ← P_i + q_i            (dense: P_i ← P, δ_down = 1)
    local      y_i ← P_i;  K steps y_i ← y_i − η_l g_i(y_i);  ḡ_i = (P_i − y_i) / (η_l K)
    upload     u_i = TopK_{δ_up}(ḡ_i + e_i);  e_i ← ḡ_i + e_i − u_i     (error feedback, EF14; or u_i = TopK(ḡ_i))
    server     Δ = −η_l K · mean_i u_i                                   (the mean client update y_i − P_i, sparsified)
               FedAvg:  P ← P + η_g Δ
               FedAdam (Reddi et al. 2021, Alg. 2): m ← β₁ m + (1−β₁) Δ;  v ← β₂ v + (1−β₂) Δ²;
                        P ← P + η_g m / (sqrt(v) + τ)

The residual P − P_i that the sparse download leaves behind stays in P − P_i, so it is sent in a later
round (the download's own error feedback). A client that is not sampled keeps its P_i and e_i
(stale), as it would in a real deployment.

**Bits.** Uplink: the exact wire size of the clients' payloads (values + the cheaper of an index list
and a bitmap, :mod:`commlab.compress.sparsify`). Downlink: the Top-k payload per sampled client
(every row has the same k, hence the same size), or d dense values per client without sparsity.

Works on ``SimComm`` (every slot stacked in one process) and on ``DistComm`` with stratified sampling,
like the other federated methods; P_i and e_i are client state kept by the rank that hosts client i.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from commlab._checks import check_choice, check_positive, check_real_number
from commlab.comm import Communicator
from commlab.compress.sparsify import TopK
from commlab.distributed.fl import FederatedMethod
from commlab.models.lora import load_lora_vector, lora_grad_vector, lora_parameters

SERVER_OPTIMIZERS = ("avg", "adam")


class Flasc(FederatedMethod):
    """Federated LoRA with a sparse download, dense local training and a sparse upload (FLASC).

    Args:
        comm, params, n_clients, local_steps, local_lr, server_lr, seed, sampling: as in
            :class:`~commlab.distributed.fl.FederatedMethod`; ``params`` ``[L, d]``, every row the initial
            adapter vector P (e.g. :func:`~commlab.models.lora.lora_vector` of a freshly wrapped model).
        upload_density: δ_up in (0, 1], the kept fraction of each upload (Top-k, k = ceil(δ_up d)); 1 sends
            dense float values.
        download_density: δ_down in (0, 1] for the download; 1 sends P dense.
        error_feedback: keep the upload's residual e_i per client (EF14); ignored when δ_up = 1.
        server_optimizer: ``"avg"`` (FedAvg, P ← P + η_g Δ) or ``"adam"`` (FedAdam).
        betas, tau: FedAdam's β₁, β₂ in [0, 1) and τ > 0 (Reddi et al.'s adaptivity, default 1e-3).

    Attributes:
        buffers: ``"p"`` the clients' copies P_i and ``"e"`` their upload residuals, ``[n_hosted, d]`` each.
        m, v: FedAdam's moments ``[d]`` (zero and unused for ``"avg"``).
    """

    client_buffers = ("e", "p")

    def __init__(self, comm: Communicator, params: torch.Tensor, *, upload_density: float = 0.25,
                 download_density: float = 0.25, error_feedback: bool = True, server_optimizer: str = "avg",
                 betas: tuple[float, float] = (0.9, 0.99), tau: float = 1e-3, **kwargs):
        if "compressor" in kwargs:
            raise TypeError("Flasc builds its own Top-k compressors from upload_density and download_density")
        self.upload_density = check_real_number("upload_density", upload_density, low=0.0, high=1.0, low_open=True)
        self.download_density = check_real_number("download_density", download_density, low=0.0, high=1.0,
                                                  low_open=True)
        super().__init__(comm, params, compressor=TopK(self.upload_density) if self.upload_density < 1 else None,
                         **kwargs)
        if not isinstance(error_feedback, bool):
            raise TypeError(f"error_feedback must be a bool, got {type(error_feedback).__name__}")
        self.error_feedback = error_feedback and self.upload_density < 1
        self.download = TopK(self.download_density) if self.download_density < 1 else None
        self.server_optimizer = check_choice("server_optimizer", server_optimizer, SERVER_OPTIMIZERS)
        if len(betas) != 2:
            raise ValueError(f"betas must be (beta1, beta2), got {betas!r}")
        self.betas = tuple(check_real_number(f"betas[{j}]", b, low=0.0, high=1.0, high_open=True)
                           for j, b in enumerate(betas))
        self.tau = check_positive("tau", tau)
        self.buffers["p"].copy_(self.x.expand_as(self.buffers["p"]))
        self.m = torch.zeros_like(self.x)
        self.v = torch.zeros_like(self.x)

    def _download(self, rows, clients, t):
        if self.download is None:
            start, bits = super()._download(rows, clients, t)
            self.buffers["p"][rows] = start
            return start, bits
        payload = self.download.compress(self.x - self.buffers["p"][rows])   # q_i = TopK(P − P_i)
        self.buffers["p"][rows] += self.download.decompress(payload)          # P_i ← P_i + q_i
        return self.buffers["p"][rows].clone(), self.per_round * payload.row_bits[0]

    def _message(self, rows, g_bar, y):
        return g_bar + self.buffers["e"][rows] if self.error_feedback else g_bar

    def _client_update(self, rows, message, decoded):
        if self.error_feedback:
            self.buffers["e"][rows] = message - decoded                       # e_i ← ḡ_i + e_i − u_i

    def _server_update(self, decoded):
        delta = -self.local_lr * self.local_steps * decoded.mean(dim=0)      # Δ = −η_l K mean_i u_i
        if self.server_optimizer == "avg":
            self.x = self.x + self.server_lr * delta
            return
        b1, b2 = self.betas
        self.m = b1 * self.m + (1 - b1) * delta
        self.v = b2 * self.v + (1 - b2) * delta.square()
        self.x = self.x + self.server_lr * self.m / (self.v.sqrt() + self.tau)

    def _state(self):
        return {**super()._state(), "m": self.m.clone(), "v": self.v.clone()}

    def _load(self, state):
        super()._load(state)
        self.m, self.v = state["m"].clone(), state["v"].clone()

    def __repr__(self) -> str:
        return (f"Flasc(N={self.n_clients}, S={self.per_round}, K={self.local_steps}, local_lr={self.local_lr}, "
                f"up={self.upload_density}, down={self.download_density}, ef={self.error_feedback}, "
                f"server={self.server_optimizer})")


def lora_grad_fn(model: nn.Module, batches: Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]):
    """The ``grad_fn(y, clients, t, k)`` of :meth:`~commlab.distributed.fl.FederatedMethod.round` for a model
    whose LoRA adapters are stacked over the L local slots (``apply_lora(..., replicas=L)``).

    Each call writes ``y`` ``[L, d]`` into the adapters (:func:`~commlab.models.lora.load_lora_vector`),
    takes the slots' minibatch ``batches(clients, t, k) -> (x, target)``, int64 ``[L·b, T]`` each (client
    ``clients[n]``'s examples in the n-th of L groups), and returns the gradients ``[L, d]`` of
    Σ_n mean_{rows of group n} (−log p(target | x)) in nats: each slot's own mean-loss gradient.
    ``model.token_log_probs(x, target)`` (``[L·b, T]``, as :class:`~commlab.models.transformer.TinyTransformer`
    has) gives the log-probabilities; the base model stays frozen.
    """
    if not callable(getattr(model, "token_log_probs", None)):
        raise TypeError(f"model must have token_log_probs(x, y), got {type(model).__name__}")
    if not callable(batches):
        raise TypeError(f"batches must be callable as batches(clients, t, k), got {type(batches).__name__}")

    def grad_fn(y: torch.Tensor, clients: torch.Tensor, t: int, k: int) -> torch.Tensor:
        load_lora_vector(model, y)
        x, target = batches(clients, t, k)
        for p in lora_parameters(model):
            p.grad = None
        losses = -model.token_log_probs(x, target).reshape(len(y), -1).mean(dim=1)   # [L] nats
        losses.sum().backward()
        return lora_grad_vector(model)

    return grad_fn
