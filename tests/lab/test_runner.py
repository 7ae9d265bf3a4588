"""The batch runner on fixture notebooks: errors, timeouts, claims, parameters, kernel retries."""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from commlab import cli
from commlab.lab import summary as summaries
from commlab.lab.notebooks import select
from commlab.lab.runner import run

pytestmark = pytest.mark.notebooks
ROOT = Path(__file__).resolve().parents[2]


def _by_name(summary: dict) -> dict:
    return {Path(e["path"]).stem: e for e in summary["notebooks"]}


def test_a_broken_notebook_is_reported_while_the_others_complete(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["--notebooks", str(fixtures_dir), "run", "passing", "broken", "failing_claim",
                       "--out", str(out), "--jobs", "2", "--no-progress"])
    assert status == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["profile"] == "quick"
    entries = _by_name(summary)
    assert set(entries) == {"passing", "broken", "failing_claim"}
    for entry in entries.values():
        assert set(entry) >= {"path", "status", "seconds", "error", "claims"}
        assert entry["path"].startswith("notebooks/lab/") and isinstance(entry["seconds"], float)
    assert entries["broken"]["status"] == "error"
    assert "ValueError: deliberately broken fixture" in entries["broken"]["error"]
    assert entries["passing"]["status"] == "ok" and entries["passing"]["error"] is None
    (claim,) = entries["passing"]["claims"]
    assert claim["passed"] and claim["measured"] == 4950 and claim["status"] == "pass"
    failing = {c["id"]: c for c in entries["failing_claim"]["claims"]}
    assert entries["failing_claim"]["status"] == "claims_failed" and entries["failing_claim"]["error"] is None
    assert [failing[k]["status"] for k in ("holds", "too-big", "uncertain")] == ["pass", "fail", "fail"]
    assert failing["uncertain"]["blocking"] is False
    markdown = (out / "summary.md").read_text()
    assert "notebooks/lab/broken.ipynb" in markdown and "deliberately broken fixture" in markdown
    assert "not reproduced at this scale" in markdown
    assert "| `notebooks/lab/failing_claim.ipynb` | claims failed |" in markdown
    assert "**FAILED** — 1 claims failed, 1 error, 1 ok of 3 notebooks." in markdown
    assert (out / "lab" / "passing.ipynb").is_file()
    assert "summary:" in capsys.readouterr().out


def test_only_non_blocking_failures_give_a_zero_exit_status(tmp_path):
    summary = {"profile": "quick", "notebooks": [
        {"path": "notebooks/a/b.ipynb", "status": "ok", "seconds": 1.0, "error": None,
         "claims": [{"id": "x", "statement": "s", "measured": 1, "expected": "> 2", "passed": False,
                     "status": "fail", "blocking": False}]}]}
    assert not summaries.failed(summary)
    summary["notebooks"][0]["claims"][0]["blocking"] = True
    assert summaries.failed(summary)


