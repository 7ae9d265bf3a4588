"""The committed definition of every notebook claim, so that none changes silently.

``tests/fixtures/claims_manifest.json`` keeps, per notebook, each claim's kind, comparison with its
threshold (``expected``, e.g. ``"<= 1.1"``), blocking flag and profiles, plus the history of every
change made to them. The quick-profile notebook test compares what each notebook records with it. A
deliberate change (design.md, "Claims"; briefs/_conventions.md §1: thresholds are fixed in advance,
nothing is demoted after a failure) is recorded by naming the claim in the notebook's "Deviations
from the paper" cell and then running::

    .venv/bin/python tests/claims_manifest.py runs/quick/summary.json

which refuses any changed or removed claim that the Deviations cell does not name. New claims are
added without ceremony.

A blocking claim found not to hold (its threshold and definition the brief's, fixed before the first
run) stays blocking and failing: the notebook reports it and ``commlab run`` counts the batch as
failed. It is recorded by hand under the notebook's ``"not_reproduced"`` as ``{claim id: "measured
value at seed 0 and why"}``; the notebook test then requires exactly those claims to fail (one that
starts to hold must be taken out of the list), and any other failure still fails the test.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "fixtures" / "claims_manifest.json"
FIELDS = ("kind", "expected", "blocking", "profiles")
"""What a claim's definition is; its statement and measured value may change freely."""


def definitions(entry: dict) -> dict[str, dict]:
    """``{claim id: {field: value}}`` for the claims a ``summary.json`` notebook entry recorded."""
    return {c["id"]: {field: c.get(field) for field in FIELDS} for c in entry["claims"]}


def load(path: Path = MANIFEST) -> dict:
    """The manifest: ``{"notebooks": {path: {"claims": {id: definition}, "history": [change]}}}``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def drift(committed: dict[str, dict], recorded: dict[str, dict]) -> list[tuple[str, str]]:
    """``(claim id, what happened)`` for every claim that changed, appeared or disappeared."""
    changes = []
    for claim_id, now in recorded.items():
        was = committed.get(claim_id)
        if was is None:
            changes.append((claim_id, "new"))
        elif was != now:
            changes.append((claim_id, "; ".join(f"{field} {was[field]!r} -> {now[field]!r}"
                                                for field in FIELDS if was[field] != now[field])))
    changes += [(claim_id, "removed") for claim_id in committed if claim_id not in recorded]
    return changes


def deviations(notebook: Path) -> str:
    """The text of the notebook's markdown cells that state its deviations from the paper."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells
                     if c["cell_type"] == "markdown" and "Deviations from the paper" in "".join(c["source"]))


def unexplained(notebook: Path, changes: list[tuple[str, str]]) -> list[str]:
    """The changed or removed claims (not the new ones) that the Deviations cell does not name (as a
    whole word: ``dgc-ratio`` is not named by ``dgc-ratio-max``)."""
    text = deviations(notebook)
    return [claim_id for claim_id, what in changes
            if what != "new" and not re.search(rf"(?<![\w.-]){re.escape(claim_id)}(?![\w.-])", text)]


def update(summary_path: Path, manifest_path: Path = MANIFEST) -> list[str]:
    """Bring the manifest in line with the notebooks of ``summary_path``; return the lines it changed.

    Raises:
        ValueError: a changed or removed claim is not named in its notebook's Deviations cell, or a
            notebook of the summary did not run to the end.
    """
    summary = json.loads(Path(summary_path).read_text(encoding="utf-8"))
    manifest = load(manifest_path) if Path(manifest_path).exists() else {"notebooks": {}}
    problems, report = [], []
    for entry in summary["notebooks"]:
        if entry["status"] not in ("ok", "claims_failed"):
            problems.append(f"{entry['path']}: status {entry['status']}; its claims were not all recorded")
            continue
        kept = manifest["notebooks"].setdefault(entry["path"], {"claims": {}, "history": []})
        recorded = definitions(entry)
        changes = drift(kept["claims"], recorded)
        missing = unexplained(ROOT / entry["path"], changes)
        if missing:
            problems.append(f"{entry['path']}: name {', '.join(missing)} in its 'Deviations from the paper' "
                            f"cell, with the reason for the change")
            continue
        kept["history"] += [{"id": claim_id, "was": kept["claims"].get(claim_id), "now": recorded.get(claim_id)}
                            for claim_id, what in changes if what != "new"]
        kept["claims"] = recorded
        report += [f"{entry['path']}: {claim_id}: {what}" for claim_id, what in changes]
    if problems:
        raise ValueError("\n".join(problems))
    manifest["notebooks"] = dict(sorted(manifest["notebooks"].items()))
    Path(manifest_path).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/claims_manifest.py SUMMARY.json")
    try:
        changed = update(Path(sys.argv[1]))
    except (OSError, ValueError) as error:
        sys.exit(f"claims manifest not updated:\n{error}")
    print("\n".join(changed) or "no claim changed")
