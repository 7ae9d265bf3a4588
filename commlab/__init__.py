"""commlab — a laboratory for communication-efficient machine learning and semantic communication.

Sub-packages (imported on demand, so ``import commlab`` stays light):

* :mod:`commlab.lab` — the lab machinery: session set-up, claims, figures, the notebook batch runner.
* :mod:`commlab.data` — offline data loaders and client partitioners.
"""

__version__ = "0.1.0"
