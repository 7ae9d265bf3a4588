"""Deep Gradient Compression (Lin, Han, Mao, Wang, Dally; ICLR 2018) as an optimiser over a Communicator.

Every local worker k keeps a momentum ``u_k`` and an accumulator ``v_k`` (rows of ``[L, d]``
tensors, so the same code runs N stacked workers on :class:`~commlab.comm.communicator.SimComm` and
one worker per rank on :class:`~commlab.comm.communicator.DistComm`). One step with momentum m,
density r_t and learning rate η::

    g_k ← g_k · min(1, (c / √N) / ‖g_k‖)        local gradient clipping (threshold c scaled by N^(-1/2))
    u_k ← m·u_k + g_k                            momentum correction (Nesterov: u_k ← m(u_k + g_k))
    v_k ← v_k + u_k                              local accumulation (Nesterov: v_k ← v_k + u_k + g_k)
    S_k ← sampled-threshold top-k of |v_k|       k = ceil(r_t·d), DGC's adaptive sampled threshold
    send (v_k[S_k], S_k);  v_k[S_k] ← 0          values + indices, all-gathered
    u_k[S_k] ← 0                                 momentum factor masking
    G = (1/N) Σ_k scatter(v_k[S_k])              the same on every worker
    b ← m·b + λ·w;  w ← w − η·(G + b)            the server applies momentum only to the weight decay
                                                 (Nesterov: w ← w − η·(G + λw + m·b))

The ablation arms of the paper are switches of the same class: ``accumulate=False`` drops what was
not sent (gradient dropping without memory), ``momentum_correction=False`` accumulates the raw
gradient and applies momentum on the server (``b ← m·b + G + λw; w ← w − η·b``, the Strom / Aji &
Heafield scheme), ``masking`` and ``clip_norm`` toggle the other two techniques and a
:class:`DensityWarmup` schedule as ``density`` gives the warm-up. :data:`ABLATION_ARMS` lists the
paper's table. Density 1 is sent dense (an fp32 all-reduce of the mean, no indices); with
``momentum_correction=False`` it is plain momentum SGD.

Wire bits per worker and step: each value at its float width (32 bits) plus the index part
``min(c·⌈log2 d⌉, d)`` (index list or bitmap) plus a 32-bit count, since the number kept varies
from worker to worker. The all-gather itself is of fixed size, so every worker's packed message is
padded to the largest one; the communicator's meter counts that padding, the ``row_bits`` each step
reports (in its :class:`~commlab.distributed.method.SyncEvent`'s ``info``) do not.
"""

from __future__ import annotations

import math

import torch

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm import Communicator
from commlab.compress.base import k_for
from commlab.compress.sparsify import SampledTopK
from commlab.distributed.compressed import gather_varying
from commlab.distributed.method import Method, StepSchedule, SyncEvent, check_schedule, schedule_at
from commlab.seeding import SeedTree

COUNT_BITS = 32  # the number of values each worker sends this step, part of its message


