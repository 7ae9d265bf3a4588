"""The finite-input check of every compressor reads x.sum() once and looks entry by entry only when
that sum is not finite, so finite input whose sum overflows still compresses and NaN/Inf never does."""

import pytest
import torch

from commlab.compress import Identity, TopK

BIG = torch.finfo(torch.float32).max


@pytest.mark.parametrize("x", [
    torch.tensor([BIG, BIG, 1.0]),  # the sum overflows to Inf, every entry is finite
    torch.tensor([[BIG, -1.0], [BIG, 2.0]]),
    torch.full((70_000,), 60_000.0, dtype=torch.float16),  # an fp16 sum far beyond 65504
], ids=["float32-overflow", "rows-overflow", "fp16-overflow"])
def test_finite_input_whose_sum_overflows_compresses(x):
    assert torch.equal(Identity()(x), x)
    assert TopK(k=1).compress(x)["values"].data.numel() == x.reshape(-1, x.shape[-1]).shape[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_anywhere_is_refused(bad):
    for x in (torch.tensor([1.0, bad, 2.0]), torch.tensor([[1.0, 2.0], [bad, 3.0]]), torch.tensor([BIG, BIG, bad])):
        with pytest.raises(ValueError, match="NaN or Inf"):
            Identity().compress(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        Identity().compress(torch.tensor([float("inf"), -float("inf")]))  # the sum is NaN, not Inf
