"""Reports through the API: the same reports and filters as the portal, as JSON pages or streamed CSV.

GET /api/v1/tenants/<tenant_id>/reports/
GET /api/v1/tenants/<tenant_id>/reports/<report_id>/?from=&to=&period=&department=&environment=&state=
    &ordering=&page=&page_size=&format=json|csv
"""

from __future__ import annotations

import csv
import io

from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from connector.api.tenancy import TenantAPIViewMixin
from reports.base import json_page
from reports.presentation import csv_response
from reports.registry import all_reports, get_report


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
