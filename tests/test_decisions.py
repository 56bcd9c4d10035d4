"""A reviewer's decisions survive re-scoring (#23): carried to the fix that means the same change,
the ones that no longer apply kept in the history; applied fixes are not proposed again."""

from __future__ import annotations

import pytest

from cvcurate import decisions, store
from cvcurate.stages import apply as apply_stage
from cvcurate.stages import review
from cvcurate.names import FIX_FIELD
from cvcurate.stages.score import run_score
from tests.test_review import scored_dataset, tag_fixes


def _decided(name):
    out = {}
    for sid, dets in store.get_detections(name, FIX_FIELD).items():
        for d in dets:
            tags = set(d.get("tags") or []) & {"error:confirmed", "error:rejected", "fix:applied"}
            if tags:
                out[(sid, d["cvc_action"], d["cvc_class"], d.get("cvc_target"))] = tags
    return out


def test_decisions_survive_a_rescore_with_another_config(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    n_conf = tag_fixes(dataset_name, "relabel", "error:confirmed")
    n_rej = tag_fixes(dataset_name, "add", "error:rejected")
    assert n_conf and n_rej
    before = _decided(dataset_name)
    cfg = tmp_path / "score.yaml"
    cfg.write_text("calibration:\n  seed: 7\n  copies: 3\ngeometry:\n  outlier_z: 2.5\n")
    run_score(dataset_name, pred_field="predictions", pixels=False, config=cfg, out_dir=tmp_path / "s2")
    after = _decided(dataset_name)
    run = store.get_runs(dataset_name)["score"]
    dec = run["decisions"]
    assert dec["carried"] + dec["no_longer_apply"] == len(before)
    assert {k: v for k, v in before.items() if k in after} == {k: after[k] for k in before if k in after}
    assert dec["carried"] == len(set(before) & set(after))
    if dec["no_longer_apply"]:  # never dropped silently
        hist = [h for h in store.get_history(dataset_name) if h.get("action") == "score: decisions that no longer apply"]
        assert sum(len(h["fixes"]) for h in hist) == dec["no_longer_apply"]
    # the summary counts the same decisions as before the re-score
    rows = {p.queue: p for p in review.summary(dataset_name)}
    assert sum(p.confirmed + p.rejected for p in rows.values() if p.queue != "all") == dec["carried"] > 0


def test_applied_fixes_stay_applied_and_are_not_proposed_again(tmp_path, dataset_name):
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)

    def adds(tag):  # (sample, class, box as relative xyxy) of the add fixes tagged ``tag``
        return [(sid, d["cvc_class"], [x, y, x + w, y + h])
                for sid, dets in store.get_detections(dataset_name, FIX_FIELD).items() for d in dets
                if d["cvc_action"] == "add" and tag in (d.get("tags") or []) for x, y, w, h in [d["bounding_box"]]]

    scored_dataset(tmp_path, dataset_name)
    n_relabel = tag_fixes(dataset_name, "relabel", "error:confirmed")
    n_add = tag_fixes(dataset_name, "add", "error:rejected")
    assert n_relabel > 0 and n_add > 0
    rejected = adds("error:rejected")
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "changes")
    assert cs.applied == n_relabel  # every confirmed relabel, none of the rejected adds
    labels_after = {r.sample_id: r.gt.class_id.tolist() for r in store.read(dataset_name).records}
    run_score(dataset_name, pred_field="predictions", pixels=False, out_dir=tmp_path / "s3")
    # the labels still hold the applied fixes, and the new run proposes none of them again: each is
    # counted as applied (in the labels now), none carried to a new relabel, none lost
    assert {r.sample_id: r.gt.class_id.tolist() for r in store.read(dataset_name).records} == labels_after
    dec = store.get_runs(dataset_name)["score"]["decisions"]
    assert dec["applied_not_proposed"] == cs.applied and dec["no_longer_apply"] == 0
    applied = {(c["sample_id"], f["cvc_target"]) for c in cs.changes for f in c["fixes"]}
    assert len(applied) == cs.applied
    relabels = [(sid, d.get("cvc_target")) for sid, dets in store.get_detections(dataset_name, FIX_FIELD).items()
                for d in dets if d["cvc_action"] == "relabel"]
    assert not applied & set(relabels), applied & set(relabels)
    # the rejected adds are proposed again, and each rejection is carried to the add of its sample and
    # class at the same place
    assert dec["carried"] == len(rejected) == n_add
    again = adds("error:rejected")
    assert len(again) == len(rejected)
    for sid, cls, box in rejected:
        assert any(s == sid and c == cls and iou(b, box) >= 0.5 for s, c, b in again), (sid, cls, box, again)
    assert apply_stage.apply(dataset_name, log_dir=tmp_path / "changes").applied == 0  # nothing applied twice


