"""Calibration of the event model: the fits recover known constants, the model's predictions are the
closed forms, and a 2-rank measurement returns every kind of timing."""

import pytest

from commlab.comm import Link
from commlab.systems.calibration import (
    Timing,
    fit_compute,
    fit_link,
    gemm_flops,
    measure,
    measure_locally,
    plot_model_vs_measured,
    predict,
    residuals,
)

F, LINK = 5e10, Link(bandwidth=2e8, latency=4e-5)


def _synthetic(ranks=2):
    """Timings the model itself produces for F and LINK."""
    shapes = [("gemm", gemm_flops(n), 0.0) for n in (256, 512, 768)]
    shapes += [("all_reduce", 0.0, 8.0 * b) for b in (16_384, 1_048_576, 8_388_608)]
    shapes += [("overlap", gemm_flops(512), 8.0 * 1_048_576)]
    return [Timing(k, f, b, ranks, predict(Timing(k, f, b, ranks, 1.0), F, LINK)) for k, f, b in shapes]


@pytest.mark.parametrize("ranks", [2, 4])
def test_fits_recover_the_constants_that_made_the_timings(ranks):
    timings = _synthetic(ranks)
    assert fit_compute(timings) == pytest.approx(F, rel=1e-9)
    link = fit_link(timings)
    assert link.bandwidth == pytest.approx(LINK.bandwidth, rel=1e-9)
    assert link.latency == pytest.approx(LINK.latency, rel=1e-9)
    assert abs(residuals(timings, F, LINK)).max() < 1e-12


def test_predictions_are_the_closed_forms_and_overlap_is_perfect():
    n, bits = 512, 8.0 * 4_194_304
    gemm = predict(Timing("gemm", gemm_flops(n), 0.0, 2, 0.0), F, LINK)
    reduce = predict(Timing("all_reduce", 0.0, bits, 2, 0.0), F, LINK)
    assert gemm == pytest.approx(2 * n**3 / F, rel=1e-12)
    assert reduce == pytest.approx(LINK.collective_seconds(bits, 2, "ring"), rel=1e-12)
    assert reduce == pytest.approx(2 * (LINK.latency + bits / (2 * LINK.bandwidth)), rel=1e-12)
    both = predict(Timing("overlap", gemm_flops(n), bits, 2, 0.0), F, LINK)
    assert both == pytest.approx(max(gemm, reduce), rel=1e-12)


def test_refusals():
    with pytest.raises(ValueError, match="no GEMM"):
        fit_compute([t for t in _synthetic() if t.kind != "gemm"])
    with pytest.raises(ValueError, match="two sizes"):
        fit_link([t for t in _synthetic() if t.kind == "all_reduce"][:1])
    with pytest.raises(ValueError, match="at least 2 ranks"):
        fit_link([Timing("all_reduce", 0.0, b, 1, 1e-3 * b) for b in (1e3, 1e6)])
    flat = [Timing("all_reduce", 0.0, b, 2, t) for b, t in ((1e3, 2e-3), (1e6, 1e-3))]
    with pytest.raises(ValueError, match="do not grow"):
        fit_link(flat)
    with pytest.raises(TypeError, match="DistComm"):
        measure(object())
    with pytest.raises(RuntimeError, match="rank 0 ended error"):  # a bad option fails on every rank
        measure_locally(2, timeout=60, repeats=0)


def test_two_ranks_measure_every_kind():
    options = {"gemm_sizes": (64, 128), "message_bytes": (4096, 65536), "overlaps": ((128, 65536),), "repeats": 2}
    timings = measure_locally(2, timeout=90, **options)
    assert [t.kind for t in timings] == ["gemm", "gemm", "all_reduce", "all_reduce", "overlap"]
    assert all(t.seconds > 0 and t.ranks == 2 for t in timings)
    assert timings[3].bits == 8 * 65536 and timings[4].flops == gemm_flops(128)


def test_the_plot_puts_each_timing_at_model_against_measured():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timings = [Timing(t.kind, t.flops, t.bits, t.ranks, 2 * t.seconds) for t in _synthetic()]  # measured = 2 x model
    fig, ax = plt.subplots()
    plot_model_vs_measured(ax, timings, F, LINK)
    points = {line.get_label(): line.get_xydata() for line in ax.get_lines()}
    plt.close(fig)
    assert set(points) == {"gemm", "all-reduce", "overlap", "measured = model"}
    for kind in ("gemm", "all-reduce", "overlap"):
        model_ms, measured_ms = points[kind].T
        assert measured_ms == pytest.approx(2 * model_ms, rel=1e-12)
