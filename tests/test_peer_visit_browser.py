"""A whole visit against the third-party SMART peer, in headless Chromium, over real HTTP.

The peer (smart-launcher-v2 in front of Medplum, ../shared/peers) is the EHR.
The clinician's browser opens what the EHR's button opens for Encounter/enc1:
the connector's /launch/provider with the peer's `iss` and launch code; the
peer authorizes (the connector a confidential-asymmetric client whose
private_key_jwt the peer checks against the live server's JWKS) and the
connector finds Appointment/appt1 through the encounter, reads its times and
makes the visit. The patient's browser comes in by the portal launch to the
same visit: device test, lobby, admitted by the clinician, both in the demo
meeting, both leave. Then the write-back is read straight from the peer's FHIR
server: the Encounter finished with its period, the Appointment fulfilled, a
Communication for each connect and disconnect about the patient and encounter.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from connector.models import EventKind, FhirEndpoint, ParticipantRole, WriteBack
from connector.write_back_sender import IDENTIFIER_SYSTEM
from tenants.models import Role
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import make_member
from tests.support.smart_peer import DEFAULT_SCRIPT
from tests.test_ehr_launch_browser import (  # noqa: F401 - media_browser and new_page are fixtures
    event_kinds,
    eventually,
    media_browser,
    new_page,
    query,
    record_navigations,
)
from tests.test_peer_launch import launch, origin, peer_endpoint, the_visit  # noqa: F401 - origin: fixture

pytestmark = [pytest.mark.browser, pytest.mark.peer, pytest.mark.django_db(transaction=True)]

CLINICIAN_USERNAME = "demo-peer-clinician"
SEED = DEFAULT_SCRIPT.parent / "medplum-fhir" / "seed" / "bundle.json"


@pytest.fixture(autouse=True)
def _seeded_before_and_after(smart_peer):
    """This test writes to the peer's enc1 and appt1: start from the seed, and leave the seed
    behind for the tests that read it (tests/test_smart_peer.py)."""
    reset_seed(smart_peer)
    yield
    reset_seed(smart_peer)


def reset_seed(smart_peer) -> None:
    """Encounter/enc1 and Appointment/appt1 as seeded: a run before this one wrote to them."""
    bundle = json.loads(SEED.read_text())
    for entry in bundle["entry"]:
        resource = copy.deepcopy(entry["resource"])
        if resource["resourceType"] in ("Encounter", "Appointment"):
            smart_peer.put(resource)


def test_a_visit_from_the_peers_ehr_launch_to_the_write_back_on_its_fhir_server(
    smart_peer,
    origin,  # noqa: F811
    org_a,
    new_page,  # noqa: F811
):
    reset_seed(smart_peer)
    endpoint = peer_endpoint(org_a, smart_peer, origin)
    with tenant_scope(org_a):
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(write_back_enabled=True)
        endpoint.refresh_from_db()
    make_member(org_a, CLINICIAN_USERNAME, Role.VIEWER)

    # --- The clinician: the EHR's button -> /launch/provider -> the peer's authorize -> /launch/callback.
    clinician = new_page()
    hops = record_navigations(clinician)
    clinician.goto(launch(smart_peer, origin, endpoint, provider="dr1"))
    clinician.wait_for_url(f"{origin}/launch/link/**")
    assert hops[0] == "/launch/provider" and hops[-2:] == ["/launch/callback", urlsplit(clinician.url).path]
    assert any(hop.endswith("/auth/authorize") for hop in hops)  # the peer's, not the sandbox's
    expect(clinician.get_by_role("heading", name="One-time sign-in")).to_be_visible()
    expect(clinician.get_by_role("link", name="Setup")).to_have_count(0)  # no portal navigation in a visit
    clinician.get_by_role("button", name=f"Sign in as {CLINICIAN_USERNAME}").click()
    clinician.wait_for_url(f"{origin}/visit/demo-meeting/**")
    meeting_path = urlsplit(clinician.url).path
    assert query(clinician.url)["role"] == ParticipantRole.CLINICIAN
    expect(clinician.locator("#meeting-participants")).to_contain_text("Clinician (you)")

    # The visit is appt1's, found through enc1, with appt1's times.
    visit = the_visit(org_a)
    assert (visit.appointment_id, visit.fhir_appointment_id, visit.encounter_id) == ("appt1", "appt1", "enc1")
    assert visit.scheduled_start == datetime(2030, 1, 15, 10, 0, tzinfo=UTC)
    assert visit.scheduled_end == datetime(2030, 1, 15, 10, 30, tzinfo=UTC)

    # --- The patient, in another browser: the portal launch into the same visit, then the device test.
    patient = new_page()
    patient.goto(launch(smart_peer, origin, endpoint, role="patient"))
    patient.wait_for_url(f"{origin}/join/**")
    join_path = urlsplit(patient.url).path
    expect(patient.locator("#check-connection")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Start the check").click()
    expect(patient.locator("#check-camera")).to_have_attribute("data-outcome", "ok")
    expect(patient.locator("#check-microphone")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Play a test sound").click()
    patient.get_by_role("button", name="I heard it").click()
    patient.get_by_role("button", name="Continue to the waiting room").click()

    # --- The lobby, with appt1's time in the clinic's time zone; the clinician admits.
    patient.wait_for_url(f"{origin}{join_path}lobby/")
    expect(patient.locator("#lobby-scheduled")).to_contain_text("15 Jan 2030, 04:00–04:30 CST")
    expect(patient.locator("#lobby-state")).to_have_attribute("data-state", "waiting_for_admission")
    waiting = clinician.locator('#meeting-console [data-list="in_lobby"] li', has_text="Patient")
    waiting.get_by_role("button", name="Admit").click()
    patient.wait_for_url(f"{origin}/visit/demo-meeting/**")
    assert urlsplit(patient.url).path == meeting_path  # the same meeting: one visit for appt1
    expect(patient.locator("#meeting-participants li")).to_have_count(2)
    eventually(lambda: the_visit(org_a).state == "in_progress")

    # --- Both leave: the visit is completed.
    patient.get_by_role("button", name="Leave").click()
    expect(clinician.locator("#meeting-participants li")).to_have_count(1)
    clinician.get_by_role("button", name="Leave").click()
    eventually(lambda: the_visit(org_a).state == "completed")
    assert sorted(set(event_kinds(visit))) == sorted(
        {
            (EventKind.DEVICE_TEST, ParticipantRole.PATIENT),
            (EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT),
            (EventKind.ADMITTED, ParticipantRole.PATIENT),
            (EventKind.JOINED, ParticipantRole.CLINICIAN),
            (EventKind.JOINED, ParticipantRole.PATIENT),
            (EventKind.LEFT, ParticipantRole.CLINICIAN),
            (EventKind.LEFT, ParticipantRole.PATIENT),
        }
    )

    # --- The write-back, read straight from the peer's FHIR server.
    def all_sent() -> bool:
        """every write-back sent, the appointment's `fulfilled` included

        The departure's write-backs are queued one after another, each sent as soon as it
        commits: "all sent" alone can be true between the Encounter's end and the
        Appointment's `fulfilled` being queued.
        """
        with all_tenants():
            states = set(WriteBack.objects.values_list("state", flat=True))
            fulfilled = WriteBack.objects.filter(
                kind=WriteBack.Kind.APPOINTMENT_STATUS, payload__status="fulfilled"
            ).exists()
        return fulfilled and states == {"sent"}

    eventually(all_sent)
    encounter = smart_peer.read("Encounter/enc1")
    assert encounter["status"] == "finished"
    assert encounter["period"]["start"] and encounter["period"]["end"]
    assert smart_peer.read("Appointment/appt1")["status"] == "fulfilled"
    with all_tenants():
        keys = list(
            WriteBack.objects.filter(
                kind__in=["participant_connected", "participant_disconnected", "device_test"]
            ).values_list("dedupe_key", flat=True)
        )
    assert len(keys) >= 5  # device test, two connects, two disconnects
    for key in keys:
        [communication] = smart_peer.search("Communication", identifier=f"{IDENTIFIER_SYSTEM}|{key}")
        assert communication["subject"]["reference"] == "Patient/p1"
        assert communication["encounter"]["reference"] == "Encounter/enc1"
