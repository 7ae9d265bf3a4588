"""``commlab run | list | report`` — the lab's command line.

* ``commlab run [PATTERN ...] [--profile quick|full] [--jobs N] [--out DIR] [--timeout S] [-p NAME VALUE ...]``
  executes matching notebooks headlessly and writes ``DIR/summary.json`` and ``DIR/summary.md``;
  exit status 1 when a notebook errored or timed out or a blocking claim failed.
* ``commlab list`` prints every notebook with area, tier and paper title (``--write-index``
  regenerates ``notebooks/README.md``).
* ``commlab report [SUMMARY]`` turns a ``summary.json`` into ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from commlab.lab import notebooks as nbs
from commlab.lab import summary as summaries
from commlab.lab.files import atomic_write_text
from commlab.lab.paths import project_root, runs_dir
from commlab.lab.session import PROFILES

DEFAULT_TIMEOUT = {"quick": 600.0, "full": 4 * 3600.0}


def _value(text: str):
    """A ``-p`` value: a Python literal when it parses as one (``3``, ``0.5``, ``True``, ``[1, 2]``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
    run.add_argument("--jobs", type=int, default=None, help="notebooks at once (default: number of cores)")
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
    return parser


def _run(args, notebooks_dir: Path) -> int:
    from commlab.lab import runner

    params = {}
    for name, value in args.parameter:
        if not name.isidentifier():
            raise ValueError(f"parameter name must be a Python identifier, got {name!r}")
        params[name] = _value(value)
    selected = nbs.select(notebooks_dir, args.patterns)
    out_dir = args.out or runs_dir(args.profile, project_root())
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT[args.profile]
    summary = runner.run(selected, profile=args.profile, out_dir=out_dir, jobs=args.jobs, timeout=timeout,
                         params=params, progress=not args.no_progress)
    print(summaries.markdown(summary))
    print(f"summary: {Path(out_dir) / 'summary.md'}")
    return 1 if summaries.failed(summary) else 0


def _list(args, notebooks_dir: Path) -> int:
    found = nbs.discover(notebooks_dir)
    if args.write_index:
        atomic_write_text(notebooks_dir / "README.md", nbs.index_markdown(found))
        print(f"wrote {notebooks_dir / 'README.md'} ({len(found)} notebooks)")
        return 0
    if not found:
        print("no notebooks yet")
    for nb in found:
        print(f"{nb.key:55s} {nb.area:12s} {nb.tier:3s} {nb.title}")
    return 0


def _report(args) -> int:
    root = project_root()
    path = args.summary or runs_dir("quick", root) / "summary.json"
    out = summaries.write_results(path, root, args.out or root / "RESULTS.md")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    notebooks_dir = (args.notebooks or project_root() / "notebooks").resolve()
    try:
        if args.command != "report" and not notebooks_dir.is_dir():
            raise ValueError(f"notebooks folder {notebooks_dir} does not exist (use --notebooks DIR)")
        if args.command == "run":
            return _run(args, notebooks_dir)
        if args.command == "list":
            return _list(args, notebooks_dir)
        return _report(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"commlab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
