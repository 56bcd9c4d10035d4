"""The export stage: the dataset as it stands after applied fixes, written as a VOC, COCO or YOLO
folder with a versioned ``manifest.json``; and the diff of two exports.

Reads the store, calls the pure writers (:mod:`cvcurate.formats.writers`) and the manifest builder
(:mod:`cvcurate.manifest`). The source files are never touched. Nothing is written halfway: the
export is built in a temporary folder beside ``out`` and renamed into place when complete (an
existing ``out`` is replaced only with ``overwrite``, after the new export is complete, and only
when it is an earlier export that holds nothing the dataset uses: see :func:`check_replace`).
The temporary folders are hidden siblings of ``out`` named with the process and host that
write them, so that a later export to the same ``out`` removes those a killed export left
(:func:`clean_leftovers`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Sequence

from .. import __version__, manifest as mf, store
from ..errors import InputError
from ..formats.writers import EXPORT_FORMATS, VOC_ROUNDING, YOLO_PATHS, write_export, yolo_plan
from ..progress import track
from ..names import AUGMENT_FIELD, AUGMENTED_TAG, PREDICTION_WRITERS, Attr  # the tag and field: written by the augment stage
from ..types import LabelSet

STALE_AFTER_S = 24 * 3600  # a leftover whose writer cannot be checked (another host) is stale after a day
# writers that never change what an export reads (the given boxes, classes, splits, tags of kept or
# left-out samples, augment provenance): while one of them holds the dataset an export reads anyway
READ_SAFE_WRITERS = ("score",) + PREDICTION_WRITERS


@dataclass
class ExportResult:
    out: Path
    format: str
    images: int
    boxes: int
    manifest_path: Path
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not plain (a YOLO export without val images)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that cannot take an export, before any work: a file, a folder that is
    not empty (without ``overwrite``), a path below a file, a place that cannot be written."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} exists and is not empty: give --overwrite to replace it, or another --out")
    # the export is built beside out: its parent folder, or the first one above it that exists,
    # must be a folder this process can write in
    _, base = _missing_folders(out.parent)
    if not base.is_dir():
        raise InputError(f"cannot create --out {out}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"cannot write --out {out}: {base} is not writable (permission denied)")


def _under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both absolute and normalised)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _written_by_cvcurate(folder: Path) -> bool:
    """Whether ``folder`` has at its root the ``manifest.json`` of a cvcurate export."""
    path = folder / mf.MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        return False
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "schema_version" in doc and "cvcurate_version" in doc


def check_replace(name: str, out: Path) -> None:
    """Refuse to replace the non-empty folder ``out`` (``overwrite``), before any work, when
    deleting it could delete something dataset ``name`` uses or something cvcurate did not write:
    ``out`` is, holds or lies inside a folder the dataset was imported from (its images and
    annotations), ``out`` holds one of the dataset's images (symlinks followed, and a link itself
    counts), or ``out`` has no cvcurate ``manifest.json`` at its root."""
    real_out, abs_out = os.path.realpath(out), os.path.abspath(out)
    imported = f"which dataset {name!r} was imported from: refusing to replace it"
    for h in store.get_history(name):
        src = h.get("source") if h.get("action") == "import" else None
        if not src:
            continue
        real_src = os.path.realpath(src)
        if real_src == real_out:
            raise InputError(f"{out} is the folder dataset {name!r} was imported from: refusing to replace it "
                             "(that would delete its images and annotations); give another --out")
        if _under(real_src, real_out):
            raise InputError(f"{out} holds {src}, {imported} (that would delete its images and annotations); "
                             "give another --out")
        if _under(real_out, real_src):
            raise InputError(f"{out} lies inside {src}, {imported} (that could delete its images or "
                             "annotations); give an --out outside it")
    real_dirs: dict[str, str] = {}
    for fp in store.sample_values(name, ["filepath"])["filepath"]:
        if not fp:
            continue
        path = os.path.abspath(fp)
        folder, base = os.path.split(path)
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(folder)
        real = os.path.join(real_dirs[folder], base)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if _under(path, abs_out) or _under(real, real_out):
            raise InputError(f"{out} holds images of dataset {name!r} ({fp}): refusing to replace it (that "
                             "would delete them); give another --out")
    if not _written_by_cvcurate(out):
        raise InputError(f"{out} was not written by cvcurate export (no cvcurate manifest.json): refusing to "
                         "replace it; give another --out or remove it yourself")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def _work_folder(out: Path, kind: str) -> Path:
    """A hidden sibling of ``out`` for this export's new (``tmp``) or replaced (``old``) folder:
    ``.OUT.KIND-PID@HOST-RANDOM``, so that a later export can tell a killed export's leftover
    from a live one (:func:`clean_leftovers`)."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}@{_host()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _last_write(folder: Path) -> float:
    """The newest modification time of ``folder`` and the folders two levels below it (where
    an export adds its files: ``images/<split>/``), without reading every file."""
    newest = folder.lstat().st_mtime
    level = [folder]
    for _ in range(2):
        below = []
        for f in level:
            try:
                with os.scandir(f) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
                            below.append(Path(e.path))
            except OSError:
                continue
        level = below
    return newest


