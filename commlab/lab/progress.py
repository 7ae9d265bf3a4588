"""What a person watching ``commlab run`` sees: which notebooks (and seeds) are running now, for how long.

On a terminal a progress bar whose postfix names every running notebook with its elapsed seconds,
redrawn every :data:`REFRESH_S` seconds. Elsewhere (a CI log, a pipe) one line when a notebook
starts or finishes and a ``running:`` line every :data:`HEARTBEAT_S` seconds, so a log never
shows a long silence without saying what is going on.
"""

from __future__ import annotations

import sys
import time

REFRESH_S = 2.0
HEARTBEAT_S = 30.0


def _running(running: dict[str, float], now: float) -> str:
    return ", ".join(f"{key} {now - start:.0f} s" for key, start in sorted(running.items())) or "-"


class Progress:
    """Progress of a batch of ``total`` runs (notebooks × seeds); ``enabled=False`` shows nothing."""

    def __init__(self, total: int, *, enabled: bool = True, stream=None):
        self.total, self.enabled = total, enabled
        self.stream = stream or sys.stderr
        self.finished = 0
        self._bar = None
        self._last = time.monotonic()
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="run", desc="notebook runs", file=self.stream,
                             dynamic_ncols=True)

    def _line(self, text: str) -> None:
        print(f"[{self.finished}/{self.total}] {text}", file=self.stream, flush=True)

    def started(self, key: str) -> None:
        if self.enabled and self._bar is None:
            self._line(f"started {key}")

    def done(self, key: str, status: str, seconds: float) -> None:
        """A run named ``key`` (``<area>/<slug>`` [``seed <k>``]) finished with ``status`` after ``seconds``."""
        self.finished += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update()
        else:
            self._line(f"{status} {key} ({seconds:.0f} s)")

    def tick(self, running: dict[str, float]) -> None:
        """Called often by the runner with ``{key: start time (monotonic)}`` of the running notebooks."""
        now = time.monotonic()
        if not self.enabled:
            return
        if self._bar is not None and now - self._last >= REFRESH_S:
            self._bar.set_postfix_str(f"running: {_running(running, now)}", refresh=True)
            self._last = now
        elif self._bar is None and running and now - self._last >= HEARTBEAT_S:
            self._line(f"running: {_running(running, now)}")
            self._last = now

    def message(self, text: str) -> None:
        if self.enabled and self._bar is not None:
            self._bar.write(text, file=self.stream)
        elif self.enabled:
            self._line(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
