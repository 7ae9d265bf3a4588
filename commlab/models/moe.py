"""A tiny mixture-of-experts character language model, so that routing traces come from a trained router.

The routing traces of :mod:`commlab.data.routing_traces` are Markov chains whose inter-layer affinity is the
generator's own parameter. This model's routes are whatever its learned routers do: a token's expert at layer
``l + 1`` depends on its expert at layer ``l`` only through the shared residual stream.

Architecture (Switch-Transformer-style top-1 routing on a Bengio n-gram context)::

    h⁰ = W_in · (E[x_1], …, E[x_C])                          C previous characters, embedding E [V, D]
    for l in 0..L-1 (an MoE layer each):
        u = LayerNorm_l(h);  p = softmax(R_l u)                  router R_l [E, d]
        e_l = argmax p                                           top-1 expert: the route of this layer
        h = h + p[e_l] · FFN_{l, e_l}(u)                          FFN: d -> m -> d, ReLU
    logits = W_out · LayerNorm(h)

Loss: next-character cross-entropy (nats) plus ``aux_weight`` times the Switch load-balancing loss
``E · Σ_e f_e · P_e`` per layer (``f_e`` the fraction of tokens routed to e, ``P_e`` the mean router
probability of e), which keeps the experts in use. Experts are evaluated densely (all E, then the chosen one
is kept): exact, and cheap at this size.

Everything random takes the caller's ``torch.Generator`` (initialisation and batches).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_int, check_positive


class TinyMoELM(nn.Module):
    """Character LM with ``n_layers`` top-1 MoE layers of ``n_experts`` experts each.

    Args:
        vocab: vocabulary size V.
        context: characters of context C.
        embed: embedding width D per character.
        width: residual width d.
        hidden: expert hidden width m.
        n_layers: MoE layers L >= 2 (a route needs two layers to have a transition).
        n_experts: experts per layer E >= 2.
        generator: ``torch.Generator`` for the initial weights (N(0, 1/fan-in), zero biases, unit LayerNorms).
    """

    def __init__(self, vocab: int, context: int, embed: int, width: int, hidden: int, n_layers: int,
                 n_experts: int, *, generator: torch.Generator):
        super().__init__()
        self.vocab = check_int("vocab", vocab, low=2)
        self.context = check_int("context", context, low=1)
        self.embed = check_int("embed", embed, low=1)
        self.width = check_int("width", width, low=1)
        self.hidden = check_int("hidden", hidden, low=1)
        self.n_layers = check_int("n_layers", n_layers, low=2)
        self.n_experts = check_int("n_experts", n_experts, low=2)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")

        def normal(*shape, fan_in):
            return nn.Parameter(torch.randn(*shape, generator=generator) / math.sqrt(fan_in))

        L, E, d, m = self.n_layers, self.n_experts, self.width, self.hidden
        self.embedding = nn.Parameter(torch.randn(self.vocab, self.embed, generator=generator))
        self.w_in = normal(self.context * self.embed, d, fan_in=self.context * self.embed)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(L))
        self.router = normal(L, d, E, fan_in=d)
        self.w1 = normal(L, E, d, m, fan_in=d)
        self.b1 = nn.Parameter(torch.zeros(L, E, m))
        self.w2 = normal(L, E, m, d, fan_in=m)
        self.b2 = nn.Parameter(torch.zeros(L, E, d))
        self.out_norm = nn.LayerNorm(d)
        self.w_out = normal(d, self.vocab, fan_in=d)
        self.b_out = nn.Parameter(torch.zeros(self.vocab))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` int64 ``[B, C]`` -> ``(logits [B, V], routes int64 [B, L], aux)``; ``aux`` is the load-balancing
        loss summed over layers (``E·Σ_e f_e·P_e``; 1 per layer when the routing is perfectly balanced)."""
        if x.ndim != 2 or x.shape[1] != self.context:
            raise ValueError(f"x must be [B, {self.context}] character ids, got shape {tuple(x.shape)}")
        h = self.embedding[x].reshape(len(x), -1) @ self.w_in
        routes, aux = [], h.new_zeros(())
        for layer in range(self.n_layers):
            u = self.norms[layer](h)
            probs = torch.softmax(u @ self.router[layer], dim=-1)  # [B, E]
            chosen = probs.argmax(dim=-1)
            hidden = torch.relu(torch.einsum("bd,edm->bem", u, self.w1[layer]) + self.b1[layer])
            outputs = torch.einsum("bem,emd->bed", hidden, self.w2[layer]) + self.b2[layer]  # every expert
            gate = probs.gather(1, chosen[:, None])  # [B, 1]
            h = h + gate * outputs[torch.arange(len(x)), chosen]
            share = F.one_hot(chosen, self.n_experts).float().mean(dim=0)
            aux = aux + self.n_experts * (share * probs.mean(dim=0)).sum()
            routes.append(chosen)
        logits = self.out_norm(h) @ self.w_out + self.b_out
        return logits, torch.stack(routes, dim=1), aux


