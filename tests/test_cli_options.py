"""One name per concept across commands (#15), an example in every --help, and a fast --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cvcurate.cli import app

runner = CliRunner()
COMMANDS = [c.name for c in app.registered_commands]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_has_an_example_and_no_old_option_names(cmd):
    r = runner.invoke(app, [cmd, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "Example" in r.output, r.output
    # old spellings are hidden aliases: never shown
    assert "--field " not in r.output and "--predictions " not in r.output


@pytest.mark.parametrize("cmd", ["predict", "train", "score", "evaluate", "report"])
def test_prediction_field_is_pred_field_everywhere(cmd):
    r = runner.invoke(app, [cmd, "--help"], terminal_width=200)
    assert "--pred-field" in r.output


def test_help_imports_neither_fiftyone_nor_torch():
    """What keeps --help fast (0.3 s measured, docs/benchmarks.md): the heavy imports wait for use."""
    out = subprocess.run([sys.executable, "-c", "from cvcurate.cli import main; import sys; sys.argv=['cvcurate', "
                          "'--help']; main()"], capture_output=True, text=True)
    assert out.returncode == 0 and "Workflow" in out.stdout
    mods = subprocess.run([sys.executable, "-c", "import sys; import cvcurate.cli; "
                           "print(' '.join(m for m in ('fiftyone', 'torch') if m in sys.modules))"],
                          capture_output=True, text=True).stdout.strip()
    assert mods == "", f"importing the CLI imported {mods}"


@pytest.mark.parametrize("cmd", ["split", "corrupt", "synth", "augment"])
def test_a_negative_seed_is_refused_in_one_line(cmd, tmp_path, dataset_name):
    """Every --seed takes whole numbers >= 0 (numpy refuses negative seeds with a traceback)."""
    from cvcurate import store
    from tests import makedata as md

    if cmd == "augment":  # checks the dataset first
        store.write(md.make_labels(tmp_path / "i", n=2), dataset_name)
    args = {"split": ["split", "x", "--val", "0.2"], "corrupt": ["corrupt", "x", "--out", "y"],
            "synth": ["synth", str(tmp_path / "s"), "--images", "2"],
            "augment": ["augment", dataset_name, "--dry-run"]}[cmd]
    r = runner.invoke(app, args + ["--seed", "-1"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "seed" in r.output, r.output
    assert "greater than or equal to 0" in r.output or ">= 0" in r.output, r.output
