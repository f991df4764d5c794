"""From scheduling messages to texts: what gets scheduled, quiet hours, reschedules, sending, STOP/START/HELP."""

from __future__ import annotations

import json
import re
from datetime import time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from sms.backends import locmem
from sms.backends.base import SmsError
from sms.models import Appointment, OptOut, OutboundMessage, SmsConsent
from sms.scheduling import in_quiet_hours, nearest_allowed
from sms.services.appointments import appointment_apply, appointment_phones_purge
from sms.services.dispatch import messages_dispatch
from sms.texts import segment_count
from tenants import setup_changes
from tenants.scoping import tenant_scope
from tests.support.sms import at, siu, sms_ready_endpoint

pytestmark = pytest.mark.django_db

NY = "America/New_York"


@pytest.fixture(autouse=True)
def _locmem_sms(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 1000
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    locmem.reset()


def apply(endpoint, message):
    with tenant_scope(endpoint.tenant):
        return appointment_apply(endpoint=endpoint, message=message)


def scheduled(tenant, **filters):
    with tenant_scope(tenant):
        return list(OutboundMessage.objects.filter(**filters).order_by("send_at"))


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_a_new_appointment_gets_a_confirmation_now_and_reminders_before_it(org_a):
    endpoint = sms_ready_endpoint(org_a)
    start = at("2026-12-03 14:00", NY)
    result = apply(endpoint, siu(start=start))
    kinds = [(m.kind, m.send_at) for m in result.scheduled]
    assert kinds == [
        ("confirmation", timezone.now()),
        ("reminder", start - timedelta(hours=24)),
        ("reminder", start - timedelta(hours=1)),
    ]


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_a_reminder_in_quiet_hours_moves_to_the_nearest_allowed_time(org_a):
    endpoint = sms_ready_endpoint(org_a, reminder_lead_minutes=[60])
    start = at("2026-12-03 07:30", NY)  # 1 h before is 06:30, inside 21:00-08:00
    result = apply(endpoint, siu(start=start))
    reminder = [m for m in result.scheduled if m.kind == "reminder"][0]
    # 20:59 the evening before is nearer than 08:00 (after the visit started, not allowed).
    assert reminder.send_at == at("2026-12-02 20:59", NY)


def test_quiet_hours_prefer_the_nearer_boundary():
    zone = ZoneInfo(NY)
    start, end = time(21, 0), time(8, 0)
    moment = at("2026-12-02 07:00", NY)
    assert in_quiet_hours(moment, zone, start, end)
    result = nearest_allowed(
        moment, zone, start, end, not_before=moment - timedelta(days=1), not_after=moment + timedelta(days=1)
    )
    assert result == at("2026-12-02 08:00", NY)
    moment = at("2026-12-02 21:30", NY)
    result = nearest_allowed(
        moment, zone, start, end, not_before=moment - timedelta(days=1), not_after=moment + timedelta(days=1)
    )
    assert result == at("2026-12-02 20:59", NY)


@time_machine.travel(at("2026-11-01 00:30", NY), tick=False)
def test_reminders_across_the_end_of_daylight_saving_keep_real_durations(org_a):
    endpoint = sms_ready_endpoint(org_a, reminder_lead_minutes=[24 * 60])
    # Nov 1 2026 02:00 EDT -> 01:00 EST: the day is 25 hours long.
    start = at("2026-11-02 10:00", NY)
    result = apply(endpoint, siu(start=start))
    reminder = [m for m in result.scheduled if m.kind == "reminder"][0]
    assert reminder.send_at == start - timedelta(hours=24)
    assert reminder.send_at.astimezone(ZoneInfo(NY)).hour == 10


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_a_reschedule_moves_pending_reminders(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    with tenant_scope(org_a):  # told of the first time
        OutboundMessage.objects.filter(kind="confirmation").update(state="sent")
    new_start = at("2026-12-05 15:00", NY)
    apply(endpoint, siu("S13", start=new_start, sent_at=timezone.now() + timedelta(seconds=1)))
    reminders = scheduled(org_a, kind="reminder")
    assert {m.state for m in reminders if m.send_at < at("2026-12-04 00:00", NY)} == {"cancelled"}
    live = [m.send_at for m in reminders if m.state == "scheduled"]
    assert live == [new_start - timedelta(hours=24), new_start - timedelta(hours=1)]
    assert [m.kind for m in scheduled(org_a, kind="reschedule")] == ["reschedule"]


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_a_cancel_cancels_pending_reminders_and_sends_a_cancellation(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    apply(
        endpoint, siu("S15", start=at("2026-12-03 14:00", NY), sent_at=timezone.now() + timedelta(seconds=1))
    )
    assert {m.state for m in scheduled(org_a, kind="reminder")} == {"cancelled"}
    assert len(scheduled(org_a, kind="cancellation", state="scheduled")) == 1


@pytest.mark.parametrize("event", ["S17", "S26"])
@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_delete_and_no_show_cancel_reminders_and_send_nothing_new(org_a, event):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    result = apply(
        endpoint, siu(event, start=at("2026-12-03 14:00", NY), sent_at=timezone.now() + timedelta(seconds=1))
    )
    assert result.scheduled == []
    assert not scheduled(org_a, state="scheduled", kind="reminder")


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_an_older_message_never_undoes_newer_state(org_a):
    endpoint = sms_ready_endpoint(org_a)
    now = timezone.now()
    apply(endpoint, siu("S15", start=at("2026-12-03 14:00", NY), sent_at=now))
    stale = apply(endpoint, siu("S13", start=at("2026-12-04 14:00", NY), sent_at=now - timedelta(minutes=5)))
    assert not stale.applied
    with tenant_scope(org_a):
        appointment = Appointment.objects.get()
    assert appointment.status == "cancelled"
    assert appointment.start == at("2026-12-03 14:00", NY)


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_nothing_is_scheduled_for_an_appointment_in_the_past(org_a):
    endpoint = sms_ready_endpoint(org_a)
    assert apply(endpoint, siu(start=at("2026-12-01 09:00", NY))).scheduled == []


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_nothing_is_sent_without_both_consents(org_a):
    endpoint = sms_ready_endpoint(org_a)
    with tenant_scope(org_a):
        SmsConsent.objects.update(patient_consent_confirmed_at=None)
    assert apply(endpoint, siu()).scheduled == []


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_the_dispatcher_sends_due_messages_once_with_the_join_link(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    result = messages_dispatch()
    assert (result.sent, result.claimed) == (1, 1)
    assert len(locmem.outbox) == 1
    text = locmem.outbox[0]
    assert text.to_number == "+14155550123" and text.from_number == "+18335550142"
    assert "Org A Health" in text.body and "video visit booked for Thu Dec 3 at 2:00 PM EST." in text.body
    assert re.search(r"Join: https://connector\.example\.org/j/[A-Za-z0-9_-]{22}$", text.body)
    assert messages_dispatch().sent == 0  # nothing twice
    [confirmation] = scheduled(org_a, kind="confirmation")
    assert confirmation.state == "sent" and confirmation.provider == "locmem"


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_spanish_speakers_get_spanish_texts(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY), language="es"))
    messages_dispatch()
    assert "su cita por video es el jue 3 dic a las 14:00 EST." in locmem.outbox[0].body


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_temporary_errors_retry_with_backoff_and_permanent_ones_stop(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    locmem.LocmemSmsBackend.fail_next = SmsError("provider down", permanent=False, code="unavailable")
    assert messages_dispatch().retried == 1
    [message] = scheduled(org_a, kind="confirmation")
    assert message.state == "scheduled" and message.attempts == 1 and message.send_at > timezone.now()
    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        locmem.LocmemSmsBackend.fail_next = SmsError("invalid number", permanent=True, code="invalid_number")
        assert messages_dispatch().failed == 1
    [message] = scheduled(org_a, kind="confirmation")
    assert message.state == "failed" and "invalid number" in message.error


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_a_429_pauses_the_number_for_retry_after_without_counting_a_failure(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    locmem.LocmemSmsBackend.fail_next = SmsError(
        "slow down", permanent=False, code="rate_limited", retry_after=120
    )
    messages_dispatch()
    [message] = scheduled(org_a, kind="confirmation")
    assert message.state == "scheduled"
    assert message.send_at == timezone.now() + timedelta(seconds=120)
    assert message.attempts == 0


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_an_unverified_toll_free_number_holds_texts_to_us_phones(org_a):
    endpoint = sms_ready_endpoint(org_a, verified=False)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    assert messages_dispatch().held == 1
    assert locmem.outbox == []
    [message] = scheduled(org_a, kind="confirmation")
    assert message.state == "scheduled" and "not verified" in message.error


def post_callback(client, payload):
    return client.post(
        "/sms/callbacks/locmem/",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_X_LOCMEM_SECRET=locmem.LocmemSmsBackend.callback_secret,
    )


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_stop_opts_out_cancels_pending_texts_and_confirms_once(client, org_a, django_capture_on_commit_callbacks):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    inbound = {
        "from_number": "+14155550123",
        "to_number": "+18335550142",
        "body": " stop ",
        "provider_message_id": "in-1",
    }
    with django_capture_on_commit_callbacks(execute=True) as queued:
        assert post_callback(client, {"inbound": [inbound]}).status_code == 200
        post_callback(client, {"inbound": [inbound]})  # delivered twice by the provider
    dispatches = [callback for callback in queued if callback is not setup_changes._move_token]  # not the opt-out's
    assert len(dispatches) == 2  # a dispatch queued after each callback's commit, which sent the answer
    with tenant_scope(org_a):
        assert OptOut.objects.get().active
    assert {m.state for m in scheduled(org_a, kind="reminder")} == {"cancelled"}
    bodies = [t.body for t in locmem.outbox]
    assert len(bodies) == 1 and "no more texts" in bodies[0]
    # A later appointment for that number schedules nothing.
    assert apply(endpoint, siu(external_id="APPT-2", start=at("2026-12-09 14:00", NY))).scheduled == []


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_start_opts_back_in_and_help_answers_with_the_organization(client, org_a):
    endpoint = sms_ready_endpoint(org_a, contact="555-0100")
    base = {"from_number": "+14155550123", "to_number": "+18335550142"}
    post_callback(client, {"inbound": [{**base, "body": "STOP", "provider_message_id": "a"}]})
    post_callback(client, {"inbound": [{**base, "body": "unstop", "provider_message_id": "b"}]})
    post_callback(client, {"inbound": [{**base, "body": "HELP", "provider_message_id": "c"}]})
    with tenant_scope(org_a):
        assert not OptOut.objects.get().active
    messages_dispatch()
    assert len(locmem.outbox) == 3
    assert "Org A Health" in locmem.outbox[2].body and "555-0100" in locmem.outbox[2].body
    assert apply(endpoint, siu(start=at("2026-12-03 14:00", NY))).scheduled


def test_a_callback_with_a_bad_secret_changes_nothing(client, org_a):
    sms_ready_endpoint(org_a)
    response = client.post(
        "/sms/callbacks/locmem/",
        data=json.dumps(
            {
                "inbound": [
                    {
                        "from_number": "+14155550123",
                        "to_number": "+18335550142",
                        "body": "STOP",
                        "provider_message_id": "x",
                    }
                ]
            }
        ),
        content_type="application/json",
        HTTP_X_LOCMEM_SECRET="wrong",
    )
    assert response.status_code == 403
    with tenant_scope(org_a):
        assert not OptOut.objects.exists()


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_delivery_reports_update_messages_and_never_downgrade(client, org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    messages_dispatch()
    [message] = scheduled(org_a, kind="confirmation")
    report = {"provider_message_id": message.provider_message_id, "occurred_at": timezone.now().isoformat()}
    post_callback(client, {"reports": [{**report, "status": "delivered", "error": ""}]})
    post_callback(client, {"reports": [{**report, "status": "sent", "error": ""}]})
    [message] = scheduled(org_a, kind="confirmation")
    assert message.state == "delivered" and message.delivered_at


def test_opt_outs_belong_to_one_organization(client, org_a, org_b):
    sms_ready_endpoint(org_a, number="+18335550142")
    sms_ready_endpoint(org_b, number="+18335550143")
    post_callback(
        client,
        {
            "inbound": [
                {
                    "from_number": "+14155550123",
                    "to_number": "+18335550142",
                    "body": "STOP",
                    "provider_message_id": "z",
                }
            ]
        },
    )
    with tenant_scope(org_b):
        assert not OptOut.objects.exists()


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_the_phone_number_is_purged_after_the_visit_and_grace_period(org_a):
    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-01 12:00", NY)))
    with tenant_scope(org_a):
        assert appointment_phones_purge() == 0
    with time_machine.travel(at("2026-12-02 13:00", NY), tick=False), tenant_scope(org_a):
        assert appointment_phones_purge() == 1
        appointment = Appointment.objects.get()
        assert appointment.phone == "" and appointment.phone_purged_at
        assert all(m.to == "" for m in OutboundMessage.objects.all())


def test_segment_counts_follow_gsm_and_unicode_rules():
    assert segment_count("a" * 160).segments == 1
    assert segment_count("a" * 161).segments == 2
    assert segment_count("á" * 70).encoding == "UCS-2"
    assert segment_count("€" * 80).characters == 160  # extension characters count twice


@time_machine.travel(at("2026-12-01 10:00", NY), tick=False)
def test_the_phone_number_is_encrypted_at_rest(org_a):
    from django.db import connection

    endpoint = sms_ready_endpoint(org_a)
    apply(endpoint, siu(start=at("2026-12-03 14:00", NY)))
    with connection.cursor() as cursor:
        cursor.execute("SELECT phone FROM sms_appointment")
        stored = cursor.fetchone()[0]
    assert "4155550123" not in stored and stored.startswith("gAAAA")
