"""Day by day: runs of days allocated on their own give the rows of one run over the window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from gpucost.allocator.allocate import AllocationResult, allocate, gpu_resources
from gpucost.allocator.days import _runs, separable_runs
from gpucost.allocator.policy import AllocationPolicy
from gpucost.allocator.projects import ProjectRule
from gpucost.core.window import Window
from tests.allocator.builders import truth_rules
from tests.synth_fleet import SynthFleet

START = date(2024, 9, 24)
DAYS = 4


class Fleet(SynthFleet):
    """A synth fleet read back, allocated day by day or over its whole window."""

    @cached_property
    def rules(self) -> list[ProjectRule]:
        return truth_rules(self.truth)

    def billing_of(self, billing: pl.DataFrame) -> object:
        def scan(days: Window) -> pl.LazyFrame:
            return billing.lazy().filter(days.contains(pl.col("ChargePeriodStart").dt.date()))

        return scan

    def by_days(
        self, billing: pl.DataFrame, policy: AllocationPolicy
    ) -> tuple[list[Window], AllocationResult]:
        scan = self.billing_of(billing)
        assert callable(scan)
        gpus = gpu_resources(self.inventory.lazy(), self.rules)
        runs = [
            Window(first, stop)
            for first, stop in separable_runs(
                lambda first, stop: scan(Window(first, stop)),
                self.window.start,
                self.window.end,
                self.rules,
                gpus,
            )
        ]
        results = [
            allocate(
                scan(days),
                self.usage.lazy().filter(days.contains(pl.col("hour").dt.date())),
                self.inventory.lazy(),
                self.headcount.lazy().filter(days.contains(pl.col("day"))),
                self.rules,
                policy,
            )
            for days in runs
        ]
        return runs, AllocationResult(
            pl.concat([result.allocation for result in results]),
            pl.concat([result.reconciliation for result in results]),
        )

    def whole(self, billing: pl.DataFrame, policy: AllocationPolicy) -> AllocationResult:
        return allocate(
            billing.lazy(),
            self.usage.lazy(),
            self.inventory.lazy(),
            self.headcount.lazy(),
            self.rules,
            policy,
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet.generate(tmp_path_factory.mktemp("days"), seed=7, days=DAYS, start=START)


def _day(number: int) -> datetime:
    return datetime.combine(START + timedelta(days=number), datetime.min.time(), tzinfo=UTC)


@pytest.mark.parametrize(
    "policy",
    [
        AllocationPolicy(),
        AllocationPolicy(gpu_basis="allocation", idle="users", shared="headcount"),
        AllocationPolicy(gpu_basis="max", idle="separate", shared="proportional"),
    ],
)
def test_each_day_alone_gives_the_rows_of_the_whole_window(
    fleet: Fleet, policy: AllocationPolicy
) -> None:
    runs, by_days = fleet.by_days(fleet.billing, policy)
    assert runs == [Window(day, day + timedelta(days=1)) for day in fleet.window.each_day()]
    whole = fleet.whole(fleet.billing, policy)
    assert_frame_equal(by_days.allocation, whole.allocation)
    assert_frame_equal(by_days.reconciliation, whole.reconciliation)


def test_a_charge_past_midnight_or_a_late_refund_ties_days(fleet: Fleet) -> None:
    gpus = gpu_resources(fleet.inventory.lazy(), fleet.rules)
    billing = fleet.billing
    # A GPU host's charge of day 0's last hour running two hours into day 1.
    host_charge = billing.filter(
        pl.col("ResourceId").is_in(gpus.implode())
        & (pl.col("ChargePeriodStart") == _day(1) - timedelta(hours=1))
    ).head(1)
    assert host_charge.height == 1
    longer = host_charge.with_columns(pl.col("ChargePeriodEnd") + timedelta(hours=2))
    # A resource tagged on day 2 and an untagged refund of it on day 3 (not a GPU host).
    tagged = (
        billing.filter(
            pl.col("Tags").is_not_null()
            & pl.col("ResourceId").is_not_null()
            & ~pl.col("ResourceId").is_in(gpus.implode())
            & (pl.col("ChargePeriodStart").dt.date() == START + timedelta(days=2))
        )
        .head(1)
        .with_columns(pl.lit("bucket-of-days-2-and-3").alias("ResourceId"))
    )
    assert tagged.height == 1
    refund = tagged.with_columns(
        pl.col("ChargePeriodStart") + timedelta(days=1),
        pl.col("ChargePeriodEnd") + timedelta(days=1),
        pl.lit(None, pl.String).alias("Tags"),
        (pl.lit(0, tagged.schema["BilledCost"]) - pl.col("BilledCost")).alias("BilledCost"),
        (pl.lit(0, tagged.schema["EffectiveCost"]) - pl.col("EffectiveCost")).alias(
            "EffectiveCost"
        ),
    )
    changed = pl.concat(
        [billing.filter(~pl.struct(billing.columns).is_in(host_charge.to_struct().implode())),
         longer, tagged, refund]
    )  # fmt: skip
    policy = AllocationPolicy()
    runs, by_days = fleet.by_days(changed, policy)
    assert runs == [Window(START, _day(2).date()), Window(_day(2).date(), _day(4).date())]
    whole = fleet.whole(changed, policy)
    assert_frame_equal(by_days.allocation, whole.allocation)
    assert_frame_equal(by_days.reconciliation, whole.reconciliation)
    assert "direct-resource" in by_days.allocation["AllocatedMethodId"].to_list()


def test_runs_merge_the_days_each_day_reaches() -> None:
    days = [START + timedelta(days=number) for number in range(5)]
    reach = {day: day for day in days}
    reach[days[1]] = days[2]
    reach[days[3]] = days[4]
    assert _runs(days, reach) == [
        (days[0], days[1]),
        (days[1], days[3]),
        (days[3], days[4] + timedelta(days=1)),
    ]
    assert _runs([], {}) == []
