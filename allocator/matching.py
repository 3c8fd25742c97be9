"""Fast rule matching: each rule criterion is tested once per distinct value, not per row.

A row matches rule ``i`` when *any* of the rule's criteria matches, and the first matching rule
wins. Because "any" is an OR, the first rule a row matches is the smallest rule index matched
through any single column. So every column's distinct values (a bill repeats a few hundred tag
sets over millions of rows) are tested against every rule once, each value is mapped to the
smallest *match code* it earns, and a row's code is the minimum over its columns, looked up by
hash (``replace_strict``). The result is identical to evaluating
:func:`gpucost.allocator.projects.billing_rule_predicate` row by row (a test checks it).

A match code is ``rule_index * CODE_STRIDE + via``, where ``via`` names the criterion that
matched (:data:`VIA`), so one integer carries the project, its cost centre and the rule and
criterion that chose it. Within one rule the lower ``via`` wins (tags before accounts before
hosts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import polars as pl

from gpucost.allocator.projects import UNALLOCATED, ProjectRule, glob_to_regex, tag_value

VIA: Final = (
    "tags",
    "accounts",
    "hosts",
    "resource",
    "namespaces",
    "pods",
    "labels",
    "host-tags",
    "host-names",
    "allocated-tags",
    "allocated-resource",
)
"""Criteria a match code can name: billing tags/accounts/hosts; ``resource``: an unmatched
charge (a refund, a line without tags) on a resource whose other charges a rule matched; a GPU
workload's namespace, pod or pod label; or (for GPU rows without a matching workload) the
host's inventory tags or its names; or a provider's own split of a shared resource (FOCUS 1.3
``AllocatedTags``, ``AllocatedResourceId``/``AllocatedResourceName``), matched before the
charge's own columns."""
ALLOCATED_MATCH_COLUMNS: Final = ("AllocatedResourceId", "AllocatedResourceName", "AllocatedTags")
"""FOCUS 1.3 columns naming the workload a provider-split charge belongs to."""
BILLING_MATCH_COLUMNS: Final = (
    *ALLOCATED_MATCH_COLUMNS,
    "ResourceId",
    "ResourceName",
    "SubAccountId",
    "SubAccountName",
    "BillingAccountId",
    "Tags",
)
"""The billing columns :func:`billing_match_code` reads (a missing one is read as null)."""
CODE_STRIDE: Final = 16
UNALLOCATED_CODE: Final = 1 << 31
"""Target code of ``unallocated``: no rule matched."""
IDLE_CODE: Final = UNALLOCATED_CODE + 1
"""Target code of the ``idle`` line (idle policy ``separate``)."""
PROJECT_CODE_BASE: Final = 1 << 32
"""Target codes of projects reached without a rule (shared-cost recipients): base + index."""
IDLE_PROJECT: Final = "idle"

Test = Callable[[pl.Expr], pl.Expr]


def _any_glob(patterns: Sequence[str]) -> Test:
    regexes = [glob_to_regex(pattern) for pattern in patterns]

    def test(value: pl.Expr) -> pl.Expr:
        return pl.any_horizontal([value.str.contains(regex) for regex in regexes])

    return test


def _tag_glob(key: str, pattern: str) -> Test:
    regex = glob_to_regex(pattern)

    def test(value: pl.Expr) -> pl.Expr:
        return tag_value(value, key).str.contains(regex)

    return test


def first_match_code(
    frame: pl.DataFrame, column: str, tests: Sequence[tuple[int, Test]]
) -> pl.Expr:
    """An expression giving, per row of ``frame``, the smallest code whose test ``column``
    passes (null when none does). Tests run on the column's distinct values only."""
    if not tests or column not in frame.columns:
        return pl.lit(None, pl.Int64)
    values = frame.get_column(column).unique().drop_nulls().sort()
    if values.len() == 0:
        return pl.lit(None, pl.Int64)
    value = pl.col(column)
    codes = (
        pl.DataFrame({column: values})
        .select(
            pl.min_horizontal(
                [
                    pl.when(test(value).fill_null(False)).then(pl.lit(code, pl.Int64))
                    for code, test in tests
                ]
            ).alias("code")
        )
        .get_column("code")
    )
    matched = codes.is_not_null()
    if not matched.any():
        return pl.lit(None, pl.Int64)
    return pl.col(column).replace_strict(
        values.filter(matched), codes.filter(matched), default=None, return_dtype=pl.Int64
    )


def _code(rule_index: int, via: str) -> int:
    return rule_index * CODE_STRIDE + VIA.index(via)


