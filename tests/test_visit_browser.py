"""The whole visit loop in headless Chromium with a fake camera and microphone (live_server).

A patient opens the join link, passes the device test and waits in the lobby;
the clinician opens the demo meeting (their organizer link) and admits the
patient from the embedded lobby; the patient lands in the demo meeting. The
visit is in progress while both are there and completed once both have left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.crypto import get_random_string
from playwright.sync_api import Browser, Page, expect

from connector.models import EndpointStatus, EventKind, FhirEndpoint, ParticipantRole, Visit, VisitEvent
from connector.services.visits import join_token_make, join_url_for, participant_id_for
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import CHROMIUM_ARGS, CHROMIUM_PATH
from tests.support.browser import pages_from

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Chromium's fake devices: a test pattern for the camera, a beep for the microphone,
# and permission granted without a prompt.
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def media_browser(browser: Browser) -> Iterator[Browser]:
    """A second Chromium from the shared Playwright session (tests/conftest.py), with fake media devices."""
    launched = browser.browser_type.launch(executable_path=CHROMIUM_PATH, args=[*CHROMIUM_ARGS, *MEDIA_ARGS])
    yield launched
    launched.close()


@pytest.fixture
def new_page(media_browser: Browser) -> Iterator[Callable[[], Page]]:
    """new_page() -> a page in its own browser context (no shared cookies: two people)."""
    yield from pages_from(media_browser, timeout_ms=15_000)


def eventually(check: Callable[[], object], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


def visit_state(visit: Visit) -> str:
    with all_tenants():
        return Visit.objects.get(pk=visit.pk).state


def test_a_patient_is_tested_waits_is_admitted_and_the_visit_completes(
    live_server, settings, org_a, new_page
):
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.PUBLIC_BASE_URL = live_server.url
    with tenant_scope(org_a):
        endpoint = FhirEndpoint.objects.create(
            tenant=org_a,
            base_url="https://fhir.example.org/api/FHIR/R4",
            environment="test",
            label="Virtual clinic",
            time_zone="America/Chicago",
            status=EndpointStatus.VALIDATED,
        )
        start = timezone.now() + timedelta(minutes=10)
        visit = Visit.objects.create(
            tenant=org_a,
            public_id=get_random_string(24),
            endpoint=endpoint,
            appointment_id="csn-1001",
            scheduled_start=start,
            scheduled_end=start + timedelta(minutes=30),
        )
        patient_id = participant_id_for(ParticipantRole.PATIENT, "Patient/e63wRTbPfr1p8UW81d8Seiw3")
        clinician_id = participant_id_for(ParticipantRole.CLINICIAN, "Practitioner/dr-1")
        token = join_token_make(visit=visit, role=ParticipantRole.PATIENT, participant_id=patient_id)
        clinician_url = join_url_for(
            visit=visit, role=ParticipantRole.CLINICIAN, participant_id=clinician_id, display_name="Clinician"
        )

    # The patient: device test.
    patient = new_page()
    patient.goto(f"{live_server.url}/join/{token}/")
    expect(patient.locator("#check-connection")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Start the check").click()
    expect(patient.locator("#check-camera")).to_have_attribute("data-outcome", "ok")
    assert patient.evaluate("document.getElementById('dt-video').videoWidth") > 0
    expect(patient.locator("#check-microphone")).to_have_attribute("data-outcome", "ok")
    assert patient.evaluate("document.getElementById('dt-level').value") >= 0
    patient.get_by_role("button", name="Play a test sound").click()
    patient.get_by_role("button", name="I heard it").click()
    expect(patient.locator("#check-speaker [data-result]")).to_have_text("Works")
    patient.get_by_role("button", name="Continue to the waiting room").click()

    # The patient: lobby.
    patient.wait_for_url(f"{live_server.url}/join/{token}/lobby/")
    expect(patient.locator("#lobby-message")).to_contain_text("has not joined yet")
    with all_tenants():
        [device_test] = VisitEvent.objects.filter(visit=visit, kind=EventKind.DEVICE_TEST)
    assert {k: device_test.data[k] for k in ("camera", "microphone", "speaker")} == {
        "camera": "ok",
        "microphone": "ok",
        "speaker": "ok",
    }
    assert isinstance(device_test.data["connection_ms"], int)

    # The clinician opens the meeting; the lobby is embedded in it.
    clinician = new_page()
    clinician.goto(clinician_url)
    expect(clinician.locator("#meeting-participants")).to_contain_text("Clinician (you)")
    expect(patient.locator("#lobby-state")).to_have_attribute("data-state", "waiting_for_admission")
    expect(patient.locator("#lobby-message")).to_contain_text("Your clinician is here")
    waiting = clinician.locator('.live-panel [data-list="in_lobby"] li', has_text="Patient")
    waiting.get_by_role("button", name="Admit").click()

    # The patient is let in, in the same window, as a guest of the meeting.
    patient.wait_for_url(f"{live_server.url}/visit/demo-meeting/**")
    assert "role=patient" in patient.url
    expect(patient.locator("#meeting-participants li")).to_have_count(2)
    expect(clinician.locator("#meeting-participants li")).to_have_count(2)
    expect(clinician.locator('.live-panel [data-list="connected"]')).to_contain_text("Patient")
    eventually(lambda: visit_state(visit) == "in_progress")

    patient.get_by_role("button", name="Leave").click()
    expect(clinician.locator("#meeting-participants li")).to_have_count(1)
    assert visit_state(visit) == "in_progress"
    clinician.get_by_role("button", name="Leave").click()
    eventually(lambda: visit_state(visit) == "completed")

    with all_tenants():
        done = Visit.objects.get(pk=visit.pk)
        kinds = list(VisitEvent.objects.filter(visit=visit).values_list("kind", "role"))
    assert done.started_at and done.ended_at and done.lobby_wait_seconds is not None
    assert done.peak_attendees == 2
    assert (EventKind.ADMITTED, ParticipantRole.PATIENT) in kinds
    assert kinds.count((EventKind.LEFT, ParticipantRole.PATIENT)) == 1
