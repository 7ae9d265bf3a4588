"""Lorenz-96: a seeded fixed-step RK4 integrator, spin-up onto the attractor, ensemble initial
conditions and the leading Lyapunov exponent.

Lorenz (1996), "Predictability — a problem partly solved": K variables on a latitude circle,

.. math::

    \\frac{dx_k}{dt} = (x_{k+1} - x_{k-2})\\,x_{k-1} - c\\,x_k + F, \\qquad k \\bmod K, \\qquad (1)

with damping c = 1 in the standard model. The advection term :math:`(x_{k+1} - x_{k-2})x_{k-1}`
conserves the energy :math:`E = \\tfrac12 \\sum_k x_k^2` (:func:`energy`); the damping removes it and
F injects it. With K = 40 and F = 8 the system is chaotic, with a leading Lyapunov exponent of about
1.7 per model time unit (an error-doubling time of about 0.42; Lorenz & Emanuel 1998, who equate
0.05 time units with 6 hours, so one time unit is about 5 days).

Units: time in model time units (MTU) everywhere (``dt``, ``transient``, the exponent in 1/MTU); the
state in the model's own (non-dimensional) units. Every state tensor has the K variables on its last
axis and any number of leading batch / ensemble axes, and every function keeps the input's dtype and
device (float64 is the choice for long or differential runs). Randomness comes only from the
``torch.Generator`` passed in.

Forecast cases (:func:`forecast_cases`): many initial states on the attractor, each with a perturbed
"truth" run and an ensemble of perturbed members integrated side by side, saved at the lead times —
the training and test sets of the ensemble-emulation notebooks (FuXi-ENS, SEEDS).

Stochastic forcing (optional, ``noise_std`` = σ): after each RK4 step the Euler–Maruyama increment of
:math:`\\sigma\\,dW` is added, :math:`x \\leftarrow x + \\sigma\\sqrt{\\Delta t}\\,\\xi`,
:math:`\\xi \\sim \\mathcal N(0, I)`; σ is in state units per √MTU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from commlab._checks import check_generator, check_int, check_nonnegative, check_positive, check_real_number


def energy(x: torch.Tensor) -> torch.Tensor:
    """E = ½ Σ_k x_k² over the last axis: ``[..., K]`` -> ``[...]``."""
    return 0.5 * (x * x).sum(-1)



class Lorenz96:
    """The Lorenz-96 system (1) with fixed-step fourth-order Runge–Kutta.

    Stateless apart from its constants, so it has nothing to checkpoint.

    Args:
        n_variables: K >= 4.
        forcing: F (finite; 8 is the standard chaotic case).
        dt: RK4 step in model time units (> 0; 0.01 is usual, 0.05 still stable at F = 8).
        damping: c >= 0, the coefficient of the linear term (1 in Lorenz's model; c = 0 and F = 0
            leave the energy-conserving advection alone).
    """

    def __init__(self, n_variables: int = 40, *, forcing: float = 8.0, dt: float = 0.01,
                 damping: float = 1.0):
        self.n_variables = check_int("n_variables", n_variables, low=4)
        self.forcing = check_real_number("forcing", forcing)
        self.dt = check_positive("dt", dt)
        self.damping = check_nonnegative("damping", damping)

    def __repr__(self) -> str:
        return (f"Lorenz96(n_variables={self.n_variables}, forcing={self.forcing}, dt={self.dt}, "
                f"damping={self.damping})")

    def _check_state(self, name: str, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.ndim == 0 or x.shape[-1] != self.n_variables:
            raise ValueError(f"{name} must be [..., {self.n_variables}] (K on the last axis), "
                             f"got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite")
        return x

    def tendency(self, x: torch.Tensor) -> torch.Tensor:
        """dx/dt of (1) for states ``[..., K]`` -> ``[..., K]`` (state units per MTU)."""
        x = self._check_state("x", x)
        return self._tendency(x)

    def _tendency(self, x: torch.Tensor) -> torch.Tensor:
        # torch.roll(x, s)[k] = x[k - s]: shifts -1, 2, 1 give x_{k+1}, x_{k-2}, x_{k-1}.
        advection = (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1)
        return advection - self.damping * x + self.forcing  # (1)

    def _rk4(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dt
        k1 = self._tendency(x)
        k2 = self._tendency(x + 0.5 * h * k1)
        k3 = self._tendency(x + 0.5 * h * k2)
        k4 = self._tendency(x + h * k3)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One deterministic RK4 step of length ``dt``: ``[..., K]`` -> ``[..., K]``."""
        return self._rk4(self._check_state("x", x))

    def integrate(self, x0: torch.Tensor, n_steps: int, *, save_every: int = 1,
                  noise_std: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Integrate ``n_steps`` RK4 steps from ``x0`` and return the saved trajectory.

        Args:
            x0: initial states ``[*batch, K]`` (floating point, finite).
            n_steps: number of steps (>= 0, a multiple of ``save_every``); the run covers
                ``n_steps * dt`` MTU.
            save_every: keep every ``save_every``-th state (>= 1), i.e. a sampling interval of
                ``save_every * dt`` MTU.
            noise_std: σ of the additive stochastic forcing (>= 0, state units per √MTU).
            generator: the ``torch.Generator`` of the noise; required when ``noise_std > 0``.

        Returns:
            ``[n_steps // save_every + 1, *batch, K]``, time first, entry 0 being ``x0``; entry j
            is the state at time ``j * save_every * dt`` MTU.
        """
        x = self._check_state("x0", x0)
        n_steps = check_int("n_steps", n_steps, low=0)
        save_every = check_int("save_every", save_every, low=1)
        if n_steps % save_every:
            raise ValueError(f"n_steps must be a multiple of save_every={save_every}, got {n_steps}")
        noise_std = check_nonnegative("noise_std", noise_std)
        if noise_std > 0:
            check_generator(generator)
        elif generator is not None:
            raise ValueError("generator is only used with noise_std > 0; pass noise_std or drop generator")
        scale = noise_std * math.sqrt(self.dt)
        saved = [x]
        for i in range(1, n_steps + 1):
            x = self._rk4(x)
            if noise_std > 0:
                x = x + scale * torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                            device=x.device)  # x += σ √dt ξ
            if i % save_every == 0:
                saved.append(x)
        if not bool(torch.isfinite(saved[-1]).all()):
            raise FloatingPointError(f"the integration diverged (dt={self.dt} too large for F={self.forcing}?)")
        return torch.stack(saved)

    def spin_up(self, batch_shape: Sequence[int] | int = (), *, generator: torch.Generator,
                transient: float = 10.0, dtype: torch.dtype = torch.float64,
                device: str | torch.device = "cpu") -> torch.Tensor:
        """States on the attractor: draw ``x = F + ξ``, ξ ~ N(0, I) from ``generator``, and discard a
        deterministic ``transient`` of MTU (rounded to whole steps).

        Args:
            batch_shape: leading shape of independent states (an int or a sequence of ints >= 1).
            generator: ``torch.Generator`` (on ``device``) of the initial draw.
            transient: MTU integrated and discarded (>= 0; 10 MTU is about 17 Lyapunov times).
            dtype, device: of the returned states (floating-point dtype).

        Returns:
            ``[*batch_shape, K]`` states.
        """
        check_generator(generator)
        shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        shape = tuple(check_int("batch_shape", s, low=1) for s in shape)
        transient = check_nonnegative("transient", transient)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        x = self.forcing + torch.randn((*shape, self.n_variables), generator=generator, dtype=dtype,
                                       device=device)
        n_steps = round(transient / self.dt)
        return self.integrate(x, n_steps, save_every=max(n_steps, 1))[-1]

    def perturbed_ensemble(self, state: torch.Tensor, n_members: int, *, std: float,
                           generator: torch.Generator) -> torch.Tensor:
        """Ensemble initial conditions: ``n_members`` copies of each state plus independent
        N(0, std² I) perturbations from ``generator``.

        Args:
            state: ``[*batch, K]`` centre states (e.g. from :meth:`spin_up`).
            n_members: M >= 1.
            std: perturbation standard deviation (>= 0, state units).
            generator: ``torch.Generator`` of the perturbations.

        Returns:
            ``[*batch, M, K]``, the member axis second to last.
        """
        state = self._check_state("state", state)
        n_members = check_int("n_members", n_members, low=1)
        std = check_nonnegative("std", std)
        check_generator(generator)
        shape = (*state.shape[:-1], n_members, self.n_variables)
        noise = torch.randn(shape, generator=generator, dtype=state.dtype, device=state.device)
        return state.unsqueeze(-2) + std * noise

    def lyapunov_exponent(self, x0: torch.Tensor, n_steps: int, *, generator: torch.Generator,
                          renorm_every: int = 10, n_align: int = 0, eps: float = 1e-8) -> torch.Tensor:
        """Leading Lyapunov exponent by two-trajectory renormalisation (Benettin et al., 1980).

        A companion starts at ``x0 + eps·u`` (u a random unit vector from ``generator``); every
        ``renorm_every`` steps the separation d is measured and the companion is pulled back to
        distance ``eps`` along it. After ``n_align`` steps (which let the separation align with the
        leading direction and are not counted),

        .. math:: \\lambda_1 \\approx \\frac{1}{T} \\sum_j \\ln \\frac{d_j}{\\varepsilon},

        T the counted time in MTU. A finite-time estimate: it fluctuates by roughly
        ``sqrt(D / T)`` (D a diffusion constant of the finite-time exponents), so average over a
        batch of starts.

        Args:
            x0: float64 states ``[*batch, K]`` on the attractor (see :meth:`spin_up`).
            n_steps: counted steps (>= 1, a multiple of ``renorm_every``).
            generator: ``torch.Generator`` of the initial separation direction.
            renorm_every: steps between renormalisations (>= 1).
            n_align: uncounted steps first (>= 0, a multiple of ``renorm_every``).
            eps: separation after each renormalisation, in (0, 1e-3] (float64 keeps it resolvable).

        Returns:
            ``[*batch]`` estimates in 1/MTU.
        """
        x = self._check_state("x0", x0)
        if x.dtype != torch.float64:
            raise TypeError(f"x0 must be float64 (the two trajectories differ by eps), got {x.dtype}")
        n_steps = check_int("n_steps", n_steps, low=1)
        renorm_every = check_int("renorm_every", renorm_every, low=1)
        n_align = check_int("n_align", n_align, low=0)
        for name, value in (("n_steps", n_steps), ("n_align", n_align)):
            if value % renorm_every:
                raise ValueError(f"{name} must be a multiple of renorm_every={renorm_every}, got {value}")
        eps = check_real_number("eps", eps, low=0.0, high=1e-3, low_open=True)
        check_generator(generator)
        u = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        y = x + eps * u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        log_growth = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for i in range(1, n_align + n_steps + 1):
            x, y = self._rk4(x), self._rk4(y)
            if i % renorm_every == 0:
                delta = y - x
                d = torch.linalg.vector_norm(delta, dim=-1, keepdim=True)
                if i > n_align:
                    log_growth += torch.log(d.squeeze(-1) / eps)  # Σ_j ln(d_j / ε)
                y = x + delta * (eps / d)
        return log_growth / (n_steps * self.dt)


class ForecastCases(NamedTuple):
    """Result of :func:`forecast_cases` (N cases, M members, L saved leads, K variables)."""

    times: torch.Tensor
    """``[L + 1]`` lead times in MTU, entry 0 being 0."""
    centre: torch.Tensor
    """``[N, K]`` unperturbed initial states (on the truth model's attractor)."""
    truth: torch.Tensor
    """``[L + 1, N, K]`` the truth run of each case, entry 0 its initial state."""
    members: torch.Tensor
    """``[L + 1, N, M, K]`` the ensemble of each case, the member axis second to last."""


def forecast_cases(model: Lorenz96, n_cases: int, n_members: int, n_steps: int, *,
                   generator: torch.Generator, save_every: int = 1, init_std: float = 0.0,
                   noise_std: float = 0.0, truth_model: Lorenz96 | None = None,
                   transient: float = 10.0, dtype: torch.dtype = torch.float64,
                   device: str | torch.device = "cpu") -> ForecastCases:
    """Forecast cases: a truth run and an M-member ensemble from each of N initial states.

    Each case's centre state is spun up on ``truth_model``'s attractor (:meth:`Lorenz96.spin_up`).
    The truth and the M members start from M + 1 independent perturbations of the centre,
    ``x_0 = c + init_std·ξ`` (:meth:`Lorenz96.perturbed_ensemble`), so when ``truth_model`` is
    ``model`` the truth is exchangeable with the members (a calibrated "perfect-model" ensemble).
    The truth runs with ``truth_model`` and the members with ``model`` (a different forcing makes
    a biased model ensemble), both with the stochastic forcing ``noise_std`` (independent draws).

    Draws from ``generator``, in order: the spin-up, the M + 1 perturbations, the truth's noise,
    the members' noise.

    Args:
        model: the members' :class:`Lorenz96`.
        n_cases: N >= 1 initial states.
        n_members: M >= 1 members per case.
        n_steps: RK4 steps of the forecast (>= 0, a multiple of ``save_every``).
        generator: ``torch.Generator`` (on ``device``) of every draw.
        save_every: steps between saved leads (>= 1); the lead interval is ``save_every * dt`` MTU.
        init_std: initial perturbation standard deviation (>= 0, state units).
        noise_std: σ of the stochastic forcing (>= 0, state units per √MTU) of truth and members.
        truth_model: the truth's :class:`Lorenz96` (default ``model``), same K and ``dt``.
        transient: spin-up length in MTU (>= 0).
        dtype, device: of the returned states.

    Returns:
        :class:`ForecastCases` with ``L = n_steps // save_every``.
    """
    for name, value in (("model", model), ("truth_model", model if truth_model is None else truth_model)):
        if not isinstance(value, Lorenz96):
            raise TypeError(f"{name} must be a Lorenz96, got {type(value).__name__}")
    truth_model = model if truth_model is None else truth_model
    if (truth_model.n_variables, truth_model.dt) != (model.n_variables, model.dt):
        raise ValueError(f"truth_model must have the model's n_variables and dt, "
                         f"({model.n_variables}, {model.dt}), got "
                         f"({truth_model.n_variables}, {truth_model.dt})")
    n_cases = check_int("n_cases", n_cases, low=1)
    n_members = check_int("n_members", n_members, low=1)
    n_steps = check_int("n_steps", n_steps, low=0)
    save_every = check_int("save_every", save_every, low=1)
    if n_steps % save_every:
        raise ValueError(f"n_steps must be a multiple of save_every={save_every}, got {n_steps}")
    init_std = check_nonnegative("init_std", init_std)
    noise_std = check_nonnegative("noise_std", noise_std)
    check_generator(generator)
    centre = truth_model.spin_up(n_cases, generator=generator, transient=transient, dtype=dtype,
                                 device=device)
    start = truth_model.perturbed_ensemble(centre, n_members + 1, std=init_std,
                                           generator=generator)  # c + init_std ξ, [N, M + 1, K]
    kwargs = {"save_every": save_every, "noise_std": noise_std,
              "generator": generator if noise_std > 0 else None}
    truth = truth_model.integrate(start[:, 0], n_steps, **kwargs)
    members = model.integrate(start[:, 1:], n_steps, **kwargs)
    times = torch.arange(truth.shape[0], dtype=dtype, device=device) * (save_every * model.dt)
    return ForecastCases(times, centre, truth, members)
