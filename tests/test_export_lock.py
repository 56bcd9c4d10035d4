"""An export never holds half of a change: it reads the dataset under its lock.

While an apply (or undo, decide, augment, split) holds the dataset, ``export`` is refused in one
line naming it, exit 2, or waits ``--wait`` seconds and then exports the finished state. A running
score or predict changes nothing an export reads: the export goes on beside it.
"""

from __future__ import annotations

import json
import time

import pytest

from cvcurate import store
from cvcurate.errors import DatasetBusyError
from cvcurate.stages.export import export
from tests.test_predict_lock import held


@pytest.fixture
def synth_dataset(tmp_path, dataset_name):
    from cvcurate.synth import generate

    store.write(generate(tmp_path / "s", 4, 3), dataset_name)
    return dataset_name


def _images(out) -> int:
    return len(json.loads((out / "manifest.json").read_text())["images"])


@pytest.mark.parametrize("purpose", ["apply", "undo", "augment", "split"])
def test_export_is_refused_while_a_change_is_written(synth_dataset, tmp_path, purpose):
    out = tmp_path / "exp"
    with held(synth_dataset, purpose=purpose):
        with pytest.raises(DatasetBusyError, match=f"locked by another {purpose} .*colleague"):
            export(synth_dataset, out, format="coco")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exp")] == []  # nothing left beside it


def test_export_waits_for_the_change_and_exports_after_it(synth_dataset, tmp_path):
    out = tmp_path / "exp"
    t0 = time.monotonic()
    with held(synth_dataset, seconds=1.0, purpose="apply"):
        res = export(synth_dataset, out, format="coco", wait=30)
    assert time.monotonic() - t0 >= 0.9  # it read after the apply let go
    assert res.images == 4 and _images(out) == 4


@pytest.mark.parametrize("purpose", ["score", "predict"])
def test_export_reads_beside_a_score_or_predict(synth_dataset, tmp_path, purpose):
    out = tmp_path / "exp"
    with held(synth_dataset, purpose=purpose):
        res = export(synth_dataset, out, format="yolo")
    assert res.images == 4 and _images(out) == 4


def test_cli_export_refused_in_one_line(synth_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cvcurate.cli import app

    monkeypatch.chdir(tmp_path)
    with held(synth_dataset, purpose="apply"):
        r = CliRunner().invoke(app, ["export", synth_dataset, "--format", "voc", "--out", "exp"])
    assert r.exit_code == 2, r.output
    assert "locked by another apply" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "exp").exists()
