"""Shared plumbing of the ``aws-*`` collectors: sessions, clients, retries and error context.

Credentials come only from boto3's default chain (environment, shared config and profiles,
container and instance roles, IRSA) through :meth:`CollectorContext.boto3_session`, plus an
optional STS ``AssumeRole`` per account. There is no other credential code here.

Retries are botocore's own ``standard`` mode, not a loop of ours. It is sufficient because it
already does what the collectors need (botocore ``retries/standard.py``; AWS SDK reference guide,
"Retry behavior"):

* it retries exactly the transient failures: throttling codes (``Throttling``,
  ``ThrottlingException``, ``LimitExceededException`` — Cost Explorer's "too many requests" —,
  ``RequestLimitExceeded`` — EC2's —, ``TooManyRequestsException``, ``SlowDown``, ...), HTTP 429,
  HTTP 500/502/503/504, ``RequestTimeout`` and connection errors; never a validation or access
  error;
* with capped exponential backoff and full jitter: ``rand(0, 1) * min(base * 2**attempt, 20 s)``,
  base 1 s after a throttle and 50 ms otherwise;
* bounded by ``max_attempts`` (first try included) and by a client-wide retry token bucket, so a
  struggling endpoint is not hammered.

``adaptive`` mode adds client-side rate limiting on top; a nightly run makes too few calls for
it to matter, so ``standard`` is the default. After the last attempt botocore raises, and
:func:`aws_call` turns that into a :class:`~gpucost.core.errors.CollectorError` naming the
source, the operation, AWS's error code and the number of retries: the source fails visibly in the
run manifest while the others go on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpucost.collector.base import CollectorContext, SourceSettings
from gpucost.core.errors import CollectorError

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 8
"""Attempts per request, the first included (botocore's standard mode default is 3). A nightly
batch can afford to wait out a throttling burst: after throttles, 8 attempts back off for at
most 1 + 2 + 4 + 8 + 16 + 20 + 20 = 71 s in all, about half that on average (full jitter)."""

ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$"


class AwsAccount(BaseModel):
    """One AWS account to read: the default credentials, or a role assumed through STS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role_arn: str | None = Field(
        default=None,
        pattern=ROLE_ARN_PATTERN,
        description="Role to assume with sts:AssumeRole; the default credentials when unset.",
    )
    external_id: str | None = Field(
        default=None, description="ExternalId the role's trust policy requires, if any."
    )


class AwsSourceSettings(SourceSettings):
    """Keys every ``aws-*`` source has besides its own."""

    role_arn: str | None = Field(
        default=None,
        pattern=ROLE_ARN_PATTERN,
        description="Assume this role (sts:AssumeRole) before calling AWS; default chain if unset.",
    )
    external_id: str | None = Field(default=None, description="ExternalId for role_arn.")
    endpoint_url: str | None = Field(
        default=None,
        description="AWS endpoint override (moto, LocalStack); else [store] s3_endpoint_url.",
    )
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=20,
        description="Attempts per AWS request, first included (botocore standard retry mode).",
    )

    @property
    def account(self) -> AwsAccount:
        """The account this source reads (its role, if any)."""
        return AwsAccount(role_arn=self.role_arn, external_id=self.external_id)


def retry_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Any:
    """A botocore ``Config`` with standard-mode retries bounded by ``max_attempts``."""
    from botocore.config import Config

    # botocore's ``max_attempts`` key counts retries only; ``total_max_attempts`` counts the
    # first try too (botocore Config reference), which is what max_attempts means here.
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=120,
        user_agent_extra="gpucost",
    )


def endpoint_for(explicit: str | None, context: CollectorContext) -> str | None:
    """The endpoint override: the source's own setting, else the store's (tests: moto)."""
    return explicit or context.storage_options.get("aws_endpoint_url") or None


@dataclass
class RequestCounter:
    """Requests answered and retries botocore made, per operation, for the run manifest."""

    requests: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    def record(self, operation: str, response: Mapping[str, Any]) -> None:
        """Count one answered request and the retries it took."""
        self.requests[operation] = self.requests.get(operation, 0) + 1
        retried = int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
        if retried:
            self.retries[operation] = self.retries.get(operation, 0) + retried

    def total(self, operation: str | None = None) -> int:
        """Answered requests, for one operation or all."""
        if operation is not None:
            return self.requests.get(operation, 0)
        return sum(self.requests.values())

    def as_notes(self) -> dict[str, Any]:
        """JSON-ready counts."""
        notes: dict[str, Any] = {"aws_requests": dict(sorted(self.requests.items()))}
        if self.retries:
            notes["aws_retries"] = dict(sorted(self.retries.items()))
        return notes


