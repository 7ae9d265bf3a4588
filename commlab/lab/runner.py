"""The batch runner behind ``commlab run``: execute notebooks headlessly, collect their claims.

Each notebook runs in its own child process (:mod:`commlab.lab.execute`), in a session of its own,
with its own folder as working directory and its share of the cores; the executed copy goes to
``out_dir/<area>/<slug>.ipynb`` with a log beside it. With ``seeds``, each notebook runs once per seed
(``out_dir/seed-<k>/<area>/<slug>.ipynb``, its quick figures under ``out_dir/seed-<k>/figures/``),
and its summary entry combines the runs (:func:`commlab.lab.summary.combine`). A notebook that errors
or times out never stops the others. After every finished notebook, ``summary.json`` and ``summary.md`` are rewritten
atomically. One batch at a time writes into an output folder (:mod:`commlab.lab.lock`).

SIGINT (Ctrl-C) or SIGTERM stops the batch: no queued notebook starts, every running executor and
its kernel and their children are killed, and the summary records the signal, what finished and
what never started (the CLI then exits with 128 + the signal's number: 130 or 143).

A notebook's ``status`` is one of :data:`STATUSES`.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import psutil

from commlab.lab import summary as summaries
from commlab.lab.claims import MIME
from commlab.lab.lock import RunLock
from commlab.lab.notebooks import NotebookInfo, check_parameters, parameters, read_cells
from commlab.lab.paths import git_commit
from commlab.lab.progress import Progress

STATUSES = ("ok", "claims_failed", "error", "timeout", "interrupted", "not_started")
"""``ok``: ran to the end and no blocking claim failed; ``claims_failed``: ran to the end but a
blocking claim failed; ``error``: a cell raised or the notebook could not be read or started;
``timeout``: killed after ``--timeout`` seconds; ``interrupted``: killed by a signal to the batch;
``not_started``: still queued when the batch was stopped."""

POLL_S = 0.5
"""How often the batch loop looks at signals, finished notebooks and the progress display, in seconds."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "COMMLAB_THREADS")


def available_cores() -> int:
    """Cores this process may use (affinity-aware)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def read_claims(executed: Path) -> dict | None:
    """The last claims record (MIME :data:`commlab.lab.claims.MIME`) in an executed notebook."""
    record = None
    for cell in read_cells(executed) or []:
        for output in cell.get("outputs", []):
            if MIME in output.get("data", {}):
                record = output["data"][MIME]
    return record


def _while_running(executed: Path) -> str:
    """`` while cell N was running`` for the cell papermill marked as running, else ``""``."""
    for index, cell in enumerate(read_cells(executed) or []):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return f" while cell {index} was running"
    return ""


def kill_trees(pids) -> None:
    """Terminate each process in ``pids`` with all its descendants, then kill what is left after 5 s.

    Every family is collected before anything is signalled, so a child whose parent dies first is
    not lost (the kernel runs in a session of its own, but it is still a descendant of its executor).
    """
    family = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
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


class Batch:
    """What the batch loop and the notebook threads share: the stop request and the running executors."""

    def __init__(self):
        self.stop = threading.Event()
        self.signal: int | None = None
        self._lock = threading.Lock()
        self._running: dict[str, tuple[subprocess.Popen, float]] = {}
        self._killed: set[int] = set()

    def request_stop(self, signum: int, _frame=None) -> None:
        """A signal handler: remember the first signal and stop the batch (the loop does the killing)."""
        self.signal = self.signal or signum
        self.stop.set()

    def start(self, key: str, command: list[str], **popen) -> subprocess.Popen | None:
        """Start an executor in its own session unless the batch is stopping (then None)."""
        with self._lock:
            if self.stop.is_set():
                return None
            proc = subprocess.Popen(command, start_new_session=True, **popen)
            self._running[key] = (proc, time.monotonic())
            return proc

    def finished(self, key: str) -> None:
        with self._lock:
            self._running.pop(key, None)

    def running(self) -> dict[str, float]:
        """``{key: start time}`` of the executors running now."""
        with self._lock:
            return {key: started for key, (_, started) in self._running.items()}

    def kill_running(self) -> None:
        with self._lock:
            pids = [proc.pid for proc, _ in self._running.values() if proc.pid not in self._killed]
            self._killed.update(pids)
        kill_trees(pids)


def _task_key(nb: NotebookInfo, seed: int | None) -> str:
    """How the progress display and the batch name one run: ``<area>/<slug>`` [`` seed <k>``]."""
    return nb.key if seed is None else f"{nb.key} seed {seed}"


def _run_dir(out_dir: Path, seed: int | None) -> Path:
    """The folder a run writes into: ``out_dir``, or ``out_dir/seed-<k>`` for a run of a seed sweep."""
    return out_dir if seed is None else out_dir / f"seed-{seed}"


def _run_record(seed: int | None, out_dir: Path, executed: Path, *, status: str, seconds: float = 0.0,
                error: str | None = None, attempts: int = 0, record: dict | None = None) -> dict:
    """One run of one notebook as ``summary.json`` keeps it under ``runs``; ``record`` is the claims
    record read back from the executed notebook, if any."""
    record = record or {}
    return {"seed": seed, "status": status, "seconds": seconds, "cpu_seconds": record.get("cpu_seconds"),
            "error": error, "attempts": attempts, "executed": executed.relative_to(out_dir).as_posix(),
            "claims": record.get("claims", [])}


def _entry(nb: NotebookInfo, params: dict, runs: list[dict]) -> dict:
    """A notebook's ``summary.json`` entry: its runs (one per seed) and what they add up to."""
    return {"path": nb.display_path, "title": nb.title, "area": nb.area, "tier": nb.tier,
            "parameters": params, **summaries.combine(runs)}


