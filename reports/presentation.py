"""What the portal and the admin share: a report page's context, and the CSV download."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, QueryDict, StreamingHttpResponse

from connector.datetimes import format_when
from reports.base import PRESETS, Report, csv_lines
from reports.selectors import department_suggestions
from tenants.models import Tenant
from tenants.scoping import tenant_scope

EMPTY = "—"
TEXT_KINDS = {"text", "datetime", "date", "bool"}


def display_value(value: Any, kind: str) -> str:
    """A cell as the HTML table shows it (CSV and JSON keep the raw values)."""
    if value is None or value == "":
        return EMPTY
    if kind == "bool":
        return "Yes" if value else "No"
    if kind == "datetime" and isinstance(value, datetime):
        # The product's one format, in the zone the report gave the value (the clinic's), named.
        return format_when(value, value.tzinfo)
    if kind == "date" and isinstance(value, date):
        return format_when(value)
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "decimal":
        return f"{value:,.1f}"
    if kind == "seconds":
        minutes, seconds = divmod(int(value), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    if kind == "number" and isinstance(value, int | float):
        return f"{value:,}"
    return str(value)


def scoped(tenant: Tenant, lines: Iterator[str]) -> Iterator[str]:
    """Run each step of a streaming generator in the tenant's scope.

    The response is written after the view returned and left the scope; the
    scope is entered per chunk so it never stays set between two chunks.
    """
    while True:
        with tenant_scope(tenant):
            try:
                chunk = next(lines)
            except StopIteration:
                return
        yield chunk


def csv_response(report: Report) -> StreamingHttpResponse:
    """The whole report as CSV, streamed: constant memory for any number of rows."""
    response = StreamingHttpResponse(
        scoped(report.tenant, csv_lines(report)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{report.filename()}"'
    response["Cache-Control"] = "no-store"
    return response


def query_with(query: QueryDict, **changes: Any) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    params = {k: v for k, v in query.items() if v != ""}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else "?"


def build_report(request: HttpRequest, report_class: type[Report], tenant: Tenant):
    """(form, valid, report) from the query string; an invalid one gives the default report."""
    form = report_class.form(request.GET)
    valid = form.is_valid()
    if valid:
        params = form.cleaned_data
    else:  # the errors show next to the fields, the default report under them
        defaults = report_class.form({})
        defaults.is_valid()
        params = defaults.cleaned_data
    return form, valid, report_class(tenant=tenant, params=params)


def report_context(request: HttpRequest, form, valid: bool, report: Report) -> dict[str, Any]:
    """Everything the report template shows; call inside the tenant's scope. A fixed number of queries."""
    page, values = report.page()
    current, descending = report.ordering_key()
    headers = []
    for column in report.columns:
        link = None
        if column.sortable:
            wanted = f"-{column.key}" if column.key == current.key and not descending else column.key
            link = query_with(request.GET, ordering=wanted, page=None)
        headers.append(
            {
                "column": column,
                "link": link,
                "numeric": column.kind not in TEXT_KINDS,
                "sorted": "descending"
                if column.key == current.key and descending
                else ("ascending" if column.key == current.key else None),
            }
        )
    numeric = [c.kind not in TEXT_KINDS for c in report.columns]
    table = [
        [(display_value(row.get(c.key), c.kind), num) for c, num in zip(report.columns, numeric, strict=True)]
        for row in values
    ]
    presets = [
        {
            "value": value,
            "label": label,
            "query": query_with(request.GET, period=value, **{"from": None, "to": None, "page": None}),
            "active": report.params.get("period") == value,
        }
        for value, label in PRESETS
        if value != "custom"
    ]
    return {
        "report": report,
        "form": form,
        "form_valid": valid,
        "page": page,
        "table": table,
        "headers": headers,
        "presets": presets,
        "departments": department_suggestions(),
        "summary": report.summary(),
        "charts": report.charts(),
        "csv_query": query_with(request.GET, format="csv", page=None),
        "previous_query": query_with(request.GET, page=page.previous_page_number())
        if page.has_previous()
        else None,
        "next_query": query_with(request.GET, page=page.next_page_number()) if page.has_next() else None,
    }