@dataclass
class AwsClients:
    """Builds the boto3 clients of one source run: sessions per account, cached, same config.

    ``session_factory`` is :meth:`CollectorContext.boto3_session` (boto3's default chain, or the
    tests' factory). A role is assumed once per run; its temporary credentials (one hour by
    default, STS ``DurationSeconds``) outlive any collection.
    """

    source: str
    session_factory: Callable[[], Any]
    endpoint_url: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    counter: RequestCounter = field(default_factory=RequestCounter)
    _sessions: dict[AwsAccount, Any] = field(default_factory=dict)

    @classmethod
    def for_source(cls, settings: AwsSourceSettings, context: CollectorContext) -> AwsClients:
        """Clients for a configured ``aws-*`` source."""
        return cls(
            source=settings.name,
            session_factory=context.boto3_session,
            endpoint_url=endpoint_for(settings.endpoint_url, context),
            max_attempts=settings.max_attempts,
        )

    def session(self, account: AwsAccount | None = None) -> Any:
        """The boto3 Session for ``account`` (the default chain's when it names no role)."""
        account = account or AwsAccount()
        if account not in self._sessions:
            base = self._sessions.get(AwsAccount())
            if base is None:
                base = self._sessions[AwsAccount()] = self.session_factory()
            if account.role_arn is None:
                return base
            self._sessions[account] = self._assume(base, account)
        return self._sessions[account]

    def client(
        self, service: str, region: str | None = None, account: AwsAccount | None = None
    ) -> Any:
        """A boto3 client with the source's endpoint override and retry bound."""
        session = self.session(account)
        return session.client(
            service,
            region_name=region or session.region_name or "us-east-1",
            endpoint_url=self.endpoint_url,
            config=retry_config(self.max_attempts),
        )

    def call(self, client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``client.<operation>(**kwargs)``, counting it; AWS errors become CollectorError."""
        method = getattr(client, operation)
        response: dict[str, Any] = aws_call(self.source, operation, method, **kwargs)
        self.counter.record(operation, response)
        return response

    def pages(self, client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every page of a paginated operation (botocore's paginator), counted."""
        paginator = client.get_paginator(operation)
        iterator = iter(paginator.paginate(**kwargs))
        while True:
            page = aws_call(self.source, operation, next, iterator, None)
            if page is None:
                return
            self.counter.record(operation, page)
            yield page

    def _assume(self, base: Any, account: AwsAccount) -> Any:
        import boto3

        sts = base.client(
            "sts",
            region_name=base.region_name or "us-east-1",
            endpoint_url=self.endpoint_url,
            config=retry_config(self.max_attempts),
        )
        arguments: dict[str, Any] = {
            "RoleArn": account.role_arn,
            "RoleSessionName": f"gpucost-{self.source}"[:64],
        }
        if account.external_id:
            arguments["ExternalId"] = account.external_id
        credentials = self.call(sts, "assume_role", **arguments)["Credentials"]
        logger.info("source %s: assumed role %s", self.source, account.role_arn)
        return boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=base.region_name,
        )


