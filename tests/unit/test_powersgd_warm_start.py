"""Warm-started PowerSGD against PyTorch's own ``powerSGD_hook`` (issue 18, item 1).

The hook runs inside a one-rank gloo DDP on a bias-free linear layer whose gradient is a fixed
matrix G at every step, with error feedback off so that both see the same input. Both draw the
first Q from the same seed (the hook: ``torch.manual_seed`` of the first ``randint`` of
``numpy.random.RandomState(random_seed)``), then reuse Q' as the next Q. The hook orthonormalises
Q before each use and commlab does not; the approximation P̂P̂ᵀM does not depend on Q's basis, only
on its span, so the two agree to float32 rounding.
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd
from torch.nn.parallel import DistributedDataParallel

from commlab.compress import PowerSGD

N, M, RANK, SEED, STEPS = 24, 32, 4, 0, 6


def _gradient() -> torch.Tensor:
    """A fixed ``[N, M]`` matrix with a decaying spectrum plus noise (seeded)."""
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(N, N, generator=g))
    V, _ = torch.linalg.qr(torch.randn(M, N, generator=g))
    spectrum = 0.7 ** torch.arange(N, dtype=torch.float32)
    return (U * spectrum) @ V.T + 0.01 * torch.randn(N, M, generator=g)


def _hook_approximations(G: torch.Tensor, steps: int, tmp_path) -> list[torch.Tensor]:
    """The gradients torch's hook hands to the optimiser in its first ``steps`` PowerSGD iterations."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        layer = torch.nn.Linear(M, N, bias=False)  # weight [N, M]
        ddp = DistributedDataParallel(layer)
        state = torch_powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=RANK,
                                             start_powerSGD_iter=2, min_compression_rate=0.5,
                                             use_error_feedback=False, warm_start=True, random_seed=SEED)
        ddp.register_comm_hook(state, torch_powersgd.powerSGD_hook)
        out = []
        while len(out) < steps:
            ddp.zero_grad()
            (ddp(torch.eye(M)) * G.T).sum().backward()  # d/dW sum(W ∘ G) = G
            if state.iter > state.start_powerSGD_iter:  # the first iterations are plain all-reduces
                out.append(layer.weight.grad.detach().clone())
            else:
                torch.testing.assert_close(layer.weight.grad, G)
        return out
    finally:
        dist.destroy_process_group()


def _relative_error(approx: torch.Tensor, G: torch.Tensor) -> float:
    return float(torch.linalg.norm(G - approx) / torch.linalg.norm(G))


def test_warm_started_powersgd_follows_torchs_hook_from_the_same_start_and_reaches_the_best_rank_r(tmp_path):
    G = _gradient()
    hooked = _hook_approximations(G, STEPS, tmp_path)
    first_seed = int(np.random.RandomState(SEED).randint(1_000_000_000))
    generator = torch.Generator().manual_seed(first_seed)
    compressor = PowerSGD(RANK, matrix=(N, M), warm_start=True)
    ours = [compressor(G.flatten(), generator).reshape(N, M) for _ in range(STEPS)]
    for step, (a, b) in enumerate(zip(ours, hooked, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"step {step}")
    optimum = float(torch.linalg.svdvals(G)[RANK:].square().sum().sqrt() / torch.linalg.norm(G))
    errors = [_relative_error(a, G) for a in ours]
    assert errors[0] > optimum * 1.01  # one step of subspace iteration from a random Q is not yet optimal
    assert errors[-1] == pytest.approx(_relative_error(hooked[-1], G), rel=0.02)
    assert errors[-1] <= optimum * 1.001  # five warm steps reach the best rank-r approximation
    assert all(b <= a + 1e-6 for a, b in zip(errors[:-1], errors[1:], strict=True))


def test_without_warm_start_every_call_draws_a_fresh_q_and_stays_far_from_the_optimum():
    G = _gradient().flatten()
    cold = PowerSGD(RANK, matrix=(N, M))
    generator = torch.Generator().manual_seed(0)
    errors = [_relative_error(cold(G, generator), G) for _ in range(STEPS)]
    optimum = float(torch.linalg.svdvals(G.reshape(N, M))[RANK:].square().sum().sqrt() / torch.linalg.norm(G))
    assert min(errors) > optimum * 1.01 and cold.state_dict() == {}


def test_the_warm_q_is_state_that_checkpoints_resets_and_is_kept_per_shape():
    G = _gradient().flatten()
    warm = PowerSGD(RANK, matrix=(N, M), warm_start=True)
    generator = torch.Generator().manual_seed(1)
    warm(G, generator)
    saved = warm.state_dict()
    assert list(saved) == [f"1x{N}x{M}x{RANK}"] and saved[f"1x{N}x{M}x{RANK}"].shape == (1, M, RANK)
    expected = warm(G, generator)
    restored = PowerSGD(RANK, matrix=(N, M), warm_start=True)
    restored.load_state_dict(saved)
    torch.testing.assert_close(restored(G, torch.Generator().manual_seed(99)), expected, rtol=0, atol=0)
    stacked = torch.stack([G, 2 * G])  # two worker rows: their own Q each, under a key of their own
    warm(stacked, generator)
    assert sorted(warm.state_dict()) == [f"1x{N}x{M}x{RANK}", f"2x{N}x{M}x{RANK}"]
    warm.reset()
    assert warm.state_dict() == {}
    with pytest.raises(ValueError, match="not a Q of shape"):
        restored.load_state_dict({f"1x{N}x{M}x{RANK}": torch.zeros(M, RANK)})
    with pytest.raises(TypeError, match="warm_start must be a bool"):
        PowerSGD(RANK, warm_start=1)
