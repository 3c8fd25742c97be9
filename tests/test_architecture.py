"""The layers of DESIGN.md, enforced: imports only go down, never sideways.

- the floor, ``gpucost.core``: contracts, lake and storage IO, window, errors, secrets, the run
  manifest. It imports nothing of ours but itself.
- the stages, ``gpucost.collector``, ``gpucost.allocator``, ``gpucost.reports`` (the top-level
  folders ``collector/``, ``allocator/``, ``reports/``): each imports the floor and itself, never
  another stage nor the application.
- the application, every other ``gpucost.*`` module (config, nightly, backfill, serve, CLI,
  synth): it may import anything below it.

Every import counts, including lazy ones inside functions and relative ones. A failure names the
importing file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "gpucost"
STAGES = ("collector", "allocator", "reports")
BARE_NAMES = frozenset(STAGES)
"""The stage folders' own names, which are other distributions' names on the package index:
importing ``collector`` instead of ``gpucost.collector`` would load a second copy of the module."""


def module_name(path: Path) -> str:
    """``gpucost/collector/base.py`` -> ``gpucost.collector.base`` (paths under the symlinks)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> list[Path]:
    """Every module of the installed package, reached the way Python reaches it (symlinks)."""
    found: list[Path] = []
    for directory in [PACKAGE, PACKAGE / "core", *(PACKAGE / stage for stage in STAGES)]:
        found.extend(sorted(directory.glob("*.py")))
    for sub in sorted(PACKAGE.iterdir()):
        if sub.is_dir() and sub.name not in {"core", *STAGES, "__pycache__"}:
            found.extend(sorted(sub.rglob("*.py")))
    return found


def layer_of(module: str) -> str:
    """``core``, a stage's name, or ``app``."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] == "core":
        return "core"
    if len(parts) >= 2 and parts[1] in STAGES:
        return parts[1]
    return "app"


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, lazy and relative ones too."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from gpucost import cli` imports gpucost.cli, not just the package.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def allowed(importer: str, imported: str) -> bool:
    """Whether layer ``importer`` may import layer ``imported``."""
    if importer == "app":
        return True
    if importer == "core":
        return imported == "core"
    return imported in {"core", importer}


def violations() -> list[str]:
    """Every upward or sideways import in the product, as ``file:line: a imports b``."""
    found = []
    for path in product_modules():
        importer = layer_of(module_name(path))
        for line, target in imports_of(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if target.split(".")[0] in BARE_NAMES:
                found.append(f"{where}: imports bare {target!r}; use gpucost.{target}")
            if not target.startswith("gpucost.") or target == "gpucost":
                continue
            imported = layer_of(target)
            if not allowed(importer, imported):
                found.append(f"{where}: {importer} layer imports {target} ({imported} layer)")
    return found


def test_the_layers_hold() -> None:
    problems = violations()
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_package_root_imports_nothing() -> None:
    """Importing the floor runs ``gpucost/__init__.py``: it must not pull the application in."""
    assert not [
        target for _, target in imports_of(PACKAGE / "__init__.py") if target != "__future__"
    ]


def test_the_checker_sees_lazy_relative_and_sideways_imports(tmp_path: Path) -> None:
    """The checker itself: a planted sideways import inside a function is found, with its line."""
    planted = PACKAGE / "collector" / "_planted_for_test.py"
    planted.write_text("def f():\n    from ..reports import digest\n    import gpucost.cli\n")
    try:
        problems = [p for p in violations() if "_planted_for_test" in p]
    finally:
        planted.unlink()
    assert problems == [
        "gpucost/collector/_planted_for_test.py:2: collector layer imports gpucost.reports "
        "(reports layer)",
        "gpucost/collector/_planted_for_test.py:2: collector layer imports "
        "gpucost.reports.digest (reports layer)",
        "gpucost/collector/_planted_for_test.py:3: collector layer imports gpucost.cli (app layer)",
    ]


@pytest.mark.parametrize(
    "folder", [REPO / "tests", REPO / "benchmarks", *(PACKAGE / stage for stage in STAGES)]
)
def test_no_code_imports_the_bare_stage_names(folder: Path) -> None:
    bare = [
        f"{path.relative_to(REPO)}:{line}: {target}"
        for path in sorted(folder.rglob("*.py"))
        for line, target in imports_of(path)
        if target.split(".")[0] in BARE_NAMES
    ]
    assert not bare, "import gpucost.<stage>, not the bare folder name:\n" + "\n".join(bare)


def test_the_stage_folders_are_the_installed_subpackages() -> None:
    """``gpucost/collector`` etc. are links to the top-level folders, so one copy of each file."""
    for stage in STAGES:
        link = PACKAGE / stage
        assert link.is_symlink(), f"gpucost/{stage} should link to ../{stage}"
        assert link.resolve() == (REPO / stage).resolve()
