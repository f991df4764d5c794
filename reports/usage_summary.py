"""Usage per organization for support staff, and the same across every region.

Each region answers for its own organizations from its roll-ups
(`GET /api/v1/support/usage/?from=YYYY-MM-DD&to=YYYY-MM-DD`, a support staff session or
the installation's SUPPORT_REPORTS_TOKEN). The cross-region summary in the admin is
assembled by calling that API in every region, never by reading another region's
database; a region that does not answer is shown as missing, not as zero.
"""

from __future__ import annotations

import datetime
import hmac

import requests
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from reports.models import DailyRollup
from tenants.models import Tenant
from tenants.regions import layout, region_label
from tenants.scoping import all_tenants

FIGURES = ("visits", "completed", "no_shows", "sms_sent", "sms_delivered", "sms_failed")
USAGE_PATH = "/api/v1/support/usage/"


def usage_by_organization(start: datetime.date, end: datetime.date) -> list[dict]:
    """This region's organizations with their summed figures over [start, end] (local days)."""
    with all_tenants():
        sums = {
            row["tenant"]: row
            for row in DailyRollup.objects.filter(day__gte=start, day__lte=end)
            .values("tenant")
            .annotate(**{name: Sum(name) for name in FIGURES})
        }
        organizations = list(Tenant.objects.order_by("name").values("pk", "name", "microsoft_tenant_id", "status"))
    region = layout().current
    return [
        {
            "tenant_id": org["microsoft_tenant_id"],
            "name": org["name"],
            "status": org["status"],
            "region": region,
            **{name: (sums.get(org["pk"]) or {}).get(name) or 0 for name in FIGURES},
        }
        for org in organizations
    ]


def caller_may_read_usage(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.SUPPORT_REPORTS_TOKEN
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(presented.encode(), token.encode())


def usage_across_regions(start: datetime.date, end: datetime.date) -> list[dict]:
    """One section per region: its organizations' usage, or why it is missing."""
    regions = layout()
    sections = [{"region": regions.current, "organizations": usage_by_organization(start, end), "error": ""}]
    for region, base_url in regions.others():
        section = {"region": region, "organizations": [], "error": ""}
        try:
            response = requests.get(
                base_url + USAGE_PATH,
                params={"from": start.isoformat(), "to": end.isoformat()},
                headers={"Authorization": f"Bearer {settings.SUPPORT_REPORTS_TOKEN}"},
                timeout=10,
            )
            response.raise_for_status()
            section["organizations"] = response.json()["organizations"]
        except (requests.RequestException, ValueError, KeyError) as error:
            section["error"] = f"{base_url} did not answer ({type(error).__name__}); its figures are missing."
        sections.append(section)
    return sections


@staff_member_required
def usage_summary_page(request: HttpRequest) -> HttpResponse:
    """Admin → Usage in every region: last month by default, or ?from=&to=."""
    today = timezone.localdate()
    default_start = (today.replace(day=1) - datetime.timedelta(days=1)).replace(day=1)
    default_end = today.replace(day=1) - datetime.timedelta(days=1)
    error = ""
    try:
        start = datetime.date.fromisoformat(request.GET.get("from") or default_start.isoformat())
        end = datetime.date.fromisoformat(request.GET.get("to") or default_end.isoformat())
        if end < start or (end - start).days > 366:
            raise ValueError
    except ValueError:
        error = "Give 'from' and 'to' as YYYY-MM-DD, 'to' on or after 'from', at most a year apart."
        start, end = default_start, default_end
    sections = usage_across_regions(start, end)
    for section in sections:
        section["label"] = region_label(section["region"])
        section["totals"] = {name: sum(o[name] for o in section["organizations"]) for name in FIGURES}
    context = {
        **admin.site.each_context(request),
        "title": "Usage in every region",
        "sections": sections,
        "start": start,
        "end": end,
        "error": error,
        "grand_total": {name: sum(s["totals"][name] for s in sections) for name in FIGURES},
        "incomplete": any(s["error"] for s in sections),
    }
    return render(request, "admin/reports/usage_summary.html", context)
