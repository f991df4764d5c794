"""Sending texts one at a time: claim, commit, call, record; callbacks during a send; crashes reconciled."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
import time_machine
from django.db import connection
from django.utils import timezone

from connector.sweeper import work_sweep
from sms.backends import locmem
from sms.backends.locmem import LocmemSmsBackend
from sms.models import MessageState, OutboundMessage, PendingDeliveryReport, SmsConsent
from sms.services.appointments import appointment_apply
from sms.services.dispatch import lease_length, messages_dispatch
from tenants.scoping import all_tenants, tenant_scope
from tests.support.sms import at, siu, sms_ready_endpoint

NY = "America/New_York"


@pytest.fixture(autouse=True)
def _during_the_day():
    """Texts wait for the end of quiet hours at night: the tests run at 10:00 in New York, whenever CI runs."""
    with time_machine.travel(at("2026-12-01 10:00", NY), tick=True):
        yield


@pytest.fixture(autouse=True)
def _locmem_sms(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 1000
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    locmem.reset()


def apply(endpoint, message):
    with tenant_scope(endpoint.tenant):
        return appointment_apply(endpoint=endpoint, message=message)


def texts(tenant, **filters):
    with tenant_scope(tenant):
        return list(OutboundMessage.objects.filter(**filters).order_by("send_at", "pk"))


def delivered_report(provider_message_id: str) -> dict:
    return {
        "reports": [
            {
                "provider_message_id": provider_message_id,
                "status": "delivered",
                "error": "",
                "occurred_at": timezone.now().isoformat(),
            }
        ]
    }


@pytest.mark.django_db(transaction=True)
def test_a_delivery_callback_during_a_slow_send_is_matched(org_a, live_server, monkeypatch):
    """The provider calls back (over real HTTP) before its answer to the send reaches the dispatcher."""
    endpoint = sms_ready_endpoint(org_a)
    original_send = LocmemSmsBackend.send
    seen = {}

    def send_then_call_back(self, **kwargs):
        seen["transaction_open"] = connection.in_atomic_block
        sent = original_send(self, **kwargs)
        response = requests.post(
            f"{live_server.url}/sms/callbacks/locmem/",
            data=json.dumps(delivered_report(sent.provider_message_id)),
            headers={"X-Locmem-Secret": LocmemSmsBackend.callback_secret, "Content-Type": "application/json"},
            timeout=10,
        )
        seen["callback_status"] = response.status_code
        return sent

    monkeypatch.setattr(LocmemSmsBackend, "send", send_then_call_back)
    with time_machine.travel(timezone.now() - timedelta(minutes=1)):
        apply(endpoint, siu(start=timezone.now() + timedelta(days=3)))
    messages_dispatch()  # (the dispatch queued after the commit may already have sent it)
    assert len(locmem.outbox) == 1
    assert seen == {"transaction_open": False, "callback_status": 200}
    [confirmation] = texts(org_a, kind="confirmation")
    assert confirmation.state == MessageState.DELIVERED and confirmation.delivered_at is not None
    assert not PendingDeliveryReport.objects.exists()


@pytest.mark.django_db
def test_a_report_for_an_unknown_text_waits_and_is_dropped_after_a_day(client, org_a):
    response = client.post(
        "/sms/callbacks/locmem/",
        data=json.dumps(delivered_report("never-recorded")),
        content_type="application/json",
        HTTP_X_LOCMEM_SECRET=LocmemSmsBackend.callback_secret,
    )
    assert response.status_code == 200 and response.json()["reports"] == 0
    assert PendingDeliveryReport.objects.count() == 1
    with time_machine.travel(timezone.now() + timedelta(days=1, minutes=1)):
        work_sweep()
    assert not PendingDeliveryReport.objects.exists()


def _killed_mid_send(org_a) -> OutboundMessage:
    """A confirmation whose dispatcher died after claiming it: 'sending', with a lease that ended."""
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=timezone.now() + timedelta(days=3)))
    with tenant_scope(org_a):
        OutboundMessage.objects.filter(kind="confirmation").update(
            state=MessageState.SENDING, lease_until=timezone.now() + lease_length(), attempts=1
        )
        OutboundMessage.objects.exclude(kind="confirmation").delete()  # only the one text matters here
    [message] = texts(org_a, kind="confirmation")
    return message


@pytest.mark.django_db
def test_a_text_the_provider_accepted_before_the_crash_is_recorded_not_resent(org_a, client):
    message = _killed_mid_send(org_a)
    # The provider had accepted it (and even reported delivery) before the dispatcher died.
    accepted = LocmemSmsBackend().send(from_number="+18335550142", to_number=message.to, body="the text")
    client.post(
        "/sms/callbacks/locmem/",
        data=json.dumps(delivered_report(accepted.provider_message_id)),
        content_type="application/json",
        HTTP_X_LOCMEM_SECRET=LocmemSmsBackend.callback_secret,
    )
    assert messages_dispatch().claimed == 0  # still leased: nobody touches it
    with time_machine.travel(timezone.now() + lease_length() + timedelta(seconds=1)):
        found = work_sweep()
        assert found["texts"] == 1
        messages_dispatch()
    [message] = texts(org_a, kind="confirmation")
    assert message.state == MessageState.DELIVERED
    assert message.provider_message_id == accepted.provider_message_id
    assert len(locmem.outbox) == 1  # never sent again
    assert "find_sent" in locmem.calls


@pytest.mark.django_db
def test_a_text_the_provider_never_got_is_sent_once_after_the_crash(org_a, django_capture_on_commit_callbacks):
    _killed_mid_send(org_a)
    with time_machine.travel(timezone.now() + lease_length() + timedelta(seconds=1)):
        work_sweep()  # reconciles, and queues a dispatch (run inline in tests)
        [message] = texts(org_a, kind="confirmation")
        assert message.state == MessageState.SENT
        work_sweep()
        messages_dispatch()
    assert len(locmem.outbox) == 1


@pytest.mark.django_db
def test_without_a_provider_history_the_outcome_is_unknown_and_never_resent(org_a, monkeypatch):
    _killed_mid_send(org_a)

    def no_history(self, **kwargs):
        raise NotImplementedError

    monkeypatch.setattr(LocmemSmsBackend, "find_sent", no_history)
    with time_machine.travel(timezone.now() + lease_length() + timedelta(seconds=1)):
        work_sweep()
        messages_dispatch()
    [message] = texts(org_a, kind="confirmation")
    assert message.state == MessageState.UNKNOWN
    assert "Outcome unknown" in message.error and "not sent again" in message.error
    assert locmem.outbox == []


@pytest.mark.django_db
def test_a_provider_that_cannot_answer_now_is_asked_again_later(org_a):
    from sms.backends.base import SmsError

    _killed_mid_send(org_a)
    LocmemSmsBackend.fail_next = SmsError("Twilio is down", permanent=False)
    later = timezone.now() + lease_length() + timedelta(seconds=1)
    with time_machine.travel(later):
        work_sweep()
        [message] = texts(org_a, kind="confirmation")
        assert message.state == MessageState.SENDING  # held by the reconciler's short lease
    with time_machine.travel(later + timedelta(minutes=2)):
        work_sweep()
    [message] = texts(org_a, kind="confirmation")
    assert message.state == MessageState.SENT and len(locmem.outbox) == 1


@pytest.mark.django_db
def test_the_dispatcher_stops_claiming_when_its_time_is_up(org_a):
    endpoint = sms_ready_endpoint(org_a)
    with time_machine.travel(timezone.now() - timedelta(minutes=1)):
        apply(endpoint, siu(start=timezone.now() + timedelta(days=3)))
    assert messages_dispatch(budget_seconds=0).claimed == 0
    [message] = texts(org_a, kind="confirmation")
    assert message.state == MessageState.SCHEDULED and message.attempts == 0
    assert messages_dispatch().sent == 1


def test_the_lease_outlasts_the_task_timeout(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 600}
    assert lease_length() >= timedelta(seconds=1200)


# --- the cap per patient number -------------------------------------------------------------


@pytest.mark.django_db
@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_a_second_text_the_same_day_is_held_back_and_the_report_says_why(org_a, org_b, admin_a, client):
    endpoint = sms_ready_endpoint(org_a)
    other = sms_ready_endpoint(org_b, number="+18335550143")
    apply(endpoint, siu(external_id="APPT-1", start=at("2026-12-20 14:00", NY)))
    apply(endpoint, siu(external_id="APPT-2", start=at("2026-12-21 14:00", NY)))
    # The same patient at another organization: counted there, not here.
    apply(other, siu(external_id="B-1", start=at("2026-12-20 14:00", NY)))
    messages_dispatch()
    first, second = texts(org_a, kind="confirmation")
    assert first.state == MessageState.SENT
    assert second.state == MessageState.HELD
    assert "limit is 1 a day" in second.error
    [b_confirmation] = texts(org_b, kind="confirmation")
    assert b_confirmation.state == MessageState.SENT
    assert len(locmem.outbox) == 2

    # The SMS report lists the held text with its reason (org B's text is not in it).
    client.force_login(admin_a)
    response = client.get("/portal/reports/sms/?period=7&state=held&format=csv")
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert "held" in body and "limit is 1 a day" in body
    assert len(body.strip().splitlines()) == 2  # the header and the one held text


@pytest.mark.django_db
def test_the_weekly_cap_and_an_organization_that_raises_it(org_a):
    endpoint = sms_ready_endpoint(org_a)
    with tenant_scope(org_a):
        SmsConsent.objects.filter(tenant=org_a).update(texts_per_day=0, texts_per_week=2)
    start = timezone.now()
    for day in range(3):
        with time_machine.travel(start + timedelta(days=day)):
            apply(endpoint, siu(external_id=f"APPT-{day}", start=timezone.now() + timedelta(days=20)))
            messages_dispatch()
    states = [m.state for m in texts(org_a, kind="confirmation")]
    assert states == [MessageState.SENT, MessageState.SENT, MessageState.HELD]
    assert "limit is 2 a week" in texts(org_a, kind="confirmation")[2].error
    with tenant_scope(org_a):
        SmsConsent.objects.filter(tenant=org_a).update(texts_per_week=0)
    with time_machine.travel(start + timedelta(days=3)):
        apply(endpoint, siu(external_id="APPT-9", start=timezone.now() + timedelta(days=20)))
        messages_dispatch()
    assert texts(org_a, kind="confirmation")[-1].state == MessageState.SENT


@pytest.mark.django_db
def test_answers_to_stop_are_never_held(org_a, client, django_capture_on_commit_callbacks):
    endpoint = sms_ready_endpoint(org_a)
    with time_machine.travel(timezone.now() - timedelta(minutes=1)):
        apply(endpoint, siu(start=timezone.now() + timedelta(days=3)))
    messages_dispatch()
    inbound = {"from_number": "+14155550123", "to_number": "+18335550142", "body": "STOP", "provider_message_id": "i1"}
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/sms/callbacks/locmem/",
            data=json.dumps({"inbound": [inbound]}),
            content_type="application/json",
            HTTP_X_LOCMEM_SECRET=LocmemSmsBackend.callback_secret,
        )
    [answer] = texts(org_a, kind="opt_out")
    assert answer.state == MessageState.SENT
    assert len(locmem.outbox) == 2


def test_held_texts_are_a_state_of_the_sms_report():
    from reports.definitions.sms import SmsReportForm

    assert ("held", "Held back") in SmsReportForm.base_fields["state"].choices
    assert ("unknown", "Outcome unknown") in SmsReportForm.base_fields["state"].choices


@pytest.mark.django_db
def test_texts_of_another_organization_are_not_reconciled_into_this_one(org_a, org_b):
    _killed_mid_send(org_a)
    with all_tenants():
        assert OutboundMessage.objects.filter(tenant=org_b).count() == 0
    with time_machine.travel(timezone.now() + lease_length() + timedelta(seconds=1)):
        work_sweep()
    with tenant_scope(org_b):
        assert OutboundMessage.objects.count() == 0
