"""R replicas of one MLP in a single flat parameter tensor: many simulated workers in one batched op.

Decentralised, federated and data-parallel simulations keep one copy of the model per worker. Here
all copies live in one leaf tensor ``flat`` of shape ``[R, d]``; row r is replica r's parameters and
is exactly the vector a worker would send, so communicators and compressors act on ``flat`` (or on
gradients of the same shape) directly. A forward pass runs every replica on its own batch with one
``baddbmm`` per layer::

    h⁰ = x_r                                    x [R, B, n₀]   (features flattened)
    hˡ = relu(hˡ⁻¹ Wˡ_r + bˡ_r),  l < L          Wˡ_r [n_{l-1}, n_l], bˡ_r [n_l]
    logits_r = hᴸ⁻¹ Wᴸ_r + bᴸ_r                  [R, B, n_L]

Layout of a row: for each layer in order, Wˡ (``n_{l-1}·n_l`` values, row-major ``[in, out]``) then
bˡ (``n_l`` values); :attr:`StackedMLP.layer_slices` gives each layer's columns. Initialisation is
PyTorch's ``nn.Linear`` default: W and b uniform in ±1/sqrt(n_{l-1}), drawn from the caller's
generator. With ``same_init=True`` every replica starts from the same draw (data parallelism,
DiLoCo, FedAvg); otherwise each replica draws its own.

Replicas never interact inside the model, so the gradient of Σ_r loss_r with respect to ``flat``
is the stack of the per-replica gradients: :meth:`StackedMLP.loss_and_grad` gives all R at the
cost of one backward pass.

:class:`StackedModel` holds what any such model shares (losses, gradients, evaluation, the check of a
parameter stack); :class:`~commlab.models.charlm.CharNGramMLP` is the other one.

Example::

    model = StackedMLP((64, 128, 10), replicas=8, generator=SeedTree(0).torch("init"))
    loss, grad = model.loss_and_grad(x, y)          # x [8, 32, 64], y [8, 32] -> [8], [8, d]
    with torch.no_grad():
        model.flat -= 0.1 * grad                    # eight independent SGD steps
    test_loss, test_acc = model.evaluate(test_x, test_y)            # [8], [8]
    _, merged_acc = model.evaluate(test_x, test_y, flat=model.flat.mean(0, keepdim=True))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_int


class StackedModel(nn.Module):
    """What every stacked model shares: R replicas in one leaf ``flat`` ``[R, d]``, per-replica losses and
    gradients, and evaluation of any stack of parameter rows on one shared set.

    A subclass sets :attr:`flat` and :attr:`d` and defines ``forward(x, flat) -> logits [K, B, C]`` for
    per-replica batches ``x`` ``[K, B, ...]``; it may override :meth:`_shared_logits` when it can run
    one shared batch through K replicas without copying it K times.
    """

    flat: nn.Parameter
    d: int

    def losses(self, x: torch.Tensor, y: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Per-replica mean cross-entropy (nats) ``[K]`` of replica k on its batch ``x[k]``; ``y`` ``[K, B]``."""
        logits = self(x, flat)
        K, B, C = logits.shape
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (K, B):
            raise ValueError(f"y must have shape [{K}, {B}] (one target per example per replica), got "
                             f"{tuple(getattr(y, 'shape', ()))}")
        return F.cross_entropy(logits.reshape(K * B, C), y.reshape(K * B), reduction="none").view(K, B).mean(dim=1)

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss [R], grad [R, d])``: each replica's mean cross-entropy on its batch and its gradient.

        ``x`` ``[R, B, ...]``, ``y`` ``[R, B]`` int64. One backward pass of Σ_r loss_r: replicas never
        interact, so its gradient is the stack of the per-replica gradients.
        """
        loss = self.losses(x, y)
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)
        return loss.detach(), grad

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, flat: torch.Tensor | None = None,
                 batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss [K], accuracy [K])`` of each replica in ``flat`` on one shared set ``x`` ``[N, ...]``, ``y`` ``[N]``.

        ``flat`` is ``[K, d]`` or one model ``[d]`` (default :attr:`flat`). Loss is the mean
        cross-entropy in nats (float64), accuracy the fraction whose arg-max logit is the target.
        """
        batch_size = check_int("batch_size", batch_size, low=1)
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
            raise ValueError(f"y must be [N] targets for the {len(x)} examples of x")
        if isinstance(flat, torch.Tensor) and flat.dim() == 1:
            flat = flat.unsqueeze(0)
        flat = self._check_flat(flat)
        loss_sum = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        correct = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        for start in range(0, len(y), batch_size):
            logits = self._shared_logits(x[start:start + batch_size], flat)
            labels = y[start:start + batch_size]
            K, B, C = logits.shape
            nll = F.cross_entropy(logits.reshape(K * B, C), labels.repeat(K), reduction="none")
            loss_sum += nll.view(K, B).sum(1).double()
            correct += (logits.argmax(-1) == labels).sum(1).double()
        return loss_sum / len(y), correct / len(y)

    def _shared_logits(self, chunk: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Logits ``[K, B, C]`` of the K replicas in ``flat`` on one batch ``chunk`` ``[B, ...]``."""
        return self(chunk.unsqueeze(0).expand(flat.shape[0], *chunk.shape), flat)

    def _check_flat(self, flat: torch.Tensor | None) -> torch.Tensor:
        if flat is None:
            return self.flat
        if not isinstance(flat, torch.Tensor) or flat.dim() != 2 or flat.shape[1] != self.d:
            raise ValueError(f"flat must have shape [K, {self.d}], got {tuple(getattr(flat, 'shape', ()))}")
        return flat


class StackedMLP(StackedModel):
    """R replicas of an MLP with ReLU hidden layers, parameters stacked in ``flat`` ``[R, d]``.

    Args:
        sizes: layer widths ``(n₀, n₁, …, n_L)``: input features, hidden widths, outputs (≥ 2 entries).
        replicas: R ≥ 1.
        generator: the ``torch.Generator`` the initial parameters are drawn from.
        same_init: every replica starts from the same parameters (default) or from its own draw.
        dtype: floating dtype of the parameters (float32 default; float64 for exact comparisons).
    """

    def __init__(self, sizes: Sequence[int], replicas: int, *, generator: torch.Generator, same_init: bool = True,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(sizes, Sequence) or len(sizes) < 2:
            raise ValueError(f"sizes must list at least the input and output widths, got {sizes!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.sizes = tuple(check_int("sizes", n, low=1) for n in sizes)
        self.replicas = check_int("replicas", replicas, low=1)
        self.layer_slices: list[tuple[slice, slice]] = []
        """Per layer, the columns of ``flat`` holding (W, b)."""
        offset = 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            weight = slice(offset, offset + n_in * n_out)
            bias = slice(weight.stop, weight.stop + n_out)
            self.layer_slices.append((weight, bias))
            offset = bias.stop
        self.d = offset
        draws = 1 if same_init else self.replicas
        init = torch.empty(draws, self.d, dtype=dtype)
        for (weight, bias), n_in in zip(self.layer_slices, self.sizes[:-1], strict=True):
            bound = n_in ** -0.5
            for part in (weight, bias):
                uniform = torch.rand(draws, part.stop - part.start, generator=generator, dtype=dtype)
                init[:, part] = (2 * uniform - 1) * bound
        self.flat = nn.Parameter(init.expand(self.replicas, self.d).clone())

    def layers(self, flat: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views ``(W [K, n_in, n_out], b [K, n_out])`` of each layer of ``flat`` ``[K, d]`` (default: :attr:`flat`)."""
        flat = self._check_flat(flat)
        K = flat.shape[0]
        return [(flat[:, w].view(K, n_in, n_out), flat[:, b])
                for (w, b), n_in, n_out in zip(self.layer_slices, self.sizes[:-1], self.sizes[1:], strict=True)]

    def forward(self, x: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[K, B, n_L]``: replica k of ``flat`` ``[K, d]`` (default :attr:`flat`) on its batch ``x[k]``.

        ``x`` is ``[K, B, *features]``; the features flatten to ``n₀``.
        """
        flat = self._check_flat(flat)
        K = flat.shape[0]
        if not isinstance(x, torch.Tensor) or x.dim() < 3 or x.shape[0] != K:
            raise ValueError(f"x must be [{K}, B, *features] (one batch per replica), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        return self._logits(x.reshape(K, x.shape[1], -1), flat)

    def _logits(self, h: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Logits for inputs ``h`` ``[K, B, n₀]`` (K may be an expanded 1)."""
        if h.shape[-1] != self.sizes[0]:
            raise ValueError(f"x has {h.shape[-1]} features per example, the model expects {self.sizes[0]}")
        h = h.to(flat.dtype)
        layers = self.layers(flat)
        for index, (W, b) in enumerate(layers):
            h = torch.baddbmm(b.unsqueeze(1), h, W)
            if index < len(layers) - 1:
                h = torch.relu(h)
        return h

    def _shared_logits(self, chunk: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return self._logits(chunk.reshape(1, len(chunk), -1).expand(flat.shape[0], -1, -1), flat)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, replicas={self.replicas}, d={self.d}"
