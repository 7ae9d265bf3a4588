"""Channel throughput: commlab's torch AWGN and Rayleigh block fading against plain NumPy implementations
of the same channels (same SNR convention), and commlab's AWGN against NVIDIA Sionna's ``AWGN`` block on the
same tensor, measured side by side in one run.

Prints complex samples per second for each implementation (minimum time over several repeats, the
implementations interleaved round by round) and the ratio commlab / baseline in throughput. NumPy runs these
element-wise kernels on one thread, so the default is one torch thread too. ``--smoke`` runs a small size to
check the script works.

    .venv/bin/python benchmarks/channel_throughput.py [--threads 1] [--repeats 7] [--smoke]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import interleaved_best, parse_args

from commlab import channels
from commlab.semcom.sionna_import import import_sionna_phy


def numpy_awgn(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``x + CN(0, N0)`` with ``N0 = 10^(-SNR/10)``, variance ``N0/2`` per real component."""
    std = np.sqrt(10 ** (-snr_db / 10) / 2)
    return x + std * (rng.standard_normal(x.shape, dtype=np.float32)
                      + 1j * rng.standard_normal(x.shape, dtype=np.float32)).astype(np.complex64)


def numpy_rayleigh_mmse(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Block Rayleigh (one gain per row), AWGN, and MMSE equalisation with perfect CSI."""
    no = 10 ** (-snr_db / 10)
    h = ((rng.standard_normal((x.shape[0], 1), dtype=np.float32)
          + 1j * rng.standard_normal((x.shape[0], 1), dtype=np.float32)) * np.sqrt(0.5)).astype(np.complex64)
    y = numpy_awgn(h * x, snr_db, rng)
    return np.conj(h) * y / (np.abs(h) ** 2 + no)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--symbols", type=int, default=4096)
    args = parse_args(parser, threads=1, repeats=7)
    if args.smoke:
        args.batch, args.symbols = 16, 1024
    n = args.batch * args.symbols
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    x_t = channels.power_normalize(channels.complex_normal((args.batch, args.symbols), generator=gen))
    x_np = x_t.numpy()
    awgn = channels.AWGN(10.0)
    fading = channels.RayleighBlockFading(10.0, csi="perfect", equalizer="mmse")
    import_sionna_phy()  # keeps torch's global RNG state
    from sionna.phy.channel import AWGN as SionnaAWGN

    sionna_awgn, no = SionnaAWGN(device="cpu"), channels.snr_db_to_no(10.0)
    cases = [
        ("AWGN", "NumPy", lambda: awgn(x_t, generator=gen), lambda: numpy_awgn(x_np, 10.0, rng)),
        ("AWGN", "Sionna", lambda: awgn(x_t, generator=gen), lambda: sionna_awgn(x_t, no)),
        ("Rayleigh + MMSE", "NumPy", lambda: fading(x_t, generator=gen), lambda: numpy_rayleigh_mmse(x_np, 10.0, rng)),
    ]
    print(f"{args.batch} x {args.symbols} complex samples per call, best of {args.repeats}, {args.threads} thread(s)")
    print(f"{'channel':<18}{'baseline':<10}{'commlab (Msamples/s)':>22}{'baseline (Msamples/s)':>23}{'ratio':>8}")
    ratios = []
    with torch.no_grad():
        for name, base_name, ours, baseline in cases:
            best = interleaved_best({"ours": ours, "baseline": baseline}, args.repeats)
            t_ours, t_base = best["ours"], best["baseline"]
            print(f"{name:<18}{base_name:<10}{n / t_ours / 1e6:>22.1f}{n / t_base / 1e6:>23.1f}{t_base / t_ours:>8.2f}")
            ratios.append((name, base_name, t_base / t_ours))
    for name, base_name, ratio in ratios:
        print(f"ratio: {ratio:.2f}x the {base_name} throughput ({name})")


if __name__ == "__main__":
    main()
