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
:class:`~commlab.comm.Communicator` (N workers, chunk j of c = ⌈d/N⌉ coordinates owned by worker j;
the last chunk is shorter when N does not divide d). Both stages send
:class:`~commlab.compress.ScaledSign` ``("l2")`` payloads (one sign bit per coordinate and an fp32
scale ‖·‖₂/√n) through the lab's one wire format::

    worker i:  b_i = x_i + e_i,   s_i = ‖b_i‖₂/√d,   e_i ← b_i − s_i·sign(b_i)      (sign(0) = +1)
               sends sign(b_i) (d bits) and s_i
    owner j:   c_j = (1/N) Σ_i s_i·sign(b_i)[chunk j] + e_srv,j,   s'_j = ‖c_j‖₂/√|c_j|
               e_srv,j ← c_j − s'_j·sign(c_j);   sends sign(c_j) (|c_j| bits) and s'_j
    result:    the concatenation of s'_j·sign(c_j), j = 0 … N − 1, on every worker

The worker error e_i ``[L, d]`` stays with the local workers; the server error of chunk j lives with
its owner (``[L, c]``, row l = the chunk owned by local worker l, zero beyond the chunk's end; on
SimComm every chunk is local). Both travel in :meth:`OneBitAdam.state_dict` (DeepSpeed resets them on
loading a checkpoint). Both stages are all-gathers of packed bytes, so the meter counts ``⌈d/8⌉ + 4``
bytes per worker for the first and ``⌈c/8⌉ + 4`` for the second (the shorter last chunk padded to
the others), against ``4d`` bytes for an fp32 all-reduce.

The "naive 1-bit Adam" the paper shows failing (scaled sign with error feedback on the *gradient*,
fed to an ordinary Adam whose variance keeps updating) needs nothing from this module::

    make_method("data_parallel", comm, params, inner=lambda p: torch.optim.Adam([p]),
                mechanism=EF14(ScaledSign("l2")), compress_from=freeze_step)
