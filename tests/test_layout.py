"""The package layout README.md ("Layout") describes holds, checked on the import statements of every
module (AST), so a new module is checked too:

* ``cli/``: thin commands that call stages only: never the store or fiftyone, and no compute module
  either, but for the names in :data:`CLI_EXCEPTIONS` (listed one by one, so that no new one slips in);
* ``stages/``: a stage reads the store, calls the compute, writes the store: it never imports the CLI;
* ``store/``: the only package that imports fiftyone, and it does not know what the stages mean: of
  cvcurate it imports only the errors, the annotation model (``types``) and the version;
* every other module is compute (the pure ``decisions``, ``gate``, ``manifest``, the formats, scoring,
  detector, augment, analysis, synth, ...): it never imports fiftyone, the store, the stages or the CLI;
* ``detector/``: torch is imported on use, not by importing the package, the stages or the CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cvcurate"
LAYERS = ("cli", "stages", "store")
# every other top-level module or package is compute (a new one too: it is checked as compute)
COMPUTE = sorted(({p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
                  | {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}) - set(LAYERS))
# what the store may import of cvcurate: it knows nothing of what the stages mean
STORE_MAY_IMPORT = ("cvcurate.store", "cvcurate.errors", "cvcurate.types", "cvcurate.__version__")
# the CLI's imports of cvcurate beyond stages, the CLI itself and errors: vocabulary and constants,
# and three direct calls of compute (synth's generator, corrupt's truth file, scoring's truth metrics)
CLI_EXCEPTIONS = {
    "common.py": {"cvcurate.report.ImportReport", "cvcurate.report.REJECTED", "cvcurate.report.WARN"},
    "corrupt.py": {"cvcurate.corrupt"},  # ERROR_TYPES, for --help
    "data.py": {"cvcurate.config.load_import_limits", "cvcurate.formats.FORMATS", "cvcurate.formats.VOC_ORIGINS"},
    "loop.py": {"cvcurate.gate"},  # PASS / WARN / FAIL, for colours
    "review.py": {"cvcurate.scoring.QUEUES"},
    "score.py": {"cvcurate.scoring.QUEUES"},
}


def _imports(path: Path) -> list[tuple[str, list[str] | None]]:
    """(module, the names imported from it) per import of ``path``; None for ``import module``
    (relative imports resolved)."""
    pkg = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    out: list[tuple[str, list[str] | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            out.append((".".join(base + ([node.module] if node.module else [])), [a.name for a in node.names]))
    return out


def imported(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    out = set()
    for mod, names in _imports(path):
        out.add(mod)
        out.update(f"{mod}.{n}" for n in names or [])
    return out


def imported_names(path: Path) -> set[str]:
    """What ``path`` imports, one name per imported thing: ``from a import b`` gives ``a.b`` only."""
    return {mod if names is None else f"{mod}.{n}" for mod, names in _imports(path) for n in (names or [None])}


def modules(*parts: str) -> list[Path]:
    found = []
    for p in parts:
        target = SRC / p
        found += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return [f for f in found if f.exists()]


def _is(m: str, *packages: str) -> bool:
    return any(m == p or m.startswith(p + ".") for p in packages)


def test_the_layers_are_where_the_readme_says():
    assert {"formats", "scoring", "detector", "augment", "analysis", "synth", "decisions", "gate", "manifest",
            "types"} <= set(COMPUTE)
    assert all((SRC / layer / "__init__.py").is_file() for layer in LAYERS)


@pytest.mark.parametrize("path", modules("cli"), ids=lambda p: p.name)
def test_cli_calls_stages_only(path):
    bad = {m for m in imported(path) if _is(m, "cvcurate.store", "fiftyone")}
    assert not bad, f"{path.name} imports {sorted(bad)}: call a stage instead"
    own = {m for m in imported_names(path) if _is(m, "cvcurate")
           and not _is(m, "cvcurate.stages", "cvcurate.cli", "cvcurate.errors", "cvcurate.__version__")}
    new = own - CLI_EXCEPTIONS.get(path.name, set())
    assert not new, (f"{path.name} imports {sorted(new)} of the compute: call a stage instead (or, for a "
                     f"constant, list it in CLI_EXCEPTIONS)")


@pytest.mark.parametrize("path", modules("stages"), ids=lambda p: p.name)
def test_stages_never_import_the_cli(path):
    bad = {m for m in imported(path) if _is(m, "cvcurate.cli")}
    assert not bad, f"stages/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("store"), ids=lambda p: p.name)
def test_the_store_does_not_know_what_the_stages_mean(path):
    bad = {m for m in imported(path) if _is(m, "cvcurate") and m != "cvcurate" and not _is(m, *STORE_MAY_IMPORT)}
    assert not bad, f"store/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules(*COMPUTE), ids=lambda p: str(p.relative_to(SRC)))
def test_compute_never_imports_store_stages_cli_or_fiftyone(path):
    bad = {m for m in imported(path) if _is(m, "fiftyone", "cvcurate.store", "cvcurate.stages", "cvcurate.cli")}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_only_the_store_imports_fiftyone():
    users = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if any(_is(m, "fiftyone") for m in imported(p)))
    assert users and all(u.startswith("store/") for u in users), users


def test_torch_is_imported_on_use():
    """Importing the detector package, every stage and the CLI loads neither torch nor torchvision."""
    stages = sorted(p.stem for p in (SRC / "stages").glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys; import cvcurate.cli, cvcurate.detector\n"
            f"for s in {stages!r}: importlib.import_module('cvcurate.stages.' + s)\n"
            "print(' '.join(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"torch imported before use: {out.stdout.strip()}"


def test_no_module_over_500_lines():
    """A module a newcomer can read: split by concern before one passes 500 lines."""
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
