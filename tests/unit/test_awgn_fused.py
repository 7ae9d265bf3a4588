"""The fused AWGN path (noise scaled in place) gives bit for bit the draws and outputs of the plain formula
``y = x + w·sqrt(N0)``, ``w = (a + ib)/sqrt(2)`` with ``(a, b)`` the generator's standard normal pairs."""

import pytest
import torch

from commlab import channels as ch


def reference(x, no, seed, *, real=False):
    """The unfused construction: draw, scale by 1/sqrt(2) (complex), multiply by sqrt(N0) as a complex number."""
    g = torch.Generator().manual_seed(seed)
    if real:
        return x + torch.randn(x.shape, generator=g, dtype=x.dtype) * torch.sqrt(no)
    real_dtype = torch.float64 if x.dtype == torch.complex128 else torch.float32
    w = torch.view_as_complex(torch.randn(x.shape + (2,), generator=g, dtype=real_dtype)) * (0.5**0.5)
    return x + w * torch.sqrt(no).to(real_dtype).to(x.dtype)


def signal(dtype, shape=(6, 3000)):
    g = torch.Generator().manual_seed(123)
    return ch.power_normalize(ch.complex_normal(shape, generator=g, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_awgn_is_bit_identical_to_the_unfused_formula(dtype):
    x = signal(dtype)
    for snr_db in (-10.0, 0.0, 7.0, 30.0):
        channel = ch.AWGN(snr_db)
        y = channel(x, generator=torch.Generator().manual_seed(5))
        assert y.dtype == dtype
        assert torch.equal(y, reference(x, channel.noise_variance(x), 5)), snr_db


def test_per_example_snr_and_explicit_no_are_bit_identical():
    x = signal(torch.complex64)
    snr = torch.tensor([-5.0, 0.0, 5.0, 10.0, 20.0, 25.0])
    channel = ch.AWGN(0.0)
    y = channel(x, generator=torch.Generator().manual_seed(9), snr_db=snr)
    no = channel.noise_variance(x, snr)
    assert no.shape == (6, 1) and torch.allclose(no[:, 0], torch.pow(10.0, -snr / 10.0))
    assert torch.equal(y, reference(x, no, 9))
    y = ch.AWGN(no=0.37)(x, generator=torch.Generator().manual_seed(9))
    assert torch.equal(y, reference(x, torch.tensor(0.37), 9))


def test_real_mode_is_bit_identical():
    x = torch.randn(4, 5000, generator=torch.Generator().manual_seed(1))
    channel = ch.AWGN(6.0, real=True)
    y = channel(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(y, reference(x, channel.noise_variance(x), 2, real=True))


def test_complex_normal_values_are_the_scaled_pairs():
    z = ch.complex_normal((3, 1000), generator=torch.Generator().manual_seed(4))
    pairs = torch.randn((3, 1000, 2), generator=torch.Generator().manual_seed(4))
    assert torch.equal(z, torch.view_as_complex(pairs) * (0.5**0.5))


def test_fused_path_keeps_the_input_and_its_gradient():
    x = signal(torch.complex64, (2, 50)).requires_grad_(True)
    before = x.detach().clone()
    y = ch.AWGN(10.0)(x, generator=torch.Generator().manual_seed(0))
    y.real.sum().backward()
    assert torch.equal(x.detach(), before)
    assert torch.equal(x.grad, torch.ones_like(x.grad, dtype=x.grad.dtype))
