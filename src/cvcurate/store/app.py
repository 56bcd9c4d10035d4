"""The FiftyOne App and saved views."""

from __future__ import annotations

from typing import Any

from ._core import _fo, load

def list_saved_views(name: str) -> list[str]:
    return list(load(name).list_saved_views())


def launch_app(name: str, view_name: str | None, *, port: int, address: str, remote: bool,
               at_least: tuple[str, float] | None = None, limit: int | None = None) -> Any:
    """Open the FiftyOne App on a dataset, on one of its saved views; returns the session.

    ``at_least`` = (field, value): only samples whose field is at least the value; ``limit``: only
    the first samples of the view (its order kept)."""
    fo = _fo()
    from fiftyone import ViewField as F

    ds = load(name)
    view = ds.load_saved_view(view_name) if view_name else ds.view()
    if at_least is not None:
        view = view.match(F(at_least[0]) >= at_least[1])
    if limit is not None:
        view = view.limit(limit)
    return fo.launch_app(view, port=port, address=address, remote=remote, auto=not remote)


def count_view(name: str, view_name: str, at_least: tuple[str, float] | None = None) -> int:
    """How many samples a saved view holds (those whose field reaches ``at_least`` when given)."""
    from fiftyone import ViewField as F

    _fo()
    view = load(name).load_saved_view(view_name)
    return len(view.match(F(at_least[0]) >= at_least[1])) if at_least is not None else len(view)