"""Outer optimisers for low-communication training: DiLoCo, Streaming DiLoCo, NoLoCo, CO2, local SGD.

Every method here is a *hook* around the caller's own training loop. The loop owns the model, the
data and (optionally) the inner optimiser; after every inner step it calls
:meth:`OuterMethod.after_inner_step`, which synchronises when one is due. Swapping DiLoCo for NoLoCo
is one line::

    flat = model.flat                                    # [L, d] replica parameters (a leaf tensor)
    algo = DiLoCo(comm, flat, sync_every=30, inner=lambda p: torch.optim.AdamW([p], lr=1e-3))
    # algo = NoLoCo(comm, flat, sync_every=30, inner=lambda p: torch.optim.AdamW([p], lr=1e-3))
    for step in range(steps):
        loss, grad = model.loss_and_grad(x_batch, y_batch)
        algo.step(grad)                                  # inner step + after_inner_step()
    algo.finish()                                        # drain what is still in flight
    algo.summary()                                       # bytes, peak bytes per sync, syncs, clock
    algo.state_dict()                                    # a checkpoint that resumes bit for bit

Without ``inner`` the loop runs its own optimiser on ``params`` and calls ``algo.after_inner_step()``.
``params`` has a leading local-worker axis (``[L, d]``; L = N on :class:`~commlab.comm.communicator.SimComm`,
L = 1 on :class:`~commlab.comm.communicator.DistComm`), and the methods change it in place. Bytes
are counted by ``comm.meter``; each collective is also recorded as a
:class:`~commlab.distributed.method.SyncEvent` (step,
bytes, launch and finish time on the simulated clock). ``step_seconds`` moves the simulated clock on
by one inner step's computation, so ``comm.clock`` is the simulated wall-clock of the run; overlapped
collectives use :meth:`Communicator.start <commlab.comm.communicator.Communicator.start>`.

The methods (the symbols are those of briefs/distributed/{streaming_diloco,noloco_gossip,co2_overlap}.md):

* :class:`OuterSGD` — the outer step on the outer gradient Δ (a "pseudo-gradient", global − local), by name:
  ``"nesterov"`` (PyTorch's form: b ← μb + Δ; θ ← θ − η(Δ + μb)) or ``"heavy_ball"`` (b ← μb + Δ;
  θ ← θ − ηb; what the NoLoCo repository and CO2 call outer momentum). ``momentum=0`` is plain SGD.
  Optional elementwise clipping of the buffer, b ← clip(b, −φ, φ) (CO2's outer momentum clipping).
* :class:`DiLoCo` (Douillard et al. 2023) — every H inner steps (``sync_every``): Δ = mean_m(θ_g − θ_m) by one fp32
  all-reduce, θ_g ← OuterSGD(θ_g, Δ), θ_m ← θ_g. Defaults η = 0.7, μ = 0.9, Nesterov.
* :class:`DataParallel` — the every-step baseline in the same form: the gradient is all-reduced (mean)
  before each inner step, or, with a ``mechanism``, aggregated by a compressed round.
* :class:`LocalSGD` — DiLoCo with heavy-ball outer momentum (η = 1, β = 0.5) every τ steps (``sync_every``): the
  synchronous local-SGD / SlowMo baseline of CO2.
* :class:`StreamingDiLoCo` (Douillard et al. 2025) — P fragments (layer ℓ in fragment ℓ mod P), each with
  its own global copy θ_g,p and outer optimiser. Fragment p is sent at inner steps t with
  t ≡ (p + 1)·H/P (mod H): Δ_m,p = θ_g,p − θ_m,p is quantised per block of ``block`` values (4-bit E3M0
  by default, one 32-bit scale per block), all-gathered as packed bytes and averaged in fp32 while the
  workers keep training; τ steps later (``overlap_steps``) θ_g,p ← OuterSGD_p(θ_g,p, Δ̄_p) and
  θ_m,p ← α·θ_m,p + (1 − α)·θ_g,p (α: ``mixing``). Requires H divisible by P, 0 ≤ τ < H/P, α ∈ [0, 1].
  With ``boundary="apply"`` fragment p is sent τ steps before those steps and applied at them
  (torchft's ``DiLoCo(fragment_sync_delay=τ)`` phase).
* :class:`NoLoCo` (Kolehmainen et al. 2025) — no all-reduce. Every H steps a permutation that every
  replica derives from (seed, outer step) splits the N replicas into groups of ``group_size``
  (consecutive entries; with N not divisible the last group is smaller, e.g. a singleton for odd N
  with pairs, which then takes a purely local step). Each replica i with outer weights φ_i, momentum
  δ_i and live weights θ_i, in its group G:
  δ_i ← α·δ_i + β·mean_G(θ_j − φ_j) + γ·(mean_G φ_j − φ_i);  φ_i ← φ_i + δ_i;  θ_i ← φ_i.
  The group means travel by one gossip round (``comm.mix`` with the group-averaging matrix: for pairs,
  one message each way). With β = γ (the default) the update only needs mean_G θ_j, since
  β(mean θ − mean φ) + γ(mean φ − φ_i) = β(mean θ − φ_i), so only θ (d floats) is sent; otherwise
  φ and θ − φ (2d floats), except with γ = 0 (no pull), which needs only θ − φ (d floats).
  Defaults α = 0.5, β = γ = 0.7, pairs.
* :class:`CO2` (Sun et al. 2024) — rounds of τ inner steps (``sync_every``) from the anchor x_o; at the end of round t
  the average ȳ_t is launched in the background and the average of round t − 1 is waited for (one
  round stale): Δ = (x_o,prev − ȳ_{t−1})/Λ_t; m ← βm + Δ; m ← clip(m, −φ, φ); x_o,prev ← x_o;
  x_o ← x_o − ηm; every worker restarts from x_o. Λ_t is ``penalty`` (``gap_penalty="constant"``,
  1.0 in the released code) or, per layer, 1 + λ‖x_o − x_o,prev‖/‖x_o,prev − ȳ_{t−1}‖
  (``"relative"``, λ = ``penalty``; commlab's own reading of the paper's staleness-gap penalty). On the
  simulated clock a round costs max(τc, C) instead of LocalSGD's τc + C (c = ``step_seconds``,
  C = the all-reduce's link time).
* :class:`AsyncDiLoCo` (PCCL's async DiLoCo) — CO2's one-round-stale schedule with DiLoCo's outer Nesterov
  and no penalty: the mean of round r is launched in the background, round r − 1's outer gradient applied.

Simulated and real workers run the same code: the permutation and quantiser draws come from
:class:`~commlab.seeding.SeedTree`, and ``DistComm(deterministic=True)`` gives bit-identical runs.
A checkpoint taken while a collective is in flight (Streaming DiLoCo's fragments, CO2's stale average)
carries that collective's result, so the resumed run applies it at the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from commlab._checks import (
    check_choice,
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
    check_real_number,
    check_seed,
)
from commlab.comm import Communicator, Work
from commlab.compress.base import Compressor
from commlab.compress.ef import Mechanism
from commlab.compress.payload import Payload
from commlab.compress.quantize import Identity, LowPrecision
from commlab.distributed.compressed import compressed_round
from commlab.distributed.method import Method, SyncEvent
from commlab.seeding import SeedTree

FORMS = ("nesterov", "heavy_ball")
BOUNDARIES = ("send", "apply")
GAP_PENALTIES = ("constant", "relative")
E3M0 = LowPrecision("e3m0")  # Streaming DiLoCo's default outer-gradient format

InnerFactory = Callable[[torch.Tensor], torch.optim.Optimizer]


class OuterSGD:
    """SGD with momentum on the outer gradient Δ, on flat tensors, with its own state.

    Args:
        lr: outer learning rate η > 0 (DiLoCo: 0.7).
        momentum: μ in [0, 1) (DiLoCo: 0.9); 0 gives θ ← θ − ηΔ in both forms.
        form: ``"nesterov"`` — b ← μb + Δ; θ ← θ − η(Δ + μb) (``torch.optim.SGD(nesterov=True)``);
            ``"heavy_ball"`` — b ← μb + Δ; θ ← θ − ηb (``torch.optim.SGD`` without Nesterov; the
            NoLoCo repository calls this "Nesterov").
        clip: φ > 0 to clip the buffer elementwise after its update, b ← clamp(b, −φ, φ) (CO2); None
            for no clipping.

    The buffer is created (zeros) on the first :meth:`step`; each instance serves one tensor shape.
    """

    def __init__(self, lr: float = 0.7, momentum: float = 0.9, form: str = "nesterov", clip: float | None = None):
        self.lr = check_positive("lr", lr)
        self.momentum = check_probability("momentum", momentum)
        if self.momentum == 1.0:
            raise ValueError("momentum must be in [0, 1), got 1.0")
        self.form = check_choice("form", form, FORMS)
        self.clip = None if clip is None else check_positive("clip", clip)
        self.buffer: torch.Tensor | None = None

    def fresh(self) -> OuterSGD:
        """A new optimiser with the same settings and no state (one per Streaming DiLoCo fragment)."""
        return OuterSGD(self.lr, self.momentum, self.form, self.clip)

    @torch.no_grad()
    def step(self, params: torch.Tensor, outer_grad: torch.Tensor) -> torch.Tensor:
        """Update ``params`` in place with the outer gradient (same shape) and return it."""
        if outer_grad.shape != params.shape:
            raise ValueError(f"outer_grad has shape {tuple(outer_grad.shape)}, params {tuple(params.shape)}")
        if self.buffer is not None and self.buffer.shape != params.shape:
            raise ValueError(f"this OuterSGD holds state of shape {tuple(self.buffer.shape)}, "
                             f"got params of shape {tuple(params.shape)}; use one instance per tensor")
        # torch.optim.SGD's single-tensor arithmetic, op for op (so bit-identical to it without clip)
        if self.buffer is None:
            self.buffer = outer_grad.detach().clone()  # b ← Δ on the first step
        else:
            self.buffer.mul_(self.momentum).add_(outer_grad)  # b ← μb + Δ
        if self.clip is not None:
            self.buffer.clamp_(-self.clip, self.clip)  # b ← clip(b, −φ, φ)
        # Nesterov: Δ + μb; heavy ball: b
        direction = outer_grad.add(self.buffer, alpha=self.momentum) if self.form == "nesterov" else self.buffer
        params.add_(direction, alpha=-self.lr)  # θ ← θ − η·direction
        return params

    def state_dict(self) -> dict:
        return {"buffer": None if self.buffer is None else self.buffer.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = None if state["buffer"] is None else state["buffer"].clone()

    def __repr__(self) -> str:
        return f"OuterSGD(lr={self.lr}, momentum={self.momentum}, form={self.form!r}, clip={self.clip})"


class OuterMethod(Method):
    """What the outer methods share: the inner step, the clock and the initial broadcast.

    Args:
        comm: the communicator.
        params: ``[L, d]`` floating tensor of the local replicas' parameters, changed in place
            (e.g. ``StackedMLP.flat``).
        inner: optional factory ``params -> torch.optim.Optimizer`` (e.g.
            ``lambda p: torch.optim.AdamW([p], lr=1e-3)``); then :meth:`step` runs the inner step.
            Elementwise optimisers on stacked replicas are exactly L independent optimisers.
        step_seconds: simulated computation time c of one inner step (s), added to ``comm.clock``.
        sync_init: broadcast worker 0's parameters to every worker first (metered as an ``"init"``
            event), so all replicas start from the same point on any backend.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, inner: InnerFactory | None = None,
                 step_seconds: float = 0.0, sync_init: bool = True):
        super().__init__(comm, params, step_seconds=step_seconds)
        if sync_init:
            with torch.no_grad():
                params.copy_(self._run("init", comm.broadcast, params.detach(), 0).wait())
        self.inner = None
        if inner is not None:
            if not callable(inner):
                raise TypeError("inner must be a callable params -> torch.optim.Optimizer, or None")
            self.inner = inner(params)

    # -- the training loop's side ---------------------------------------------------------------

    def step(self, grad: torch.Tensor) -> list[SyncEvent]:
        """One inner step with the ``inner`` optimiser on ``grad`` ``[L, d]``, then what
        :meth:`after_inner_step` does. Returns the events launched in this call."""
        if self.inner is None:
            raise RuntimeError("step() needs an inner optimiser factory (inner=...); without one, run your "
                               "optimiser and call after_inner_step()")
        before = len(self.events)
        self.params.grad = self._gradient(self._check_grads(grad, finite=False))
        self.inner.step()
        self.params.grad = None
        self._advance()
        return self.events[before:]

    def after_inner_step(self) -> list[SyncEvent]:
        """Call once after every inner step: advances the clock by ``step_seconds`` and synchronises
        when due. Returns the events launched in this call (empty list when none)."""
        before = len(self.events)
        self._advance()
        return self.events[before:]

    def _advance(self) -> None:
        self.steps += 1
        self.comm.advance(self.step_seconds)
        with torch.no_grad():
            self._after(self.steps)

    def _gradient(self, grad: torch.Tensor) -> torch.Tensor:
        """The gradient the inner optimiser uses (the worker's own, except for data parallelism)."""
        return grad

    @property
    def outer_params(self) -> torch.Tensor:
        """The method's outer (global) parameters ``[d]`` (NoLoCo: ``[L, d]``, one per replica)."""
        raise NotImplementedError

    def _state(self) -> dict:
        return {"inner": None if self.inner is None else self.inner.state_dict()}

    def _load(self, state: dict) -> None:
        if (state["inner"] is None) != (self.inner is None):
            raise ValueError("the state was saved with" + (" no" if state["inner"] is None else "") +
                             " inner optimiser; build the method the same way")
        if self.inner is not None:
            self.inner.load_state_dict(state["inner"])

    # -- what the methods define ----------------------------------------------------------------

    def _after(self, t: int) -> None:
        raise NotImplementedError