def _kernels_in(folder: Path) -> list:
    psutil = pytest.importorskip("psutil")
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.info["cwd"] == str(folder) and "ipykernel" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_a_slow_notebook_times_out_its_kernel_is_stopped_and_progress_names_it(fixtures_dir, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setattr("commlab.lab.progress.HEARTBEAT_S", 1.0)
    assert _kernels_in(fixtures_dir / "lab") == []
    summary = run(select(fixtures_dir, ["slow"]), out_dir=tmp_path, timeout=8)
    (entry,) = summary["notebooks"]
    assert entry["status"] == "timeout"
    assert entry["error"].startswith("timed out after 8 s")
    assert entry["seconds"] < 30
    assert _kernels_in(fixtures_dir / "lab") == []
    log = capsys.readouterr().err.splitlines()  # not a terminal: one line per event and a heartbeat
    assert log[0] == "[0/1] started lab/slow"
    heartbeats = [line for line in log if line.startswith("[0/1] running: lab/slow ")]
    assert len(heartbeats) >= 4 and heartbeats[-1].endswith(" s")
    assert int(heartbeats[-1].split()[-2]) >= 5  # the elapsed time counts up
    assert log[-1].startswith("[1/1] timeout lab/slow (")


def test_unknown_parameters_are_rejected_before_anything_runs(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["--notebooks", str(fixtures_dir), "run", "passing", "broken", "-p", "n", "3",
                       "-p", "learning_rate", "0.1", "--out", str(out)])
    assert status == 2
    error = capsys.readouterr().err
    assert "unknown parameter(s) learning_rate" in error and "notebooks/lab/passing.ipynb" in error
    assert not out.exists()


def test_parameters_reach_the_notebook_and_are_recorded(fixtures_dir, tmp_path):
    summary = run(select(fixtures_dir, ["passing"]), out_dir=tmp_path, params={"n": 10}, progress=False)
    (entry,) = summary["notebooks"]
    (claim,) = entry["claims"]
    assert claim["measured"] == 45 and claim["passed"]
    assert entry["parameters"] == {"n": 10}
    assert "| 1/1 | 0/0 | 0/0 | n=10 |" in (tmp_path / "summary.md").read_text()


def test_unmatched_patterns_are_an_error(fixtures_dir):
    with pytest.raises(ValueError, match="no notebook matches 'nonexistent'; available: lab/broken"):
        select(fixtures_dir, ["nonexistent"])
    assert [nb.key for nb in select(fixtures_dir, ["lab/p*", "broken"])] == ["lab/broken", "lab/passing"]


def _kernel(tmp_path: Path, script: str) -> dict:
    """A JUPYTER_PATH whose ``python3`` kernel runs ``script`` (with sys.argv of ipykernel)."""
    kernel_dir = tmp_path / "jupyter" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "launch.py").write_text(textwrap.dedent(script))
    spec = {"argv": [sys.executable, str(kernel_dir / "launch.py"), "-f", "{connection_file}"],
            "display_name": "Python 3", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    return {"JUPYTER_PATH": str(tmp_path / "jupyter"), "MARKER": str(tmp_path / "started-once")}


def test_a_kernel_that_fails_to_start_is_retried_once(fixtures_dir, tmp_path, monkeypatch):
    env = _kernel(tmp_path, """
        import os, sys
        marker = os.environ["MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(1)  # the first start fails
        from ipykernel import kernelapp
        kernelapp.launch_new_instance()
    """)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    summary = run(select(fixtures_dir, ["passing"]), out_dir=tmp_path / "run", progress=False)
    (entry,) = summary["notebooks"]
    assert entry["status"] == "ok" and entry["attempts"] == 2
    assert entry["claims"][0]["passed"]
    log = (tmp_path / "run" / "lab" / "passing.log").read_text()
    assert "--- attempt 1" in log and "--- attempt 2" in log


def test_a_kernel_that_never_starts_is_an_error_after_two_attempts(fixtures_dir, tmp_path, monkeypatch):
    notebooks = select(fixtures_dir, ["passing"])
    assert run(notebooks, out_dir=tmp_path / "run", progress=False)["notebooks"][0]["claims"]
    env = _kernel(tmp_path, "import sys\nsys.exit(1)\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    summary = run(notebooks, out_dir=tmp_path / "run", progress=False)  # same folder as the good run
    (entry,) = summary["notebooks"]
    assert entry["status"] == "error" and entry["attempts"] == 2
    assert entry["error"].startswith("kernel failed to start twice")
    assert entry["claims"] == []  # nothing is read back from the earlier run's executed copy


def test_the_template_runs_and_writes_its_figure_under_the_run_folder(tmp_path):
    template = ROOT / "notebooks" / "_template.ipynb"
    summary = run(select(ROOT / "notebooks", [str(template)]), out_dir=tmp_path, progress=False)
    (entry,) = summary["notebooks"]
    assert entry["status"] == "ok", entry["error"]
    assert [c["status"] for c in entry["claims"]] == ["pass"]
    assert entry["cpu_seconds"] > 0
    assert (tmp_path / "figures" / "template" / "_template" / "rmse_vs_n.png").is_file()
    assert not (ROOT / "figures" / "template").exists()


def test_report_turns_a_summary_into_results(fixtures_dir, tmp_path, monkeypatch):
    summary = run(select(fixtures_dir, ["failing_claim"]), out_dir=tmp_path / "run", progress=False)
    assert summary["notebooks"][0]["status"] == "claims_failed"
    monkeypatch.setenv("COMMLAB_ROOT", str(tmp_path))
    results = tmp_path / "RESULTS.md"
    assert cli.main(["report", str(tmp_path / "run" / "summary.json"), "--out", str(results)]) == 0
    text = results.read_text()
    assert "## Fixture: failing_claim" in text
    assert ("| Fixture: failing_claim | `holds`<br>`uncertain` | reproduced (1/1 seeds)<br>not reproduced at this "
            "scale (0/1 seeds) | 4950<br>4950 | == 4950<br>< 0 | —<br>— | 0/1 | 0/0 | "
            "`notebooks/lab/failing_claim.ipynb` |") in text
    assert "| `too-big` | supporting | sum(range(n)) exceeds n^2 | 4950 | > 10000 |  | 0/1 | FAIL |" in text
    assert "Headline claims: **1 of 2 reproduced on every seed**, 0 on some seeds, 1 not reproduced" in text


def test_a_seed_sweep_runs_each_notebook_per_seed_and_reports_pass_counts_and_ranges(fixtures_dir, tmp_path,
                                                                                      monkeypatch):
    out = tmp_path / "run"
    assert cli.main(["--notebooks", str(fixtures_dir), "run", "seeded", "--seeds", "0-2,4", "--out", str(out),
                     "--jobs", "2", "--no-progress"]) == 0  # the claim failing on seed 4 is non-blocking
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2, 4]
    (entry,) = summary["notebooks"]
    assert entry["status"] == "ok" and entry["seeds"] == [0, 1, 2, 4]
    assert [(r["seed"], r["status"], r["executed"]) for r in entry["runs"]] == [
        (k, "ok", f"seed-{k}/lab/seeded.ipynb") for k in (0, 1, 2, 4)]
    assert all((out / r["executed"]).is_file() for r in entry["runs"])
    claims = {c["id"]: c for c in entry["claims"]}
    small = claims["small-seed"]
    assert (small["kind"], small["status"], small["seeds_run"], small["seeds_passed"]) == ("headline", "fail", 4, 3)
    assert small["spread"] == {"min": 0, "median": 1.5, "max": 4} and small["measured"] == 1.5
    assert [(s["seed"], s["measured"], s["status"]) for s in small["per_seed"]] == [
        (0, 0, "pass"), (1, 1, "pass"), (2, 2, "pass"), (4, 4, "fail")]
    draws = [s["measured"] for s in claims["draw"]["per_seed"]]
    assert len(set(draws)) == 4 and claims["draw"]["seeds_passed"] == 4  # each seed reached its notebook
    assert claims["budget"]["kind"] == "check" and claims["budget"]["spread"] == {"min": 1, "median": 1, "max": 1}
    markdown = (out / "summary.md").read_text()
    assert "| `notebooks/lab/seeded.ipynb` | ok | 0,1,2,4 |" in markdown and "| 0/1 | 1/1 | 1/1 |" in markdown
    assert "measured 1.5 [0, 4], expected < 3, seeds passed 3/4" in markdown
    monkeypatch.setenv("COMMLAB_ROOT", str(tmp_path))
    assert cli.main(["report", str(out / "summary.json"), "--out", str(tmp_path / "RESULTS.md")]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert ("| Fixture: seeded | `small-seed` | some seeds (3/4 seeds) | 1.5 [0, 4] | < 3 | always | 1/1 | 1/1 "
            "| `notebooks/lab/seeded.ipynb` |") in text
    assert "| `small-seed` | headline | the seed is below 3 | 1.5 [0, 4] | < 3 | always | 3/4 | some seeds" in text
    record = json.loads((tmp_path / "RESULTS.json").read_text())
    assert "runs" not in record["notebooks"][0] and len(record["notebooks"][0]["claims"][0]["per_seed"]) == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["--seeds", "0-2", "-p", "seed", "3"], "not both"),
    (["--seeds", "3-1"], "ends before it starts"),
    (["--seeds", "0,x"], "non-negative integers"),
    (["--seeds", "-1"], "non-negative integers"),
    (["--seeds", "0,1,1"], "distinct"),
])
def test_bad_seed_lists_are_rejected_before_anything_runs(fixtures_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert cli.main(["--notebooks", str(fixtures_dir), "run", "seeded", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_job_gets_its_share_of_the_cores(fixtures_dir, tmp_path, monkeypatch, jobs):
    monkeypatch.setattr("commlab.lab.runner.available_cores", lambda: 2)
    notebooks = tmp_path / "notebooks" / "lab"
    notebooks.mkdir(parents=True)
    for name in ("first", "second"):
        shutil.copy(fixtures_dir / "lab" / "threads.ipynb", notebooks / f"{name}.ipynb")
    summary = run(select(notebooks.parent, []), out_dir=tmp_path / "run", jobs=jobs,
                  params={"expected_threads": 2 // jobs}, progress=False)
    assert summary["jobs"] == jobs and summary["threads_per_job"] == 2 // jobs
    for entry in summary["notebooks"]:
        assert [c["status"] for c in entry["claims"]] == ["pass", "pass"], entry