def _stale(path: Path, pid: str | None, host: str | None) -> bool:
    """Whether the export that wrote leftover ``path`` is gone: its process is dead on this host,
    or nothing was written in it for :data:`STALE_AFTER_S` (another host, an older cvcurate's
    name without a process)."""
    if pid is not None and host == _host() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
        return True
    try:
        return time.time() - _last_write(path) > STALE_AFTER_S
    except OSError:
        return False


def clean_leftovers(out: Path) -> list[str]:
    """Remove the temporary folders that earlier exports to ``out`` were killed before removing
    (hidden siblings ``.OUT.tmp-*`` / ``.OUT.old-*`` of this module's naming, whose export is
    gone: :func:`_stale`); lines saying what was done, none when there was nothing. A replaced
    export (``.old``) is kept while ``out`` does not exist: it may be the only copy of it."""
    try:
        siblings = sorted(out.parent.iterdir())
    except OSError:  # no parent yet, or one that cannot be listed: nothing to clean that can be seen
        return []
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(tmp|old)-(?:(\d+)@([A-Za-z0-9._-]+)-)?[0-9a-f]{{8}}")
    removed, failed, kept = [], [], []
    for path in siblings:
        m = pattern.fullmatch(path.name)
        if m is None or not (path.is_dir() or path.is_symlink()) or not _stale(path, m.group(2), m.group(3)):
            continue
        if m.group(1) == "old" and not os.path.lexists(out):
            kept.append(path.name)
            continue
        try:
            if path.is_symlink():
                path.unlink()
            else:
                shutil.rmtree(path)
            removed.append(path.name)
        except OSError as exc:
            failed.append(f"{path.name} ({exc.strerror or exc})")
    lines = []
    if removed:
        lines.append(f"removed {len(removed)} leftover(s) of earlier killed exports to {out} in {out.parent}: "
                     + ", ".join(removed))
    if failed:
        lines.append(f"could not remove leftover(s) of earlier killed exports to {out}: " + ", ".join(failed))
    if kept:
        lines.append(f"kept {', '.join(kept)} in {out.parent}: an earlier export to {out} was killed while "
                     "replacing it, so this may be its only copy; rename it back or remove it yourself")
    return lines


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _missing_folders(folder: Path) -> tuple[list[Path], Path]:
    """The folders from ``folder`` up that do not exist yet (deepest first), and the first that
    exists (a file or a folder)."""
    missing = []
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing, p


def _in_the_way(path: Path) -> Path | None:
    """The file that sits where ``path`` or a folder above it should be, if any."""
    for q in (path, *path.parents):
        if os.path.lexists(q):
            return None if q.is_dir() else q
    return None


