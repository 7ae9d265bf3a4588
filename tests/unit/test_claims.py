import math

import numpy as np
import pytest
import torch

from commlab.lab.claims import MIME, Claims, ClaimsFailed, to_jsonable


@pytest.mark.parametrize(
    ("measured", "op", "threshold", "status"),
    [
        (2.0, ">", 1.0, "pass"), (1.0, ">", 1.0, "fail"),
        (1.0, ">=", 1.0, "pass"), (0.9, ">=", 1.0, "fail"),
        (0.5, "<", 1.0, "pass"), (1.0, "<", 1.0, "fail"),
        (1.0, "<=", 1.0, "pass"), (1.1, "<=", 1.0, "fail"),
        (True, "==", True, "pass"), ("a", "==", "b", "fail"),
        (3, "!=", 4, "pass"), (4, "!=", 4, "fail"),
        (0.0, "in", (0.0, 1.0), "pass"), (1.0, "in", (0.0, 1.0), "pass"), (1.01, "in", (0.0, 1.0), "fail"),
    ],
)
def test_comparisons(measured, op, threshold, status):
    claim = Claims("quick").add("c", "a claim", kind="headline", measured=measured, op=op, threshold=threshold)
    assert claim.status == status
    assert claim.passed == (status == "pass")


def test_an_infinite_measurement_fails_whatever_the_comparison():
    claims = Claims("quick")
    assert claims.add("b", "s", kind="headline", measured=np.float32("inf"), op=">", threshold=0.0).status == "fail"
    assert claims.add("c", "s", kind="headline", measured=[1.0, -math.inf], op="!=",
                      threshold=[1.0, 2.0]).status == "fail"


@pytest.mark.parametrize("measured", [float("nan"), np.float32("nan"), torch.tensor(float("nan")), [1.0, math.nan]])
def test_a_nan_measurement_is_an_error_in_a_profile_the_claim_applies_to(measured):
    claims = Claims("quick")
    with pytest.raises(ValueError, match="claim 'a': the measured value is NaN"):
        claims.add("a", "s", kind="headline", measured=measured, op="!=", threshold=1.0)
    assert claims.add("a", "s", kind="headline", measured=measured, op=">", threshold=1.0,
                      profiles=("full",)).status == "skip"


@pytest.mark.parametrize("profile", ["quik", "Quick", "", None, "ci"])
def test_an_unknown_profile_name_is_rejected_so_a_typo_cannot_skip_a_claim(profile):
    with pytest.raises(ValueError, match=r"profile must be one of \('quick', 'full'\)"):
        Claims(profile)
    with pytest.raises(ValueError, match=r"claim 'c': unknown profile name\(s\)"):
        Claims("quick").add("c", "s", kind="headline", measured=1.0, op=">", threshold=0.0, profiles=("quick", profile))


def test_claim_outside_its_profiles_is_skipped_and_never_blocks():
    claims = Claims("quick")
    claim = claims.add("paper-number", "s", kind="headline", measured=0.0, op=">", threshold=1.0, profiles=("full",))
    assert claim.status == "skip" and not claim.passed
    claims.report()  # does not raise


def test_numpy_and_torch_scalars_are_recorded_as_plain_numbers():
    claims = Claims("quick")
    claims.add("np", "s", kind="headline", measured=np.float64(0.25), op="<", threshold=np.float32(0.5))
    claims.add("torch", "s", kind="headline", measured=torch.tensor(3), op="==", threshold=3)
    records = claims.record()["claims"]
    assert records[0]["measured"] == 0.25 and type(records[0]["measured"]) is float
    assert records[1]["measured"] == 3 and type(records[1]["measured"]) is int
    assert to_jsonable(np.array([1.5, np.inf])) == [1.5, "inf"]


def test_record_has_the_fields_the_runner_reads():
    claims = Claims("quick")
    claims.add("gap", "Method A is within a point of B", kind="headline", measured=0.4, op="<=", threshold=1.0,
               source="Table 2", blocking=False)
    record = claims.record()
    assert record["profile"] == "quick" and record["cpu_seconds"] >= 0
    (claim,) = record["claims"]
    assert claim == {"id": "gap", "kind": "headline", "statement": "Method A is within a point of B",
                     "source": "Table 2", "measured": 0.4, "expected": "<= 1", "paper": None,
                     "passed": True, "status": "pass",
                     "blocking": False, "profiles": ["quick", "full"]}


