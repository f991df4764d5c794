"""Schemathesis over the webhooks operations of the OpenAPI schema, as a read-write token, a read token
and an administrator: no server error and every answer in its schema (bounded examples per operation)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from connector.wsgi import application
from tenants.services import api_token_create
from tests.conftest import ORG_A_TID


@pytest.fixture
def webhooks_schema(db):
    # Called in-process like Django's test client: the request must not close the test's connection.
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application).include(path_regex="/webhooks")
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def callers(org_a, admin_a, receiver_free):
    from django.test import Client

    from connector.webhooks.services import webhook_endpoint_create
    from tenants.scoping import tenant_scope

    with tenant_scope(org_a):
        webhook_endpoint_create(tenant=org_a, url="https://hooks.example.org/in", event_types=["visit.ended"])
    rw = api_token_create(tenant=org_a, name="rw", scope="read_write", created_by=None).raw
    ro = api_token_create(tenant=org_a, name="ro", scope="read", created_by=None).raw
    client = Client()
    client.force_login(admin_a, backend="django.contrib.auth.backends.ModelBackend")
    session = client.cookies["sessionid"].value
    return [
        {"Authorization": f"Bearer {rw}"},
        {"Authorization": f"Bearer {ro}"},
        {"Cookie": f"sessionid={session}"},
    ]


@pytest.fixture
def receiver_free(settings):
    # Registrations the fuzzer makes are never sent anywhere: deliveries wait on the broker.
    settings.EHR_HTTP_TOTAL_TIMEOUT = 1


def test_webhooks_operations_answer_within_their_schema(webhooks_schema, callers):
    operations = [result.ok() for result in webhooks_schema.get_all_operations()]
    assert len(operations) == 8, [op.label for op in operations]
    statuses: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.path_parameters = {**(case.path_parameters or {}), "tenant_id": ORG_A_TID}
            for headers in callers:
                response = case.call_and_validate(
                    headers=headers,
                    checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
                    # What every WSGI server sets (the sign-in defences count per address).
                    environ_base={"REMOTE_ADDR": "127.0.0.1"},
                )
                statuses.add(response.status_code)

        check()
    # Calls went through: reads answered, bad input refused, read tokens refused writes.
    assert {200, 400, 403} <= statuses, statuses
