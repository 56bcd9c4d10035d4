"""Hostile input to the CLI: markup in names, bad ports, a text file as a checkpoint.

Each fails the way a user can act on: exit 0 with every name printed as it is, or exit 2 with one
line that says what was expected, never a traceback.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from cvcurate import store
from cvcurate.cli import app
from cvcurate.cli.common import console, esc, print_report
from cvcurate.report import ImportReport
from tests import makedata as md

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output
    return lines[0]


def test_markup_in_file_and_folder_names_is_printed_as_is(tmp_path, dataset_name):
    root = tmp_path / "d [v2] [red]"
    md.write_coco(root, n=4)
    doc = json.loads((root / "annotations.json").read_text())
    renames = {"img_000.jpg": "[bold]x.jpg", "img_001.jpg": "zero[i].jpg"}
    for im in doc["images"]:
        new = renames.get(im["file_name"])
        if new:
            (root / "images" / im["file_name"]).rename(root / "images" / new)
            im["file_name"] = new
    zero_id = next(im["id"] for im in doc["images"] if im["file_name"] == "zero[i].jpg")
    ann = next(a for a in doc["annotations"] if a["image_id"] == zero_id)
    ann["bbox"] = ann["bbox"][:3]  # a bad box: a warning that names the [x, y, w, h] format
    (root / "annotations.json").write_text(json.dumps(doc))
    md.break_file(root / "images" / "[bold]x.jpg", "truncate")

    r = run("import", root / "annotations.json", "--name", dataset_name, "--report", tmp_path / "rep.json")
    assert r.exit_code == 0, r.output
    assert "[bold]x.jpg" in r.output  # rejected, and named
    assert "zero[i].jpg" in r.output  # imported with a warning, and named
    assert "[x, y, w, h]" in r.output
    assert "d [v2] [red]" in r.output
    assert store.exists(dataset_name)


def test_print_report_escapes_every_field(capsys):
    rep = ImportReport(source="/data/[bold]set [/]", format="voc")
    rep.add("/data/[bold]x.jpg", ["unreadable: [red]no[/red]"], rejected=True)
    rep.add("/data/zero[i].jpg", ["bad box: bbox is not [x, y, w, h]; left out"], rejected=False)
    rep.problem("/data/[link=x]a.xml", "annotation without image [b]")
    rep.notes.append("a note with [italic]markup[/italic]")
    with console.capture() as cap:
        print_report(rep)
    out = cap.get()
    for text in ("/data/[bold]set [/]", "/data/[bold]x.jpg", "unreadable: [red]no[/red]", "/data/zero[i].jpg",
                 "[x, y, w, h]", "/data/[link=x]a.xml", "annotation without image [b]",
                 "a note with [italic]markup[/italic]"):
        assert text in out, (text, out)
    with console.capture() as cap:  # a trailing backslash cannot escape our own closing tag
        console.print(f"[bold]{esc('a' + chr(92))}[/]")
    assert cap.get().strip() == "a\\"


def test_progress_descriptions_are_not_markup(monkeypatch, capsys):
    from cvcurate import progress

    monkeypatch.setenv("CVCURATE_PROGRESS", "force")
    monkeypatch.setattr(progress, "_ENABLED", True)
    assert list(progress.track(range(3), description="reading [bold]x.jpg", total=3)) == [0, 1, 2]
    assert "reading [bold]x.jpg" in capsys.readouterr().err


def test_review_port_is_checked_before_launching(tmp_path, dataset_name):
    for bad in ("99999", "-5", "0"):
        r = run("review", dataset_name, "--port", bad)
        assert r.exit_code == 2, r.output
        assert f"--port must be between 1 and 65535, got {bad}" in one_error_line(r)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run("review", dataset_name, "--port", port)
        assert r.exit_code == 2, r.output
        assert f"port {port} on 127.0.0.1 is in use" in one_error_line(r)
    r = run("review", dataset_name, "--port", 5151, "--address", "no such host.invalid")
    assert r.exit_code == 2 and "cannot serve on --address" in one_error_line(r)


def test_a_text_file_as_checkpoint_says_what_was_expected_and_found(tmp_path, dataset_name):
    store.write(md.make_labels(tmp_path / "i", n=2), dataset_name)
    cases = {
        "notes.txt": ("this is not a checkpoint\n", "found a text file starting with 'this is not a checkpoint'"),
        "empty.pt": ("", "found an empty file"),
    }
    for fname, (content, found) in cases.items():
        (tmp_path / fname).write_text(content)
        r = run("predict", dataset_name, "--model", tmp_path / fname)
        assert r.exit_code == 2, r.output
        line = one_error_line(r)
        assert "is not a cvcurate detector checkpoint (a torch file saved by 'cvcurate train'" in line
        assert found in line, line
        assert "pop from empty list" not in line

    import torch

    torch.save({"weights": torch.zeros(1)}, tmp_path / "bare.pt")
    r = run("predict", dataset_name, "--model", tmp_path / "bare.pt")
    assert r.exit_code == 2
    assert "found a torch dict without state_dict" in one_error_line(r)
    torch.save([1, 2], tmp_path / "list.pt")
    r = run("predict", dataset_name, "--model", tmp_path / "list.pt")
    assert "found a torch file holding a list" in one_error_line(r)


def test_an_output_path_that_cannot_be_made_is_one_line(tmp_path, dataset_name):
    """--out below a file (or anywhere the system refuses) names the path; no traceback."""
    store.write(md.make_labels(tmp_path / "i", n=2), dataset_name)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    r = run("report", dataset_name, "--out", tmp_path / "afile" / "rep")
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert line.startswith("error: cannot use ") and f"{tmp_path / 'afile'} is a file, not a folder" in line


def test_output_files_are_checked_before_the_work(tmp_path, dataset_name):
    """An output file that cannot be written is refused before anything is imported or adopted."""
    src = tmp_path / "coco"
    md.write_coco(src, n=3)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    bad = tmp_path / "afile" / "out.json"
    r = run("import", src / "annotations.json", "--name", dataset_name, "--report", bad)
    assert r.exit_code == 2, r.output
    assert "cannot write the import report to" in one_error_line(r) and "is a file, not a folder" in r.output
    assert not store.exists(dataset_name)  # nothing imported
    store.write(md.make_labels(tmp_path / "i", n=2), dataset_name)
    for opt in ("--json", "--markdown", "--junit"):
        r = run("gate", dataset_name, opt, bad)
        assert r.exit_code == 2 and f"cannot write {opt} to" in one_error_line(r), r.output


def test_train_refuses_a_checkpoint_path_it_cannot_write_before_training(tmp_path, dataset_name):
    store.write(md.make_labels(tmp_path / "i", n=2), dataset_name)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    for out, words in ((tmp_path / "afile" / "m.pt", "is a file, not a folder"), (tmp_path, "it is a folder")):
        r = run("train", dataset_name, "--epochs", 1, "--out", out)
        assert r.exit_code == 2, r.output
        line = one_error_line(r)  # nothing trained: no progress, no "training on" line
        assert line.startswith("error: cannot write the checkpoint to ") and words in line, line


def test_predict_goes_on_past_images_it_cannot_read(tmp_path, dataset_name):
    """An image gone or broken after import gets no predictions and one warning; the others are
    predicted and written (the run is not lost at the first bad file)."""
    from cvcurate.synth import generate

    labels = generate(tmp_path / "s", 5, 7)
    store.write(labels, dataset_name)
    paths = sorted(r.filepath for r in labels.records)
    md.break_file(Path(paths[1]), "garbage")
    Path(paths[3]).unlink()
    r = run("predict", dataset_name, "--model", "synth")
    assert r.exit_code == 0, r.output
    assert "2 of 5 images could not be read and have no predictions" in r.output
    assert "wrote" in r.output and "for 3 images" in r.output
    assert "WARN" not in r.output  # no OpenCV line for the missing file
    got = {rec.filepath: rec.pred for rec in store.read(dataset_name, pred_field="predictions").records}
    assert all(got[p] is None or len(got[p]) == 0 for p in (paths[1], paths[3]))
    assert all(got[p] is not None and len(got[p]) > 0 for p in (paths[0], paths[2], paths[4]))
