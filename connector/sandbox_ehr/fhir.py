"""The sandbox EHR's FHIR servers (a development peer): discovery on every flavor, REST on r4 and
r4-other. REST needs a bearer token from the sandbox token endpoint whose scopes allow the call.
"""

from __future__ import annotations

import functools
import json
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from connector.sandbox_ehr.common import FhirError, fhir_response, operation_outcome, sandbox_only
from connector.sandbox_ehr.discovery import (
    capability_statement,
    conformance_dstu2,
    openid_configuration,
    smart_configuration,
)
from connector.sandbox_ehr.flavors import Flavor, fhir_base_url, flavor_get
from connector.sandbox_ehr.models import AccessToken, Resource
from connector.sandbox_ehr.scopes import scope_allows
from connector.sandbox_ehr.selectors import access_token_get_valid, resource_get, resource_search, served_body
from connector.sandbox_ehr.services import resource_create, resource_update

READABLE = {"Patient", "Practitioner", "Appointment", "Encounter", "Location"}
UPDATABLE = {"Patient", "Practitioner", "Appointment", "Encounter"}
CREATABLE = {"AuditEvent", "Communication"}


def _flavor(name: str, *, data: bool = False) -> Flavor:
    flavor = flavor_get(name)
    if flavor is None:
        raise FhirError(404, "not-found", f"There is no sandbox FHIR server called '{name}'.")
    if data and not flavor.data:
        raise FhirError(
            404, "not-supported", f"The '{name}' server only answers discovery; use r4 or r4-other."
        )
    return flavor


def _bearer(request: HttpRequest, server: str) -> AccessToken:
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    token = access_token_get_valid(raw=raw.strip(), server=server) if scheme.lower() == "bearer" else None
    if token is None:
        raise FhirError(
            401,
            "login",
            f"A valid bearer token for the {server} server from the sandbox token endpoint is required.",
            headers={"WWW-Authenticate": 'Bearer realm="sandbox-ehr", error="invalid_token"'},
        )
    return token


def _allow(token: AccessToken, resource_type: str, interaction: str) -> None:
    if not scope_allows(token.scope, resource_type, interaction):
        raise FhirError(
            403, "forbidden", f"The token's scopes do not allow {interaction} on {resource_type}."
        )


def _served(request: HttpRequest, flavor: str, row: Resource, status: int = 200) -> JsonResponse:
    headers = {"ETag": f'W/"{row.version}"', "Last-Modified": http_date(row.updated_at.timestamp())}
    if status == 201:
        location = (
            f"{fhir_base_url(request, flavor)}/{row.resource_type}/{row.fhir_id}/_history/{row.version}"
        )
        headers["Location"] = location
    return fhir_response(served_body(row), status=status, headers=headers)


def _json_body(request: HttpRequest):
    try:
        return json.loads(request.body or b"null")
    except ValueError as error:
        raise FhirError(400, "structure", f"The body is not JSON: {error}") from error


def _fhir_view(view):
    """Answer a FhirError raised inside a FHIR view with its OperationOutcome."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except FhirError as error:
            return error.response()

    return wrapped


@sandbox_only
@require_GET
@_fhir_view
def base(request: HttpRequest, flavor: str) -> HttpResponse:
    _flavor(flavor)
    return operation_outcome(404, "not-supported", "Nothing at the base URL; start with GET metadata.")


@sandbox_only
@require_GET
@_fhir_view
def metadata(request: HttpRequest, flavor: str) -> HttpResponse:
    server = _flavor(flavor)
    if server.redirect_to:
        return HttpResponse(status=302, headers={"Location": server.redirect_to})
    if server.slow:
        time.sleep(float(getattr(settings, "SANDBOX_EHR_SLOW_SECONDS", 3)))
    if server.fhir_version == "1.0.2":
        return fhir_response(conformance_dstu2(request, server))
    return fhir_response(capability_statement(request, server))


@sandbox_only
@require_GET
@_fhir_view
def smart_config(request: HttpRequest, flavor: str) -> HttpResponse:
    server = _flavor(flavor)
    if not server.smart:
        return JsonResponse(
            {"error": "not_found", "error_description": "This server has no SMART."}, status=404
        )
    return JsonResponse(smart_configuration(request, server))


@sandbox_only
@require_GET
@_fhir_view
def openid_config(request: HttpRequest, flavor: str) -> HttpResponse:
    server = _flavor(flavor)
    if not server.smart:
        return JsonResponse(
            {"error": "not_found", "error_description": "This server has no SMART."}, status=404
        )
    return JsonResponse(openid_configuration(request, server))


@csrf_exempt  # a FHIR API for servers, authenticated by bearer tokens
@sandbox_only
@require_http_methods(["GET", "POST"])
@_fhir_view
def type_level(request: HttpRequest, flavor: str, resource_type: str) -> HttpResponse:
    """search-type (GET) and create (POST)."""
    server = _flavor(flavor, data=True).name
    token = _bearer(request, server)
    if request.method == "POST":
        if resource_type not in CREATABLE:
            raise FhirError(
                405, "not-supported", f"create is supported for {', '.join(sorted(CREATABLE))} only."
            )
        _allow(token, resource_type, "create")
        row = resource_create(server=server, resource_type=resource_type, body=_json_body(request))
        return _served(request, flavor, row, status=201)
    if resource_type not in READABLE:
        raise FhirError(404, "not-supported", f"search is supported for {', '.join(sorted(READABLE))} only.")
    _allow(token, resource_type, "search")
    try:
        rows = resource_search(server=server, resource_type=resource_type, params=dict(request.GET.lists()))
    except ValueError as error:
        raise FhirError(400, "invalid", f"A search parameter is malformed: {error}") from error
    base_url = fhir_base_url(request, flavor)
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(rows),
        "link": [{"relation": "self", "url": request.build_absolute_uri()}],
        "entry": [
            {
                "fullUrl": f"{base_url}/{row.resource_type}/{row.fhir_id}",
                "resource": served_body(row),
                "search": {"mode": "match"},
            }
            for row in rows
        ],
    }
    return fhir_response(bundle)


@csrf_exempt  # a FHIR API for servers, authenticated by bearer tokens
@sandbox_only
@require_http_methods(["GET", "PUT"])
@_fhir_view
def instance(request: HttpRequest, flavor: str, resource_type: str, fhir_id: str) -> HttpResponse:
    """read (GET) and update (PUT)."""
    server = _flavor(flavor, data=True).name
    token = _bearer(request, server)
    if request.method == "PUT":
        if resource_type not in UPDATABLE:
            raise FhirError(
                405, "not-supported", f"update is supported for {', '.join(sorted(UPDATABLE))} only."
            )
        _allow(token, resource_type, "update")
        row = resource_update(
            server=server,
            resource_type=resource_type,
            fhir_id=fhir_id,
            body=_json_body(request),
            if_match=request.headers.get("If-Match"),
        )
        return _served(request, flavor, row)
    if resource_type not in READABLE:
        raise FhirError(404, "not-supported", f"read is supported for {', '.join(sorted(READABLE))} only.")
    _allow(token, resource_type, "read")
    row = resource_get(server=server, resource_type=resource_type, fhir_id=fhir_id)
    if row is None:
        raise FhirError(404, "not-found", f"{resource_type}/{fhir_id} does not exist on the {server} server.")
    return _served(request, flavor, row)
