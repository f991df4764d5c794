"""The one small interface every report implements; CSV, JSON, paging and sorting come for free.

A report is one class (pretix's exporters are the model):

    @register
    class NoShowsByClinician(Report):
        identifier = "no-shows-by-clinician"
        title = "No-shows by clinician"
        form_class = ReportForm                 # its parameters (date range, department, ...)
        columns = (Column("clinician", "Clinician", ordering="primary_clinician__username"), ...)
        default_ordering = "clinician"

        def rows(self):                          # for self.tenant and self.params
            return Visit.objects.filter(tenant=self.tenant, ...).values(...)

`rows()` returns a queryset (or a list) already filtered and ordered; it runs in
the tenant's scope. `values(batch)` turns a batch of rows into dicts keyed by
column (override it to add figures computed per batch, not per row).
`summary()` and `charts()` are optional.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from itertools import islice
from typing import Any, ClassVar

from django import forms
from django.core.paginator import Paginator
from django.db.models import F, QuerySet
from django.db.models.expressions import OrderBy
from django.utils import timezone

from connector.models import Environment
from reports.zones import Zones, zones_for_tenant
from tenants.models import Tenant

PRESETS = (("7", "Last 7 days"), ("30", "Last 30 days"), ("90", "Last 90 days"), ("custom", "Custom range"))
DEFAULT_PRESET = "30"
MAX_RANGE_DAYS = 3660


@dataclass(frozen=True)
class Column:
    """One column: its key in rows and the API, its header, and how to sort by it (None: not sortable)."""

    key: str
    header: str
    ordering: str | tuple[str, ...] | None = None
    kind: str = "text"  # text, number, decimal, percent, seconds, datetime, date, bool
    help: str = ""

    @property
    def sortable(self) -> bool:
        return self.ordering is not None


class ReportForm(forms.Form):
    """Parameters every report takes: a date range (preset or custom), department, environment, ordering, page.

    In the query string: `period=7|30|90`, or `from=YYYY-MM-DD&to=YYYY-MM-DD`
    (either may be left out), `department`, `environment`, `ordering` (a column
    key, `-` for descending), `page`.
    """

    period = forms.ChoiceField(choices=PRESETS, required=False, label="Period")
    department = forms.CharField(required=False, max_length=200, label="Department")
    environment = forms.ChoiceField(
        choices=[("", "All environments"), *Environment.choices], required=False, label="Environment"
    )
    ordering = forms.ChoiceField(choices=(), required=False, widget=forms.HiddenInput)
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def __init__(self, data=None, *, report_class: type[Report], today: date | None = None, **kwargs):
        super().__init__(data, **kwargs)
        self.report_class = report_class
        self.today = today or timezone.localdate()
        # "from" is a Python keyword, so these two are added by name.
        self.fields["from"] = forms.DateField(
            required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
        )
        self.fields["to"] = forms.DateField(
            required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
        )
        choices = []
        for column in report_class.columns:
            if column.sortable:
                choices += [(column.key, column.header), (f"-{column.key}", f"{column.header} (descending)")]
        self.fields["ordering"].choices = [("", "Default"), *choices]
        self.order_fields(["period", "from", "to", "department", "environment"])

    def clean(self) -> dict:
        data = super().clean()
        first, last = data.get("from"), data.get("to")
        period = data.get("period") or ""
        if first or last or period == "custom":
            last = last or self.today
            first = first or last - timedelta(days=int(DEFAULT_PRESET) - 1)
            if first > last:
                self.add_error("to", "The end of the range is before its start: swap the two dates.")
            elif (last - first).days >= MAX_RANGE_DAYS:
                self.add_error("from", f"Ask for at most {MAX_RANGE_DAYS} days at a time.")
            data["period"] = "custom"
        else:
            days = int(period or DEFAULT_PRESET)
            last, first = self.today, self.today - timedelta(days=days - 1)
            data["period"] = str(days)
        data["first"], data["last"] = first, last
        data["department"] = (data.get("department") or "").strip()
        data["ordering"] = data.get("ordering") or self.report_class.default_ordering
        data["page"] = data.get("page") or 1
        return data


class Report:
    """Base of every report; subclasses set the class attributes and implement `rows`."""

    identifier: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    position: ClassVar[int] = 100  # where it is listed among the reports
    form_class: ClassVar[type[ReportForm]] = ReportForm
    columns: ClassVar[tuple[Column, ...]] = ()
    default_ordering: ClassVar[str] = ""
    page_size: ClassVar[int] = 50
    max_page_size: ClassVar[int] = 500
    csv_chunk_size: ClassVar[int] = 2000
    do_not_call_in_templates: ClassVar[bool] = True  # templates list the classes themselves

    def __init__(self, *, tenant: Tenant, params: dict[str, Any]) -> None:
        self.tenant = tenant
        self.params = params

    # --- what a report implements ----------------------------------------------------

    def rows(self) -> QuerySet | Sequence:
        raise NotImplementedError

    @cached_property
    def zones(self) -> Zones:
        """The organization's endpoints by time zone, for local-day filters (zones.visit_range_q, range_q)."""
        return zones_for_tenant()

    def values(self, batch: Sequence) -> list[dict[str, Any]]:
        """Dicts keyed by column key, for a batch of rows (a page, or a CSV chunk)."""
        keys = [c.key for c in self.columns]
        if batch and isinstance(batch[0], dict):
            return [{k: row.get(k) for k in keys} for row in batch]
        return [{k: getattr(row, k, None) for k in keys} for row in batch]

    def summary(self) -> dict[str, Any]:
        return {}

    def charts(self) -> list[str]:
        """Inline SVG charts (already safe markup) for the HTML page."""
        return []

    # --- what comes for free ---------------------------------------------------------

    @classmethod
    def form(cls, data=None, *, today: date | None = None) -> ReportForm:
        return cls.form_class(data, report_class=cls, today=today)

    @property
    def first(self) -> date:
        return self.params["first"]

    @property
    def last(self) -> date:
        return self.params["last"]

    def ordering_key(self) -> tuple[Column, bool]:
        """The column to sort by and whether descending (the default when the choice is not sortable)."""
        for wanted in (self.params.get("ordering") or "", self.default_ordering):
            column = next((c for c in self.columns if c.key == wanted.lstrip("-") and c.sortable), None)
            if column is not None:
                return column, wanted.startswith("-")
        raise ValueError(f"{type(self).__name__}.default_ordering names no sortable column")

    def ordering(self) -> list[OrderBy]:
        """ORM ordering for the chosen column; empty values last either way, as on every database."""
        column, descending = self.ordering_key()
        fields = (column.ordering,) if isinstance(column.ordering, str) else tuple(column.ordering)
        return [F(f).desc(nulls_last=True) if descending else F(f).asc(nulls_last=True) for f in fields]

    def page(self, number: int | None = None, size: int | None = None):
        """(page, values of its rows). Two queries for a queryset: the count and the page."""
        size = min(size or self.page_size, self.max_page_size)
        paginator = Paginator(self.rows(), size)
        page = paginator.get_page(number or self.params.get("page") or 1)
        return page, self.values(list(page.object_list))

    def iter_values(self) -> Iterator[dict[str, Any]]:
        """Every row, in chunks: constant memory however many rows there are."""
        rows = self.rows()
        iterator: Iterable = (
            rows.iterator(chunk_size=self.csv_chunk_size) if isinstance(rows, QuerySet) else rows
        )
        iterator = iter(iterator)
        while batch := list(islice(iterator, self.csv_chunk_size)):
            yield from self.values(batch)

    def headers(self) -> list[str]:
        """CSV headers: a duration shown as m:ss on the page is whole seconds in the file."""
        return [f"{c.header} (seconds)" if c.kind == "seconds" else c.header for c in self.columns]

    def filename(self) -> str:
        return f"{self.identifier}_{self.first:%Y-%m-%d}_{self.last:%Y-%m-%d}.csv"

    def parameters(self) -> dict[str, Any]:
        """The parameters as the API echoes them."""
        shown = {}
        for name in ("from", "to"):
            shown[name] = (self.first if name == "from" else self.last).isoformat()
        for name, value in self.params.items():
            if name in {"from", "to", "first", "last", "page"}:
                continue
            shown[name] = value
        return shown