def run_one(nb: NotebookInfo, *, out_dir: Path, timeout: float, params: dict, threads: int,
            seed: int | None = None, batch: Batch | None = None, progress: Progress | None = None) -> dict:
    """Execute one notebook once and return the record of that run (see :func:`_run_record`).

    ``params`` are passed to the notebook (with ``profile``); ``seed``, when given, is passed as its
    ``seed`` parameter and the run writes into ``out_dir/seed-<seed>/``.
    """
    batch = batch or Batch()
    folder = _run_dir(out_dir, seed)
    executed = folder / nb.rel
    if nb.error is not None:
        return _run_record(seed, out_dir, executed, status="error", error=nb.error)
    if seed is not None:
        params = {**params, "seed": seed}
    key = _task_key(nb, seed)
    log = executed.with_suffix(".log")
    result_file = executed.with_suffix(".result.json")
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)  # never read back claims of an earlier run
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update(COMMLAB_RUN_DIR=str(folder), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "commlab.lab.execute", str(nb.path), str(executed),
               "--cwd", str(nb.path.parent), "--parameters", json.dumps(params), "--result", str(result_file)]
    start = time.monotonic()
    status, error, attempts = "error", None, 0
    for attempts in (1, 2):
        result_file.unlink(missing_ok=True)
        with open(log, "w" if attempts == 1 else "a", encoding="utf-8") as handle:
            handle.write(f"--- attempt {attempts}: {' '.join(command)}\n")
            handle.flush()
            proc = batch.start(key, command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
            if proc is None:
                return _run_record(seed, out_dir, executed,
                                   status="not_started" if attempts == 1 else "interrupted",
                                   seconds=round(time.monotonic() - start, 2), attempts=attempts - 1)
            if attempts == 1 and progress is not None:
                progress.started(key)
            try:
                proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                kill_trees([proc.pid])
                status, error = "timeout", f"timed out after {timeout:g} s{_while_running(executed)}"
                break
            finally:
                batch.finished(key)
        try:
            outcome = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if batch.stop.is_set():
                status = "interrupted"
                error = f"stopped by {signal.Signals(batch.signal).name}{_while_running(executed)}"
            else:
                status, error = "error", f"executor exited with code {proc.returncode}; see {log.name}"
            break
        result_file.unlink(missing_ok=True)
        if outcome["outcome"] == "kernel_start" and attempts == 1:
            continue
        if outcome["outcome"] == "kernel_start":
            status, error = "error", f"kernel failed to start twice: {outcome['error']}"
        elif outcome["outcome"] == "ok":
            status, error = "ok", None
        elif outcome["outcome"] == "claims_failed":
            status, error = "claims_failed", None  # the failed claims themselves are in the claims
        else:
            status, error = "error", outcome["error"]
        break
    return _run_record(seed, out_dir, executed, status=status, error=error, attempts=attempts,
                       seconds=round(time.monotonic() - start, 2), record=read_claims(executed))


def _prepare(out_dir: Path) -> Path:
    """Create ``out_dir`` and check that it is writable; an ``OSError`` says which folder and why."""
    out_dir = Path(out_dir).resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(f"cannot write into the output folder {out_dir}: {error.strerror or error}") from None
    return out_dir


def run(notebooks: list[NotebookInfo], *, profile: str = "quick", out_dir: Path, jobs: int | None = None,
        timeout: float = 1800.0, params: dict | None = None, seeds: list[int] | None = None,
        progress: bool = True) -> dict:
    """Execute ``notebooks`` and return the summary (also written to ``out_dir``).

    Args:
        notebooks: from :func:`commlab.lab.notebooks.select`; at least one.
        profile: passed to every notebook as the ``profile`` parameter.
        out_dir: where executed copies, logs, figures of quick runs and the summaries go; it must
            be writable and no other batch may be writing into it.
        jobs: runs at once (default: the number of cores); each gets ``max(1, cores // jobs)`` threads.
        timeout: wall-clock seconds allowed per notebook.
        params: extra parameters; every name must exist in each notebook's ``parameters`` cell and
            every value must have the type of its literal there (checked before anything runs).
        seeds: run every notebook once per seed (its ``seed`` parameter; distinct non-negative
            integers); None runs each once with the seed its parameters cell sets.
        progress: show which notebooks are running (:mod:`commlab.lab.progress`).

    Raises:
        ValueError: bad arguments, unknown parameters or values of the wrong type.
        OSError: ``out_dir`` cannot be written.
        commlab.lab.lock.BatchLocked: another batch is writing into ``out_dir``.
    """
    params = dict(params or {})
    if not notebooks:
        raise ValueError("no notebooks to run")
    if "profile" in params:
        raise ValueError("pass the profile with --profile, not as a parameter")
    if seeds is not None:
        seeds = check_seeds(seeds)
        if "seed" in params:
            raise ValueError("pass the seeds with --seeds or the seed with -p seed, not both")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    check_parameters(notebooks, params if seeds is None else {**params, "seed": seeds[0]})
    out_dir = _prepare(out_dir)
    with RunLock(out_dir):
        return _run_batch(notebooks, profile=profile, out_dir=out_dir, jobs=jobs, timeout=timeout,
                          params=params, seeds=seeds, progress=progress)


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a list of distinct non-negative integers in the order given, or a ``ValueError``."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative integers, got {bad}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"seeds must be distinct; listed more than once: {repeated}")
    return seeds


def _seed_used(nb: NotebookInfo, params: dict) -> int | None:
    """The seed a run without ``seeds`` used: ``-p seed``, else the literal in the notebook's
    ``parameters`` cell (None when it has none or it is not an integer literal)."""
    if "seed" in params:
        return params["seed"]
    if nb.error is not None:
        return None
    try:
        seed = ast.literal_eval(parameters(nb.path).get("seed", "None"))
    except (ValueError, SyntaxError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _run_batch(notebooks, *, profile, out_dir, jobs, timeout, params, seeds, progress) -> dict:
    tasks = [(nb, seed) for nb in notebooks for seed in (seeds or [None])]
    cores = available_cores()
    jobs = min(jobs or cores, len(tasks))
    threads = max(1, cores // jobs)
    summary = {"profile": profile, "commit": git_commit(), "jobs": jobs, "threads_per_job": threads,
               "selected": len(notebooks), "seeds": seeds, "interrupted": None, "notebooks": []}
    runs: dict[str, list[dict]] = {}
    summaries.write(summary, out_dir)
    batch = Batch()
    watching = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, batch.request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
                } if watching else {}
    display = Progress(len(tasks), enabled=progress)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            pending = {pool.submit(run_one, nb, out_dir=out_dir, timeout=timeout,
                                   params={"profile": profile, **params}, threads=threads, seed=seed,
                                   batch=batch, progress=display): (nb, seed)
                       for nb, seed in tasks}
            while pending:
                done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    nb, seed = pending.pop(future)
                    record = (_run_record(seed, out_dir, _run_dir(out_dir, seed) / nb.rel, status="not_started")
                              if future.cancelled() else future.result())
                    if seed is None:
                        record["seed"] = _seed_used(nb, params)
                    runs.setdefault(nb.display_path, []).append(record)
                    order = {seed: i for i, seed in enumerate(seeds or [])}
                    summary["notebooks"] = [
                        _entry(n, params, sorted(runs[n.display_path], key=lambda r: order.get(r["seed"], 0)))
                        for n in sorted(notebooks, key=lambda n: n.display_path) if n.display_path in runs]
                    summaries.write(summary, out_dir)
                    if record["status"] != "not_started":
                        display.done(_task_key(nb, seed), record["status"], record["seconds"])
                if batch.stop.is_set():
                    if summary["interrupted"] is None:
                        summary["interrupted"] = signal.Signals(batch.signal).name
                        display.message(f"{summary['interrupted']}: stopping; no queued notebook will start")
                    for future in pending:
                        future.cancel()
                    batch.kill_running()
                display.tick(batch.running())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        display.close()
    summaries.write(summary, out_dir)
    return summary
