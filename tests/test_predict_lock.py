"""Predictions are written under the dataset's lock: a score reading them never sees half of them.

predict (and train --folds, predict --from-file) is refused before its work while another command
holds the dataset, waits for the lock before it writes when one started meanwhile, and, when the
lock stays busy, saves the predictions to a file the same command reads back: nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

from cvcurate import store
from cvcurate.errors import DatasetBusyError
from cvcurate.stages import predict as stage


@pytest.fixture
def synth_dataset(tmp_path, dataset_name):
    from cvcurate.synth import generate

    store.write(generate(tmp_path / "s", 4, 3), dataset_name)
    return dataset_name


@contextlib.contextmanager
def held(name: str, seconds: float | None = None, released: list | None = None, purpose: str = "score"):
    """The dataset's lock held by another holder (a thread here, a colleague's ``purpose``) until
    the block ends, or for ``seconds`` from its start; the time it let go is appended to ``released``."""
    taken, stop = threading.Event(), threading.Event()

    def hold() -> None:
        with store.dataset_lock(name, purpose, user="colleague"):
            taken.set()
            stop.wait(seconds)
            if released is not None:
                released.append(time.monotonic())

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        stop.set()
        t.join(10)


# the tests that stand in for the prediction work through engine.predict run the torch path; the
# default (ONNX on the CPU) takes the same lock and write (stage.write_predictions)
def test_predict_is_refused_before_its_work_while_another_command_writes(synth_dataset, monkeypatch):
    import cvcurate.engine as engine

    ran = []
    monkeypatch.setattr(engine, "predict", lambda *a, **k: ran.append(1) or [])
    with held(synth_dataset):
        with pytest.raises(DatasetBusyError, match="locked by another score .*colleague"):
            stage.predict(synth_dataset, model="synth", runtime="torch")
    assert not ran  # refused before predicting anything
    assert "predictions" not in store.field_names(synth_dataset)


def test_predict_waits_for_a_writer_that_started_meanwhile(synth_dataset, monkeypatch):
    import cvcurate.engine as engine

    real, real_write = engine.predict, store.write_detections
    holders, released, written = [], [], []

    def predict_while_a_score_starts(*a, **k):
        out = real(*a, **k)
        ctx = held(synth_dataset, seconds=1.0, released=released)  # a score takes the dataset for 1 s meanwhile
        ctx.__enter__()
        holders.append(ctx)
        return out

    def write(*a, **k):
        written.append(time.monotonic())
        return real_write(*a, **k)

    monkeypatch.setattr(engine, "predict", predict_while_a_score_starts)
    monkeypatch.setattr(store, "write_detections", write)
    res = stage.predict(synth_dataset, model="synth", runtime="torch")
    assert released and written and written[0] >= released[0]  # it waited for the lock, then wrote
    assert res.images == 4 and res.boxes > 0
    got = store.read(synth_dataset, pred_field="predictions")
    assert sum(len(r.pred) for r in got.records) == res.boxes
    for ctx in holders:
        ctx.__exit__(None, None, None)


def test_predictions_are_saved_when_the_lock_stays_busy(synth_dataset, monkeypatch, tmp_path):
    import cvcurate.engine as engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "WRITE_WAIT_S", 0.3)
    real = engine.predict
    holders = []

    def predict_while_a_score_holds(*a, **k):
        out = real(*a, **k)
        ctx = held(synth_dataset)  # held until the test ends
        ctx.__enter__()
        holders.append(ctx)
        return out

    monkeypatch.setattr(engine, "predict", predict_while_a_score_holds)
    try:
        with pytest.raises(DatasetBusyError, match=f"saved in {synth_dataset}_predictions.json: write them with "
                                                   f"'cvcurate predict {synth_dataset} --from-file"):
            stage.predict(synth_dataset, model="synth", runtime="torch")
        assert "predictions" not in store.field_names(synth_dataset)
    finally:
        for ctx in holders:
            ctx.__exit__(None, None, None)
    monkeypatch.setattr(engine, "predict", real)
    saved = tmp_path / f"{synth_dataset}_predictions.json"
    back = stage.import_predictions(synth_dataset, saved, format="coco")
    direct = stage.predict(synth_dataset, model="synth", pred_field="again", runtime="torch")
    assert back.boxes == direct.boxes
    a = store.read(synth_dataset, pred_field="predictions").records
    b = store.read(synth_dataset, pred_field="again").records
    for ra, rb in zip(a, b):  # the saved file gives the same boxes back (COCO's floats)
        assert ra.pred.equals(rb.pred, atol=1e-6)


def test_kfold_and_imported_predictions_take_the_lock(synth_dataset, monkeypatch, tmp_path):
    import cvcurate.detector.train as T

    trained = []
    monkeypatch.setattr(T, "kfold_predict", lambda *a, **k: trained.append(1) or [])
    (tmp_path / "p.json").write_text('[{"file_name": "x.png", "category_name": "crazing", "bbox": [1, 1, 5, 5], '
                                     '"score": 0.5}]')
    with held(synth_dataset):
        with pytest.raises(DatasetBusyError, match="locked by another score"):
            stage.kfold(synth_dataset, folds=2, epochs=1)
        assert not trained  # refused before any fold trained
        first = store.read(synth_dataset).records[0].filepath
        (tmp_path / "p.json").write_text((tmp_path / "p.json").read_text().replace("x.png", first.split("/")[-1]))
        with pytest.raises(DatasetBusyError, match="locked by another score"):
            stage.import_predictions(synth_dataset, tmp_path / "p.json", format="coco")
    assert "predictions" not in store.field_names(synth_dataset)
    stage.import_predictions(synth_dataset, tmp_path / "p.json", format="coco")  # free again: written
    assert "predictions" in store.field_names(synth_dataset)


def test_import_into_and_delete_of_a_dataset_in_use_are_refused(synth_dataset, tmp_path):
    from cvcurate.stages import datasets
    from cvcurate.stages.imports import import_dataset
    from tests import makedata as md

    src = tmp_path / "more"
    md.write_coco(src, n=2)
    before = store.counts(synth_dataset)
    with held(synth_dataset):
        for call in (lambda: import_dataset(src / "annotations.json", synth_dataset),
                     lambda: import_dataset(src / "annotations.json", synth_dataset, overwrite=True),
                     lambda: datasets.delete(synth_dataset)):
            with pytest.raises(DatasetBusyError, match="locked by another score"):
                call()
        assert store.counts(synth_dataset) == before
    import_dataset(src / "annotations.json", synth_dataset)  # free again: merged
    assert store.counts(synth_dataset)[0] == before[0] + 2
    assert datasets.delete(synth_dataset) == before[0] + 2


def test_corrupt_does_not_replace_a_dataset_in_use(synth_dataset, dataset_name, tmp_path, monkeypatch):
    from cvcurate.stages.corrupt import corrupt

    monkeypatch.chdir(tmp_path)  # its truth file goes to the working folder

    out = dataset_name + "_noisy"
    corrupt(synth_dataset, out, rate=0.5, seed=0)
    with held(out):
        with pytest.raises(DatasetBusyError, match="locked by another score"):
            corrupt(synth_dataset, out, rate=0.5, seed=1, overwrite=True)
    corrupt(synth_dataset, out, rate=0.5, seed=1, overwrite=True)  # free again: replaced
    store.delete(out)


def test_predictions_are_saved_when_the_database_is_lost_at_the_write(synth_dataset, monkeypatch, tmp_path):
    from cvcurate.errors import StoreError

    monkeypatch.chdir(tmp_path)

    def lost(*a, **k):
        raise StoreError("the database at mongodb://127.0.0.1:1 is unreachable")

    monkeypatch.setattr(store, "write_detections", lost)
    with pytest.raises(StoreError, match=f"unreachable; the predictions are saved in {synth_dataset}_predictions.json"):
        stage.predict(synth_dataset, model="synth")
    rows = json.loads((tmp_path / f"{synth_dataset}_predictions.json").read_text())
    assert len(rows) == 4 * 100 and {"file_name", "category_name", "bbox", "score"} <= set(rows[0])
