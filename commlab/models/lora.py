"""LoRA adapters (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") for the
``nn.Linear`` layers of any module, e.g. :class:`~commlab.models.transformer.TinyTransformer`.

A wrapped layer keeps its frozen base weight W₀ ``[out, in]`` and bias, and adds a trainable
low-rank update (Hu et al., eq. 3)::

    h = W₀ x + b + (α / r) · B A x                A [r, in], B [out, r], rank r, scale α / r

A is drawn uniform in ±1/sqrt(in) (``nn.Linear``'s bound, from the caller's generator) and B starts at
zero, so a freshly wrapped model computes exactly what the base model does. :meth:`LoRALinear.merge`
folds the update into the weight, W₀ ← W₀ + (α/r)·B A, for adapter-free inference; :meth:`LoRALinear.unmerge`
subtracts it again (the base weight is restored up to float rounding).

:func:`apply_lora` wraps the layers whose qualified names end with one of ``targets`` (e.g.
``("qkv", "out")`` wraps every block's attention projections) and freezes every other parameter of
the model, so an optimiser over :func:`lora_parameters` (or over the parameters that require grad)
trains the adapters only. :func:`lora_state_dict` is the adapters' state alone: what a federated
client sends.

**Stacked replicas** (``replicas=N``): N clients share one frozen base model and each has its own
adapter, A ``[N, r, in]`` and B ``[N, out, r]``. The input's leading (batch) axis holds the clients'
examples in N equal consecutive groups (``[N·b, ..., in]``: rows ``n·b .. (n+1)·b − 1`` are client
n's), and group n gets W₀ x + b + (α/r) B_n A_n x. Since every other layer of the model acts on each
example alone, one forward pass over ``N·b`` examples runs N adapted models, and the **sum** over
clients of their mean losses gives each adapter exactly its own gradient. Every replica starts from
the same A (drawn once) and B = 0. Stacked layers cannot be merged (one base weight, N updates).
:func:`lora_vector` / :func:`load_lora_vector` / :func:`lora_grad_vector` read and write all
adapters of a model as one flat ``[N, d]`` tensor (``[1, d]`` without replicas), the form the
federated methods of :mod:`commlab.distributed` work on.

Example::

    model = TinyTransformer(generator=SeedTree(0).torch("init"))
    names = apply_lora(model, rank=4, alpha=8.0, targets=("qkv", "out"), generator=SeedTree(0).torch("lora"))
    optimiser = torch.optim.AdamW(lora_parameters(model), lr=1e-3)
    ...
    merge_lora(model)      # W₀ + (α/r) B A in place; the adapters stop contributing
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_int, check_positive


class LoRALinear(nn.Module):
    """``nn.Linear`` plus a rank-r adapter: y = x W₀ᵀ + b + (α/r) · x Aᵀ Bᵀ.

    Args:
        base: the layer to adapt (its parameters are frozen here: ``requires_grad=False``).
        rank: r, 1 <= r <= min(in_features, out_features).
        alpha: α > 0; the update is scaled by α / r.
        generator: the ``torch.Generator`` A is drawn from.
        replicas: None (one adapter: A ``[r, in]``, B ``[out, r]``) or N >= 1 stacked adapters
            (A ``[N, r, in]``, B ``[N, out, r]``, every A_n the same draw).

    Input ``x`` ``[..., in]``, output ``[..., out]``; with replicas, ``x`` ``[N·b, ..., in]`` (client n's
    examples are the n-th of N equal groups of the leading axis).
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, generator: torch.Generator,
                 replicas: int | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.rank = check_int("rank", rank, low=1, high=min(base.in_features, base.out_features))
        self.alpha = check_positive("alpha", alpha)
        self.scale = self.alpha / self.rank
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        weight = base.weight
        bound = base.in_features ** -0.5
        self.replicas = None if replicas is None else check_int("replicas", replicas, low=1)
        stack = () if self.replicas is None else (self.replicas,)
        A = (2 * torch.rand(self.rank, base.in_features, generator=generator, dtype=weight.dtype) - 1) * bound
        self.A = nn.Parameter(A.expand(*stack, -1, -1).clone().to(weight.device))
        self.B = nn.Parameter(torch.zeros(*stack, base.out_features, self.rank, dtype=weight.dtype,
                                          device=weight.device))
        self.merged = False

    def delta(self) -> torch.Tensor:
        """The weight update (α/r)·B A: ``[out, in]``, or ``[N, out, in]`` with replicas."""
        return self.scale * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        if self.replicas is None:
            return y + self.scale * F.linear(F.linear(x, self.A), self.B)  # (α/r) · B (A x)
        N = self.replicas
        if x.dim() < 2 or x.shape[0] % N:
            raise ValueError(f"a stacked LoRA layer of {N} replicas needs x [N·b, ..., in] with a leading axis "
                             f"divisible by {N}, got shape {tuple(x.shape)}")
        groups = x.reshape(N, -1, x.shape[-1])                                # [N, b·…, in]
        low = torch.bmm(torch.bmm(groups, self.A.transpose(1, 2)), self.B.transpose(1, 2))  # B_n (A_n x)
        return y + self.scale * low.reshape(y.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """W₀ ← W₀ + (α/r)·B A; afterwards the forward pass uses the merged weight only."""
        if self.replicas is not None:
            raise ValueError("stacked LoRA layers (replicas) share one base weight and cannot be merged")
        if self.merged:
            raise ValueError("this LoRA layer is already merged")
        self.base.weight += self.delta()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W₀ ← W₀ − (α/r)·B A: undo :meth:`merge` (exact up to float rounding)."""
        if not self.merged:
            raise ValueError("this LoRA layer is not merged")
        self.base.weight -= self.delta()
        self.merged = False

    def extra_repr(self) -> str:
        replicas = "" if self.replicas is None else f", replicas={self.replicas}"
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}{replicas}"


def apply_lora(model: nn.Module, *, rank: int, alpha: float, targets: Sequence[str], generator: torch.Generator,
               replicas: int | None = None) -> list[str]:
    """Wrap the ``nn.Linear`` layers of ``model`` named ``...<target>`` in :class:`LoRALinear`, in place.

    Every parameter of ``model`` outside the adapters is frozen (``requires_grad=False``).

    Args:
        model: any module (e.g. a :class:`~commlab.models.transformer.TinyTransformer`).
        rank, alpha: as in :class:`LoRALinear` (the same for every wrapped layer).
        targets: name suffixes of the layers to wrap, e.g. ``("qkv", "out", "fc1", "fc2")``; a layer
            matches when its qualified name equals a target or ends with ``"." + target``.
        generator: draws every A, layer by layer in the model's module order.
        replicas: None, or N stacked adapters per layer (see :class:`LoRALinear`).

    Returns:
        the qualified names of the wrapped layers, in order.

    Raises:
        ValueError: ``targets`` is empty, a target matches no ``nn.Linear``, or the model already has adapters.
    """
    if isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets):
        raise TypeError(f"targets must be a sequence of layer-name suffixes, e.g. ('qkv', 'out'), got {targets!r}")
    targets = tuple(targets)
    if not targets:
        raise ValueError("targets must name at least one layer")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("model already has LoRA adapters")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [(name, m) for name, m in linears if any(name == t or name.endswith("." + t) for t in targets)]
    unmatched = [t for t in targets if not any(name == t or name.endswith("." + t) for name, _ in chosen)]
    if unmatched:
        raise ValueError(f"targets {unmatched} match no nn.Linear layer; the model's linear layers are "
                         f"{[name for name, _ in linears]}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, layer in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(layer, rank=rank, alpha=alpha, generator=generator, replicas=replicas))
    return [name for name, _ in chosen]


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    """The :class:`LoRALinear` layers of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every adapter parameter (A then B of each layer, in module order)."""
    return [p for layer in lora_layers(model) for p in (layer.A, layer.B)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' entries of ``model.state_dict()`` only (names ending in ``.A`` / ``.B``)."""
    names = {f"{name}.{part}" for name, m in model.named_modules() if isinstance(m, LoRALinear) for part in "AB"}
    return {k: v for k, v in model.state_dict().items() if k in names}


def merge_lora(model: nn.Module) -> None:
    """:meth:`LoRALinear.merge` every adapter of ``model``."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA adapters")
    for layer in layers:
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """:meth:`LoRALinear.unmerge` every adapter of ``model``."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA adapters")
    for layer in layers:
        layer.unmerge()