def _destination_error(out: Path, exc: OSError, places: Sequence[Path]) -> InputError | None:
    """``exc`` as one line naming the path and why, when it is about writing the export (a path
    in ``places`` or inside one of them, or a folder above ``out``); None for anything else (a
    source image that cannot be read)."""
    names = [Path(os.fsdecode(f)) for f in (exc.filename, exc.filename2) if f is not None]
    ours = [n for n in names if any(n == p or p in n.parents for p in places) or n in out.parents]
    if not ours:
        return None
    path = ours[0]
    blocker = _in_the_way(path) if isinstance(exc, (FileExistsError, NotADirectoryError)) else None
    if blocker is not None:
        return InputError(f"cannot create --out {out}: {blocker} is a file, not a folder")
    if isinstance(exc, PermissionError):  # a folder that could not be made: where it was refused
        where = f"on {path}" if os.path.lexists(path) else f"in {path.parent}"
        return InputError(f"cannot write --out {out}: permission denied {where}")
    return InputError(f"cannot write --out {out}: {exc.strerror or exc} ({path})")


def _lineage(name: str, exported: dict[str, str]) -> dict[str, Any]:
    """Import sources, applied change sets and their fixes, the last ``cvcurate split`` (its
    settings and counts), the adopted labeling conventions, with no absolute path: sources by folder name, changed samples by their
    file in the export."""
    history = store.get_history(name)
    imports = []
    for h in history:
        if h.get("action") != "import":
            continue
        src = h.get("source") or ""
        # the import's VOC origin is in its "settings" (older histories: at the top level); the
        # other settings stay out (some hold absolute paths)
        settings = dict(h.get("settings") or {})
        if "voc_origin" in h:
            settings.setdefault("voc_origin", h["voc_origin"])
        imports.append({"source": PurePath(src).name, "format": h.get("format"), "split": h.get("split"),
                        "at": h.get("at"), "summary": h.get("summary"),
                        **({"voc_origin": settings["voc_origin"]} if "voc_origin" in settings else {})})
    changes = []
    for c in store.get_changes(name):
        if c.get("undone"):
            continue
        entry: dict[str, Any] = {"change_id": c.get("change_id"), "at": c.get("at"), "by": c.get("by"),
                                 "samples": c.get("samples"), "fixes": c.get("fixes")}
        try:
            log = json.loads(Path(c["log"]).read_text())
            what = []
            for ch in log.get("changes", []):
                file = exported.get(ch.get("sample_id"))
                for fx in ch.get("fixes", []):
                    what.append({"file": file, "action": fx.get(Attr.ACTION), "issue": fx.get(Attr.TYPE),
                                 "class": fx.get(Attr.CLASS), "tagged_at": fx.get("tagged_at")})
            entry["what"] = sorted(what, key=lambda w: (str(w["file"]), str(w["action"]), str(w["class"])))
        except (OSError, KeyError, json.JSONDecodeError):
            entry["what"] = None  # the log file is gone: the counts above are all that is known
        changes.append(entry)
    splits = [h for h in history if h.get("action") == "split"]
    split = ({k: splits[-1].get(k) for k in ("at", "val", "test", "seed", "reassign", "counts", "groups", "kept")}
             if splits else None)  # how the splits were made ('cvcurate split'); None: as imported
    conventions = {c: {k: e.get(k) for k in ("style", "at", "by", "change_id")}
                   for c, e in store.get_conventions(name).items()}  # adopted boxing styles, per class
    return {"imports": imports, "changes": changes, "score": _last_score(name), "split": split,
            "conventions": conventions}


def _last_score(name: str) -> dict[str, Any] | None:
    """The last score run as its typed record gives it (None: never scored): when, on which
    predictions, and its one count; a run of an older cvcurate is named as such."""
    try:
        rec = store.read_record(name, "score", issues=False)
    except InputError:
        run = store.get_runs(name).get("score") or {}
        return {"at": run.get("at"), "stale": "written by an older cvcurate: score again"}
    if rec is None:
        return None
    keys = ("images", "issues", "flagged", "flagged_images", "queue_min_p", "expected_label_errors",
            "expected_label_errors_sd")
    return {"at": rec.at, "cvcurate_version": rec.version, "schema": rec.schema, "pred_field": rec.pred_field,
            "in_sample_images": rec.in_sample_images, **{k: rec.summary.get(k) for k in keys}}


