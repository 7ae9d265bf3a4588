"""Consensus ADMM for federated weighted least squares over noisy links, its dual-free recursion,
Bernoulli client scheduling, a local-GD (FedAvg) baseline, and the recursions' noise floors.

Lari, Arablouei, Gogineni & Werner, "Noise-Robust and Resource-Efficient ADMM-based Federated
Learning" (2024). Client k's cost is J_k(w) = ‖y_k − X_k w‖²_{W_k}, with A_k = 2X_kᵀW_kX_k,
b_k = 2X_kᵀW_ky_k (:mod:`commlab.problems.weighted_least_squares`) and N_k = (A_k + ρI)⁻¹.

**Standard consensus ADMM over noisy links** (w̃: a client's noisy received copy)::

    client k:  w_{k,n+1} = N_k (b_k − z_{k,n} + ρ w̃_{k,n})                 primal
    server:    w_{n+1}   = (1/K) Σ_k (w_{k,n+1} + z_{k,n}/ρ + ε_{k,n})        one uplink per client
    client k:  z_{k,n+1} = z_{k,n} + ρ (w_{k,n+1} − w̃_{k,n+1})               dual, w̃_{k,n+1} = w_{n+1} + η_{k,n+1}

**Dual-free recursion** (the brief's derivation, not the paper's algorithm box, which was not
available): the primal optimality condition gives z_{k,n} = b_k − A_k w_{k,n} + ρ (w_{n−1} − w_n)
without noise, so ::

    client k:  w_{k,n+1} = N_k (A_k w_{k,n} + ρ ṽ_{k,n}),   ṽ_{k,n} = v_n + η_{k,n},  v_n = 2 w_n − w_{n−1}
    server:    w_{n+1}   = (1/K) Σ_k (w_{k,n+1} + ε_{k,n})

started from one standard ADMM step (z = 0). Without noise and with full participation its iterates
equal standard ADMM's. Here b_k has cancelled: the data enter only through the starting state, and
the recursion conserves ℓ_n = Σ_k A_k w_{k,n} + Kρ (w_n − w_{n−1}) = Σ_k b_k, which fixes the limit
(Σ_k A_k) w = ℓ at w*. Link noise adds ρ (Σ_k η_k + Σ_k ε_k) to ℓ every iteration, so the consensus
random-walks: E‖w_n − w*‖² grows by a constant ``drift`` per iteration on top of a stable part
(:func:`dual_free_noise_floor`), whereas standard ADMM's server term Σ_k z_k/ρ resets Σ_k z_k every
iteration and its MSE settles (:func:`standard_admm_noise_floor`).

**Scheduling.** Each iteration every client is selected independently with probability p
(``participation``). A selected client receives the server's message, updates and uploads; the
server keeps each client's latest (noisy) upload and averages all of them (``server_average=
"all_latest"``) or the ones received this iteration (``"selected_only"``; no upload: the model
stays). A client that is not selected freezes (``idle_clients="freeze"``) or, in the dual-free
recursion, keeps iterating with the last ṽ it received (``"continue"``, the paper's second
modification in the brief's reading). Standard ADMM's clients freeze; a selected one first applies
the dual update it owes with the model it has just received.

**Links.** Every message is d real values sent uncoded; each downlink copy and each uplink gets its
own noise draw, N(0, σ²_link) per entry (``noise_var``), from an explicit ``torch.Generator``. A
trace counts the messages per direction (``uplinks``, ``downlinks``: d-vectors, cumulative).

:func:`dual_free_admm_over` runs the same recursion over real collectives (a server broadcast and an
all-gather of a :class:`~commlab.comm.Communicator`, e.g. :class:`~commlab.comm.noisy.NoisyLinks`).

All simulators are vectorised over R Monte-Carlo runs (leading axis) in the problem's dtype (float64
advised). A is ``[K, d, d]`` (one problem shared by all runs) or ``[R, K, d, d]``; b is ``[K, d]`` or
``[R, K, d]``. Their traces hold the server's model w_0 … w_T ``[T + 1, R, d]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from commlab._checks import check_choice, check_int, check_nonnegative, check_positive, check_real_number
from commlab.comm.communicator import Communicator

IDLE_CLIENTS = ("freeze", "continue")
SERVER_AVERAGES = ("all_latest", "selected_only")


@dataclass(frozen=True)
class ADMMTrace:
    """What a simulated run produced.

    Attributes:
        w: the server's model after each iteration, w_0 … w_T: [T + 1, R, d].
        uplinks, downlinks: messages (d-vectors) sent so far after each iteration, per run: [T + 1, R].
    """

    w: torch.Tensor
    uplinks: torch.Tensor
    downlinks: torch.Tensor

    @property
    def transmissions(self) -> torch.Tensor:
        """Uplink + downlink messages so far: [T + 1, R]."""
        return self.uplinks + self.downlinks

    def mse(self, w_star: torch.Tensor) -> torch.Tensor:
        """Normalised squared error ‖w_n − w*‖² / ‖w*‖² per iteration and run: [T + 1, R].

        ``w_star`` is [d] (shared) or [R, d]."""
        return (self.w - w_star).square().sum(-1) / w_star.square().sum(-1)


# -- inputs --------------------------------------------------------------------------------------------

def _check_problem(A, b, runs) -> tuple[torch.Tensor, torch.Tensor, int]:
    for name, value in (("A", A), ("b", b)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {type(value).__name__}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite (no NaN or Inf)")
    R = check_int("runs", runs, low=1)
    if A.dim() not in (3, 4) or A.shape[-1] != A.shape[-2] or (A.dim() == 4 and A.shape[0] != R):
        raise ValueError(f"A must have shape [K, d, d] or [runs={R}, K, d, d], got {list(A.shape)}")
    if tuple(b.shape) not in (tuple(A.shape[-3:-1]), (R, *A.shape[-3:-1])):
        raise ValueError(f"b must have shape {list(A.shape[-3:-1])} or {[R, *A.shape[-3:-1]]}, got {list(b.shape)}")
    if b.dtype != A.dtype:
        raise TypeError(f"A and b must have one dtype, got {A.dtype} and {b.dtype}")
    return A, b, R


def _check_w0(w0, R: int, d: int, like: torch.Tensor) -> torch.Tensor:
    if w0 is None:
        return like.new_zeros(R, d)
    if not isinstance(w0, torch.Tensor) or tuple(w0.shape) not in ((d,), (R, d)):
        raise ValueError(f"w0 must be a tensor of shape [{d}] or [{R}, {d}]")
    return w0.to(like.dtype).expand(R, d).clone()


def _inverse(A: torch.Tensor, rho: float) -> torch.Tensor:
    """N_k = (A_k + ρI)⁻¹, precomputed once: [.., K, d, d]."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return torch.linalg.inv(A + rho * eye)


