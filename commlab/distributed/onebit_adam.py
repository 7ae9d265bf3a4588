"""1-bit Adam (Tang et al., ICML 2021): Adam with a full-precision warm-up, then a frozen variance and
an error-compensated 1-bit all-reduce of the momentum.

Adam's update m/(√v + ε) is not linear in the gradient, so error feedback on compressed gradients
does not carry over to it. After a warm-up the variance v hardly changes; freezing it makes the rest
of training momentum SGD with a fixed preconditioner, which *is* linear in the momentum, and the
momentum can then be all-reduced at 1 bit per coordinate with error compensation::

    warm-up   (step < T0):  g = (1/N) Σ_i g_i (fp32 all-reduce)
                            m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
    compressed (step ≥ T0): m_i ← β1 m + (1 − β1) g_i          (local gradient, local momentum)
                            m ← CompressedAllReduce({m_i}),   v stays v_T0
    both:                   x ← x − lr · ( m̂ / (√v̂ + ε) + wd · x )

with Adam's bias corrections m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t'), t' = min(t, T0) once v is frozen
(weight decay is decoupled, as in AdamW and DeepSpeed). During the warm-up the optimiser is exactly
Adam (AdamW) on the mean gradient. A coordinate whose v is exactly 0 in the compressed stage (it had
no gradient during the warm-up) keeps m = 0: the 1-bit message gives it ±scale, which divided by ε
would throw it away (DeepSpeed asks the user for such a mask, ``exp_avg_mask``; here it follows
from v). Coordinates with a tiny but non-zero v are not protected: see the notebook.

:func:`compressed_allreduce_1bit` is DeepSpeed's two-stage compressed all-reduce, written over any
:class:`~commlab.comm.communicator.Communicator` (N workers, d coordinates padded to N·c, chunk j of
c = ⌈d/N⌉ coordinates owned by worker j)::

    worker i:  b_i = x_i + e_i,   s_i = ‖b_i‖₂/√d,   e_i ← b_i − s_i·sign(b_i)      (sign(0) = +1)
               sends sign(b_i) packed 1 bit per coordinate (all N·c of them) and s_i as fp32
    owner j:   c_j = (1/N) Σ_i s_i·sign(b_i)[chunk j] + e_srv,j,   s'_j = ‖c_j‖₂/√|c_j|
               e_srv,j ← c_j − s'_j·sign(c_j);   sends sign(c_j) (c bits) and s'_j
    result:    the concatenation of s'_j·sign(c_j), j = 0 … N − 1, on every worker

The worker error e_i ``[L, d]`` stays with the local workers; the server error of chunk j lives with
its owner (``[L, c]``, row l = the chunk owned by local worker l; on SimComm every chunk is local).
Both travel in :meth:`OneBitAdam.state_dict` (DeepSpeed resets them on loading a checkpoint).
Both stages are all-gathers of packed bytes, so the meter counts ``⌈N·c/8⌉ + 4`` bytes per worker
for the first and ``⌈c/8⌉ + 4`` for the second: padding bits included, against ``4d`` bytes for an
fp32 all-reduce.

The "naive 1-bit Adam" the paper shows failing (scaled sign with error feedback on the *gradient*,
fed to an ordinary Adam whose variance keeps updating) needs nothing from this module::

    estimate, _ = compressed_round(comm, EF14(ScaledSign("l2")), grads)   # then torch.optim.Adam
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm import Communicator

_SCALE_BYTES = 4


def chunk_size(d: int, world_size: int) -> int:
    """Coordinates per chunk, c = ⌈d/N⌉; the vector is padded to N·c (the padding is sent)."""
    d = check_int("d", d, low=1)
    world_size = check_int("world_size", world_size, low=1)
    return -(-d // world_size)


def compressed_allreduce_1bit(comm: Communicator, x: torch.Tensor, worker_error: torch.Tensor,
                              server_error: torch.Tensor) -> torch.Tensor:
    """Error-compensated two-stage 1-bit all-reduce of the local workers' rows ``x``.

    Args:
        comm: the communicator (N workers, L local ones).
        x: ``[L, d]`` floating, finite: the local workers' vectors.
        worker_error: ``[L, d]``, same dtype: e_i, updated in place.
        server_error: ``[L, c]``, c = :func:`chunk_size` (d, N), same dtype: the error of the chunk each
            local worker owns, updated in place; its padding coordinates stay 0.

    Returns:
        ``[L, d]``: every row the same estimate of the mean (1/N) Σ_i x_i (an expanded view).
    """
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
        raise TypeError(f"x must be a floating torch.Tensor of shape [L, d], got {_describe(x)}")
    L, d = x.shape
    if L != comm.local_workers:
        raise ValueError(f"x has {L} worker rows but the communicator hosts {comm.local_workers} workers")
    N = comm.world_size
    c = chunk_size(d, N)
    for name, buffer, shape in (("worker_error", worker_error, (L, d)), ("server_error", server_error, (L, c))):
        if (not isinstance(buffer, torch.Tensor) or tuple(buffer.shape) != shape or buffer.dtype != x.dtype
                or buffer.device != x.device):
            raise ValueError(f"{name} must be a {x.dtype} tensor of shape {list(shape)} on {x.device}, "
                             f"got {_describe(buffer)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")

    # stage 1: every worker sends sign(x_i + e_i) and its scale; the error stays with it
    b = x + worker_error
    scale = _wire_scale(torch.linalg.vector_norm(b, dim=1) / math.sqrt(d), x.dtype)  # [L]
    positive = b >= 0
    worker_error.copy_(b - scale[:, None] * _pm_one(positive, x.dtype))
    padded = torch.nn.functional.pad(positive, (0, N * c - d))
    received = comm.all_gather(_encode(padded, scale).to(comm.device)).wait().to(x.device)
    signs, scales = _decode(received, N * c)  # [N, N·c], [N]

    # the owners average their chunk, add the server error and compress again
    owned = comm.ranks.to(x.device)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    chunks = _pm_one(signs, x.dtype).view(N, N, c)[:, owned]  # [N, L, c]: worker i's signs of my chunks
    total = torch.zeros(L, c, dtype=x.dtype, device=x.device)
    for i in range(N):  # a fixed order, the same on every backend
        total += scales[i].to(x.dtype) * chunks[i]
    real = (torch.arange(N * c, device=x.device) < d).view(N, c)[owned]  # [L, c]: coordinates that are not padding
    averaged = torch.where(real, total / N + server_error, zero)
    n_real = real.sum(dim=1).clamp(min=1).to(x.dtype)
    chunk_scale = _wire_scale(torch.linalg.vector_norm(averaged, dim=1) / n_real.sqrt(), x.dtype)  # [L]
    chunk_positive = averaged >= 0
    server_error.copy_(torch.where(real, averaged - chunk_scale[:, None] * _pm_one(chunk_positive, x.dtype), zero))

    # stage 2: the owners send their compressed chunk back to everyone
    received = comm.all_gather(_encode(chunk_positive, chunk_scale).to(comm.device)).wait().to(x.device)
    chunk_signs, chunk_scales = _decode(received, c)  # [N, c], [N]
    mean = (chunk_scales.to(x.dtype)[:, None] * _pm_one(chunk_signs, x.dtype)).reshape(-1)[:d]
    return mean.expand(L, d)


class OneBitAdam(torch.optim.Optimizer):
    """1-bit Adam over a :class:`~commlab.comm.communicator.Communicator` (module docstring).

    Args:
        params: the parameters, one copy shared by the local workers (a DistComm rank, or a
            simulation keeping one model), or with ``stacked=True`` a single tensor ``[L, d]`` whose
            rows are the local workers' copies (e.g. ``StackedMLP.flat``), kept identical.
        comm: the communicator.
        lr: learning rate >= 0.
        betas: (β1, β2), each in [0, 1).
        eps: ε > 0 in the denominator.
        weight_decay: decoupled weight decay >= 0.
        freeze_step: T0 >= 0, the number of uncompressed warm-up steps; v is frozen after them
            (T0 = 0 leaves v = 0 everywhere, so every coordinate is held still: there is no
            preconditioner to freeze without a warm-up).
        freeze_variance: False for the ablation that keeps updating v after T0 from the gradient the
            synchronised momentum implies, g̃ = (m_t − β1·m_{t−1})/(1 − β1).
        stacked: whether ``params`` is one ``[L, d]`` tensor of per-worker copies.

    The optimiser takes one parameter group. Its state (in :meth:`state_dict`) holds ``step`` (int),
    ``exp_avg`` m ``[L, d]`` (rows equal after every step), ``exp_avg_sq`` v ``[d]``,
    ``worker_error`` ``[L, d]`` and ``server_error`` ``[L, c]``; on DistComm each rank saves its own.
    """

    def __init__(self, params: Iterable[torch.Tensor], comm: Communicator, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 freeze_step: int = 100, freeze_variance: bool = True, stacked: bool = False):
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a commlab Communicator, got {type(comm).__name__}")
        lr = check_nonnegative("lr", lr)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        betas = tuple(check_real_number(f"betas[{k}]", b, low=0.0, high=1.0, high_open=True)
                      for k, b in enumerate(betas))
        defaults = {
            "lr": lr, "betas": betas, "eps": check_positive("eps", eps),
            "weight_decay": check_nonnegative("weight_decay", weight_decay),
            "freeze_step": check_int("freeze_step", freeze_step, low=0),
            "freeze_variance": bool(freeze_variance),
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"OneBitAdam takes one parameter group, got {len(self.param_groups)}")
        self.comm = comm
        self.stacked = bool(stacked)
        group = self.param_groups[0]["params"]
        if self.stacked:
            if len(group) != 1 or group[0].dim() != 2 or group[0].shape[0] != comm.local_workers:
                shapes = [tuple(p.shape) for p in group]
                raise ValueError(f"stacked=True needs one parameter of shape [{comm.local_workers}, d] "
                                 f"(one row per local worker), got shapes {shapes}")
            self.d = group[0].shape[1]
        else:
            self.d = sum(p.numel() for p in group)

    @property
    def compressing(self) -> bool:
        """Whether the next step is a compressed one (the warm-up is over)."""
        group = self.param_groups[0]
        return self.state[group["params"][0]].get("step", 0) >= group["freeze_step"]

    @torch.no_grad()
    def step(self, grads: torch.Tensor | None = None) -> None:
        """One step from the local workers' gradients ``grads`` ``[L, d]``.

        ``grads=None`` reads the parameters' ``.grad`` (flattened in parameter order: ``[1, d]`` for
        one shared copy on a single-worker communicator, ``[L, d]`` for ``stacked`` parameters).
        """
        group = self.param_groups[0]
        grads = self._grads(grads)
        state = self._state(grads)
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        t = state["step"]
        if t < group["freeze_step"]:
            g = self.comm.all_reduce(grads, op="mean").wait()
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g[0], g[0], value=1 - beta2)
            state["variance_steps"] += 1
        else:
            previous = m[0].clone() if not group["freeze_variance"] else None
            local = m.mul(beta1).add_(grads, alpha=1 - beta1)
            m.copy_(compressed_allreduce_1bit(self.comm, local, state["worker_error"], state["server_error"]))
            m.mul_(v > 0)  # coordinates that never had a gradient would move by ±scale/ε: keep them still
            if previous is not None:
                implied = (m[0] - beta1 * previous) / (1 - beta1)
                v.mul_(beta2).addcmul_(implied, implied, value=1 - beta2)
                state["variance_steps"] += 1
        state["step"] = t + 1
        n_v = state["variance_steps"]
        variance = v / (1 - beta2**n_v) if n_v > 0 else v
        update = (m / (1 - beta1 ** (t + 1))) / (variance.sqrt() + group["eps"])  # [L, d], rows equal
        self._apply(update if self.stacked else update[0], group["lr"], group["weight_decay"])

    # -- helpers ------------------------------------------------------------------------------------

    def _grads(self, grads: torch.Tensor | None) -> torch.Tensor:
        params = self.param_groups[0]["params"]
        L = self.comm.local_workers
        if grads is None:
            missing = [k for k, p in enumerate(params) if p.grad is None]
            if missing:
                raise ValueError(f"parameters {missing} have no .grad: call backward() first or pass grads [L, d]")
            if not self.stacked and L != 1:
                raise ValueError(f"the communicator hosts {L} workers: pass their gradients as grads [{L}, d]")
            grads = params[0].grad if self.stacked else torch.cat([p.grad.reshape(-1) for p in params])[None]
        if not isinstance(grads, torch.Tensor) or not grads.is_floating_point():
            raise TypeError(f"grads must be a floating torch.Tensor of shape [L, d], got {_describe(grads)}")
        if tuple(grads.shape) != (L, self.d):
            raise ValueError(f"grads must have shape [{L}, {self.d}] (local workers, parameters), "
                             f"got {tuple(grads.shape)}")
        if not torch.isfinite(grads).all():
            raise ValueError("grads contains NaN or Inf")
        return grads.detach().to(params[0].dtype)

    def _state(self, grads: torch.Tensor) -> dict:
        state = self.state[self.param_groups[0]["params"][0]]
        L, d = grads.shape
        c = chunk_size(d, self.comm.world_size)
        if not state:
            state.update(step=0, variance_steps=0, exp_avg=torch.zeros_like(grads),
                         exp_avg_sq=torch.zeros_like(grads[0]), worker_error=torch.zeros_like(grads),
                         server_error=grads.new_zeros(L, c))
        expected = {"exp_avg": (L, d), "exp_avg_sq": (d,), "worker_error": (L, d), "server_error": (L, c)}
        for name, shape in expected.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(f"state {name} has shape {tuple(state[name].shape)}, expected {shape}: "
                                 f"was it saved with another communicator or model?")
        return state

    def _apply(self, update: torch.Tensor, lr: float, weight_decay: float) -> None:
        offset = 0
        for p in self.param_groups[0]["params"]:
            n = p.numel() if not self.stacked else p.shape[1]
            if weight_decay:
                p.mul_(1 - lr * weight_decay)
            piece = update if self.stacked else update[offset : offset + n].view_as(p)
            p.add_(piece, alpha=-lr)
            offset += n


def _wire_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The scale as the receiver sees it: rounded to fp32 (it crosses the wire as 4 bytes)."""
    return scale.to(torch.float32).to(dtype)


