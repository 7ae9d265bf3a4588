import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from commlab.lab.figures import STYLE, save_figure  # noqa: E402
from commlab.lab.session import setup  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_setup_sets_threads_seed_and_style(monkeypatch):
    monkeypatch.setenv("COMMLAB_THREADS", "1")
    session = setup("quick", 3, notebook="compression/example")
    assert torch.get_num_threads() == 1 and session.threads == 1
    assert session.device == "cpu" and session.seed == 3
    assert matplotlib.rcParams["axes.grid"] is STYLE["axes.grid"]
    assert session.seeds.seed_for("x") == setup("quick", 3, threads=1).seeds.seed_for("x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "medium"}, "profile must be one of"),
        ({"seed": -1}, "seed"),
        ({"notebook": "no-area"}, "<area>/<slug>"),
        ({"device": "tpu"}, "device"),
        ({"threads": 0}, "threads"),
    ],
)
def test_setup_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        setup(**kwargs)


def test_quick_figures_go_to_the_run_folder_full_figures_to_the_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMLAB_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("COMMLAB_ROOT", str(tmp_path / "checkout"))
    quick = setup("quick", 0, notebook="semcom/jscc", threads=1)
    assert quick.figures_dir == tmp_path / "run" / "figures" / "semcom" / "jscc"
    full = setup("full", 0, notebook="semcom/jscc", device="cpu", threads=1)
    assert full.figures_dir == tmp_path / "checkout" / "figures" / "semcom" / "jscc"
    with pytest.raises(ValueError, match="does not know its notebook"):
        _ = setup("quick", 0, threads=1).figures_dir


def test_savefig_writes_stamped_png_and_svg(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMLAB_RUN_DIR", str(tmp_path))
    session = setup("quick", 4, notebook="systems/demo", threads=1)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png, svg = session.savefig(fig, "line")
    assert png == tmp_path / "figures" / "systems" / "demo" / "line.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "seed 4" in svg.read_text() and "quick" in session.stamp
    session.savefig(fig, "line")  # saving again does not stamp twice
    assert sum(t.get_gid() == "commlab-stamp" for t in fig.texts) == 1
    assert sorted(p.name for p in png.parent.iterdir()) == ["line.png", "line.svg"]
    plt.close(fig)


@pytest.mark.parametrize(("name", "formats"), [("../x", ("png",)), ("", ("png",)), ("ok", ("svg",)),
                                               ("ok", ("png", "gif"))])
def test_save_figure_rejects_bad_names_and_formats(tmp_path, name, formats):
    fig = plt.figure()
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path, name, "stamp", formats)
    plt.close(fig)


@pytest.mark.parametrize("layout", [None, "constrained"])
def test_the_stamp_sits_in_its_own_margin_below_long_labels_and_legends(tmp_path, layout):
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 3.0), layout=layout)
    names = [f"a rather long category label {i}" for i in range(6)]
    left.bar(names, range(6), label="bars")
    left.tick_params(axis="x", labelrotation=60)
    left.set_xlabel("category, with a long axis label underneath the rotated ticks")
    right.plot(range(6), label="line")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35))  # a legend below the axes
    fig.legend(loc="lower left")
    save_figure(fig, tmp_path, "long_labels", "commlab 0.1.0 · quick · seed 0 · 0123456789-dirty")
    renderer = fig.canvas.get_renderer()
    (stamp,) = [t for t in fig.texts if t.get_gid() == "commlab-stamp"]
    box = stamp.get_window_extent(renderer)
    others = [ax.get_tightbbox(renderer) for ax in fig.axes]
    others += [legend.get_window_extent(renderer) for legend in [right.get_legend(), *fig.legends]]
    assert all(not box.overlaps(other) for other in others)
    assert box.y1 < min(other.y0 for other in others)  # below everything, not squeezed beside it
    saved = fig.get_tightbbox(renderer)  # what bbox_inches="tight" writes, in inches
    assert saved.y0 * fig.dpi <= box.y0 + 0.5 and box.x1 <= saved.x1 * fig.dpi + 0.5
    plt.close(fig)
