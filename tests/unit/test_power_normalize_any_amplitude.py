"""power_normalize is exact at any amplitude, keeps silent examples silent, and has the right gradient."""

import pytest
import torch

from commlab.channels import PowerNorm, average_power, complex_normal, power_normalize

MODES = ["per_example", "per_batch", "peak"]


def _z(dtype=torch.complex64):
    return complex_normal((3, 64), generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("amplitude", [1e-30, 1e-7, 1.0, 1e15, 1e30])
def test_the_power_is_the_target_at_any_amplitude(mode, amplitude):
    out = power_normalize(_z() * amplitude, 2.0, mode)
    assert torch.allclose(average_power(out, mode).double(), torch.tensor(2.0, dtype=torch.float64), rtol=1e-6)
    # and the direction is the input's
    assert torch.allclose(out, power_normalize(_z(), 2.0, mode), rtol=1e-5, atol=1e-6)


def test_an_all_zero_example_stays_zero_and_the_others_are_normalised():
    z = _z()
    z[1] = 0
    out = PowerNorm()(z)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.allclose(average_power(out)[[0, 2]], torch.ones(2), rtol=1e-6)


def test_gradient_matches_finite_differences():
    x = torch.randn(3, 16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    for mode in MODES:
        f = lambda x, mode=mode: power_normalize(torch.view_as_complex(x) * 1e-9, 1.5, mode).abs().pow(3).sum()  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,))


def test_refusals():
    with pytest.raises(TypeError):
        power_normalize(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mode"):
        power_normalize(_z(), mode="rms")
    with pytest.raises(ValueError, match="power"):
        power_normalize(_z(), power=0.0)
