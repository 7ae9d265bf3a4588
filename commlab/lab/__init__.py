"""The lab machinery: notebook set-up, claims, figures, and the batch runner.

Typical notebook use::

    from commlab import lab
    session = lab.setup(profile, seed, notebook="compression/ef21w_error_feedback_reloaded")
    ...
    session.savefig(fig, "error_vs_bits")
    claims = lab.Claims(profile)
    claims.add(...)
    claims.report()
"""

from commlab.lab.claims import Claims, ClaimsFailed
from commlab.lab.session import PROFILES, Session, setup

__all__ = ["PROFILES", "Claims", "ClaimsFailed", "Session", "setup"]
