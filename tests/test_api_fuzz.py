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

import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import Client
from hypothesis import HealthCheck, settings

from connector.models import FhirEndpoint
from tenants.models import Role
from tenants.scoping import tenant_scope
from tenants.services import api_token_create
from tests.conftest import make_member

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))


@pytest.fixture
def api_schema(settings):
    settings.API_DOCS_PUBLIC = True
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(params=["read_write_token", "read_token", "viewer_session"])
def caller(request, org_a, monkeypatch):
    """(tenant, headers) for one kind of caller of organization A, which has one FHIR endpoint."""
    # Creating or validating an endpoint queues its validation: nothing here should reach out.
    monkeypatch.setattr("connector.background.async_task", lambda *args, **kwargs: None)
    tenant = org_a
    make_member(tenant, "alice-admin", Role.ADMINISTRATOR)
    with tenant_scope(tenant):
        FhirEndpoint.objects.create(
            tenant=tenant,
            label="Cardiology",
            environment="test",
            base_url="https://fhir.example.org/r4",
            time_zone="UTC",
        )
    if request.param == "viewer_session":
        client = Client()
        client.force_login(
            make_member(tenant, "vera-viewer", Role.VIEWER),
            backend="django.contrib.auth.backends.ModelBackend",
        )
        client.get("/portal/")  # sets the CSRF cookie
        cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
        headers = {"Cookie": cookies, "X-CSRFToken": client.cookies["csrftoken"].value}
    else:
        scope = "read_write" if request.param == "read_write_token" else "read"
        issued = api_token_create(tenant=tenant, name=f"fuzz {scope}", scope=scope, created_by=None)
        headers = {"Authorization": f"Bearer {issued.raw}"}
    return tenant, headers


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_without_server_errors_and_as_the_schema_says(case, caller):
    tenant, headers = caller
    if case.path_parameters and "tenant_id" in case.path_parameters:
        case.path_parameters["tenant_id"] = tenant.pk  # the caller's own organization
    case.call_and_validate(headers=headers)


def test_the_callers_are_what_they_claim(caller):
    """The fixture itself: each caller reads its organization (so the fuzzing above is not all 401s)."""
    tenant, headers = caller
    client = Client()
    django_headers = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    response = client.get(f"/api/v1/tenants/{tenant.pk}/", **django_headers)
    assert response.status_code == 200, response.content
