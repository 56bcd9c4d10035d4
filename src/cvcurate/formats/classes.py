"""Class-name policy of the import: one place, every format.

Class names are read as the files spell them, then, in this order:

1. surrounding whitespace is stripped, always (``' Scratches '`` is ``'Scratches'``); a note
   says which names changed;
2. a class map (``--class-map FILE``: a YAML or JSON mapping ``old name: new name``) renames
   classes; a key matches a name as written or stripped; a key found nowhere is noted;
3. names equal up to case (``'Scratches'`` and ``'scratches'``) are merged into the most frequent
   spelling (by box count; ties: the first declared, then the alphabetically first), with a note.
   Names the class map mentions (as a key or a value) are never merged: to keep two spellings
   apart, map each to itself. ``merge_case=False`` turns merging off.

When a fixed class list is given (``--classes``), a name equal to one of its names up to case and
whitespace takes the list's spelling (noted), unless merging is off.

An import whose class names are all numbers (Severstal's ``1``..``4``) gets a note with a ready
``--class-map`` example for them (:func:`numeric_names_hint`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..config import ImportLimits, UnsafeYAMLError, safe_load_yaml
from ..errors import InputError


def read_class_map(path: str | Path, limits: ImportLimits | None = None) -> dict[str, str]:
    """Read a class map file: a YAML or JSON mapping of old name -> new name (a JSON nested deeper
    than ``limits.max_json_depth`` and a YAML with aliases are refused)."""
    from .base import RAISE_HINT, json_depth_over

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"class map {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"class map {path} cannot be read: {exc}") from None
    try:
        if path.suffix.lower() == ".json":
            depth = (limits or ImportLimits()).max_json_depth
            if json_depth_over(text, depth):
                raise InputError(f"class map {path}: JSON nested deeper than {depth} levels (max_json_depth); "
                                 f"not read: {RAISE_HINT}")
            doc = json.loads(text)
        else:
            doc = safe_load_yaml(text)
    except UnsafeYAMLError as exc:
        raise InputError(f"class map {path}: {exc}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"class map {path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                         f"{str(exc).splitlines()[0]}") from None
    return check_class_map(doc, str(path))


def check_class_map(doc: Any, source: str = "class map") -> dict[str, str]:
    if not isinstance(doc, Mapping) or not doc:
        raise InputError(f"{source}: expected a mapping 'old name: new name', got {type(doc).__name__}")
    out: dict[str, str] = {}
    for k, v in doc.items():
        if not isinstance(v, (str, int)) or isinstance(v, bool) or not str(v).strip():
            raise InputError(f"{source}: the new name for {str(k)!r} must be a non-empty name, got {v!r}")
        out[str(k)] = str(v).strip()
    return out


NUMERIC_HINT_LINES = 12  # example lines of the --class-map hint at most


def numeric_names_hint(names: Sequence[str]) -> str | None:
    """The hint for an import whose class names are all numbers (Severstal's ``1``..``4``, a YOLO
    ``names: ['0', '1']``): how to name them with ``--class-map``, with a ready example of the
    file (valid YAML for these names, to edit); None when a name is not a number."""
    import re

    if not names or not all(re.fullmatch(r"[0-9]+", n) for n in names):
        return None

    def key(n: str) -> str:  # '01' in YAML is the integer 1: quoted where a bare key would not read back
        return n if str(int(n)) == n else f"'{n}'"

    lines = [f"  {key(n)}: name_{n}" for n in names[:NUMERIC_HINT_LINES]]
    if len(names) > NUMERIC_HINT_LINES:
        lines.append(f"  # ... one line per class, {len(names)} in all")
    shown = ", ".join(names[:NUMERIC_HINT_LINES]) + (", ..." if len(names) > NUMERIC_HINT_LINES else "")
    return (f"class names are numbers ({shown}): name them with --class-map classes.yaml, a YAML file of "
            "'number: name' lines (put your names on the right), e.g.\n" + "\n".join(lines))


def _fmt_names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def class_renames(
    declared: Sequence[str] | None,
    box_labels: Iterable[str],
    *,
    class_map: Mapping[str, str] | None = None,
    merge_case: bool = True,
    fixed: Sequence[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """How every name found becomes a class name: (rename mapping, notes).

    ``declared``: the classes the format declares (in id order); ``box_labels``: the label of
    every box (with repeats: counts decide the spelling a case merge keeps). Names absent from
    the mapping are unchanged.
    """
    counts = Counter(box_labels)
    names = list(dict.fromkeys(list(declared or []) + sorted(counts)))
    notes: list[str] = []
    rename: dict[str, str] = {}

    stripped = {n: n.strip() for n in names}
    changed = [n for n in names if stripped[n] != n and stripped[n]]
    if changed:
        notes.append("class names: surrounding whitespace stripped from "
                     + ", ".join(f"{n!r} -> {stripped[n]!r}" for n in changed))
    step = {n: (stripped[n] or n) for n in names}

    cmap = dict(class_map or {})
    protected: set[str] = set()
    if cmap:
        keys = {k.strip(): v for k, v in cmap.items()}
        used: set[str] = set()
        mapped = []
        for n in names:
            for key in (n, step[n]):
                if key in cmap:
                    new = cmap[key]
                elif key in keys:
                    new = keys[key]
                else:
                    continue
                used.add(key.strip())
                if new != step[n]:
                    mapped.append(f"{step[n]!r} -> {new!r}")
                step[n] = new
                break
        protected = {k.strip() for k in cmap} | set(cmap.values())
        if mapped:
            notes.append("class map: renamed " + ", ".join(dict.fromkeys(mapped)))
        unused = [k for k in cmap if k.strip() not in used]
        if unused:
            notes.append(f"class map: {_fmt_names(unused)} not found in the data (ignored)")

    if merge_case:
        order = {n: i for i, n in enumerate(dict.fromkeys(step[n] for n in names))}
        box_count: Counter[str] = Counter()
        for n in names:
            box_count[step[n]] += counts.get(n, 0)
        fixed_by_key = {f.strip().casefold(): f for f in (fixed or [])}
        groups: dict[str, list[str]] = {}
        for cur in order:
            if cur in protected:
                continue
            groups.setdefault(cur.casefold(), []).append(cur)
        target: dict[str, str] = {}
        for key, spellings in groups.items():
            if key in fixed_by_key:
                keep = fixed_by_key[key]
            elif len(spellings) > 1:
                keep = sorted(spellings, key=lambda s: (-box_count[s], order[s], s))[0]
            else:
                continue
            others = [s for s in spellings if s != keep]
            if not others:
                continue
            for s in others:
                target[s] = keep
            why = "the --classes spelling" if key in fixed_by_key else "the most frequent spelling"
            notes.append(f"class names equal up to case merged: {_fmt_names(others)} -> {keep!r} ({why}, "
                         + ", ".join(f"{s!r} {box_count[s]} box(es)" for s in [keep] + others if s in box_count)
                         + "); --class-map FILE to decide otherwise")
        for n in names:
            step[n] = target.get(step[n], step[n])

    for n in names:
        if step[n] != n:
            rename[n] = step[n]
    return rename, notes