def _apply(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """M_k x_{r,k} for M [K, d, d] or [R, K, d, d] and x [R, K, d]: [R, K, d] (one batched product)."""
    if M.dim() == 3:  # one matrix per client, shared by the runs: [K, d, d] @ [K, d, R]
        return torch.bmm(M, x.permute(1, 2, 0)).permute(2, 0, 1)
    return (M @ x.unsqueeze(-1)).squeeze(-1)


class _Links:
    """Link noise N(0, σ² I) per message, drawn from one generator (no draws when σ² = 0)."""

    def __init__(self, noise_var, generator):
        self.std = check_nonnegative("noise_var", noise_var) ** 0.5
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as received: x + N(0, σ²) per entry."""
        if self.std == 0.0:
            return x
        return x + self.std * torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)


class _Schedule:
    """Bernoulli(p) client selection, [R, K] per iteration; message counters."""

    def __init__(self, participation, generator: torch.Generator, R: int, K: int, iterations: int):
        self.p = check_real_number("participation", participation, low=0.0, high=1.0, low_open=True)
        self.generator, self.R, self.K = generator, R, K
        self.counts = torch.zeros(iterations + 1, R, dtype=torch.int64)

    def draw(self, device) -> torch.Tensor:
        if self.p == 1.0:
            return torch.ones(self.R, self.K, dtype=torch.bool, device=device)
        return torch.rand(self.R, self.K, generator=self.generator, device=device) < self.p

    def sent(self, n: int, selected: torch.Tensor) -> None:
        """Record that each selected client received one message and sent one in iteration n."""
        self.counts[n + 1] = self.counts[n] + selected.sum(-1).cpu()


def _server_average(stored: torch.Tensor, fresh: torch.Tensor, selected: torch.Tensor, w: torch.Tensor,
                    mode: str) -> torch.Tensor:
    """The server's new model from its stored latest uploads [R, K, d] (``all_latest``), or from this
    iteration's uploads ``fresh`` of the ``selected`` clients (``selected_only``; none: w stays)."""
    if mode == "all_latest":
        return stored.mean(-2)
    count = selected.sum(-1, keepdim=True)
    total = (fresh * selected.unsqueeze(-1)).sum(-2)
    return torch.where(count > 0, total / count.clamp(min=1), w)


def _trace(ws: list, schedule: _Schedule) -> ADMMTrace:
    counts = schedule.counts.to(torch.float64)
    return ADMMTrace(torch.stack(ws), counts.clone(), counts.clone())


# -- simulators ----------------------------------------------------------------------------------------

def standard_admm(A: torch.Tensor, b: torch.Tensor, *, iterations: int, runs: int, generator: torch.Generator,
                  rho: float = 1.0, noise_var: float = 0.0, participation: float = 1.0,
                  server_average: str = "all_latest", w0: torch.Tensor | None = None) -> ADMMTrace:
    """Standard consensus ADMM over noisy links (module docstring), R runs at once.

    Args:
        A: A_k [K, d, d] or [R, K, d, d]. b: b_k [K, d] or [R, K, d].
        iterations: T ≥ 1. runs: R ≥ 1. generator: torch.Generator for the noise and the schedule.
        rho: penalty ρ > 0. noise_var: σ²_link ≥ 0 per entry, each downlink copy and each uplink.
        participation: probability p ∈ (0, 1] that a client is selected in an iteration.
        server_average: ``"all_latest"`` or ``"selected_only"``.
        w0: the server's initial model [d] or [R, d] (default 0).
    """
    A, b, R = _check_problem(A, b, runs)
    T, rho = check_int("iterations", iterations, low=1), check_positive("rho", rho)
    mode = check_choice("server_average", server_average, SERVER_AVERAGES)
    K, d = A.shape[-3], A.shape[-1]
    links, schedule = _Links(noise_var, generator), _Schedule(participation, generator, R, K, T)
    N = _inverse(A, rho)
    w = _check_w0(w0, R, d, A)
    z = A.new_zeros(R, K, d)
    w_k = w.unsqueeze(1).expand(R, K, d).clone()
    stored = w_k.clone()  # the server's latest message from each client (w0 until a client uploads)
    started = torch.zeros(R, K, dtype=torch.bool, device=A.device)
    ws = [w]
    for n in range(T):
        selected = schedule.draw(A.device)
        sel = selected.unsqueeze(-1)
        received = links(w.unsqueeze(1).expand(R, K, d))  # w̃_{k,n} = w_n + η_{k,n}
        owed = (sel & started.unsqueeze(-1))
        z = torch.where(owed, z + rho * (w_k - received), z)  # z_{k,n} = z_{k,n−1} + ρ (w_{k,n} − w̃_{k,n})
        w_k = torch.where(sel, _apply(N, b - z + rho * received), w_k)  # w_{k,n+1} = N_k (b_k − z_{k,n} + ρ w̃_{k,n})
        fresh = links(w_k + z / rho)  # uplink w_{k,n+1} + z_{k,n}/ρ + ε_{k,n}
        stored = torch.where(sel, fresh, stored)
        started = started | selected
        w = _server_average(stored, fresh, selected, w, mode)  # w_{n+1} = (1/K) Σ_k (w_{k,n+1} + z_{k,n}/ρ + ε)
        schedule.sent(n, selected)
        ws.append(w)
    return _trace(ws, schedule)


def dual_free_admm(A: torch.Tensor, b: torch.Tensor, *, iterations: int, runs: int, generator: torch.Generator,
                   rho: float = 1.0, noise_var: float = 0.0, participation: float = 1.0,
                   idle_clients: str = "freeze", server_average: str = "all_latest",
                   w0: torch.Tensor | None = None) -> ADMMTrace:
    """The dual-free recursion (module docstring), R runs at once.

    Iteration 0 is one standard ADMM step from z = 0 with every client (it puts the data b_k into
    the state): w_{k,1} = N_k (b_k + ρ w̃_{k,0}), w_1 = (1/K) Σ_k (w_{k,1} + ε_k). From iteration 1 on
    the selected clients receive ṽ = 2 w_n − w_{n−1} + η and run w_{k,n+1} = N_k (A_k w_{k,n} + ρ ṽ).

    Args: as :func:`standard_admm`, and
        idle_clients: ``"freeze"`` (an unselected client keeps w_k) or ``"continue"`` (it iterates
            with the last ṽ it received; before its first one, with w̃_{k,0}).
    """
    A, b, R = _check_problem(A, b, runs)
    T, rho = check_int("iterations", iterations, low=1), check_positive("rho", rho)
    idle = check_choice("idle_clients", idle_clients, IDLE_CLIENTS)
    mode = check_choice("server_average", server_average, SERVER_AVERAGES)
    K, d = A.shape[-3], A.shape[-1]
    links, schedule = _Links(noise_var, generator), _Schedule(participation, generator, R, K, T)
    N = _inverse(A, rho)
    M = N @ A  # N_k A_k
    w_old = _check_w0(w0, R, d, A)
    v_last = links(w_old.unsqueeze(1).expand(R, K, d))  # w̃_{k,0}
    w_k = _apply(N, b + rho * v_last)  # w_{k,1} = N_k (b_k + ρ w̃_{k,0})   (standard step, z = 0)
    stored = links(w_k)
    w = stored.mean(-2)
    everyone = torch.ones(R, K, dtype=torch.bool, device=A.device)
    schedule.sent(0, everyone)
    ws = [w_old, w]
    for n in range(1, T):
        selected = schedule.draw(A.device)
        sel = selected.unsqueeze(-1)
        v = 2 * w - w_old  # v_n = 2 w_n − w_{n−1}, one downlink message
        v_last = torch.where(sel, links(v.unsqueeze(1).expand(R, K, d)), v_last)  # ṽ_{k,n} = v_n + η_{k,n}
        update = _apply(M, w_k) + rho * _apply(N, v_last)  # w_{k,n+1} = N_k (A_k w_{k,n} + ρ ṽ_{k,n})
        w_k = update if idle == "continue" else torch.where(sel, update, w_k)
        fresh = links(w_k)  # uplink w_{k,n+1} + ε_{k,n}
        stored = torch.where(sel, fresh, stored)
        w_old, w = w, _server_average(stored, fresh, selected, w, mode)  # w_{n+1} = (1/K) Σ_k (w_{k,n+1} + ε)
        schedule.sent(n, selected)
        ws.append(w)
    return _trace(ws, schedule)


def local_gd(A: torch.Tensor, b: torch.Tensor, *, iterations: int, runs: int, generator: torch.Generator,
             lr: float, local_steps: int = 1, noise_var: float = 0.0, participation: float = 1.0,
             w0: torch.Tensor | None = None) -> ADMMTrace:
    """FedAvg-style local gradient descent over the same links, R runs at once.

    Each selected client receives w̃ = w_n + η, runs ``local_steps`` steps u ← u − lr (A_k u − b_k)
    (∇J_k(u) = A_k u − b_k) and uploads u + ε; the server averages this iteration's uploads
    (none: w stays).

    Args: as :func:`standard_admm`, with lr > 0 the local step size and local_steps ≥ 1.
    """
    A, b, R = _check_problem(A, b, runs)
    T, lr = check_int("iterations", iterations, low=1), check_positive("lr", lr)
    steps = check_int("local_steps", local_steps, low=1)
    K, d = A.shape[-3], A.shape[-1]
    links, schedule = _Links(noise_var, generator), _Schedule(participation, generator, R, K, T)
    w = _check_w0(w0, R, d, A)
    ws = [w]
    for n in range(T):
        selected = schedule.draw(A.device)
        u = links(w.unsqueeze(1).expand(R, K, d))
        for _ in range(steps):
            u = u - lr * (_apply(A, u) - b)  # u ← u − lr ∇J_k(u)
        w = _server_average(u, links(u), selected, w, "selected_only")
        schedule.sent(n, selected)
        ws.append(w)
    return _trace(ws, schedule)


def dual_free_admm_over(uplink: Communicator, downlink: Communicator, A: torch.Tensor, b: torch.Tensor, *,
                        iterations: int, rho: float = 1.0, w0: torch.Tensor | None = None) -> ADMMTrace:
    """One dual-free run (full participation) over real collectives: the K clients are workers
    0 … K − 1 and the server is worker K of communicators that host all K + 1 workers (a
    :class:`~commlab.comm.SimComm`, or a :class:`~commlab.comm.noisy.NoisyLinks` around one).

    The server sends v_n with ``downlink.broadcast(·, src=K)`` (wrap it in a NoisyLinks with a
    downlink channel only: every client hears its own noisy copy) and collects the clients' models
    with ``uplink.all_gather`` (a NoisyLinks with an uplink channel only: each upload gets its own
    noise). The server's own row of the all-gather carries nothing the algorithm uses. Iterates
    equal :func:`dual_free_admm`'s for the same noise.

    Args:
        uplink, downlink: Communicators with K + 1 local workers (they may wrap the same SimComm).
        A: [K, d, d]; b: [K, d]. iterations: T ≥ 1. rho: ρ > 0. w0: the server's initial model [d].
    Returns: an :class:`ADMMTrace` with R = 1.
    """
    A, b, _ = _check_problem(A, b, 1)
    if A.dim() != 3:
        raise ValueError(f"A must have shape [K, d, d] for a run over communicators, got {list(A.shape)}")
    T, rho = check_int("iterations", iterations, low=1), check_positive("rho", rho)
    K, d = A.shape[0], A.shape[-1]
    for name, comm in (("uplink", uplink), ("downlink", downlink)):
        if not isinstance(comm, Communicator):
            raise TypeError(f"{name} must be a commlab Communicator, got {type(comm).__name__}")
        if comm.world_size != K + 1 or comm.local_workers != K + 1:
            raise ValueError(f"{name} must host all K + 1 = {K + 1} workers (K clients and the server), "
                             f"got world_size {comm.world_size} with {comm.local_workers} local workers")
    N = _inverse(A, rho)
    M = N @ A
    w_old = _check_w0(w0, 1, d, A)[0]
    rows = A.new_zeros(K + 1, d)
    rows[K] = w_old
    received = downlink.broadcast(rows, src=K).wait()[:K]  # w̃_{k,0}
    w_k = _apply(N, (b + rho * received)[None])[0]  # w_{k,1} = N_k (b_k + ρ w̃_{k,0})
    w = uplink.all_gather(torch.cat([w_k, w_old[None]])).wait()[:K].mean(0)
    ws = [w_old, w]
    for _ in range(1, T):
        received = downlink.broadcast(torch.cat([w_k, (2 * w - w_old)[None]]), src=K).wait()[:K]  # ṽ_{k,n}
        w_k = (_apply(M, w_k[None]) + rho * _apply(N, received[None]))[0]  # w_{k,n+1} = N_k (A_k w_{k,n} + ρ ṽ_{k,n})
        w_old, w = w, uplink.all_gather(torch.cat([w_k, w[None]])).wait()[:K].mean(0)
        ws.append(w)
    counts = K * torch.arange(T + 1, dtype=torch.float64)[:, None]
    return ADMMTrace(torch.stack(ws)[:, None], counts.clone(), counts.clone())


# -- noise floors (linear-recursion theory) ------------------------------------------------------------

@dataclass(frozen=True)
class NoiseFloor:
    """The mean squared error of a recursion driven by link noise, per unit σ²_link, for large n:

        E‖w_n − w*‖² ≈ σ²_link (offset + n · drift).

    Attributes:
        offset: the stable part's steady-state contribution (its Lyapunov solution, with the cross
            term between the stable part and the drifting consensus).
        drift: growth per iteration (0 for a recursion with a steady state).
    """

    offset: float
    drift: float

    def mse(self, iteration, noise_var: float):
        """σ²_link (offset + n · drift) at iteration(s) n (absolute, not normalised)."""
        return noise_var * (self.offset + np.asarray(iteration, dtype=float) * self.drift)


def _check_matrices(A, rho) -> tuple[np.ndarray, float]:
    if isinstance(A, torch.Tensor):
        A = A.detach().cpu().double().numpy()
    A = np.asarray(A, dtype=float)
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"A must have shape [K, d, d], got {list(A.shape)}")
    if not np.isfinite(A).all():
        raise ValueError("A must be finite (no NaN or Inf)")
    return A, check_positive("rho", rho)


