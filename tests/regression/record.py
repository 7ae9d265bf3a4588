"""Record the regression fixtures: ``python tests/regression/record.py [case ...]`` (all cases by default)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from regression_cases import CASES  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "fixtures" / "regression"

if __name__ == "__main__":
    torch.set_num_threads(1)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or CASES:
        torch.save(CASES[name](), FIXTURES / f"{name}.pt")
        print("recorded", name)
