"""One batch per output folder: an advisory lock that a dead run cannot leave behind.

``commlab run`` holds an exclusive ``flock`` on ``<out>/.commlab-run.lock`` for as long as it runs.
The operating system drops the lock when the holding process ends, however it ends (a crash,
``kill -9``), so a lock file left on disk by a dead run never blocks the next one: only a live
holder does. The file itself records who holds it, for the message a second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".commlab-run.lock"


class BatchLocked(RuntimeError):
    """Another live ``commlab run`` is writing into the same output folder."""


class RunLock:
    """``with RunLock(out_dir):`` — hold ``out_dir``'s batch lock, or raise :class:`BatchLocked` at once."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self.path)
            os.close(fd)
            raise BatchLocked(
                f"another `commlab run` ({holder}) is writing into {self.path.parent}; "
                f"wait for it to finish or pass a different --out"
            ) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, json.dumps(record).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {record['pid']} on {record['host']}, started {record['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
