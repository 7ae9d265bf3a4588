"""Execute one notebook with papermill in a child process of the batch runner.

Run as ``python -m commlab.lab.execute INPUT OUTPUT --cwd DIR --parameters JSON --result FILE``.
The outcome goes to ``FILE`` as JSON: ``{"outcome": "ok" | "claims_failed" | "error" |
"kernel_start", "error": str | null}``. ``kernel_start`` means no cell ever started (the kernel
could not be launched), which the runner retries once. Keeping each notebook in its own process
lets the runner enforce a wall-clock timeout and kill the kernel with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from commlab._files import atomic_write_text
from commlab.lab.notebooks import read_cells

CLAIMS_EXCEPTION = "ClaimsFailed"


def _any_cell_started(output: Path) -> bool:
    cells = read_cells(output) or []
    return any(cell.get("metadata", {}).get("papermill", {}).get("start_time") for cell in cells)


def execute(input_path: Path, output_path: Path, cwd: Path, parameters: dict) -> dict:
    """Run the notebook and classify the outcome (see module docstring)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(
            str(input_path), str(output_path), parameters=parameters, cwd=str(cwd),
            progress_bar=False, log_output=False, request_save_on_cell_execute=True, start_timeout=120,
        )
    except PapermillExecutionError as error:
        outcome = "claims_failed" if error.ename == CLAIMS_EXCEPTION else "error"
        where = f"cell {error.cell_index} of the executed copy"
        return {"outcome": outcome, "error": f"{error.ename}: {error.evalue} ({where})"}
    except Exception as error:  # noqa: BLE001 - anything else is reported, never raised
        outcome = "error" if _any_cell_started(output_path) else "kernel_start"
        return {"outcome": outcome, "error": f"{type(error).__name__}: {error}"}
    return {"outcome": "ok", "error": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--cwd", type=Path, required=True)
    parser.add_argument("--parameters", default="{}")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = execute(args.input, args.output, args.cwd, json.loads(args.parameters))
    atomic_write_text(args.result, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
