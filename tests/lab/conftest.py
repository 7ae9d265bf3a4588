from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "notebooks"


@pytest.fixture
def fixtures_dir() -> Path:
    """Folder of deliberately passing, broken, failing and slow notebooks (``lab/*.ipynb``)."""
    return FIXTURES
