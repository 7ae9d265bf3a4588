"""Every benchmark script runs end to end at a small size (``--smoke``), so none of them rots.

Timings are never asserted here (benchmarks/README.md): only that the script completes, checks the
agreement it is meant to check, and prints its ratio.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_at_smoke_size(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--smoke", "--threads", "1"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=script.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"(speed-up|ratio)[^\n]*?\d+(\.\d+)?x", done.stdout, re.IGNORECASE), done.stdout
