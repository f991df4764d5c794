"""From the sandbox EHR's "start virtual visit" buttons to the demo meeting, in headless Chromium.

Everything runs over real HTTP against live_server, with the sandbox EHR as the
EHR. The clinician presses "Start virtual visit (clinician)": the connector's
/launch/provider sends the browser to the sandbox's authorize endpoint, which
(an EHR launch: the user is known) sends it straight back to /launch/callback.
At the clinician's first launch the connector asks for its one-time sign-in
(the demo sign-in here), then opens the demo meeting as the clinician
(organizer), whose page embeds the lobby. The patient presses "Join virtual
visit (patient portal)" in another browser: /launch/patient ... /join/<token>/
(device test), the lobby; the clinician admits; the patient is in the meeting
as a guest of it. A later launch by the same clinician goes straight to the
meeting.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from connector.models import (
    ClinicianLink,
    EndpointStatus,
    EventKind,
    FhirEndpoint,
    LaunchState,
    Meeting,
    ParticipantRole,
    Visit,
    VisitEvent,
)
from connector.sandbox_ehr.seed import seed_sandbox_ehr
from connector.services.endpoints import endpoint_create, endpoint_validate
from tenants.models import Role
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import CHROMIUM_ARGS, CHROMIUM_PATH, make_member
from tests.support.browser import pages_from
from tests.support.sandbox import move_appointment_to_now

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
APPOINTMENT = "appt-1001"  # Dana Smith (Practitioner/pract-smith) sees Alex (Patient/pat-alex)
CLINICIAN_USERNAME = "demo-clinician-org-a"


@pytest.fixture(scope="module")
def media_browser(browser: Browser) -> Iterator[Browser]:
    """A Chromium with fake camera and microphone (granted without a prompt), from the shared Playwright."""
    launched = browser.browser_type.launch(executable_path=CHROMIUM_PATH, args=[*CHROMIUM_ARGS, *MEDIA_ARGS])
    yield launched
    launched.close()


@pytest.fixture
def new_page(media_browser: Browser) -> Iterator[Callable[[], Page]]:
    """new_page() -> a page in its own browser context: its own cookies, as another person's browser."""
    yield from pages_from(media_browser, timeout_ms=15_000)


@pytest.fixture
def origin(settings, live_server, org_a) -> str:
    """The live server with the sandbox EHR seeded, the demo meetings and sign-in on, and org A's
    (Epic) endpoint on the sandbox's R4 server, validated and approved."""
    settings.SANDBOX_EHR = True
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.DEMO_SIGN_IN = True
    seed_sandbox_ehr()
    move_appointment_to_now(APPOINTMENT)
    with tenant_scope(org_a):
        endpoint = endpoint_validate(
            endpoint=endpoint_create(
                tenant=org_a,
                base_url=f"{live_server.url}/sandbox-ehr/fhir/r4",
                environment="test",
                label="Virtual clinic",
            )
        )
        # Epic: the analyst's approval in the EHR is the setup wizard's business (test_setup_wizard_browser).
        assert endpoint.status == EndpointStatus.AWAITING_APPROVAL
        FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.APPROVED)
        endpoint.refresh_from_db()
    assert endpoint.is_usable
    return live_server.url


def record_navigations(page: Page) -> list[str]:
    """The paths the page's main frame is sent to, redirects included, in order."""
    paths: list[str] = []

    def seen(request: Request) -> None:
        if request.is_navigation_request() and request.frame == page.main_frame:
            paths.append(urlsplit(request.url).path)

    page.on("request", seen)
    return paths


def press(page: Page, origin: str, button: str) -> None:
    """Open the sandbox EHR's list of the day's visits and press a button on the appointment's row."""
    page.goto(f"{origin}/sandbox-ehr/")
    row = page.locator("tbody tr").filter(
        has=page.locator(f'input[name="appointment"][value="{APPOINTMENT}"]')
    )
    row.get_by_role("button", name=button).click()


