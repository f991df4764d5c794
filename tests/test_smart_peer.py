"""The third-party SMART peer answers as its README says (so the peer tests rest on facts)."""

from __future__ import annotations

import pytest
import requests

from connector.endpoint_checks import check_fhir_endpoint

pytestmark = pytest.mark.peer


def test_the_peer_serves_the_seeded_appointment_with_its_filler_identifier(smart_peer):
    from tests.test_peer_visit_browser import reset_seed

    reset_seed(smart_peer)  # other peer tests write to appt1 (write-back); the seed is what is checked here
    appointment = smart_peer.read("Appointment/appt1")
    assert appointment["status"] == "booked"
    assert {"system": "urn:filler", "value": "36996"} in [
        {"system": i.get("system"), "value": i.get("value")} for i in appointment["identifier"]
    ]
    encounter = smart_peer.read("Encounter/enc1")
    assert encounter["appointment"][0]["reference"] == "Appointment/appt1"


def test_an_ehr_launch_from_the_peer_carries_iss_and_launch_only(smart_peer):
    response = requests.get(
        f"{smart_peer.launcher_url}/launcher",
        params={
            "launch_uri": "http://127.0.0.1:9/launch/provider",
            "fhir_ver": "4",
            "patient": "p1",
            "provider": "dr1",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1:9/launch/provider?")
    assert "iss=" in location and "launch=" in location and "appointment" not in location


def test_the_connector_validates_the_peer_as_a_smart_server(smart_peer, settings):
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]
    result = check_fhir_endpoint(smart_peer.fhir_base)
    assert result.ok, result.message
