"""Project resolution: ordered rules give each charge a project; the first match wins.

A rule matches a billing row when *any* of its criteria does: a tag (``Tags`` JSON) whose
value's text matches the rule's glob (:func:`tag_text`), an account (``SubAccountId``,
``SubAccountName`` or ``BillingAccountId``), or a host (``ResourceId`` or ``ResourceName``).
A row a provider split to a workload (FOCUS 1.3 ``AllocatedTags``, ``AllocatedResourceId``,
``AllocatedResourceName``) is matched on those first, by every rule, before its own columns.
Rows no rule matches get the project ``unallocated``, visibly, never dropped. The rule that
matched is kept in ``x_MatchedRule`` so every attribution can be explained. Namespaces, pods
and the owner tag match GPU workloads (:func:`gpucost.allocator.matching.workload_match_code`).

:class:`ProjectRule` is the one schema of a ``[[projects]]`` rule: ``gpucost.config`` validates
the TOML with it and the allocator reads the validated rules as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

UNALLOCATED = "unallocated"


class ProjectMatch(BaseModel):
    """What makes a charge, host or workload belong to a project. Values are shell globs
    (``*``, ``?`` and ``[...]``), matched case-sensitively."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: dict[str, str] = Field(default_factory=dict, description="Tag/label key -> glob.")
    namespaces: tuple[str, ...] = Field(default=(), description="Kubernetes namespaces.")
    accounts: tuple[str, ...] = Field(default=(), description="Sub-account / project ids.")
    hosts: tuple[str, ...] = Field(default=(), description="Host names or resource ids.")
    pods: tuple[str, ...] = Field(
        default=(), description="Kubernetes pod names of GPU workloads (gpu_usage `pod`)."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> ProjectMatch:
        # Every criterion counts: a pods-only rule attributes the GPU workloads it names.
        if not (self.tags or self.namespaces or self.accounts or self.hosts or self.pods):
            raise ValueError(
                "a project's `match` needs at least one of tags, namespaces, accounts, hosts, pods"
            )
        return self


class ProjectRule(BaseModel):
    """One ``[[projects]]`` rule; the config validates it and the allocator reads it as is.

    ```toml
    [[projects]]
    name = "llm-serving"
    cost_center = "CC-104"
    match = { tags = { project = "llm-serving" }, namespaces = ["llm-*"], pods = ["vllm-*"] }
    ```
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    cost_center: str | None = None
    match: ProjectMatch


def glob_to_regex(pattern: str) -> str:
    """An anchored regular expression (Rust regex syntax) for a shell glob."""
    out = ["^"]
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(r"\[")
            else:
                body = pattern[index + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = end
        elif char in r"\.+()|{}^$#&-~":
            out.append("\\" + char)
        else:
            out.append(char)
        index += 1
    out.append("$")
    return "".join(out)


def _any_matches(column: str, patterns: Sequence[str]) -> pl.Expr:
    return pl.any_horizontal(
        [
            pl.col(column).str.contains(glob_to_regex(pattern)).fill_null(False)
            for pattern in patterns
        ]
    )


def tag_text(tags: str | None, key: str) -> str | None:
    """The text a rule's glob is matched against: a tag's value in a canonical-JSON tag set.

    A string is itself; a number is its text as written (``500``, ``1.10``); ``true`` and
    ``false`` are those words (FOCUS Key-Value Format allows all three). A missing key, a null
    value or unreadable tags give None, which no glob matches.
    """
    if tags is None:
        return None
    try:
        document = json.loads(tags, parse_int=str, parse_float=str, parse_constant=str)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    value = document.get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def tag_value(tags_column: str | pl.Expr, key: str) -> pl.Expr:
    """The text of one key of a canonical-JSON tags column (null when absent): see
    :func:`tag_text`. Each distinct tag set is read once."""
    column = pl.col(tags_column) if isinstance(tags_column, str) else tags_column

    def texts(values: pl.Series) -> pl.Series:
        distinct = values.unique().drop_nulls().to_list()
        lookup = {text: tag_text(text, key) for text in distinct}
        return values.replace_strict(lookup, default=None, return_dtype=pl.String)

    return column.map_batches(texts, return_dtype=pl.String)


def billing_rule_predicate(rule: ProjectRule, *, allocated: bool = False) -> pl.Expr:
    """Whether a billing row matches ``rule``: on the charge's own ``Tags``, accounts and
    resource, or (``allocated``) on a provider's split of it to a workload (FOCUS 1.3
    ``AllocatedTags``, ``AllocatedResourceId``, ``AllocatedResourceName``)."""
    tags = "AllocatedTags" if allocated else "Tags"
    resources = (
        ("AllocatedResourceId", "AllocatedResourceName")
        if allocated
        else ("ResourceId", "ResourceName")
    )
    conditions: list[pl.Expr] = []
    for key, pattern in sorted(rule.match.tags.items()):
        conditions.append(
            tag_value(tags, key).str.contains(glob_to_regex(pattern)).fill_null(False)
        )
    if rule.match.accounts and not allocated:
        conditions += [
            _any_matches(column, rule.match.accounts)
            for column in ("SubAccountId", "SubAccountName", "BillingAccountId")
        ]
    if rule.match.hosts:
        conditions += [_any_matches(column, rule.match.hosts) for column in resources]
    if not conditions:
        return pl.lit(False)
    return pl.any_horizontal(conditions)


ALLOCATED_COLUMNS = ("AllocatedResourceId", "AllocatedResourceName", "AllocatedTags")


def resolve_billing_projects(billing: pl.LazyFrame, rules: Sequence[ProjectRule]) -> pl.LazyFrame:
    """Add ``project``, ``cost_center`` and ``x_MatchedRule`` to billing rows (first match wins).

    Every rule is tried on a row's provider split (``allocated``) before any rule is tried on
    the row's own columns; ``x_MatchedRule`` says which (``projects[0].allocated``).
    """
    schema = billing.collect_schema()
    billing = billing.with_columns(
        pl.lit(None, pl.String).alias(name) for name in ALLOCATED_COLUMNS if name not in schema
    )
    project: pl.Expr = pl.lit(UNALLOCATED)
    cost_center: pl.Expr = pl.lit(None, dtype=pl.String)
    matched: pl.Expr = pl.lit(None, dtype=pl.String)
    # Built from the last rule to the first, so the first matching rule ends up outermost; the
    # allocated pass is built last, so it is tried first.
    for allocated in (False, True):
        for position in range(len(rules) - 1, -1, -1):
            rule = rules[position]
            predicate = billing_rule_predicate(rule, allocated=allocated)
            label = f"projects[{position}]" + (".allocated" if allocated else "")
            project = pl.when(predicate).then(pl.lit(rule.name)).otherwise(project)
            cost_center = (
                pl.when(predicate).then(pl.lit(rule.cost_center, pl.String)).otherwise(cost_center)
            )
            matched = pl.when(predicate).then(pl.lit(label)).otherwise(matched)
    return billing.with_columns(
        project.alias("project"), cost_center.alias("cost_center"), matched.alias("x_MatchedRule")
    )


def cost_by_project(billing: pl.LazyFrame, rules: Sequence[ProjectRule]) -> pl.DataFrame:
    """Billed and effective cost per project and currency, with row counts, sorted.

    Sums are Decimal, so the per-project totals add up exactly to the billed total.
    """
    resolved = resolve_billing_projects(billing, rules)
    return (
        resolved.group_by("project", "cost_center", "BillingCurrency")
        .agg(
            pl.col("BilledCost").sum().alias("billed_cost"),
            pl.col("EffectiveCost").fill_null(0).sum().alias("effective_cost"),
            pl.len().alias("charges"),
        )
        .rename({"BillingCurrency": "currency"})
        .sort("currency", "billed_cost", "project", descending=[False, True, False])
        .collect()
    )
