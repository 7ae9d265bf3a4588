"""The guard against silent changes of a claim's definition (claims_manifest.py)."""

import json

import claims_manifest as manifest
import nbformat
import pytest

from commlab.lab.notebooks import discover


def _claim(claim_id, kind="headline", expected="<= 1", blocking=True):
    return {"id": claim_id, "kind": kind, "expected": expected, "blocking": blocking, "profiles": ["quick", "full"],
            "statement": "s", "measured": 0.5}


def _notebook(folder, deviations: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A paper"),
                nbformat.v4.new_markdown_cell("## Deviations from the paper\n\n" + deviations)]
    path = folder / "notebooks" / "a" / "b.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _summary(folder, claims):
    path = folder / "summary.json"
    path.write_text(json.dumps({"profile": "quick", "notebooks": [
        {"path": "notebooks/a/b.ipynb", "status": "ok", "claims": claims}]}))
    return path


def test_every_kind_of_drift_is_named():
    committed = manifest.definitions({"claims": [_claim("a"), _claim("b"), _claim("gone")]})
    recorded = manifest.definitions({"claims": [_claim("a"), _claim("b", kind="check", blocking=False),
                                                _claim("fresh")]})
    assert manifest.drift(committed, recorded) == [
        ("b", "kind 'headline' -> 'check'; blocking True -> False"), ("fresh", "new"), ("gone", "removed")]
    assert manifest.drift(committed, committed) == []


def test_a_change_is_recorded_only_when_the_deviations_cell_names_the_claim(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "ROOT", tmp_path)
    store = tmp_path / "manifest.json"
    notebook = _notebook(tmp_path, "Smaller model.")
    assert manifest.update(_summary(tmp_path, [_claim("a"), _claim("b")]), store) == [
        "notebooks/a/b.ipynb: a: new", "notebooks/a/b.ipynb: b: new"]
    before = store.read_text()
    loosened = _summary(tmp_path, [_claim("a", expected="<= 2"), _claim("b")])
    with pytest.raises(ValueError, match="name a in its 'Deviations from the paper' cell"):
        manifest.update(loosened, store)
    assert store.read_text() == before
    _notebook(tmp_path, "`a`: the threshold 1 was the brief's typo for 2 (see its Table 3).")
    assert manifest.update(loosened, store) == ["notebooks/a/b.ipynb: a: expected '<= 1' -> '<= 2'"]
    kept = manifest.load(store)["notebooks"]["notebooks/a/b.ipynb"]
    assert kept["claims"]["a"]["expected"] == "<= 2"
    assert kept["history"] == [{"id": "a", "was": manifest.definitions({"claims": [_claim("a")]})["a"],
                                "now": kept["claims"]["a"]}]
    assert notebook.exists()


def test_the_committed_manifest_covers_every_notebook_and_its_history_is_explained():
    committed = manifest.load()["notebooks"]
    papers = discover(manifest.ROOT / "notebooks")
    assert sorted(committed) == sorted(nb.display_path for nb in papers)
    for nb in papers:
        kept = committed[nb.display_path]
        assert any(c["kind"] == "headline" for c in kept["claims"].values()), nb.key
        changed = [(change["id"], "changed") for change in kept["history"]]
        assert not manifest.unexplained(nb.path, changed), (nb.key, changed)
