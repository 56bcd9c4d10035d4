"""Every command with a dataset name and a folder name holding "[", spaces and non-ASCII
characters: exit code 0, and the name printed as it is (rich markup would eat "[v2]")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cvcurate import store
from cvcurate.names import FIX_FIELD
from cvcurate import decisions
from cvcurate.cli import app
from cvcurate.synth import CLASSES as SYNTH_CLASSES

runner = CliRunner()

NAME = "steel [v2] äö"
NOISY = "steel [v2] äö noisy"
FOLDER = "synth [v2] äö ü"


def run(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output)
    assert "Traceback" not in r.output
    return r.output


@pytest.fixture
def names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output paths (reports, checkpoints, scores) hold the name
    yield
    for n in (NAME, NOISY):
        if store.exists(n):
            store.delete(n)


def tag_one_fix(name: str) -> None:
    """Confirm one proposed fix, as a reviewer does in the App."""
    fixes = store.get_detections(name, FIX_FIELD)
    sid, dets = next((sid, dets) for sid, dets in fixes.items() if dets)
    dets[0]["tags"] = [decisions.CONFIRMED]
    store.set_detections(name, FIX_FIELD, {sid: dets})


def test_every_command_prints_odd_names_intact(tmp_path, names):
    folder = tmp_path / FOLDER
    out = run("synth", folder, "--images", 8, "--seed", 3)
    assert str(folder) in out

    # 8 images do not show every class: --classes gives the shipped model's class list
    out = run("import", folder, "--name", NAME, "--classes", ",".join(SYNTH_CLASSES))
    assert str(folder) in out and f"dataset {NAME}:" in out
    assert (tmp_path / f"{NAME}_import_report.json").is_file()

    assert f"{NAME}: 8 images, 18 boxes; not scored" in run("datasets").splitlines()
    assert NAME in run("info", NAME)
    assert json.loads(run("info", NAME, "--json"))["images"] == 8

    out = run("predict", NAME)  # the shipped synthetic-data model
    assert f"field 'predictions' of {NAME} (from model default)" in out

    ckpt = tmp_path / "models [v2] ä" / "tiny.pt"
    out = run("train", NAME, "--epochs", 1, "--out", ckpt)
    assert f"checkpoint saved to {ckpt}" in out

    out = run("evaluate", NAME)
    assert f"saved to {NAME}_eval_predictions.json" in out

    out = run("score", NAME, "--no-pixels")
    assert f"{NAME}: " in out and f"review with 'cvcurate review \"{NAME}\"'" in out

    assert f"review progress of {NAME}:" in run("review", NAME, "--summary")

    tag_one_fix(NAME)
    assert f"sample(s) of {NAME}: " in run("apply", NAME, "--dry-run")
    out = run("apply", NAME, "--log-dir", tmp_path / "changes [v2]")
    assert f"undo with 'cvcurate apply \"{NAME}\" --undo'" in out and str(tmp_path / "changes [v2]") in out
    assert f"sample(s) of {NAME} restored" in run("apply", NAME, "--undo")

    out = run("corrupt", NAME, "--out", NOISY, "--rate", 0.5)
    assert f"{NOISY}: " in out and f"truth written to {NOISY}_truth.json" in out

    assert NAME in run("delete", NAME, "--yes")
    assert NOISY in run("delete", NOISY, "--yes")
    assert not store.exists(NAME) and not store.exists(NOISY)