def train_moe(model: TinyMoELM, corpus, *, steps: int, batch_size: int, lr: float, aux_weight: float,
              generator: torch.Generator) -> list[float]:
    """Adam on next-character windows of ``corpus`` (a :class:`~commlab.data.text.TextCorpus`) drawn from
    ``generator``; returns the cross-entropy (nats, without the auxiliary loss) of each step."""
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_positive("lr", lr)
    if isinstance(aux_weight, bool) or not aux_weight >= 0:
        raise ValueError(f"aux_weight must be >= 0, got {aux_weight!r}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        x, y = corpus.sample_windows(batch_size, model.context, generator)
        logits, _, aux = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        (loss + aux_weight * aux).backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def routing_trace(model: TinyMoELM, x: torch.Tensor, y: torch.Tensor | None = None, *,
                  batch_size: int = 4096) -> tuple[np.ndarray, float]:
    """The top-1 expert of every token at every MoE layer, and the mean cross-entropy (nats) when targets ``y``
    are given (else NaN).

    Returns:
        ``(trace, loss)``: int64 ``[T, L]`` (the format of :mod:`commlab.data.routing_traces`) and a float.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    model.eval()
    routes, total = [], 0.0
    for start in range(0, len(x), batch_size):
        logits, route, _ = model(x[start:start + batch_size])
        routes.append(route)
        if y is not None:
            total += F.cross_entropy(logits, y[start:start + batch_size], reduction="sum").item()
    trace = torch.cat(routes).numpy().astype(np.int64)
    return trace, (total / len(x) if y is not None else float("nan"))


def routing_entropy(trace: np.ndarray, n_experts: int) -> np.ndarray:
    """Entropy (bits) of the expert distribution of each layer of a trace ``[T, L]``: float64 ``[L]``;
    ``log2(E)`` when every expert gets the same share, 0 when one expert gets every token."""
    trace = np.asarray(trace)
    shares = np.stack([np.bincount(trace[:, layer], minlength=n_experts) for layer in range(trace.shape[1])])
    shares = shares / shares.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(shares > 0, shares * np.log2(shares), 0.0).sum(axis=1)


def layer_mutual_information(trace: np.ndarray, n_experts: int) -> np.ndarray:
    """Plug-in mutual information (bits) between the experts of consecutive layers: float64 ``[L - 1]``;
    0 without inter-layer affinity, ``log2(E)`` when the next expert is a function of the current one."""
    trace = np.asarray(trace)
    out = []
    for layer in range(trace.shape[1] - 1):
        joint = np.zeros((n_experts, n_experts))
        np.add.at(joint, (trace[:, layer], trace[:, layer + 1]), 1.0)
        joint /= joint.sum()
        outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(float(np.where(joint > 0, joint * np.log2(joint / outer), 0.0).sum()))
    return np.array(out)
