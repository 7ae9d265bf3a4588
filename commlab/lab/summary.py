"""The runner's scoreboard: ``summary.json``, ``summary.md`` and the project's ``RESULTS.md``.

``summary.json`` has the shape other tools read::

    {"profile": str, "selected": int, "seeds": [int] | null, "interrupted": null | "SIGINT" | "SIGTERM",
     "notebooks": [{"path": "notebooks/<area>/<slug>.ipynb", "status": one of runner.STATUSES,
      "seeds": [int | null], "seconds": float, "error": str | null, "parameters": {name: value set with -p},
      "claims": [{"id", "kind", "statement", "measured", "expected", "paper", "passed", "status",
                  "blocking", "seeds_run", "seeds_passed", "spread", "per_seed", ...}],
      "runs": [{"seed", "status", "seconds", "cpu_seconds", "error", "attempts", "executed", "claims"}]}]}

plus informative extras (commit, jobs, cpu_seconds, title, tier, ...). A notebook's ``claims`` combine
its runs (:func:`combine`): a claim passes when it passed on every seed it was evaluated on, its
``measured`` is the median over seeds (the value itself for one seed or a non-number), ``spread`` is
``{"min", "median", "max"}`` of the numeric values, and ``per_seed`` keeps each run's value.

``RESULTS.md`` is written from a summary by :func:`write_results`, together with ``RESULTS.json``
beside it (the entries it shows, each with the commit and profile of its batch), so that a later
partial batch can be merged into it notebook by notebook.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from statistics import median

from commlab._files import atomic_write_text
from commlab.lab.claims import KINDS

SEVERITY = ("ok", "claims_failed", "error", "timeout", "interrupted", "not_started")
"""Run statuses from best to worst; a notebook run over several seeds has its worst run's status
(``not_started`` beside finished runs counts as ``interrupted``)."""

LABELS = {"ok": "ok", "claims_failed": "claims failed", "error": "error", "timeout": "timeout",
          "interrupted": "interrupted", "not_started": "not started"}
"""How each status is written in ``summary.md`` and ``RESULTS.md``."""


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def combine_claims(runs: list[dict]) -> list[dict]:
    """One record per claim id (in the order first seen) from the claims of each run in ``runs``."""
    by_id: dict[str, list[tuple[object, dict]]] = {}
    for run in runs:
        for claim in run["claims"]:
            by_id.setdefault(claim["id"], []).append((run.get("seed"), claim))
    combined = []
    for seen in by_id.values():
        evaluated = [(seed, c) for seed, c in seen if c.get("status") in ("pass", "fail")]
        values = [c["measured"] for _, c in evaluated]
        numbers = [v for v in values if _is_number(v)]
        passed = sum(c.get("status") == "pass" for _, c in evaluated)
        status = "skip" if not evaluated else "pass" if passed == len(evaluated) else "fail"
        if len(numbers) == len(values) and len(values) > 1:
            measured = median(numbers)
        else:
            measured = values[0] if values else seen[0][1]["measured"]
        combined.append({
            **seen[0][1], "measured": measured, "status": status, "passed": status == "pass",
            "seeds_run": len(evaluated), "seeds_passed": passed,
            "spread": ({"min": min(numbers), "median": median(numbers), "max": max(numbers)}
                       if numbers else None),
            "per_seed": [{"seed": seed, "measured": c["measured"], "expected": c["expected"], "status": c["status"]}
                         for seed, c in seen]})
    return combined


def combine(runs: list[dict]) -> dict:
    """What a notebook's runs (one per seed, :func:`commlab.lab.runner.run_one`) add up to: the worst
    status, summed seconds, the errors named by seed, the combined claims, and the runs themselves."""
    if not runs:
        raise ValueError("combine needs at least one run")
    statuses = {r["status"] for r in runs}
    if "not_started" in statuses and statuses != {"not_started"}:
        statuses = (statuses - {"not_started"}) | {"interrupted"}
    cpu = [r["cpu_seconds"] for r in runs if r.get("cpu_seconds") is not None]
    errors = [(r["seed"], r["error"]) for r in runs if r.get("error")]
    if len(runs) == 1:
        error = errors[0][1] if errors else None
    else:
        error = "; ".join(f"seed {seed}: {text}" for seed, text in errors) or None
    return {
        "seeds": [r["seed"] for r in runs],
        "status": max(statuses, key=SEVERITY.index),
        "seconds": round(sum(r["seconds"] for r in runs), 2),
        "cpu_seconds": round(sum(cpu), 3) if cpu else None,
        "error": error,
        "attempts": max(r["attempts"] for r in runs),
        "executed": runs[0]["executed"],
        "claims": combine_claims(runs),
        "runs": runs,
    }


def blocking_failures(entry: dict) -> list[dict]:
    """Claims of a notebook entry that failed and are blocking."""
    return [c for c in entry["claims"] if c.get("status") == "fail" and c.get("blocking", True)]


def failed(summary: dict) -> bool:
    """True unless the batch ran at least one notebook, was not interrupted, and every notebook
    ran to the end with no blocking claim failing."""
    entries = summary["notebooks"]
    return (not entries or bool(summary.get("interrupted"))
            or any(e["status"] != "ok" or blocking_failures(e) for e in entries))


def counts(entry: dict, kind: str) -> tuple[int, int]:
    """``(held, evaluated)`` for the claims of ``kind`` in a notebook entry: evaluated in this
    profile, and held on every seed they were evaluated on."""
    applicable = [c for c in entry["claims"] if c.get("status") != "skip" and c.get("kind") == kind]
    return sum(c["status"] == "pass" for c in applicable), len(applicable)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _cell(value)


def measured_text(claim: dict) -> str:
    """The measured value: ``median [min, max]`` over several seeds, else the value; ``—`` for a claim
    not evaluated in this profile (its value there is a placeholder)."""
    if claim.get("status") == "skip":
        return "—"
    spread = claim.get("spread")
    if spread and claim.get("seeds_run", 1) > 1 and spread["min"] != spread["max"]:
        return f"{_number(spread['median'])} [{_number(spread['min'])}, {_number(spread['max'])}]"
    return _number(claim["measured"])


def seeds_text(claim: dict) -> str:
    """``passed/evaluated`` seeds, or ``-`` for a claim skipped in this profile."""
    if claim.get("status") == "skip":
        return "-"
    return f"{claim.get('seeds_passed', int(claim.get('passed', False)))}/{claim.get('seeds_run', 1)}"


def _parameters(entry: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in (entry.get("parameters") or {}).items())


def _seeds(entry: dict) -> str:
    seeds = [s for s in entry.get("seeds") or [] if s is not None]
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds)) or "?"


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
    lines += ["Claims count as held when they held on every seed run; checks guard the experiment and are "
              "counted apart.", "",
              "| notebook | status | seeds | wall s | CPU s | headline | supporting | checks | -p parameters | error |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        cpu = "" if e.get("cpu_seconds") is None else f"{e['cpu_seconds']:.1f}"
        held = " | ".join("{}/{}".format(*counts(e, kind)) for kind in KINDS)
        lines.append(f"| `{e['path']}` | {LABELS.get(e['status'], e['status'])} | {_seeds(e)} | {e['seconds']:.1f} "
                     f"| {cpu} | {held} | {_cell(_parameters(e))} | {_cell(e['error'] or '')} |")
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
                verdict_ = "FAIL" if c.get("blocking", True) else "not reproduced at this scale (non-blocking)"
                lines.append(f"- `{c['id']}` ({c.get('kind', '?')}) {verdict_}: measured {measured_text(c)}, "
                             f"expected {c['expected']}, seeds passed {seeds_text(c)} — {c['statement']}")
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


REPRODUCED = {"all": "reproduced", "some": "some seeds", "none": "not reproduced at this scale",
              "skip": "not evaluated in this profile"}
"""How ``RESULTS.md`` words a headline's outcome over the seeds it ran on."""


