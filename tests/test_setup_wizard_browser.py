"""The setup wizard in headless Chromium, against the sandbox EHR over real HTTP (live_server).

An Epic organization's administrator adds the sandbox's R4 server, watches the
validation finish on the page (it polls status.json), lists the analyst who
approves, and walks on through SMS to Approve; the EHR approver signs in to the
sandbox EHR, approves, and the Review step shows the integration records. An
Oracle Health organization needs no approval. A DSTU2 server is explained on
the configure page.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from connector import tasks
from connector.models import EndpointStatus, FhirEndpoint, RecordKind
from connector.sandbox_ehr.seed import seed_sandbox_ehr
from tenants.models import Role
from tenants.scoping import tenant_scope
from tests.conftest import make_member
from tests.support.browser import pages_from

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADMIN_A = "demo-admin-org-a"
APPROVER_A = "demo-approver-org-a"
ADMIN_B = "demo-admin-org-b"


@pytest.fixture
def origin(settings, live_server) -> str:
    """The live server's origin, with the sandbox EHR on and seeded, and the demo sign-in on."""
    settings.SANDBOX_EHR = True
    settings.EHR_INSECURE_HOSTS = ["localhost", "127.0.0.1"]
    settings.PUBLIC_BASE_URL = live_server.url
    settings.DEMO_SIGN_IN = True
    seed_sandbox_ehr()
    return live_server.url


@pytest.fixture
def new_page(browser):
    """new_page() -> a page in a fresh browser context (its own cookies) that may use the clipboard."""
    yield from pages_from(browser, timeout_ms=10_000, permissions=["clipboard-read", "clipboard-write"])


def sign_in(page: Page, origin: str, username: str) -> None:
    """The demo sign-in (DEMO_SIGN_IN), as a person would use it."""
    page.goto(f"{origin}/sign-in/")
    page.get_by_role("button", name=f"Sign in as {username}", exact=True).click()
    page.wait_for_url(f"{origin}/portal/")


def open_setup(page: Page, origin: str, step: str) -> None:
    """The header's Setup link, which resumes the wizard at the first step not done."""
    page.get_by_role("link", name="Setup", exact=True).click()
    page.wait_for_url(f"{origin}/portal/setup/{step}/")


def progress_bar(page: Page) -> list[str]:
    return [
        re.sub(r"^\d+\s*|\s*✓$", "", text.strip()) for text in page.locator("nav.wizard a").all_inner_texts()
    ]


def add_endpoint(page: Page, base_url: str, label: str, time_zone: str) -> None:
    form = page.locator("#add-endpoint")
    form.get_by_label("FHIR base URL", exact=True).fill(base_url)
    form.get_by_label("Test", exact=True).check()
    form.get_by_label("Department or organization", exact=True).fill(label)
    form.get_by_label("Time zone", exact=True).select_option(time_zone)
    form.get_by_role("button", name="Add and validate").click()
    expect(page.locator("ul.messages")).to_contain_text(f"{label} was added; it is being validated now.")


def endpoint_row(page: Page, label: str):
    return page.locator("#endpoints tbody tr", has_text=label)


def go_next(page: Page, origin: str, step: str, title: str) -> None:
    button = page.locator("#wizard-next")
    expect(button).to_have_text(f"Next: {title} →")
    button.click()
    page.wait_for_url(f"{origin}/portal/setup/{step}/")


def check_records(page: Page, label: str, base_url: str) -> None:
    """The Review step: one card for the endpoint, all its records, each with copy buttons."""
    cards = page.locator(".endpoint-records")
    expect(cards).to_have_count(1)
    card = cards.first
    expect(card.locator("h2")).to_contain_text(label)
    expect(card.locator("p code").first).to_have_text(base_url)
    records = card.locator(".record")
    count = len(RecordKind.values)
    expect(records).to_have_count(count)
    kinds = [records.nth(i).get_attribute("data-kind") for i in range(count)]
    assert sorted(kinds) == sorted(RecordKind.values)
    for i in range(count):
        expect(records.nth(i).locator("button.copy").first).to_have_text("Copy")
    expect(card.locator(".badge.bad", has_text="out of date")).to_have_count(0)
    expect(page.get_by_text("Not ready yet")).to_have_count(0)


