"""Collectors: one module per source kind, each registered under a kebab-case kind.

Importing this package imports every collector module so the registry is complete.
"""

from gpucost.collector.base import (
    REJECT_SCHEMA,
    Collected,
    Collector,
    CollectorContext,
    CollectorSpec,
    SourceSettings,
    get_spec,
    register,
    registry,
)

__all__ = [
    "REJECT_SCHEMA",
    "Collected",
    "Collector",
    "CollectorContext",
    "CollectorSpec",
    "SourceSettings",
    "get_spec",
    "register",
    "registry",
]


def load_all() -> None:
    """Import every collector module, filling the registry."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
