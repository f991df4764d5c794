"""The whole walk a new organization takes, in headless Chromium, with a screenshot of every step.

setup (the administrator adds the endpoint and the analysts) -> approval (the EHR
analyst signs in to the EHR and approves) -> launch (the clinician starts the
visit from the sandbox EHR, with the one-time sign-in) -> the patient, on a
390 px wide phone: device test and lobby -> the clinician admits from the
meeting and watches the console -> presence (the patient's browser dies without
Leave: the heartbeat stops and the console drops them) -> leave -> reports ->
members (an invitation, accepted at the invitee's sign-in) -> the support admin.

Everything is real HTTP against live_server with the built-in sandbox EHR (not
the shared peer). Screenshots land in var/screenshots/walk-*.png (ignored by
git; CI keeps them as artifacts) so a reviewer can look without running it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from connector.models import EventKind, FhirEndpoint, Heartbeat, ParticipantRole, Visit, VisitEvent
from connector.sandbox_ehr.seed import seed_sandbox_ehr
from reports.services import rollup_build
from tenants.models import Role
from tenants.scoping import all_tenants, tenant_scope
from tests.conftest import CHROMIUM_ARGS, CHROMIUM_PATH, make_member
from tests.support.browser import pages_from
from tests.support.sandbox import move_appointment_to_now

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
APPOINTMENT = "appt-1001"  # Dana Smith (Practitioner/pract-smith) sees Alex (Patient/pat-alex)
ADMIN = "demo-admin-org-a"
APPROVER = "demo-approver-org-a"
CLINICIAN = "demo-clinician-org-a"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def media_browser(browser: Browser) -> Iterator[Browser]:
    launched = browser.browser_type.launch(executable_path=CHROMIUM_PATH, args=[*CHROMIUM_ARGS, *MEDIA_ARGS])
    yield launched
    launched.close()


@pytest.fixture
def new_page(media_browser: Browser) -> Iterator[Callable[..., Page]]:
    """new_page(**context options) -> a page in its own browser context (another person's browser)."""
    contexts = []

    def make(**options) -> Page:
        maker = pages_from(media_browser, timeout_ms=15_000, **options)
        page_factory = next(maker)
        contexts.append(maker)
        return page_factory()

    yield make
    for maker in contexts:
        next(maker, None)  # closes its context


@pytest.fixture
def origin(settings, live_server) -> str:
    settings.SANDBOX_EHR = True
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    settings.MEETING_BACKEND = "connector.meetings.demo.DemoMeetingBackend"
    settings.DEMO_SIGN_IN = True
    seed_sandbox_ehr()
    move_appointment_to_now(APPOINTMENT)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return live_server.url


class Shots:
    """Numbered full-page screenshots of the walk, one per step."""

    def __init__(self) -> None:
        self.n = 0
        for old in SCREENSHOTS.glob("walk-*.png"):
            old.unlink()

    def __call__(self, page: Page, name: str) -> None:
        self.n += 1
        page.screenshot(path=str(SCREENSHOTS / f"walk-{self.n:02d}-{name}.png"), full_page=True)


def sign_in(page: Page, origin: str, username: str) -> None:
    page.goto(f"{origin}/sign-in/")
    page.get_by_role("button", name=f"Sign in as {username}", exact=True).click()
    page.wait_for_url(f"{origin}/portal/")


def press(page: Page, origin: str, button: str) -> None:
    page.goto(f"{origin}/sandbox-ehr/")
    row = page.locator("tbody tr").filter(
        has=page.locator(f'input[name="appointment"][value="{APPOINTMENT}"]')
    )
    # A script click: the sandbox EHR's table is wider than a phone (it stands in for the patient
    # portal here; its own phone layout is not what this walk checks).
    row.get_by_role("button", name=button).evaluate("button => button.click()")


def eventually(check: Callable[[], object], timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {check.__doc__ or check}")
        time.sleep(0.1)


def fits_the_screen(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def the_visit() -> Visit:
    with all_tenants():
        return Visit.objects.get()


def test_the_walk_from_setup_to_reports_and_admin(origin, new_page, org_a, staff_user):
    make_member(org_a, ADMIN, Role.ADMINISTRATOR)
    make_member(org_a, APPROVER, Role.EHR_APPROVER, ehr_username="ANALYST1")
    make_member(org_a, CLINICIAN, Role.VIEWER)
    base_url = f"{origin}/sandbox-ehr/fhir/r4"
    shot = Shots()

    # --- setup: the administrator adds the endpoint (validated at once) and the analysts --------------
    admin = new_page()
    sign_in(admin, origin, ADMIN)
    shot(admin, "portal-home")
    admin.get_by_role("link", name="Setup", exact=True).click()
    admin.wait_for_url(f"{origin}/portal/setup/configure/")
    form = admin.locator("#add-endpoint")
    form.get_by_label("FHIR base URL", exact=True).fill(base_url)
    form.get_by_label("Test", exact=True).check()
    form.get_by_label("Department or organization", exact=True).fill("Main campus")
    form.get_by_label("Time zone", exact=True).select_option("America/New_York")
    form.get_by_role("button", name="Add and validate").click()
    row = admin.locator("#endpoints tbody tr", has_text="Main campus")
    expect(row.locator(".status")).to_have_text("Awaiting approval")
    admin.locator("#approvers textarea").fill("ANALYST1")
    admin.locator("#approvers").get_by_role("button", name="Save approvers").click()
    expect(admin.locator("ul.messages")).to_contain_text("The approvers were saved.")
    shot(admin, "setup-configured")

    # --- approval: the EHR analyst signs in to the (sandbox) EHR and approves ---------------------------
    analyst = new_page()
    sign_in(analyst, origin, APPROVER)
    analyst.goto(f"{origin}/portal/setup/approve/")
    analyst.get_by_role("button", name="Sign in to the EHR to review").click()
    analyst.wait_for_url(re.compile(re.escape(f"{origin}/sandbox-ehr/oauth2/authorize?")))
    shot(analyst, "approval-ehr-sign-in")
    analyst.locator("button[data-username='ANALYST1']").click()
    analyst.wait_for_url(re.compile(rf"{re.escape(origin)}/portal/setup/approve/\d+/decide/"))
    analyst.locator("#decide").get_by_role("button", name="Approve").click()
    analyst.wait_for_url(f"{origin}/portal/setup/approve/")
    expect(analyst.locator("ul.messages")).to_contain_text("Main campus: Approved.")
    shot(analyst, "approval-approved")
    with tenant_scope(org_a):
        assert FhirEndpoint.objects.get().is_usable

    admin.goto(f"{origin}/portal/setup/review/")
    expect(admin.locator(".endpoint-records")).to_have_count(1)
    shot(admin, "setup-review-records")

    # --- launch: the clinician starts the visit from the EHR; the one-time sign-in is the chooser -------
    clinician = new_page()
    press(clinician, origin, "Start virtual visit (clinician)")
    clinician.wait_for_url(f"{origin}/launch/link/**")
    expect(clinician.get_by_role("heading", name="One-time sign-in")).to_be_visible()
    expect(clinician.locator("header")).not_to_contain_text("Setup")
    expect(clinician.locator('input[type="text"]')).to_have_count(0)  # no name to type
    shot(clinician, "launch-one-time-sign-in")
    clinician.get_by_role("button", name=f"Sign in as {CLINICIAN}", exact=True).click()
    clinician.wait_for_url(f"{origin}/visit/demo-meeting/**")
    expect(clinician.locator("#meeting-participants")).to_contain_text("Clinician (you)")
    expect(clinician.locator("#meeting-status")).to_have_text("You are connected.")
    expect(clinician.locator("header")).not_to_contain_text("API tokens")
    shot(clinician, "meeting-clinician")

    # --- the patient, on a phone 390 px wide: portal button -> device test -> lobby ---------------------
    patient = new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    press(patient, origin, "Join virtual visit (patient portal)")
    patient.wait_for_url(f"{origin}/join/**")
    expect(patient.locator("#check-connection")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Start the check").click()
    expect(patient.locator("#check-camera")).to_have_attribute("data-outcome", "ok")
    expect(patient.locator("#check-microphone")).to_have_attribute("data-outcome", "ok")
    patient.get_by_role("button", name="Play a test sound").click()
    patient.get_by_role("button", name="I heard it").click()
    assert fits_the_screen(patient), "the device test is wider than the phone"
    shot(patient, "patient-390-device-test")
    patient.get_by_role("button", name="Continue to the waiting room").click()
    patient.wait_for_url(f"{origin}/join/**/lobby/")
    expect(patient.locator("#lobby-state")).to_have_attribute("data-state", "waiting_for_admission")
    expect(patient.locator("header")).not_to_contain_text("Setup")
    assert fits_the_screen(patient), "the lobby is wider than the phone"
    shot(patient, "patient-390-lobby")

    # --- the clinician admits from the meeting's waiting room ---------------------------------------------
    waiting = clinician.locator('#meeting-console [data-list="in_lobby"] li', has_text="Patient")
    shot(clinician, "meeting-patient-waiting")
    waiting.get_by_role("button", name="Admit").click()
    patient.wait_for_url(f"{origin}/visit/demo-meeting/**")
    expect(patient.locator("#meeting-participants li")).to_have_count(2)
    expect(patient.locator("#meeting-status")).to_have_text("You are connected.")
    assert fits_the_screen(patient), "the meeting is wider than the phone"
    shot(patient, "patient-390-meeting")
    eventually(lambda: the_visit().state == "in_progress")

    # --- the console: summary and list agree --------------------------------------------------------------
    console_link = clinician.get_by_role("link", name="Open the visit's status page")
    console = new_page()  # the clinician's console, as the EHR frame shows it
    console.goto(console_link.get_attribute("href"))
    panel = console.locator(".live-panel")
    expect(panel.locator("[data-summary]")).to_have_text("2 connected.")
    expect(panel.locator('[data-list="connected"] li')).to_have_count(2)
    expect(console.locator("header")).not_to_contain_text("Setup")
    shot(console, "console-both-connected")

    # --- presence: the patient's phone dies (no Leave, no last beacon); the heartbeat stops --------------
    visit = the_visit()
    # A dead phone sends nothing more: no heartbeat, and no "left" beacon when the page goes.
    patient.evaluate(
        "() => { navigator.sendBeacon = () => true; window.fetch = () => new Promise(() => {}); }"
    )
    patient.close()
    with all_tenants():
        patient_beat = Heartbeat.objects.get(visit=visit, role=ParticipantRole.PATIENT)
        # Time moves on for the patient only: their last heartbeat is now 50 s old.
        Heartbeat.objects.filter(pk=patient_beat.pk).update(
            last_seen_at=timezone.now() - timedelta(seconds=50)
        )
    expect(panel.locator("[data-summary]")).to_have_text("1 connected.")  # the next status poll swept
    expect(panel.locator('[data-list="connected"] li')).to_have_count(1)
    expect(clinician.locator("#meeting-participants li")).to_have_count(1)
    with all_tenants():
        left = VisitEvent.objects.get(visit=visit, kind=EventKind.LEFT, role=ParticipantRole.PATIENT)
    assert left.data == {"reason": "heartbeat_stopped"}
    shot(console, "console-patient-gone")

    # --- the clinician leaves: the visit is completed ------------------------------------------------------
    clinician.get_by_role("button", name="Leave").click()
    eventually(lambda: the_visit().state == "completed")
    expect(panel.locator("[data-visit-state]")).to_have_text("Completed")
    shot(console, "console-completed")

    # --- reports: the nightly roll-up, then the administrator reads it --------------------------------------
    today = timezone.localdate()
    rollup_build(tenant=org_a, first=today - timedelta(days=1), last=today)
    admin.get_by_role("link", name="Reports").first.click()
    admin.wait_for_url(f"{origin}/portal/reports/")
    shot(admin, "reports-index")
    admin.locator('a[data-report="virtual-appointments"]').first.click()
    expect(admin.locator("#report-table")).to_contain_text(APPOINTMENT)
    shot(admin, "reports-virtual-appointments")

    # --- members: the administrator invites a colleague, who signs in (the demo chooser) and lands in it ---
    admin.get_by_role("link", name="Members", exact=True).click()
    admin.wait_for_url(f"{origin}/portal/members/")
    invite = admin.locator("#invite-member")
    invite.get_by_label("Work e-mail address").fill("nora@org-a.example")
    invite.get_by_label("Role").select_option("viewer")
    invite.get_by_role("button", name="Send invitation").click()
    expect(admin.locator("ul.messages")).to_contain_text("nora@org-a.example is invited as Viewer")
    expect(admin.locator('#invites [data-invite="nora@org-a.example"]')).to_have_count(1)
    shot(admin, "members-invited")
    invitee = new_page()
    invitee.goto(f"{origin}/sign-in/")
    invitee.get_by_role("button", name="Sign in as nora@org-a.example").click()
    invitee.wait_for_url(f"{origin}/portal/")
    expect(invitee.locator("main")).to_contain_text("Org A Health")
    shot(invitee, "members-invitee-landed")
    admin.reload()
    expect(admin.locator('#member-list [data-member="demo-nora"]')).to_have_count(1)

    # --- the support admin ---------------------------------------------------------------------------------
    support = new_page()
    support.goto(f"{origin}/admin/login/")
    support.get_by_label("Username").fill(staff_user.username)
    support.get_by_label("Password").fill("a-strong-pass-phrase")
    support.get_by_role("button", name="Log in").click()
    support.goto(f"{origin}/admin/connector/visit/")
    expect(support.locator("#result_list")).to_contain_text(visit.public_id[:8])
    shot(support, "admin-visits")

    assert len(list(SCREENSHOTS.glob("walk-*.png"))) == shot.n >= 17