def test_an_epic_organization_configures_gets_approval_and_reviews_its_records(
    origin, new_page, org_a, monkeypatch
):
    make_member(org_a, ADMIN_A, Role.ADMINISTRATOR)
    approver = make_member(org_a, APPROVER_A, Role.EHR_APPROVER, ehr_username="ANALYST1")
    base_url = f"{origin}/sandbox-ehr/fhir/r4"

    # --- the administrator: step 1, Configure -----------------------------------------------
    admin = new_page()
    sign_in(admin, origin, ADMIN_A)
    open_setup(admin, origin, "configure")
    assert progress_bar(admin) == ["Configure", "SMS notifications", "Approve", "Review and finish"]
    expect(admin.locator("#endpoints")).to_contain_text("No FHIR endpoint yet.")

    # Hold the validation task back, as a busy worker would, so the page shows its progress.
    queued: list[tuple] = []
    status_polls: list[str] = []
    admin.on(
        "request", lambda request: status_polls.append(request.url) if "/status.json" in request.url else None
    )
    with monkeypatch.context() as m:
        m.setattr("connector.background.async_task", lambda func, *args, **kwargs: queued.append((func, args)))
        add_endpoint(admin, base_url, "Main campus", "America/New_York")
    assert [func for func, _ in queued] == ["connector.tasks.endpoint_validate"]
    row = endpoint_row(admin, "Main campus")
    expect(row.locator(".status")).to_have_text("Validating")
    expect(row.locator(".step")).to_have_text("queued")
    expect(row).to_contain_text("America/New_York")
    expect(row.locator("code")).to_have_text(base_url)
    admin.evaluate("window.stillTheSamePage = true")

    tasks.endpoint_validate(*queued[0][1])  # the worker runs it: real HTTP to the sandbox

    expect(row.locator(".status")).to_have_text("Awaiting approval")
    expect(row.locator(".step")).to_have_text("")
    expect(row.locator(".validation-message")).to_contain_text("SMART on FHIR R4 server (FHIR 4.0.1)")
    assert admin.evaluate("window.stillTheSamePage") is True, "the page reloaded instead of polling"
    with tenant_scope(org_a):
        endpoint = FhirEndpoint.objects.get()
    assert any(url.endswith(f"/portal/setup/endpoints/{endpoint.pk}/status.json") for url in status_polls)

    # The analysts who approve.
    approvers = admin.locator("#approvers")
    approvers.locator("textarea").fill("ANALYST1")
    approvers.get_by_role("button", name="Save approvers").click()
    expect(admin.locator("ul.messages")).to_contain_text("The approvers were saved.")
    expect(admin.locator("#approvers textarea")).to_have_value("ANALYST1")
    expect(endpoint_row(admin, "Main campus").locator(".status")).to_have_text("Awaiting approval")
    expect(admin.locator("nav.wizard li.current")).to_contain_text("Configure")
    expect(admin.locator("nav.wizard li.current .tick")).to_have_count(1)  # configured now

    # Step 2, SMS; step 3, Approve (the administrator can only watch).
    go_next(admin, origin, "sms", "SMS notifications")
    expect(admin.locator("#sms-step")).to_contain_text("SMS is off")
    go_next(admin, origin, "approve", "Approve")
    expect(admin.get_by_text("Only members with the EHR approver role can approve.")).to_be_visible()
    expect(admin.locator("#approvals tbody tr", has_text="Main campus").locator(".status")).to_have_text(
        "Awaiting approval"
    )
    expect(admin.get_by_role("button", name="Sign in to the EHR to review")).to_have_count(0)
    expect(admin.locator("#approval-history")).to_contain_text("No decisions yet.")

    # --- the EHR approver, in their own browser ---------------------------------------------
    analyst = new_page()
    sign_in(analyst, origin, APPROVER_A)
    open_setup(analyst, origin, "approve")  # steps 1 and 2 are done
    analyst.get_by_role("button", name="Sign in to the EHR to review").click()

    # The sandbox EHR's own sign-in page.
    analyst.wait_for_url(re.compile(re.escape(f"{origin}/sandbox-ehr/oauth2/authorize?")))
    expect(analyst.locator("h1")).to_have_text("Sign in to the Sandbox EHR")
    expect(analyst.locator("main")).to_contain_text(base_url)
    expect(analyst.locator(".badge")).to_have_text(["openid", "fhirUser"])
    analyst.locator("button[data-username='ANALYST1']").click()

    # Back in the connector, with the verified EHR identity.
    analyst.wait_for_url(f"{origin}/portal/setup/approve/{endpoint.pk}/decide/")
    decide = analyst.locator("#decide")
    expect(decide).to_contain_text("Signed in to the EHR as ANALYST1.")
    expect(decide).to_contain_text(base_url)
    decide.get_by_label("Comment (required to reject)").fill("Checked against the sandbox")
    decide.get_by_role("button", name="Approve").click()

    analyst.wait_for_url(f"{origin}/portal/setup/approve/")
    expect(analyst.locator("ul.messages")).to_contain_text("Main campus: Approved.")
    expect(analyst.locator("#approvals tbody tr", has_text="Main campus").locator(".status")).to_have_text(
        "Approved"
    )
    history = analyst.locator("#approval-history tbody tr")
    expect(history).to_have_count(1)
    expect(history.locator("td")).to_have_text(
        [re.compile(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d [A-Z0-9+-]+"), re.compile("Main campus"), "Approved",
         re.compile("^ANALYST1.*matched by EHR username"), approver.username, "Checked against the sandbox"]
    )  # fmt: skip
    expect(analyst.locator("nav.wizard li.current .tick")).to_have_count(1)  # Approve is done

    # The administrator sees the same, without signing in again.
    admin.reload()
    expect(admin.locator("#approvals tbody tr", has_text="Main campus").locator(".status")).to_have_text(
        "Approved"
    )
    expect(admin.locator("#approval-history")).to_contain_text("ANALYST1")

    # --- step 4, Review and finish -----------------------------------------------------------
    go_next(admin, origin, "review", "Review and finish")
    expect(admin.locator("h1")).to_have_text("4. Review and finish")
    check_records(admin, "Main campus", base_url)

    provider = admin.locator(".record[data-kind='provider_launch']")
    expect(provider.locator("dd code").first).to_have_text(f"{origin}/launch/provider")
    copy = provider.locator("button.copy").first
    copy.click()
    expect(copy).to_have_text("Copied")
    assert admin.evaluate("navigator.clipboard.readText()") == f"{origin}/launch/provider"
    expect(copy).to_have_text("Copy")  # and back after a moment
    context_token = admin.locator(
        ".record[data-kind='device_test_configuration'] code.context-token"
    ).inner_text()
    assert len(context_token) >= 43

    # The JSON download, fetched with the administrator's session.
    link = admin.locator("#download-records")
    expect(link).to_have_text("Download all as JSON")
    download = admin.request.get(f"{origin}{link.get_attribute('href')}")
    assert download.status == 200
    assert download.headers["content-type"] == "application/json"
    assert download.headers["content-disposition"] == 'attachment; filename="integration-records.json"'
    body = download.json()
    assert body["organization"] == "Org A Health"
    assert sorted(r["kind"] for r in body["records"]) == sorted(RecordKind.values)
    assert {r["endpoint"] for r in body["records"]} == {base_url}
    assert {r["label"] for r in body["records"]} == {"Main campus"}
    assert not any(r["out_of_date"] for r in body["records"])
    by_kind = {r["kind"]: r for r in body["records"]}
    assert by_kind["provider_launch"]["launch_url"] == f"{origin}/launch/provider"
    assert by_kind["provider_launch"]["redirect_uri"] == f"{origin}/launch/callback"
    assert by_kind["provider_launch"]["details"]["time_zone"] == "America/New_York"
    assert by_kind["device_test_configuration"]["context_token"] == context_token

    # The approver reads the records too.
    analyst.goto(f"{origin}/portal/setup/review/")
    check_records(analyst, "Main campus", base_url)


def test_an_oracle_health_organization_needs_no_approval(origin, new_page, org_b):
    make_member(org_b, ADMIN_B, Role.ADMINISTRATOR)
    base_url = f"{origin}/sandbox-ehr/fhir/r4-other"

    page = new_page()
    sign_in(page, origin, ADMIN_B)
    open_setup(page, origin, "configure")
    assert progress_bar(page) == ["Configure", "SMS notifications", "Review and finish"]
    expect(page.locator("#approvers")).to_have_count(0)  # no EHR approvers to list

    add_endpoint(page, base_url, "Fabrikam Clinics", "Europe/Copenhagen")  # validated during the POST
    row = endpoint_row(page, "Fabrikam Clinics")
    expect(row.locator(".status")).to_have_text("Validated")
    expect(row.locator(".validation-message")).to_contain_text("SMART on FHIR R4 server")
    with tenant_scope(org_b):
        assert FhirEndpoint.objects.get().status == EndpointStatus.VALIDATED

    go_next(page, origin, "sms", "SMS notifications")
    expect(page.locator("#sms-step")).to_contain_text("SMS is off")
    go_next(page, origin, "review", "Review and finish")
    assert progress_bar(page) == ["Configure", "SMS notifications", "Review and finish"]
    expect(page.locator("h1")).to_have_text("3. Review and finish")
    check_records(page, "Fabrikam Clinics", base_url)
    expect(page.locator("#wizard-next")).to_have_count(0)  # the last step

    # The Approve page, opened by hand, says there is nothing to approve.
    page.goto(f"{origin}/portal/setup/approve/")
    expect(page.locator("h1")).to_have_text("No approval step")


def test_a_dstu2_server_is_explained_on_the_configure_page(origin, new_page, org_a):
    make_member(org_a, ADMIN_A, Role.ADMINISTRATOR)

    page = new_page()
    sign_in(page, origin, ADMIN_A)
    open_setup(page, origin, "configure")
    add_endpoint(page, f"{origin}/sandbox-ehr/fhir/dstu2", "Old server", "UTC")

    row = endpoint_row(page, "Old server")
    expect(row.locator(".status")).to_have_text("Draft")
    message = row.locator(".validation-message")
    expect(message).to_have_class(re.compile(r"\berrorlist\b"))
    expect(message).to_contain_text("This is a DSTU2 server (FHIR 1.0.2): use the FHIR R4 base URL")
    with tenant_scope(org_a):
        endpoint = FhirEndpoint.objects.get()
    assert endpoint.status == EndpointStatus.DRAFT
    assert endpoint.last_validation["code"] == "fhir_dstu2"

    # Not sent for approval: the Approve step says to validate it first.
    page.goto(f"{origin}/portal/setup/approve/")
    expect(page.locator("#approvals tbody tr", has_text="Old server")).to_contain_text("Validate it first")


def test_a_server_without_write_back_is_ok_with_gaps_and_says_what_is_lost(origin, new_page, org_b):
    make_member(org_b, ADMIN_B, Role.ADMINISTRATOR)

    page = new_page()
    sign_in(page, origin, ADMIN_B)
    open_setup(page, origin, "configure")
    add_endpoint(page, f"{origin}/sandbox-ehr/fhir/launch-only", "Launch-only clinic", "UTC")

    row = endpoint_row(page, "Launch-only clinic")
    expect(row.locator(".status")).to_have_text("Validated")
    message = row.locator(".validation-message")
    expect(message).to_have_class(re.compile(r"\bwarning\b"))
    expect(message).to_contain_text("OK with gaps.")
    expect(message).not_to_contain_text("everything the connector needs")
    gaps = row.locator("details.validation-gaps")
    expect(gaps.locator("summary")).to_contain_text("(1)")
    gaps.locator("summary").click()
    expect(gaps.locator("li")).to_have_count(1)
    expect(gaps.locator("li")).to_contain_text("Lost Write-back to the EHR")
    expect(gaps.locator("li")).to_contain_text("the client_credentials grant")
