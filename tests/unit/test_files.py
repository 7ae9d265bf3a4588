import json

import pytest

from commlab._files import atomic_write_text
from commlab.lab import summary as summaries


def test_summaries_are_written_atomically(tmp_path, monkeypatch):
    good = {"profile": "quick", "notebooks": []}
    summaries.write(good, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == good
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("commlab._files.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        summaries.write({"profile": "full", "notebooks": []}, tmp_path)
    # the old files are intact and no temporary file is left behind
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_atomic_write_creates_folders(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b.txt", "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"


def test_load_rejects_files_that_are_not_summaries(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError, match="not a commlab summary"):
        summaries.load(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="commlab run"):
        summaries.load(tmp_path / "missing.json")
