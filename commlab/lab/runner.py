"""The batch runner behind ``commlab run``: execute notebooks headlessly, collect their claims.

Each notebook runs in its own child process (:mod:`commlab.lab.execute`) with its own folder as
working directory and its share of the cores; the executed copy goes to ``out_dir/<area>/<slug>.ipynb``
with a log beside it. A notebook that errors or times out never stops the others. After every
finished notebook, ``summary.json`` and ``summary.md`` are rewritten atomically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import psutil

from commlab.lab import summary as summaries
from commlab.lab.claims import MIME
from commlab.lab.notebooks import NotebookInfo, parameters, read_cells
from commlab.lab.paths import git_commit

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "COMMLAB_THREADS")


def available_cores() -> int:
    """Cores this process may use (affinity-aware)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_parameters(notebooks: list[NotebookInfo], names) -> None:
    """Raise ``ValueError`` if a name in ``names`` is not in every notebook's ``parameters`` cell."""
    problems = []
    for nb in notebooks:
        known = parameters(nb.path)
        unknown = sorted(set(names) - set(known))
        if unknown:
            problems.append(f"{nb.display_path}: unknown parameter(s) {', '.join(unknown)}; "
                            f"its parameters are: {', '.join(sorted(known)) or '(none)'}")
    if problems:
        raise ValueError("\n".join(problems))


def read_claims(executed: Path) -> dict | None:
    """The last claims record (MIME :data:`commlab.lab.claims.MIME`) in an executed notebook."""
    record = None
    for cell in read_cells(executed) or []:
        for output in cell.get("outputs", []):
            if MIME in output.get("data", {}):
                record = output["data"][MIME]
    return record


def _running_cell(executed: Path) -> int | None:
    for index, cell in enumerate(read_cells(executed) or []):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return index
    return None


def _kill_tree(pid: int) -> None:
    """Terminate a process and all its descendants (the kernel runs in its own session)."""
    try:
        parent = psutil.Process(pid)
        family = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def run_one(nb: NotebookInfo, *, out_dir: Path, timeout: float, params: dict, threads: int) -> dict:
    """Execute one notebook and return its ``summary.json`` entry."""
    executed = out_dir / nb.rel
    log = executed.with_suffix(".log")
    result_file = executed.with_suffix(".result.json")
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)  # never read back claims of an earlier run
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update(COMMLAB_RUN_DIR=str(out_dir), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "commlab.lab.execute", str(nb.path), str(executed),
               "--cwd", str(nb.path.parent), "--parameters", json.dumps(params), "--result", str(result_file)]
    start = time.monotonic()
    status, error, attempts = "error", None, 0
    for attempts in (1, 2):
        result_file.unlink(missing_ok=True)
        with open(log, "w" if attempts == 1 else "a", encoding="utf-8") as handle:
            handle.write(f"--- attempt {attempts}: {' '.join(command)}\n")
            handle.flush()
            proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            try:
                proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)
                cell = _running_cell(executed)
                where = f" while cell {cell} was running" if cell is not None else ""
                status, error = "timeout", f"timed out after {timeout:g} s{where}"
                break
        try:
            outcome = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            status, error = "error", f"executor exited with code {proc.returncode}; see {log.name}"
            break
        result_file.unlink(missing_ok=True)
        if outcome["outcome"] == "kernel_start" and attempts == 1:
            continue
        if outcome["outcome"] == "kernel_start":
            status, error = "error", f"kernel failed to start twice: {outcome['error']}"
        elif outcome["outcome"] in ("ok", "claims_failed"):
            status, error = "ok", None  # a failed claim is reported in the claims, not as an error
        else:
            status, error = "error", outcome["error"]
        break
    record = read_claims(executed) or {}
    return {
        "path": nb.display_path,
        "title": nb.title,
        "area": nb.area,
        "tier": nb.tier,
        "status": status,
        "seconds": round(time.monotonic() - start, 2),
        "cpu_seconds": record.get("cpu_seconds"),
        "error": error,
        "attempts": attempts,
        "executed": executed.relative_to(out_dir).as_posix(),
        "claims": record.get("claims", []),
    }


def run(notebooks: list[NotebookInfo], *, profile: str = "quick", out_dir: Path, jobs: int | None = None,
        timeout: float = 1800.0, params: dict | None = None, progress: bool = True) -> dict:
    """Execute ``notebooks`` and return the summary (also written to ``out_dir``).

    Args:
        notebooks: from :func:`commlab.lab.notebooks.select`.
        profile: passed to every notebook as the ``profile`` parameter.
        out_dir: where executed copies, logs, figures of quick runs and the summaries go.
        jobs: notebooks run at once (default: the number of cores); each gets
            ``max(1, cores // jobs)`` threads.
        timeout: wall-clock seconds allowed per notebook.
        params: extra parameters; every name must exist in each notebook's ``parameters`` cell
            (checked before anything runs).
    """
    params = dict(params or {})
    if "profile" in params:
        raise ValueError("pass the profile with --profile, not as a parameter")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    check_parameters(notebooks, params)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    jobs = min(jobs or cores, max(1, len(notebooks)))
    threads = max(1, cores // jobs)
    summary = {"profile": profile, "commit": git_commit(), "jobs": jobs, "threads_per_job": threads,
               "notebooks": []}
    summaries.write(summary, out_dir)
    bar = _progress(len(notebooks), progress)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_one, nb, out_dir=out_dir, timeout=timeout,
                               params={"profile": profile, **params}, threads=threads): nb
                   for nb in notebooks}
        for future in as_completed(futures):
            entry = future.result()
            summary["notebooks"].append(entry)
            summary["notebooks"].sort(key=lambda e: e["path"])
            summaries.write(summary, out_dir)
            bar.set_postfix_str(f"{Path(entry['path']).stem}: {entry['status']}")
            bar.update()
    bar.close()
    return summary


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="notebook", desc="notebooks", disable=not enabled, file=sys.stderr)