def _floor(F: np.ndarray, G: np.ndarray, S: np.ndarray, right: np.ndarray | None = None,
           left: np.ndarray | None = None) -> NoiseFloor:
    """Noise floor of x_{n+1} = F x_n + G ξ_n (ξ white, unit variance), read out as e_n = S x_n.

    Without ``right``/``left``, F must be stable and P = F P Fᵀ + G Gᵀ (discrete Lyapunov) gives
    offset tr(S P Sᵀ). With the eigenvalue-1 eigenspace given (right R [D, r], left L [r, D],
    L R = I, F R = R, L F = L), x splits into the consensus c = L x, a random walk
    (c_{n+1} = c_n + L G ξ_n), and the stable part s = (I − RL) x, whose recursion F_s = F − RL has
    its Lyapunov solution P_s and cross-covariance X = (I − F_s)⁻¹ (I − RL) G Gᵀ Lᵀ with c; then
    E‖e_n‖² → tr(S P_s Sᵀ) + 2 tr(S X (S R)ᵀ) + n tr(S R L G Gᵀ Lᵀ (S R)ᵀ) (plus c's start).
    """
    Q = G @ G.T
    if right is None:
        if np.max(np.abs(np.linalg.eigvals(F))) >= 1.0:
            raise ValueError("the recursion is not stable: give its eigenvalue-1 eigenspace")
        P = scipy.linalg.solve_discrete_lyapunov(F, Q)
        return NoiseFloor(float(np.trace(S @ P @ S.T)), 0.0)
    project = np.eye(F.shape[0]) - right @ left
    F_s = F - right @ left
    Q_s = project @ Q @ project.T
    P_s = scipy.linalg.solve_discrete_lyapunov(F_s, Q_s)
    X = np.linalg.solve(np.eye(F.shape[0]) - F_s, project @ Q @ left.T)
    SR = S @ right
    offset = np.trace(S @ P_s @ S.T) + 2 * np.trace(S @ X @ SR.T)
    drift = np.trace(SR @ left @ Q @ left.T @ SR.T)
    return NoiseFloor(float(offset), float(drift))


