"""Compare a quick batch's seed-0 claim values with the recorded ones (claims_seed0.json, recorded
before the layout redesign; claims redefined or moved to unit tests since show as differing).

    python tests/regression/compare_claims.py runs/quick/summary.json

Prints every claim whose measured value differs from the recording (and notebooks that did not end
``ok``) and exits 1 if any differs. Claims measured on a wall clock (speed ratios, time to accuracy on
measured compute seconds) differ from run to run; everything else is bit-identical on the same machine.
"""

import json
import math
import sys
from pathlib import Path

RECORDED = Path(__file__).parents[1] / "fixtures" / "regression" / "claims_seed0.json"


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def seed0(claim: dict):
    """The claim's value at seed 0: from ``per_seed`` in a seed sweep, else the measured value."""
    for run in claim.get("per_seed") or []:
        if run["seed"] == 0:
            return run["measured"]
    return claim["measured"]


def main(summary_path: str) -> int:
    recorded = json.loads(RECORDED.read_text())["claims"]
    summary = json.loads(Path(summary_path).read_text())
    equal, differ = 0, 0
    for notebook in summary["notebooks"]:
        path = notebook["path"]
        if notebook.get("status") != "ok":
            print(f"{path}: status {notebook.get('status')}")
            differ += 1
        for claim in notebook.get("claims", []):
            before = recorded.get(path, {}).get(claim["id"], "not recorded")
            if same(before, seed0(claim)):
                equal += 1
            else:
                differ += 1
                print(f"{path} {claim['id']}: recorded {before!r}, measured {seed0(claim)!r}")
    print(f"{equal} claim values equal to the recording, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
