"""The gate and the report never judge half of a change: they read the dataset under its lock.

While an apply (or undo, decide, score, augment, split) holds the dataset, ``gate`` and ``report``
are refused in one line naming it, exit 2, or wait ``--wait`` seconds and then read the finished
state. A predict writes nothing the gate reads: the gate goes on beside it; a report that reads the
predictions waits for it. The lock is held for the reads only, not for the pixel work after them.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from cvcurate import store
from cvcurate.errors import DatasetBusyError
from cvcurate.stages import gate as gate_stage
from cvcurate.stages.gate import run_gate
from cvcurate.stages.report import report
from tests.test_predict_lock import held


@pytest.fixture
def synth_dataset(tmp_path, dataset_name):
    from cvcurate.synth import generate

    store.write(generate(tmp_path / "s", 4, 3), dataset_name)
    return dataset_name


@pytest.mark.parametrize("purpose", ["apply", "score"])
def test_gate_is_refused_while_a_change_is_written(synth_dataset, purpose):
    with held(synth_dataset, purpose=purpose):
        with pytest.raises(DatasetBusyError, match=f"locked by another {purpose} .*colleague"):
            run_gate(synth_dataset)


def test_gate_waits_and_reads_the_finished_change(synth_dataset):
    """The holder removes every box of the first image before it lets go: the gate that waited
    sees the boxes after the change, not before."""
    before = sum(len(r.gt) for r in store.read(synth_dataset).records)
    first = store.read(synth_dataset).records[0]
    assert len(first.gt) > 0
    taken, seen = threading.Event(), []

    def change() -> None:
        with store.dataset_lock(synth_dataset, "apply", user="colleague"):
            taken.set()
            time.sleep(1.0)
            store.set_detections(synth_dataset, store.GT_FIELD, {first.sample_id: []})

    t = threading.Thread(target=change, daemon=True)
    t.start()
    assert taken.wait(10)
    real_fresh = gate_stage._fresh_issues

    def fresh(labels, *a, **k):
        seen.append((sum(len(r.gt) for r in labels.records), store.lock_holder(synth_dataset)))
        return real_fresh(labels, *a, **k)

    gate_stage._fresh_issues = fresh
    try:
        t0 = time.monotonic()
        run_gate(synth_dataset, wait=30)
    finally:
        gate_stage._fresh_issues = real_fresh
        t.join(10)
    assert time.monotonic() - t0 >= 0.9
    boxes, holder = seen[0]
    assert boxes == before - len(first.gt)  # the state after the change
    assert holder is None  # the checks ran with the lock let go


def test_gate_reads_beside_a_predict(synth_dataset):
    with held(synth_dataset, purpose="predict"):
        res = run_gate(synth_dataset)
    assert res.checks


def test_report_is_refused_while_a_change_is_written_and_waits(synth_dataset, tmp_path):
    with held(synth_dataset, purpose="apply"):
        with pytest.raises(DatasetBusyError, match="locked by another apply .*colleague"):
            report(synth_dataset, tmp_path / "r1", pixels=False)
    assert not (tmp_path / "r1" / "report.html").exists()
    t0 = time.monotonic()
    with held(synth_dataset, seconds=1.0, purpose="apply"):
        res = report(synth_dataset, tmp_path / "r2", pixels=False, wait=30)
    assert time.monotonic() - t0 >= 0.9
    assert res.images == 4 and (tmp_path / "r2" / "report.html").is_file()


def test_report_reads_beside_a_predict_unless_it_reads_predictions(synth_dataset, tmp_path):
    with held(synth_dataset, purpose="predict"):
        res = report(synth_dataset, tmp_path / "r", pixels=False)
    assert res.images == 4
    labels = store.read(synth_dataset)
    store.write_detections(synth_dataset, store.PRED_FIELD, labels.records,
                           [type(r.gt)(r.gt.xyxy, r.gt.class_id, confidence=np.full(len(r.gt), 0.9)) for r in labels.records],
                           labels.classes)
    with held(synth_dataset, purpose="predict"):
        with pytest.raises(DatasetBusyError, match="locked by another predict"):
            report(synth_dataset, tmp_path / "r2", pixels=False, pred_field=store.PRED_FIELD)


@pytest.mark.parametrize("command", [["gate"], ["report", "--out", "rep", "--no-pixels"]])
def test_cli_refused_in_one_line(synth_dataset, tmp_path, monkeypatch, command):
    from typer.testing import CliRunner

    from cvcurate.cli import app

    monkeypatch.chdir(tmp_path)
    with held(synth_dataset, purpose="apply"):
        r = CliRunner().invoke(app, [command[0], synth_dataset, *command[1:]])
    assert r.exit_code == 2, r.output
    assert "locked by another apply" in r.output and "--wait" in r.output and "Traceback" not in r.output
