"""commlab's PowerSGD DDP scheme against PyTorch's own ``powerSGD_hook`` on the same model.

Two identical DDP models of the compressed-DDP notebook's SmallCNN (d = 114,314) in a one-rank gloo
group, one with torch's ``powerSGD_hook`` (rank 2, warm start, error feedback, minimum compression
rate 2) and one with commlab's ``powersgd`` scheme (the same protocol) through
``commlab.distributed.ddp_hook``; for comparison a third uses commlab's generic
``EF14(PowerSGD(2))`` on the whole flat bucket (its former scheme). All see the same batches with
the parameters fixed, so the true gradient of each step is known. Printed: each hook's bits per
step, the relative error ‖ĝ − g‖/‖g‖ of its estimate averaged over the PowerSGD steps (error
feedback makes the later steps better than the first), and the best time of one forward and
backward pass with the hook, as a ratio to torch's hook.

    .venv/bin/python benchmarks/powersgd.py [--threads 1] [--repeats 5] [--steps 30] [--smoke]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from _common import best_time, parse_args
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd
from torch.nn.parallel import DistributedDataParallel

from commlab.compress import PowerSGD
from commlab.compress.ef import EF14
from commlab.distributed.ddp_hook import register_compression
from commlab.distributed.schemes import gradient_scheme
from commlab.train.ddp import TrainConfig, make_model

START = 2  # both hooks reduce densely for the first iterations (DDP rebuilds its buckets after the first)


def _models(rank: int) -> dict[str, tuple[DistributedDataParallel, object]]:
    models = {}
    ddp = DistributedDataParallel(make_model(TrainConfig()))
    state = torch_powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=rank, start_powerSGD_iter=START,
                                         min_compression_rate=2, use_error_feedback=True, warm_start=True)
    ddp.register_comm_hook(state, torch_powersgd.powerSGD_hook)
    models["torch powerSGD_hook"] = (ddp, state)
    for name, factory in (("commlab powersgd", functools.partial(gradient_scheme, "powersgd", rank=rank)),
                          ("commlab EF14(PowerSGD) whole bucket", functools.partial(EF14, PowerSGD(rank)))):
        ddp = DistributedDataParallel(make_model(TrainConfig()))
        models[name] = (ddp, register_compression(ddp, factory, seed=0, start_iter=START))
    return models


def _batch(step: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return torch.randn(size, 1, 28, 28, generator=generator), torch.randint(10, (size,), generator=generator)


def _backward(ddp: DistributedDataParallel, step: int) -> torch.Tensor:
    x, y = _batch(step)
    ddp.zero_grad(set_to_none=True)
    F.cross_entropy(ddp(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in ddp.module.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parse_args(parser, threads=1, repeats=5)
    steps = 4 if args.smoke else args.steps
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'store'}", rank=0, world_size=1)
        try:
            models = _models(args.rank)
            truth = DistributedDataParallel(make_model(TrainConfig()))  # plain DDP: the exact gradient
            errors = {name: [] for name in models}
            for step in range(steps):
                g = _backward(truth, step)
                for name, (ddp, _) in models.items():
                    estimate = _backward(ddp, step)
                    if step >= START:
                        errors[name].append(float(torch.linalg.norm(estimate - g) / torch.linalg.norm(g)))
            # bits per compressed step: commlab's meter (less the dense warm-up), torch's compression stats
            bits = {name: (8 * state.meter.bytes_sent[0].item() - START * 32 * g.numel()) / (steps - START)
                    if hasattr(state, "meter") else 32 * state.compression_stats()[2] / (steps - START)
                    for name, (_, state) in models.items()}
            times = {name: best_time(functools.partial(_backward, ddp, steps), args.repeats)
                     for name, (ddp, _) in models.items()}
        finally:
            dist.destroy_process_group()
    reference = "torch powerSGD_hook"
    print(f"SmallCNN d = {g.numel():,}, rank {args.rank}, {steps} steps ({steps - START} compressed), "
          f"{args.threads} thread(s), best of {args.repeats}")
    for name in models:
        mean_error = sum(errors[name]) / len(errors[name])
        print(f"  {name:38s} {bits[name]:10,.0f} bits/step   mean relative error {mean_error:.4f}   "
              f"{times[name] * 1e3:7.2f} ms per forward+backward")
    ours, theirs = errors["commlab powersgd"], errors[reference]
    print(f"error ratio: {(sum(ours) / sum(theirs)):.3f}x (commlab powersgd / torch's hook, the same bits)")
    print(f"time ratio: {times['commlab powersgd'] / times[reference]:.2f}x per step (commlab powersgd / torch's hook)")


if __name__ == "__main__":
    main()
