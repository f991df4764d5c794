"""The audit's API fuzzing, bounded, in CI: schemathesis over every operation of the OpenAPI schema.

Three kinds of callers, as an attacker would have them: a read-write API token, a read-only
API token, and a viewer's portal session. For each, schemathesis generates requests from
the schema (a bounded number of examples per operation) and calls the Django application
in-process through its WSGI interface, then checks every answer: no server error (5xx),
and the answer matches the schema (status codes, content types, bodies).

Marked `fuzz`: deselect it locally with `-m "not fuzz"` (it takes a few minutes);
CI runs it with the rest of the suite. More examples: FUZZ_EXAMPLES=50.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import Client
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connector.api.schema_generator import ScopeLiftedSchemaGenerator
from connector.models import FhirEndpoint, IntegrationRecord, RecordKind
from tenants.models import Role
from tenants.scoping import tenant_scope
from tenants.services import api_token_create
from tests.conftest import make_member

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))

# The checks: no server error, and the answer as the schema says (status code, content type,
# headers, body). Two of schemathesis' defaults are left out because the schema cannot say
# everything a valid request needs: a filter on an endpoint that does not exist or an http://
# FHIR URL is schema-valid yet refused with a clear 400 (positive_data_acceptance), and the
# API reads "0" as false and ignores an unreadable optional filter, as Django's forms do
# (negative_data_rejection).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _load_schema():
    """The schema as /api/schema/ serves it, generated in-process; requests go to the WSGI app."""
    raw = ScopeLiftedSchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(raw)))
    loaded.app = get_wsgi_application()
    return loaded


schema = _load_schema()


@pytest.fixture
def callers(org_a, monkeypatch):
    """(organization A, {caller: request headers}) for its three kinds of callers; A has one FHIR endpoint."""
    # Creating or validating an endpoint queues its validation: nothing here should reach out.
    monkeypatch.setattr("connector.background.async_task", lambda *args, **kwargs: None)
    make_member(org_a, "alice-admin", Role.ADMINISTRATOR)
    with tenant_scope(org_a):
        FhirEndpoint.objects.create(
            tenant=org_a,
            label="Cardiology",
            environment="test",
            base_url="https://fhir.example.org/r4",
            time_zone="UTC",
        )
    headers = {}
    for scope in ("read_write", "read"):
        issued = api_token_create(tenant=org_a, name=f"fuzz {scope}", scope=scope, created_by=None)
        headers[f"{scope}_token"] = {"Authorization": f"Bearer {issued.raw}"}
    client = Client()
    client.force_login(
        make_member(org_a, "vera-viewer", Role.VIEWER), backend="django.contrib.auth.backends.ModelBackend"
    )
    client.get("/portal/")  # sets the CSRF cookie
    headers["viewer_session"] = {
        # werkzeug's client (schemathesis' WSGI transport) sets the Cookie header from its own jar.
        "cookies": {name: morsel.value for name, morsel in client.cookies.items()},
        "X-CSRFToken": client.cookies["csrftoken"].value,
    }
    return org_a, headers


def _call(case, caller: dict, checks):
    """Send the case as that caller, with REMOTE_ADDR as every WSGI server sets it (the rate
    limits key on it; werkzeug's client leaves it out), and check the answer."""
    headers = dict(caller)
    cookies = headers.pop("cookies", None)
    if cookies and case.headers:
        # A viewer's session: no Authorization header generated from the schema's token scheme.
        case.headers = {
            name: value for name, value in case.headers.items() if name.lower() != "authorization"
        }
    return case.call_and_validate(
        headers=headers, cookies=cookies, checks=checks, environ_base={"REMOTE_ADDR": "203.0.113.7"}
    )


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_without_server_errors_and_as_the_schema_says(case, callers):
    """Each generated request is sent by each of the three callers."""
    tenant, headers_by_caller = callers
    if case.path_parameters and "tenant_id" in case.path_parameters:
        case.path_parameters["tenant_id"] = tenant.microsoft_tenant_id  # the callers' own organization
    for caller in headers_by_caller.values():
        _call(case, caller, CHECKS)


def test_the_callers_are_what_they_claim(callers):
    """The fixture itself: each caller reads its organization (so the fuzzing above is not all 401s)."""
    tenant, headers_by_caller = callers
    case = schema["/api/v1/tenants/{tenant_id}/"]["GET"].Case(
        path_parameters={"tenant_id": tenant.microsoft_tenant_id}
    )
    for name, caller in headers_by_caller.items():
        response = _call(case, caller, [not_a_server_error])
        assert response.status_code == 200, (name, response.text)


# --- the schema's `time` and `uri` fields against real answers (issue 12, item 9) ---------------
# Plain tests (not generated): rows whose fields the fuzzing above rarely reaches.


@pytest.fixture
def rows(callers):
    """Organization A's endpoint with SMS settings (quiet hours) and a record without a launch URL."""
    from sms.models import SmsSettings

    tenant, _ = callers
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.get()
        SmsSettings.objects.create(tenant=tenant, endpoint=endpoint)
        IntegrationRecord.objects.create(
            tenant=tenant, endpoint=endpoint, kind=RecordKind.VENDOR_SETUP, config_version=1, launch_url=""
        )
    return endpoint


@pytest.mark.parametrize(
    "path, parameters",
    [
        ("/api/v1/tenants/{tenant_id}/sms/settings/{endpoint_pk}/", {"endpoint_pk": "endpoint"}),
        ("/api/v1/tenants/{tenant_id}/integration-records/", {}),
    ],
)
def test_the_answers_match_the_schemas_formats(callers, rows, path, parameters):
    """Quiet hours are sent as "21:00:00" (no RFC 3339 `time`), an unset launch URL as "" (no `uri`):
    the schema says so, and schemathesis' response validation (with formats) agrees."""
    tenant, headers_by_caller = callers
    path_parameters = {"tenant_id": tenant.microsoft_tenant_id}
    path_parameters.update({name: rows.pk for name in parameters})
    case = schema[path]["GET"].Case(path_parameters=path_parameters)
    response = _call(
        case,
        headers_by_caller["read_token"],
        [not_a_server_error, status_code_conformance, response_schema_conformance],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    if "integration" in path:
        assert body["results"][0]["launch_url"] == ""
    else:
        assert body["quiet_hours_start"] == "21:00:00"