def test_report_raises_on_blocking_failures_only(capsys):
    claims = Claims("quick")
    claims.add("ok", "s", kind="headline", measured=1, op="==", threshold=1)
    claims.add("soft", "s", kind="headline", measured=0, op="==", threshold=1, blocking=False)
    claims.report()
    assert "soft" in capsys.readouterr().out  # the table is printed outside IPython
    claims.add("hard", "s", kind="headline", measured=0.0, op="in", threshold=(0.5, 1.0))
    with pytest.raises(ClaimsFailed, match=r"1 blocking claim\(s\) failed: hard: measured 0, expected in \[0.5, 1\]"):
        claims.report()


def test_report_emits_the_mime_record_inside_ipython(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.get_ipython", lambda: object())
    monkeypatch.setattr("IPython.display.display", lambda obj, raw: shown.append(obj))
    claims = Claims("full")
    claims.add("x", "s", kind="headline", measured=1.0, op=">", threshold=0.0)
    claims.report()
    (bundle,) = shown
    assert bundle[MIME]["claims"][0]["id"] == "x"
    assert "PASS" in bundle["text/html"] and "PASS" in bundle["text/plain"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "Bad Id"}, "lowercase slug"),
        ({"statement": " "}, "statement"),
        ({"op": "~"}, "op must be one of"),
        ({"op": "in", "threshold": (2, 1)}, "low <= high"),
        ({"op": "in", "threshold": 1}, "low <= high"),
        ({"op": ">", "threshold": float("nan")}, "finite number"),
        ({"op": ">", "threshold": "1"}, "finite number"),
        ({"profiles": "quick"}, "profiles"),
        ({"kind": "main"}, "kind must be one of"),
        ({"kind": None}, "kind must be one of"),
        ({"paper": True}, "paper's number"),
    ],
)
def test_bad_claims_are_rejected_clearly(kwargs, message):
    args = {"id": "c", "statement": "s", "kind": "headline", "measured": 1.0, "op": ">", "threshold": 0.0} | kwargs
    with pytest.raises(ValueError, match=message):
        Claims("quick").add(args.pop("id"), args.pop("statement"), **args)


def test_duplicate_ids_empty_reports_and_incomparable_values_are_errors():
    claims = Claims("quick")
    with pytest.raises(ValueError, match="no claims"):
        claims.report()
    claims.add("c", "s", kind="headline", measured=1.0, op=">", threshold=0.0)
    with pytest.raises(ValueError, match="used twice"):
        claims.add("c", "s", kind="headline", measured=1.0, op=">", threshold=0.0)
    with pytest.raises(TypeError, match="cannot compare"):
        claims.add("d", "s", kind="headline", measured="text", op=">", threshold=0.0)
    with pytest.raises(TypeError, match="measured value"):
        claims.add("e", "s", kind="headline", measured=object(), op="==", threshold=0.0)


def test_every_claim_names_its_kind_and_a_report_needs_a_headline():
    claims = Claims("quick")
    with pytest.raises(TypeError, match="kind"):
        claims.add("c", "s", measured=1.0, op=">", threshold=0.0)  # no default kind
    claims.add("guard", "budgets are equal", kind="check", measured=1.0, op="==", threshold=1.0)
    claims.add("side", "an ablation", kind="supporting", measured=2.0, op=">", threshold=1.0)
    with pytest.raises(ValueError, match="no headline claim"):
        claims.report()
    claims.add("main", "the paper's claim", kind="headline", measured=3.0, op=">", threshold=1.0, paper="270x")
    claims.report()
    record = claims.record()["claims"]
    assert [(c["id"], c["kind"], c["paper"]) for c in record] == [
        ("guard", "check", None), ("side", "supporting", None), ("main", "headline", "270x")]
    assert [line.split()[0] for line in claims.table().splitlines()[1:]] == ["main", "side", "guard"]
