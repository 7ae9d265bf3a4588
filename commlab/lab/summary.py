"""The runner's scoreboard: ``summary.json``, ``summary.md`` and the project's ``RESULTS.md``.

``summary.json`` has the shape other tools read::

    {"profile": str, "selected": int, "interrupted": null | "SIGINT" | "SIGTERM",
     "notebooks": [{"path": "notebooks/<area>/<slug>.ipynb", "status": one of runner.STATUSES,
      "seconds": float, "error": str | null, "parameters": {name: value set with -p},
      "claims": [{"id", "statement", "measured", "expected", "passed", "status", "blocking", ...}]}]}

plus informative extras (commit, jobs, cpu_seconds, title, tier, ...).

``RESULTS.md`` is written from a summary by :func:`write_results`, together with ``RESULTS.json``
beside it (the entries it shows, each with the commit and profile of its batch), so that a later
partial batch can be merged into it notebook by notebook.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from commlab._files import atomic_write_text

LABELS = {"ok": "ok", "claims_failed": "claims failed", "error": "error", "timeout": "timeout",
          "interrupted": "interrupted", "not_started": "not started"}
"""How each status is written in ``summary.md`` and ``RESULTS.md``."""


def blocking_failures(entry: dict) -> list[dict]:
    """Claims of a notebook entry that failed and are blocking."""
    return [c for c in entry["claims"] if c.get("status") == "fail" and c.get("blocking", True)]


def failed(summary: dict) -> bool:
    """True unless the batch ran at least one notebook, was not interrupted, and every notebook
    ran to the end with no blocking claim failing."""
    entries = summary["notebooks"]
    return (not entries or bool(summary.get("interrupted"))
            or any(e["status"] != "ok" or blocking_failures(e) for e in entries))


def _counts(entry: dict) -> tuple[int, int]:
    applicable = [c for c in entry["claims"] if c.get("status") != "skip"]
    return sum(c["passed"] for c in applicable), len(applicable)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _measured(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _cell(value)


def _parameters(entry: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in (entry.get("parameters") or {}).items())


def verdict(summary: dict) -> str:
    """One line: all passed, failed (with the count of each status), interrupted, or nothing ran."""
    entries = summary["notebooks"]
    selected = summary.get("selected", len(entries))
    if not entries:
        return "**NOTHING RAN** — no notebook was run."
    by_status = {}
    for e in entries:
        by_status[e["status"]] = by_status.get(e["status"], 0) + 1
    counts = ", ".join(f"{n} {LABELS.get(s, s)}" for s, n in sorted(by_status.items()))
    if summary.get("interrupted"):
        done = sum(e["status"] not in ("interrupted", "not_started") for e in entries)
        return (f"**INTERRUPTED** by {summary['interrupted']} — {done} of {selected} notebooks finished "
                f"({counts}).")
    if failed(summary):
        return f"**FAILED** — {counts} of {selected} notebooks."
    return f"**all passed** — {len(entries)}/{selected} notebooks ran to the end with every blocking claim holding."


def markdown(summary: dict) -> str:
    """``summary.md``: one row per notebook, then the details of what went wrong."""
    entries = summary["notebooks"]
    lines = [f"# commlab run — profile `{summary['profile']}`", ""]
    if "commit" in summary:
        lines += [f"Commit `{summary['commit']}`, {summary.get('jobs', '?')} job(s) at once, "
                  f"{summary.get('threads_per_job', '?')} thread(s) each.", ""]
    lines += [verdict(summary), ""]
    if not entries:
        return "\n".join(lines) + "\n"
    lines += ["| notebook | status | wall s | CPU s | claims passed | -p parameters | error |",
              "|---|---|---|---|---|---|---|"]
    for e in entries:
        passed, total = _counts(e)
        cpu = "" if e.get("cpu_seconds") is None else f"{e['cpu_seconds']:.1f}"
        lines.append(f"| `{e['path']}` | {LABELS.get(e['status'], e['status'])} | {e['seconds']:.1f} | {cpu} "
                     f"| {passed}/{total} | {_cell(_parameters(e))} | {_cell(e['error'] or '')} |")
    problems = [e for e in entries
                if e["status"] not in ("ok", "not_started") or any(c.get("status") == "fail" for c in e["claims"])
                or (e["status"] == "ok" and not e["claims"])]
    for e in problems:
        lines += ["", f"## `{e['path']}`", ""]
        if e["error"]:
            lines.append(f"- **{LABELS.get(e['status'], e['status'])}**: {e['error']}")
        if e["status"] == "ok" and not e["claims"]:
            lines.append("- no claims were recorded (the notebook has no `claims` cell calling `Claims.report`)")
        for c in e["claims"]:
            if c.get("status") == "fail":
                kind = "FAIL" if c.get("blocking", True) else "not reproduced at this scale (non-blocking)"
                lines.append(f"- `{c['id']}` {kind}: measured {_measured(c['measured'])}, "
                             f"expected {c['expected']} — {c['statement']}")
    return "\n".join(lines) + "\n"


def write(summary: dict, out_dir: Path) -> None:
    """Write ``summary.json`` and ``summary.md`` into ``out_dir``, each atomically."""
    atomic_write_text(Path(out_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(Path(out_dir) / "summary.md", markdown(summary))


def load(path: Path) -> dict:
    """Read a ``summary.json`` and check its shape."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no summary here; run `commlab run` first") from None
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(summary, dict) or "profile" not in summary or "notebooks" not in summary:
        raise ValueError(f"{path}: not a commlab summary.json (needs 'profile' and 'notebooks')")
    return summary