class DiLoCo(OuterMethod):
    """DiLoCo: H inner steps, then one all-reduce of the outer gradient and an outer step.

    Every H inner steps: Δ = (1/N) Σ_m (θ_g − θ_m) (fp32 all-reduce of d floats per worker),
    θ_g ← outer.step(θ_g, Δ), and every replica restarts from θ_g (the inner optimiser keeps its state).

    Args:
        comm, params, inner, step_seconds, sync_init: see :class:`OuterMethod`.
        sync_every: H, inner steps per outer step (>= 1).
        outer: the :class:`OuterSGD` (default η = 0.7, μ = 0.9, Nesterov); used as given (its state
            is the outer momentum).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, sync_every: int,
                 outer: OuterSGD | None = None, inner: InnerFactory | None = None, step_seconds: float = 0.0,
                 sync_init: bool = True):
        self.sync_every = check_int("sync_every", sync_every, low=1)
        if outer is not None and not isinstance(outer, OuterSGD):
            raise TypeError(f"outer must be an OuterSGD, got {type(outer).__name__}")
        self.outer = outer if outer is not None else OuterSGD()
        super().__init__(comm, params, inner=inner, step_seconds=step_seconds, sync_init=sync_init)
        self.global_params = params[0].detach().clone()

    @property
    def outer_params(self) -> torch.Tensor:
        return self.global_params

    def _state(self):
        return {**super()._state(), "global_params": self.global_params.clone(), "outer": self.outer.state_dict()}

    def _load(self, state):
        super()._load(state)
        self.global_params = state["global_params"].clone()
        self.outer.load_state_dict(state["outer"])

    def _after(self, t):
        if t % self.sync_every:
            return
        delta = self.global_params - self.params
        mean = self._run("sync", self.comm.all_reduce, delta, op="mean").wait()[0]
        self.outer.step(self.global_params, mean)
        self.params.copy_(self.global_params.expand_as(self.params))


class DataParallel(OuterMethod):
    """The every-step baseline in the same hook form: :meth:`step` averages the gradient over the N
    workers before the inner step, so every replica takes the same step. Needs ``inner``;
    :meth:`after_inner_step` is not available (there is nothing to do after a step).

    Args:
        comm, params, inner, step_seconds, sync_init: see :class:`OuterMethod`.
        mechanism: None — an fp32 all-reduce of the mean gradient (d floats per worker); or a
            :class:`~commlab.compress.ef.Mechanism` (a compressor with or without error feedback), whose
            server vector from :func:`~commlab.distributed.compressed.compressed_round` is the gradient,
            e.g. ``EF14(ScaledSign("l2"))`` with inner Adam: the "naive 1-bit Adam" of Tang et al. 2021.
        compress_from: the first step (0-based) that is compressed; the steps before are dense (a
            warm-up, as the DDP hook's ``start_iter``).
        seed: root of a random compressor's draws, ``SeedTree(seed).torch("compress", step)``.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, inner: InnerFactory,
                 mechanism: Mechanism | None = None, compress_from: int = 0, seed: int = 0,
                 step_seconds: float = 0.0, sync_init: bool = True):
        if inner is None:
            raise TypeError("DataParallel needs an inner optimiser factory (inner=...)")
        if mechanism is not None and not isinstance(mechanism, Mechanism):
            raise TypeError(f"mechanism must be a compress.ef Mechanism or None, got {type(mechanism).__name__}")
        self.mechanism = mechanism
        self.compress_from = check_int("compress_from", compress_from, low=0)
        self.seeds = SeedTree(check_seed(seed))
        if mechanism is not None and mechanism.compressor.shared_draws:
            comm.check_same("compressor seed", seed)  # shared draws (shared-index Rand-k): one seed everywhere
        super().__init__(comm, params, inner=inner, step_seconds=step_seconds, sync_init=sync_init)

    def after_inner_step(self) -> list[SyncEvent]:
        raise RuntimeError("DataParallel averages gradients before the inner step: call step(grad)")

    @property
    def outer_params(self) -> torch.Tensor:
        return self.params[0].detach()

    def _gradient(self, grad):
        if self.mechanism is None or self.steps < self.compress_from:
            return self._run("sync", self.comm.all_reduce, grad, op="mean").wait().contiguous()
        generator = self.seeds.torch("compress", self.steps) if self.mechanism.compressor.random else None
        estimate = self._logged("sync", lambda: compressed_round(self.comm, self.mechanism, grad.cpu(), generator)[0],
                                info={"compressed": True})  # payloads pack on the CPU
        return estimate.to(grad.device).expand_as(grad).contiguous()

    def _state(self):
        return {**super()._state(), "mechanism": None if self.mechanism is None else self.mechanism.state_dict()}

    def _load(self, state):
        super()._load(state)
        if self.mechanism is not None:
            self.mechanism.load_state_dict(state["mechanism"])

    def _after(self, t):
        pass