def test_decide_from_the_command_line_and_from_the_csv(tmp_path, dataset_name):
    import csv

    from typer.testing import CliRunner

    from cvcurate.cli import app

    scored_dataset(tmp_path, dataset_name)
    rows = list(csv.DictReader(open(tmp_path / "scores" / "issues.csv")))
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    with_fix = sorted({d["cvc_issue"] for dets in fixes.values() for d in dets if d.get("cvc_issue")})
    assert with_fix and set(with_fix) <= {r["issue_id"] for r in rows}
    runner = CliRunner()
    r = runner.invoke(app, ["decide", dataset_name, "--confirm", with_fix[0], "--reject", with_fix[1]])
    assert r.exit_code == 0, r.output
    assert "1 issue(s) confirmed, 1 rejected" in r.output
    tags = {d["cvc_issue"]: set(d.get("tags") or []) for dets in store.get_detections(dataset_name, FIX_FIELD).values()
            for d in dets if d.get("cvc_issue")}
    assert "error:confirmed" in tags[with_fix[0]] and "error:rejected" in tags[with_fix[1]]
    # the same tags the App writes: apply takes the confirmed one
    assert apply_stage.apply(dataset_name, log_dir=tmp_path / "c", dry_run=True).applied >= 1
    # in bulk from the CSV: reject the rest
    out = tmp_path / "decisions.csv"
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["issue_id", "decision"])
        for i in with_fix[2:]:
            w.writerow([i, "reject"])
    r = runner.invoke(app, ["decide", dataset_name, "--from-file", str(out)])
    assert r.exit_code == 0, r.output
    rows_ = {p.queue: p for p in review.summary(dataset_name)}
    assert sum(p.rejected for q, p in rows_.items() if q != "all") >= len(with_fix) - 1
    # unknown ids and both decisions on one id: one line, exit 2, nothing recorded
    r = runner.invoke(app, ["decide", dataset_name, "--confirm", "nope:0:swap"])
    assert r.exit_code == 2 and "not in the last score run" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["decide", dataset_name, "--confirm", with_fix[0], "--reject", with_fix[0]])
    assert r.exit_code == 2 and "both confirmed and rejected" in r.output
    r = runner.invoke(app, ["decide", dataset_name])
    assert r.exit_code == 2 and "nothing to decide" in r.output


def _sample_with_boxes(name, n=2):
    gt = store.get_detections(name, store.GT_FIELD)
    sid = next(s for s, d in gt.items() if len(d) >= n)
    return sid, gt[sid]


def _fix(action, cls, box, target=None, p=0.9, issue="i"):
    return {"label": f"{action}:{cls}", "bounding_box": list(box), "confidence": p, "tags": ["error:confirmed"],
            "attributes": {}, "cvc_action": action, "cvc_type": "badloc", "cvc_class": cls, "cvc_target": target,
            "cvc_reason": "test", "cvc_others": None, "cvc_group": None, "cvc_issue": issue}


def _dups(dets):
    from cvcurate.decisions import duplicate_pairs as _duplicate_pairs

    return _duplicate_pairs(dets, 0.8)


def test_two_moves_onto_one_prediction_apply_once_and_report_the_conflict(tmp_path, dataset_name):
    """crazing_106: two move fixes (boxes 1 and 2) land on the same prediction."""
    scored_dataset(tmp_path, dataset_name)
    sid, gt = _sample_with_boxes(dataset_name)
    a, b = gt[0], gt[1]
    store.set_detections(dataset_name, store.GT_FIELD, {sid: [a, {**b, "label": a["label"]}]})
    target = [0.1, 0.1, 0.3, 0.3]
    store.set_detections(dataset_name, FIX_FIELD, {sid: [_fix("move", a["label"], target, a["id"], 0.9),
                                                         _fix("move", a["label"], target, b["id"], 0.7)]})
    dry = apply_stage.apply(dataset_name, log_dir=tmp_path / "c", dry_run=True)
    conflicts = [s for s in dry.skipped if s.get("conflict")]
    assert dry.applied == 1 and len(conflicts) == 1 and "conflicting" in conflicts[0]["why"]
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "c")
    assert cs.applied == 1 and [f["cvc_target"] for c in cs.changes for f in c["fixes"]] == [a["id"]]
    assert _dups(store.get_detections(dataset_name, store.GT_FIELD)[sid]) == 0