def _adapters(model: nn.Module) -> tuple[list[nn.Parameter], int]:
    """Every adapter parameter and the number of replicas (1 without), checked to agree across layers."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA adapters")
    counts = {layer.replicas for layer in layers}
    if len(counts) != 1:
        raise ValueError(f"the model's LoRA layers have different replica counts {sorted(map(str, counts))}")
    (count,) = counts
    return [p for layer in layers for p in (layer.A, layer.B)], 1 if count is None else count


def lora_vector(model: nn.Module) -> torch.Tensor:
    """All adapters of ``model`` as one ``[N, d]`` tensor (a copy; ``[1, d]`` without replicas): per replica,
    each layer's A then B, flattened, in module order. d = Σ_layers r·(in + out)."""
    params, n = _adapters(model)
    return torch.cat([p.detach().reshape(n, -1) for p in params], dim=1)


def lora_grad_vector(model: nn.Module) -> torch.Tensor:
    """The adapters' gradients in :func:`lora_vector`'s layout, ``[N, d]`` (zeros where ``.grad`` is None)."""
    params, n = _adapters(model)
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(n, -1) for p in params], dim=1)


@torch.no_grad()
def load_lora_vector(model: nn.Module, vector: torch.Tensor) -> None:
    """Write ``vector`` ``[N, d]`` (:func:`lora_vector`'s layout) into the adapters of ``model``, in place."""
    params, n = _adapters(model)
    d = sum(p.numel() // n for p in params)
    if not isinstance(vector, torch.Tensor) or vector.shape != (n, d):
        raise ValueError(f"vector must be a tensor [{n}, {d}] (replicas, adapter parameters), got "
                         f"{tuple(getattr(vector, 'shape', ())) or type(vector).__name__}")
    start = 0
    for p in params:
        width = p.numel() // n
        p.copy_(vector[:, start:start + width].reshape(p.shape))
        start += width
