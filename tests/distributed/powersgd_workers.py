"""What the PowerSGD-protocol tests run on each rank (module-level, so ``spawn`` can pickle them)."""

from __future__ import annotations

import torch
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd
from torch.nn.parallel import DistributedDataParallel


def layers() -> torch.nn.Module:
    """A weight 24 × 32 (compressed at rank 4), its bias and a 2 × 24 weight (dense: too small)."""
    return torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.Linear(24, 2, bias=False))


def gradients(rank: int, step: int) -> list[torch.Tensor]:
    """Rank ``rank``'s gradient of every parameter of :func:`layers` at ``step`` (seeded): a fixed
    low-rank-plus-noise matrix per rank, plus a small change from step to step."""
    fixed, moving = torch.Generator().manual_seed(100 + rank), torch.Generator().manual_seed(1000 * rank + step)
    out = []
    for p in layers().parameters():
        base = torch.randn(p.shape, generator=fixed)
        if p.dim() == 2:  # decaying spectrum, so a rank-4 approximation is meaningful
            U, S, V = torch.linalg.svd(base, full_matrices=False)
            base = U @ torch.diag(S * 0.6 ** torch.arange(len(S))) @ V
        out.append(base + 0.05 * torch.randn(p.shape, generator=moving))
    return out


def torch_hook(rank, world_size, steps, start_iter, seed):
    """The mean gradients torch's ``powerSGD_hook`` (rank 4, error feedback, warm start) hands to the
    optimiser in its first ``steps`` PowerSGD iterations."""
    model = DistributedDataParallel(layers())
    state = torch_powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=4,
                                         start_powerSGD_iter=start_iter, min_compression_rate=2,
                                         use_error_feedback=True, warm_start=True, random_seed=seed)
    model.register_comm_hook(state, torch_powersgd.powerSGD_hook)
    out, step = [], 0
    while len(out) < steps:
        model.zero_grad()
        touched = 0.0 * model(torch.zeros(1, 32)).sum()  # DDP prepares its buckets in forward
        loss = sum((p * g).sum() for p, g in zip(model.module.parameters(), gradients(rank, step), strict=True))
        (touched + loss).backward()  # d loss / d p = g
        if state.iter > start_iter:
            out.append([p.grad.detach().clone() for p in model.module.parameters()])
        step += 1
    return out, step - steps