class LocalSGD(DiLoCo):
    """Synchronous local SGD with outer momentum (SlowMo; CO2's baseline): DiLoCo every τ steps
    (``sync_every``) with heavy-ball outer SGD, m ← βm + Δ; x ← x − ηm (η: ``outer_lr``, β:
    ``outer_momentum``). Defaults from the CO2 release: τ = 3, η = 1, β = 0.5. On the simulated clock a
    round costs τc + C."""

    def __init__(self, comm: Communicator, params: torch.Tensor, *, sync_every: int = 3, outer_lr: float = 1.0,
                 outer_momentum: float = 0.5, inner: InnerFactory | None = None, step_seconds: float = 0.0,
                 sync_init: bool = True):
        super().__init__(comm, params, sync_every=sync_every, outer=OuterSGD(outer_lr, outer_momentum, "heavy_ball"),
                         inner=inner, step_seconds=step_seconds, sync_init=sync_init)


def layer_pieces(layers, d: int) -> list[list[slice]]:
    """Check that ``layers`` tile ``[0, d)`` exactly once; returns each layer's pieces as slices, in order.

    A layer is a slice, a ``(start, stop)`` pair, or a sequence of slices (its pieces, e.g. the
    ``(weight, bias)`` entries of :attr:`StackedMLP.layer_slices <commlab.models.stacked.StackedMLP>`).
    None gives one layer ``[0, d)``.
    """
    if layers is None:
        return [[slice(0, d)]]
    out = []
    for layer in layers:
        if isinstance(layer, slice) or (len(layer) == 2 and not any(isinstance(v, slice) for v in layer)):
            layer = [layer]
        out.append([_piece(piece) for piece in layer])
    if not out:
        raise ValueError("layers must not be empty")
    at = 0
    for start, stop in sorted((s.start, s.stop) for pieces in out for s in pieces):
        if start != at:
            raise ValueError(f"layers must tile [0, {d}) exactly once: "
                             f"{'gap' if start > at else 'overlap'} at {min(start, at)}")
        at = stop
    if at != d:
        raise ValueError(f"layers must tile [0, {d}) exactly once: they end at {at}")
    return out


