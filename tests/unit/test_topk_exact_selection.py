"""TopK's exact selection (issue 18, item 7): the one-pass long-row path (block maxima, a sampled
threshold, the exact top-k among the candidates) selects exactly the set of a stable full sort,
ties to the lower position, for random rows, ties, all-equal rows, k = 1, k = d / 64, a shorter last
block, several rows, and an unlucky sample; NaN and Inf are refused inside the pass."""

import pytest
import torch

from commlab.compress import TopK, sparsify
from commlab.compress.sparsify import top_indices

D = 1 << 17  # long enough for the one-pass path (d >= 65536)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def stable_top(x: torch.Tensor, k: int) -> torch.Tensor:
    """The reference: the first k of a stable descending sort of |x|, ascending positions."""
    return x.abs().sort(descending=True, stable=True).indices[:k].sort().values


def check(x: torch.Tensor, k: int) -> None:
    expected = stable_top(x, k)
    fast = sparsify._top_indices_long_row(x, k)
    assert fast is not None, "the one-pass path gave up"
    assert torch.equal(fast, expected)
    assert torch.equal(top_indices(x[None], k)[0], expected)
    assert torch.equal(TopK(k=k).compress(x)["indices"].data, expected)


@pytest.mark.parametrize("k", [1, 2, 17, 300, D // 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_random_rows_select_exactly_the_stable_sort(k, dtype):
    for seed in range(3):
        check(torch.randn(D, generator=gen(seed), dtype=dtype), k)


@pytest.mark.parametrize("k", [1, 64, 2048])
def test_ties_at_the_kth_place_go_to_the_lower_positions(k):
    x = torch.randn(D, generator=gen(k))
    kth = x.abs().sort(descending=True).values[k - 1]
    x[5000:5100:3] = kth  # ties inside blocks and across blocks, both signs
    x[90_001:90_033] = -kth
    x[D - 7 :] = kth
    check(x, k)


def test_all_equal_magnitudes_keep_the_first_k_positions():
    x = torch.full((D,), 0.5)
    x[1::2] = -0.5
    for k in (1, 1000, D // 64):
        check(x, k)
        assert torch.equal(sparsify._top_indices_long_row(x, k), torch.arange(k))


def test_rows_of_few_distinct_values_and_zeros():
    x = torch.zeros(D)
    x[torch.randperm(D, generator=gen(3))[:500]] = torch.tensor([1.0, -2.0, 3.0, -3.0, 2.0]).repeat(100)
    for k in (1, 99, 100, 101, 500, D // 64):  # k > 500 also takes zeros, the lowest positions first
        check(x, k)


@pytest.mark.parametrize("d", [D + 1, D + 63, D + 65, 3 * D + 17])
def test_a_shorter_last_block_is_searched_too(d):
    x = torch.randn(d, generator=gen(d))
    x[-1] = 50.0  # the largest value sits in the last, shorter block
    x[-3] = -49.0
    for k in (1, 2, 3, 100):
        check(x, k)


def test_several_long_rows_at_once_match_row_by_row():
    x = torch.randn(3, D, generator=gen(9)) * torch.tensor([[1.0], [1e-3], [1e3]])
    x[1, :64] = 0.0
    got = top_indices(x, 128)
    assert torch.equal(got, torch.stack([stable_top(row, 128) for row in x]))
    payload = TopK(k=128).compress(x)
    assert torch.equal(payload["indices"].data.reshape(3, 128), got)


def test_an_unlucky_sample_gives_up_and_top_indices_stays_exact():
    d, k = D, 1024
    blocks = -(-sparsify._SAMPLE_HITS * d // (k * sparsify._SAMPLE_BLOCK))
    starts = torch.linspace(0, d - sparsify._SAMPLE_BLOCK, blocks).long()
    sampled = (starts[:, None] + torch.arange(sparsify._SAMPLE_BLOCK)).reshape(-1)
    x = torch.linspace(1e-3, 0, d)
    x[sampled] = torch.linspace(10, 1, sampled.numel())  # only the sampled blocks are large
    assert sparsify._top_indices_long_row(x, k) is None
    assert torch.equal(top_indices(x[None], k)[0], stable_top(x, k))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_a_long_row_is_refused_by_the_pass(bad):
    x = torch.randn(D, generator=gen(1))
    x[D // 2 + 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        TopK(k=10).compress(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        sparsify._top_indices_long_row(x, 10)


def test_block_maxima_are_the_largest_magnitude_of_each_block():
    x = torch.randn(10 * sparsify._BLOCK + 5, generator=gen(2))
    padded = torch.cat([x.abs(), torch.zeros(sparsify._BLOCK - 5)]).view(-1, sparsify._BLOCK)
    assert torch.equal(sparsify._block_maxima(x), padded.amax(dim=1))
