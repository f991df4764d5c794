"""A newcomer's small things, in Chromium (issue 14, item 9).

The device test says when every check passed; a new API token has a Copy button that
really copies; times show in the reader's own zone, with the zone named; the sandbox
EHR fits a 390 px phone; patient pages show no request id; every page has a favicon.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.crypto import get_random_string
from playwright.sync_api import Browser, expect

from connector.models import EndpointStatus, FhirEndpoint, ParticipantRole, RecordKind, Visit
from connector.services.records import integration_records_produce
from connector.services.visits import join_token_make, participant_id_for
from tenants.models import Role
from tenants.scoping import tenant_scope
from tests.conftest import CHROMIUM_ARGS, CHROMIUM_PATH, make_member
from tests.support.browser import close_contexts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def media_browser(browser: Browser) -> Iterator[Browser]:
    launched = browser.browser_type.launch(executable_path=CHROMIUM_PATH, args=[*CHROMIUM_ARGS, *MEDIA_ARGS])
    yield launched
    launched.close()


@pytest.fixture
def endpoint(org_a) -> FhirEndpoint:
    with tenant_scope(org_a):
        return FhirEndpoint.objects.create(
            tenant=org_a,
            base_url="https://fhir.example.org/api/FHIR/R4",
            environment="test",
            label="Virtual clinic",
            time_zone="America/Chicago",
            status=EndpointStatus.VALIDATED,
        )


def test_the_device_test_on_a_phone_says_when_every_check_passed(
    live_server, settings, media_browser, endpoint
):
    settings.PUBLIC_BASE_URL = live_server.url
    with tenant_scope(endpoint.tenant):
        [record] = [
            r
            for r in integration_records_produce(endpoint=endpoint)
            if r.kind == RecordKind.DEVICE_TEST_CONFIGURATION
        ]
    context = media_browser.new_context(**PHONE)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/device-test?token={record.context_token}")
        start = page.locator("#dt-start")
        start.click()
        expect(page.locator("#check-camera")).to_have_attribute("data-outcome", "ok")
        expect(page.locator("#check-microphone")).to_have_attribute("data-outcome", "ok")
        expect(start).not_to_have_text("All checks passed")  # the speaker is not checked yet
        page.get_by_role("button", name="Play a test sound").click()
        page.get_by_role("button", name="I heard it").click()
        expect(start).to_have_text("All checks passed")
        expect(page.locator("#dt-summary")).to_have_text("All checks passed: you are ready for your visit.")
        assert "Checking your devices" not in page.locator("body").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert "Request id" not in page.locator("body").inner_text()  # a patient page
        icon = page.locator('link[rel="icon"]').get_attribute("href")
        assert page.request.get(f"{live_server.url}{icon}").status == 200
        assert page.request.get(f"{live_server.url}/favicon.ico").status == 200  # no 404 where no <link>
    finally:
        close_contexts([context])


def test_a_patient_page_shows_no_request_id_and_a_failed_check_is_named(
    live_server, settings, media_browser, endpoint
):
    settings.PUBLIC_BASE_URL = live_server.url
    with tenant_scope(endpoint.tenant):
        start = timezone.now() + timedelta(minutes=10)
        visit = Visit.objects.create(
            tenant=endpoint.tenant,
            public_id=get_random_string(24),
            endpoint=endpoint,
            appointment_id="csn-9",
            scheduled_start=start,
            scheduled_end=start + timedelta(minutes=30),
        )
        patient = participant_id_for(ParticipantRole.PATIENT, "Patient/p-9")
        token = join_token_make(visit=visit, role=ParticipantRole.PATIENT, participant_id=patient)
    context = media_browser.new_context(**PHONE)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/join/{token}/")
        assert "Request id" not in page.locator("body").inner_text()
        page.locator('#check-camera [data-mark="failed"]').click()
        page.locator('#check-microphone [data-mark="skipped"]').click()
        page.locator('#check-speaker [data-mark="ok"]').click()
        expect(page.locator("#dt-start")).to_have_text("Checks done")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        close_contexts([context])


def test_a_new_api_token_is_copied_and_times_show_in_the_readers_zone(live_server, browser, settings, org_a):
    settings.DEMO_SIGN_IN = True
    make_member(org_a, "demo-admin", Role.ADMINISTRATOR)
    context = browser.new_context(
        timezone_id="America/New_York", permissions=["clipboard-read", "clipboard-write"]
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/sign-in/")
        page.get_by_role("button", name="Sign in as demo-admin").click()
        page.wait_for_url(f"{live_server.url}/portal/")
        page.goto(f"{live_server.url}/portal/api-tokens/")
        page.fill("input[name=name]", "Reporting warehouse")
        page.get_by_role("button", name="Create token").click()
        raw = page.locator("#issued-token-value").inner_text().strip()
        page.locator("#copy-issued-token").click()
        expect(page.locator("#copy-issued-token")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == raw

        created = page.locator("td time[data-local]").first
        expect(created).to_have_attribute("data-shown", "local")
        shown = created.inner_text()
        assert shown.endswith(" EST") or shown.endswith(" EDT"), shown  # the reader's zone, named
        assert not shown.startswith("0")  # "5 Dec 2026", as the server writes it
        assert created.get_attribute("title").endswith(" UTC")  # the server's text, kept as a tooltip
        assert "Request id" in page.locator("footer").inner_text()  # portal pages keep it for support
    finally:
        close_contexts([context])


def test_the_sandbox_ehr_fits_a_phone(live_server, browser, settings):
    from connector.sandbox_ehr.seed import seed_sandbox_ehr

    settings.SANDBOX_EHR = True
    settings.PUBLIC_BASE_URL = live_server.url
    seed_sandbox_ehr()
    context = browser.new_context(**PHONE)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/sandbox-ehr/")
        start = page.get_by_role("button", name="Start virtual visit (clinician)").first
        expect(start).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        box = start.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    finally:
        close_contexts([context])
