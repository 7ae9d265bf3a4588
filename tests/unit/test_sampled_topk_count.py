"""SampledTopK keeps a number of entries that varies by row, so each row sends that count first: a
32-bit ``"count"`` part, counted in the bits and in the bytes (issue 18, item 4)."""

import math

import pytest
import torch

from commlab.comm import SimComm
from commlab.compress import Payload, SampledTopK
from commlab.compress.ef import EF14
from commlab.compress.payload import index_width
from commlab.distributed.compressed import compressed_round


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rows_with_varying_counts(W=4, d=3000, seed=0):
    # rows of very different scales make the sampled thresholds land differently, so counts differ
    return torch.randn(W, d, generator=gen(seed)) * torch.logspace(0, 2, W)[:, None]


@pytest.mark.parametrize("dtype, width", [(torch.float32, 32), (torch.float64, 64)])
def test_every_row_pays_32_count_bits_plus_its_values_and_indices(dtype, width):
    d = 3000
    compressor = SampledTopK(0.05, sample_ratio=0.02, adapt_steps=0)  # one-shot threshold: counts vary
    payload = compressor.compress(rows_with_varying_counts(d=d).to(dtype), gen(1))
    counts = payload["indices"].counts
    assert len(set(counts)) > 1  # the rows really keep different numbers
    assert payload["count"].data.tolist() == list(counts) and payload["count"].width == 32
    expected = tuple(32 + c * width + min(c * index_width(d), d) for c in counts)
    assert payload.row_bits == expected
    assert len(payload.to_bytes()) == math.ceil(sum(expected) / 8)
    back = Payload.from_bytes(payload.to_bytes(), payload.header)
    assert torch.equal(compressor.decompress(back), compressor.decompress(payload))


def test_one_row_sends_its_count_too():
    x = torch.randn(5000, generator=gen(2))
    payload = SampledTopK(0.01, sample_ratio=0.1).compress(x, gen(3))
    c = payload["indices"].counts[0]
    assert payload["count"].data.tolist() == [c]
    assert payload.bits == 32 + c * 32 + min(c * index_width(5000), 5000)


def test_compressed_round_on_simcomm_aggregates_sampled_topk_payloads_of_different_sizes():
    W, d = 4, 3000
    compressor = SampledTopK(0.05, sample_ratio=0.02, adapt_steps=0)
    g = rows_with_varying_counts(W, d, seed=4)
    comm = SimComm(W)
    estimate, payload = compressed_round(comm, EF14(compressor), g, gen(5))
    assert len(set(payload["indices"].counts)) > 1
    # the same draws outside the round: EF14's first message is g itself, its server vector the mean
    alone = compressor.decompress(compressor.compress(g, gen(5)))
    assert torch.equal(estimate, alone.mean(dim=0))
    assert payload.row_bits == tuple(32 + c * (32 + index_width(d)) for c in payload["indices"].counts)
