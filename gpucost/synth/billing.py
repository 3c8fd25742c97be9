"""The bill of the window: hourly rows per cloud host, daily storage, network, support, credit.

Prices come from :mod:`gpucost.synth.catalog`. A Compute Savings Plan covers some hosts; its
hourly fee is a ``Purchase`` row (BilledCost = commitment, EffectiveCost = 0) and the covered
usage rows carry BilledCost 0 and EffectiveCost = the plan's rate, as AWS's FOCUS export writes
them, so the file's BilledCost and EffectiveCost totals are equal. AWS Business Support is a
daily share of the day's AWS charges. A one-time promotional ``Credit`` has a negative
BilledCost. The bill is held as segments (:class:`~gpucost.synth.write_focus.Segment`), not
yet expanded to rows; only the ``"billing"`` random stream is drawn from here.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Final

from gpucost.synth.catalog import (
    AWS,
    CHARGES,
    CREDIT_PER_8_GPUS_USD,
    GCP,
    ONPREM,
    SAVINGS_PLAN_DISCOUNT,
    SUPPORT_RATE,
    Charge,
)
from gpucost.synth.fleet import GCP_PROJECT_ID, Fleet, Host, Project
from gpucost.synth.write_focus import (
    FOCUS_HEADER,
    PERIOD_COLUMNS,
    Segment,
    focus_texts,
    month_start,
    next_month,
)

SAVINGS_PLAN_NAME: Final = "ml-compute-savings-plan"
_STORAGE_PLACES: Final = Decimal("1e-11")
"""A day of storage is rounded to the 11 places FOCUS files print."""

_AWS_ACCOUNT: Final = {
    "BillingAccountId": "123456789012",
    "BillingAccountName": "Acme ML",
    "BillingCurrency": "USD",
    "InvoiceIssuerName": "Amazon Web Services, Inc.",
    "ProviderName": AWS,
    "PublisherName": "Amazon Web Services, Inc.",
}
_GCP_ACCOUNT: Final = {
    "BillingAccountId": "01A2B3-C4D5E6-F7A8B9",
    "BillingAccountName": "Acme ML",
    "BillingCurrency": "USD",
    "InvoiceIssuerName": "Google Cloud",
    "ProviderName": GCP,
    "PublisherName": "Google Cloud",
}
_AWS_SUB_ACCOUNTS: Final = {
    "prod": ("345678901234", "ml-prod"),
    "research": ("456789012345", "ml-research"),
}
_BILLING_REGION: Final = {
    AWS: ("us-east-1", "US East (N. Virginia)"),
    GCP: ("us-central1", "Iowa"),
}
"""RegionId and RegionName of a provider's usage rows."""
_SUPPORT_PERCENT: Final = (SUPPORT_RATE * 100).normalize()


@dataclass
class Billing:
    """The whole bill as segments, with the totals ``truth.json`` reports."""

    segments: list[Segment]
    period_sets: dict[str, list[tuple[int, int]]]
    host_hourly_effective: dict[str, Decimal]
    """resource id -> EffectiveCost of one hour of the host's instance."""
    billed_total: Decimal = Decimal(0)
    effective_total: Decimal = Decimal(0)
    by_category: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Lines of the FOCUS file: each segment once per period of its set."""
        return sum(len(self.period_sets[s.period_set]) for s in self.segments)


def build_billing(
    fleet: Fleet, window_start: datetime, hours: int, gpus: int, rnd: random.Random
) -> Billing:
    """The whole bill of the window, as segments (not yet expanded to rows)."""
    builder = _BillingBuilder(window_start, hours, rnd)
    # The order of these steps is the order of the draws from rnd: do not reorder.
    hourly_effective = builder.instances(fleet.hosts)
    builder.storage(fleet.hosts, fleet.projects)
    builder.network(fleet.hosts, fleet.projects)
    builder.support()
    builder.credit(CREDIT_PER_8_GPUS_USD * ((gpus + 7) // 8))
    return builder.result(hourly_effective)


def _sku(*parts: str, gcp: bool = False) -> str:
    """A stable SKU id from the charge's names, in the provider's shape."""
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest().upper()
    if gcp:
        return f"{digest[:4]}-{digest[4:8]}-{digest[8:12]}"
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    number = int(digest, 16)
    return "".join(alphabet[(number >> (5 * i)) & 31] for i in range(16))


def _stable(text: str, modulo: int) -> int:
    """A number from a name, independent of the random streams (sizes that never move)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % modulo


