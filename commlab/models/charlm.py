"""Character n-gram MLP language model, R replicas stacked in one flat ``[R, d]`` parameter tensor.

Bengio-style next-character model: the C previous characters are looked up in a per-replica embedding
table, concatenated and fed to an MLP whose last layer gives the logits over the vocabulary::

    e_j = E_r[x_j]                                   E_r [V, D], x [C] ids  ->  e_j [D]
    h⁰ = (e_1, …, e_C)                               [C·D]
    logits_r = MLP_r(h⁰)                             (C·D, n₁, …, n_k, V), ReLU hidden layers

The MLP is a :class:`~commlab.models.stacked.StackedMLP` used as a function of its parameters
(one ``baddbmm`` per layer), so the model's whole state is the leaf ``flat`` ``[R, d]``: row r is
replica r's parameters and the vector a worker sends. Communicators, compressors and the outer
optimisers of :mod:`commlab.distributed.outer` act on it (or on the gradients of the same shape).

Layout of a row: the embedding table (``V·D`` values, row-major ``[V, D]``), then the MLP in
:class:`StackedMLP`'s layout (per layer W ``[in, out]`` row-major, then b). :attr:`CharNGramMLP.layer_slices`
lists the layers in order, the embedding first, each as a tuple of column slices
(``(embedding,)``, then ``(W, b)`` per linear layer), the form
:func:`commlab.distributed.outer.fragment_indices` takes for strided fragments.

Initialisation: the embedding N(0, 1) (``nn.Embedding``'s default), the MLP ``nn.Linear``'s default
(uniform ±1/sqrt(fan-in)), all from the caller's generator; ``same_init=True`` gives every replica the
same draw. Loss is the mean cross-entropy in nats; bits per character = loss / ln 2 (:func:`bits_per_char`).

Example::

    corpus = stdlib_corpus("train", max_chars=1_000_000)
    model = CharNGramMLP(context=16, embed=8, hidden=(224,) * 4, replicas=2, generator=SeedTree(0).torch("init"))
    x, y = corpus.sample_windows((2, 64), 16, generator)     # [2, 64, 16], [2, 64]
    loss, grad = model.loss_and_grad(x, y)                    # [2], [2, d]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from commlab._checks import check_int
from commlab.models.stacked import StackedMLP, StackedModel

VOCAB_SIZE = 97
"""Size of :data:`commlab.data.text.VOCAB` (the default vocabulary)."""


def bits_per_char(loss_nats):
    """Cross-entropy in nats -> bits per character (divide by ln 2); works on floats and tensors."""
    return loss_nats / math.log(2)


class CharNGramMLP(StackedModel):
    """R replicas of a character n-gram MLP LM, parameters stacked in ``flat`` ``[R, d]``.

    Args:
        context: C >= 1 characters of context per prediction.
        embed: D >= 1 embedding dimensions per character.
        hidden: widths of the hidden layers (may be empty: a linear model of the embeddings).
        replicas: R >= 1.
        generator: the ``torch.Generator`` the initial parameters are drawn from.
        vocab: V >= 2 symbols (default 97, :data:`commlab.data.text.VOCAB`).
        same_init: every replica starts from the same parameters (default) or from its own draw.
        dtype: floating dtype of the parameters (float32 default; float64 for exact comparisons).
    """

    def __init__(self, *, context: int = 16, embed: int = 16, hidden: Sequence[int] = (192,) * 4, replicas: int = 1,
                 generator: torch.Generator, vocab: int = VOCAB_SIZE, same_init: bool = True,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.context = check_int("context", context, low=1)
        self.embed = check_int("embed", embed, low=1)
        self.vocab = check_int("vocab", vocab, low=2)
        if isinstance(hidden, int | str) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of widths, e.g. (192, 192), got {hidden!r}")
        self.hidden = tuple(check_int("hidden width", n, low=1) for n in hidden)
        self.replicas = check_int("replicas", replicas, low=1)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        draws = 1 if same_init else self.replicas
        table = torch.randn(draws, self.vocab * self.embed, generator=generator, dtype=dtype)
        trunk = StackedMLP((self.context * self.embed, *self.hidden, self.vocab), draws, generator=generator,
                           same_init=False, dtype=dtype)
        init = torch.cat([table, trunk.flat.detach()], dim=1)
        del trunk.flat  # the trunk is used as a function of the columns of self.flat only
        self.trunk = trunk
        self.n_embedding = self.vocab * self.embed
        self.d = self.n_embedding + trunk.d
        self.layer_slices: list[tuple[slice, ...]] = [(slice(0, self.n_embedding),)]
        """The layers in order, each a tuple of its column slices of ``flat``: ``(embedding,)``, then
        ``(W, b)`` per linear layer (the last one gives the logits)."""
        shift = self.n_embedding
        for weight, bias in trunk.layer_slices:
            self.layer_slices.append((slice(weight.start + shift, weight.stop + shift),
                                      slice(bias.start + shift, bias.stop + shift)))
        self.flat = nn.Parameter(init.expand(self.replicas, self.d).clone())

    def forward(self, x: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[K, B, V]`` of replica k of ``flat`` ``[K, d]`` (default :attr:`flat`) on its contexts
        ``x[k]``; ``x`` is int64 ``[K, B, C]`` (K may be an expanded 1)."""
        flat = self._check_flat(flat)
        K = flat.shape[0]
        if (not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[0] != K or x.shape[2] != self.context
                or x.dtype != torch.int64):
            raise ValueError(f"x must be int64 [{K}, B, {self.context}] (one batch of contexts per replica), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if x.numel() and (x.min() < 0 or x.max() >= self.vocab):
            raise ValueError(f"x must hold ids in [0, {self.vocab - 1}], got range [{int(x.min())}, {int(x.max())}]")
        B = x.shape[1]
        table = flat[:, : self.n_embedding].view(K, self.vocab, self.embed)
        index = x.reshape(K, B * self.context, 1).expand(K, B * self.context, self.embed)
        h = torch.gather(table, 1, index).reshape(K, B, self.context * self.embed)
        return self.trunk(h, flat[:, self.n_embedding :])

    def extra_repr(self) -> str:
        return (f"context={self.context}, embed={self.embed}, hidden={self.hidden}, vocab={self.vocab}, "
                f"replicas={self.replicas}, d={self.d}")