def test_split_and_two_adds_on_one_defect_make_one_box_each(tmp_path, dataset_name):
    """patches_202: confirming the whole sample applied a split and two adds over the same defect."""
    scored_dataset(tmp_path, dataset_name)
    sid, gt = _sample_with_boxes(dataset_name, 1)
    cls = gt[0]["label"]
    x, y, w, h = gt[0]["bounding_box"]
    left, right = [x, y, w / 2, h], [x + w / 2, y, w / 2, h]
    fixes = [{**_fix("split", cls, left, gt[0]["id"], 0.8), "cvc_group": gt[0]["id"]},
             {**_fix("split", cls, right, gt[0]["id"], 0.8), "cvc_group": gt[0]["id"]},
             _fix("add", cls, [left[0] + 0.002, left[1], left[2], left[3]], None, 0.6),
             _fix("add", cls, [right[0], right[1] + 0.002, right[2], right[3]], None, 0.5)]
    store.set_detections(dataset_name, FIX_FIELD, {sid: fixes})
    store.set_detections(dataset_name, store.GT_FIELD, {sid: gt[:1]})
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "c")
    assert sorted(f["cvc_action"] for c in cs.changes for f in c["fixes"]) == ["split", "split"]
    assert sum(1 for s in cs.skipped if s.get("conflict")) == 2
    after = store.get_detections(dataset_name, store.GT_FIELD)[sid]
    assert len(after) == 2 and _dups(after) == 0


def test_random_confirmations_never_add_duplicate_boxes(tmp_path, dataset_name):
    import numpy as np
    from bson import ObjectId

    scored_dataset(tmp_path, dataset_name)
    fixes = store.get_detections(dataset_name, FIX_FIELD)
    gt0 = store.get_detections(dataset_name, store.GT_FIELD)
    rng = np.random.default_rng(0)
    extra = {}
    for sid, dets in fixes.items():  # and rival fixes: a nudged copy of each add, each move also for another box
        rivals = []
        for d in dets:
            if d["cvc_action"] == "add":
                rivals.append({**d, "id": str(ObjectId()), "confidence": 0.01,
                               "bounding_box": [v + 0.003 for v in d["bounding_box"]]})
            elif d["cvc_action"] in ("move", "relabel"):
                for g in gt0.get(sid, []):
                    if g["id"] != d.get("cvc_target"):
                        rivals.append({**d, "id": str(ObjectId()), "confidence": 0.01, "cvc_target": g["id"],
                                       "cvc_action": "move", "bounding_box": [v + 0.002 for v in d["bounding_box"]]})
        if rivals:
            extra[sid] = dets + rivals
    for sid, dets in {**fixes, **extra}.items():
        for d in dets:
            d["tags"] = ["error:confirmed"] if rng.random() < 0.7 else []
    store.set_detections(dataset_name, FIX_FIELD, {**fixes, **extra})
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "c")
    assert cs.applied and any(s.get("conflict") for s in cs.skipped)
    after = store.get_detections(dataset_name, store.GT_FIELD)
    for sid, dets in after.items():
        assert _dups(dets) <= _dups(gt0.get(sid, [])), sid


def test_fix_labels_name_their_box_and_badloc_says_why_it_has_no_fix(tmp_path, dataset_name):
    import numpy as np

    from cvcurate.scoring.fixes import proposed_fixes
    from cvcurate.types import Annotations, ImageRecord, Issue

    scored_dataset(tmp_path, dataset_name)
    gt = store.get_detections(dataset_name, store.GT_FIELD)
    for sid, dets in store.get_detections(dataset_name, FIX_FIELD).items():
        ids = [g["id"] for g in gt.get(sid, [])]
        for d in dets:
            if d.get("cvc_target") in ids:
                assert d["label"] == f"#{ids.index(d['cvc_target'])} {d['cvc_action']} {d['cvc_class']}"
            else:
                assert d["label"] == f"+ {d['cvc_action']} {d['cvc_class']}"
    # a badloc whose only prediction of its class stands for the other box: no fix, and why
    gtb = Annotations(np.array([[10, 10, 50, 50], [60, 10, 100, 50.]]), [0, 0], data={"id": np.array(["a", "b"])})
    pred = Annotations(np.array([[61, 10, 100, 50.]]), [0], confidence=np.array([0.9]))
    rec = ImageRecord("/x.png", 200, 200, gt=gtb, pred=pred)
    iss = Issue("/x.png", "badloc", 0.8, "r", box=0, data={})
    assert proposed_fixes(rec, [iss]) == [] and "stand for other given boxes" in iss.data["no_fix"]
    iss2 = Issue("/x.png", "size_outlier", 0.6, "r", box=0, data={})
    proposed_fixes(rec, [iss2])
    assert iss2.data["no_fix"]