def _tags_text(tags: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(tags), sort_keys=True) if tags else None


def _row(provider: str, sub_account: str, columns: Mapping[str, object]) -> dict[str, object]:
    """A FOCUS row: the provider's account columns, then ``columns``; every other one NULL."""
    row: dict[str, object] = dict.fromkeys(FOCUS_HEADER)
    for name in PERIOD_COLUMNS:
        del row[name]
    if provider == AWS:
        row.update(_AWS_ACCOUNT)
        row["SubAccountId"], row["SubAccountName"] = _AWS_SUB_ACCOUNTS[sub_account]
    else:
        row.update(_GCP_ACCOUNT)
        row["SubAccountId"] = row["SubAccountName"] = GCP_PROJECT_ID
    row.update(columns)
    return row


def _usage_row(
    charge: Charge,
    *,
    quantity: Decimal,
    cost: Decimal | None = None,
    resource_id: str | None = None,
    resource_name: str | None = None,
    zone: str | None = None,
    tags: Mapping[str, str] | None = None,
    sub_account: str = "prod",
) -> dict[str, object]:
    """A standard-priced usage charge; ``cost`` defaults to quantity x unit price."""
    cost = quantity * charge.unit_price if cost is None else cost
    aws = charge.provider == AWS
    sku = _sku(charge.service, charge.description, gcp=not aws)
    return _row(
        charge.provider,
        sub_account,
        {
            "AvailabilityZone": zone,
            "BilledCost": cost,
            "ChargeCategory": "Usage",
            "ChargeDescription": charge.description,
            "ChargeFrequency": "Usage-Based",
            "ConsumedQuantity": quantity,
            "ConsumedUnit": charge.unit,
            "ContractedCost": cost,
            "ContractedUnitPrice": charge.unit_price,
            "EffectiveCost": cost,
            "ListCost": cost,
            "ListUnitPrice": str(charge.unit_price),
            "PricingCategory": "Standard",
            "PricingQuantity": quantity,
            "PricingUnit": charge.unit,
            "RegionId": _BILLING_REGION[charge.provider][0],
            "RegionName": _BILLING_REGION[charge.provider][1],
            "ResourceId": resource_id,
            "ResourceName": resource_name,
            "ResourceType": charge.resource_type,
            "ServiceCategory": charge.service_category,
            "ServiceName": charge.service,
            "SkuId": sku,
            # AWS price ids are "<sku>.<offer term>.<rate code>": JRTCKXETXF is OnDemand.
            "SkuPriceId": f"{sku}.JRTCKXETXF.6YS6EN2CT7" if aws else None,
            "Tags": _tags_text(tags),
        },
    )


def _instance_charge(host: Host) -> Charge:
    """An hour of the host's machine at its on-demand price, worded as each provider does."""
    itype = host.itype
    assert itype.hourly_price is not None
    price = itype.hourly_price
    aws = itype.provider == AWS
    return Charge(
        provider=itype.provider,
        service="Amazon Elastic Compute Cloud" if aws else "Compute Engine",
        service_category="Compute",
        description=(
            f"${price} per On Demand Linux {itype.name} Instance Hour"
            if aws
            else f"{itype.name} instance running in {itype.region_name} (on-demand)"
        ),
        unit="Hours",
        unit_price=price,
        resource_type="instance",
    )


