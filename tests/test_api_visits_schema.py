"""Schemathesis over the visit endpoints of the OpenAPI schema: generated requests with a read-write
token, a read-only token and a signed-in viewer get no server error and no answer that breaks the
schema. Bounded: a few examples per operation and caller."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from connector.models import EventKind, ParticipantRole
from tests.conftest import ORG_A_TID, make_member
from tests.test_api_visits import make_visit, record

pytestmark = pytest.mark.django_db

VISIT_PATHS = r"/(visits|visit-events|live-status)"
EXAMPLES = 8


def _session_cookie(client, user) -> str:
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client.cookies["sessionid"].value


def test_generated_requests_to_the_visit_endpoints_get_no_server_error_and_match_the_schema(
    org_a, token_client, client
):
    from connector.wsgi import application

    visit = make_visit(org_a, "SCHEMA")
    record(visit, EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT, "p-1")
    record(visit, EventKind.JOINED, ParticipantRole.CLINICIAN, "c-1", 1)
    callers = {
        "read-write token": {"Authorization": f"Bearer {token_client(org_a, 'read_write').issued.raw}"},
        "read token": {"Authorization": f"Bearer {token_client(org_a, 'read').issued.raw}"},
        "viewer": {
            "Cookie": f"sessionid={_session_cookie(client, make_member(org_a, 'vic-viewer', 'viewer'))}"
        },
    }
    # Like Django's test client: the WSGI handler must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/", application).include(path_regex=VISIT_PATHS)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 10
        for operation in operations:
            for headers in callers.values():
                _generate_and_check(operation, headers, visit.public_id)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _generate_and_check(operation, headers: dict, public_id: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        # The real organization and visit, so answers other than 404 are reached too.
        if "tenant_id" in (case.path_parameters or {}):
            case.path_parameters["tenant_id"] = ORG_A_TID
        if "public_id" in (case.path_parameters or {}):
            case.path_parameters["public_id"] = public_id
        case.call_and_validate(
            headers=headers,
            checks=[not_a_server_error, response_schema_conformance],
            # A real server always sets the client address; werkzeug's test client does not.
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )

    check()
