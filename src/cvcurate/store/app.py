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

def configure_app(name: str, *, field_colors: dict[str, str], sidebar_first: list[str],
                  active: list[str] = (), group: str = "review") -> None:
    """Save App settings with the dataset: one colour per label field (a ``ColorScheme`` coloured
    by field), a sidebar group, first and expanded, holding ``sidebar_first``, and the fields
    switched on in the App (``active``: shown on the grid tiles and in the sample view)."""
    fo = _fo()
    ds = load(name)
    schema = ds.get_field_schema()
    ds.app_config.color_scheme = fo.ColorScheme(
        color_by="field", fields=[{"path": f, "fieldColor": c} for f, c in field_colors.items() if f in schema])
    groups = fo.DatasetAppConfig.default_sidebar_groups(ds)
    first = [p for p in sidebar_first if p in schema]
    for g in groups:
        g.paths = [p for p in g.paths if p not in first]
    ds.app_config.sidebar_groups = [fo.SidebarGroupDocument(name=group, paths=first, expanded=True)] + \
        [g for g in groups if g.paths or g.name in ("tags", "label tags", "metadata")]
    on = [p for p in active if p in schema]
    if on:
        from fiftyone.core.odm.dataset import ActiveFields

        ds.app_config.active_fields = ActiveFields(paths=on)
    ds.save()