def _instance_row(host: Host, sp_arn: str) -> tuple[dict[str, object], Decimal]:
    """The hourly usage row of a cloud host and its hourly EffectiveCost."""
    charge = _instance_charge(host)
    row = _usage_row(
        charge,
        quantity=Decimal(1),
        resource_id=host.resource_id,
        resource_name=None if charge.provider == AWS else host.host,
        zone=host.itype.zone,
        tags=host.tags,
        sub_account="research" if host.role in ("training", "data-processing") else "prod",
    )
    if not host.savings_plan:
        return row, charge.unit_price
    # AWS's FOCUS export: covered usage is billed through the plan's fee (BilledCost 0) and
    # carries the plan's rate as EffectiveCost.
    rate = charge.unit_price * (1 - SAVINGS_PLAN_DISCOUNT)
    row.update(
        {
            "BilledCost": Decimal(0),
            "ChargeDescription": (
                f"Savings Plans covered usage: ${rate} per Linux {host.itype.name} Instance Hour"
            ),
            "CommitmentDiscountCategory": "Spend",
            "CommitmentDiscountId": sp_arn,
            "CommitmentDiscountName": SAVINGS_PLAN_NAME,
            "CommitmentDiscountStatus": "Used",
            "CommitmentDiscountType": "Savings Plan",
            "ContractedCost": rate,
            "ContractedUnitPrice": rate,
            "EffectiveCost": rate,
            "PricingCategory": "Committed",
        }
    )
    return row, rate


def _savings_plan_fee_row(commitment: Decimal, sp_arn: str) -> dict[str, object]:
    """The plan's hourly fee: BilledCost and no EffectiveCost (amortised onto covered rows)."""
    return _row(
        AWS,
        "prod",
        {
            "BilledCost": commitment,
            "ChargeCategory": "Purchase",
            "ChargeDescription": "Compute Savings Plans hourly commitment fee",
            "ChargeFrequency": "Recurring",
            "CommitmentDiscountCategory": "Spend",
            "CommitmentDiscountId": sp_arn,
            "CommitmentDiscountName": SAVINGS_PLAN_NAME,
            "CommitmentDiscountType": "Savings Plan",
            "EffectiveCost": Decimal(0),
            "ListCost": commitment,
            "PricingCategory": "Committed",
            "PricingQuantity": Decimal(1),
            "PricingUnit": "Hours",
            "ResourceId": sp_arn,
            "ServiceCategory": "Compute",
            "ServiceName": "Savings Plans for AWS Compute usage",
        },
    )


def _support_row(fee: Decimal) -> dict[str, object]:
    return _row(
        AWS,
        "prod",
        {
            "BilledCost": fee,
            "ChargeCategory": "Purchase",
            "ChargeDescription": f"AWS Support (Business) - {_SUPPORT_PERCENT}% of AWS charges, "
            "daily share",
            "ChargeFrequency": "Recurring",
            "ContractedCost": fee,
            "EffectiveCost": fee,
            "ListCost": fee,
            "PricingCategory": "Standard",
            "ServiceCategory": "Other",
            "ServiceName": "AWS Support (Business)",
        },
    )


def _credit_row(amount: Decimal) -> dict[str, object]:
    return _row(
        AWS,
        "prod",
        {
            "BilledCost": -amount,
            "ChargeCategory": "Credit",
            "ChargeDescription": "AWS Promotional Credits for machine learning workloads",
            "ChargeFrequency": "One-Time",
            "ContractedCost": -amount,
            "ContractedUnitPrice": -amount,
            "EffectiveCost": -amount,
            "ListCost": -amount,
            "PricingCategory": "Other",
            "PricingQuantity": Decimal(0),
            "PricingUnit": "Hours",
            "RegionId": _BILLING_REGION[AWS][0],
            "RegionName": _BILLING_REGION[AWS][1],
            "ServiceCategory": "Compute",
            "ServiceName": "Amazon Elastic Compute Cloud",
            "SkuId": _sku("credit"),
        },
    )


