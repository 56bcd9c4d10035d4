"""The FiftyOne App and saved views."""

from __future__ import annotations

from typing import Any

from ._core import _fo, load

def list_saved_views(name: str) -> list[str]:
    return list(load(name).list_saved_views())


def launch_app(name: str, view_name: str | None, *, port: int, address: str, remote: bool) -> Any:
    """Open the FiftyOne App on a dataset, on one of its saved views; returns the session."""
    fo = _fo()
    ds = load(name)
    view = ds.load_saved_view(view_name) if view_name else ds
    return fo.launch_app(view, port=port, address=address, remote=remote, auto=not remote)