"""Portal step 2, SMS notifications, in headless Chromium against live_server (locmem SMS backend).

An Epic organization's administrator, with an approved FHIR endpoint, gives the
two consents, generates a toll-free number (tasks run inline, so it is active
by the time the page comes back; if not, the page polls and reloads), submits
its toll-free verification, links it to the endpoint with reminders, quiet
hours and a contact (a bad placeholder is refused, the preview counts
segments, switching language keeps the edits), and uploads the scheduling
feed's certificate (a private key pasted by mistake is explained). A viewer
cannot open the step; an EHR approver reads it without any form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from playwright.sync_api import Browser, Page, expect

from connector.datetimes import format_when
from connector.models import EndpointStatus, FhirEndpoint
from connector.services.endpoints import endpoint_create
from sms.backends import locmem
from sms.models import (
    NumberState,
    PhoneNumber,
    SigningCertificate,
    SmsConsent,
    SmsSettings,
    TollFreeVerification,
)
from sms.services.certificates import certificate_upload
from sms.services.numbers import phone_number_request
from sms.services.setup import sms_consent_set, sms_settings_update
from sms.texts import segment_count
from tenants.models import Role, Tenant
from tenants.scoping import tenant_scope
from tests.conftest import make_member
from tests.support.browser import pages_from

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADMIN = "demo-admin-org-a"
APPROVER = "demo-approver-org-a"
VIEWER = "demo-viewer-org-a"
ENDPOINT_LABEL = "Main campus"
STEP = "/portal/setup/sms/"


@pytest.fixture
def origin(settings, live_server) -> str:
    settings.PUBLIC_BASE_URL = live_server.url
    settings.DEMO_SIGN_IN = True
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    return live_server.url


@pytest.fixture
def endpoint(org_a: Tenant) -> FhirEndpoint:
    """An approved FHIR endpoint (nothing in this test talks to it)."""
    with tenant_scope(org_a):
        created = endpoint_create(
            tenant=org_a,
            base_url="https://fhir.example.org/api/FHIR/R4",
            environment="test",
            label=ENDPOINT_LABEL,
            time_zone="America/New_York",
        )
        FhirEndpoint.objects.filter(pk=created.pk).update(status=EndpointStatus.APPROVED)
        created.refresh_from_db()
    return created


@pytest.fixture
def new_page(browser: Browser):
    """new_page() -> a page in a fresh browser context (its own cookies: another person's browser)."""
    yield from pages_from(browser, timeout_ms=10_000)


def sign_in(page: Page, origin: str, username: str) -> None:
    page.goto(f"{origin}/sign-in/")
    page.get_by_role("button", name=f"Sign in as {username}", exact=True).click()
    page.wait_for_url(f"{origin}/portal/")


def self_signed(days: int) -> tuple[str, str, x509.Certificate]:
    """(certificate PEM, private key PEM, certificate): RSA 2048, valid from yesterday for `days` days."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scheduling-feed.org-a.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem, certificate


def messages(page: Page):
    return page.locator("ul.messages")


def english_text(form, title: str):
    """The English text box of one message kind (every language's boxes are in the form)."""
    return form.locator("[data-language='en']").get_by_label(title, exact=True)


def endpoint_summary(page: Page):
    return page.locator("#sms-endpoints tbody tr", has_text=ENDPOINT_LABEL)


def test_an_administrator_sets_up_sms_step_by_step(origin, new_page, org_a, endpoint):
    admin_user = make_member(org_a, ADMIN, Role.ADMINISTRATOR)
    page = new_page()
    sign_in(page, origin, ADMIN)
    page.goto(f"{origin}{STEP}")
    expect(page.locator("h1")).to_have_text("2. SMS notifications (optional)")
    expect(page.locator("#sms-step")).to_contain_text("SMS is off")
    expect(page.locator("#sms-numbers")).to_contain_text("No number yet.")
    expect(endpoint_summary(page).locator("td")).to_have_text(
        [re.compile(ENDPOINT_LABEL), "—", "—", "—", "Edit"]
    )
    expect(page.locator("#sms-certificates")).to_contain_text("No certificate yet")

    # --- (1) Consent: both boxes, then who confirmed and when. ------------------------------------
    consent = page.locator("#sms-consent")
    consent.get_by_label("lets the connector send text messages").check()
    consent.get_by_label("patients agreed to receive text messages").check()
    consent.get_by_role("button", name="Save consent").click()
    expect(messages(page)).to_contain_text("Your consent choices were saved.")
    when = r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d [A-Z0-9+-]+"  # the product's one format, zone named
    expect(consent).to_contain_text(re.compile(rf"Texting on your behalf confirmed by {ADMIN} on {when}\."))
    expect(consent).to_contain_text(re.compile(rf"Patients' consent confirmed by {ADMIN} on {when}\."))
    expect(consent.get_by_label("lets the connector send text messages")).to_be_checked()
    expect(consent.get_by_label("patients agreed to receive text messages")).to_be_checked()
    expect(page.locator("#sms-step")).to_contain_text("SMS is off")  # no number yet
    with tenant_scope(org_a):
        stored = SmsConsent.objects.get()
    assert stored.complete
    assert stored.on_behalf_confirmed_by == admin_user == stored.patient_consent_confirmed_by

    # --- (2) A toll-free number, active, then its verification. -----------------------------------
    request_form = page.locator("#request-number")
    expect(request_form.get_by_label("Country")).to_have_value("US")
    expect(request_form.get_by_label("Toll-free number")).to_be_checked()
    request_form.get_by_role("button", name="Generate a new phone number").click()
    expect(messages(page)).to_contain_text("A new number was requested")
    row = page.locator("#sms-numbers tbody tr[data-number]")
    expect(row).to_have_count(1)
    # Inline tasks make it active during the POST; were it still requested or provisioning,
    # the page polls status.json and reloads once it is active. Either way it ends here.
    expect(row.locator(".number-state")).to_have_text("Active", timeout=15_000)
    expect(row.locator(".number")).to_have_text("+18335550100")
    expect(row).to_contain_text("Not submitted")
    expect(row.locator(".badge.warn")).to_have_text(
        "Texts to US phones are held back until the number is verified."
    )
    with tenant_scope(org_a):
        number = PhoneNumber.objects.get()
    assert (number.state, number.provider, number.provider_id) == (NumberState.ACTIVE, "locmem", "locmem-PN1")
    assert locmem.calls[:2] == ["search_number", "purchase_number"]
    expect(page.locator("#sms-step")).to_contain_text("SMS is off")  # active, but linked to nothing

    row.get_by_text("Submit toll-free verification").click()
    verify = row.locator("form")
    expect(verify.get_by_label("Business name")).to_have_value(org_a.name)
    verify.get_by_label("Business website").fill("org-a.example")
    verify.get_by_label("Contact email").fill("it@org-a.example")
    verify.get_by_label("Contact phone").fill("+1 555 010 0199")
    verify.get_by_label("Expected texts per month").fill("1200")
    verify.get_by_label("Opt-in proof (image URLs)").fill(
        "https://org-a.example/opt-in/intake-form.png\nnot a url"
    )
    verify.get_by_role("button", name="Submit").click()
    # A bad image URL is refused and explained, with the form open and what was typed kept.
    verify = page.locator("#sms-numbers tbody tr[data-number] form")
    expect(verify).to_be_visible()
    expect(verify.locator(".errorlist")).to_contain_text("Enter a valid URL.")
    expect(verify.get_by_label("Contact email")).to_have_value("it@org-a.example")
    assert "submit_toll_free_verification" not in locmem.calls
    verify.get_by_label("Opt-in proof (image URLs)").fill(
        "https://org-a.example/opt-in/intake-form.png\nhttps://org-a.example/opt-in/portal-checkbox.png"
    )
    verify.get_by_role("button", name="Submit").click()
    expect(messages(page)).to_contain_text("Verification of +18335550100 was submitted.")
    expect(row).to_contain_text(re.compile("Pending|Verified"))
    expect(row.get_by_text("Submit toll-free verification")).to_have_count(0)  # already submitted
    expect(row.locator(".badge.warn")).to_be_visible()  # pending: still held back
    submitted = locmem.verification_details["locmem-PN1"]
    assert submitted["business_website"] == "https://org-a.example"
    assert submitted["monthly_volume"] == 1200
    assert submitted["opt_in_image_urls"] == [
        "https://org-a.example/opt-in/intake-form.png",
        "https://org-a.example/opt-in/portal-checkbox.png",
    ]
    with tenant_scope(org_a):
        assert PhoneNumber.objects.get().verification == TollFreeVerification.PENDING

    # --- (3) The endpoint's settings. ------------------------------------------------------------
    endpoint_summary(page).get_by_role("link", name="Edit").click()
    page.wait_for_url(f"{origin}/portal/setup/sms/endpoints/{endpoint.pk}/")
    expect(page.locator("h1")).to_have_text(f"SMS settings of {ENDPOINT_LABEL}")
    form = page.locator("#sms-endpoint-settings form")
    # The shipped English texts with a link fit one GSM-7 segment, previewed with the longest
    # date and time and a short link as long as a real one.
    for kind in ("confirmation", "reschedule", "reminder"):
        expect(form.locator(f"[data-language='en'] [data-kind='{kind}'] .segments")).to_have_text("1 segment")
    expect(form.locator("[data-language='en'] [data-kind='confirmation'] .preview")).to_contain_text(
        "Wed Sep 30 at 10:45 AM"
    )
    expect(form.get_by_label("Appointment ID field")).to_have_value("SCH-2")
    form.get_by_label("Sending number").select_option(label="+18335550100")
    form.get_by_label("Send confirmations").check()
    form.get_by_label("Send reminders").check()
    form.get_by_label("Reminder lead times").fill("24h, 2h")
    form.get_by_label("Quiet hours start").fill("20:30")
    form.get_by_label("Quiet hours end").fill("07:45")
    form.get_by_label("Contact", exact=True).fill("the front desk at 555-0142")
    reminder = english_text(form, "Reminder")
    expect(reminder).to_have_value(re.compile(r"^\{organization\}: reminder: video visit"))

    bad = "{organization}: hi {patient}, your video visit is on {date} at {time}. Join: {link}"
    reminder.fill(bad)
    form.get_by_role("button", name="Save").click()
    form = page.locator("#sms-endpoint-settings form")
    expect(form.locator(".errorlist").first).to_be_visible()
    expect(form.locator("[data-language='en'] [data-kind='reminder'] .errorlist")).to_have_text(
        "Unknown placeholder {patient}: use {contact}, {date}, {link}, {organization}, {time}."
    )
    expect(form.locator("[data-language='en'] [data-kind='reminder'] .preview")).to_have_count(0)
    expect(messages(page)).to_have_count(0)
    with tenant_scope(org_a):
        assert not SmsSettings.objects.exists()  # nothing saved
    # What was typed is kept for fixing.
    expect(english_text(form, "Reminder")).to_have_value(bad)
    expect(form.get_by_label("Reminder lead times")).to_have_value("24h, 2h")
    expect(form.get_by_label("Contact", exact=True)).to_have_value("the front desk at 555-0142")

    fixed = "{organization}: reminder, your video visit is on {date} at {time}. Join: {link}"
    english_text(form, "Reminder").fill(fixed)
    form.get_by_role("button", name="Preview").click()
    form = page.locator("#sms-endpoint-settings form")
    preview = form.locator("[data-language='en'] [data-kind='reminder'] .preview")
    expect(preview).to_be_visible()
    shown = re.fullmatch(
        r"Preview: “(.*)” — (\d+) segments? \((GSM-7|UCS-2), (\d+) characters\)", preview.inner_text()
    )
    assert shown, preview.inner_text()
    rendered = shown.group(1)
    assert re.fullmatch(
        rf"Org A Health: reminder, your video visit is on Wed Sep 30 at 10:45 AM EDT\. Join: "
        rf"{re.escape(origin)}/j/[\w-]{{22}}",
        rendered,
    ), rendered
    segments = segment_count(rendered)
    assert segments.encoding == "GSM-7"  # a real join link is plain ASCII, and so is the example
    assert shown.groups()[1:] == (str(segments.segments), segments.encoding, str(segments.characters))
    expect(form.locator("[data-kind='reminder'] .errorlist")).to_have_count(0)
    # The contact typed (not yet saved) is the one the HELP preview names.
    expect(form.locator("[data-language='en'] [data-kind='help'] .preview")).to_contain_text(
        "For help call the front desk at 555-0142."
    )
    with tenant_scope(org_a):
        assert not SmsSettings.objects.exists()  # a preview saves nothing

    # Spanish and back: the Spanish texts show, and nothing typed is lost.
    form.get_by_role("link", name="Spanish").click()
    spanish = form.locator("[data-language='es'] [data-kind='reminder'] textarea")
    expect(spanish).to_be_visible()
    expect(spanish).to_have_value(re.compile(r"^\{organization\}: recordatorio, su cita por video"))
    expect(english_text(form, "Reminder")).to_be_hidden()
    form.get_by_role("link", name="English").click()
    expect(english_text(form, "Reminder")).to_be_visible()
    expect(english_text(form, "Reminder")).to_have_value(fixed)
    expect(spanish).to_be_hidden()
    expect(form.get_by_label("Reminder lead times")).to_have_value("24h, 2h")
    expect(form.get_by_label("Sending number")).to_have_value(str(number.pk))

    form.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{origin}{STEP}")
    expect(messages(page)).to_contain_text(f"SMS settings of {ENDPOINT_LABEL} were saved.")
    expect(endpoint_summary(page).locator("td")).to_have_text(
        [re.compile(ENDPOINT_LABEL), "+18335550100", "on", "2 reminder(s)", "Edit"]
    )
    expect(page.locator("#sms-step")).to_contain_text("SMS is on")
    with tenant_scope(org_a):
        saved = SmsSettings.objects.get()
    assert saved.endpoint == endpoint and saved.phone_number == number
    assert saved.reminder_lead_minutes == [24 * 60, 120]
    assert (saved.quiet_hours_start, saved.quiet_hours_end) == (time(20, 30), time(7, 45))
    assert saved.contact == "the front desk at 555-0142"
    assert saved.templates == {"en": {"reminder": fixed}}  # only what differs from the shipped texts

    # The settings page shows what was saved.
    endpoint_summary(page).get_by_role("link", name="Edit").click()
    form = page.locator("#sms-endpoint-settings form")
    expect(form.get_by_label("Reminder lead times")).to_have_value("24h, 2h")
    expect(form.get_by_label("Quiet hours start")).to_have_value("20:30:00")
    expect(english_text(form, "Reminder")).to_have_value(fixed)
    page.goto(f"{origin}{STEP}")

    # --- (4) The scheduling feed's certificate. ---------------------------------------------------
    certificate_pem, key_pem, certificate = self_signed(days=365)
    upload = page.locator("#upload-certificate")
    upload.get_by_label("Environment").select_option("test")
    upload.get_by_label("paste the Base64 (PEM) text").fill(key_pem)  # the wrong half, pasted by mistake
    upload.get_by_role("button", name="Upload certificate").click()
    upload = page.locator("#upload-certificate")
    expect(upload.locator(".errorlist")).to_have_text(
        "This is a private key, not a certificate: upload the public certificate (.cer or .pem)."
    )
    expect(page.locator("#sms-certificates")).to_contain_text("No certificate yet")
    upload.get_by_label("paste the Base64 (PEM) text").fill(certificate_pem)
    upload.get_by_role("button", name="Upload certificate").click()
    thumbprint = certificate.fingerprint(hashes.SHA256()).hex().upper()
    expect(messages(page)).to_contain_text(f"Certificate {thumbprint[:16]}… is now in use.")
    cert_row = page.locator("#sms-certificates tbody tr")
    expect(cert_row).to_have_count(1)
    expect(cert_row.locator("td")).to_have_text(
        ["Test", thumbprint, "RSA 2048", format_when(certificate.not_valid_after_utc, day_only=True)]
    )
    expect(cert_row.locator(".badge.warn")).to_have_count(0)

    # A certificate about to expire, for production: taken, with a warning to replace it.
    soon_pem, _, soon = self_signed(days=10)
    upload = page.locator("#upload-certificate")
    upload.get_by_label("Environment").select_option("production")
    upload.get_by_label("paste the Base64 (PEM) text").fill(soon_pem)
    upload.get_by_role("button", name="Upload certificate").click()
    expect(messages(page).locator("li.warning")).to_contain_text(
        f"This certificate expires on {soon.not_valid_after_utc:%Y-%m-%d}"
    )
    production = page.locator("#sms-certificates tbody tr", has_text="Production")
    expect(production.locator(".badge.warn")).to_have_text("expires soon: upload a new one")
    with tenant_scope(org_a):
        assert SigningCertificate.objects.filter(active=True).count() == 2


def test_a_viewer_is_refused_and_an_approver_reads_without_forms(origin, new_page, org_a, endpoint):
    admin_user = make_member(org_a, ADMIN, Role.ADMINISTRATOR)
    make_member(org_a, APPROVER, Role.EHR_APPROVER, ehr_username="ANALYST1")
    make_member(org_a, VIEWER, Role.VIEWER)
    with tenant_scope(org_a):
        sms_consent_set(tenant=org_a, user=admin_user, on_behalf=True, patients_consented=True)
        number = phone_number_request(tenant=org_a, requested_by=admin_user)  # active at once (inline task)
        number.refresh_from_db()
        assert number.state == NumberState.ACTIVE
        sms_settings_update(
            endpoint=endpoint,
            phone_number=number,
            confirmations_enabled=True,
            reminders_enabled=True,
            reminder_lead_minutes=[1440, 120],
            quiet_hours_start=time(21, 0),
            quiet_hours_end=time(8, 0),
            default_language="en",
            contact="555-0142",
        )
        certificate_upload(
            tenant=org_a, environment="test", data=self_signed(days=365)[0], uploaded_by=admin_user
        )

    viewer = new_page()
    sign_in(viewer, origin, VIEWER)
    expect(viewer.get_by_role("link", name="Setup", exact=True)).to_have_count(0)
    for path in (STEP, f"{STEP}endpoints/{endpoint.pk}/", f"{STEP}numbers/{number.pk}/status.json"):
        response = viewer.goto(f"{origin}{path}")
        assert response is not None and response.status == 403, path

    approver = new_page()
    sign_in(approver, origin, APPROVER)
    response = approver.goto(f"{origin}{STEP}")
    assert response is not None and response.status == 200
    main = approver.locator("main")
    expect(main.locator("form")).to_have_count(0)
    expect(main.get_by_role("button")).to_have_count(0)
    expect(approver.locator("#sms-step")).to_contain_text("SMS is on")
    expect(approver.locator("#sms-consent")).to_contain_text(f"confirmed by {ADMIN}")
    expect(approver.locator("#sms-consent input[type=checkbox]:disabled:checked")).to_have_count(2)
    row = approver.locator("#sms-numbers tbody tr[data-number]")
    expect(row.locator(".number-state")).to_have_text("Active")
    expect(row.get_by_text("Submit toll-free verification")).to_have_count(0)
    expect(endpoint_summary(approver).locator("td")).to_have_text(
        [re.compile(ENDPOINT_LABEL), "+18335550100", "on", "2 reminder(s)", "View"]
    )
    expect(approver.locator("#sms-certificates tbody tr")).to_contain_text("RSA 2048")

    endpoint_summary(approver).get_by_role("link", name="View").click()
    approver.wait_for_url(f"{origin}{STEP}endpoints/{endpoint.pk}/")
    settings_card = approver.locator("#sms-endpoint-settings")
    expect(main.locator("form")).to_have_count(0)
    expect(main.get_by_role("button")).to_have_count(0)
    expect(settings_card.get_by_label("Reminder lead times")).to_have_value("24h, 2h")
    expect(settings_card.get_by_label("Reminder lead times")).to_be_disabled()
    expect(english_text(settings_card, "Reminder")).to_be_disabled()
    expect(settings_card.locator("[data-language='en'] [data-kind='reminder'] .preview")).to_contain_text(
        "Org A Health: reminder"
    )
    settings_card.get_by_role("link", name="Spanish").click()
    expect(settings_card.locator("[data-language='es'] [data-kind='reminder'] .preview")).to_contain_text(
        "recordatorio"
    )
