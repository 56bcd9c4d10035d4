"""The quality gate's checks (pure): each can pass and each can fail; reports parse."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest

from cvcurate import gate
from cvcurate.config import from_dict
from cvcurate.errors import ConfigError
from cvcurate.types import Annotations, ImageRecord, Issue, LabelSet

CLASSES = ["crack", "pit"]


def labels(n_per_class=(60, 60), split="train") -> LabelSet:
    recs = []
    for c, n in enumerate(n_per_class):
        for i in range(n):
            recs.append(ImageRecord(f"/d/{c}_{i}.jpg", 100, 100, Annotations([[10, 10, 30, 30]], [c]), split=split))
    return LabelSet(list(CLASSES), recs)


def clean_input(**kw) -> gate.GateInput:
    lab = kw.pop("labels", None) or labels()
    scored = kw.pop("scored", [[] for _ in lab.records])
    return gate.GateInput(labels=lab, issues=kw.pop("issues", []), scored=scored, score_method="test", **kw)


def status(result, name):
    return next(c for c in result.checks if c.name == name).status


def test_clean_data_passes():
    r = gate.run_checks(clean_input())
    assert r.passed and r.exit_code == 0
    assert {c.name for c in r.checks} == {
        "unreadable_images", "invalid_boxes", "images_per_class", "instances_per_class", "class_imbalance",
        "duplicate_images", "leakage", "label_error_rate", "in_sample_predictions", "unreviewed_issues",
        "images_with_issues", "unfinished_writes", "labeling_conventions"}
    # the YOLO rule of thumb is a note, never a failure
    assert any("rule of thumb" in n for c in r.checks for n in c.notes)


def _issues(kind, n, lab):
    return [Issue(lab.records[i].filepath, kind, 1.0, "x", box=0) for i in range(n)]


@pytest.mark.parametrize("check, make", [
    ("unreadable_images", lambda lab: dict(unreadable=1)),
    ("unreadable_images", lambda lab: dict(rejected=2)),
    ("invalid_boxes", lambda lab: dict(issues=_issues("degenerate", 1, lab))),
    ("invalid_boxes", lambda lab: dict(issues=_issues("out_of_image", 1, lab))),
    ("duplicate_images", lambda lab: dict(issues=_issues("near_duplicate", 10, lab))),
    ("leakage", lambda lab: dict(issues=_issues("leakage", 1, lab))),
    ("label_error_rate", lambda lab: dict(scored=[[gate.ScoredIssue("swap", 0.9, True)]] * 10
                                          + [[] for _ in lab.records[10:]])),
    ("images_with_issues", lambda lab: dict(scored=[[gate.ScoredIssue("blur", 0.6, True)]] * 70
                                            + [[] for _ in lab.records[70:]])),
])
def test_each_check_can_fail(check, make):
    lab = labels()
    r = gate.run_checks(clean_input(labels=lab, **make(lab)))
    assert status(r, check) == gate.FAIL
    assert not r.passed and r.exit_code == 1
    # everything else still passes: one broken thing fails one check
    others = {c.name: c.status for c in r.checks if c.name != check}
    assert gate.FAIL not in others.values(), others


def test_class_counts_and_imbalance_fail():
    r = gate.run_checks(clean_input(labels=labels((60, 5))))
    assert status(r, "images_per_class") == gate.FAIL and status(r, "instances_per_class") == gate.FAIL
    cfg = from_dict(gate.GateConfig, {"class_imbalance_above": {"warn": 5, "fail": 10},
                                      "images_per_class_below": {"warn": None, "fail": None},
                                      "instances_per_class_below": {"warn": None, "fail": None}})
    r = gate.run_checks(clean_input(labels=labels((60, 5))), cfg)
    assert status(r, "class_imbalance") == gate.FAIL
    assert next(c for c in r.checks if c.name == "class_imbalance").value == 12.0
    r = gate.run_checks(clean_input(labels=labels((60, 0))))
    assert status(r, "class_imbalance") == gate.FAIL


def test_unreviewed_issues_warn_then_fail_by_config():
    lab = labels()
    scored = [[gate.ScoredIssue("blur", 0.95, False)]] + [[] for _ in lab.records[1:]]
    assert status(gate.run_checks(clean_input(labels=lab, scored=scored)), "unreviewed_issues") == gate.WARN
    cfg = from_dict(gate.GateConfig, {"unreviewed_issues_above": {"fail": 0}})
    assert status(gate.run_checks(clean_input(labels=lab, scored=scored), cfg), "unreviewed_issues") == gate.FAIL
    decided = [[gate.ScoredIssue("blur", 0.95, True)]] + [[] for _ in lab.records[1:]]
    assert status(gate.run_checks(clean_input(labels=lab, scored=decided), cfg), "unreviewed_issues") == gate.PASS


def test_never_scored_warns_and_says_why():
    r = gate.run_checks(clean_input(scored=None))
    c = next(c for c in r.checks if c.name == "label_error_rate")
    assert c.status == gate.WARN and "cvcurate score" in c.message and r.passed


def test_reports_json_junit_markdown():
    lab = labels()
    r = gate.run_checks(clean_input(labels=lab, issues=_issues("leakage", 2, lab)))
    doc = json.loads(gate.to_json(r))
    assert doc["schema_version"] == gate.SCHEMA_VERSION and doc["status"] == "fail" and not doc["passed"]
    root = ET.fromstring(gate.to_junit(r).split("\n", 1)[1])
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == [c.name for c in r.checks]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["leakage"] and root.find("testsuite").get("failures") == "1"
    md = gate.to_markdown(r)
    assert md.startswith("## cvcurate gate: FAIL") and "| leakage | **FAIL** | 2 |" in md


@pytest.mark.parametrize("data, message", [
    ({"leakage_above": {"fail": 0}}, "did you mean 'leakage_images_above'"),
    ({"leakage_images_above": {"fail": "none"}}, "expected a number"),
    ({"leakage_images_above": {"fails": 1}}, "did you mean 'fail'"),
    ({"unreviewed_min_score": 2.0}, "must be in [0, 1]"),
    ({"class_imbalance_above": {"warn": -1}}, "non-negative"),
])
def test_bad_config_is_one_clear_error(data, message):
    with pytest.raises(ConfigError, match=None) as exc:
        from_dict(gate.GateConfig, data, "gate.yaml")
    assert message in str(exc.value)


def test_shipped_gate_yaml_equals_defaults():
    assert gate.load_gate_config() == gate.GateConfig()
