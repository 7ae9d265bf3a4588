"""The event model against this machine: fit F and the α–β link to lone GEMMs and all-reduces, then
compare the model with every measurement, the overlapped GEMM + all-reduce included.

Two links: 2 gloo processes over loopback, and (``--veth RATE``, needs root and iproute2) 2 gloo ranks
in two network namespaces joined by a veth pair shaped to RATE bit/s by ``tc`` (commlab.comm.netns).
Prints, per link, the fitted constants and for each timing measured / modelled; writes the timings and
fits as JSON and the figure (PNG + SVG, provenance-stamped) to ``--out``.

    python benchmarks/event_model_calibration.py --veth 200e6 --out figures/systems/event_model_calibration
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from _common import parse_args

from commlab.comm import Link
from commlab.systems.calibration import (
    Timing,
    fit_compute,
    fit_link,
    measure_locally,
    plot_model_vs_measured,
    predict,
    residuals,
)

SMOKE = {"gemm_sizes": (64, 256), "message_bytes": (16_384, 4_194_304), "overlaps": ((256, 4_194_304),)}


def veth_timings(rate: float, repeats: int) -> list[Timing]:
    from commlab.comm.netns import run_ranks, veth_link

    with tempfile.TemporaryDirectory() as folder, veth_link(rate=rate) as link:
        out = Path(folder) / "timings.json"
        results = run_ranks(link, "commlab.systems.calibration", ["--out", str(out), "--repeats", str(repeats)],
                            timeout=900)
        for r in results:
            if r.returncode != 0:
                raise RuntimeError(f"a veth rank exited {r.returncode}:\n{r.output[-2000:]}")
        return [Timing(**d) for d in json.loads(out.read_text())]


def report(name: str, timings: list[Timing]) -> dict:
    F = fit_compute(timings)
    link = fit_link(timings)
    res = residuals(timings, F, link)
    print(f"\n{name}: F = {F / 1e9:.2f} GFLOP/s per rank, latency = {link.latency * 1e6:.1f} us, "
          f"bandwidth = {link.bandwidth / 1e6:.1f} Mbit/s")
    print(f"{'kind':<11}{'GFLOP':>8}{'Mbit':>9}{'measured ms':>13}{'model ms':>10}{'measured/model':>16}")
    for t, r in zip(timings, res, strict=True):
        print(f"{t.kind:<11}{t.flops / 1e9:>8.3f}{t.bits / 1e6:>9.2f}{t.seconds * 1e3:>13.3f}"
              f"{predict(t, F, link) * 1e3:>10.3f}{1 + r:>16.3f}")
    by_kind = {k: float(np.max(np.abs(res[[t.kind == k for t in timings]]))) for k in ("gemm", "all_reduce", "overlap")}
    print("largest |measured/model - 1| per kind: " + ", ".join(f"{k} {v:.3f}" for k, v in by_kind.items()))
    overlap = [1 + r for t, r in zip(timings, res, strict=True) if t.kind == "overlap"]
    print(f"ratio: {max(overlap):.3f}x measured / modelled time of an overlapped GEMM + all-reduce (largest; "
          f"the model overlaps them perfectly)")
    return {"flops_per_second": F, "latency_s": link.latency, "bandwidth_bit_per_s": link.bandwidth,
            "timings": [asdict(t) | {"model_seconds": predict(t, F, link)} for t in timings],
            "largest_relative_residual": by_kind}


def figure(fits: dict, out: Path, stamp: str) -> None:
    import matplotlib.pyplot as plt

    from commlab.lab.figures import save_figure, use_style

    use_style()
    fig, axes = plt.subplots(1, len(fits), figsize=(5.2 * len(fits), 4.0), squeeze=False)
    for ax, (name, fit) in zip(axes[0], fits.items(), strict=True):
        timings = [Timing(**{k: t[k] for k in ("kind", "flops", "bits", "ranks", "seconds")}) for t in fit["timings"]]
        link = Link(bandwidth=fit["bandwidth_bit_per_s"], latency=fit["latency_s"])
        plot_model_vs_measured(ax, timings, fit["flops_per_second"], link)
        ax.set_title(f"{name}: F = {fit['flops_per_second'] / 1e9:.1f} GFLOP/s, "
                     f"B = {fit['bandwidth_bit_per_s'] / 1e6:.0f} Mbit/s")
    save_figure(fig, out, "model_vs_measured", stamp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--veth", type=float, default=None, help="also measure over a veth link of this rate (bit/s)")
    parser.add_argument("--out", type=Path, default=None, help="folder for timings.json and the figure")
    args = parse_args(parser, threads=1, repeats=5)
    options = {"repeats": args.repeats, **(SMOKE if args.smoke else {})}
    fits = {"loopback": report("2 gloo processes over loopback", measure_locally(2, threads=args.threads, **options))}
    if args.veth:
        fits[f"veth {args.veth / 1e6:.0f} Mbit/s"] = report(f"2 gloo ranks over a {args.veth / 1e6:.0f} Mbit/s veth",
                                                           veth_timings(args.veth, args.repeats))
    if args.out is not None:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "timings.json").write_text(json.dumps({"commit": commit, "fits": fits}, indent=1) + "\n")
        figure(fits, args.out, f"commlab {commit} · benchmarks/event_model_calibration.py")


if __name__ == "__main__":
    main()