class _BillingBuilder:
    """Collects the bill as segments; each names the set of periods it repeats over."""

    def __init__(self, window_start: datetime, hours: int, rnd: random.Random) -> None:
        self.window_start = window_start
        self.days = hours // 24
        self.rnd = rnd
        self.segments: list[Segment] = []
        self.period_sets: dict[str, list[tuple[int, int]]] = {
            "hourly": [(h, h + 1) for h in range(hours)],
            "first-hour": [(0, 1)],
        }
        self.month_days: dict[str, list[int]] = defaultdict(list)
        for day in range(self.days):
            month = (window_start + timedelta(days=day)).strftime("%Y-%m")
            self.month_days[month].append(day)
            self.period_sets[f"day:{day}"] = [(day * 24, day * 24 + 24)]
        for month, days in self.month_days.items():
            self.period_sets[f"daily:{month}"] = [(d * 24, d * 24 + 24) for d in days]

    def add(self, period_set: str, key: str, row: Mapping[str, object]) -> None:
        """One segment: ``row`` repeated over ``period_set``; ``key`` orders it in the file."""
        billed, effective = row["BilledCost"], row["EffectiveCost"]
        assert isinstance(billed, Decimal) and isinstance(effective, Decimal)
        provider = str(row["ProviderName"])
        resource_id = row["ResourceId"]
        self.segments.append(
            Segment(
                period_set=period_set,
                # Provider, resource, charge, then creation order: a total order for sorting.
                sort_key=f"{(AWS, GCP).index(provider)}|{key}|{len(self.segments):07d}",
                provider=provider,
                category=str(row["ChargeCategory"]),
                texts=focus_texts(row),
                billed=billed,
                effective=effective,
                resource_id=resource_id if isinstance(resource_id, str) else None,
            )
        )

    def days_in_month(self, month: str) -> int:
        """Days of a month of the window (``YYYY-MM``)."""
        first = self.window_start + timedelta(days=self.month_days[month][0])
        return (next_month(first) - month_start(first.date())).days

    def instances(self, hosts: Sequence[Host]) -> dict[str, Decimal]:
        """Hourly rows of every cloud host and the Savings Plan's hourly fee."""
        plan = f"{self.rnd.getrandbits(128):032x}"
        sp_arn = (
            f"arn:aws:savingsplans::{_AWS_ACCOUNT['BillingAccountId']}:savingsplan/"
            f"{plan[:8]}-{plan[8:12]}-{plan[12:16]}-{plan[16:20]}-{plan[20:]}"
        )
        hourly_effective: dict[str, Decimal] = {}
        commitment = Decimal(0)
        for host in hosts:
            if host.itype.provider == ONPREM:
                continue
            row, effective = _instance_row(host, sp_arn)
            hourly_effective[host.resource_id] = effective
            if host.savings_plan:
                commitment += effective
            self.add("hourly", f"{host.resource_id}|instance", row)
        if commitment:
            # The commitment equals the covered usage, so the plan is fully used.
            self.add("hourly", "savings-plan|fee", _savings_plan_fee_row(commitment, sp_arn))
        return hourly_effective

    def storage(self, hosts: Sequence[Host], projects: Sequence[Project]) -> None:
        """EBS volumes of AWS GPU hosts, an S3 bucket per project, GCS for GCP projects."""
        gcp_owners = {h.owner.name for h in hosts if h.itype.provider == GCP}
        for month in self.month_days:
            period = f"daily:{month}"
            for host in hosts:
                if host.ebs_volume_id:
                    row = self._storage_row(
                        "ebs-gp3", host.ebs_gb, month, host.ebs_volume_id, host.tags,
                        zone=host.itype.zone,
                    )  # fmt: skip
                    self.add(period, f"{host.resource_id}|ebs", row)
            for project in projects:
                tags = {"project": project.name, "team": project.team}
                size_gb = 1000 * (1 + _stable(project.name, 20))
                bucket = f"acme-{project.name}-datasets"
                row = self._storage_row(
                    "s3-standard", size_gb, month, bucket, tags, sub_account="research"
                )
                self.add(period, f"s3|{project.name}", row)
                if project.name in gcp_owners:
                    bucket = f"projects/_/buckets/acme-{project.name}-checkpoints"
                    row = self._storage_row("gcs-standard", size_gb // 2, month, bucket, tags)
                    self.add(period, f"gcs|{project.name}", row)

    def _storage_row(
        self,
        charge_name: str,
        size_gb: int,
        month: str,
        resource_id: str,
        tags: Mapping[str, str] | None,
        *,
        zone: str | None = None,
        sub_account: str = "prod",
    ) -> dict[str, object]:
        """A day of storage = size x price per GB-month / days in the month (11 places)."""
        charge = CHARGES[charge_name]
        days = self.days_in_month(month)
        return _usage_row(
            charge,
            quantity=(Decimal(size_gb) / days).quantize(_STORAGE_PLACES, ROUND_HALF_EVEN),
            cost=(Decimal(size_gb) * charge.unit_price / days).quantize(
                _STORAGE_PLACES, ROUND_HALF_EVEN
            ),
            resource_id=resource_id,
            zone=zone,
            tags=tags,
            sub_account=sub_account,
        )

    def network(self, hosts: Sequence[Host], projects: Sequence[Project]) -> None:
        """Daily egress per project (tagged) and a shared, untagged NAT gateway."""
        gcp_owners = {h.owner.name for h in hosts if h.itype.provider == GCP}
        nat_id = (
            f"arn:aws:ec2:us-east-1:{_AWS_SUB_ACCOUNTS['prod'][0]}:natgateway/"
            f"nat-0{self.rnd.getrandbits(64):016x}"
        )
        for day in range(self.days):
            period = f"day:{day}"
            for project in projects:
                tags = {"project": project.name, "team": project.team}
                gigabytes = Decimal(self.rnd.randint(20, 400))
                row = _usage_row(CHARGES["ec2-data-transfer-out"], quantity=gigabytes, tags=tags)
                self.add(period, f"egress|{project.name}", row)
                if project.name in gcp_owners:
                    gigabytes = Decimal(self.rnd.randint(10, 200))
                    row = _usage_row(CHARGES["gcp-internet-egress"], quantity=gigabytes, tags=tags)
                    self.add(period, f"gcp-egress|{project.name}", row)
            row = _usage_row(CHARGES["nat-gateway-hours"], quantity=Decimal(24), resource_id=nat_id)
            self.add(period, "nat|hours", row)
            gigabytes = Decimal(self.rnd.randint(200, 2000))
            row = _usage_row(CHARGES["nat-gateway-data"], quantity=gigabytes, resource_id=nat_id)
            self.add(period, "nat|bytes", row)

    def support(self) -> None:
        """AWS Business Support: a share of each day's AWS charges, untagged and shared."""
        per_day = {
            name: Counter(start // 24 for start, _ in bounds)
            for name, bounds in self.period_sets.items()
        }
        aws_daily: dict[int, Decimal] = defaultdict(Decimal)
        for segment in self.segments:
            if segment.provider == AWS:
                for day, number in per_day[segment.period_set].items():
                    aws_daily[day] += segment.billed * number
        for day in range(self.days):
            fee = (aws_daily[day] * SUPPORT_RATE).quantize(Decimal("0.01"), ROUND_HALF_UP)
            self.add(f"day:{day}", "support", _support_row(fee))

    def credit(self, amount: Decimal) -> None:
        """A one-time promotional credit (negative cost) in the window's first hour."""
        self.add("first-hour", "credit", _credit_row(amount))

    def result(self, hourly_effective: dict[str, Decimal]) -> Billing:
        """The bill with its totals, overall and per ChargeCategory."""
        billing = Billing(self.segments, self.period_sets, hourly_effective)
        by_category: dict[str, dict[str, Decimal]] = defaultdict(
            lambda: {"billed": Decimal(0), "effective": Decimal(0)}
        )
        for segment in self.segments:
            number = len(self.period_sets[segment.period_set])
            billing.billed_total += segment.billed * number
            billing.effective_total += segment.effective * number
            by_category[segment.category]["billed"] += segment.billed * number
            by_category[segment.category]["effective"] += segment.effective * number
        billing.by_category = dict(sorted(by_category.items()))
        return billing