# --- formatting ------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def csv_value(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4f}" if kind == "percent" else f"{value:.2f}"
    return str(value)


def csv_lines(report: Report) -> Iterator[str]:
    """The CSV text, a chunk at a time (header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(report.headers())
    kinds = [(c.key, c.kind) for c in report.columns]
    for count, values in enumerate(report.iter_values(), start=1):
        writer.writerow([_csv_safe(csv_value(values.get(key), kind)) for key, kind in kinds])
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _csv_safe(text: str) -> str:
    # Spreadsheet formula injection: a cell starting with = + - @ would be run as a formula.
    if text and text[0] in "=+@\t\r" or (text.startswith("-") and not _is_number(text)):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def json_page(report: Report, page, values: list[dict], *, url_for_page=None) -> dict[str, Any]:
    """The API's answer: the report, its parameters, columns, summary and one page of rows."""
    return {
        "report": report.identifier,
        "title": report.title,
        "parameters": {k: json_value(v) for k, v in report.parameters().items()},
        "columns": [
            {"key": c.key, "header": c.header, "type": c.kind, "sortable": c.sortable} for c in report.columns
        ],
        "summary": _jsonable(report.summary()),
        "count": page.paginator.count,
        "page": page.number,
        "pages": page.paginator.num_pages,
        "next": url_for_page(page.next_page_number()) if url_for_page and page.has_next() else None,
        "previous": url_for_page(page.previous_page_number())
        if url_for_page and page.has_previous()
        else None,
        "results": [{k: json_value(v) for k, v in row.items()} for row in values],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return json_value(value)
