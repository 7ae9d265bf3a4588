"""Live cross-check of commlab's channel conventions (conventions §4, test 7) against NVIDIA Sionna 2.2."""

import math

import pytest
import torch

import commlab.channels as ch
from commlab.semcom.sionna_import import import_sionna_phy, preserved_torch_rng

phy = import_sionna_phy()
N = 400_000


def test_awgn_noise_variance_matches_sionna_on_the_same_tensor():
    from sionna.phy.channel import AWGN as SionnaAWGN

    g = torch.Generator().manual_seed(0)
    x = ch.power_normalize(ch.complex_normal((1, N), generator=g))
    no = ch.snr_db_to_no(7.0)
    with preserved_torch_rng():
        phy.config.seed = 11
        w_sionna = (SionnaAWGN(device="cpu")(x, no) - x).to(torch.complex128)
    w_commlab = (ch.AWGN(7.0)(x, generator=g) - x).to(torch.complex128)
    tolerance = 5 * math.sqrt(2.0 / N)  # 5 standard errors of the difference of two variance estimates
    v_s, v_c = w_sionna.abs().square().mean().item(), w_commlab.abs().square().mean().item()
    assert v_c / v_s == pytest.approx(1.0, abs=tolerance)
    assert v_s == pytest.approx(no, rel=tolerance)
    # both split N0 equally between the real and imaginary parts
    for part in (torch.real, torch.imag):
        assert part(w_commlab).var().item() / part(w_sionna).var().item() == pytest.approx(1.0, abs=2 * tolerance)


@pytest.mark.parametrize(("precision", "dtype"), [("single", torch.float32), ("double", torch.float64)])
def test_ebnodb2no_equals_sionna_exactly(precision, dtype):
    from sionna.phy.utils import ebnodb2no

    ebno_db = torch.linspace(-10.0, 30.0, 81, dtype=dtype)
    for m in (1, 2, 4, 6, 8):
        for rate in (1 / 3, 0.5, 2 / 3, 0.9, 1.0):
            ours = ch.ebnodb2no(ebno_db, m, rate)
            theirs = ebnodb2no(ebno_db, m, rate, precision=precision, device="cpu")
            assert ours.dtype == theirs.dtype
            assert torch.equal(ours, theirs), (m, rate)
    assert ebnodb2no(5.0, 2, 0.5, precision="double", device="cpu").item() == pytest.approx(0.31623, abs=1e-5)