def _piece(piece) -> slice:
    if isinstance(piece, slice):
        if piece.step not in (None, 1):
            raise ValueError(f"layers: slices must have step 1, got {piece!r}")
        start, stop = piece.start or 0, piece.stop
    else:
        start, stop = piece
    start, stop = check_int("layer start", start, low=0), check_int("layer stop", stop, low=0)
    if stop <= start:
        raise ValueError(f"layers: each piece must be non-empty, got [{start}, {stop})")
    return slice(start, stop)


def fragment_indices(layers, fragments: int, d: int) -> list[torch.Tensor]:
    """Strided fragments: layer ℓ (in the given order) belongs to fragment ℓ mod P.

    Args:
        layers: the layers in order, tiling ``[0, d)`` (see :func:`layer_pieces`; e.g.
            ``StackedMLP.layer_slices``, each layer's weight and bias travelling together), or None for
            P contiguous chunks of near-equal size.
        fragments: P >= 1, at most the number of layers.
        d: parameters per replica.

    Returns:
        P int64 index tensors (ascending) that together contain every index in ``[0, d)`` exactly once.
    """
    fragments = check_int("fragments", fragments, low=1)
    if layers is None:
        if fragments > d:
            raise ValueError(f"fragments must be <= d = {d}, got {fragments}")
        bounds = [round(i * d / fragments) for i in range(fragments + 1)]
        layers = list(zip(bounds[:-1], bounds[1:], strict=True))
    pieces = layer_pieces(layers, d)
    if fragments > len(pieces):
        raise ValueError(f"fragments must be <= the number of layers ({len(pieces)}), got {fragments}")
    return [_indices([s for layer in pieces[p::fragments] for s in layer]).sort().values for p in range(fragments)]


