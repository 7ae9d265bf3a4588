"""Solvers for the distributed saddle problem, with uplink bits counted per device.

M devices hold operators F_m (:class:`~commlab.problems.bilinear.BilinearSaddle`); a server averages
what they send. Every solver returns a :class:`VIHistory`: ‖z_t − z*‖² after each iteration against
the cumulative **uplink bits per device** (device → server messages, averaged over devices; the
server's broadcasts of z and of the anchor coin are downlink and not counted). A dense message
costs d · 32 bits in float32; compressed messages cost their payload's exact bits
(values + indices, briefs/_conventions.md §5).

* :func:`extragradient` (EG, uncompressed):
      z_½ = z − γ F(z),   z ← z − γ F(z_½)                         (2 dense messages per iteration)
* :func:`compressed_extragradient` ("naive" baseline): both operator calls replaced by
  (1/M) Σ_m Q_m(F_m(·)), no variance reduction; stalls at a noise floor because F_m(z*) ≠ 0.
* :func:`masha1` (Beznosikov et al. 2022, reconstructed in the brief): extragradient with a loopless
  anchor w and compressed operator differences, for unbiased Q (e.g. scaled Rand-k):
      z̄   = τ z + (1 − τ) w
      z_½ = z̄ − γ F(w)
      g   = F(w) + (1/M) Σ_m Q_m(F_m(z_½) − F_m(w))
      z  ← z̄ − γ g
      with probability p (one coin shared by all devices): w ← z and every device sends F_m(w) dense.
  Defaults p = 1/(1 + ω) (= k/d for scaled Rand-k) and τ = 1 − p. The initial F_m(w_0) is a dense
  message too; both count as "anchor bits".
* :func:`masha2`: the same skeleton for a contractive C (e.g. Top-k) with EF14 error feedback on the
  differences: c_m = C(e_m + Δ_m), e_m ← e_m + Δ_m − c_m, g = F(w) + (1/M) Σ_m c_m. This is the
  brief's EF-style reconstruction, not the paper's published algorithm. Default p = α (= k/d).

All randomness comes from a :class:`~commlab.seeding.SeedTree`: ``seeds.torch("anchor")`` gives
the shared coin sequence, ``seeds.torch("compress")`` the devices' compressor draws (independent rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from commlab.compress.base import Compressor
from commlab.compress.ef import EF14
from commlab.problems._checks import check_int, check_positive, check_real_in, check_tensor
from commlab.problems.bilinear import BilinearSaddle
from commlab.seeding import SeedTree

#: a run counts as diverged once ‖z − z*‖² > DIVERGENCE_FACTOR · max(1, ‖z_0 − z*‖²)
DIVERGENCE_FACTOR = 1e12

Uplink = Callable[[torch.Tensor], tuple[torch.Tensor, float]]  # device rows [M, d] -> (server mean [d], bits)


@dataclass(frozen=True)
class VIHistory:
    """Trajectory of one solver run.

    Attributes:
        method: solver name.
        dist_sq: float64 [T + 1], ‖z_t − z*‖² at t = 0..T (T = iterations run).
        bits: float64 [T + 1], cumulative uplink bits per device after iteration t (bits[0] counts
            initial messages, e.g. MASHA's first dense anchor).
        anchor_bits: float64 [T + 1], the part of ``bits`` spent on dense anchor messages.
        refreshes: number of anchor refreshes (after the initial anchor).
        z: final iterate [d].
        diverged: the run stopped because ‖z − z*‖² exceeded :data:`DIVERGENCE_FACTOR` · max(1, ‖z_0 − z*‖²)
            (or became non-finite), before float32 overflow could reach the compressors.
    """

    method: str
    dist_sq: np.ndarray
    bits: np.ndarray
    anchor_bits: np.ndarray
    refreshes: int
    z: torch.Tensor
    diverged: bool

    @property
    def iterations(self) -> int:
        return len(self.dist_sq) - 1

    @property
    def final(self) -> float:
        """‖z_T − z*‖² at the last iteration run."""
        return float(self.dist_sq[-1])

    def index_to(self, tol: float) -> int | None:
        """First iteration t with ‖z_t − z*‖² ≤ tol, or None if never reached."""
        hits = np.flatnonzero(self.dist_sq <= tol)
        return int(hits[0]) if hits.size else None

    def bits_to(self, tol: float) -> float:
        """Uplink bits per device spent until ‖z_t − z*‖² ≤ tol first holds (inf if never)."""
        t = self.index_to(tol)
        return math.inf if t is None else float(self.bits[t])

    def anchor_fraction(self, tol: float | None = None) -> float:
        """Share of the bits spent on dense anchor messages, over the whole run or until ``tol``."""
        t = self.iterations if tol is None else self.index_to(tol)
        if t is None:
            return math.nan
        return float(self.anchor_bits[t] / self.bits[t]) if self.bits[t] > 0 else 0.0


class _Recorder:
    """Accumulates ‖z − z*‖² and bits; tells the loop when to stop."""

    def __init__(self, problem: BilinearSaddle, z: torch.Tensor, stop_below: float | None, bits: float = 0.0):
        self.z_star = problem.z_star.double()
        self.stop_below = stop_below
        self.bits, self.anchor = bits, bits
        self.dist, self.bit_log, self.anchor_log = [], [], []
        self.diverged = False
        self.limit = math.inf
        self.record(z)
        self.limit = DIVERGENCE_FACTOR * max(1.0, self.dist[0])

    def record(self, z: torch.Tensor) -> bool:
        """Log the current state; True if the run should stop."""
        dist = float((z.double() - self.z_star).square().sum())
        self.dist.append(dist)
        self.bit_log.append(self.bits)
        self.anchor_log.append(self.anchor)
        self.diverged = not dist <= self.limit  # also true for NaN
        return self.diverged or (self.stop_below is not None and dist <= self.stop_below)

    def history(self, method: str, z: torch.Tensor, refreshes: int = 0) -> VIHistory:
        return VIHistory(method, np.array(self.dist), np.array(self.bit_log), np.array(self.anchor_log),
                         refreshes, z, self.diverged)


def _start(problem, gamma, iterations, z0, stop_below) -> torch.Tensor:
    if not isinstance(problem, BilinearSaddle):
        raise TypeError(f"problem must be a BilinearSaddle, got {type(problem).__name__}")
    check_positive("gamma", gamma)
    check_int("iterations", iterations, low=1)
    if stop_below is not None:
        check_positive("stop_below", stop_below)
    if z0 is None:
        return torch.zeros(problem.d, dtype=problem.dtype)
    return problem.points(check_tensor("z0", z0, ((problem.d,),)), "z0").clone()


def _dense_bits(problem: BilinearSaddle) -> float:
    return float(torch.finfo(problem.dtype).bits * problem.d)


def _check_seeds(seeds) -> SeedTree:
    if not isinstance(seeds, SeedTree):
        raise TypeError(f"seeds must be a commlab.seeding.SeedTree, got {type(seeds).__name__}")
    return seeds


def _check_compressor(compressor) -> Compressor:
    if not isinstance(compressor, Compressor):
        raise TypeError(f"compressor must be a commlab.compress Compressor, got {type(compressor).__name__}")
    return compressor


def extragradient(problem: BilinearSaddle, *, gamma: float, iterations: int, z0: torch.Tensor | None = None,
                  stop_below: float | None = None) -> VIHistory:
    """Uncompressed extragradient; each device sends F_m(z) and F_m(z_½) dense (2 · 32d bits).

    Args:
        problem: the saddle problem. gamma: step size > 0 (e.g. 0.5 / L_max).
        iterations: maximum number of iterations ≥ 1. z0: start [d] (zeros by default).
        stop_below: stop early once ‖z − z*‖² ≤ stop_below.
    """
    z = _start(problem, gamma, iterations, z0, stop_below)
    per_iteration = 2 * _dense_bits(problem)
    log = _Recorder(problem, z, stop_below)
    for _ in range(iterations):
        z_half = z - gamma * problem.apply(z).mean(0)
        z = z - gamma * problem.apply(z_half).mean(0)
        log.bits += per_iteration
        if log.record(z):
            break
    return log.history("EG", z)


def _compressed_uplink(compressor: Compressor, generator: torch.Generator) -> Uplink:
    """Each device m sends Q_m(rows[m]); returns the server's mean of the decompressed rows [d] and the
    mean bits per device."""

    def send(rows: torch.Tensor) -> tuple[torch.Tensor, float]:
        payload = compressor.compress(rows, generator=generator)
        return compressor.decompress(payload).mean(0), payload.bits / rows.shape[0]

    return send


def compressed_extragradient(problem: BilinearSaddle, compressor: Compressor, *, gamma: float, iterations: int,
                             seeds: SeedTree, z0: torch.Tensor | None = None,
                             stop_below: float | None = None) -> VIHistory:
    """Naive compressed EG: z_½ = z − γ (1/M) Σ_m Q_m(F_m(z)), z ← z − γ (1/M) Σ_m Q_m(F_m(z_½)).

    Args as :func:`extragradient`, plus ``compressor`` (any; typically scaled Rand-k) and ``seeds``
    (compressor draws from ``seeds.torch("compress")``).
    """
    z = _start(problem, gamma, iterations, z0, stop_below)
    send = _compressed_uplink(_check_compressor(compressor), _check_seeds(seeds).torch("compress"))
    log = _Recorder(problem, z, stop_below)
    for _ in range(iterations):
        mean, bits_first = send(problem.apply(z))
        z_half = z - gamma * mean
        mean, bits_second = send(problem.apply(z_half))
        z = z - gamma * mean
        log.bits += bits_first + bits_second
        if log.record(z):
            break
    return log.history("compressed EG", z)


def _masha(method: str, problem: BilinearSaddle, send: Uplink, *, gamma: float, iterations: int, p: float,
           tau: float | None, seeds: SeedTree, z: torch.Tensor, stop_below: float | None) -> VIHistory:
    """The shared MASHA loop; ``send`` carries the operator differences [M, d] to the server."""
    p = check_real_in("p", p, 0.0, 1.0)
    if p == 0.0:
        raise ValueError("p must be in (0, 1], got 0.0")
    tau = 1.0 - p if tau is None else check_real_in("tau", tau, 0.0, 1.0)
    coins = (torch.rand(iterations, generator=seeds.torch("anchor"), dtype=torch.float64) < p).tolist()
    dense = _dense_bits(problem)
    w = z.clone()
    F_w_rows = problem.apply(w)
    F_w = F_w_rows.mean(0)
    log = _Recorder(problem, z, stop_below, bits=dense)  # the initial anchor F_m(w_0) is sent dense
    refreshes = 0
    for coin in coins:
        z_bar = tau * z + (1.0 - tau) * w
        z_half = z_bar - gamma * F_w
        mean, bits = send(problem.apply(z_half) - F_w_rows)
        z = z_bar - gamma * (F_w + mean)
        log.bits += bits
        if coin:  # shared coin: every device refreshes its anchor and sends F_m(w) dense
            w = z.clone()
            F_w_rows = problem.apply(w)
            F_w = F_w_rows.mean(0)
            log.bits += dense
            log.anchor += dense
            refreshes += 1
        if log.record(z):
            break
    return log.history(method, z, refreshes)


def masha1(problem: BilinearSaddle, compressor: Compressor, *, gamma: float, iterations: int, seeds: SeedTree,
           p: float | None = None, tau: float | None = None, z0: torch.Tensor | None = None,
           stop_below: float | None = None) -> VIHistory:
    """MASHA1 with an unbiased compressor (see the module docstring).

    Args:
        problem: the saddle problem. compressor: unbiased (``omega_for(d)`` not None), e.g.
            ``RandK(ratio=0.1, scaled=True)``; rows (devices) are compressed independently.
        gamma: step size > 0 (the brief's prototype used 0.45 / L_max with p = k/d; the paper's
            theoretical constant is not reproduced here).
        iterations: maximum iterations ≥ 1. seeds: SeedTree for the shared coin and compressor draws.
        p: anchor refresh probability in (0, 1]; default 1/(1 + ω). tau: default 1 − p.
        z0: start [d] (zeros by default). stop_below: stop once ‖z − z*‖² ≤ stop_below.
    """
    z = _start(problem, gamma, iterations, z0, stop_below)
    omega = _check_compressor(compressor).omega_for(problem.d)
    if omega is None:
        raise ValueError(f"masha1 needs an unbiased compressor (omega defined), got {compressor!r}; use masha2")
    send = _compressed_uplink(compressor, _check_seeds(seeds).torch("compress"))
    p = 1.0 / (1.0 + omega) if p is None else p
    return _masha("MASHA1", problem, send, gamma=gamma, iterations=iterations, p=p, tau=tau, seeds=seeds, z=z,
                  stop_below=stop_below)


def masha2(problem: BilinearSaddle, compressor: Compressor, *, gamma: float, iterations: int, seeds: SeedTree,
           p: float | None = None, tau: float | None = None, z0: torch.Tensor | None = None,
           stop_below: float | None = None) -> VIHistory:
    """MASHA2 as reconstructed in the brief: MASHA's anchor skeleton with EF14 error feedback on the
    compressed operator differences, for a contractive compressor (e.g. ``TopK(ratio=0.1)``).

    Args as :func:`masha1`; ``p`` defaults to the compressor's α at dimension d.
    """
    z = _start(problem, gamma, iterations, z0, stop_below)
    alpha = _check_compressor(compressor).alpha_for(problem.d)
    if alpha is None and p is None:
        raise ValueError(f"masha2 needs p= for a compressor without a contraction constant alpha: {compressor!r}")
    ef = EF14(compressor)
    generator = _check_seeds(seeds).torch("compress")

    def send(rows: torch.Tensor) -> tuple[torch.Tensor, float]:
        payload = ef.client_step(rows, generator=generator)
        return compressor.decompress(payload).mean(0), payload.bits / rows.shape[0]

    p = alpha if p is None else p
    return _masha("MASHA2 (EF14)", problem, send, gamma=gamma, iterations=iterations, p=p, tau=tau, seeds=seeds,
                  z=z, stop_below=stop_below)
