"""Digital separation baselines that are not in outage: the best rate that decodes (commlab.semcom.digital)."""

import math

import pytest
import torch

from commlab import semcom


def images(seed=0, n=600):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(6, 64, generator=g)
    return (0.5 + 0.1 * torch.randn(n, 6, generator=g) @ basis).clamp(0, 1).reshape(n, 1, 8, 8)


def test_at_capacity_is_the_code_designed_at_the_test_snr_and_never_in_outage():
    x = images()
    train, test = x[:500], x[500:]
    sep = semcom.SeparationBaseline(train, n_symbols=4, snr_design_db=10.0)
    mean = train.mean(0, keepdim=True).expand_as(test)
    for snr in (0.0, 5.0, 10.0, 20.0):
        rec = sep.at_capacity(test, snr)
        assert torch.equal(rec, sep.redesign(4, snr)(test, snr))
        assert semcom.psnr(test, rec).mean() > semcom.psnr(test, mean).mean() + 0.5  # decodes: better than outage
    # below the old design SNR the cliff baseline is in outage, the capacity one is not
    assert torch.allclose(sep(test, 5.0), mean, atol=1e-6)
    # more SNR, more bits, no worse reconstruction; the design object itself is unchanged
    scores = [semcom.psnr(test, sep.at_capacity(test, s)).mean().item() for s in (0.0, 5.0, 10.0, 20.0)]
    assert scores == sorted(scores)
    assert sep.snr_design_db == 10.0 and sep.total_bits == math.floor(4 * math.log2(11))


def test_best_fixed_rate_beats_every_design_of_its_grid_on_per_image_snrs():
    x = images(1)
    train, test = x[:500], x[500:]
    sep = semcom.SeparationBaseline(train, n_symbols=4, snr_design_db=0.0)
    g = torch.Generator().manual_seed(2)
    gain = -torch.log(torch.rand(len(test), generator=g, dtype=torch.float64))  # |h|^2 of slow Rayleigh
    snr = 10.0 + 10 * torch.log10(gain)
    grid = [-5.0, 0.0, 5.0, 10.0, 15.0]
    design, rec = sep.best_fixed_rate(test, snr, grid, exact_top=len(grid))
    assert design in grid
    assert sep.best_fixed_rate(test, snr, grid)[0] == design  # the coefficient-domain pre-selection keeps it
    best = semcom.psnr(test, rec).mean().item()
    for d in grid:
        assert best >= semcom.psnr(test, sep.redesign(4, d)(test, snr)).mean().item()
    assert torch.equal(rec, sep.redesign(4, design)(test, snr))
    with pytest.raises(ValueError, match="at least one"):
        sep.best_fixed_rate(test, snr, [])
    with pytest.raises(ValueError, match="exact_top"):
        sep.best_fixed_rate(test, snr, grid, exact_top=0)


def test_jpeg_separation_fits_the_budget_and_falls_back_to_the_mean():
    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(3, 3, 4, 4, generator=g), size=32, mode="bilinear")
    mean = smooth.mean(0)
    for q in (1, 50):
        bits, decoded = semcom.jpeg_scan_bits(smooth[0], q)
        assert decoded.shape == smooth[0].shape and bits > 7
    assert semcom.jpeg_scan_bits(smooth[0], 90)[0] > semcom.jpeg_scan_bits(smooth[0], 5)[0]
    n_symbols = 128
    tiny = semcom.jpeg_separation(smooth, n_symbols, -20.0, mean)  # a budget of 0 bits: nothing fits
    assert torch.equal(tiny, mean.expand_as(smooth))
    for snr in (5.0, 20.0):
        rec = semcom.jpeg_separation(smooth, n_symbols, snr, mean)
        budget = math.floor(n_symbols * math.log2(1 + 10 ** (snr / 10)))
        for image, r in zip(smooth, rec, strict=True):
            fits = [q for q in range(1, 96) if semcom.jpeg_scan_bits(image, q)[0] <= budget]
            if fits:
                assert torch.equal(r, semcom.jpeg_scan_bits(image, max(fits))[1])
    good = semcom.psnr(smooth, semcom.jpeg_separation(smooth, n_symbols, 20.0, mean)).mean()
    assert good > semcom.psnr(smooth, semcom.jpeg_separation(smooth, n_symbols, 5.0, mean)).mean()
    grey = semcom.jpeg_scan_bits(smooth[0, :1], 50)[1]
    assert grey.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="quality"):
        semcom.jpeg_scan_bits(smooth[0], 0)
