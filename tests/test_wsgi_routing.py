"""connector.wsgi: one plain Django WSGI application; the feed goes through the same middleware as every page."""

from __future__ import annotations

import io

import hl7
import pytest
import time_machine
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import reverse

from connector.wsgi import application
from sms.models import Appointment
from tenants.scoping import tenant_scope
from tests.conftest import ORG_A_TID
from tests.support.hl7_feed import fixture, make_certificate, make_key, pem, ready_endpoint, sign

pytestmark = pytest.mark.django_db


def call(path: str, *, method: str = "GET", body: bytes = b"", headers: dict | None = None):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "x-application/hl7-v2+er7",
        **(headers or {}),
    }
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(response_headers)

    # As Django's test client does: the test's transaction must survive the request's end.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        answer["body"] = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer


def test_a_signed_message_posted_to_the_wsgi_application_is_applied(org_a):
    from sms.services.certificates import certificate_upload

    key = make_key("rsa2048")
    certificate_upload(tenant=org_a, environment="test", data=pem(make_certificate(key)), uploaded_by=None)
    ready_endpoint(org_a)
    body = fixture("epic_siu_s12_v251.hl7")

    with time_machine.travel("2027-01-05 14:31Z", tick=False):
        answer = call(
            f"/sms/ingest/{ORG_A_TID}/test/",
            method="POST",
            body=body,
            headers={"HTTP_X_HL7_SIGNATURE": sign(body, key)},
        )

    assert answer["status"] == 200
    assert str(hl7.parse(answer["body"].decode()).segment("MSA")(1)) == "AA"
    assert answer["headers"]["X-Request-ID"]
    assert answer["headers"]["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in answer["headers"]  # a machine gets no session
    with tenant_scope(org_a):
        assert Appointment.objects.count() == 1


def test_feed_errors_keep_their_answers(org_a):
    assert call(f"/sms/ingest/{ORG_A_TID}/test/")["status"] == 405  # POST only
    unknown = call("/sms/ingest/00000000-0000-4000-8000-000000000000/test/", method="POST", body=b"MSH|")
    assert unknown["status"] == 404
    assert b"unknown ingest URL" in unknown["body"]


def test_other_pages_go_through_the_full_stack(org_a):
    answer = call(reverse("tenants:sign-in"))

    assert answer["status"] == 200
    assert "Cookie" in answer["headers"]["Vary"]  # the session and sign-in middleware ran
    assert answer["headers"]["X-Frame-Options"] == "DENY"  # and the clickjacking one
