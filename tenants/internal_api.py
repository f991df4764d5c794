"""The one question regions ask each other: "which region hosts this organization?".

Each deployment answers, for an organization it hosts, with its region's name and
nothing else; for one it does not host, with 404. Support staff's directory also
asks each region for the names, tenant IDs and status of the organizations it hosts
(no other column, no row of their data). Every call is signed with
REGION_LOOKUP_SECRET (HMAC-SHA256 over a timestamp, the method and the full path),
valid for five minutes; anything unsigned or stale is answered 403 with no detail
beyond what to fix.

Answers are cached briefly (REGION_LOOKUP_CACHE_SECONDS), negative ones too, so a
burst of misrouted requests costs each other region one call per organization.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from tenants.models import Tenant
from tenants.regions import layout
from tenants.scoping import all_tenants

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Region-Signature"
MAX_CLOCK_SKEW_SECONDS = 300
LOOKUP_TIMEOUT_SECONDS = 3.0
LOOKUP_PATH = "/internal/regions/lookup"
DIRECTORY_PATH = "/internal/regions/directory"


def _mac(secret: str, timestamp: int, method: str, full_path: str) -> str:
    message = f"{timestamp}.{method.upper()}.{full_path}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(method: str, full_path: str, *, now: float | None = None, secret: str | None = None) -> str:
    timestamp = int(now if now is not None else time.time())
    key = secret if secret is not None else settings.REGION_LOOKUP_SECRET
    return f"t={timestamp},v1={_mac(key, timestamp, method, full_path)}"


def signature_problem(request: HttpRequest, *, now: float | None = None) -> str | None:
    """None when the request carries a valid signature, else what is wrong."""
    secret = settings.REGION_LOOKUP_SECRET
    if not secret:
        return "This deployment has no REGION_LOOKUP_SECRET, so it answers no region lookups."
    header = request.headers.get(SIGNATURE_HEADER, "")
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return f"Sign the request: {SIGNATURE_HEADER}: t=<unix time>,v1=<hex HMAC-SHA256>."
    current = int(now if now is not None else time.time())
    if abs(current - timestamp) > MAX_CLOCK_SKEW_SECONDS:
        return "The signature's timestamp is more than five minutes off; check the clocks."
    expected = _mac(secret, timestamp, request.method, request.get_full_path())
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        return "The signature does not match; every region must share the same REGION_LOOKUP_SECRET."
    return None


def hosts_fhir_base(iss: str) -> bool:
    # The connector app depends on tenants, not the other way round: import here.
    from connector.endpoint_checks import normalize_fhir_base_url
    from connector.models import FhirEndpoint

    try:
        base_url = normalize_fhir_base_url(iss)
    except Exception:  # noqa: BLE001 - a malformed address is hosted nowhere
        return False
    with all_tenants():
        return FhirEndpoint.objects.filter(base_url=base_url).exists()


def _refused(problem: str) -> JsonResponse:
    return JsonResponse({"error": {"code": "forbidden", "message": problem}}, status=403)


@require_GET
def region_lookup(request: HttpRequest) -> JsonResponse:
    """GET /internal/regions/lookup?tenant_id=<guid> or ?iss=<FHIR base URL>."""
    problem = signature_problem(request)
    if problem:
        return _refused(problem)
    tenant_id = request.GET.get("tenant_id", "").strip().lower()
    iss = request.GET.get("iss", "").strip()
    if tenant_id:
        hosted = Tenant.objects.filter(microsoft_tenant_id=tenant_id).exists()
    elif iss:
        hosted = hosts_fhir_base(iss)
    else:
        return JsonResponse(
            {"error": {"code": "invalid", "message": "Ask with ?tenant_id=<guid> or ?iss=<FHIR base URL>."}},
            status=400,
        )
    if not hosted:
        return JsonResponse({"hosted": False}, status=404)
    return JsonResponse({"hosted": True, "region": layout().current})


@require_GET
def region_directory(request: HttpRequest) -> JsonResponse:
    """GET /internal/regions/directory: the organizations hosted here, for support's directory."""
    problem = signature_problem(request)
    if problem:
        return _refused(problem)
    region = layout().current
    organizations = [
        {"name": name, "tenant_id": tid, "status": status, "region": region}
        for name, tid, status in Tenant.objects.order_by("name").values_list(
            "name", "microsoft_tenant_id", "status"
        )
    ]
    return JsonResponse({"region": region, "organizations": organizations})


def _signed_get(base_url: str, path: str, params: dict[str, str]) -> requests.Response:
    full_path = f"{path}?{urlencode(params)}" if params else path
    return requests.get(
        f"{base_url}{full_path}",
        headers={SIGNATURE_HEADER: sign("GET", full_path)},
        timeout=LOOKUP_TIMEOUT_SECONDS,
        allow_redirects=False,
    )


def locate(*, tenant_id: str = "", iss: str = "") -> str | None:
    """The other region that hosts this organization (by tenant ID or EHR base URL), or None.

    Asks each other region at most once per REGION_LOOKUP_CACHE_SECONDS; a region that
    cannot be reached is skipped (and the answer not cached), never guessed.
    """
    regions = layout()
    if not regions.is_multi_region:
        return None
    key_material = f"tenant:{tenant_id.lower()}" if tenant_id else f"iss:{iss.rstrip('/')}"
    cache_key = "region-lookup:" + hashlib.sha256(key_material.encode()).hexdigest()
    cached = cache.get(cache_key)
    if cached is not None:
        return cached or None
    params = {"tenant_id": tenant_id} if tenant_id else {"iss": iss.rstrip("/")}
    complete = True
    for region, base_url in regions.others():
        try:
            response = _signed_get(base_url, LOOKUP_PATH, params)
        except requests.RequestException as error:
            complete = False
            logger.warning("region lookup: %s unreachable (%s)", region, type(error).__name__)
            continue
        if response.status_code == 200:
            cache.set(cache_key, region, settings.REGION_LOOKUP_CACHE_SECONDS)
            return region
        if response.status_code != 404:
            complete = False
            logger.warning("region lookup: %s answered %s", region, response.status_code)
    if complete:
        cache.set(cache_key, "", settings.REGION_LOOKUP_CACHE_SECONDS)
    return None


def directory_of(region: str, base_url: str) -> dict:
    """One region's directory entries, or an error line for the page."""
    try:
        response = _signed_get(base_url, DIRECTORY_PATH, {})
        response.raise_for_status()
        return {"region": region, "organizations": response.json().get("organizations", []), "error": ""}
    except (requests.RequestException, ValueError) as error:
        return {"region": region, "organizations": [], "error": f"{base_url} did not answer ({type(error).__name__})."}
