"""Byzantine-robust data-parallel SGD: every worker's gradient crosses the wire, a robust rule aggregates.

One step of :class:`RobustSGD` (a parameter server replicated on every worker, as in the Flag
Aggregator paper's setup of 15 workers and one server)::

    G = all_gather(g)                        g [L, d] -> G [N, d]; each worker sends its d values
    G = attack(G, f, generator)              the last f rows become what the Byzantine workers send
    a = aggregator(G)                        [d], any rule of commlab.distributed.robust
    m ← μ m + a;   θ ← θ − η m               momentum after aggregation; every replica takes this step

Byzantine workers attack the **message only**: they hold the same model as everyone else (every row of
``params`` takes the same step), compute their honest gradient and replace what they send. The attack's
draws come from ``SeedTree(seed).torch("attack", step)``, so every rank of a real run forges the same
messages and applies the same update. Data-level attacks (label noise,
:func:`~commlab.distributed.robust.flip_labels`) belong to the caller's minibatches instead.

The meter counts the all-gather: d values of the gradients' dtype per worker per step (a parameter server
would receive the same uplink and broadcast the d-value aggregate back).

:func:`fit_side_by_side` trains several methods whose replicas are consecutive row blocks of one stacked
model with one gradient call per step, so that a comparison of aggregators costs one batched backward
pass per step instead of one per aggregator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from commlab._checks import check_choice, check_int, check_probability, check_seed
from commlab.comm import Communicator
from commlab.distributed.method import Method, StepSchedule, check_schedule, schedule_at
from commlab.distributed.robust import Aggregator, Attack
from commlab.seeding import SeedTree


class RobustSGD(Method):
    """Data-parallel SGD with heavy-ball momentum on a robust aggregate of the N workers' gradients.

    Args:
        comm: the communicator (N workers).
        params: ``[L, d]`` floating parameters of the local replicas, changed in place (all rows equal
            after the initial broadcast, and they stay equal).
        aggregator: a :class:`~commlab.distributed.robust.Aggregator` (``[N, d] -> [d]``).
        lr: learning rate η > 0, a number or a function of the 0-based step.
        momentum: μ in [0, 1); m ← μ m + a, θ ← θ − η m (``torch.optim.SGD``'s form, dampening 0).
        attack: an :class:`~commlab.distributed.robust.Attack` the Byzantine workers run, or None.
        byzantine: f, the number of Byzantine workers (the last f of the N); needs an attack when > 0.
        seed: root of the attack's draws, ``SeedTree(seed).torch("attack", step)``.
        nonfinite: what a step does when an honest gradient holds NaN or Inf (the model has diverged):
            ``"raise"`` a ValueError, or ``"skip"`` the update (the messages are still sent and metered);
            :attr:`skipped` counts the skipped steps.
        step_seconds: simulated computation time of one step (s).
        sync_init: broadcast worker 0's parameters first (an ``"init"`` event), so all replicas start equal.
    """

    def __init__(self, comm: Communicator, params: torch.Tensor, *, aggregator: Aggregator, lr: StepSchedule,
                 momentum: float = 0.9, attack: Attack | None = None, byzantine: int = 0, seed: int = 0,
                 nonfinite: str = "raise", step_seconds: float = 0.0, sync_init: bool = True):
        super().__init__(comm, params, step_seconds=step_seconds)
        if not isinstance(aggregator, Aggregator):
            raise TypeError("aggregator must be a commlab.distributed.robust Aggregator, "
                            f"got {type(aggregator).__name__}")
        if attack is not None and not isinstance(attack, Attack):
            raise TypeError(f"attack must be a commlab.distributed.robust Attack or None, got {type(attack).__name__}")
        self.aggregator = aggregator
        self.attack = attack
        self.byzantine = check_int("byzantine", byzantine, low=0, high=comm.world_size - 1)
        if self.byzantine > 0 and attack is None:
            raise ValueError(f"byzantine = {self.byzantine} workers need an attack to run")
        self.lr = check_schedule("lr", lr)
        self.momentum = check_probability("momentum", momentum)
        if self.momentum == 1.0:
            raise ValueError("momentum must be in [0, 1), got 1.0")
        self.seeds = SeedTree(check_seed(seed))
        self.nonfinite = check_choice("nonfinite", nonfinite, ("raise", "skip"))
        self.skipped = 0
        self.buffer = torch.zeros(self.d, dtype=params.dtype, device=params.device)   # m
        if sync_init:
            with torch.no_grad():
                params.copy_(self._run("init", comm.broadcast, params.detach(), 0).wait())

    def step(self, grads: torch.Tensor):
        """One step on the local workers' honest gradients ``grads`` ``[L, d]``; returns the SyncEvent."""
        grads = self._check_grads(grads, finite=self.nonfinite == "raise")
        sent = self.comm.meter.bytes_sent.clone()
        start = self.comm.clock
        messages = self.comm.all_gather(grads).wait()                              # G [N, d]
        if bool(torch.isfinite(messages).all()):                                   # the same on every rank
            if self.attack is not None and self.byzantine > 0:
                messages = self.attack(messages, self.byzantine, self.seeds.torch("attack", self.steps))
            aggregate = self.aggregator(messages)                                  # a = AGG(G)
            with torch.no_grad():
                self.buffer.mul_(self.momentum).add_(aggregate)                    # m ← μ m + a
                self.params.sub_(schedule_at("lr", self.lr, self.steps) * self.buffer)  # θ ← θ − η m
        else:
            self.skipped += 1
        self._record("sync", sent, start, self.comm.clock, None, None)
        self.steps += 1
        self.comm.advance(self.step_seconds)
        return self.events[-1]

    def _state(self) -> dict:
        return {"buffer": self.buffer.clone(), "skipped": self.skipped}

    def _load(self, state: dict) -> None:
        buffer = state["buffer"]
        if not isinstance(buffer, torch.Tensor) or buffer.shape != self.buffer.shape:
            raise ValueError(f"the state's momentum buffer must have shape {tuple(self.buffer.shape)}")
        self.buffer.copy_(buffer)
        self.skipped = check_int("skipped", state["skipped"], low=0)


def fit_side_by_side(methods: Sequence[Method], oracle: Callable, steps: int, *, every: int = 1,
                     evaluate: Callable[[int], Sequence[dict]] | None = None) -> list[dict]:
    """Train per-step methods side by side, one oracle call per step for all of them.

    Method k owns rows ``o_k : o_k + L_k`` of the stacked gradients, in the order given (o_0 = 0,
    o_{k+1} = o_k + L_k): build them on consecutive row blocks of one stacked model's parameters, e.g.
    ``model.flat[k * N:(k + 1) * N]``.

    Args:
        methods: per-step methods (each with ``step(grads [L_k, d])``).
        oracle: ``oracle(step) -> (loss [K], grads [K, d])``, K = Σ_k L_k, ``step`` 0-based.
        steps: steps to run, >= 0.
        every: record at steps 0, ``every``, 2·``every``, … and the last.
        evaluate: ``evaluate(step) -> [dict per method]`` of metrics, called at every record.

    Returns:
        Records in order of (step, method): ``method`` (its index), ``step``, ``loss`` (the mean over the
        method's rows of the latest step's loss; NaN before the first step), its ``summary()`` and its
        entry of ``evaluate(step)``.
    """
    methods = list(methods)
    if not methods or not all(isinstance(m, Method) for m in methods):
        raise TypeError("methods must be a non-empty sequence of commlab.distributed Methods")
    if not callable(oracle):
        raise TypeError(f"oracle must be callable, got {type(oracle).__name__}")
    steps = check_int("steps", steps, low=0)
    at = set(range(0, steps + 1, check_int("every", every, low=1))) | {steps}
    bounds = torch.tensor([0] + [m.params.shape[0] for m in methods]).cumsum(0).tolist()
    losses = [float("nan")] * len(methods)
    records: list[dict] = []

    def record(step: int) -> None:
        metrics = list(evaluate(step)) if evaluate is not None else [{}] * len(methods)
        if len(metrics) != len(methods):
            raise ValueError(f"evaluate must return one dict per method ({len(methods)}), got {len(metrics)}")
        for k, method in enumerate(methods):
            records.append({"method": k, "step": step, "loss": losses[k], **method.summary(), **metrics[k]})

    if 0 in at:
        record(0)
    for t in range(steps):
        loss, grads = oracle(t)
        if grads.shape[0] != bounds[-1]:
            raise ValueError(f"the oracle gave {grads.shape[0]} gradient rows, the methods hold {bounds[-1]}")
        loss = torch.as_tensor(loss).detach().double()
        if tuple(loss.shape) != (bounds[-1],):
            raise ValueError(f"the oracle's loss must have shape [{bounds[-1]}], got {tuple(loss.shape)}")
        for k, method in enumerate(methods):
            method.step(grads[bounds[k]:bounds[k + 1]])
            losses[k] = float(loss[bounds[k]:bounds[k + 1]].mean())
        if t + 1 == steps:
            for method in methods:
                method.finish()
        if t + 1 in at:
            record(t + 1)
    return records