def _pm_one(positive: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """+1 where ``positive``, else −1."""
    return positive.to(dtype) * 2 - 1


def _encode(positive: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``[L, n]`` sign bits and ``[L]`` scales as ``[L, ⌈n/8⌉ + 4]`` bytes (bits little-endian)."""
    L, n = positive.shape
    bits = torch.nn.functional.pad(positive.to(torch.uint8), (0, -n % 8)).view(L, -1, 8)
    weights = 2 ** torch.arange(8, dtype=torch.uint8, device=positive.device)
    packed = (bits * weights).sum(dim=2, dtype=torch.uint8)
    scale_bytes = scale.to(torch.float32).contiguous().view(torch.uint8).view(L, _SCALE_BYTES)
    return torch.cat([packed, scale_bytes], dim=1)


def _decode(message: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`_encode`: ``([N, n]`` bool signs, ``[N]`` fp32 scales)."""
    N = message.shape[0]
    packed, scale_bytes = message[:, :-_SCALE_BYTES], message[:, -_SCALE_BYTES:]
    bits = (packed[:, :, None] >> torch.arange(8, dtype=torch.uint8, device=message.device)) & 1
    return bits.view(N, -1)[:, :n].bool(), scale_bytes.reshape(-1).clone().view(torch.float32)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)} on {x.device}"
    return type(x).__name__