def standard_admm_noise_floor(A, rho: float = 1.0) -> NoiseFloor:
    """Steady-state E‖w_n − w*‖² of standard ADMM (full participation) per unit σ²_link.

    State (errors from the fixed point z_k* = b_k − A_k w*, w*): z_k, the received copies r_k = w̃_k
    and w: x = [z_1 … z_K, r_1 … r_K, w] of size (2K + 1) d; noise ξ = [ε_1 … ε_K, η_1 … η_K]::

        w_k' = N_k (−z_k + ρ r_k),   w' = (1/K) Σ_k (w_k' + z_k/ρ + ε_k),
        r_k' = w' + η_k,             z_k' = z_k + ρ (w_k' − r_k').

    Args: A: A_k [K, d, d] (numpy or torch); rho: ρ > 0. Returns a :class:`NoiseFloor` with drift 0.
    """
    A, rho = _check_matrices(A, rho)
    K, d = A.shape[0], A.shape[1]
    eye = np.eye(d)
    N = np.linalg.inv(A + rho * eye)
    blk = lambda k: slice(k * d, (k + 1) * d)  # noqa: E731  (block k of d rows or columns)
    z, r, w = (lambda k: blk(k)), (lambda k: blk(K + k)), blk(2 * K)  # state blocks
    eps, eta = (lambda k: blk(k)), (lambda k: blk(K + k))  # noise blocks
    D, E = (2 * K + 1) * d, 2 * K * d
    F, G = np.zeros((D, D)), np.zeros((D, E))
    for k in range(K):  # w' = (1/K) Σ_k ((I/ρ − N_k) z_k + ρ N_k r_k + ε_k)
        F[w, z(k)] = (eye / rho - N[k]) / K
        F[w, r(k)] = rho * N[k] / K
        G[w, eps(k)] = eye / K
    for k in range(K):
        F[r(k)], G[r(k)] = F[w], G[w].copy()  # r_k' = w' + η_k
        G[r(k), eta(k)] += eye
        # z_k' = z_k + ρ w_k' − ρ r_k' = (I − ρ N_k) z_k + ρ² N_k r_k − ρ r_k'
        F[z(k)] = -rho * F[r(k)]
        G[z(k)] = -rho * G[r(k)]
        F[z(k), z(k)] += eye - rho * N[k]
        F[z(k), r(k)] += rho ** 2 * N[k]
    S = np.zeros((d, D))
    S[:, w] = eye
    return _floor(F, G, S)


