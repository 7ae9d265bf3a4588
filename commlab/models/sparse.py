"""Masked sparse linear layers with group-to-group (G2G) connectivity and sparse rewiring.

G2GNet (Konstantaropoulos et al., 2025) splits the units of every layer into ``G`` groups
("ensembles") and connects them as

.. math::

    M_{oi} = 1 \\text{ if } g(o) = g(i), \\qquad M_{oi} \\sim \\mathrm{Bernoulli}(p_\\text{inter}) \\text{ otherwise},

so a layer computes :math:`y = (W \\odot M)\\,x + b`. With equal groups the density is
:math:`s + p_\\text{inter}(1 - s)` where :math:`s = 1/G` is the within-group share of all pairs
(``G = 8``, ``p_inter = 0.15``: 0.256, i.e. about 74 % sparsity), and the share of the non-zero
weights that cross groups -- the share of activations that cross devices if each group lives on
its own device -- is :math:`p_\\text{inter}(1 - s) / \\text{density}`.

Dynamic sparse training (DST) changes the mask while training: every few steps each layer prunes
a fraction ζ of its active edges and regrows as many inactive ones. Pruning by smallest ``|w|`` and
growing at random is SET; the Hebbian rule prunes the active edges whose input and output
activations are least correlated and grows the inactive edges whose activations are most
correlated, :math:`|\\mathrm{corr}(a_i, a_o)|`, estimated from running means
(:class:`CorrelationTracker`).

The masked products are dense matmuls (no CPU speed-up); cost is counted analytically as the
number of non-zero weights (multiply-accumulates per sample, :meth:`MaskedLinear.macs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

GROUPINGS = ("index", "random")
PRUNE_RULES = ("magnitude", "hebbian")
GROW_RULES = ("random", "hebbian")


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(value).__name__}: {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def group_labels(n: int, groups: int, scheme: str = "index", generator: torch.Generator | None = None) -> torch.Tensor:
    """Group label of each of ``n`` units.

    Args:
        n: number of units, >= 1.
        groups: number of groups G >= 1 (G > n is allowed: some groups stay empty).
        scheme: ``"index"``: contiguous blocks, :math:`g(u) = \\lfloor uG/n \\rfloor`; ``"random"``:
            the same group sizes assigned to a random permutation of the units (needs ``generator``).
        generator: torch generator for ``"random"``.

    Returns:
        int64 tensor ``[n]`` with values in ``0..G-1``.
    """
    n = _check_positive_int("n", n)
    groups = _check_positive_int("groups", groups)
    if scheme not in GROUPINGS:
        raise ValueError(f"scheme must be one of {GROUPINGS}, got {scheme!r}")
    labels = torch.arange(n, dtype=torch.int64) * groups // n
    if scheme == "random":
        if generator is None:
            raise ValueError("scheme='random' needs an explicit torch.Generator")
        labels = labels[torch.randperm(n, generator=generator)]
    return labels


def within_group_share(out_groups: torch.Tensor, in_groups: torch.Tensor) -> float:
    """Share s of all (output, input) pairs whose two units are in the same group."""
    n_groups = int(max(out_groups.max(), in_groups.max())) + 1
    out_counts = torch.bincount(out_groups, minlength=n_groups).double()
    in_counts = torch.bincount(in_groups, minlength=n_groups).double()
    return float((out_counts * in_counts).sum() / (len(out_groups) * len(in_groups)))


def g2g_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, p_inter: float,
             generator: torch.Generator) -> torch.Tensor:
    """Group-to-group mask: dense inside a group, Bernoulli(``p_inter``) links between groups.

    Args:
        out_groups: int64 ``[n_out]`` group labels of the output units.
        in_groups: int64 ``[n_in]`` group labels of the input units.
        p_inter: probability of an edge between units of different groups, in [0, 1].
        generator: torch generator (the mask is part of the model: seed and record it).

    Returns:
        bool ``[n_out, n_in]``.
    """
    p_inter = _check_probability("p_inter", p_inter)
    for name, labels in (("out_groups", out_groups), ("in_groups", in_groups)):
        if labels.ndim != 1 or labels.dtype != torch.int64 or len(labels) == 0:
            raise ValueError(f"{name} must be a non-empty 1-D int64 tensor, got {labels.dtype} {tuple(labels.shape)}")
    same = out_groups[:, None] == in_groups[None, :]
    links = torch.rand(same.shape, generator=generator) < p_inter
    return same | links


def random_mask(n_out: int, n_in: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """Unstructured (Erdős–Rényi) mask with exactly ``round(density * n_out * n_in)`` edges, bool ``[n_out, n_in]``."""
    n_out, n_in = _check_positive_int("n_out", n_out), _check_positive_int("n_in", n_in)
    density = _check_probability("density", density)
    k = round(density * n_out * n_in)
    mask = torch.zeros(n_out * n_in, dtype=torch.bool)
    mask[torch.randperm(n_out * n_in, generator=generator)[:k]] = True
    return mask.view(n_out, n_in)


def g2g_density(out_groups: torch.Tensor, in_groups: torch.Tensor, p_inter: float) -> float:
    """Expected density of :func:`g2g_mask`: :math:`s + p_\\text{inter}(1 - s)`."""
    s = within_group_share(out_groups, in_groups)
    return s + _check_probability("p_inter", p_inter) * (1.0 - s)


def g2g_inter_fraction(out_groups: torch.Tensor, in_groups: torch.Tensor, p_inter: float) -> float:
    """Expected share of non-zero weights that link different groups: :math:`p_\\text{inter}(1-s)/\\text{density}`."""
    s = within_group_share(out_groups, in_groups)
    density = g2g_density(out_groups, in_groups, p_inter)
    return p_inter * (1.0 - s) / density if density > 0 else 0.0


def inter_group_fraction(mask: torch.Tensor, out_groups: torch.Tensor, in_groups: torch.Tensor) -> float:
    """Measured share of the mask's non-zeros that link units of different groups (0 for an empty mask)."""
    if mask.shape != (len(out_groups), len(in_groups)):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, groups give ({len(out_groups)}, {len(in_groups)})")
    nnz = int(mask.sum())
    if nnz == 0:
        return 0.0
    cross = mask & (out_groups[:, None] != in_groups[None, :])
    return int(cross.sum()) / nnz


