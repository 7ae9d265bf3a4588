"""``commlab run | list | report`` — the lab's command line.

* ``commlab run [PATTERN ...] [--profile quick|full] [--seeds 0-4] [--jobs N] [--out DIR] [--timeout S]
  [-p NAME VALUE ...]`` executes matching notebooks headlessly (once per seed with ``--seeds``; ``0-4``,
  ``0,3,7`` or ``0-2,9``) and writes ``DIR/summary.json`` and ``DIR/summary.md``;
  exit status 1 when a notebook errored or timed out or a blocking claim failed, 2 for bad input
  (checked before any kernel starts) or when another run writes into ``DIR``, 130 / 143 when
  stopped by SIGINT / SIGTERM.
* ``commlab list`` prints every notebook with area, tier and paper title (``--write-index``
  regenerates ``notebooks/README.md``).
* ``commlab report [SUMMARY] [--partial]`` turns a ``summary.json`` into ``RESULTS.md``.
* ``commlab data fetch [NAME ...]`` provisions the datasets the notebooks and tests need.
"""

from __future__ import annotations

import argparse
import ast
import signal
import sys
from pathlib import Path

from commlab._files import atomic_write_text
from commlab.lab import notebooks as nbs
from commlab.lab import summary as summaries
from commlab.lab.lock import BatchLocked
from commlab.lab.paths import PROFILES, project_root, runs_dir

DEFAULT_TIMEOUT = {"quick": 600.0, "full": 4 * 3600.0}
LIST_WIDTH = 100
"""``commlab list`` fits its lines into this many columns."""


def _value(text: str):
    """A ``-p`` value: a Python literal when it parses as one (``3``, ``0.5``, ``True``, ``[1, 2]``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``"0-4"`` → ``[0, 1, 2, 3, 4]``, ``"0,3,7"``, ``"0-2,9"``; ``ValueError`` otherwise."""
    seeds = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"--seeds takes non-negative integers and ranges like 0-4 or 0,3,7; got {text!r}")
        low, high = int(low), int(high) if dash else int(low)
        if high < low:
            raise ValueError(f"--seeds: the range {part.strip()!r} ends before it starts")
        seeds += range(low, high + 1)
    return seeds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", type=Path, default=None,
                        help="notebooks folder (default: notebooks/ of the project root)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute notebooks headlessly and score their claims")
    run.add_argument("patterns", nargs="*", metavar="PATTERN",
                     help="notebook path, glob over <area>/<slug> or substring (default: all)")
    run.add_argument("--profile", choices=PROFILES, default="quick")
    run.add_argument("--seeds", default=None, metavar="SEEDS",
                     help="run every notebook once per seed and report pass counts and ranges per claim "
                          "(0-4, 0,3,7 or 0-2,9)")
    run.add_argument("--jobs", type=int, default=None, help="runs at once (default: number of cores)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<profile>/)")
    run.add_argument("--timeout", type=float, default=None,
                     help="wall-clock seconds per notebook (default: 600 quick, 14400 full)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (checked against its parameters cell)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    listing = sub.add_parser("list", help="list notebooks with area, tier and paper title")
    listing.add_argument("--write-index", action="store_true", help="regenerate notebooks/README.md")

    report = sub.add_parser("report", help="turn a summary.json into RESULTS.md")
    report.add_argument("summary", type=Path, nargs="?", default=None,
                        help="summary.json (default: runs/quick/summary.json)")
    report.add_argument("--out", type=Path, default=None, help="output file (default: RESULTS.md at the root)")
    report.add_argument("--partial", action="store_true",
                        help="merge this batch's notebooks into RESULTS.md, keeping the others")

    data = sub.add_parser("data", help="provision the datasets the notebooks and tests need")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="find, install (apt) or download every dataset, verified")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: all)")
    return parser


def _run(args, notebooks_dir: Path) -> int:
    from commlab.lab import runner

    params = {}
    for name, value in args.parameter:
        if not name.isidentifier():
            raise ValueError(f"parameter name must be a Python identifier, got {name!r}")
        params[name] = _value(value)
    selected = nbs.select(notebooks_dir, args.patterns)
    if not selected:
        raise ValueError(f"no notebooks to run under {notebooks_dir}")
    _warn_unreadable(selected)
    out_dir = args.out or runs_dir(args.profile, project_root())
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT[args.profile]
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    summary = runner.run(selected, profile=args.profile, out_dir=out_dir, jobs=args.jobs, timeout=timeout,
                         params=params, seeds=seeds, progress=not args.no_progress)
    print(summaries.markdown(summary))
    print(f"summary: {Path(out_dir) / 'summary.md'}")
    if summary["interrupted"]:
        return 128 + signal.Signals[summary["interrupted"]].value
    return 1 if summaries.failed(summary) else 0


def _warn_unreadable(found) -> bool:
    """Name every unreadable notebook on stderr; True when there was one."""
    broken = [nb for nb in found if nb.error is not None]
    for nb in broken:
        print(f"commlab: error: {nb.error}", file=sys.stderr)
    return bool(broken)


def list_lines(found, width: int = LIST_WIDTH) -> list[str]:
    """``commlab list``'s header and one row per notebook, each at most ``width`` columns: titles
    that do not fit are cut with ``…`` (the full titles are in ``notebooks/README.md``)."""
    readable = [nb for nb in found if nb.error is None]
    key_width = max([len("notebook")] + [len(nb.key) for nb in readable])
    rows = [("notebook", "tier", "year", "paper")]
    rows += [(nb.key, nb.tier, str(nb.meta.get("year") or "-"), nb.title) for nb in readable]
    lines = []
    for key, tier, year, title in rows:
        line = f"{key:{key_width}s}  {tier:4s}  {year:4s}  {title}"
        lines.append(line if len(line) <= width else line[:width - 1] + "…")
    return lines


def _list(args, notebooks_dir: Path) -> int:
    found = nbs.discover(notebooks_dir)
    broken = _warn_unreadable(found)
    if args.write_index:
        atomic_write_text(notebooks_dir / "README.md", nbs.index_markdown(found))
        print(f"wrote {notebooks_dir / 'README.md'} ({sum(nb.error is None for nb in found)} notebooks)")
        return 1 if broken else 0
    if not found:
        print("no notebooks yet")
    else:
        print("\n".join(list_lines(found)))
    return 1 if broken else 0


def _report(args) -> int:
    root = project_root()
    path = args.summary or runs_dir("quick", root) / "summary.json"
    out = summaries.write_results(path, root, args.out or root / "RESULTS.md", partial=args.partial)
    print(f"wrote {out}")
    return 0


def _data(args) -> int:
    from commlab.data import provision

    for done in provision.provision(args.names):
        print(f"{done.name:14s} {done.route:9s} {done.location}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    notebooks_dir = (args.notebooks or project_root() / "notebooks").resolve()
    try:
        if args.command == "data":
            return _data(args)
        if args.command == "report":
            return _report(args)
        if not notebooks_dir.is_dir():
            raise ValueError(f"notebooks folder {notebooks_dir} does not exist (use --notebooks DIR)")
        if args.command == "run":
            return _run(args, notebooks_dir)
        return _list(args, notebooks_dir)
    except (ValueError, OSError, BatchLocked) as error:
        print(f"commlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