def _indices(pieces: list[slice]) -> torch.Tensor:
    return torch.cat([torch.arange(s.start, s.stop) for s in pieces])


class StreamingDiLoCo(OuterMethod):
    """Streaming DiLoCo: fragments synchronised in turn, overlapped with τ inner steps, quantised.

    Args:
        comm, params, inner, step_seconds, sync_init: see :class:`OuterMethod`.
        sync_every: H, inner steps between two synchronisations of the same fragment; divisible by P.
        fragments: P >= 1; fragment p is sent after inner steps t ≡ (p + 1)·H/P (mod H).
        layers: the layers for the strided assignment (see :func:`fragment_indices`).
        overlap_steps: τ in [0, H/P): the averaged fragment is applied τ inner steps after it was sent.
        boundary: which event falls on the steps t ≡ (p + 1)·H/P (mod H): ``"send"`` (the paper's
            schedule: sent there, applied at t + τ) or ``"apply"`` (torchft's ``DiLoCo`` with
            ``fragment_sync_delay=τ``: sent at t − τ, applied there).
        mixing: α in [0, 1]: θ_m,p ← α·θ_m,p + (1 − α)·θ_g,p (0: overwrite with the global copy).
        compressor: how outer gradients cross the wire: any commlab compressor, applied per block of
            ``block`` values (each block a row, so E3M0 has one 32-bit scale per block; the last block
            is zero-padded), packed to bytes and all-gathered, then decoded and averaged in fp32 (or
            float64 parameters' dtype). None or Identity: an fp32 all-reduce of the raw values.
        block: values per quantisation block (>= 1).
        outer: template :class:`OuterSGD` (default η = 0.7, μ = 0.9, Nesterov); every fragment gets a
            fresh copy with its own state.
        seed: root of the quantiser's random draws (only used by random compressors).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, sync_every: int, fragments: int = 2,
                 layers=None, overlap_steps: int = 1, boundary: str = "send", mixing: float = 0.5,
                 compressor: Compressor | None = E3M0, block: int = 128, outer: OuterSGD | None = None, seed: int = 0,
                 inner: InnerFactory | None = None, step_seconds: float = 0.0, sync_init: bool = True):
        self.sync_every = check_int("sync_every", sync_every, low=1)
        self.fragments = check_int("fragments", fragments, low=1)
        if self.sync_every % self.fragments:
            raise ValueError(f"sync_every = {self.sync_every} must be divisible by the number of fragments "
                             f"P = {self.fragments}")
        self.period = self.sync_every // self.fragments
        self.overlap_steps = check_int("overlap_steps", overlap_steps, low=0)
        if self.overlap_steps >= self.period:
            raise ValueError(f"overlap_steps must be in [0, sync_every/fragments) = [0, {self.period}), "
                             f"got {self.overlap_steps}")
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)
        self.mixing = check_probability("mixing", mixing)
        if compressor is not None and not isinstance(compressor, Compressor):
            raise TypeError(f"compressor must be a commlab Compressor or None, got {type(compressor).__name__}")
        self.compressor = None if isinstance(compressor, Identity) else compressor
        self.block = check_int("block", block, low=1)
        if outer is not None and not isinstance(outer, OuterSGD):
            raise TypeError(f"outer must be an OuterSGD, got {type(outer).__name__}")
        self.seeds = SeedTree(check_seed(seed))
        if self.compressor is not None and self.compressor.shared_draws:
            comm.check_same("quantiser seed", seed)  # one draw for every worker: one seed everywhere
        super().__init__(comm, params, inner=inner, step_seconds=step_seconds, sync_init=sync_init)
        self.indices = fragment_indices(layers, self.fragments, self.d)
        template = outer if outer is not None else OuterSGD()
        self.outers = [template.fresh() for _ in range(self.fragments)]
        self.global_fragments = [params[0, idx].detach().clone() for idx in self.indices]
        self._pending: dict[int, tuple[int, Work]] = {}  # receive step -> (fragment, its exchange)

    def fragment_due(self, t: int) -> int | None:
        """The fragment sent after inner step ``t`` (1-based), or None."""
        if self.boundary == "apply":
            t += self.overlap_steps  # sent τ steps before its boundary
        return (t // self.period - 1) % self.fragments if t % self.period == 0 else None

    @property
    def outer_params(self) -> torch.Tensor:
        out = torch.empty(self.d, dtype=self.params.dtype)
        for idx, theta in zip(self.indices, self.global_fragments, strict=True):
            out[idx] = theta
        return out

    def finish(self):
        with torch.no_grad():
            for due in sorted(self._pending):
                self._receive(*self._pending.pop(due))

    def _state(self):
        return {**super()._state(), "global_fragments": [theta.clone() for theta in self.global_fragments],
                "outers": [outer.state_dict() for outer in self.outers],
                "pending": {due: (p, work.state_dict()) for due, (p, work) in self._pending.items()}}

    def _load(self, state):
        super()._load(state)
        self.global_fragments = [theta.clone() for theta in state["global_fragments"]]
        for outer, saved in zip(self.outers, state["outers"], strict=True):
            outer.load_state_dict(saved)
        self._pending = {int(due): (p, Work.from_state(work, self.comm)) for due, (p, work) in state["pending"].items()}

    def _after(self, t):
        p = self.fragment_due(t)
        if p is not None:
            delta = self.global_fragments[p] - self.params[:, self.indices[p]]
            self._pending[t + self.overlap_steps] = (p, self._launch(delta, p, t))
        if t in self._pending:
            self._receive(*self._pending.pop(t))

    def _receive(self, p: int, work: Work) -> None:
        theta = self.outers[p].step(self.global_fragments[p], self._mean(p, work))
        idx = self.indices[p]
        # θ_m,p ← α·θ_m,p + (1 − α)·θ_g,p, as torch.lerp (torchft's arithmetic)
        self.params[:, idx] = theta.expand(self.params.shape[0], -1).lerp(self.params[:, idx], self.mixing)

    def _launch(self, delta: torch.Tensor, p: int, t: int) -> Work:
        """Launch the exchange of the local outer gradients ``[L, d_p]`` of fragment ``p``."""
        if self.compressor is None:
            return self._run("fragment", self.comm.all_reduce, delta, op="mean", overlap=True, fragment=p)
        payloads = [self.compressor.compress(self._blocks(row), self._generator(t, int(rank)))
                    for row, rank in zip(delta, self.comm.ranks, strict=True)]
        packed = Payload.pack_rows(payloads).to(self.comm.device)
        return self._run("fragment", self.comm.all_gather, packed, overlap=True, fragment=p)

    def _mean(self, p: int, work: Work) -> torch.Tensor:
        """Wait for fragment ``p``'s exchange; the mean of the N workers' outer gradients ``[d_p]``."""
        if self.compressor is None:
            return work.wait()[0]
        n, dtype = len(self.indices[p]), self.params.dtype
        header = self.compressor.compress(self._blocks(torch.zeros(n, dtype=dtype)), self._generator(0, 0)).header
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        rows = [self.compressor.decompress(pl) for pl in Payload.unpack_rows(work.wait(), header)]
        return torch.stack([r.reshape(-1)[:n].to(acc) for r in rows]).mean(dim=0).to(dtype)

    def _blocks(self, row: torch.Tensor) -> torch.Tensor:
        """One worker's ``[d_p]`` outer gradient as ``[ceil(d_p / block), block]`` rows (zero-padded)."""
        pad = (-row.numel()) % self.block
        return torch.cat([row, row.new_zeros(pad)]).reshape(-1, self.block)

    def _generator(self, t: int, rank: int) -> torch.Generator | None:
        """The quantiser's draw for worker ``rank`` at step ``t`` (one draw for all with shared draws)."""
        if not self.compressor.random:
            return None
        return self.seeds.torch("outer-quantiser", t, 0 if self.compressor.shared_draws else rank)


