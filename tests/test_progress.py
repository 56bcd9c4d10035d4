"""Progress in logs (#15): plain lines with done/total and rate when stderr is not a terminal."""

from __future__ import annotations

import re
import time

from cvcurate import progress


def test_plain_lines_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_ENABLED", True)
    monkeypatch.setenv("CVCURATE_PROGRESS", "1")
    monkeypatch.setenv("CVCURATE_PROGRESS_INTERVAL", "0.05")

    def slow():
        for i in range(6):
            time.sleep(0.03)
            yield i

    assert list(progress.track(slow(), description="predicting", total=6)) == list(range(6))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) >= 2  # at least one while running, and the last one
    assert all(re.match(r"predicting: \d+/6 \(\d+%\), [\d.]+/s, \d+:\d\d elapsed", ln) for ln in lines)
    assert lines[-1].startswith("predicting: 6/6 (100%)") and lines[-1].endswith("done")
    assert "left" in lines[0]


def test_silent_when_disabled(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_ENABLED", False)
    assert list(progress.track(range(5), description="x", total=5)) == list(range(5))
    assert capsys.readouterr().err == ""
