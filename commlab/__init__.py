"""commlab — a laboratory for communication-efficient machine learning and semantic communication.

Sub-packages follow dependency floors (each imports only from the floors below it; an import-linter
contract in pyproject.toml enforces it):

1. foundation — :mod:`commlab._checks`, :mod:`commlab.seeding`, :mod:`commlab._files`;
2. building blocks — :mod:`commlab.compress`, :mod:`commlab.channels`, :mod:`commlab.comm`,
   :mod:`commlab.data`, :mod:`commlab.models`, :mod:`commlab.problems`, :mod:`commlab.systems`;
3. methods — :mod:`commlab.distributed`, :mod:`commlab.semcom`, :mod:`commlab.ensembles`;
4. programs and the lab — :mod:`commlab.train`, :mod:`commlab.lab`, :mod:`commlab.cli`.

Sub-packages are imported on demand, so ``import commlab`` stays light.
"""

__version__ = "0.1.0"
