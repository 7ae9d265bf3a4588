"""1-bit Adam's total volume against an fp32 all-reduce: the accounting identity behind the paper's
"up to 5x" (moved out of the 1-bit Adam notebook's claims in issue 16: ``onebit-volume`` and
``onebit-volume.at-least-4x``). The meter of a real run must charge exactly 4d bytes per warm-up step and
ceil(d/8) + 4 plus ceil(c/8) + 4 bytes per compressed step, which gives 1 / (w + (1 - w) / r)."""

import math

import pytest
import torch

from commlab.comm import SimComm
from commlab.distributed.onebit_adam import OneBitAdam, chunk_size


@pytest.mark.parametrize("W, d", [(4, 203_530), (3, 1_001)])  # the notebook's MLP 784-256-10; a padded chunk
def test_total_volume_is_the_warmup_in_fp32_plus_one_bit_per_coordinate_each_way(W, d):
    steps, freeze = 7, 1  # a 14 % warm-up
    comm = SimComm(W)
    params = torch.zeros(W, d)
    opt = OneBitAdam(comm, params, lr=1e-3, freeze_step=freeze)
    g = torch.Generator().manual_seed(0)
    per_step = []
    for _ in range(steps):
        before = comm.meter.bytes_sent.clone()
        opt.step(torch.randn(W, d, generator=g))
        per_step.append(comm.meter.bytes_sent - before)
    compressed = math.ceil(d / 8) + 4 + math.ceil(chunk_size(d, W) / 8) + 4
    for t, sent in enumerate(per_step):
        assert torch.equal(sent, torch.full((W,), float(4 * d if t < freeze else compressed), dtype=sent.dtype))
    total = float(comm.meter.bytes_sent[0])
    assert total == freeze * 4 * d + (steps - freeze) * compressed
    ratio = steps * 4 * d / total  # bytes(Adam) / bytes(1-bit Adam) over the run
    w, r = freeze / steps, 4 * d / compressed
    assert ratio == pytest.approx(1 / (w + (1 - w) / r))
    if d > 10_000:  # the notebook's size: d/8 bytes up and d/(8W) back, ~25x at W = 4 per compressed step,
        assert r == pytest.approx(32 / (1 + 1 / W), rel=0.01)  # and the total is close to the paper's "up to 5x"
        assert 4.0 <= ratio <= 6.5
