"""The one training loop: any method of :mod:`commlab.distributed`, its oracle, evaluation on a schedule.

Notebooks and programs call :func:`fit` instead of writing their own loop::

    method = make_method("diloco", comm, model.flat, sync_every=30, inner=adam)

    def oracle(step):                       # the step's minibatch of every local worker
        idx = stacked_batch_indices(shards, step, batch_size, seed=seed)
        return model.loss_and_grad(x[idx], y[idx])          # (loss [L], grads [L, d])

    records = fit(method, oracle, steps=300, every=50, evaluate=lambda step: {"acc": test_accuracy()})

Per-step methods (``method.step(grads)``) get their gradients from ``oracle(step) -> (loss, grads)``;
round methods (``method.round(oracle)``: federated, SPSA) get the oracle itself and call it as often
as they need. Each record holds ``step`` (steps or rounds done), ``loss`` (the mean over the local
workers of the latest step's loss; NaN before the first step and for round methods), the method's
:meth:`~commlab.distributed.method.Method.summary` and what ``evaluate(step)`` returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from commlab._checks import check_int
from commlab.distributed.method import Method


def fit(method: Method, oracle: Callable, steps: int, *, every: int | Iterable[int] = 1,
        evaluate: Callable[[int], dict] | None = None, desc: str | None = None, progress: bool = False) -> list[dict]:
    """Run ``steps`` steps (or rounds) of ``method`` and record it on a schedule.

    Args:
        method: a :class:`~commlab.distributed.method.Method`.
        oracle: per-step methods: ``oracle(step) -> (loss, grads)``, ``step`` 0-based, ``loss`` a number or
            a tensor ``[L]``, ``grads`` ``[L, d]``; round methods: the oracle their ``round`` takes.
        steps: steps (or rounds) to run, >= 0.
        every: record every this many steps (0, ``every``, 2·``every``, … and the last), or the
            collection of steps (0 = before training) after which to record.
        evaluate: ``evaluate(step) -> dict`` of metrics, called at every record, after ``finish()`` at
            the last step.
        desc: label of the progress bar; progress: show one (tqdm) naming ``desc``.

    Returns:
        The records, in order of steps.
    """
    if not isinstance(method, Method):
        raise TypeError(f"method must be a commlab.distributed Method, got {type(method).__name__}")
    if not callable(oracle):
        raise TypeError(f"oracle must be callable, got {type(oracle).__name__}")
    steps = check_int("steps", steps, low=0)
    if isinstance(every, int):
        at = set(range(0, steps + 1, check_int("every", every, low=1))) | {steps}
    else:
        at = {check_int("every (a step)", s, low=0, high=steps) for s in every}
    rounds = callable(getattr(method, "round", None))
    records, loss = [], math.nan

    def record(step: int) -> None:
        entry = {"step": step, "loss": loss, **method.summary()}
        if evaluate is not None:
            entry.update(evaluate(step))
        records.append(entry)

    if 0 in at:
        record(0)
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=desc or type(method).__name__, leave=False)
    for t in iterator:
        if rounds:
            method.round(oracle)
        else:
            step_loss, grads = oracle(t)
            method.step(grads)
            loss = float(torch.as_tensor(step_loss).detach().double().mean())
        if t + 1 == steps:
            method.finish()
        if t + 1 in at:
            record(t + 1)
    return records
