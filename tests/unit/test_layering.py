"""The library below the lab stays light: importing any module of commlab outside ``commlab.lab`` and
``commlab.cli`` (algorithms, transport, models, programs) does not import matplotlib. The floors
themselves are import-linter's contract in pyproject.toml (``make lint``)."""

import pkgutil
import subprocess
import sys

import commlab

HEAVY = ("matplotlib",)


def library_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(commlab.__path__, "commlab.")]
    return sorted(n for n in names if not n.startswith(("commlab.lab", "commlab.cli")))


def test_no_module_below_the_lab_imports_matplotlib():
    modules = library_modules()
    assert "commlab.distributed.outer" in modules and "commlab.train.loop" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "    assert not heavy, f'importing {name} imported {heavy}'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_would_see_matplotlib():
    result = subprocess.run([sys.executable, "-c", "import commlab.lab, sys; assert 'matplotlib' in sys.modules"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