def eventually(check: Callable[[], object], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


def the_visit() -> Visit:
    with all_tenants():
        return Visit.objects.select_related("meeting").get()


def event_kinds(visit: Visit) -> list[tuple[str, str]]:
    with all_tenants():
        return sorted(VisitEvent.objects.filter(visit=visit).values_list("kind", "role"))


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_clinician_and_patient_launch_from_the_ehr_into_the_demo_meeting(origin, org_a, new_page):
    clinician_user = make_member(org_a, CLINICIAN_USERNAME, Role.VIEWER)

    # --- The clinician's first launch: EHR -> connector -> EHR authorize -> callback -> one-time sign-in.
    clinician = new_page()
    clinician_hops = record_navigations(clinician)
    press(clinician, origin, "Start virtual visit (clinician)")
    clinician.wait_for_url(f"{origin}/launch/link/**")
    link_path = urlsplit(clinician.url).path
    assert clinician_hops == [
        "/sandbox-ehr/",
        "/sandbox-ehr/launch/",
        "/launch/provider",
        "/sandbox-ehr/oauth2/authorize",  # an EHR launch: no sign-in at the EHR, straight back
        "/launch/callback",
        link_path,
    ]
    expect(clinician.get_by_role("heading", name="One-time sign-in")).to_be_visible()
    expect(clinician.locator("#clinician-link")).to_contain_text(org_a.name)
    expect(clinician.get_by_role("link", name="Setup")).to_have_count(0)  # no portal navigation in a visit
    clinician.get_by_role("button", name=f"Sign in as {CLINICIAN_USERNAME}").click()

    # --- Back from the sign-in, on the demo meeting as the clinician (the organizer).
    clinician.wait_for_url(f"{origin}/visit/demo-meeting/**")
    meeting_path = urlsplit(clinician.url).path
    assert clinician_hops[6:] == ["/sign-in/demo/", link_path, meeting_path]
    first_seat = query(clinician.url)
    assert first_seat["role"] == ParticipantRole.CLINICIAN
    expect(clinician.locator("#meeting-participants")).to_contain_text("Clinician (you)")
    expect(clinician.locator("#meeting-console")).to_contain_text("Nobody is waiting.")
    console_link = clinician.get_by_role("link", name="Open the visit's status page")
    expect(console_link).to_have_attribute(
        "href", re.compile(rf"^{re.escape(origin)}/visit/{the_visit().public_id}/console/\?t=[^&]+$")
    )

    visit = the_visit()
    assert visit.appointment_id == APPOINTMENT
    assert visit.conference_id == "CONF-1001" and visit.encounter_id == "enc-1001"
    assert visit.primary_clinician == clinician_user
    assert visit.primary_clinician_ehr_id == f"{origin}/sandbox-ehr/fhir/r4/Practitioner/pract-smith"
    assert meeting_path == f"/visit/demo-meeting/{visit.meeting.meeting_id}/"
    with tenant_scope(org_a):
        [link] = ClinicianLink.objects.all()
    assert link.user == clinician_user and link.fhir_user == visit.primary_clinician_ehr_id

    # --- The patient, in another browser: portal button -> connector -> EHR -> callback -> device test.
    patient = new_page()
    patient_hops = record_navigations(patient)
    press(patient, origin, "Join virtual visit (patient portal)")
    patient.wait_for_url(f"{origin}/join/**")
    join_path = urlsplit(patient.url).path
    assert patient_hops == [
        "/sandbox-ehr/",
        "/sandbox-ehr/launch/",
        "/launch/patient",
        "/sandbox-ehr/oauth2/authorize",
        "/launch/callback",
        join_path,
    ]
    expect(patient.locator("#check-connection")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Start the check").click()
    expect(patient.locator("#check-camera")).to_have_attribute("data-outcome", "ok")
    expect(patient.locator("#check-microphone")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Play a test sound").click()
    patient.get_by_role("button", name="I heard it").click()
    patient.get_by_role("button", name="Continue to the waiting room").click()

    # --- The lobby: the clinician is in the meeting, so the patient waits to be admitted.
    patient.wait_for_url(f"{origin}{join_path}lobby/")
    expect(patient.locator("#lobby-state")).to_have_attribute("data-state", "waiting_for_admission")
    waiting = clinician.locator('#meeting-console [data-list="in_lobby"] li', has_text="Patient")
    waiting.get_by_role("button", name="Admit").click()

    # --- Admitted: the patient is in the same meeting, as a guest of it (no organizer panel).
    patient.wait_for_url(f"{origin}/visit/demo-meeting/**")
    assert urlsplit(patient.url).path == meeting_path
    assert query(patient.url)["role"] == ParticipantRole.PATIENT
    expect(patient.locator("#meeting-participants li")).to_have_count(2)
    expect(patient.locator("#meeting-participants")).to_contain_text("Patient (you)")
    expect(patient.locator("#meeting-console")).to_have_count(0)
    expect(clinician.locator("#meeting-participants li")).to_have_count(2)
    expect(clinician.locator('#meeting-console [data-list="connected"]')).to_contain_text("Patient")

    def in_progress() -> bool:
        """joined x2 recorded and the visit in progress"""
        return event_kinds(visit).count((EventKind.JOINED, ParticipantRole.PATIENT)) == 1 and (
            the_visit().state == "in_progress"
        )

    eventually(in_progress)
    with all_tenants():
        assert Visit.objects.count() == 1
        assert Meeting.objects.count() == 1
    assert event_kinds(visit) == sorted(
        [
            (EventKind.DEVICE_TEST, ParticipantRole.PATIENT),
            (EventKind.LOBBY_ENTERED, ParticipantRole.PATIENT),
            (EventKind.ADMITTED, ParticipantRole.PATIENT),
            (EventKind.JOINED, ParticipantRole.CLINICIAN),
            (EventKind.JOINED, ParticipantRole.PATIENT),
        ]
    )
    assert the_visit().started_at is not None

    # --- Both leave: the visit is completed.
    patient.get_by_role("button", name="Leave").click()
    expect(clinician.locator("#meeting-participants li")).to_have_count(1)
    clinician.get_by_role("button", name="Leave").click()
    eventually(lambda: the_visit().state == "completed")
    done = the_visit()
    assert done.ended_at and done.lobby_wait_seconds is not None and done.peak_attendees == 2
    assert event_kinds(visit).count((EventKind.LEFT, ParticipantRole.CLINICIAN)) == 1
    assert event_kinds(visit).count((EventKind.LEFT, ParticipantRole.PATIENT)) == 1

    # --- The clinician's next launch (a fresh browser, no session): straight to the meeting.
    again = new_page()
    again_hops = record_navigations(again)
    press(again, origin, "Start virtual visit (clinician)")
    again.wait_for_url(f"{origin}/visit/demo-meeting/**")
    assert again_hops == [
        "/sandbox-ehr/",
        "/sandbox-ehr/launch/",
        "/launch/provider",
        "/sandbox-ehr/oauth2/authorize",
        "/launch/callback",
        meeting_path,  # the same meeting; no /launch/link/ sign-in page
    ]
    assert query(again.url)["role"] == ParticipantRole.CLINICIAN
    assert query(again.url)["p"] == first_seat["p"]  # the same clinician in the events
    expect(again.locator("#meeting-participants")).to_contain_text("Clinician (you)")
    eventually(lambda: event_kinds(visit).count((EventKind.JOINED, ParticipantRole.CLINICIAN)) == 2)
    again.get_by_role("button", name="Leave").click()
    eventually(lambda: event_kinds(visit).count((EventKind.LEFT, ParticipantRole.CLINICIAN)) == 2)
    assert the_visit().state == "completed"
    with all_tenants():
        assert Visit.objects.count() == 1
        assert Meeting.objects.count() == 1
        assert ClinicianLink.objects.count() == 1
        assert LaunchState.objects.filter(used_at__isnull=True).count() == 0


def test_a_console_launch_record_opens_the_visits_console_after_the_one_time_sign_in(
    origin, org_a, new_page, settings
):
    """For Teams and Jitsi, whose pages cannot show the lobby: a second launch record, ?view=console."""
    settings.SANDBOX_EHR_PROVIDER_LAUNCH_URL = "/launch/provider?view=console"
    make_member(org_a, CLINICIAN_USERNAME, Role.VIEWER)
    clinician = new_page()
    press(clinician, origin, "Start virtual visit (clinician)")
    clinician.wait_for_url(f"{origin}/launch/link/**")
    expect(clinician.get_by_role("link", name="Setup")).to_have_count(0)  # no portal navigation in a visit
    clinician.get_by_role("button", name=f"Sign in as {CLINICIAN_USERNAME}").click()

    # The view survived the EHR round trip and the sign-in: the console, not the meeting.
    clinician.wait_for_url(f"{origin}/visit/*/console/?t=*")
    visit = the_visit()
    assert urlsplit(clinician.url).path == f"/visit/{visit.public_id}/console/"
    expect(clinician.locator("#console")).to_contain_text("Virtual visit")
    expect(clinician.locator(".live-panel")).to_contain_text("Nobody is waiting.")
    join = clinician.locator("#clinician-join")
    expect(join).to_have_attribute("href", re.compile(rf"^{re.escape(origin)}/visit/demo-meeting/"))
    join.click()
    clinician.wait_for_url(f"{origin}/visit/demo-meeting/{visit.meeting.meeting_id}/?*")
    assert query(clinician.url)["role"] == ParticipantRole.CLINICIAN
    expect(clinician.locator("#meeting-participants")).to_contain_text("Clinician (you)")
    with all_tenants():
        assert Meeting.objects.count() == 1
