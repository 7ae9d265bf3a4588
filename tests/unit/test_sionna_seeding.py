"""Importing sionna.phy through commlab's guard keeps torch's global RNG state; the plain import does not."""

import subprocess
import sys

import pytest
import torch

from commlab.semcom.sionna_import import preserved_torch_rng

PROLOGUE = "import torch\ntorch.manual_seed(1234)\nbefore = torch.get_rng_state().clone()\n"
EPILOGUE = "print('UNCHANGED' if torch.equal(before, torch.get_rng_state()) else 'CHANGED')\n"


GUARDED = ("from commlab.semcom.sionna_import import import_sionna_phy, preserved_torch_rng\n"
           "phy = import_sionna_phy()\n"
           "with preserved_torch_rng():\n"
           "    phy.config.seed = 7\n")  # setting Sionna's seed re-seeds torch's global generator too
UNGUARDED = "import sionna.phy\n"


@pytest.fixture(scope="module")
def outcomes():
    """Both imports, each in a fresh interpreter (so the result does not depend on whether this process imported
    sionna already), started together: the import dominates the cost."""
    runs = {name: subprocess.Popen([sys.executable, "-c", PROLOGUE + body + EPILOGUE], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            for name, body in (("guarded", GUARDED), ("unguarded", UNGUARDED))}
    result = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        result[name] = stdout.strip().splitlines()[-1]
    return result


def test_guarded_import_and_seeding_keep_torch_global_rng_state(outcomes):
    assert outcomes["guarded"] == "UNCHANGED"


def test_unguarded_import_changes_torch_global_rng_state(outcomes):
    # the power of the test above: without the guard the state does change
    assert outcomes["unguarded"] == "CHANGED"


def test_preserved_torch_rng_restores_after_reseeding_and_on_error():
    torch.manual_seed(5)
    expected = torch.rand(3, generator=None)
    torch.manual_seed(5)
    with preserved_torch_rng():
        torch.manual_seed(99)
        torch.rand(10)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(5)
    try:
        with preserved_torch_rng():
            torch.manual_seed(99)
            raise KeyError("inside")
    except KeyError:
        pass
    assert torch.equal(torch.rand(3), expected)
