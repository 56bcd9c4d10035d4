"""The package layout holds: the CLI calls stages only, compute never touches the store.

Checked on the import statements of every module (AST), so a new module is checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cvcurate"
COMPUTE = ("types", "config", "errors", "progress", "report", "formats", "scoring", "detector", "synth", "decisions",
           "corrupt", "gate", "manifest", "augment", "analysis")


def imported(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts
    pkg = pkg[:-1] if pkg[-1] != "__init__" else pkg[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def modules(*parts: str) -> list[Path]:
    found = []
    for p in parts:
        target = SRC / p
        found += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return [f for f in found if f.exists()]


@pytest.mark.parametrize("path", modules("cli"), ids=lambda p: p.name)
def test_cli_never_touches_the_store(path):
    bad = {m for m in imported(path) if m == "cvcurate.store" or m.startswith(("cvcurate.store.", "fiftyone"))}
    assert not bad, f"{path.name} imports {sorted(bad)}: call a stage instead"


@pytest.mark.parametrize("path", modules(*COMPUTE), ids=lambda p: str(p.relative_to(SRC)))
def test_compute_never_imports_store_stages_or_fiftyone(path):
    bad = {m for m in imported(path)
           if m.startswith(("fiftyone", "cvcurate.store", "cvcurate.stages", "cvcurate.cli"))}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_only_the_store_imports_fiftyone():
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if any(m.startswith("fiftyone") for m in imported(p)))
    assert users and all(u.startswith("store") for u in users), users
