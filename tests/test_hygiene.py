"""Every committed notebook follows the template (design.md, "Notebook template")."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from commlab.lab.notebooks import discover, index_markdown
from commlab.lab.paths import AREAS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ALL = sorted(p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
PAPERS = discover(NOTEBOOKS)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _tags(cell: dict) -> list:
    return cell.get("metadata", {}).get("tags", [])


@pytest.fixture(params=ALL, ids=lambda p: p.relative_to(NOTEBOOKS).as_posix())
def notebook(request) -> Path:
    return request.param


def test_template_exists():
    assert NOTEBOOKS / "_template.ipynb" in ALL


def test_outputs_are_stripped(notebook):
    for index, cell in enumerate(_load(notebook)["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {index} has outputs"
            assert cell["execution_count"] is None, f"cell {index} has an execution count"


def test_exactly_one_parameters_cell_with_quick_profile_and_seed(notebook):
    cells = _load(notebook)["cells"]
    assert sum("parameters" in _tags(cell) for cell in cells) == 1
    params = papermill.inspect_notebook(str(notebook))
    assert params["profile"]["default"] in ('"quick"', "'quick'")
    assert "seed" in params and "device" in params


def test_last_cell_is_the_claims_cell(notebook):
    last = _load(notebook)["cells"][-1]
    assert last["cell_type"] == "code" and "claims" in _tags(last)
    assert "Claims(" in "".join(last["source"]) and ".report()" in "".join(last["source"])


def test_the_claims_cell_states_a_headline(notebook):
    # design.md, "Claims": the paper's main claim as its brief states it, at least one per notebook
    source = "".join(_load(notebook)["cells"][-1]["source"])
    assert re.search(r"""kind\s*=\s*["']headline["']""", source), "no claim of kind 'headline'"


def test_kernelspec_and_metadata(notebook):
    metadata = _load(notebook)["metadata"]
    assert metadata["kernelspec"]["name"] == "python3"
    info = metadata["commlab"]
    assert {"area", "slug", "title", "year", "tier"} <= set(info)


def test_deviations_are_stated(notebook):
    markdown = "".join("".join(c["source"]) for c in _load(notebook)["cells"] if c["cell_type"] == "markdown")
    assert "Deviations from the paper" in markdown


def test_notebooks_build_methods_by_name_and_share_the_sampler(notebook):
    # methods come from the registry (make_method), minibatches of stacked workers from
    # stacked_batch_indices: no notebook re-builds what commlab already holds
    from commlab.distributed import METHODS

    code = "".join("".join(c["source"]) for c in _load(notebook)["cells"] if c["cell_type"] == "code")
    built = sorted({cls.__name__ for cls in METHODS.values() if re.search(rf"\b{cls.__name__}\(", code)})
    assert not built, f"construct {built} with commlab.distributed.make_method"
    stacker = r"torch\.stack\(\[\s*batch_indices\([^\]]*worker=(\w+)\)\s*for\s+\1\s+in"  # one batch per worker
    assert not re.search(stacker, code), "use commlab.data.batches.stacked_batch_indices"


@pytest.mark.parametrize("paper", PAPERS, ids=lambda nb: nb.key)
def test_paper_notebooks_live_in_their_area_under_their_slug(paper):
    area, slug = paper.key.split("/")
    assert area in AREAS and paper.meta["area"] == area and paper.meta["slug"] == slug
    assert paper.meta["tier"] in ("T1", "T2", "T3")


def test_index_lists_every_notebook():
    assert (NOTEBOOKS / "README.md").read_text(encoding="utf-8") == index_markdown(PAPERS), (
        "notebooks/README.md is out of date: run `commlab list --write-index`")


def test_notebooks_are_stored_exactly_as_jupyterlab_saves_them(notebook):
    """JupyterLab's server saves with ``nbformat.write``: opening and saving changes no byte."""
    text = notebook.read_text(encoding="utf-8")
    saved = nbformat.writes(nbformat.reads(text, as_version=nbformat.NO_CONVERT), version=nbformat.NO_CONVERT)
    assert text == saved + ("" if saved.endswith("\n") else "\n"), (
        "not in the form JupyterLab writes: run `nbstripout` on it, or open and save it in `make lab`")


def _strip_keys() -> str:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    return " ".join(re.search(r"^STRIP_KEYS := (.*)$", makefile, re.MULTILINE).group(1).split())


def test_the_git_filter_undoes_what_a_jupyterlab_session_adds(tmp_path):
    """What `make lab` configures as the git filter turns a notebook run and saved in JupyterLab back
    into the committed bytes, so `git status` stays clean."""
    committed = NOTEBOOKS / "compression" / "ef21w_error_feedback_reloaded.ipynb"
    nb = nbformat.read(committed, as_version=4)
    nb.metadata.language_info.update({"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                                      "mimetype": "text/x-python", "nbconvert_exporter": "python",
                                      "pygments_lexer": "ipython3", "version": sys.version.split()[0]})
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="output\n")]
            cell.metadata["scrolled"] = True
            cell.metadata["execution"] = {"iopub.execute_input": "2026-12-02T05:00:00.000Z"}
    edited = tmp_path / "edited.ipynb"
    nbformat.write(nb, edited)
    assert edited.read_text(encoding="utf-8") != committed.read_text(encoding="utf-8")
    cleaned = subprocess.run([sys.executable, "-m", "nbstripout", "--textconv", "--extra-keys", _strip_keys(),
                              str(edited)], capture_output=True, text=True, check=True).stdout
    assert cleaned == committed.read_text(encoding="utf-8")
