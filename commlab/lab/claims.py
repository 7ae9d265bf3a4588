"""Machine-checked claims: the last cell of every notebook.

A notebook states each claim of its paper with a threshold fixed before the run, measures it,
and calls :meth:`Claims.report`. ``report`` shows a pass/fail table, emits a machine-readable
record (MIME type :data:`MIME`) that ``commlab run`` reads back from the executed notebook, and
raises :class:`ClaimsFailed` when a *blocking* claim that applies to the profile failed.

Every claim has a *kind* (:data:`KINDS`, ``../shared/design.md`` "Claims"): ``headline`` is the
paper's main claim as its brief states it (at least one per notebook), ``supporting`` a secondary
result, ``check`` a guard that the experiment is valid (equal budgets, a sampler's rate), reported
apart and never counted as a reproduced claim. A statement that holds by construction is a unit test
of the library, not a claim.

Example::

    claims = Claims(profile)
    claims.add("ef21w-speedup", "EF21-W converges faster than EF21 (Fig. 1)", kind="headline",
               measured=speedup, op=">=", threshold=2.0, source="Fig. 1", paper="about 2x")
    claims.report()
"""

from __future__ import annotations

import html
import math
import numbers
import operator
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from commlab.lab.paths import PROFILES

MIME = "application/vnd.commlab.claims+json"
KINDS = ("headline", "supporting", "check")
"""The kinds of claim, in the order the scoreboard shows them."""
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

_OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda value, bounds: bounds[0] <= value <= bounds[1],
}


class ClaimsFailed(AssertionError):
    """Raised by :meth:`Claims.report` when a blocking claim failed."""


def to_jsonable(value):
    """``value`` as plain JSON data: numpy/torch scalars become Python numbers, arrays become
    lists, non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays/scalars, torch tensors
        value = value.tolist()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    raise TypeError(f"measured value must be a number, bool, string or a list of them, got {type(value)}")


def _holds(value, markers: tuple[str, ...]) -> bool:
    """Whether a JSON-able measured value is, or contains, one of the non-finite ``markers``."""
    if isinstance(value, list):
        return any(_holds(v, markers) for v in value)
    return isinstance(value, str) and value in markers


@dataclass(frozen=True)
class Claim:
    """One checked claim. ``status`` is ``"pass"``, ``"fail"`` or ``"skip"`` (the claim does not
    apply to this profile); ``passed`` is true only for ``"pass"``."""

    id: str
    statement: str
    source: str
    measured: object
    op: str
    threshold: object
    blocking: bool
    profiles: tuple[str, ...]
    status: str
    kind: str
    paper: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def expected(self) -> str:
        if self.op == "in":
            return f"in [{self.threshold[0]:g}, {self.threshold[1]:g}]"
        threshold = f"{self.threshold:g}" if isinstance(self.threshold, float) else repr(self.threshold)
        return f"{self.op} {threshold}"

    def record(self) -> dict:
        """The claim as stored in ``summary.json``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "statement": self.statement,
            "source": self.source,
            "measured": self.measured,
            "expected": self.expected,
            "paper": self.paper,
            "passed": self.passed,
            "status": self.status,
            "blocking": self.blocking,
            "profiles": list(self.profiles),
        }