class CorrelationTracker:
    """Running estimate of :math:`\\mathrm{corr}(a_i, a_o)` between every input and output unit of a layer.

    Exponential moving averages (factor ``momentum`` per batch) of :math:`E[a_i]`, :math:`E[a_o]`,
    :math:`E[a_i^2]`, :math:`E[a_o^2]` and :math:`E[a_o a_i]` (a ``[n_out, n_in]`` matrix, one extra
    matmul per tracked batch).
    """

    def __init__(self, n_out: int, n_in: int, momentum: float = 0.9):
        momentum = _check_probability("momentum", momentum)
        if momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.batches = 0
        self.mean_in = torch.zeros(n_in)
        self.mean_out = torch.zeros(n_out)
        self.sq_in = torch.zeros(n_in)
        self.sq_out = torch.zeros(n_out)
        self.cross = torch.zeros(n_out, n_in)

    @torch.no_grad()
    def update(self, a_in: torch.Tensor, a_out: torch.Tensor) -> None:
        """Fold in one batch: ``a_in`` ``[B, n_in]``, ``a_out`` ``[B, n_out]`` (float)."""
        if a_in.ndim != 2 or a_out.ndim != 2 or a_in.shape[0] != a_out.shape[0]:
            raise ValueError(f"a_in [B, n_in] and a_out [B, n_out] expected, "
                             f"got {tuple(a_in.shape)}, {tuple(a_out.shape)}")
        a_in, a_out = a_in.detach().float().cpu(), a_out.detach().float().cpu()
        batch = a_in.shape[0]
        w = 0.0 if self.batches == 0 else self.momentum
        for stat, new in ((self.mean_in, a_in.mean(0)), (self.mean_out, a_out.mean(0)),
                          (self.sq_in, (a_in**2).mean(0)), (self.sq_out, (a_out**2).mean(0)),
                          (self.cross, a_out.T @ a_in / batch)):
            stat.mul_(w).add_(new, alpha=1.0 - w)
        self.batches += 1

    def correlation(self, eps: float = 1e-8) -> torch.Tensor:
        """Pearson correlation estimate ``[n_out, n_in]``; 0 where a unit has (near) zero variance."""
        if self.batches == 0:
            raise RuntimeError("no batch has been tracked yet")
        cov = self.cross - self.mean_out[:, None] * self.mean_in[None, :]
        std_in = (self.sq_in - self.mean_in**2).clamp_min(0).sqrt()
        std_out = (self.sq_out - self.mean_out**2).clamp_min(0).sqrt()
        denom = std_out[:, None] * std_in[None, :]
        return torch.where(denom > eps, cov / denom.clamp_min(eps), torch.zeros_like(cov))


