"""Fixtures of the reports tests: small synthetic fleets, generated once per session."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pytest

from tests.reports.fleet import Fleet, allocation_from_billing


@pytest.fixture(scope="session")
def fleet_for(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Fleet]:
    """``fleet_for(seed)``: a 16-GPU, 2-day, 4-project fleet (cached per seed)."""
    cache: dict[int, Fleet] = {}

    def make(seed: int) -> Fleet:
        if seed not in cache:
            cache[seed] = Fleet.generate(tmp_path_factory.mktemp(f"fleet-{seed}"), seed=seed)
        return cache[seed]

    return make


@pytest.fixture(scope="session")
def fleet(fleet_for: Callable[[int], Fleet]) -> Fleet:
    """The seed-42 fleet most tests read."""
    return fleet_for(42)


@pytest.fixture(scope="session")
def allocation(fleet: Fleet) -> pl.DataFrame:
    """A stand-in allocation of the seed-42 fleet (see ``allocation_from_billing``)."""
    return allocation_from_billing(fleet)
