"""The import report: one line for every bad file, nothing dropped silently.

Invariant: ``images_read == imported + imported_with_warnings + rejected``.
Problems that belong to no image (an annotation file whose image is missing, a CSV row that
cannot be parsed) are listed under ``other_problems`` and do not count as images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK = "imported"
WARN = "imported_with_warnings"
REJECTED = "rejected"


@dataclass
class FileEntry:
    path: str
    status: str
    messages: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    source: str
    format: str
    dataset: str | None = None
    entries: list[FileEntry] = field(default_factory=list)
    other_problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    boxes_imported: int = 0
    stored: dict[str, int] = field(default_factory=dict)
    # choices the import made (VOC origin, class map, crowd policy): printed and recorded in the
    # dataset's import history
    settings: dict[str, Any] = field(default_factory=dict)

    # -- building -------------------------------------------------------------------------
    def add(self, path: str, messages: list[str], rejected: bool) -> None:
        status = REJECTED if rejected else (WARN if messages else OK)
        self.entries.append(FileEntry(path=path, status=status, messages=list(messages)))

    def problem(self, path: str, message: str) -> None:
        self.other_problems.append({"path": path, "message": message})

    # -- reading --------------------------------------------------------------------------
    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    @property
    def images_read(self) -> int:
        return len(self.entries)

    @property
    def imported(self) -> int:
        return self.count(OK)

    @property
    def imported_with_warnings(self) -> int:
        return self.count(WARN)

    @property
    def rejected(self) -> int:
        return self.count(REJECTED)

    def summary(self) -> dict[str, Any]:
        return {
            "images_read": self.images_read,
            "imported": self.imported,
            "imported_with_warnings": self.imported_with_warnings,
            "rejected": self.rejected,
            "boxes_imported": self.boxes_imported,
            "other_problems": len(self.other_problems),
        }

    def message_counts(self) -> dict[str, int]:
        """How often each kind of message occurs (the text before the first ':')."""
        counts: dict[str, int] = {}
        for e in self.entries:
            for m in e.messages:
                kind = m.split(":", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
        for p in self.other_problems:
            kind = p["message"].split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "dataset": self.dataset,
            "summary": self.summary(),
            "stored": self.stored,
            "settings": self.settings,
            "notes": self.notes,
            "problem_kinds": self.message_counts(),
            "files": [asdict(e) for e in self.entries if e.status != OK],
            "other_problems": self.other_problems,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path
