"""Project resolution: ordered rules give each charge a project; the first match wins.

A rule matches a billing row when *any* of its criteria does: a tag (``Tags`` JSON) whose
value matches the rule's glob, an account (``SubAccountId``, ``SubAccountName`` or
``BillingAccountId``), or a host (``ResourceId`` or ``ResourceName``). Rows no rule matches get
the project ``unallocated``, visibly, never dropped. The rule that matched is kept in
``x_MatchedRule`` so every attribution can be explained. Namespaces, pods and the owner tag
match GPU workloads (:func:`gpucost.allocator.matching.workload_match_code`).

:class:`ProjectRule` is the one schema of a ``[[projects]]`` rule: ``gpucost.config`` validates
the TOML with it and the allocator reads the validated rules as they are.
"""

from __future__ import annotations

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


def tag_value(tags_column: str, key: str) -> pl.Expr:
    """The value of one key of a canonical-JSON tags column (null when absent)."""
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return pl.col(tags_column).str.json_path_match(f"$['{escaped}']")


def billing_rule_predicate(rule: ProjectRule) -> pl.Expr:
    """Whether a billing row matches ``rule``."""
    conditions: list[pl.Expr] = []
    for key, pattern in sorted(rule.match.tags.items()):
        conditions.append(
            tag_value("Tags", key).str.contains(glob_to_regex(pattern)).fill_null(False)
        )
    if rule.match.accounts:
        conditions += [
            _any_matches(column, rule.match.accounts)
            for column in ("SubAccountId", "SubAccountName", "BillingAccountId")
        ]
    if rule.match.hosts:
        conditions += [
            _any_matches(column, rule.match.hosts) for column in ("ResourceId", "ResourceName")
        ]
    if not conditions:
        return pl.lit(False)
    return pl.any_horizontal(conditions)


def resolve_billing_projects(billing: pl.LazyFrame, rules: Sequence[ProjectRule]) -> pl.LazyFrame:
    """Add ``project``, ``cost_center`` and ``x_MatchedRule`` to billing rows (first match wins)."""
    project: pl.Expr = pl.lit(UNALLOCATED)
    cost_center: pl.Expr = pl.lit(None, dtype=pl.String)
    matched: pl.Expr = pl.lit(None, dtype=pl.String)
    # Built from the last rule to the first, so the first matching rule ends up outermost.
    for position in range(len(rules) - 1, -1, -1):
        rule = rules[position]
        predicate = billing_rule_predicate(rule)
        project = pl.when(predicate).then(pl.lit(rule.name)).otherwise(project)
        cost_center = (
            pl.when(predicate).then(pl.lit(rule.cost_center, pl.String)).otherwise(cost_center)
        )
        matched = pl.when(predicate).then(pl.lit(f"projects[{position}]")).otherwise(matched)
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
