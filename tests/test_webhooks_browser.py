"""The portal's Webhooks page in a real browser: register, the secret shown once, the log, send again."""

from __future__ import annotations

import json

import pytest

from connector.models import EventKind
from tenants.models import Role
from tests.conftest import make_member
from tests.test_visit_events import make_visit, record
from tests.test_webhooks import Receiver, verify

pytestmark = pytest.mark.browser


@pytest.fixture
def receiver(settings):
    settings.EHR_INSECURE_HOSTS = ["127.0.0.1"]
    started = Receiver().start()
    yield started
    started.stop()


def test_an_administrator_registers_a_webhook_and_sends_a_delivery_again(
    live_server, page, settings, org_a, receiver
):
    settings.DEMO_SIGN_IN = True
    make_member(org_a, "demo-admin", Role.ADMINISTRATOR)

    page.goto(f"{live_server.url}/sign-in/")
    page.get_by_role("button", name="Sign in as demo-admin").first.click()
    page.wait_for_url(f"{live_server.url}/portal/")
    page.get_by_role("link", name="Webhooks").click()
    assert page.locator("#no-webhook-endpoints").count() == 1

    page.fill("input[name=url]", receiver.url)
    page.fill("input[name=description]", "wall board")
    page.get_by_label("A participant is waiting in the lobby").check()
    page.get_by_label("A visit ended").check()
    page.get_by_role("button", name="Register").click()

    secret = page.locator("#webhook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    assert page.locator("#webhook-secret-box button.copy").is_visible()
    assert page.locator("#webhook-endpoints tbody tr").count() == 1

    record(make_visit(org_a), "e1", EventKind.LOBBY_ENTERED, "patient", "p-1", 0)
    [(headers, body)] = receiver.received
    assert verify(secret, headers, body)  # the secret the page showed signs the deliveries
    assert json.loads(body)["type"] == "participant.waiting"

    page.goto(f"{live_server.url}/portal/webhooks/")  # shown once: coming back, it is gone
    assert page.locator("#webhook-secret").count() == 0 and secret not in page.content()
    row = page.locator("#webhook-delivery-log tbody tr").first
    assert "Delivered" in row.inner_text() and "participant.waiting" in row.inner_text()
    row.get_by_role("button", name="Send again").click()
    page.wait_for_selector("text=will be sent again now")
    assert [h["webhook-id"] for h, _ in receiver.received] == [headers["webhook-id"]] * 2

    page.get_by_role("button", name="Disable").click()
    page.wait_for_selector("text=is disabled: no events are sent to it.")
    assert page.locator("#webhook-endpoints .status-failed").inner_text() == "Disabled"
