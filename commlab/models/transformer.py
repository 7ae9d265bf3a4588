"""A tiny causal (decoder-only) character transformer on ``scaled_dot_product_attention``.

GPT-style pre-LN decoder for next-character prediction, small enough for CPU notebooks (the lab's
calibration: about 400 steps of d = 48, 2 layers, context 32 per quick notebook)::

    h⁰_t = E[x_t] + P[t]                                  E [V, d], P [T_max, d], x [B, T] ids
    a    = h + W_o · SDPA(q, k, v, causal)                 q, k, v = split(W_qkv · LN₁(h)), H heads of d/H
    h'   = a + W₂ · GELU(W₁ · LN₂(a))                       W₁ [d_ff, d], W₂ [d, d_ff]
    logits_t = W_head · LN_f(hᴸ_t)                         W_head = E (tied) or its own [V, d]

``F.scaled_dot_product_attention(..., is_causal=True)`` computes
softmax(q kᵀ / sqrt(d/H) + M) v with M_ts = −inf for s > t, so position t only sees x_≤t: the logits
at t predict x_{t+1}. There is no dropout (the notebooks train far below over-fitting).

It is a plain ``nn.Module`` (one model per object; replicas are separate objects trained in a loop,
the lab's calibrated way for attention models): its linear layers are ``nn.Linear`` modules named
``blocks.<i>.qkv``, ``blocks.<i>.out``, ``blocks.<i>.fc1``, ``blocks.<i>.fc2`` (and ``head`` when
untied), which :mod:`commlab.models.lora` wraps.

Initialisation (GPT-2's): every weight matrix and both embeddings N(0, 0.02²), the residual
projections (``out``, ``fc2``) N(0, (0.02/sqrt(2L))²), biases 0, LayerNorm scale 1 and shift 0, all
drawn from the caller's ``torch.Generator`` in a fixed order; the global RNG is never touched.

Compute: :meth:`TinyTransformer.flops_per_token` is Kaplan et al.'s (2020) count for training,
6·N + 6·L·T·d per token (forward 2N + 2·L·T·d, backward twice that), with N the non-embedding
parameters (:meth:`TinyTransformer.n_params`).

Example::

    model = TinyTransformer(d_model=48, n_layers=2, n_heads=4, context=32, generator=SeedTree(0).torch("init"))
    x, y = ids[:, :-1], ids[:, 1:]                           # [B, 32] each
    loss = model.loss(x, y)                                   # mean cross-entropy, nats
    logp = model.token_log_probs(x, y)                        # [B, 32], log p(y_t | x_≤t)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_int

VOCAB_SIZE = 97
"""Size of :data:`commlab.data.text.VOCAB` (the default vocabulary)."""

INIT_STD = 0.02
"""Standard deviation of the initial weights (GPT-2)."""


class Block(nn.Module):
    """One pre-LN decoder block: causal multi-head self-attention then a GELU MLP, each residual.

    Args:
        d_model: width d (divisible by ``n_heads``).
        n_heads: H attention heads of d/H dimensions each.
        d_ff: hidden width of the MLP.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` ``[B, T, d]`` -> ``[B, T, d]``."""
        B, T, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(d, dim=-1)                      # [B, T, d] each
        q, k, v = (z.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))  # [B, H, T, d/H]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # softmax(q kᵀ/sqrt(d/H) + M) v
        h = h + self.out(attended.transpose(1, 2).reshape(B, T, d))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class TinyTransformer(nn.Module):
    """A character-level causal transformer (pre-LN, learned positions, SDPA attention).

    Args:
        vocab: V >= 2 symbols (default 97, :data:`commlab.data.text.VOCAB`).
        d_model: width d >= 1, divisible by ``n_heads``.
        n_layers: L >= 1 blocks.
        n_heads: H >= 1 heads.
        d_ff: MLP hidden width (default 4·d).
        context: T_max >= 1, the longest input sequence (learned positional embeddings ``[T_max, d]``).
        tied: the output layer reuses the token embedding (default) or has its own ``head`` ``nn.Linear(d, V)``
            without bias.
        generator: the ``torch.Generator`` the initial parameters are drawn from (required).
        dtype: floating dtype of the parameters (float32 default).

    Raises:
        ValueError: a size out of range, or ``d_model`` not divisible by ``n_heads``.
        TypeError: ``generator`` is not a ``torch.Generator`` or ``dtype`` is not floating.
    """

    def __init__(self, *, vocab: int = VOCAB_SIZE, d_model: int = 48, n_layers: int = 2, n_heads: int = 4,
                 d_ff: int | None = None, context: int = 32, tied: bool = True, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.vocab = check_int("vocab", vocab, low=2)
        self.d_model = check_int("d_model", d_model, low=1)
        self.n_layers = check_int("n_layers", n_layers, low=1)
        self.n_heads = check_int("n_heads", n_heads, low=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_ff = 4 * self.d_model if d_ff is None else check_int("d_ff", d_ff, low=1)
        self.context = check_int("context", context, low=1)
        if not isinstance(tied, bool):
            raise TypeError(f"tied must be a bool, got {type(tied).__name__}")
        self.tied = tied
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        with torch.random.fork_rng(devices=[]):  # the layers' default draws are overwritten below: keep them
            self.embed = nn.Embedding(self.vocab, self.d_model)  # off the global generator
            self.position = nn.Embedding(self.context, self.d_model)
            self.blocks = nn.ModuleList(Block(self.d_model, self.n_heads, self.d_ff) for _ in range(self.n_layers))
            self.ln_f = nn.LayerNorm(self.d_model)
            self.head = None if tied else nn.Linear(self.d_model, self.vocab, bias=False)
        self.to(dtype)
        self._init_parameters(generator)

    @torch.no_grad()
    def _init_parameters(self, generator: torch.Generator) -> None:
        residual_std = INIT_STD / math.sqrt(2 * self.n_layers)
        for name, p in self.named_parameters():  # a fixed order: the registration order
            if name.endswith(("out.weight", "fc2.weight")):
                p.normal_(0.0, residual_std, generator=generator)
            elif name.startswith(("embed", "position", "head")) or (name.endswith(".weight") and p.dim() == 2):
                p.normal_(0.0, INIT_STD, generator=generator)
            elif ".ln" in name or name.startswith("ln_f"):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:  # linear biases
                p.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, V]`` for int64 ids ``x`` ``[B, T]`` (T <= ``context``); position t sees ``x[:, :t+1]``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.int64:
            raise ValueError(f"x must be int64 [B, T], got {getattr(x, 'dtype', type(x).__name__)} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        B, T = x.shape
        if not 1 <= T <= self.context:
            raise ValueError(f"sequence length T = {T} must be in [1, {self.context}] (the model's context)")
        if x.numel() and (x.min() < 0 or x.max() >= self.vocab):
            raise ValueError(f"x must hold ids in [0, {self.vocab - 1}], got range [{int(x.min())}, {int(x.max())}]")
        h = self.embed(x) + self.position.weight[:T]                          # h⁰ = E[x_t] + P[t], [B, T, d]
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    def token_log_probs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[B, T]``: log p(y_t | x_≤t) in nats, for ids ``x`` and targets ``y`` of the same shape ``[B, T]``."""
        logits = self(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != torch.int64:
            raise ValueError(f"y must be int64 with x's shape {tuple(x.shape)}, got "
                             f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
        if y.numel() and (y.min() < 0 or y.max() >= self.vocab):
            raise ValueError(f"y must hold ids in [0, {self.vocab - 1}]")
        return torch.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats, a scalar) of next-character targets ``y`` ``[B, T]`` given ``x`` ``[B, T]``."""
        return -self.token_log_probs(x, y).mean()

    def n_params(self, *, non_embedding: bool = True) -> int:
        """Number of parameters; with ``non_embedding`` (default) without the token and position
        embeddings (Kaplan's N; a tied head counts as the embedding, an untied one is counted)."""
        skip = {id(self.embed.weight), id(self.position.weight)} if non_embedding else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def flops_per_token(self, context: int | None = None) -> float:
        """Training FLOPs per predicted token, 6·N + 6·L·T·d (Kaplan et al. 2020, Table 1: forward
        2N + 2·L·T·d, backward twice the forward); T = ``context`` (default the model's) tokens attended."""
        T = self.context if context is None else check_int("context", context, low=1, high=self.context)
        return 6.0 * self.n_params() + 6.0 * self.n_layers * T * self.d_model

    def extra_repr(self) -> str:
        return (f"vocab={self.vocab}, d_model={self.d_model}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
                f"d_ff={self.d_ff}, context={self.context}, tied={self.tied}")
