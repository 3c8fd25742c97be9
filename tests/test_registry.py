"""Meta-tests over the collector registry (the layers are in test_architecture.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import gpucost.collector
from gpucost.collector.base import register, registry
from gpucost.core.contracts import CONTRACTS

gpucost.collector.load_all()
REPO = Path(__file__).parent.parent
KINDS = sorted(registry())


def test_registry_is_not_empty() -> None:
    assert "focus-files" in KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_every_collector_is_complete(kind: str) -> None:
    spec = registry()[kind]
    assert spec.output_tables and set(spec.output_tables) <= set(CONTRACTS), spec.output_tables
    assert callable(getattr(spec.cls, "from_settings", None))
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
