"""The dataset's own metadata: ``ds.info["cvcurate"]``, read and changed in one place.

It holds the import history (``history``), the registered runs (``runs``) and the applied change
sets (``changes``). Every read-modify-write of it goes through :func:`update_meta`, which copies
the metadata, lets the caller change the copy and saves it once.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from ._core import INFO_KEY, load


def _dataset(target: Any) -> Any:
    return load(target) if isinstance(target, str) else target


def get_meta(target: Any, key: str, default: Any = None) -> Any:
    """A copy of ``info["cvcurate"][key]`` of a dataset (given by name or as a dataset)."""
    meta = (_dataset(target).info or {}).get(INFO_KEY) or {}
    return copy.deepcopy(meta.get(key, default))


def update_meta(target: Any, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to a copy of ``info["cvcurate"]`` and save the dataset's info once."""
    ds = _dataset(target)
    info = copy.deepcopy(ds.info or {})
    meta = info.get(INFO_KEY) or {}
    change(meta)
    info[INFO_KEY] = meta
    ds.info = info
    ds.save()


# -- import and other history ------------------------------------------------------------------
def get_history(target: Any) -> list[dict[str, Any]]:
    return list(get_meta(target, "history") or [])


def append_history(target: Any, entry: dict[str, Any] | None) -> None:
    if entry:
        update_meta(target, lambda m: m.setdefault("history", []).append(entry))


# -- runs --------------------------------------------------------------------------------------
def get_runs(target: Any) -> dict[str, Any]:
    return dict(get_meta(target, "runs") or {})


def set_run(target: Any, key: str, run: dict[str, Any] | None) -> None:
    """Register ``run`` under ``key`` (None removes it); a run set again goes last, where deleting
    and registering it puts it."""
    def change(meta: dict[str, Any]) -> None:
        runs = dict(meta.get("runs") or {})
        runs.pop(key, None)
        if run is not None:
            runs[key] = run
        meta["runs"] = runs

    update_meta(target, change)


# -- change sets (review's apply / undo) ---------------------------------------------------------
def get_changes(target: Any) -> list[dict[str, Any]]:
    return list(get_meta(target, "changes") or [])


def record_change(target: Any, entry: dict[str, Any]) -> None:
    """Add a change-set entry, or update the one with the same id."""
    def change(meta: dict[str, Any]) -> None:
        changes = [c for c in meta.get("changes") or [] if c.get("change_id") != entry["change_id"]]
        changes.append(entry)
        changes.sort(key=lambda c: c["change_id"])
        meta["changes"] = changes

    update_meta(target, change)


def forget_change(target: Any, change_id: str) -> None:
    """Remove a change-set entry (rolling back an interrupted apply); nothing if it is absent."""
    if any(c.get("change_id") == change_id for c in get_changes(target)):
        update_meta(target, lambda m: m.__setitem__(
            "changes", [c for c in m.get("changes") or [] if c.get("change_id") != change_id]))
