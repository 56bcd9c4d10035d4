"""The decision logic, pure (cvcurate.decisions): what tags decide, conflicts, carrying to a new
run, applying a fix, what undo compares."""

from __future__ import annotations

import pytest

from cvcurate import decisions as d
from cvcurate.decisions import APPLIED, CONFIRMED, REJECTED, Candidate, Decided


def test_a_label_tag_wins_and_both_tags_are_a_conflict():
    assert d.decision([], []) is None
    assert d.decision([CONFIRMED], []) == "confirmed"
    assert d.decision([CONFIRMED], [REJECTED]) == "rejected"  # the label's own tag wins
    assert d.decision([REJECTED], [CONFIRMED]) == "confirmed"
    assert d.decision([], [CONFIRMED, REJECTED]) == "conflict"  # never silently one of them
    assert d.decision([CONFIRMED, REJECTED], []) is None


def _fix(**kw):
    return {"id": "f", "cvc_action": "merge", "cvc_type": "fragment", "cvc_target": "a", "cvc_others": "b",
            "cvc_issue": "s:0:fragment", "tags": [], **kw}


def test_a_merge_confirmed_on_one_issue_and_rejected_on_the_other_is_a_conflict():
    sus_a = {"cvc_issue": "s:0:fragment", "cvc_type": "fragment", "cvc_target": "a", "tags": [CONFIRMED]}
    sus_b = {"cvc_issue": "s:1:fragment", "cvc_type": "fragment", "cvc_target": "b", "tags": [REJECTED]}
    assert d.fix_decision(_fix(tags=[CONFIRMED]), [], [sus_a])[0] == "confirmed"
    dec, why = d.fix_decision(_fix(tags=[CONFIRMED]), [], [sus_a, sus_b])
    assert dec == "conflict" and "s:1:fragment" in why
    # a rejected issue of another type on the same box does not stop it
    other = {**sus_b, "cvc_type": "swap"}
    assert d.fix_decision(_fix(tags=[CONFIRMED]), [], [sus_a, other])[0] == "confirmed"
    # undecided fix: its own issue's suspect decides
    assert d.fix_decision(_fix(), [], [sus_a])[0] == "confirmed"
    assert d.fix_decision(_fix(tags=[CONFIRMED, REJECTED]), [], [])[0] == "conflict"


def test_carry_matches_the_same_change_and_reports_the_rest():
    cands = {"s": [Candidate("fix", "swap", "relabel", "pit", "a", [0, 0, 10, 10]),
                   Candidate("fix", "overlooked", "add", "pit", None, [20, 20, 30, 30]),
                   Candidate("suspect", "badloc", None, None, "b", [0, 0, 5, 5])]}
    decided = [Decided("s", "fix", [CONFIRMED], "swap", "relabel", "pit", "a"),
               Decided("s", "fix", [REJECTED], "overlooked", "add", "pit", None, xyxy=[21, 21, 31, 31]),
               Decided("s", "suspect", [REJECTED], "badloc", target="b"),
               Decided("s", "fix", [CONFIRMED], "swap", "relabel", "crack", "a"),  # another class: not the same
               Decided("s", "fix", [APPLIED, CONFIRMED], "spurious", "remove", "pit", "c"),
               Decided("t", "fix", [REJECTED], "swap", "relabel", "pit", "z")]
    res = d.carry(cands, decided)
    assert [c.tags for c in cands["s"]] == [[CONFIRMED], [REJECTED], [REJECTED]]
    assert res.carried == 3 and res.applied_not_proposed == 1
    assert [(x.sample_id, x.cls) for x in res.not_carried] == [("s", "crack"), ("t", "pit")]
    # an added box far from the decided one is another change
    far = {"s": [Candidate("fix", "overlooked", "add", "pit", None, [60, 60, 70, 70])]}
    assert d.carry(far, decided[1:2]).carried == 0


def test_merge_decided_keeps_each_label_once():
    a = Decided("s", "fix", [CONFIRMED], "swap", "relabel", "pit", "a")
    b = Decided("s", "fix", [REJECTED], "swap", "relabel", "pit", "a")
    assert d.merge_decided([a], [b]) == [a]
    assert Decided.from_record(a.record()) == a


def test_apply_fix_and_what_undo_compares():
    gt = [{"id": "a", "label": "pit", "bounding_box": [0.1, 0.1, 0.2, 0.2], "tags": []},
          {"id": "b", "label": "pit", "bounding_box": [0.3, 0.1, 0.2, 0.2], "tags": []}]
    merged = [dict(x) for x in gt]
    assert d.apply_fix(merged, _fix(bounding_box=[0.1, 0.1, 0.4, 0.2]), set())
    assert [x["id"] for x in merged] == ["a"] and merged[0]["bounding_box"] == [0.1, 0.1, 0.4, 0.2]
    added = [dict(x) for x in gt]
    assert d.apply_fix(added, {"id": "f2", "cvc_action": "add", "cvc_class": "pit", "bounding_box": [0, 0, .1, .1]},
                       set(), new_id=lambda: "new")
    assert added[-1]["id"] == "new"
    assert not d.apply_fix([dict(gt[0])], _fix(bounding_box=[0, 0, 1, 1]), set())  # b is gone
    # undo compares boxes, not the attributes a score or the App adds
    scored = [{**x, "cvc_score": 0.7, "tags": ["x"]} for x in gt]
    assert d.labels_of(scored) == d.labels_of(gt)
    moved = [dict(gt[0], bounding_box=[0.5, 0.5, 0.1, 0.1]), gt[1]]
    assert d.changed_boxes(gt, moved) == ["box 0 (pit) moved"]
    assert d.changed_boxes(gt, [gt[1]]) == ["box 0 (pit) removed"]


def test_duplicate_pairs():
    box = {"label": "pit", "bounding_box": [0.1, 0.1, 0.2, 0.2]}
    assert d.duplicate_pairs([box, dict(box)], 0.5) == 1
    assert d.duplicate_pairs([box, dict(box, label="crack")], 0.5) == 0


def test_expected_errors_after_review():
    from cvcurate.decisions import APPLIED, CONFIRMED, REJECTED, expected_after_review

    def fx(iid, p, tags=(), t="swap"):
        return {"cvc_issue": iid, "cvc_type": t, "confidence": p, "tags": list(tags)}

    fixes = [(set(), fx("a", 0.8, [APPLIED])),          # applied: its p comes off
             (set(), fx("b", 0.3, [REJECTED])),         # rejected: off
             (set(), fx("c", 0.6, [CONFIRMED])),        # confirmed, not applied: counts 1
             ({CONFIRMED}, fx("d", 0.25)),              # the sample's tag decides it
             (set(), fx("e", 0.9)),                     # undecided: unchanged
             (set(), fx("c", 0.6, [CONFIRMED])),        # a second piece of issue c: counted once
             (set(), fx("f", 0.7, [REJECTED], t="blur"))]  # not a label-error type
    delta, counts = expected_after_review(fixes, ("swap",))
    assert delta == pytest.approx(-0.8 - 0.3 + 0.4 + 0.75)
    assert counts == {"applied": 1, "rejected": 1, "confirmed": 2}
