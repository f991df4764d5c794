"""Support staff's view of the regions: which one they are in, and who is hosted where."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from tenants.internal_api import directory_of
from tenants.models import Tenant
from tenants.regions import layout, region_label


def region_admin_header() -> str:
    regions = layout()
    if not regions.is_multi_region:
        return "EHR connector support"
    return f"EHR connector support · Region: {region_label(regions.current)}"


@staff_member_required
def region_directory_page(request: HttpRequest) -> HttpResponse:
    """Every region's organizations: name, tenant ID, region and status, and nothing of their data.

    This region's come from its own database; the others' from their signed directory
    endpoint, so a region that is down shows as such instead of failing the page.
    """
    regions = layout()
    here = regions.current
    local = [
        {"name": name, "tenant_id": tid, "status": status, "region": here}
        for name, tid, status in Tenant.objects.order_by("name").values_list(
            "name", "microsoft_tenant_id", "status"
        )
    ]
    sections = [{"region": here, "organizations": local, "error": ""}]
    sections += [directory_of(region, base_url) for region, base_url in regions.others()]
    for section in sections:
        section["label"] = region_label(section["region"])
        section["base_url"] = regions.base_url(section["region"]) if regions.is_multi_region else ""
    context = {
        **admin.site.each_context(request),
        "title": "Organizations in every region",
        "sections": sections,
        "multi_region": regions.is_multi_region,
        "here": region_label(here),
    }
    return render(request, "admin/tenants/region_directory.html", context)
