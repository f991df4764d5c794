"""Reports through the API: the same reports and filters as the portal, as JSON pages or streamed CSV.

GET /api/v1/tenants/<tenant_id>/reports/
GET /api/v1/tenants/<tenant_id>/reports/<report_id>/?from=&to=&period=&department=&environment=&state=
    &ordering=&page=&page_size=&format=json|csv
"""

from __future__ import annotations

import csv
import datetime
import io

from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import authentication, exceptions, permissions
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.access import DeclaredAccess
from connector.api.tenancy import TenantAPIViewMixin
from reports.base import json_page
from reports.presentation import csv_response
from reports.registry import all_reports, get_report
from reports.usage_summary import caller_may_read_usage, usage_by_organization
from tenants.regions import layout


class CSVRenderer(BaseRenderer):
    """Lets `?format=csv` (or Accept: text/csv) through content negotiation.

    Reports stream their own CSV; this renders only error bodies, as a two-column CSV.
    """

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
        writer.writerow(["code", "message"])
        writer.writerow([error.get("code", ""), error.get("message", "")])
        return buffer.getvalue().encode()


REPORT_PARAMETERS = [
    OpenApiParameter(
        "from",
        OpenApiTypes.DATE,
        description="First day (department's local date). Default: 29 days before `to`.",
    ),
    OpenApiParameter("to", OpenApiTypes.DATE, description="Last day, included. Default: today."),
    OpenApiParameter(
        "period", str, enum=["7", "30", "90"], description="A preset instead of from/to (default 30)."
    ),
    OpenApiParameter("department", str, description="The EHR department ID."),
    OpenApiParameter("environment", str, enum=["test", "production"]),
    OpenApiParameter(
        "state", str, description="virtual-appointments: completed|no_show; sms: a message state."
    ),
    OpenApiParameter("kind", str, description="sms only: the message type."),
    OpenApiParameter("ordering", str, description="A sortable column key; prefix `-` for descending."),
    OpenApiParameter("page", int),
    OpenApiParameter("page_size", int, description="Rows per page, at most 500 (default 50)."),
    OpenApiParameter(
        "format", str, enum=["json", "csv"], description="`csv` streams every row, not one page."
    ),
]


class ReportListApi(TenantAPIViewMixin, APIView):
    @extend_schema(
        tags=["reports"],
        responses=OpenApiTypes.OBJECT,
        summary="The reports available",
        operation_id="reports_list",
    )
    def get(self, request, tenant_id: str):
        return Response(
            {
                "results": [
                    {
                        "id": report.identifier,
                        "title": report.title,
                        "description": report.description,
                        "columns": [
                            {"key": c.key, "header": c.header, "type": c.kind} for c in report.columns
                        ],
                        "url": request.build_absolute_uri(f"{report.identifier}/"),
                    }
                    for report in all_reports()
                ]
            }
        )


class ReportApi(TenantAPIViewMixin, APIView):
    renderer_classes = [JSONRenderer, CSVRenderer]

    def handle_exception(self, exc):
        """Errors in the API's one JSON shape, also when CSV was asked for (`format=csv`)."""
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(
        tags=["reports"],
        parameters=REPORT_PARAMETERS,
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.STR},
        summary="One report: a page of rows as JSON, or every row as CSV",
        operation_id="reports_retrieve",
    )
    def get(self, request, tenant_id: str, report_id: str):
        report_class = get_report(report_id)
        form = report_class.form(request.query_params)
        if not form.is_valid():
            raise exceptions.ValidationError({k: [str(e) for e in v] for k, v in form.errors.items()})
        report = report_class(tenant=self.tenant, params=form.cleaned_data)
        if request.accepted_renderer.format == "csv":
            return csv_response(report)
        size = _page_size(request.query_params, report.page_size, report.max_page_size)
        page, values = report.page(size=size)

        def url_for_page(number: int) -> str:
            query = request.query_params.copy()
            query["page"] = str(number)
            return request.build_absolute_uri("?" + query.urlencode())

        return Response(json_page(report, page, values, url_for_page=url_for_page))


def _page_size(query: QueryDict, default: int, maximum: int) -> int:
    raw = query.get("page_size") or ""
    if not raw:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise exceptions.ValidationError({"page_size": ["A whole number from 1 to 500."]}) from None
    if not 1 <= size <= maximum:
        raise exceptions.ValidationError({"page_size": [f"A whole number from 1 to {maximum}."]})
    return size


class SupportUsagePermission(permissions.BasePermission):
    message = "Support staff only: sign in to the admin, or send the installation's SUPPORT_REPORTS_TOKEN."

    def has_permission(self, request, view) -> bool:
        return caller_may_read_usage(request)


class SupportUsageApi(APIView):
    """Every organization of this region with its usage: for support staff and the other regions."""

    authentication_classes = [authentication.SessionAuthentication]
    permission_classes = [DeclaredAccess, SupportUsagePermission]

    @extend_schema(
        tags=["support"],
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, required=True, description="First local day."),
            OpenApiParameter("to", OpenApiTypes.DATE, required=True, description="Last local day."),
        ],
        responses=OpenApiTypes.OBJECT,
        summary="Usage of every organization in this region (support staff)",
        operation_id="support_usage",
    )
    def get(self, request):
        start, end = _date_param(request, "from"), _date_param(request, "to")
        if end < start:
            raise exceptions.ValidationError({"to": ["Give a day on or after 'from'."]})
        if (end - start).days > 366:
            raise exceptions.ValidationError({"to": ["Ask for at most a year at a time."]})
        return Response(
            {
                "region": layout().current,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "organizations": usage_by_organization(start, end),
            }
        )


def _date_param(request, name: str) -> datetime.date:
    value = request.query_params.get(name, "")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise exceptions.ValidationError({name: [f"Give the day as YYYY-MM-DD, not {value!r}."]}) from None
