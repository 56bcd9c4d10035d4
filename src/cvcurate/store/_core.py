"""Connection and datasets: importing fiftyone with this environment's settings, listing,
loading and deleting datasets. The store package is the only code that imports fiftyone."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

from ..errors import DatasetNotFoundError, StoreError, interrupt_leaves, kept, shell_arg

GT_FIELD = "ground_truth"


PRED_FIELD = "predictions"


INFO_KEY = "cvcurate"


_TMP_PREFIX = "_cvcurate_tmp_"


def _fo() -> Any:
    """Import fiftyone with the settings this environment needs (user's env wins)."""
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    try:
        import fiftyone as fo
    except Exception as exc:  # the database may fail to start
        raise StoreError(f"FiftyOne could not start: {exc}") from exc
    return fo


def _safe_mode() -> bool:
    return os.environ.get("CVCURATE_STORE_SAFE", "") not in ("", "0", "false")


def list_datasets() -> list[str]:
    from . import direct

    if direct.usable():
        return direct.list_datasets(_TMP_PREFIX)
    fo = _fo()
    return [n for n in fo.list_datasets() if not n.startswith(_TMP_PREFIX)]


def exists(name: str) -> bool:
    return name in list_datasets()


def open_read(name: str) -> Any:
    """Dataset ``name`` for reading: without importing FiftyOne when the database allows it (a
    :class:`~cvcurate.store.direct.Handle`), else the FiftyOne dataset."""
    from . import direct

    if direct.usable():
        return direct.load(name, _TMP_PREFIX)
    return load(name)


def load(name: str) -> Any:
    """The FiftyOne dataset called ``name`` (for the review UI and tests)."""
    fo = _fo()
    if name not in fo.list_datasets():
        known = ", ".join(list_datasets()) or "none"
        raise DatasetNotFoundError(f"no dataset named {name!r} (datasets: {known})")
    return fo.load_dataset(name)


def delete(name: str) -> int:
    from .meta import forget_dataset

    ds = load(name)
    n = len(ds)
    with interrupt_leaves(f"dataset {name!r} may be partly deleted: "
                          f"run 'cvcurate delete {shell_arg(name)} --yes' again"):
        forget_dataset(ds)  # its change sets, journal and lock go with it
        ds.delete()
    kept(f"dataset {name!r} deleted")
    return n


def get_classes(ds: Any) -> list[str]:
    return list(ds.default_classes or [])


def _merge_classes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    merged = list(old)
    merged.extend(c for c in new if c not in merged)
    return merged


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Let a rollback finish when Ctrl-C is pressed again (or SIGTERM comes again): the interrupt that started the rollback
    is already on its way up, a second one would only leave the store half restored."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM neither: the rollback finishes
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
        signal.signal(signal.SIGTERM, old_term if old_term is not None else signal.SIG_DFL)


def field_names(name: str) -> list[str]:
    """The sample fields of dataset ``name``, in schema order."""
    return list(open_read(name).get_field_schema())
