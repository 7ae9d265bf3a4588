"""Every algorithm reproduces its recorded regression trace bit for bit (see regression_cases.py)."""

from pathlib import Path

import pytest
import torch
from regression_cases import CASES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "regression"


def test_every_case_has_a_fixture_and_every_fixture_a_case():
    assert sorted(p.stem for p in FIXTURES.glob("*.pt")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_trace_is_bit_identical_to_the_fixture(name):
    torch.set_num_threads(1)
    expected = torch.load(FIXTURES / f"{name}.pt")
    got = CASES[name]()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m, key=key: f"{name}, {key}: {m}")
