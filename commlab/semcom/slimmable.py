"""Slimmable layers and a slimmable split CNN: one device encoder that serves every bandwidth.

After Assine, Santos Filho, Valle & Levorato, "Slimmable Encoders for Flexible Split DNNs in Bandwidth and
Resource Constrained IoT Systems" (2023), with the slimmable-network mechanics of Yu et al. (2019). The
paper's architecture is not public; this module is commlab's reconstruction (briefs/semcom/
slimmable_split_encoders.md).

Layers whose active width is chosen at run time, by slicing one weight tensor (no weights are loaded):

* :class:`SlimmableConv2d` — a ``Conv2d`` that uses only its first ``in_width`` input and ``out_width`` output
  channels: ``y[:, o] = b[o] + Σ_{i < in_width} W[o, i] ⋆ x[:, i]`` for ``o < out_width``;
* :class:`SlimmableLinear` — the same for a fully-connected layer, ``y = x W[:out, :in]ᵀ + b[:out]``;
* :class:`SwitchableBatchNorm2d` — one set of BatchNorm statistics and affine parameters per width
  (slimmable networks' "switchable BN"), or one shared set (the naive baseline).

:class:`SlimmableSplitCNN` (device head | edge tail, for ``[B, 1, 28, 28]`` images) at width ``m`` of ``M``::

    device:  conv 3×3 stride 2 (1 → s·m channels) → ReLU → conv 3×3 stride 2 (s·m → m)   z [B, m, 7, 7]
    link:    the m slices of 7×7 features (8-bit min–max per slice on the wire, :func:`transmit_slices`)
    edge:    conv 3×3 (m → t; the missing M − m slices count as zeros) → BN_m → ReLU
             → conv 3×3 (t → t) → BN_m → ReLU → max-pool 2 → flatten [B, 9t] → linear → logits [B, classes]

so the device's compute and the payload both scale with ``m``, and switching ``m`` only changes slice bounds.
:func:`train_slimmable` trains every width of one model with the sandwich rule (widths M, 1 and random
ones each step, gradients accumulated) and optional distillation from a teacher's logits.

FLOP counts (:meth:`SlimmableConv2d.flops`, :meth:`SlimmableSplitCNN.device_flops`) count a multiply and an
add as two FLOP: a conv output element with bias costs ``k²·in_width`` multiplies, ``k²·in_width − 1``
additions and one bias addition, ``2·k²·in_width`` FLOP in all; ReLU (comparisons) is not counted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from commlab._checks import check_int, check_positive
from commlab.compress import Uniform
from commlab.data.batches import EpochBatches


def check_width(name: str, width, maximum: int) -> int:
    """``width`` as an int in ``[1, maximum]``; ``ValueError`` (``TypeError`` for a non-integer) otherwise."""
    return check_int(name, width, low=1, high=maximum)


class SlimmableConv2d(nn.Conv2d):
    """A ``Conv2d`` (``groups = 1``) that computes with its first ``in_width`` input and ``out_width`` output channels.

    Args are those of ``nn.Conv2d`` (``in_channels``, ``out_channels`` are the widest widths). The active widths
    start at the full widths and are set by :meth:`set_width`.

    ``forward``: ``x`` ``[B, in_width, H, W]`` -> ``[B, out_width, H', W']`` with
    ``H' = ⌊(H + 2p − k)/s⌋ + 1`` (likewise ``W'``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.in_width, self.out_width = in_channels, out_channels

    def set_width(self, in_width: int | None = None, out_width: int | None = None) -> None:
        """Choose the active widths (``None`` keeps the current one); each in ``[1, widest]``."""
        if in_width is not None:
            self.in_width = check_width("in_width", in_width, self.in_channels)
        if out_width is not None:
            self.out_width = check_width("out_width", out_width, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_width:
            raise ValueError(f"x must be [B, {self.in_width}, H, W] at in_width {self.in_width}, got {tuple(x.shape)}")
        weight = self.weight[:self.out_width, :self.in_width]
        bias = None if self.bias is None else self.bias[:self.out_width]
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(H', W')`` of the output for an input of spatial size ``(H, W)``."""
        return tuple((n + 2 * p - k) // s + 1
                     for n, k, s, p in zip(size, self.kernel_size, self.stride, self.padding, strict=True))

    def flops(self, size: tuple[int, int]) -> int:
        """FLOP of one image ``[in_width, H, W]`` at the active widths: ``2·k_h·k_w·in_width·out_width·H'·W'``
        (with a bias; without one ``out_width·H'·W'`` fewer additions)."""
        h, w = self.output_size(size)
        kh, kw = self.kernel_size
        outputs = self.out_width * h * w
        return 2 * kh * kw * self.in_width * outputs - (0 if self.bias is not None else outputs)


class SlimmableLinear(nn.Linear):
    """An ``nn.Linear`` that computes with its first ``in_width`` inputs and ``out_width`` outputs.

    ``forward``: ``x`` ``[..., in_width]`` -> ``[..., out_width]``, ``y = x·W[:out_width, :in_width]ᵀ + b[:out_width]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.in_width, self.out_width = in_features, out_features

    def set_width(self, in_width: int | None = None, out_width: int | None = None) -> None:
        """Choose the active widths (``None`` keeps the current one); each in ``[1, widest]``."""
        if in_width is not None:
            self.in_width = check_width("in_width", in_width, self.in_features)
        if out_width is not None:
            self.out_width = check_width("out_width", out_width, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_width:
            raise ValueError(f"x must be [..., {self.in_width}] at in_width {self.in_width}, got {tuple(x.shape)}")
        bias = None if self.bias is None else self.bias[:self.out_width]
        return F.linear(x, self.weight[:self.out_width, :self.in_width], bias)

    def flops(self) -> int:
        """FLOP of one input row: ``2·in_width·out_width`` (with a bias; without one ``out_width`` fewer)."""
        return 2 * self.in_width * self.out_width - (0 if self.bias is not None else self.out_width)


class SwitchableBatchNorm2d(nn.Module):
    """BatchNorm over ``channels`` with one set of statistics and affine parameters per width ``1..widths``.

    ``shared=True`` keeps a single set for every width (what a model trained at one width has: the naive
    channel-dropping baseline). ``forward``: ``[B, channels, H, W]`` -> same shape, normalised with the set of the
    active width (:meth:`set_width`; starts at ``widths``).
    """

    def __init__(self, channels: int, widths: int, *, shared: bool = False):
        super().__init__()
        self.widths = check_int("widths", widths, low=1)
        self.shared = bool(shared)
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(1 if shared else self.widths))
        self.width = self.widths

    def set_width(self, width: int) -> None:
        """Choose the active width, in ``[1, widths]``."""
        self.width = check_width("width", width, self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[0 if self.shared else self.width - 1](x)


class SlimmableSplitCNN(nn.Module):
    """A split classifier for ``[B, 1, 28, 28]`` images whose device head and payload slim to ``m`` of ``slices``.

    Args:
        slices: ``M``, the widest bottleneck (7×7 feature slices); a fixed-width model is ``slices = m``.
        stem_per_slice: ``s``, device stem channels per active slice (stem width ``s·m``).
        tail_channels: ``t``, channels of the edge tail's two conv layers.
        classes: number of classes.
        shared_norm: one BatchNorm set for every width (a model trained at one width) instead of one per width.

    ``encode`` (device) ``[B, 1, 28, 28]`` -> ``z`` ``[B, m, 7, 7]``; ``decode`` (edge) ``[B, m, 7, 7]`` -> logits
    ``[B, classes]``; ``forward(x, link=None)`` = ``decode(link(encode(x)))`` (``link`` maps ``z`` to what the edge
    receives, same shape). The active width ``m`` is :attr:`width`, set by :meth:`set_width` (starts at ``M``).
    """

    image_size = (28, 28)
    slice_size = (7, 7)

    def __init__(self, slices: int = 8, *, stem_per_slice: int = 2, tail_channels: int = 32, classes: int = 10,
                 shared_norm: bool = False):
        super().__init__()
        self.slices = check_int("slices", slices, low=1)
        self.stem_per_slice = check_int("stem_per_slice", stem_per_slice, low=1)
        tail_channels, classes = check_int("tail_channels", tail_channels, low=1), check_int("classes", classes, low=2)
        self.stem = SlimmableConv2d(1, self.stem_per_slice * self.slices, 3, stride=2, padding=1)
        self.encoder = SlimmableConv2d(self.stem_per_slice * self.slices, self.slices, 3, stride=2, padding=1)
        self.receiver = SlimmableConv2d(self.slices, tail_channels, 3, padding=1)
        self.norm1 = SwitchableBatchNorm2d(tail_channels, self.slices, shared=shared_norm)
        self.conv = nn.Conv2d(tail_channels, tail_channels, 3, padding=1)
        self.norm2 = SwitchableBatchNorm2d(tail_channels, self.slices, shared=shared_norm)
        self.classifier = nn.Linear(tail_channels * 3 * 3, classes)
        self.width = self.slices

    def set_width(self, width: int) -> None:
        """Switch to ``width`` slices (in ``[1, slices]``): slice bounds of three layers and the BN set, no copies."""
        m = check_width("width", width, self.slices)
        self.stem.set_width(out_width=self.stem_per_slice * m)
        self.encoder.set_width(in_width=self.stem_per_slice * m, out_width=m)
        self.receiver.set_width(in_width=m)
        self.norm1.set_width(m)
        self.norm2.set_width(m)
        self.width = m

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Device head: images ``[B, 1, 28, 28]`` -> bottleneck ``[B, m, 7, 7]`` at the active width ``m``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, *self.image_size):
            raise ValueError(f"x must have shape [B, 1, 28, 28], got {tuple(x.shape)}")
        return self.encoder(F.relu(self.stem(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Edge tail: received slices ``[B, m, 7, 7]`` -> logits ``[B, classes]``. Slicing the receiving conv's
        input channels to ``m`` equals zero-filling slices ``m+1..M``."""
        if z.dim() != 4 or tuple(z.shape[1:]) != (self.width, *self.slice_size):
            raise ValueError(f"z must have shape [B, {self.width}, 7, 7] at width {self.width}, got {tuple(z.shape)}")
        h = F.relu(self.norm1(self.receiver(z)))
        h = F.max_pool2d(F.relu(self.norm2(self.conv(h))), 2)
        return self.classifier(h.flatten(1))

    def forward(self, x: torch.Tensor, link=None) -> torch.Tensor:
        z = self.encode(x)
        return self.decode(z if link is None else link(z))

    def device_flops(self, width: int | None = None) -> int:
        """FLOP of the device head for one image at ``width`` (default: the active width); the conv layers only."""
        previous = self.width
        self.set_width(previous if width is None else width)
        try:
            return self.stem.flops(self.image_size) + self.encoder.flops(self.stem.output_size(self.image_size))
        finally:
            self.set_width(previous)

    def payload_values(self, width: int | None = None) -> int:
        """Feature values sent per image at ``width`` (default: the active width): ``m·7·7``."""
        m = self.width if width is None else check_width("width", width, self.slices)
        return m * self.slice_size[0] * self.slice_size[1]


def transmit_slices(z: torch.Tensor, *, bits: int = 8, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Quantise each 7×7 slice of ``z`` ``[B, m, H, W]`` with :class:`~commlab.compress.Uniform` (``bits``-bit min–max,
    stochastic rounding, its min and max as two float32 scales): returns ``(ẑ [B, m, H, W], payload bits)``.

    The bits are the payload's own count: ``B·m·(H·W·bits + 64)``; for 8 bits and 7×7 slices that is
    ``49·m + 8·m`` bytes per image (the brief's payload).
    """
    if z.dim() != 4:
        raise ValueError(f"z must be [B, m, H, W], got {tuple(z.shape)}")
    compressor = Uniform(bits)
    payload = compressor.compress(z.detach().reshape(-1, z.shape[2] * z.shape[3]), generator)
    return compressor.decompress(payload).reshape(z.shape), payload.bits


def sandwich_widths(slices: int, random_widths: int, generator: torch.Generator) -> list[int]:
    """The widths of one sandwich-rule step: ``M``, ``1``, then ``random_widths`` widths drawn uniformly from
    ``2..M−1`` with replacement (fewer when ``M < 3``: only the distinct widths that exist)."""
    slices, random_widths = check_int("slices", slices, low=1), check_int("random_widths", random_widths, low=0)
    widths = [slices] if slices == 1 else [slices, 1]
    if slices > 2 and random_widths:
        widths += (2 + torch.randint(slices - 2, (random_widths,), generator=generator)).tolist()
    return widths


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T²·KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the batch (Hinton et al. 2015);
    logits ``[B, C]`` each."""
    temperature = check_positive("temperature", temperature)
    return temperature**2 * F.kl_div(F.log_softmax(student / temperature, dim=1),
                                     F.log_softmax(teacher / temperature, dim=1), log_target=True,
                                     reduction="batchmean")


def train_slimmable(model: SlimmableSplitCNN, images: torch.Tensor, labels: torch.Tensor, *, steps: int,
                    batch_size: int, lr: float, generator: torch.Generator, teacher_logits: torch.Tensor | None = None,
                    temperature: float = 2.0, random_widths: int = 2,
                    on_step: Callable[[int, torch.optim.Optimizer], None] | None = None) -> list[float]:
    """Train every width of ``model`` with the sandwich rule (Adam); returns the summed loss of each step.

    Each step draws a minibatch (:class:`~commlab.data.batches.EpochBatches`) and the widths of
    :func:`sandwich_widths`; for each width ``m`` the loss is ``CE(labels) + distillation_loss(logits_m,
    teacher_logits, temperature)`` (the second term only when ``teacher_logits`` ``[N, classes]`` is given),
    and the gradients of all widths accumulate before one optimiser step. The model is left at full width in
    eval mode.

    Args:
        images: float ``[N, 1, 28, 28]``; labels: int64 ``[N]``.
        steps: optimiser steps; batch_size: minibatch size (<= N); lr: Adam learning rate.
        generator: the only source of randomness (batch order and widths).
        on_step: called as ``on_step(step, optimizer)`` after each optimiser step (from 1), e.g. to set a learning
            rate schedule (as in :func:`~commlab.models.fit.fit_classifier`).
    """
    steps = check_int("steps", steps, low=1)
    if len(images) != len(labels) or (teacher_logits is not None and len(teacher_logits) != len(labels)):
        raise ValueError(f"images, labels and teacher_logits must have the same length, got {len(images)}, "
                         f"{len(labels)}, {None if teacher_logits is None else len(teacher_logits)}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = EpochBatches(len(labels), batch_size, generator)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        idx = next(batches)
        x, y = images[idx], labels[idx]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for m in sandwich_widths(model.slices, random_widths, generator):
            model.set_width(m)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if teacher_logits is not None:
                loss = loss + distillation_loss(logits, teacher_logits[idx], temperature)
            loss.backward()
            total += loss.item()
        optimizer.step()
        losses.append(total)
        if on_step is not None:
            on_step(step, optimizer)
    model.set_width(model.slices)
    model.eval()
    return losses


@torch.no_grad()
def width_accuracy(model: SlimmableSplitCNN, images: torch.Tensor, labels: torch.Tensor, width: int, *,
                   bits: int | None = 8, generator: torch.Generator | None = None,
                   batch_size: int = 1000) -> tuple[float, float]:
    """``(accuracy, payload bytes per image)`` of ``model`` at ``width`` on ``images`` ``[N, 1, 28, 28]``.

    With ``bits`` the bottleneck goes through :func:`transmit_slices` (needs ``generator``) and the bytes are the
    payloads' counted bits / 8 / N; with ``bits=None`` it is sent as float32 (4 bytes per value). The model's
    previous width and mode are restored.
    """
    if bits is not None and generator is None:
        raise ValueError("width_accuracy with bits needs a generator (stochastic rounding)")
    previous, was_training = model.width, model.training
    model.set_width(width)
    model.eval()
    correct, sent = 0, 0
    try:
        for i in range(0, len(labels), batch_size):
            z = model.encode(images[i:i + batch_size])
            if bits is None:
                sent += 32 * z.numel()
            else:
                z, payload_bits = transmit_slices(z, bits=bits, generator=generator)
                sent += payload_bits
            correct += int((model.decode(z).argmax(1) == labels[i:i + batch_size]).sum())
    finally:
        model.set_width(previous)
        model.train(was_training)
    return correct / len(labels), sent / 8 / len(labels)
