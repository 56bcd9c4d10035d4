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
