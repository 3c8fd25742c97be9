"""Collectors: one module per source kind, each registered under a kebab-case kind.

The registry loads the collector modules itself on the first lookup (:func:`get_spec`,
:func:`registry`); nothing has to be called first.
"""

from gpucost.collector.base import (
    REJECT_SCHEMA,
    Collected,
    Collector,
    CollectorContext,
    CollectorSpec,
    Probe,
    SourceSettings,
    get_spec,
    load_collectors,
    probe,
    register,
    registry,
)

__all__ = [
    "REJECT_SCHEMA",
    "Collected",
    "Collector",
    "CollectorContext",
    "CollectorSpec",
    "Probe",
    "SourceSettings",
    "get_spec",
    "load_all",
    "load_collectors",
    "probe",
    "register",
    "registry",
]


def load_all() -> None:
    """Import every collector module, filling the registry (kept for old callers: lookups load
    the collectors themselves)."""
    load_collectors()
