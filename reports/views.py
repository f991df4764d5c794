"""Reports in the portal, for every organization role (viewer, EHR approver, administrator)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from reports.models import AllotmentWarning
from reports.presentation import build_report, csv_response, report_context
from reports.registry import all_reports, get_report
from reports.selectors import allotment_usage
from tenants.models import Role

READ_ROLES = (Role.ADMINISTRATOR, Role.EHR_APPROVER, Role.VIEWER)


def require_reader(request: HttpRequest) -> None:
    if request.tenant is None:
        raise PermissionDenied("You are not a member of an enabled organization.")
    if request.membership.role not in READ_ROLES:
        raise PermissionDenied("Your role in this organization does not allow reports.")


def allotment_context(request: HttpRequest, zones=None) -> dict:
    """This month's use of the allotment and the warnings already emailed (two queries, plus the zones)."""
    usage = allotment_usage(tenant=request.tenant, zones=zones)
    warnings = list(
        AllotmentWarning.objects.filter(month=usage.month, sent_at__isnull=False).order_by("threshold")
    )
    return {"usage": usage, "warnings": warnings}


@login_required
def index(request: HttpRequest) -> HttpResponse:
    require_reader(request)
    context = allotment_context(request) | {"reports": all_reports()}
    return render(request, "reports/index.html", context)


@login_required
def report(request: HttpRequest, report_id: str) -> HttpResponse:
    require_reader(request)
    report_class = get_report(report_id)
    form, valid, built = build_report(request, report_class, request.tenant)
    if request.GET.get("format") == "csv" and valid:
        return csv_response(built)
    context = report_context(request, form, valid, built) | allotment_context(request, zones=built.zones)
    context["reports"] = all_reports()
    return render(request, "reports/report.html", context, status=200 if valid else 400)
