"""Collectors built in tests as the shell builds them: validated settings plus a context."""

from __future__ import annotations

from typing import Any, TypeVar

from gpucost.collector.base import Collector, CollectorContext, registry

C = TypeVar("C", bound=Collector[Any])


def kind_of(cls: type[Collector[Any]]) -> str:
    """The kind ``cls`` is registered under."""
    return next(spec.kind for spec in registry().values() if spec.cls is cls)


def build_collector(cls: type[C], context: CollectorContext | None = None, **keys: Any) -> C:
    """``cls`` from the keys of its ``[[sources]]`` entry (``name`` defaults to the kind).

    The settings go through the kind's pydantic model, as a config file's would; the context
    (default: an empty one) carries the fakes of the outside world.
    """
    kind = kind_of(cls)
    settings = cls.Settings.model_validate({"name": kind, "kind": kind, **keys})
    return cls(settings, context or CollectorContext())