def _provenance(prov: dict[str, Any] | None, exported: dict[str, str]) -> dict[str, Any] | None:
    """Augmentation provenance without absolute paths: the source (and donors) as their file in
    the export when they are in it, else by file name; where the run wrote its files left out."""
    if not prov:
        return None
    out = {k: v for k, v in prov.items() if k not in ("out_dir", "source", "donors")}
    out["source"] = exported.get(prov.get("source_sample_id")) or PurePath(str(prov.get("source") or "")).name
    donors = []
    for d in prov.get("donors") or []:
        if isinstance(d, dict):
            d = dict(d)
            path = d.pop("source", None) or d.pop("filepath", None)
            d["file"] = exported.get(d.get("sample_id")) or (PurePath(str(path)).name if path else None)
            donors.append({k: v for k, v in d.items() if not (isinstance(v, str) and v.startswith("/"))})
        else:
            donors.append(PurePath(str(d)).name)
    out["donors"] = donors
    return out


def _settings(format: str, voc_origin: int | str | None, yolo_path: str | None) -> dict[str, Any]:
    """The format's writing options, checked (:class:`InputError` for a bad value, or an option of
    another format), with their defaults filled in."""
    if voc_origin is not None and format != "voc":
        raise InputError(f"--voc-origin is an option of --format voc, not {format}")
    if yolo_path is not None and format != "yolo":
        raise InputError(f"--yolo-path is an option of --format yolo, not {format}")
    if format == "voc":
        origin = 0 if voc_origin is None else str(voc_origin).strip()
        if origin not in (0, "0", "1") or isinstance(voc_origin, bool):
            raise InputError(f"--voc-origin must be 0 or 1 (export writes one convention), got {voc_origin!r}")
        return {"voc_origin": int(origin), "voc_coordinates": VOC_ROUNDING}
    if format == "yolo":
        mode = "absolute" if yolo_path is None else str(yolo_path)
        if mode not in YOLO_PATHS:
            raise InputError(f"--yolo-path must be one of {', '.join(YOLO_PATHS)}, got {yolo_path!r}")
        return {"yolo_path": mode}
    return {}


def _read_guard(name: str, wait: float) -> Any:
    """The dataset's lock for an export's reads (two of them: labels, then tags), so that none of
    it is read half way through another command's change; waited for ``wait`` seconds, else
    :class:`~cvcurate.errors.DatasetBusyError` naming the holder. A holder in
    :data:`READ_SAFE_WRITERS` (a score or predict: hours, and nothing an export reads) is not
    waited for: the export reads beside it."""
    return store.read_lock(name, "export", safe_writers=READ_SAFE_WRITERS, user=store.journal.who(), wait_s=wait)