def reproduction(claim: dict, seeds: int) -> str:
    """``all``, ``some``, ``none`` (seeds on which the claim held, of the ``seeds`` the notebook ran)
    or ``skip`` (not evaluated in this profile)."""
    if claim.get("status") == "skip":
        return "skip"
    passed = claim.get("seeds_passed", int(claim.get("passed", False)))
    return "all" if passed == seeds and claim.get("seeds_run", 1) == seeds else "some" if passed else "none"


def _headline_cells(e: dict) -> list[str]:
    """The headline columns of a paper's row in the leading table (several headlines joined by <br>)."""
    headlines = [c for c in e["claims"] if c.get("kind") == "headline"]
    if e["status"] not in ("ok", "claims_failed") or not headlines:
        return [f"— ({LABELS.get(e['status'], e['status'])})" if e["status"] not in ("ok", "claims_failed")
                else "— (no headline claim)", "", "", "", ""]
    seeds = len(e.get("seeds") or [None])
    columns = zip(*[(f"`{c['id']}`", REPRODUCED[reproduction(c, seeds)]
                     + ("" if c.get("status") == "skip" else f" ({seeds_text(c)} seeds)"),
                     measured_text(c), _cell(c["expected"]), _cell(c.get("paper") or "—")) for c in headlines],
                  strict=True)
    return ["<br>".join(column) for column in columns]


