"""Meta-tests over the collector registry (the layers are in test_architecture.py)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
import tomllib
import typing
from pathlib import Path

import pytest

from gpucost.collector.base import CollectorContext, register, registry
from gpucost.core.contracts import CONTRACTS

REPO = Path(__file__).parent.parent
KINDS = sorted(registry())


def test_registry_is_not_empty() -> None:
    assert "focus-files" in KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_every_collector_is_complete(kind: str) -> None:
    spec = registry()[kind]
    assert spec.output_tables and set(spec.output_tables) <= set(CONTRACTS), spec.output_tables
    # Built from its settings and the context only, the settings typed as the model it declares.
    parameters = list(inspect.signature(spec.cls).parameters)
    assert parameters == ["settings", "context"], f"{kind}: __init__{parameters}"
    hints = typing.get_type_hints(spec.cls.__init__)
    assert hints["settings"] is spec.settings_model, f"{kind}: settings typed {hints['settings']}"
    assert hints["context"] is CollectorContext
    assert callable(getattr(spec.cls, "collect", None))
    # The docstring shows its config, as a Custodian resource shows a policy.
    match = re.search(r"```toml\n(.*?)```", spec.doc, re.DOTALL)
    assert match, f"{kind}: the class docstring needs a ```toml example"
    example = tomllib.loads(match.group(1))
    (source,) = example["sources"]
    assert source["kind"] == kind
    allowed = set(spec.settings_model.model_fields)
    assert set(source) <= allowed, (
        f"{kind}: example keys not in its settings: {set(source) - allowed}"
    )
    # And a test exercises it: some test file names the kind or its module.
    module = spec.cls.__module__.rsplit(".", 1)[-1]
    tests = [p for p in (REPO / "tests").rglob("test_*.py") if p.name != "test_registry.py"]
    assert any(kind in p.read_text() or f"collector.{module}" in p.read_text() for p in tests), (
        f"{kind}: no test exercises it"
    )


def test_collectors_satisfy_the_protocol() -> None:
    for kind, spec in registry().items():
        assert isinstance(spec.cls, type), kind
        for attribute in ("output_tables", "collect"):
            assert hasattr(spec.cls, attribute), (kind, attribute)


def test_register_refuses_bad_plugins() -> None:
    with pytest.raises(ValueError, match="kebab-case"):
        register("Not_Kebab")
    with pytest.raises(TypeError, match="must declare Settings"):
        register("no-settings")(type("NoSettings", (), {"output_tables": ("billing",)}))


def fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter, where no collector module has been imported."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_a_lookup_loads_the_collectors_itself(tmp_path: Path) -> None:
    result = fresh_python(
        """
        import sys
        from gpucost.collector.base import get_spec
        assert "gpucost.collector.focus_files" not in sys.modules
        spec = get_spec("focus-files")
        print(spec.kind, spec.cls.__name__)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["focus-files", "FocusFiles"]


def test_a_config_loads_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # No bills/ folder: validation does not look at the disk.
    config = tmp_path / "gpucost.toml"
    config.write_text(
        '[store]\ndata_dir = "data"\nout_dir = "out"\n\n'
        '[[sources]]\nname = "finance-focus"\nkind = "focus-files"\npath = "bills/*.csv"\n'
    )
    result = fresh_python(
        f"""
        from gpucost.config import load_config
        config = load_config({str(config)!r}, environ={{}})
        print(type(config.sources[0]).__name__)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FocusFilesSettings"
