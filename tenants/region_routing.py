"""Send a request that reached the wrong region to the right one, without data.

In a multi-region installation a request names its organization in one of three ways:
the API's `/api/v1/tenants/<tenant id>/...`, the scheduling feed's
`/sms/ingest/<tenant id>/<environment>/`, or a SMART launch's `iss` (the EHR's FHIR
base URL). When this region hosts the organization, nothing happens. When it does
not, the other regions are asked which one does (tenants/internal_api.py) and:

- a browser (a launch) is redirected to the same path and query on that region's host;
- a machine (the API, the feed) gets 421 Misdirected Request with the right base URL
  in the body, so the caller can fix its configuration. It never gets data.

A single-region installation skips all of this.
"""

from __future__ import annotations

import re
import uuid

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse

from connector.request_id import current_request_id
from tenants.internal_api import hosts_fhir_base, locate
from tenants.models import Tenant
from tenants.regions import layout, region_label

TENANT_IN_PATH = re.compile(r"^/(?:api/v1/tenants|sms/ingest)/(?P<tid>[^/]+)/")
LAUNCH_PATHS = {"/launch/provider", "/launch/patient"}


def _normalized_tid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def misdirected(region: str, base_url: str, path: str) -> JsonResponse:
    message = (
        f"This organization's data is kept in the {region_label(region)} region. "
        f"Send this request to {base_url}{path} and update the configured address."
    )
    body = {
        "error": {"code": "wrong_region", "message": message, "region": region, "base_url": base_url},
        "request_id": current_request_id(),
    }
    return JsonResponse(body, status=421)


class RegionRoutingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        regions = layout()
        if regions.is_multi_region:
            answer = self._route(request, regions)
            if answer is not None:
                return answer
        return self.get_response(request)

    def _route(self, request: HttpRequest, regions) -> HttpResponse | None:
        match = TENANT_IN_PATH.match(request.path)
        if match:
            tid = _normalized_tid(match["tid"])
            if tid is None or Tenant.objects.filter(microsoft_tenant_id=tid).exists():
                return None
            region = locate(tenant_id=tid)
            if region:
                return misdirected(region, regions.base_url(region), request.get_full_path())
            return None
        if request.path in LAUNCH_PATHS:
            iss = request.GET.get("iss", "")
            if not iss:
                return None
            if hosts_fhir_base(iss):
                return None
            region = locate(iss=iss)
            if region:
                return HttpResponseRedirect(regions.base_url(region) + request.get_full_path())
        return None