def group_matrix(groups: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    """``[n, n]`` float64 averaging matrix: W_ij = 1/|G| for i, j in the same group G."""
    W = torch.zeros(n, n, dtype=torch.float64)
    for group in groups:
        idx = torch.tensor(list(group))
        W[idx.unsqueeze(1), idx.unsqueeze(0)] = 1.0 / len(group)
    return W


class NoLoCo(OuterMethod):
    """NoLoCo: no all-reduce; partial averaging inside a modified Nesterov step with a random peer group.

    Args:
        comm, params, inner, step_seconds, sync_init: see :class:`OuterMethod`.
        sync_every: H, inner steps per outer step (>= 1; the configs use 50).
        momentum: α, the momentum weight in [0, 1) (0.5).
        progress_weight: β >= 0, the weight of the group's mean local progress mean(θ − φ) (0.7).
        pull_weight: γ >= 0, the weight of the pull toward the group's mean outer weights (0.7; 0 = no pull).
        group_size: replicas per group (>= 2; 2 = pairs).
        seed: root of the permutations; the permutation of outer step k depends only on (seed, k),
            so every replica derives the same grouping without coordination.

    State: ``phi`` ``[L, d]`` outer weights and ``delta`` ``[L, d]`` momentum of the local replicas.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, sync_every: int, momentum: float = 0.5,
                 progress_weight: float = 0.7, pull_weight: float = 0.7, group_size: int = 2, seed: int = 0,
                 inner: InnerFactory | None = None, step_seconds: float = 0.0, sync_init: bool = True):
        self.sync_every = check_int("sync_every", sync_every, low=1)
        self.momentum = check_probability("momentum", momentum)
        if self.momentum == 1.0:
            raise ValueError("momentum must be in [0, 1), got 1.0")
        self.progress_weight = check_nonnegative("progress_weight", progress_weight)
        self.pull_weight = check_nonnegative("pull_weight", pull_weight)
        self.group_size = check_int("group_size", group_size, low=2)
        self.seeds = SeedTree(check_seed(seed))
        super().__init__(comm, params, inner=inner, step_seconds=step_seconds, sync_init=sync_init)
        self.phi = params.detach().clone()
        self.delta = torch.zeros_like(self.phi)

    @property
    def outer_params(self) -> torch.Tensor:
        return self.phi

    def _state(self):
        return {**super()._state(), "phi": self.phi.clone(), "delta": self.delta.clone()}

    def _load(self, state):
        super()._load(state)
        self.phi.copy_(state["phi"])
        self.delta.copy_(state["delta"])

    def groups(self, k: int) -> list[list[int]]:
        """The groups of outer step ``k`` (0-based): consecutive chunks of a permutation of the N
        replicas given by argsort of BLAKE2b-derived keys of (seed, k, i), stable across versions."""
        n = self.comm.world_size
        keys = torch.tensor([self.seeds.seed_for("noloco-permutation", k, i) for i in range(n)])
        perm = torch.argsort(keys).tolist()
        return [perm[i:i + self.group_size] for i in range(0, n, self.group_size)]

    def _after(self, t):
        if t % self.sync_every:
            return
        W = group_matrix(self.groups(t // self.sync_every - 1), self.comm.world_size)
        theta, phi = self.params, self.phi
        if self.progress_weight == self.pull_weight:
            mean_theta = self._run("sync", self.comm.mix, theta.detach(), W).wait()
            pull = self.progress_weight * (mean_theta - phi)
        elif self.pull_weight == 0:  # no pull toward the group's φ: only its mean progress travels
            pull = self.progress_weight * self._run("sync", self.comm.mix, theta.detach() - phi, W).wait()
        else:
            mixed = self._run("sync", self.comm.mix, torch.cat([phi, theta.detach() - phi], dim=1), W).wait()
            mean_phi, mean_progress = mixed[:, : self.d], mixed[:, self.d :]
            pull = self.progress_weight * mean_progress + self.pull_weight * (mean_phi - phi)
        self.delta.mul_(self.momentum).add_(pull)
        phi.add_(self.delta)
        theta.copy_(phi)


class CO2(OuterMethod):
    """CO2: local updates with a one-round-stale averaged outer step overlapped with the next round.

    Args:
        comm, params, inner, step_seconds, sync_init: see :class:`OuterMethod`.
        sync_every: τ, inner steps per round (>= 1; 3 in the release).
        outer_lr: η, the outer learning rate (1.0); outer_momentum: β in [0, 1) (0.5).
        gap_penalty: ``"constant"`` (Λ = ``penalty``) or ``"relative"`` (per layer,
            Λ = 1 + ``penalty``·‖x_o − x_o,prev‖/‖x_o,prev − ȳ‖).
        penalty: Λ >= 1 for ``"constant"`` (1.0), λ >= 0 for ``"relative"``.
        clip: φ > 0 to clip the outer momentum elementwise, or None (the release's default; its clip is
            a no-op by a bug, this one is not).
        layers: the layers of the relative penalty (see :func:`layer_pieces`; default: one layer).

    The first round's average is applied at the end of the second round; :meth:`finish` waits for the
    last one and applies it.

    Stability: on a quadratic where one round's progress is a fraction h of the distance to the
    minimum, the one-round-stale step with η = 1 is stable only for h < 0.49 at β = 0.5 and h < 0.1 at
    β = 0.9 (local SGD without staleness: h < 2(1 + β) = 3.0 and 3.8). Inner SGD with momentum 0.9 over a few
    steps can exceed this on a small model (digits, τ = 4, lr 0.05: CO2 diverged where plain inner
    SGD matched local SGD per step).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, sync_every: int = 3, outer_lr: float = 1.0,
                 outer_momentum: float = 0.5, gap_penalty: str = "constant", penalty: float = 1.0,
                 clip: float | None = None, layers=None, inner: InnerFactory | None = None, step_seconds: float = 0.0,
                 sync_init: bool = True):
        self.sync_every = check_int("sync_every", sync_every, low=1)
        self.gap_penalty = check_choice("gap_penalty", gap_penalty, GAP_PENALTIES)
        if gap_penalty == "constant":
            self.penalty = check_real_number("penalty", penalty, low=1.0)
        else:
            self.penalty = check_nonnegative("penalty", penalty)
        self.outer = OuterSGD(outer_lr, outer_momentum, "heavy_ball", clip=clip)
        super().__init__(comm, params, inner=inner, step_seconds=step_seconds, sync_init=sync_init)
        self.layers = [_indices(layer) for layer in layer_pieces(layers, self.d)]
        self.anchor = params[0].detach().clone()
        self.anchor_prev = self.anchor.clone()
        self._pending: Work | None = None

    @property
    def outer_params(self) -> torch.Tensor:
        return self.anchor

    def _state(self):
        return {**super()._state(), "anchor": self.anchor.clone(), "anchor_prev": self.anchor_prev.clone(),
                "outer": self.outer.state_dict(),
                "pending": None if self._pending is None else self._pending.state_dict()}

    def _load(self, state):
        super()._load(state)
        self.anchor.copy_(state["anchor"])
        self.anchor_prev.copy_(state["anchor_prev"])
        self.outer.load_state_dict(state["outer"])
        self._pending = None if state["pending"] is None else Work.from_state(state["pending"], self.comm)

    def finish(self):
        if self._pending is not None:
            with torch.no_grad():
                self._outer_step(self._pending.wait()[0])
                self.params.copy_(self.anchor.expand_as(self.params))
            self._pending = None

    def _after(self, t):
        if t % self.sync_every:
            return
        work = self._run("sync", self.comm.all_reduce, self.params.detach(), op="mean", overlap=True)
        if self._pending is not None:
            self._outer_step(self._pending.wait()[0])
        self._pending = work
        self.params.copy_(self.anchor.expand_as(self.params))

    def _outer_step(self, average: torch.Tensor) -> None:
        raw = self.anchor_prev - average  # relative to the anchor the averaged round started from
        delta = raw / self._penalty(raw)
        self.anchor_prev.copy_(self.anchor)
        self.outer.step(self.anchor, delta)

    def _penalty(self, raw: torch.Tensor) -> torch.Tensor | float:
        if self.gap_penalty == "constant":
            return self.penalty
        gap = self.anchor - self.anchor_prev
        out = torch.ones_like(raw)
        for idx in self.layers:
            norm = raw[idx].norm()
            if norm > 0:
                out[idx] = 1 + self.penalty * gap[idx].norm() / norm
        return out