def _committed(root: Path, folder: Path) -> list[Path]:
    """PNG files under ``folder`` that git tracks in ``root`` (none when ``root`` is not a checkout)."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", str(folder)],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(root / name for name in listed.split("\0") if name.endswith(".png"))


def results_markdown(entries: list[dict], root: Path, sources: list[str]) -> str:
    """``RESULTS.md``: per paper, claims passed/total, measured against expected, figures.

    Figures are linked only where git tracks them (``figures/<area>/<slug>/``); figures that the
    batch wrote into its own run folder are named, not linked (``runs/`` is not committed).
    """
    root = Path(root).resolve()
    lines = ["# Results", "", "Generated by `commlab report` from " + "; ".join(sources) + ".",
             "Non-blocking claims that failed are shown as *not reproduced at this scale*.", ""]
    if not entries:
        return "\n".join(lines + ["No notebooks were run."]) + "\n"
    lines += ["| paper | notebook | status | claims passed |", "|---|---|---|---|"]
    for e in entries:
        passed, total = _counts(e)
        lines.append(f"| {_cell(e.get('title', '?'))} | `{e['path']}` | {LABELS.get(e['status'], e['status'])} "
                     f"| {passed}/{total} |")
    for e in entries:
        key = e["path"].removeprefix("notebooks/").removesuffix(".ipynb")
        origin = f"profile `{e.get('profile', '?')}`, commit `{e.get('commit', '?')}`"
        if e.get("parameters"):
            origin += f", -p {_parameters(e)}"
        lines += ["", f"## {e.get('title', key)}", "",
                  f"Notebook `{e['path']}` ({origin}) — status **{LABELS.get(e['status'], e['status'])}**"
                  + (f": {e['error']}" if e["error"] else "") + ".", ""]
        if e["claims"]:
            lines += ["| claim | statement | measured | expected | result |", "|---|---|---|---|---|"]
            for c in e["claims"]:
                result = {"pass": "pass", "skip": "skipped (other profile)"}.get(c.get("status"), "FAIL")
                if c.get("status") == "fail" and not c.get("blocking", True):
                    result = "not reproduced at this scale"
                lines.append(f"| `{c['id']}` | {_cell(c['statement'])} | {_measured(c['measured'])} "
                             f"| {_cell(c['expected'])} | {result} |")
        else:
            lines.append("No claims recorded.")
        committed = _committed(root, root / "figures" / key)
        if committed:
            lines += ["", "Figures (full profile, committed): "
                      + ", ".join(f"[{p.stem}]({p.relative_to(root).as_posix()})" for p in committed)]
        quick = e.get("run_figures") or []
        if quick:
            lines += ["", f"Figures of this `{e.get('profile', '?')}` run (written under the run's "
                      f"`figures/{key}/`, not committed): " + ", ".join(f"`{name}`" for name in quick)]
    return "\n".join(lines) + "\n"


_LISTED = re.compile(r"^\| .* \| `(notebooks/[^`]+\.ipynb)` \| ", re.MULTILINE)


def listed_notebooks(results: Path) -> list[str]:
    """The notebook paths in the table of an existing ``RESULTS.md`` (empty when there is none)."""
    try:
        return _LISTED.findall(Path(results).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


def _with_origin(summary: dict, summary_path: Path) -> list[dict]:
    """The summary's finished entries, each stamped with its batch's profile and commit, and the
    names of the figures it wrote into the run folder."""
    run_figures = Path(summary_path).parent / "figures"
    stamped = []
    for e in summary["notebooks"]:
        if e["status"] in ("interrupted", "not_started"):
            continue
        key = e["path"].removeprefix("notebooks/").removesuffix(".ipynb")
        names = sorted(p.stem for p in (run_figures / key).glob("*.png"))
        stamped.append({**e, "profile": summary["profile"], "commit": summary.get("commit", "unknown"),
                        "run_figures": names if summary["profile"] != "full" else []})
    return stamped


def write_results(summary_path: Path, root: Path, out: Path, *, partial: bool = False) -> Path:
    """Turn ``summary_path`` into ``out`` (``RESULTS.md``) and ``out`` with suffix ``.json``, atomically.

    Without ``partial``, refuses (``ValueError``) a batch that was interrupted or covers fewer
    notebooks than ``out`` lists now. With ``partial``, the batch's finished notebooks replace
    theirs in ``RESULTS.json`` and the others are kept.
    """
    summary = load(summary_path)
    out, record = Path(out), Path(out).with_suffix(".json")
    new = _with_origin(summary, summary_path)
    source = f"`{_relative(summary_path, root)}` (profile `{summary['profile']}`, commit " \
             f"`{summary.get('commit', 'unknown')}`)"
    if partial:
        try:
            kept = json.loads(record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"--partial merges into {record.name}, which does not exist beside {out.name}; "
                             f"report a complete batch first") from None
        replaced = {e["path"] for e in new}
        entries = sorted([e for e in kept["notebooks"] if e["path"] not in replaced] + new, key=lambda e: e["path"])
        sources = list(dict.fromkeys([*kept.get("sources", []), source]))
    else:
        if summary.get("interrupted"):
            raise ValueError(f"{summary_path}: the batch was interrupted ({summary['interrupted']}); "
                             f"rerun it, or merge what finished with --partial")
        listed = set(listed_notebooks(out))
        missing = sorted(listed - {e["path"] for e in new})
        if missing:
            raise ValueError(f"{summary_path} covers {len(new)} notebooks but {out.name} lists {len(listed)}; "
                             f"missing: {', '.join(missing)}. Run them all, or merge with --partial")
        entries, sources = new, [source]
    atomic_write_text(record, json.dumps({"sources": sources, "notebooks": entries}, indent=1) + "\n")
    return atomic_write_text(out, results_markdown(entries, root, sources))


def _relative(path: Path, root: Path) -> str:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