def results_markdown(entries: list[dict], root: Path, sources: list[str]) -> str:
    """``RESULTS.md``: one row per paper led by its headline (reproduced on all / some / no seeds,
    measured beside the paper's number), supporting claims and checks counted apart; then per paper
    every claim with its spread over seeds, and the figures.

    Figures are linked only where git tracks them (``figures/<area>/<slug>/``); figures that the
    batch wrote into its own run folder are named, not linked (``runs/`` is not committed).
    """
    root = Path(root).resolve()
    lines = ["# Results", "", "Generated by `commlab report` from " + "; ".join(sources) + ".", "",
             "Each paper is led by its **headline**: the paper's main claim as its brief states it, at our "
             "scale. It is *reproduced* when it held on every seed run, *some seeds* when on some, *not "
             "reproduced at this scale* when on none; the measured value is the median over seeds with "
             "[min, max]. **Supporting** claims are the paper's secondary results. **Checks** guard the "
             "experiment (equal budgets, a sampler's rate) and are never counted as reproduced claims. "
             "Counts are claims that held on every seed, of those evaluated in this profile.", ""]
    if not entries:
        return "\n".join(lines + ["No notebooks were run."]) + "\n"
    headlines = [(c, len(e.get("seeds") or [None])) for e in entries for c in e["claims"]
                 if c.get("kind") == "headline" and c.get("status") != "skip"]
    outcomes = [reproduction(c, seeds) for c, seeds in headlines]
    supporting = [counts(e, "supporting") for e in entries]
    checks = [counts(e, "check") for e in entries]
    lines += [f"Headline claims: **{outcomes.count('all')} of {len(outcomes)} reproduced on every seed**, "
              f"{outcomes.count('some')} on some seeds, {outcomes.count('none')} not reproduced at this scale "
              f"({len(entries)} papers). Supporting claims held: {sum(h for h, _ in supporting)} of "
              f"{sum(n for _, n in supporting)}. Checks held (counted apart): {sum(h for h, _ in checks)} of "
              f"{sum(n for _, n in checks)}.", "",
              "| paper | headline | reproduced at this scale (seeds) | measured | expected | paper's number "
              "| supporting held | checks held | notebook |",
              "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {_cell(e.get('title', '?'))} | " + " | ".join(_headline_cells(e))
                     + " | {}/{} | {}/{} |".format(*counts(e, "supporting"), *counts(e, "check"))
                     + f" `{e['path']}` |")
    for e in entries:
        key = e["path"].removeprefix("notebooks/").removesuffix(".ipynb")
        origin = f"profile `{e.get('profile', '?')}`, commit `{e.get('commit', '?')}`" + (
            f", seeds {_seeds(e)}" if e.get("seeds") else "")
        if e.get("parameters"):
            origin += f", -p {_parameters(e)}"
        lines += ["", f"## {e.get('title', key)}", "",
                  f"Notebook `{e['path']}` ({origin}) — status **{LABELS.get(e['status'], e['status'])}**"
                  + (f": {e['error']}" if e["error"] else "") + ".", ""]
        if e["claims"]:
            seeds = len(e.get("seeds") or [None])
            lines += ["| claim | kind | statement | measured | expected | paper | seeds passed | result |",
                      "|---|---|---|---|---|---|---|---|"]
            ordered = sorted(e["claims"], key=lambda c: KINDS.index(c["kind"]) if c.get("kind") in KINDS else 3)
            for c in ordered:
                outcome = reproduction(c, seeds)
                result = {"all": "pass", "skip": "skipped (other profile)"}.get(outcome, "FAIL")
                if result == "FAIL" and not c.get("blocking", True):
                    result = "not reproduced at this scale" if outcome == "none" else "some seeds (non-blocking)"
                lines.append(f"| `{c['id']}` | {c.get('kind', '?')} | {_cell(c['statement'])} | {measured_text(c)} "
                             f"| {_cell(c['expected'])} | {_cell(c.get('paper') or '')} | {seeds_text(c)} "
                             f"| {result} |")
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


_LISTED = re.compile(r"^\|.* `(notebooks/[^`]+\.ipynb)` \|$", re.MULTILINE)


def listed_notebooks(results: Path) -> list[str]:
    """The notebook paths in the table of an existing ``RESULTS.md`` (empty when there is none)."""
    try:
        return _LISTED.findall(Path(results).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


def _with_origin(summary: dict, summary_path: Path) -> list[dict]:
    """The summary's finished entries (without their per-run records: each claim keeps its values
    per seed), each stamped with its batch's profile and commit, and the names of the figures its
    first run wrote into the run folder."""
    seeds = summary.get("seeds")
    run_figures = Path(summary_path).parent / (f"seed-{seeds[0]}" if seeds else "") / "figures"
    stamped = []
    for e in summary["notebooks"]:
        if e["status"] in ("interrupted", "not_started"):
            continue
        key = e["path"].removeprefix("notebooks/").removesuffix(".ipynb")
        names = sorted(p.stem for p in (run_figures / key).glob("*.png"))
        kept = {name: value for name, value in e.items() if name != "runs"}
        stamped.append({**kept, "profile": summary["profile"], "commit": summary.get("commit", "unknown"),
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
    source = f"`{_relative(summary_path, root)}` (profile `{summary['profile']}`, commit " \
             f"`{summary.get('commit', 'unknown')}`)"
    new = [{**e, "source": source} for e in _with_origin(summary, summary_path)]
    if partial:
        try:
            kept = json.loads(record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"--partial merges into {record.name}, which does not exist beside {out.name}; "
                             f"report a complete batch first") from None
        replaced = {e["path"] for e in new}
        entries = sorted([e for e in kept["notebooks"] if e["path"] not in replaced] + new, key=lambda e: e["path"])
        # the batches that still contribute an entry, oldest first (an entry written before entries
        # named their source keeps every source the record listed)
        named = {e.get("source") for e in entries}
        sources = [s for s in dict.fromkeys([*kept.get("sources", []), source]) if s in named or None in named]
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