class DensityWarmup:
    """DGC's exponential density warm-up: ``r^((p + 1) / P)`` in phase p of P, then ``r``.

    With ``final=0.001`` and ``phases=5`` the densities are 25.1 %, 6.3 %, 1.58 %, 0.40 %, 0.1 %
    (sparsity 75 % → 99.9 %), the paper's schedule over its first epochs. Each phase lasts
    ``warmup_steps / phases`` steps (the boundaries are rounded down), so the final density holds
    from step ``warmup_steps`` on.

    Args:
        final: density after the warm-up, in (0, 1].
        warmup_steps: length of the warm-up in steps (>= phases; 0 means no warm-up).
        phases: number of warm-up phases (>= 1).
    """

    def __init__(self, final: float, warmup_steps: int, phases: int = 5):
        self.final = check_real_number("final", final, low=0.0, high=1.0, low_open=True)
        self.phases = check_int("phases", phases, low=1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
        if 0 < self.warmup_steps < self.phases:
            raise ValueError(f"warmup_steps must be 0 or >= phases={self.phases}, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        step = check_int("step", step, low=0)
        if step >= self.warmup_steps:
            return self.final
        phase = step * self.phases // self.warmup_steps
        return self.final ** ((phase + 1) / self.phases)

    def __repr__(self) -> str:
        return f"DensityWarmup(final={self.final}, warmup_steps={self.warmup_steps}, phases={self.phases})"


#: The paper's ablation (its table of techniques) as keyword switches of :class:`DGC`; the warm-up
#: arm also needs ``density=DensityWarmup(...)`` and ``clip_norm``, which depend on the run.
ABLATION_ARMS: dict[str, dict] = {
    "dense": dict(density=1.0, accumulate=False, momentum_correction=False, masking=False),
    "no-accumulation": dict(accumulate=False, momentum_correction=False, masking=False),
    "accumulation": dict(accumulate=True, momentum_correction=False, masking=False),
    "momentum-correction": dict(accumulate=True, momentum_correction=True, masking=False),
    "masking": dict(accumulate=True, momentum_correction=True, masking=True),
}


class DGC(Method):
    """Deep Gradient Compression over a :class:`~commlab.comm.communicator.Communicator`.

    Args:
        comm: the communicator; its local workers are the rows of ``params`` and of the gradients.
        params: ``[L, d]`` floating tensor, the local workers' copies of the parameters (all rows
            equal; they stay equal because every worker applies the same update in place).
        lr: learning rate η > 0, or a schedule ``step -> η`` (0-based step; e.g. a warm-up or drops).
        momentum: m in [0, 1).
        weight_decay: λ >= 0, applied on the server side (module docstring).
        nesterov: Nesterov momentum (needs momentum > 0).
        density: r in (0, 1], or a schedule ``step -> r`` such as :class:`DensityWarmup`.
        accumulate: keep what was not sent in ``v`` (local gradient accumulation); False drops it.
        momentum_correction: accumulate the local velocity ``u`` instead of the raw gradient and
            leave the momentum of the gradient to the workers; False applies it on the server.
        masking: momentum factor masking, clear ``u`` where values were sent (needs
            ``momentum_correction``).
        clip_norm: global clipping threshold c; each worker clips its gradient to norm c/√N.
            None: no clipping.
        sample_ratio, lower, shrink, adapt_steps: the sampled-threshold top-k (:class:`SampledTopK`).
        seed: root of the per-worker sampling generators ``SeedTree(seed).torch("dgc", step, rank)``,
            so a worker draws the same sample on any backend.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, lr: StepSchedule, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False,
                 density: StepSchedule = 0.001, accumulate: bool = True,
                 momentum_correction: bool = True, masking: bool = True, clip_norm: float | None = None,
                 sample_ratio: float = 0.01, lower: float = 0.8, shrink: float = 0.8, adapt_steps: int = 10,
                 seed: int = 0):
        super().__init__(comm, params)
        self.lr = check_schedule("lr", lr)
        self.momentum = check_real_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.nesterov = _check_bool("nesterov", nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.schedule = check_schedule("density", density, high=1.0)
        self.accumulate = _check_bool("accumulate", accumulate)
        self.momentum_correction = _check_bool("momentum_correction", momentum_correction)
        self.masking = _check_bool("masking", masking)
        if self.masking and not self.momentum_correction:
            raise ValueError("masking=True needs momentum_correction=True: without it the workers keep no "
                             "momentum to mask (set masking=False)")
        self.clip_norm = None if clip_norm is None else check_positive("clip_norm", clip_norm)
        # the selection's settings (its ratio is unused: each step passes k = ceil(r_t d))
        self.compressor = SampledTopK(1.0, sample_ratio=sample_ratio, lower=lower, shrink=shrink,
                                      adapt_steps=adapt_steps)
        self.seeds = SeedTree(check_int("seed", seed, low=0))
        L, d = params.shape
        zeros = dict(dtype=params.dtype, device=params.device)
        self.u = torch.zeros(L, d, **zeros)  # local momentum (momentum correction)
        self.v = torch.zeros(L, d, **zeros)  # local accumulation
        self.buffer = torch.zeros(d, **zeros)  # server momentum (weight decay, or everything)

    def density(self, step: int | None = None) -> float:
        """The density r_t at ``step`` (default: the next step)."""
        return schedule_at("density", self.schedule, self.steps if step is None else step, high=1.0)

    @torch.no_grad()
    def step(self, grads: torch.Tensor) -> list[SyncEvent]:
        """One DGC step from the local workers' gradients ``grads`` ``[L, d]``; updates ``params`` in place.

        Returns the step's synchronisation; its ``info`` holds ``density`` r_t, ``k`` = ceil(r_t·d) (the
        most values one worker may send), ``counts`` (values each local worker sent), ``row_bits`` (wire
        bits each local worker sent: values + indices + count; dense: 32·d) and ``dense_bits`` = 32·d."""
        g = self._check_grads(grads)
        lr = schedule_at("lr", self.lr, self.steps)
        N, m = self.comm.world_size, self.momentum
        if self.clip_norm is not None:
            limit = self.clip_norm / math.sqrt(N)
            norms = torch.stack([torch.linalg.vector_norm(row) for row in g])  # row by row: same on any backend
            g = g * torch.where(norms > limit, limit / norms, torch.ones_like(norms))[:, None]
        if self.momentum_correction:
            if self.nesterov:
                self.u.add_(g).mul_(m)
                message = self.u + g
            else:
                message = self.u.mul_(m).add_(g)
        else:
            message = g
        if self.accumulate:
            message = self.v.add_(message)
        density = self.density()
        k = k_for(density, self.d)
        exchange = self._dense if k == self.d else self._sparse
        G, sent, counts, row_bits = self._logged("sync", lambda: exchange(message, k))
        if self.accumulate:
            self.v.masked_fill_(sent, 0.0)
        if self.masking:
            self.u.masked_fill_(sent, 0.0)
        self._apply(G, lr)
        event = self.events[-1]
        event.info.update(density=density, k=k, counts=counts, row_bits=row_bits, dense_bits=32 * self.d)
        self.steps += 1
        return [event]

    def _dense(self, message, k):
        G = self.comm.all_reduce(message, op="mean").wait()[0]
        L = message.shape[0]
        sent = torch.ones_like(message, dtype=torch.bool)
        return G, sent, (self.d,) * L, (32 * self.d,) * L

    def _sparse(self, message, k):
        c = self.compressor
        rows = []
        for row, rank in zip(message, self.comm.ranks.tolist(), strict=True):
            generator = self.seeds.torch("dgc", self.steps, rank)
            rows.append(c.compress_at(row, c.select(row, generator, k).indices))
        received = gather_varying(self.comm, rows)
        dense = torch.stack([c.decompress(p) for p in received])
        G = dense.sum(dim=0) / self.comm.world_size
        sent = torch.zeros_like(message, dtype=torch.bool)
        for local, payload in enumerate(rows):
            sent[local, payload["indices"].data] = True
        counts = tuple(p["indices"].counts[0] for p in rows)
        row_bits = tuple(p.bits + COUNT_BITS for p in rows)
        return G, sent, counts, row_bits

    def _apply(self, G, lr):
        w = self.params[0]
        m, wd = self.momentum, self.weight_decay
        decay = w * wd if wd else torch.zeros_like(w)
        if self.momentum_correction:  # momentum already lives in the workers' u: only the decay gets it
            self.buffer.mul_(m).add_(decay)
            update = G + decay + m * self.buffer if self.nesterov else G + self.buffer
        else:
            self.buffer.mul_(m).add_(G).add_(decay)
            update = G + decay + m * self.buffer if self.nesterov else self.buffer
        self.params.sub_(lr * update)

    # -- checkpoints ---------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {"u": self.u.clone(), "v": self.v.clone(), "buffer": self.buffer.clone()}

    def _load(self, state: dict) -> None:
        for name in ("u", "v", "buffer"):
            value = state[name]
            if value.shape != getattr(self, name).shape:
                raise ValueError(f"state {name!r} has shape {tuple(value.shape)}, expected "
                                 f"{tuple(getattr(self, name).shape)}")
            getattr(self, name).copy_(value)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}: {value!r}")
    return value
