"""The batch runner under signals, a second batch and bad input: nothing lingers, nothing lies.

The signal tests run ``commlab run`` as a child process, wait until the ``lingering`` fixture's
kernel has started a child of its own, and signal the runner mid-batch.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from commlab import cli
from commlab.lab import summary as summaries
from commlab.lab.lock import LOCK_NAME

pytestmark = pytest.mark.notebooks


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(path: Path, seconds: float = 90.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear within {seconds} s")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_batch_kills_every_kernel_and_says_interrupted(fixtures_dir, tmp_path, signum, status):
    out, pids = tmp_path / "run", tmp_path / "pids"
    env = {**os.environ, "LINGER_PIDS": str(pids)}
    runner = subprocess.Popen(
        [sys.executable, "-m", "commlab.cli", "--notebooks", str(fixtures_dir), "run", "lingering", "passing",
         "--jobs", "1", "--out", str(out), "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        kernel, child = map(int, _wait_for(pids).split())
        executors = [p for p in psutil.Process(runner.pid).children() if "commlab.lab.execute" in " ".join(p.cmdline())]
        assert executors and psutil.pid_exists(kernel) and psutil.pid_exists(child)
        runner.send_signal(signum)
        stdout, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == status
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in (kernel, child, *(p.pid for p in executors))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(kernel) and _gone(child) and all(_gone(p.pid) for p in executors)
    summary = json.loads((out / "summary.json").read_text())
    name = signal.Signals(signum).name
    assert summary["interrupted"] == name and summary["selected"] == 2
    entries = {Path(e["path"]).stem: e for e in summary["notebooks"]}
    assert entries["lingering"]["status"] == "interrupted" and name in entries["lingering"]["error"]
    assert entries["passing"]["status"] == "not_started"
    assert not (out / "lab" / "passing.ipynb").exists()  # the queued notebook never started
    markdown = (out / "summary.md").read_text()
    assert f"**INTERRUPTED** by {name} — 0 of 2 notebooks finished" in markdown
    assert "all passed" not in markdown and "all passed" not in stdout
    assert summaries.failed(summary)


def test_a_second_batch_into_the_same_folder_is_refused_and_a_dead_one_leaves_no_stale_lock(
        fixtures_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from commlab.lab.lock import RunLock; "
         f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert cli.main(["--notebooks", str(fixtures_dir), "run", "passing", "--out", str(out)]) == 2
        assert time.monotonic() - started < 10  # refused at once, not after the other batch
        error = capsys.readouterr().err
        assert f"another `commlab run` (pid {holder.pid} on " in error and "pass a different --out" in error
        assert not (out / "summary.json").exists()
    finally:
        holder.kill()  # dies without releasing anything by hand
        holder.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # its lock file is still there
    assert cli.main(["--notebooks", str(fixtures_dir), "run", "passing", "--out", str(out), "--no-progress"]) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "parameter n is 100 (int) in the notebook; got 'abc' (str)"),
        ("2.5", "parameter n is 100 (int) in the notebook; got 2.5 (float)"),
        ("True", "parameter n is 100 (int) in the notebook; got True (bool)"),
        ("[1]", "parameter n is 100 (int) in the notebook; got [1] (list)"),
    ],
)
def test_a_parameter_of_the_wrong_type_is_refused_before_any_kernel_starts(fixtures_dir, tmp_path, capsys,
                                                                             value, message):
    out = tmp_path / "run"
    assert cli.main(["--notebooks", str(fixtures_dir), "run", "passing", "-p", "n", value, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "notebooks/lab/passing.ipynb: " + message in error
    assert not out.exists()


@pytest.mark.parametrize(("default", "value", "accepted"), [
    ("0.5", 1, True), ("0.5", True, False), ('"quick"', 3, False), ('"a"', "b", True), ("None", 3, True),
    ("(1, 2)", [1, 2], True), ("[1, 2]", {"a": 1}, False), ("2 ** 10", "x", True), ("False", 0, False),
])
def test_type_rules(default, value, accepted):
    from commlab.lab.notebooks import type_mismatch

    assert (type_mismatch("x", value, default) is None) == accepted


def test_a_text_parameter_given_a_number_says_how_to_quote_it():
    from commlab.lab.notebooks import type_mismatch

    assert type_mismatch("mode", 3, '"ef21"').endswith("""(to pass the text, quote it: -p mode "'3'")""")


def _with_truncated(fixtures_dir: Path, tmp_path: Path) -> Path:
    notebooks = tmp_path / "notebooks"
    shutil.copytree(fixtures_dir, notebooks)
    text = (notebooks / "lab" / "passing.ipynb").read_text()
    (notebooks / "lab" / "truncated.ipynb").write_text(text[: len(text) // 2])
    (notebooks / "lab" / "not_a_notebook.ipynb").write_text('{"cells": "none", "nbformat": 4}')
    return notebooks


def test_an_unreadable_notebook_is_named_and_the_others_still_list(fixtures_dir, tmp_path, capsys):
    notebooks = _with_truncated(fixtures_dir, tmp_path)
    assert cli.main(["--notebooks", str(notebooks), "list"]) == 1
    captured = capsys.readouterr()
    assert "commlab: error: notebooks/lab/truncated.ipynb is not a readable notebook" in captured.err
    assert "commlab: error: notebooks/lab/not_a_notebook.ipynb is not a valid notebook: 'cells'" in captured.err
    listed = [line.split()[0] for line in captured.out.splitlines()[1:]]
    assert listed == ["lab/broken", "lab/failing_claim", "lab/lingering", "lab/passing", "lab/seeded", "lab/slow",
                      "lab/threads"]


def test_an_unreadable_notebook_is_an_error_entry_and_the_others_still_run(fixtures_dir, tmp_path, capsys):
    notebooks, out = _with_truncated(fixtures_dir, tmp_path), tmp_path / "run"
    status = cli.main(["--notebooks", str(notebooks), "run", "passing", "truncated", "-p", "n", "10",
                       "--out", str(out), "--no-progress"])
    assert status == 1
    assert "notebooks/lab/truncated.ipynb is not a readable notebook" in capsys.readouterr().err
    entries = {Path(e["path"]).stem: e for e in json.loads((out / "summary.json").read_text())["notebooks"]}
    assert entries["passing"]["status"] == "ok" and entries["passing"]["claims"][0]["measured"] == 45
    assert entries["truncated"]["status"] == "error" and "not a readable notebook" in entries["truncated"]["error"]


def test_an_unwritable_out_folder_is_a_one_line_error(fixtures_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["--notebooks", str(fixtures_dir), "run", "passing", "--out", str(blocker / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"commlab: error: cannot write into the output folder {blocker / 'run'}: ")
    assert error.count("\n") == 1 and "Traceback" not in error


def test_an_empty_batch_is_refused_and_never_reads_as_all_passed(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    assert cli.main(["--notebooks", str(tmp_path / "notebooks"), "run", "--out", str(tmp_path / "run")]) == 2
    assert "no notebooks to run" in capsys.readouterr().err
    empty = {"profile": "quick", "selected": 0, "interrupted": None, "notebooks": []}
    assert summaries.failed(empty)
    assert "**NOTHING RAN**" in summaries.markdown(empty) and "all passed" not in summaries.markdown(empty)