class AsyncDiLoCo(CO2):
    """Async DiLoCo (PCCL, Keiblinger et al. 2025): DiLoCo whose outer step is one round late, so that
    each round's all-reduce runs while the replicas compute the next round.

    At the end of round r (every H inner steps), with A_r the outer parameters the round started from:
    the mean of the replicas' parameters θ̄_r is launched in the background; the previous round's mean
    is waited for and applied, θ_g ← outer.step(θ_g, Δ̄_{r−1}) with Δ̄_{r−1} = A_{r−1} − θ̄_{r−1} =
    mean_m(A_{r−1} − θ_m) (DiLoCo's outer gradient, one round stale); every replica restarts from θ_g.
    This is :class:`CO2` with the constant penalty Λ = 1, no momentum clipping and DiLoCo's outer
    optimiser. The mean in flight is part of :meth:`state_dict`, so a replica healed from a peer's
    checkpoint receives it too (PCCL: "late joiners must also receive the in-flight result"). On the
    simulated clock a round costs max(H·c, C) instead of DiLoCo's H·c + C.

    Args:
        comm, params, inner, step_seconds, sync_init: see :class:`OuterMethod`.
        sync_every: H, inner steps per outer step (>= 1).
        outer: the :class:`OuterSGD` (default η = 0.7, μ = 0.9, Nesterov, as :class:`DiLoCo`).
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, sync_every: int,
                 outer: OuterSGD | None = None, inner: InnerFactory | None = None, step_seconds: float = 0.0,
                 sync_init: bool = True):
        if outer is not None and not isinstance(outer, OuterSGD):
            raise TypeError(f"outer must be an OuterSGD, got {type(outer).__name__}")
        super().__init__(comm, params, sync_every=sync_every, inner=inner, step_seconds=step_seconds,
                         sync_init=sync_init)
        self.outer = outer if outer is not None else OuterSGD()


__all__ = ["CO2", "AsyncDiLoCo", "DataParallel", "DiLoCo", "LocalSGD", "NoLoCo", "OuterMethod", "OuterSGD",
           "StreamingDiLoCo", "SyncEvent", "fragment_indices", "group_matrix", "layer_pieces"]