class Claims:
    """The claims of one notebook run under ``profile``."""

    def __init__(self, profile: str):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        self.profile = profile
        self.claims: list[Claim] = []

    def add(self, id: str, statement: str, *, kind: str, measured, op: str, threshold, source: str = "",
            paper: str | float | None = None, blocking: bool = True,
            profiles: Sequence[str] = ("quick", "full")) -> Claim:
        """Check ``measured <op> threshold`` and record the outcome.

        Args:
            id: short unique slug, e.g. ``"dgc-accuracy-gap"``.
            statement: the paper's claim in one line.
            kind: ``"headline"``, ``"supporting"`` or ``"check"`` (:data:`KINDS`); no default, so that
                every claim says which it is.
            measured: the measured value (number, bool, or string for ``==``/``!=``).
            op: one of ``> >= < <= == != in``; ``in`` takes ``threshold=(low, high)``, inclusive.
            threshold: fixed before the run.
            source: where the paper makes the claim (figure, table, abstract).
            paper: the paper's own number for what ``measured`` measures, where the brief gives one
                (e.g. ``"270x"`` or ``0.5``); shown beside the measured value in ``RESULTS.md``.
            blocking: a failing non-blocking claim is reported but does not raise.
            profiles: the profiles the claim applies to (names from :data:`PROFILES`); in others it
                is recorded as ``skip``, and its measured value may be a placeholder such as NaN.

        Raises:
            ValueError: a bad id or one used twice, an unknown kind, op or profile name, a threshold that
                does not fit the op, or a NaN measured value in a profile the claim applies to (a
                NaN is not a measurement: the experiment broke, and that is an error, not a fail).
        """
        if not isinstance(id, str) or not _ID.match(id):
            raise ValueError(f"claim id must be a lowercase slug (a-z 0-9 _ . -), got {id!r}")
        if any(c.id == id for c in self.claims):
            raise ValueError(f"claim id {id!r} is used twice")
        if not isinstance(statement, str) or not statement.strip():
            raise ValueError(f"claim {id!r}: statement must be a non-empty string")
        if kind not in KINDS:
            raise ValueError(f"claim {id!r}: kind must be one of {KINDS}, got {kind!r}")
        if paper is not None and (isinstance(paper, bool) or not isinstance(paper, str | numbers.Real)):
            raise ValueError(f"claim {id!r}: paper must be the paper's number as a string or a number, got {paper!r}")
        if op not in _OPS:
            raise ValueError(f"claim {id!r}: op must be one of {sorted(_OPS)}, got {op!r}")
        if op == "in":
            if (not isinstance(threshold, Sequence) or len(threshold) != 2
                    or not all(isinstance(t, numbers.Real) for t in threshold) or threshold[0] > threshold[1]):
                raise ValueError(f"claim {id!r}: op 'in' needs threshold=(low, high) with low <= high")
            threshold = (float(threshold[0]), float(threshold[1]))
        elif op in (">", ">=", "<", "<=") and (
                isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
                or not math.isfinite(threshold)):
            raise ValueError(f"claim {id!r}: op {op!r} needs a finite number as threshold, got {threshold!r}")
        if isinstance(profiles, str) or not profiles:
            raise ValueError(f"claim {id!r}: profiles must be a non-empty sequence of profile names")
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown:
            raise ValueError(f"claim {id!r}: unknown profile name(s) {unknown}; profiles are {PROFILES}")
        measured = to_jsonable(measured)
        threshold = to_jsonable(threshold)
        if self.profile not in profiles:
            status = "skip"
        elif _holds(measured, ("nan",)):
            raise ValueError(f"claim {id!r}: the measured value is NaN ({measured!r}); a NaN is not a "
                             f"measurement (did the run diverge, or is the value computed from nothing?)")
        elif _holds(measured, ("inf", "-inf")):
            status = "fail"
        else:
            try:
                status = "pass" if _OPS[op](measured, threshold) else "fail"
            except TypeError as error:
                raise TypeError(f"claim {id!r}: cannot compare measured {measured!r} {op} {threshold!r}") from error
        claim = Claim(id, statement, source, measured, op, threshold, bool(blocking), tuple(profiles), status,
                      kind, None if paper is None else str(paper))
        self.claims.append(claim)
        return claim

    @property
    def blocking_failures(self) -> list[Claim]:
        return [c for c in self.claims if c.status == "fail" and c.blocking]

    def record(self) -> dict:
        """The machine-readable record the runner reads back (also the payload under :data:`MIME`)."""
        return {
            "profile": self.profile,
            "cpu_seconds": round(time.process_time(), 3),
            "claims": [c.record() for c in self.claims],
        }

    def table(self) -> str:
        """A plain-text pass/fail table."""
        rows = [("id", "kind", "status", "measured", "expected", "paper", "blocking")]
        rows += [(c.id, c.kind, c.status.upper(), _short(c.measured), c.expected, c.paper or "",
                  "yes" if c.blocking else "no") for c in self._ordered()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                         for row in rows)

    def _html(self) -> str:
        colours = {"pass": "#1a7f37", "fail": "#cf222e", "skip": "#6e7781"}
        body = "".join(
            f"<tr><td><code>{html.escape(c.id)}</code></td><td>{c.kind}</td>"
            f"<td style='color:{colours[c.status]};font-weight:bold'>{c.status.upper()}</td>"
            f"<td>{html.escape(c.statement)}</td><td>{html.escape(_short(c.measured))}</td>"
            f"<td>{html.escape(c.expected)}</td><td>{html.escape(c.paper or '')}</td>"
            f"<td>{'yes' if c.blocking else 'no'}</td></tr>"
            for c in self._ordered()
        )
        head = "".join(f"<th>{h}</th>" for h in ("id", "kind", "status", "claim", "measured", "expected", "paper",
                                                  "blocking"))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _ordered(self) -> list[Claim]:
        """Headlines first, then supporting claims, then checks (each in the order added)."""
        return sorted(self.claims, key=lambda c: KINDS.index(c.kind))

    def report(self) -> None:
        """Show the table, emit the record for the runner, and raise :class:`ClaimsFailed` if a
        blocking claim failed (``ValueError`` when there is no claim or no headline claim)."""
        if not self.claims:
            raise ValueError("no claims were added: a notebook must check at least one claim")
        if not any(c.kind == "headline" for c in self.claims):
            raise ValueError("no headline claim: a notebook states its paper's main claim with kind='headline'")
        bundle = {MIME: self.record(), "text/plain": self.table(), "text/html": self._html()}
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython ships with ipykernel
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display(bundle, raw=True)
        else:
            print(self.table())
        failures = self.blocking_failures
        if failures:
            details = "; ".join(f"{c.id}: measured {_short(c.measured)}, expected {c.expected}" for c in failures)
            raise ClaimsFailed(f"{len(failures)} blocking claim(s) failed: {details}")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
