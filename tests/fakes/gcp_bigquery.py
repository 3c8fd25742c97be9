"""A fake of the BigQuery v2 REST API: just what a query job and a table lookup need.

Endpoints (paths as ``google-cloud-bigquery`` requests them, under ``/bigquery/v2``):

* ``GET  projects/{p}/datasets/{d}/tables/{t}``   tables.get: schema and partitioning
* ``POST projects/{p}/jobs``                      jobs.insert: a dry run answers at once with
  ``statistics.query.totalBytesProcessed``; a real query starts RUNNING
* ``GET  projects/{p}/jobs/{id}``                 jobs.get: DONE (or DONE with ``errorResult``)
* ``GET  projects/{p}/queries/{id}``              jobs.getQueryResults: schema, ``totalRows``
  and rows in pages linked by ``pageToken``

Values come back the way the REST API writes them: every cell a string (``{"v": "12.5"}``),
INT64 as a string, TIMESTAMP as int64 microseconds since the epoch in a string when the client
asks for ``formatOptions.useInt64Timestamp`` (google-cloud-bigquery always does for query
results), NULL as ``null``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.gcp_server import JsonFake, Request, Response, google_error

_JOB_IDS = itertools.count(1)


def field_(
    name: str, field_type: str, mode: str = "NULLABLE", fields: list[Any] | None = None
) -> dict[str, Any]:
    """A BigQuery ``TableFieldSchema`` as JSON."""
    result: dict[str, Any] = {"name": name, "type": field_type, "mode": mode}
    if fields is not None:
        result["fields"] = fields
    return result


def _key_value(name: str) -> dict[str, Any]:
    return field_(name, "RECORD", "REPEATED", [field_("key", "STRING"), field_("value", "STRING")])


def billing_export_schema(*, detailed: bool) -> list[dict[str, Any]]:
    """The billing export table's columns, as listed in Google's "Structure of Standard data
    export" and "Structure of Detailed data export" pages (detailed adds ``resource`` and
    ``price``). Written here from the documented field list, not copied from any file.
    """
    fields = [
        field_("billing_account_id", "STRING"),
        field_(
            "service", "RECORD", fields=[field_("id", "STRING"), field_("description", "STRING")]
        ),
        field_("sku", "RECORD", fields=[field_("id", "STRING"), field_("description", "STRING")]),
        field_("usage_start_time", "TIMESTAMP"),
        field_("usage_end_time", "TIMESTAMP"),
        field_(
            "project",
            "RECORD",
            fields=[
                field_("id", "STRING"),
                field_("number", "STRING"),
                field_("name", "STRING"),
                _key_value("labels"),
                field_("ancestry_numbers", "STRING"),
            ],
        ),
        _key_value("labels"),
        _key_value("system_labels"),
        field_(
            "location",
            "RECORD",
            fields=[field_(n, "STRING") for n in ("location", "country", "region", "zone")],
        ),
        field_("export_time", "TIMESTAMP"),
        field_("cost", "FLOAT"),
        field_("currency", "STRING"),
        field_("currency_conversion_rate", "FLOAT"),
        field_(
            "usage",
            "RECORD",
            fields=[
                field_("amount", "FLOAT"),
                field_("unit", "STRING"),
                field_("amount_in_pricing_units", "FLOAT"),
                field_("pricing_unit", "STRING"),
            ],
        ),
        field_(
            "credits",
            "RECORD",
            "REPEATED",
            fields=[field_(n, "STRING") for n in ("name", "full_name", "id", "type")]
            + [field_("amount", "FLOAT")],
        ),
        field_("invoice", "RECORD", fields=[field_("month", "STRING")]),
        field_("cost_type", "STRING"),
        field_("cost_at_list", "FLOAT"),
    ]
    if detailed:
        fields.append(
            field_(
                "resource",
                "RECORD",
                fields=[field_("name", "STRING"), field_("global_name", "STRING")],
            )
        )
    return fields


@dataclass
class FakeBigQuery(JsonFake):
    """Serves one export table and the results of whatever query is run against it.

    ``result_fields``/``result_rows`` are what the query returns (the fake does not run SQL);
    ``page_size`` splits them into pages. ``dry_run_bytes`` is the dry run's estimate.
    ``job_error`` makes the query job finish with that ``errorResult``.
    """

    project: str = "billing-admin"
    dataset: str = "billing_export"
    table: str = "gcp_billing_export_resource_v1_0123AB_4567CD_89EF01"
    table_fields: list[dict[str, Any]] = field(
        default_factory=lambda: billing_export_schema(detailed=True)
    )
    time_partitioning: dict[str, Any] | None = field(default_factory=lambda: {"type": "DAY"})
    result_fields: list[dict[str, Any]] = field(default_factory=list)
    result_rows: list[list[Any]] = field(default_factory=list)
    page_size: int = 2
    dry_run_bytes: int = 1_234_567
    job_error: dict[str, Any] | None = None
    polls_before_done: int = 1
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)

    def route(self, request: Request) -> Response:
        """Dispatch on the REST path."""
        path = request.path.removeprefix("/bigquery/v2")
        if match := re.fullmatch(r"/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)", path):
            return self._get_table(*match.groups())
        if request.method == "POST" and (match := re.fullmatch(r"/projects/([^/]+)/jobs", path)):
            return self._insert_job(match.group(1), request.body)
        if match := re.fullmatch(r"/projects/([^/]+)/jobs/([^/]+)", path):
            return self._get_job(match.group(2))
        if match := re.fullmatch(r"/projects/([^/]+)/queries/([^/]+)", path):
            return self._get_query_results(match.group(2), request.query)
        return google_error(404, "notFound", f"fake BigQuery has no route {request.method} {path}")

    def _get_table(self, project: str, dataset: str, table: str) -> Response:
        if (project, dataset, table) != (self.project, self.dataset, self.table):
            return google_error(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        body: dict[str, Any] = {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{table}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": self.table_fields},
            "type": "TABLE",
            "location": "US",
        }
        if self.time_partitioning is not None:
            body["timePartitioning"] = self.time_partitioning
        return Response(200, body)

    def _insert_job(self, project: str, body: dict[str, Any]) -> Response:
        configuration = body.get("configuration", {})
        reference = dict(body.get("jobReference", {}))
        reference.setdefault("projectId", project)
        reference.setdefault("location", "US")
        now_ms = str(int(datetime.now(UTC).timestamp() * 1000))
        if configuration.get("dryRun"):
            # A dry run returns the job at once, DONE, with the estimate and no job id kept.
            estimate = str(self.dry_run_bytes)
            return Response(
                200,
                {
                    "kind": "bigquery#job",
                    "jobReference": {"projectId": project, "location": reference["location"]},
                    "configuration": configuration,
                    "status": {"state": "DONE"},
                    "statistics": {
                        "creationTime": now_ms,
                        "totalBytesProcessed": estimate,
                        "query": {
                            "totalBytesProcessed": estimate,
                            "totalBytesBilled": "0",
                            "cacheHit": False,
                            "statementType": "SELECT",
                            "schema": {"fields": self.result_fields},
                        },
                    },
                },
            )
        job_id = reference.get("jobId") or f"job_fake_{next(_JOB_IDS)}"
        reference["jobId"] = job_id
        job = {
            "kind": "bigquery#job",
            "id": f"{project}:{reference['location']}.{job_id}",
            "jobReference": reference,
            "configuration": configuration,
            "status": {"state": "RUNNING"},
            "statistics": {"creationTime": now_ms, "startTime": now_ms},
        }
        self.jobs[job_id] = job
        self.polls[job_id] = 0
        return Response(200, job)

    def _advance(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        self.polls[job_id] += 1
        if self.polls[job_id] >= self.polls_before_done and job["status"]["state"] != "DONE":
            job["status"] = {"state": "DONE"}
            if self.job_error is not None:
                job["status"]["errorResult"] = self.job_error
                job["status"]["errors"] = [self.job_error]
            job["statistics"]["endTime"] = job["statistics"]["startTime"]
            job["statistics"]["query"] = {
                "totalBytesProcessed": str(self.dry_run_bytes),
                "totalBytesBilled": str(self.dry_run_bytes),
                "statementType": "SELECT",
            }
        return job

    def _get_job(self, job_id: str) -> Response:
        if job_id not in self.jobs:
            return google_error(404, "notFound", f"Not found: Job {job_id}")
        return Response(200, self._advance(job_id))

    def _get_query_results(self, job_id: str, query: dict[str, list[str]]) -> Response:
        if job_id not in self.jobs:
            return google_error(404, "notFound", f"Not found: Job {job_id}")
        job = self._advance(job_id)
        reference = job["jobReference"]
        if job["status"]["state"] != "DONE":
            return Response(
                200,
                {
                    "kind": "bigquery#getQueryResultsResponse",
                    "jobReference": reference,
                    "jobComplete": False,
                },
            )
        if "errorResult" in job["status"]:
            error = job["status"]["errorResult"]
            return google_error(400, error["reason"], error["message"])
        start = int(query.get("pageToken", ["0"])[0])
        wanted = query.get("maxResults", [None])[0]
        size = self.page_size if wanted is None else min(self.page_size, int(wanted))
        rows = self.result_rows[start : start + size]
        body: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": reference,
            "schema": {"fields": self.result_fields},
            "totalRows": str(len(self.result_rows)),
            "jobComplete": True,
            "cacheHit": False,
            "totalBytesProcessed": str(self.dry_run_bytes),
        }
        if size:
            body["rows"] = [{"f": [{"v": value} for value in row]} for row in rows]
        if start + size < len(self.result_rows) and size:
            body["pageToken"] = str(start + size)
        return Response(200, body)

    @property
    def query_requests(self) -> list[Request]:
        """The jobs.insert requests that were not dry runs."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and not r.body.get("configuration", {}).get("dryRun")
        ]

    @property
    def dry_run_requests(self) -> list[Request]:
        """The jobs.insert requests that were dry runs."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.body.get("configuration", {}).get("dryRun")
        ]
