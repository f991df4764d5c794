"""Launch and link error pages speak to their reader (issue 10, item 8).

A patient (or anyone the connector cannot place) gets what to do and a code for
the care team, never the administrator's wording; a clinician gets the cause
and the fix for their administrator with the request id; an organization's
administrator testing a patient launch sees both.
"""

from __future__ import annotations

import html
import re

import pytest

from tests.conftest import signed_in

pytestmark = pytest.mark.django_db

UNKNOWN_EHR = "https://ehr.unknown.example/fhir/r4"
ADMINISTRATOR_WORDS = (
    "integration",
    "EHR",
    "FHIR",
    "administrator",
    "configured",
    "endpoint",
    "scope",
    "client",
)


def visible(response) -> str:
    """The page's own words (inside <main>), without markup."""
    main = response.content.decode().split("<main>", 1)[1].split("</main>", 1)[0]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main)))


def assert_patient_words(response) -> None:
    text = visible(response)
    for word in ADMINISTRATOR_WORDS:
        assert word not in text, word
    assert response["X-Request-ID"] in response.content.decode()


def test_a_patient_launch_from_an_unknown_ehr_tells_the_patient_what_to_do_and_nothing_else(client):
    response = client.get("/launch/patient", {"iss": UNKNOWN_EHR, "launch": "abc"})
    assert response.status_code == 404
    assert "Your visit could not open" in visible(response)
    assert response["X-Request-ID"] in visible(response)  # the code for the care team
    assert_patient_words(response)


def test_an_administrator_testing_the_patient_launch_also_gets_the_cause_and_the_fix(client, admin_a):
    response = signed_in(client, admin_a).get("/launch/patient", {"iss": UNKNOWN_EHR, "launch": "abc"})
    text = visible(response)
    assert "Your visit could not open" in text
    assert "For your EHR or connector administrator" in text
    assert "This EHR environment is not configured" in text and "matches the EHR's exactly" in text
    assert f"Request id: {response['X-Request-ID']}" in text


def test_a_clinician_gets_the_cause_and_the_fix_with_the_request_id(client):
    response = client.get("/launch/provider", {"iss": UNKNOWN_EHR, "launch": "abc"})
    text = visible(response)
    assert "Not set up yet" in text and "For your EHR or connector administrator" in text
    assert "This EHR environment is not configured" in text
    assert f"Request id: {response['X-Request-ID']}" in text


def test_a_reader_the_connector_cannot_place_gets_neutral_words(client, viewer_a):
    # A callback whose launch is unknown: it could be a patient's.
    response = client.get("/launch/callback", {"state": "not-a-launch", "code": "x"})
    assert response.status_code == 400
    assert "Start it again from the same place" in visible(response)
    assert "already used" not in visible(response)
    assert_patient_words(response)
    # A signed-in member who administers nothing is a reader like any other.
    assert "already used" not in visible(signed_in(client, viewer_a).get("/launch/callback", {"state": "x"}))


def test_an_administrator_reading_the_same_page_gets_the_cause(client, admin_a):
    response = signed_in(client, admin_a).get("/launch/callback", {"state": "not-a-launch", "code": "x"})
    assert "already used, took too long" in visible(response)


def test_a_stale_device_test_link_speaks_to_the_patient(client):
    response = client.get("/device-test", {"token": "no-such-record"})
    assert response.status_code == 404
    text = visible(response)
    assert "This device test link does not work" in text and "ask your care team" in text
    assert_patient_words(response)