def aws_call(
    source: str, operation: str, function: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Run one AWS request (botocore retries inside it); failures name source and operation."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return function(*args, **kwargs)
    except ClientError as error:
        raise CollectorError(source, describe_client_error(operation, error)) from error
    except BotoCoreError as error:
        raise CollectorError(source, f"{operation} failed: {error}") from error


def describe_client_error(operation: str, error: Any) -> str:
    """``GetCostAndUsage failed: LimitExceededException: Rate exceeded (after 7 retries)``."""
    response = getattr(error, "response", {}) or {}
    details = response.get("Error", {})
    code = details.get("Code", "unknown error")
    message = details.get("Message", "")
    retries = response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    after = f" (after {retries} retries)" if retries else ""
    return f"{operation} failed: {code}: {message}{after}".rstrip()


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (or of the error a CollectorError wraps)."""
    cause = error.__cause__ if isinstance(error, CollectorError) else error
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


_S3_URL = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (``bucket``, ``some/key``)."""
    match = _S3_URL.match(url)
    if match is None:
        raise ValueError(f"{url!r} is not an s3:// URL")
    return match["bucket"], match["key"]


# --- CUR semantics shared by aws-cur (files) and aws-athena (SQL) ---------------------------

LINE_ITEM_CHARGE_CATEGORY: Mapping[str, str] = {
    "Usage": "Usage",
    "DiscountedUsage": "Usage",
    "SavingsPlanCoveredUsage": "Usage",
    "SavingsPlanNegation": "Usage",
    "BundledDiscount": "Usage",
    "Discount": "Usage",
    "DistributorDiscount": "Usage",
    "EdpDiscount": "Usage",
    "PrivateRateDiscount": "Usage",
    "Tax": "Tax",
    "Fee": "Purchase",
    "RIFee": "Purchase",
    "SavingsPlanRecurringFee": "Purchase",
    "SavingsPlanUpfrontFee": "Purchase",
    "Credit": "Credit",
    "Refund": "Adjustment",
}
"""CUR ``lineItem/LineItemType`` -> FOCUS 1.0 ChargeCategory, after the FinOps Foundation's
focus_converters ``aws-cur`` rules (MIT), with FOCUS 1.0's ``Credit`` for credits. A type that is
not listed is rejected rather than guessed: the allocator decides by ChargeCategory."""

LINE_ITEM_CHARGE_FREQUENCY: Mapping[str, str] = {
    "Fee": "One-Time",
    "SavingsPlanUpfrontFee": "One-Time",
    "RIFee": "Recurring",
    "SavingsPlanRecurringFee": "Recurring",
}
"""FOCUS ChargeFrequency of the fee line items; every usage-like line item is ``Usage-Based``."""

EFFECTIVE_COST_RULES: Mapping[str, tuple[tuple[int, str], ...]] = {
    "SavingsPlanCoveredUsage": ((1, "savings_plan_savings_plan_effective_cost"),),
    "SavingsPlanRecurringFee": (
        (1, "savings_plan_total_commitment_to_date"),
        (-1, "savings_plan_used_commitment"),
    ),
    "SavingsPlanNegation": (),
    "SavingsPlanUpfrontFee": (),
    "DiscountedUsage": ((1, "reservation_effective_cost"),),
    "RIFee": (
        (1, "reservation_unused_amortized_upfront_fee_for_billing_period"),
        (1, "reservation_unused_recurring_fee"),
    ),
}
"""Amortized (FOCUS Effective) cost per CUR line item type, as signed sums of CUR columns
(snake_case names); an empty sum is zero and unlisted types cost their unblended cost. A
``Fee`` that carries a reservation ARN is an RI's upfront fee, already amortized over the
``DiscountedUsage`` rows, so it costs zero too. Source: AWS CUR user guide, "Understanding your
reservations / Savings Plans" (amortized cost columns), as encoded by focus_converters (MIT)."""

RESERVATION_ARN_COLUMN = "reservation_reservation_arn"
"""Spelled ``reservation/ReservationARN`` in legacy CUR, ``reservation_reservation_a_r_n`` in
Athena and CUR 2.0; :func:`cur_column_name` maps every spelling here."""

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def cur_column_name(name: str) -> str:
    """One spelling for every CUR column: legacy ``lineItem/UnblendedCost`` and CUR 2.0 or
    Athena ``line_item_unblended_cost`` both become ``line_item_unblended_cost``.

    This is how AWS itself renames legacy columns for Athena (category and name in snake case,
    joined by ``_``), except that Athena's ``_a_r_n`` (from ``ARN``) is written ``_arn``.
    """
    stripped = name.strip()
    if "/" in stripped:
        category, _, column = stripped.partition("/")
        stripped = f"{_CAMEL_BOUNDARY.sub('_', category)}_{_CAMEL_BOUNDARY.sub('_', column)}"
    snake = stripped.lower().replace(" ", "_")
    return re.sub(r"_a_r_n(?=_|$)", "_arn", snake)


def cur_tag_key(key: str) -> str:
    """A CUR tag key as users wrote it: ``user:project``/``user_project`` -> ``project``.

    AWS prefixes user-defined cost allocation tags with ``user:`` (legacy CUR headers
    ``resourceTags/user:project``) or ``user_`` (CUR 2.0 ``resource_tags`` map keys); AWS-generated
    tags keep their ``aws:`` prefix.
    """
    for prefix in ("user:", "user_"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key
