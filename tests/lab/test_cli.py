"""``commlab list`` and the command line's argument handling (no notebook is executed here)."""

import shutil

import pytest

from commlab import cli
from commlab.lab.notebooks import discover, index_markdown


def test_list_shows_a_header_then_tier_year_and_title(fixtures_dir, capsys):
    assert cli.main(["--notebooks", str(fixtures_dir), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(discover(fixtures_dir)) == 8
    assert lines[0].split() == ["notebook", "tier", "year", "paper"]
    assert lines[1].split() == ["lab/broken", "-", "2026", "Fixture:", "broken"]


def test_list_fits_100_columns_with_the_real_notebooks(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 10 and max(len(line) for line in lines) <= 100
    assert any(line.endswith("…") for line in lines)  # long titles are cut, not wrapped into the next row


def test_write_index_writes_the_generated_index(fixtures_dir, tmp_path):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(fixtures_dir, notebooks)
    assert cli.main(["--notebooks", str(notebooks), "list", "--write-index"]) == 0
    text = (notebooks / "README.md").read_text()
    assert text == index_markdown(discover(notebooks))
    assert "| [`lab/passing`](lab/passing.ipynb) | lab | - | Fixture: passing | 2026 |" in text


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("0.5", 0.5), ("True", True), ("[1, 2]", [1, 2]),
                                             ("ef21", "ef21"), ("'quoted'", "quoted")])
def test_parameter_values_are_literals_or_strings(text, value):
    assert cli._value(text) == value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--notebooks", "/nonexistent", "list"], "does not exist"),
        (["run", "-p", "not-a-name", "1"], "must be a Python identifier"),
        (["run", "-p", "profile", "full"], "pass the profile with --profile"),
        (["run", "--jobs", "0"], "jobs must be >= 1"),
        (["run", "--timeout", "0"], "timeout must be > 0"),
        (["report", "/nonexistent/summary.json"], "run `commlab run` first"),
    ],
)
def test_bad_arguments_are_clear_errors(fixtures_dir, argv, message, capsys):
    if "--notebooks" not in argv:
        argv = ["--notebooks", str(fixtures_dir), *argv]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_profile_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--profile", "medium"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'medium'" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seeds"), [("0-4", [0, 1, 2, 3, 4]), ("0,3,7", [0, 3, 7]), ("0-2,9", [0, 1, 2, 9]),
                                             ("5", [5]), (" 1 - 2 ".replace(" ", ""), [1, 2])])
def test_seed_lists_are_parsed_from_ranges_and_commas(text, seeds):
    assert cli.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "1-", "-3", "4-2", "1.5", "0,,1"])
def test_malformed_seed_lists_are_a_clear_error(text):
    with pytest.raises(ValueError, match="--seeds"):
        cli.parse_seeds(text)