class MaskedLinear(nn.Module):
    """Linear layer with a fixed-shape binary mask: :math:`y = (W \\odot M)x + b`.

    Masked entries get zero gradient, so the optimiser never moves them into use (the product is
    taken inside ``forward``). Input ``[..., n_in]`` float32, output ``[..., n_out]``.

    Args:
        n_in, n_out: layer sizes.
        mask: bool ``[n_out, n_in]``, or None for a dense layer (all ones).
        generator: torch generator for the weight initialisation: uniform in
            :math:`\\pm 1/\\sqrt{\\text{fan-in}_o}` for row o of W and for :math:`b_o`, where the fan-in
            counts the row's active inputs (PyTorch's default for a dense layer; a sparse layer keeps
            the dense layer's activation scale).
    """

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor | None = None, *, generator: torch.Generator):
        super().__init__()
        n_in, n_out = _check_positive_int("n_in", n_in), _check_positive_int("n_out", n_out)
        if mask is None:
            mask = torch.ones(n_out, n_in, dtype=torch.bool)
        if mask.shape != (n_out, n_in) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool [{n_out}, {n_in}], got {mask.dtype} {tuple(mask.shape)}")
        bound = 1.0 / mask.sum(1, keepdim=True).clamp_min(1).double().sqrt().float()  # [n_out, 1]
        self.weight = nn.Parameter((torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(n_out, generator=generator) * 2 - 1) * bound[:, 0])
        self.register_buffer("mask", mask.clone())
        with torch.no_grad():
            self.weight.mul_(self.mask)
        self.tracker: CorrelationTracker | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.mask, self.bias)
        if self.tracker is not None and self.training:
            self.tracker.update(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
        return y

    def track(self, momentum: float = 0.9) -> CorrelationTracker:
        """Start tracking activation correlations (during training forwards) and return the tracker."""
        self.tracker = CorrelationTracker(self.weight.shape[0], self.weight.shape[1], momentum)
        return self.tracker

    @property
    def nnz(self) -> int:
        """Number of active weights (the layer's multiply-accumulates per sample)."""
        return int(self.mask.sum())

    def macs(self) -> int:
        """Multiply-accumulates per sample: the active weights (biases not counted)."""
        return self.nnz

    @property
    def density(self) -> float:
        return self.nnz / self.mask.numel()


class MaskedMLP(nn.Module):
    """MLP of :class:`MaskedLinear` layers with ReLU between them; input ``[B, ...]`` is flattened.

    Args:
        sizes: layer widths ``(n_in, h_1, ..., n_classes)``, at least two entries.
        masks: one bool mask per layer (None entries, or ``masks=None``, give dense layers).
        generator: torch generator for the weights.
    """

    def __init__(self, sizes: Sequence[int], masks: Sequence[torch.Tensor | None] | None = None, *,
                 generator: torch.Generator):
        super().__init__()
        sizes = [_check_positive_int("sizes[i]", s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least (n_in, n_out), got {sizes}")
        masks = [None] * (len(sizes) - 1) if masks is None else list(masks)
        if len(masks) != len(sizes) - 1:
            raise ValueError(f"masks needs one entry per layer ({len(sizes) - 1}), got {len(masks)}")
        self.sizes = tuple(sizes)
        self.layers = nn.ModuleList(
            MaskedLinear(a, b, m, generator=generator) for a, b, m in zip(sizes[:-1], sizes[1:], masks, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x

    def macs(self) -> int:
        """Multiply-accumulates per sample over all layers."""
        return sum(layer.macs() for layer in self.layers)

    @property
    def nnz(self) -> int:
        """Active weights over all layers (biases not counted)."""
        return sum(layer.nnz for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """1 - (active weights) / (all weight entries), over all layers."""
        return 1.0 - self.nnz / sum(layer.mask.numel() for layer in self.layers)


def g2g_mlp(sizes: Sequence[int], groups: int, p_inter: float, *, generator: torch.Generator,
            input_scheme: str = "index", hidden_scheme: str = "index") -> tuple[MaskedMLP, list[torch.Tensor]]:
    """A :class:`MaskedMLP` with G2G masks on every layer.

    Inputs are grouped by ``input_scheme``, hidden units by ``hidden_scheme``, outputs (classes) by
    index. Returns the model and the group labels of every layer's units (``len(sizes)`` tensors),
    needed to measure cross-group traffic.
    """
    labels = [group_labels(sizes[0], groups, input_scheme, generator)]
    labels += [group_labels(h, groups, hidden_scheme, generator) for h in sizes[1:-1]]
    labels.append(group_labels(sizes[-1], groups, "index"))
    masks = [g2g_mask(out_g, in_g, p_inter, generator) for in_g, out_g in zip(labels[:-1], labels[1:], strict=True)]
    return MaskedMLP(sizes, masks, generator=generator), labels


@torch.no_grad()
def prune_and_regrow(layer: MaskedLinear, fraction: float, *, prune: str = "magnitude", grow: str = "random",
                     generator: torch.Generator | None = None,
                     optimizer: torch.optim.Optimizer | None = None) -> int:
    """One DST rewiring event on ``layer``: prune ``round(fraction * nnz)`` active edges, regrow as many.

    Rules: ``prune="magnitude"`` removes the smallest :math:`|W_{oi}|` (SET), ``prune="hebbian"`` the
    smallest :math:`|\\mathrm{corr}(a_i, a_o)|`; ``grow="random"`` adds uniformly random inactive edges
    (SET), ``grow="hebbian"`` the inactive edges with the largest :math:`|\\mathrm{corr}|`. The Hebbian
    rules need :meth:`MaskedLinear.track` to have seen batches. Edges pruned in this event are not
    regrown in it. Regrown weights start at 0 and, if ``optimizer`` is given, their optimiser state
    entries (e.g. Adam's moments) are zeroed so stale moments do not move them.

    Returns:
        The number of edges moved (the density is unchanged).
    """
    fraction = _check_probability("fraction", fraction)
    if prune not in PRUNE_RULES:
        raise ValueError(f"prune must be one of {PRUNE_RULES}, got {prune!r}")
    if grow not in GROW_RULES:
        raise ValueError(f"grow must be one of {GROW_RULES}, got {grow!r}")
    if "hebbian" in (prune, grow) and (layer.tracker is None or layer.tracker.batches == 0):
        raise ValueError("Hebbian rewiring needs correlations: call layer.track() and train some batches first")
    if grow == "random" and generator is None:
        raise ValueError("grow='random' needs an explicit torch.Generator")
    mask = layer.mask.view(-1)
    active = mask.nonzero().squeeze(1)
    inactive = (~mask).nonzero().squeeze(1)
    k = min(round(fraction * len(active)), len(inactive))
    if k == 0:
        return 0
    corr = layer.tracker.correlation().abs().view(-1) if "hebbian" in (prune, grow) else None
    prune_score = layer.weight.detach().abs().view(-1) if prune == "magnitude" else corr
    pruned = active[torch.topk(prune_score[active], k, largest=False).indices]
    if grow == "hebbian":
        grown = inactive[torch.topk(corr[inactive], k, largest=True).indices]
    else:
        grown = inactive[torch.randperm(len(inactive), generator=generator)[:k]]
    mask[pruned] = False
    mask[grown] = True
    changed = torch.cat([pruned, grown])
    layer.weight.view(-1)[changed] = 0.0
    if optimizer is not None:
        for value in optimizer.state.get(layer.weight, {}).values():
            if torch.is_tensor(value) and value.shape == layer.weight.shape:
                value.view(-1)[changed] = 0.0
    return k
