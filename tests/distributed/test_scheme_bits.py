"""The wire size of each named gradient scheme on the compressed-DDP notebook's model (SmallCNN,
d = 114,314, one bucket): exact bit counts (conventions §5: values + indices + scales), and every
compressed scheme below a tenth of the dense bytes — the notebook's former claim ``compressed-bytes``."""

import math

import pytest
import torch

from commlab.distributed.powersgd import PowerSGDReducer
from commlab.distributed.schemes import SCHEMES, gradient_scheme
from commlab.train.ddp import TrainConfig, make_model

D = 114_314
SHAPES = [tuple(p.shape) for p in make_model(TrainConfig()).parameters()]


def _bits(name: str, d: int, **kw) -> int:
    scheme = gradient_scheme(name, **kw)
    if isinstance(scheme, PowerSGDReducer):
        return scheme.bits(SHAPES)
    payload = scheme.compressor.compress(torch.randn(1, d, generator=torch.Generator().manual_seed(0)),
                                         torch.Generator().manual_seed(1))
    return int(payload.row_bits[0])


def test_the_notebook_model_has_the_stated_size():
    assert sum(p.numel() for p in make_model(TrainConfig()).parameters()) == D


@pytest.mark.parametrize("name, expected", [
    ("none", 32 * D),
    ("topk", 32 * math.ceil(0.01 * D) + min(math.ceil(0.01 * D) * math.ceil(math.log2(D)), D)),  # 56,056
    # per layer at rank 2, fp32: conv1 16 × 25, conv2 32 × 400, fc1 64 × 1568, fc2 10 × 64 as (n + m)·2
    # factor values; the four biases (16 + 32 + 64 + 10 values) dense: they fail the minimum compression rate
    ("powersgd", 32 * (2 * (16 + 25 + 32 + 400 + 64 + 1568 + 10 + 64) + 122)),
    ("sign", D + 32),  # one sign bit a value and one fp32 scale
])
def test_each_scheme_sends_its_bit_count(name, expected):
    assert _bits(name, D, ratio=0.01, rank=2) == expected


def test_every_compressed_scheme_sends_under_a_tenth_of_the_dense_bytes():
    dense = math.ceil(_bits("none", D) / 8)
    assert dense == 457_256
    sent = {name: math.ceil(_bits(name, D, ratio=0.01, rank=2) / 8) for name in SCHEMES if name != "none"}
    assert sent == {"topk": 7_007, "powersgd": 17_920, "sign": 14_294}
    assert max(sent.values()) / dense <= 0.1
