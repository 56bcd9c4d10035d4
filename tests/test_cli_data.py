"""The dataset commands through the CLI: exit codes, output, files written."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from tests import makedata as md

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_import_info_delete(tmp_path, dataset_name):
    md.write_voc(tmp_path / "d", n=6)
    md.break_file(tmp_path / "d" / "images" / "img_001.jpg", "truncate")
    report = tmp_path / "rep.json"
    r = run("import", tmp_path / "d", "--name", dataset_name, "--report", report, "--split", "train")
    assert r.exit_code == 0, r.output
    assert "6 images read = 5 imported + 0 with warnings + 1 rejected" in r.output
    assert "JPEG is truncated" in r.output
    data = json.loads(report.read_text())
    assert data["summary"]["rejected"] == 1 and data["stored"]["added"] == 5
    assert data["files"][0]["status"] == "rejected"

    r = run("datasets")  # with its images, boxes and last score
    assert f"{dataset_name}: 5 images, 5 boxes; not scored" in r.output.splitlines(), r.output

    r = run("info", dataset_name, "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert info["images"] == 5 and info["images_per_split"] == {"train": 5}

    r = run("info", dataset_name)
    assert "boxes per class and split" in r.output and "crack" in r.output

    r = run("delete", dataset_name, "--yes")
    assert r.exit_code == 0 and not store.exists(dataset_name)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, expected in [
        (["import", tmp_path / "empty", "--name", "x"], "is empty"),
        (["import", tmp_path / "nope", "--name", "x"], "does not exist"),
        (["import", tmp_path, "--name", "x", "--format", "pascal"], "unknown --format 'pascal'"),
        (["info", "no_such_dataset"], "no dataset named 'no_such_dataset'"),
        (["delete", "no_such_dataset", "--yes"], "no dataset named"),
    ]:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert expected in r.output
        assert "Traceback" not in r.output
        assert not store.exists("x")


def test_every_command_has_help_with_an_example():
    import typer.main

    group = typer.main.get_command(app)
    assert len(group.commands) >= 4
    for name, cmd in group.commands.items():
        r = run(name, "--help")
        assert r.exit_code == 0, name
        assert "Example" in (cmd.help or ""), f"'{name}' has no example in its help"