def resource_code(code: pl.Expr) -> pl.Expr:
    """The code of the same rule reached through the ``resource`` criterion."""
    return (code // CODE_STRIDE) * CODE_STRIDE + VIA.index("resource")


def billing_match_code(frame: pl.DataFrame, rules: Sequence[ProjectRule]) -> pl.Expr:
    """Match code of each billing row: tags (``Tags``), accounts, hosts (``ResourceId/Name``).

    A row a provider split to a workload (FOCUS 1.3 ``AllocatedTags``, ``AllocatedResourceId``
    or ``AllocatedResourceName``) is matched on those first, by every rule in order, and on its
    own columns only when no rule matches them: the split names who used that share of the
    shared resource, while its ``Tags`` describe the resource (a cluster's node pool).
    """
    allocated: dict[str, list[tuple[int, Test]]] = {}
    per_column: dict[str, list[tuple[int, Test]]] = {}
    for index, rule in enumerate(rules):
        for key, pattern in sorted(rule.match.tags.items()):
            per_column.setdefault("Tags", []).append(
                (_code(index, "tags"), _tag_glob(key, pattern))
            )
            allocated.setdefault("AllocatedTags", []).append(
                (_code(index, "allocated-tags"), _tag_glob(key, pattern))
            )
        if rule.match.accounts:
            for column in ("SubAccountId", "SubAccountName", "BillingAccountId"):
                per_column.setdefault(column, []).append(
                    (_code(index, "accounts"), _any_glob(rule.match.accounts))
                )
        if rule.match.hosts:
            for column in ("ResourceId", "ResourceName"):
                per_column.setdefault(column, []).append(
                    (_code(index, "hosts"), _any_glob(rule.match.hosts))
                )
            for column in ("AllocatedResourceId", "AllocatedResourceName"):
                allocated.setdefault(column, []).append(
                    (_code(index, "allocated-resource"), _any_glob(rule.match.hosts))
                )
    return pl.coalesce(_minimum(frame, allocated), _minimum(frame, per_column))


def is_allocated_match(code: pl.Expr) -> pl.Expr:
    """Whether a match code came through a provider's split (``allocated-*`` criteria): such a
    match names a workload's share, not the owner of the whole resource."""
    via = code % CODE_STRIDE
    return via.is_in([VIA.index("allocated-tags"), VIA.index("allocated-resource")]) & (
        code < UNALLOCATED_CODE
    )


def workload_match_code(
    frame: pl.DataFrame, rules: Sequence[ProjectRule], owner_tag_key: str
) -> pl.Expr:
    """Match code of GPU rows by workload: ``namespace``, ``pod``, or the pod's project label
    (gpu_usage ``project``, matched against each rule's ``tags[owner_tag_key]``)."""
    per_column: dict[str, list[tuple[int, Test]]] = {}
    for index, rule in enumerate(rules):
        if rule.match.namespaces:
            per_column.setdefault("namespace", []).append(
                (_code(index, "namespaces"), _any_glob(rule.match.namespaces))
            )
        if rule.match.pods:
            per_column.setdefault("pod", []).append(
                (_code(index, "pods"), _any_glob(rule.match.pods))
            )
        if owner_tag_key in rule.match.tags:
            per_column.setdefault("project", []).append(
                (_code(index, "labels"), _any_glob([rule.match.tags[owner_tag_key]]))
            )
    return _minimum(frame, per_column)


def host_match_code(frame: pl.DataFrame, rules: Sequence[ProjectRule]) -> pl.Expr:
    """Match code of inventory hosts: their ``tags`` or their names (``host``, ``resource_id``)."""
    per_column: dict[str, list[tuple[int, Test]]] = {}
    for index, rule in enumerate(rules):
        for key, pattern in sorted(rule.match.tags.items()):
            per_column.setdefault("tags", []).append(
                (_code(index, "host-tags"), _tag_glob(key, pattern))
            )
        if rule.match.hosts:
            for column in ("host", "resource_id"):
                per_column.setdefault(column, []).append(
                    (_code(index, "host-names"), _any_glob(rule.match.hosts))
                )
    return _minimum(frame, per_column)


def _minimum(frame: pl.DataFrame, per_column: dict[str, list[tuple[int, Test]]]) -> pl.Expr:
    expressions = [first_match_code(frame, column, tests) for column, tests in per_column.items()]
    if not expressions:
        return pl.lit(None, pl.Int64)
    return pl.min_horizontal(expressions)


def targets(rules: Sequence[ProjectRule], extra_projects: Sequence[str]) -> pl.DataFrame:
    """Every target code with its ``project``, ``cost_center`` and ``rule`` label.

    Rule codes name ``projects[i].via``; ``extra_projects`` (shared-cost recipients known only
    by name, such as roster projects) get codes from :data:`PROJECT_CODE_BASE` in name order and
    the cost centre of the first rule of that name, if any.
    """
    codes: list[int] = []
    projects: list[str] = []
    cost_centers: list[str | None] = []
    labels: list[str | None] = []
    for index, rule in enumerate(rules):
        for via in VIA:
            codes.append(_code(index, via))
            projects.append(rule.name)
            cost_centers.append(rule.cost_center)
            labels.append(f"projects[{index}].{via}")
    first_cost_center: dict[str, str | None] = {}
    for rule in rules:
        first_cost_center.setdefault(rule.name, rule.cost_center)
    for offset, name in enumerate(sorted(set(extra_projects))):
        codes.append(PROJECT_CODE_BASE + offset)
        projects.append(name)
        cost_centers.append(first_cost_center.get(name))
        labels.append(None)
    codes += [UNALLOCATED_CODE, IDLE_CODE]
    projects += [UNALLOCATED, IDLE_PROJECT]
    cost_centers += [None, None]
    labels += [None, None]
    return pl.DataFrame(
        {"code": codes, "project": projects, "cost_center": cost_centers, "rule": labels},
        schema={
            "code": pl.Int64,
            "project": pl.String,
            "cost_center": pl.String,
            "rule": pl.String,
        },
    )