def test_undo_works_without_the_local_change_log(tmp_path, dataset_name):
    """The change history lives in the database: another machine of the team has no log file."""
    scored_dataset(tmp_path, dataset_name)
    before = store.get_detections(dataset_name, store.GT_FIELD)
    tag_fixes(dataset_name, "relabel", "error:confirmed")
    cs = apply_stage.apply(dataset_name, log_dir=tmp_path / "changes")
    assert cs.applied and cs.log_path.is_file()
    cs.log_path.unlink()  # as on a machine that did not apply
    undone = apply_stage.undo(dataset_name)
    assert undone.change_id == cs.change_id
    assert store.get_detections(dataset_name, store.GT_FIELD) == before


def test_the_gate_counts_applied_and_rejected_fixes_without_a_rescore(tmp_path, dataset_name):
    from cvcurate.stages.gate import run_gate

    def rate():
        c = next(c for c in run_gate(dataset_name).checks if c.name == "label_error_rate")
        return c.value, c.message

    scored_dataset(tmp_path, dataset_name)
    v0, _ = rate()
    assert tag_fixes(dataset_name, "relabel", "error:confirmed")
    v1, m1 = rate()
    assert v1 > v0 and "confirmed and not applied yet" in m1  # known errors now count 1 each
    apply_stage.apply(dataset_name, log_dir=tmp_path / "c")
    v2, m2 = rate()
    assert v2 < v0 and "fixed" in m2
    tag_fixes(dataset_name, "add", "error:rejected")
    v3, _ = rate()
    assert v3 < v2


def test_a_queue_view_shows_that_queue_s_issue_as_the_reason(tmp_path, dataset_name):
    scored_dataset(tmp_path, dataset_name)
    ds = store.load(dataset_name)
    for q in ("swap", "overlooked", "geometry"):
        view = ds.load_saved_view(f"cvc-{q}-all")
        reasons = view.values("cvc_reason")
        assert reasons, q
        from cvcurate.scoring import QUEUES

        assert all(r.split(":", 1)[0] in QUEUES[q] for r in reasons), (q, reasons[:3])


def test_decided_from_a_stored_label():
    """A stored fix label becomes its Decided (pixels from FiftyOne's relative box); a label with
    no decision tag (only other tags) is no decision."""
    from cvcurate.names import Attr

    label = {"tags": ["mine", decisions.CONFIRMED], "bounding_box": [0.1, 0.2, 0.5, 0.25],
             Attr.TYPE: "badloc", Attr.ACTION: "move", Attr.CLASS: "crack", Attr.TARGET: "abc"}
    d = decisions.Decided.from_label("s1", "fix", label, (200, 100))
    assert d is not None and d.tags == [decisions.CONFIRMED] and d.kind == "fix"
    assert (d.type, d.action, d.cls, d.target) == ("badloc", "move", "crack", "abc")
    assert d.xyxy == pytest.approx([20.0, 20.0, 120.0, 45.0])
    assert decisions.Decided.from_label("s1", "fix", label, None).xyxy is None  # size unknown
    assert decisions.Decided.from_label("s1", "suspect", {"tags": ["mine"], "bounding_box": [0, 0, 1, 1]},
                                        (10, 10)) is None


def test_decide_from_the_score_runs_own_issues_csv(tmp_path, dataset_name):
    """``decide --help``'s example as shown: score's issues.csv, its decision column filled in by a
    reviewer (the other rows left empty), fed back as it is."""
    import csv

    from typer.testing import CliRunner

    from cvcurate.cli import app

    scored_dataset(tmp_path, dataset_name)
    path = tmp_path / "scores" / "issues.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = list(rows[0])
    assert fields[0] == "issue_id" and "decision" in fields
    with_fix = {d["cvc_issue"] for dets in store.get_detections(dataset_name, FIX_FIELD).values() for d in dets
                if d.get("cvc_issue")}
    picked = [r for r in rows if r["issue_id"] in with_fix][:2]
    assert len(picked) == 2
    picked[0]["decision"], picked[1]["decision"] = "confirm", "reject"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    r = CliRunner().invoke(app, ["decide", dataset_name, "--from-file", str(path)])
    assert r.exit_code == 0, r.output
    assert "1 issue(s) confirmed, 1 rejected" in r.output
    help_text = CliRunner().invoke(app, ["decide", "--help"]).output
    assert "--from-file neu_scores/issues.csv" in help_text
    for text, words in (("issue_id,decision\n", "has its columns but no rows"),
                        ("id,verdict\nx,confirm\n", "needs the columns issue_id and decision")):
        (tmp_path / "d.csv").write_text(text)
        r = CliRunner().invoke(app, ["decide", dataset_name, "--from-file", str(tmp_path / "d.csv")])
        assert r.exit_code == 2 and words in r.output, r.output