def export(name: str, out: str | Path, *, format: str, split: str | None = None,
           exclude_tags: Sequence[str] = (), include_augmented: bool = True, media: str = "copy",
           overwrite: bool = False, progress: bool = False, voc_origin: int | str | None = None,
           yolo_path: str | None = None, log: Callable[[str], None] | None = None,
           wait: float = 0.0) -> ExportResult:
    """Write dataset ``name`` to ``out`` in ``format``, with ``manifest.json``. ``voc_origin``
    (VOC: 0, the default, or 1) and ``yolo_path`` (YOLO: ``absolute``, the default, or
    ``relative``): see :mod:`cvcurate.formats.writers`. ``log`` gets the lines saying which
    leftovers of killed exports were removed and what was not plain (a YOLO export without val
    images; also in :attr:`ExportResult.notes`) (default: stderr).

    The dataset is read under its lock (:func:`_read_guard`): an apply, undo, decide, augment,
    split or conventions --adopt running meanwhile is waited for (``wait`` seconds) or the export
    is refused, so an export never holds half of a change set."""
    if format not in EXPORT_FORMATS:
        raise InputError(f"unknown --format {format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    settings = _settings(format, voc_origin, yolo_path)
    out = Path(out)
    check_out_dir(out, overwrite)
    if overwrite and out.is_dir() and any(out.iterdir()):
        check_replace(name, out)
    from .recovery import warn_unfinished

    warn_unfinished(name)  # a half-written apply or score: said before the data goes out
    with _read_guard(name, wait):
        labels = store.read(name)
        tags = store.sample_values(name, ["tags", AUGMENT_FIELD])
    by_id = {sid: (set(t or []), aug) for sid, t, aug in zip(tags["id"], tags["tags"], tags[AUGMENT_FIELD])}
    excluded = {"split": 0, "tag": 0, "augmented": 0}
    keep = []
    for rec in labels.records:
        rtags, _ = by_id.get(rec.sample_id, (set(), None))
        if split is not None and rec.split != split:
            excluded["split"] += 1
        elif rtags & set(exclude_tags):
            excluded["tag"] += 1
        elif not include_augmented and AUGMENTED_TAG in rtags:
            excluded["augmented"] += 1
        else:
            keep.append(rec)
    if split is not None and not keep:
        known = sorted({r.split or "-" for r in labels.records})
        raise InputError(f"no image of {name!r} is in split {split!r} (splits: {', '.join(known)})")
    subset = LabelSet(classes=labels.classes, records=keep)
    if format == "yolo":
        yolo_plan(keep, name)  # a split a data.yaml cannot name: refused before any work

    for line in clean_leftovers(out):
        (log or _stderr)(line)
    made, _ = _missing_folders(out.parent)  # removed again when the export fails
    tmp = _work_folder(out, "tmp")
    old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        done = write_export(subset, tmp, format, media=media, voc_origin=settings.get("voc_origin", 0),
                            yolo_path=settings.get("yolo_path", "absolute"), final=os.path.abspath(out),
                            dataset=name, notes=notes)
        entries = []
        exported_by_id = {ex.record.sample_id: ex.image for ex in done}
        for ex in track(done, description="hashing exported images", total=len(done), enabled=progress):
            rec = ex.record
            aug = _provenance(by_id.get(rec.sample_id, (set(), None))[1], exported_by_id)
            entries.append(mf.ImageEntry(
                file=ex.image, sha256=mf.sha256_file(tmp / ex.image), split=rec.split, width=rec.width,
                height=rec.height, boxes=mf.box_rows(rec.gt.xyxy if ex.boxes is None else ex.boxes,
                                                     rec.gt.class_id, labels.classes),
                label_file=ex.label, augmented=aug or None))
        exported = {ex.record.sample_id: ex.image for ex in done}
        doc = mf.build(entries, classes=labels.classes, format=format, lineage=_lineage(name, exported),
                       version=__version__, settings={**settings, **({"notes": notes} if notes else {})})
        doc["dataset"] = name
        (tmp / mf.MANIFEST_NAME).write_bytes(mf.dumps(doc))
        if out.exists():
            old = _work_folder(out, "old")
            out.rename(old)
        tmp.rename(out)
    except BaseException as exc:
        err = None  # said before the clean-up, which removes the paths it looks at
        if isinstance(exc, OSError):
            err = _destination_error(out, exc, [tmp, out, *([old] if old is not None else [])])
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and os.path.lexists(old) and not os.path.lexists(out):
            old.rename(out)  # the previous export goes back where it was
        for folder in made:  # deepest first; only what this export created, and only when empty
            try:
                folder.rmdir()
            except OSError:
                break
        if err is not None:
            raise err from None
        raise
    if old is not None and old.is_symlink():  # --out was a link: the link goes, never what it points to
        old.unlink()
    elif old is not None:
        shutil.rmtree(old, ignore_errors=True)  # what is left (an interrupt) goes with the next export
    for line in notes:
        (log or _stderr)(line)
    return ExportResult(out=out, format=format, images=len(keep), boxes=subset.num_boxes,
                        manifest_path=out / mf.MANIFEST_NAME, excluded={k: v for k, v in excluded.items() if v},
                        notes=notes)


def diff(a: str | Path, b: str | Path) -> mf.Diff:
    """The diff of two manifests (files or export folders)."""
    return mf.diff(mf.read(a), mf.read(b))