def dual_free_noise_floor(A, rho: float = 1.0) -> NoiseFloor:
    """E‖w_n − w*‖² ≈ σ²_link (offset + n · drift) of the dual-free recursion (full participation).

    State x = [w_1 … w_K, w_n, w_{n−1}] of size (K + 2) d (errors from w*), noise
    ξ = [η_1 … η_K, ε_1 … ε_K]::

        w_k' = N_k A_k w_k + ρ N_k (2 w − w_old + η_k),   w' = (1/K) Σ_k (w_k' + ε_k),   w_old' = w.

    Every consensus state is a fixed point (right eigenvectors R = [I; …; I]); the conserved
    ℓ = L x with L = [A_1 … A_K, KρI, −KρI] takes ρ (Σ η_k + Σ ε_k) per iteration, so the consensus
    c = (Σ A_k)⁻¹ ℓ random-walks. The n in :meth:`NoiseFloor.mse` counts iterations from w_0 (the
    standard step that starts the recursion adds one such increment, as every later iteration).

    Args: A: A_k [K, d, d] (numpy or torch); rho: ρ > 0.
    """
    A, rho = _check_matrices(A, rho)
    K, d = A.shape[0], A.shape[1]
    eye = np.eye(d)
    N = np.linalg.inv(A + rho * eye)
    blk = lambda k: slice(k * d, (k + 1) * d)  # noqa: E731
    w, old = blk(K), blk(K + 1)
    D, E = (K + 2) * d, 2 * K * d
    F, G = np.zeros((D, D)), np.zeros((D, E))
    for k in range(K):
        F[blk(k), blk(k)] = N[k] @ A[k]
        F[blk(k), w] = 2 * rho * N[k]
        F[blk(k), old] = -rho * N[k]
        G[blk(k), blk(k)] = rho * N[k]
        F[w] += F[blk(k)] / K
        G[w] += G[blk(k)] / K
        G[w, blk(K + k)] = eye / K
    F[old, w] = eye
    S = np.zeros((d, D))
    S[:, w] = eye
    right = np.tile(eye, (K + 2, 1))
    left = np.concatenate([*A, K * rho * eye, -K * rho * eye], axis=1)
    left = np.linalg.solve(A.sum(0), left)  # L̂ = (Σ A_k)⁻¹ L, so that L̂ R = I
    return _floor(F, G, S, right, left)