"""

from __future__ import annotations

import torch

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm import Communicator
from commlab.compress.payload import Payload
from commlab.compress.quantize import ScaledSign
from commlab.distributed.compressed import gather_payloads
from commlab.distributed.method import Method, StepSchedule, SyncEvent, check_schedule, schedule_at

SIGN = ScaledSign("l2")  # scale = ‖x‖₂/√n, the norm-preserving scaled sign of 1-bit Adam


def chunk_size(d: int, world_size: int) -> int:
    """Coordinates per chunk, c = ⌈d/N⌉ (the last chunk holds the rest)."""
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
            local worker owns, updated in place; its coordinates beyond the chunk's end stay 0.

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
    bounds = [(j * c, min((j + 1) * c, d)) for j in range(N)]  # chunk j: coordinates [start, stop)

    # stage 1: every worker sends sign(x_i + e_i) and its scale; the error stays with it
    b = x + worker_error
    payload = SIGN.compress(b.detach().cpu())
    worker_error.copy_(b - SIGN.decompress(payload).to(x.device))
    everyone = SIGN.decompress(gather_payloads(comm, payload)).to(x.device)  # [N, d]: s_i·sign(b_i)

    # the owners average their chunk, add the server error and compress again
    chunks = []
    for row, owner in enumerate(comm.ranks.tolist()):
        start, stop = bounds[owner]
        total = torch.zeros(stop - start, dtype=x.dtype, device=x.device)
        for i in range(N):  # a fixed order, the same on every backend
            total += everyone[i, start:stop]
        averaged = total / N + server_error[row, : stop - start]
        chunk = SIGN.compress(averaged.detach().cpu())
        server_error[row, : stop - start] = averaged - SIGN.decompress(chunk).to(x.device)
        chunks.append(chunk)

    # stage 2: the owners send their compressed chunk back to everyone (the shorter last one padded)
    headers = [SIGN.compress(torch.zeros(stop - start, dtype=x.dtype)).header for start, stop in bounds]
    packed = Payload.pack_rows(chunks, width=max(h.nbytes for h in headers))
    received = Payload.unpack_rows(comm.all_gather(packed.to(comm.device)).wait(), headers)
    mean = torch.cat([SIGN.decompress(chunk).to(x.device) for chunk in received])
    return mean.expand(L, d)


class OneBitAdam(Method):
    """1-bit Adam over a :class:`~commlab.comm.Communicator` (module docstring).

    Args:
        comm: the communicator.
        params: ``[L, d]`` floating tensor, the local workers' copies of the parameters (e.g.
            ``StackedMLP.flat``; one row on a DistComm rank, e.g. ``parameters_to_vector`` of a model
            as ``[1, d]``), kept identical and changed in place.
        lr: learning rate >= 0, or a schedule ``step -> lr`` (0-based step).
        betas: (β1, β2), each in [0, 1).
        eps: ε > 0 in the denominator.
        weight_decay: decoupled weight decay >= 0.
        freeze_step: T0 >= 0, the number of uncompressed warm-up steps; v is frozen after them
            (T0 = 0 leaves v = 0 everywhere, so every coordinate is held still: there is no
            preconditioner to freeze without a warm-up).
        freeze_variance: False for the ablation that keeps updating v after T0 from the gradient the
            synchronised momentum implies, g̃ = (m_t − β1·m_{t−1})/(1 − β1).

    State (in :meth:`state_dict`): ``exp_avg`` m ``[L, d]`` (rows equal after every step), ``exp_avg_sq``
    v ``[d]``, ``worker_error`` ``[L, d]``, ``server_error`` ``[L, c]`` and ``variance_steps``; on
    DistComm each rank saves its own.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, lr: StepSchedule = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 freeze_step: int = 100, freeze_variance: bool = True):
        super().__init__(comm, params)
        self.lr = check_schedule("lr", lr, low=0.0, low_open=False)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(check_real_number(f"betas[{k}]", b, low=0.0, high=1.0, high_open=True)
                           for k, b in enumerate(betas))
        self.eps = check_positive("eps", eps)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.freeze_step = check_int("freeze_step", freeze_step, low=0)
        self.freeze_variance = bool(freeze_variance)
        L, d = params.shape
        self.exp_avg = torch.zeros_like(params, memory_format=torch.contiguous_format).detach()
        self.exp_avg_sq = torch.zeros_like(self.exp_avg[0])
        self.worker_error = torch.zeros_like(self.exp_avg)
        self.server_error = self.exp_avg.new_zeros(L, chunk_size(d, comm.world_size))
        self.variance_steps = 0

    @property
    def compressing(self) -> bool:
        """Whether the next step is a compressed one (the warm-up is over)."""
        return self.steps >= self.freeze_step

    @torch.no_grad()
    def step(self, grads: torch.Tensor) -> list[SyncEvent]:
        """One step from the local workers' gradients ``grads`` ``[L, d]``; returns its synchronisation."""
        grads = self._check_grads(grads)
        beta1, beta2 = self.betas
        m, v = self.exp_avg, self.exp_avg_sq
        t = self.steps
        if t < self.freeze_step:
            g = self._run("sync", self.comm.all_reduce, grads, op="mean", info={"compressed": False}).wait()
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g[0], g[0], value=1 - beta2)
            self.variance_steps += 1
        else:
            previous = m[0].clone() if not self.freeze_variance else None
            local = m.mul(beta1).add_(grads, alpha=1 - beta1)
            mean = self._logged("sync", lambda: compressed_allreduce_1bit(self.comm, local, self.worker_error,
                                                                          self.server_error),
                                info={"compressed": True})
            m.copy_(mean)
            m.mul_(v > 0)  # coordinates that never had a gradient would move by ±scale/ε: keep them still
            if previous is not None:
                implied = (m[0] - beta1 * previous) / (1 - beta1)
                v.mul_(beta2).addcmul_(implied, implied, value=1 - beta2)
                self.variance_steps += 1
        self.steps = t + 1
        n_v = self.variance_steps
        variance = v / (1 - beta2**n_v) if n_v > 0 else v
        update = (m / (1 - beta1 ** (t + 1))) / (variance.sqrt() + self.eps)  # [L, d], rows equal
        lr = schedule_at("lr", self.lr, t, low=0.0, low_open=False)
        if self.weight_decay:
            self.params.mul_(1 - lr * self.weight_decay)
        self.params.add_(update, alpha=-lr)
        return self.events[-1:]

    def _state(self) -> dict:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(),
                "worker_error": self.worker_error.clone(), "server_error": self.server_error.clone(),
                "variance_steps": self.variance_steps}

    def _load(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq", "worker_error", "server_error"):
            value, mine = state[name], getattr(self, name)
            if tuple(value.shape) != tuple(mine.shape):
                raise ValueError(f"state {name} has shape {tuple(value.shape)}, expected {tuple(mine.shape)}: "
                                 f"was it saved with another communicator or model?")
            mine.copy_(value)
        self.variance_steps = check_int("variance_steps", state["variance_steps"], low=0)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)} on {x.device}"
    return type(x).__name__
