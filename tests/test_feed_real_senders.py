"""The scheduling feed against the shapes of real senders (Epic, Oracle Health, interface engines).

Identity, ordering, times and texts-once, posted signed through the HTTPS view.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import hl7
import pytest
import time_machine

from sms.models import Appointment, AppointmentStatus, MessageKind, MessageState, OutboundMessage, SmsSettings
from tenants.scoping import tenant_scope
from tests.support.siu_shapes import ENGINE, EPIC, ORACLE, siu
from tests.test_hl7_ingest import set_up_feed

NOW = datetime(2027, 1, 5, 14, 31, tzinfo=UTC)  # a week before the visits the messages book


@pytest.fixture
def feed(org_a):
    with time_machine.travel(NOW, tick=False):
        yield set_up_feed(org_a)


def post(client, feed, body: bytes):
    from tests.support.hl7_feed import sign

    response = client.post(
        feed.url,
        data=body,
        content_type="x-application/hl7-v2+er7",
        HTTP_X_HL7_SIGNATURE=sign(body, feed.key),
    )
    assert response.status_code == 200
    return hl7.parse(response.content.decode())


def code(ack) -> str:
    return str(ack.segment("MSA")(1))


def reason(ack) -> str:
    """ERR-8 (v2.5 and later), else MSA-3 (v2.3 and v2.4 senders)."""
    err = ack.segment("ERR")
    text = str(err(8)) if len(err) > 8 else str(ack.segment("MSA")(3))
    return ack.unescape(text)


def stored(feed) -> list[Appointment]:
    with tenant_scope(feed.tenant):
        return list(Appointment.objects.order_by("pk"))


def texts(feed, **filters) -> list[OutboundMessage]:
    with tenant_scope(feed.tenant):
        return list(OutboundMessage.objects.filter(**filters).order_by("send_at", "pk"))


def choose_id_field(feed, field: str) -> None:
    with tenant_scope(feed.tenant):
        SmsSettings.objects.filter(endpoint=feed.endpoint).update(appointment_id_field=field)
    from sms.hl7.feed_setup import feed_setup_forget

    feed_setup_forget()


# --- item 3: appointment identity -------------------------------------------------------------


def test_an_epic_cancellation_from_another_facility_code_cancels_the_booked_appointment(client, feed):
    post(client, feed, siu(EPIC, control_id="E1", facility="NVH"))

    ack = post(client, feed, siu(EPIC, trigger="S15", control_id="E2", msh7="20270105090000", facility="NVHEAST"))

    assert code(ack) == "AA"
    [appointment] = stored(feed)
    assert appointment.status == AppointmentStatus.CANCELLED
    assert texts(feed, kind=MessageKind.REMINDER, state=MessageState.SCHEDULED) == []


def test_oracle_health_appointments_are_identified_by_the_filler_id(client, feed):
    post(client, feed, siu(ORACLE, control_id="C1", appointment_id="77001234"))
    post(client, feed, siu(ORACLE, control_id="C2", appointment_id="77001299", patient="9001133"))

    assert [a.external_id for a in stored(feed)] == ["77001234", "77001299"]
    assert {a.environment for a in stored(feed)} == {"test"}


def test_an_engine_constant_in_sch_1_does_not_merge_patients_with_the_default_field(client, feed):
    post(client, feed, siu(ENGINE, control_id="R1", appointment_id="A-100", patient="P1"))
    post(client, feed, siu(ENGINE, control_id="R2", appointment_id="A-200", patient="P2"))

    assert [a.external_id for a in stored(feed)] == ["A-100", "A-200"]


def test_a_constant_in_the_chosen_field_is_refused_with_an_error_naming_it(client, feed):
    choose_id_field(feed, "SCH-1")
    assert code(post(client, feed, siu(ENGINE, control_id="R1", appointment_id="A-100", patient="P1"))) == "AA"

    ack = post(client, feed, siu(ENGINE, control_id="R2", appointment_id="A-200", patient="P2"))

    assert code(ack) == "AE"
    assert reason(ack).startswith("SCH-1 holds an appointment ID already used for another patient")
    assert str(ack.segment("ERR")(2)) == "SCH^1^1"
    [appointment] = stored(feed)  # the first patient's appointment is untouched
    assert appointment.start == datetime(2027, 1, 12, 15, 30, tzinfo=UTC)
    assert len(texts(feed)) == 3  # its confirmation and two reminders; nothing for the second patient


def test_an_empty_chosen_field_is_refused_with_an_error_naming_it(client, feed):
    choose_id_field(feed, "SCH-1")

    ack = post(client, feed, siu(ORACLE, control_id="C1"))

    assert code(ack) == "AE"
    assert reason(ack).startswith("SCH-1 (placer appointment ID) is empty")
    assert stored(feed) == []


def test_the_visit_number_can_identify_epic_appointments(client, feed):
    choose_id_field(feed, "PV1-19")

    post(client, feed, siu(EPIC, control_id="E1", appointment_id="4000999"))

    assert [a.external_id for a in stored(feed)] == ["4000999"]


def test_the_same_id_in_another_environment_is_another_appointment(client, feed, org_a):
    production = set_up_feed(org_a, environment="production")
    post(client, feed, siu(EPIC, control_id="E1"))
    post(client, production, siu(EPIC, control_id="E2"))

    with tenant_scope(org_a):
        assert sorted(Appointment.objects.values_list("environment", flat=True)) == ["production", "test"]


# --- item 4: ordering -------------------------------------------------------------------------


def status(feed) -> str:
    [appointment] = stored(feed)
    return appointment.status


def pending(feed, kind=None) -> list[OutboundMessage]:
    filters = {"state": MessageState.SCHEDULED}
    if kind:
        filters["kind"] = kind
    return texts(feed, **filters)


def test_a_same_second_update_does_not_undo_a_cancellation(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))
    post(client, feed, siu(EPIC, trigger="S15", control_id="E2", msh7="20270105090000"))
    cancellation_texts = texts(feed, kind=MessageKind.CANCELLATION)

    ack = post(client, feed, siu(EPIC, trigger="S14", control_id="E3", msh7="20270105090000"))

    assert code(ack) == "AA"
    assert status(feed) == AppointmentStatus.CANCELLED
    assert pending(feed, MessageKind.REMINDER) == []
    assert texts(feed, kind=MessageKind.CANCELLATION) == cancellation_texts
    assert len(texts(feed, kind=MessageKind.CONFIRMATION)) == 1


def test_an_older_update_arriving_after_the_cancellation_is_not_applied(client, feed):
    post(client, feed, siu(ORACLE, control_id="C1", msh7="20270105080000"))
    post(client, feed, siu(ORACLE, trigger="S15", control_id="C3", msh7="20270105100000"))

    post(client, feed, siu(ORACLE, trigger="S13", control_id="C2", msh7="20270105090000", start="20270113093000"))

    [appointment] = stored(feed)
    assert appointment.status == AppointmentStatus.CANCELLED
    assert appointment.start == datetime(2027, 1, 12, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ("S15", AppointmentStatus.CANCELLED),
        ("S16", AppointmentStatus.CANCELLED),
        ("S17", AppointmentStatus.DELETED),
        ("S26", AppointmentStatus.NO_SHOW),
    ],
)
def test_s15_s16_s17_end_the_appointment_and_s26_marks_a_no_show(client, feed, trigger, expected):
    post(client, feed, siu(ENGINE, control_id="R1"))

    ack = post(client, feed, siu(ENGINE, trigger=trigger, control_id="R2", msh7="20270105090000"))

    assert code(ack) == "AA"
    assert status(feed) == expected
    assert pending(feed, MessageKind.REMINDER) == []


def test_a_discontinuation_tells_the_patient_like_a_cancellation(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))

    post(client, feed, siu(EPIC, trigger="S16", control_id="E2", msh7="20270105090000"))

    assert len(texts(feed, kind=MessageKind.CANCELLATION)) == 1


@pytest.mark.parametrize("trigger", ["S12", "S13"])
def test_a_later_booking_books_a_cancelled_appointment_again(client, feed, trigger):
    post(client, feed, siu(EPIC, control_id="E1"))
    post(client, feed, siu(EPIC, trigger="S15", control_id="E2", msh7="20270105090000"))

    post(client, feed, siu(EPIC, trigger=trigger, control_id="E3", msh7="20270105090001"))

    assert status(feed) == AppointmentStatus.BOOKED
    assert len(pending(feed, MessageKind.REMINDER)) == 2
    assert len(texts(feed, kind=MessageKind.CONFIRMATION)) == 2  # the booking, and the booking again


def test_a_later_modification_of_a_cancelled_appointment_does_not_book_it_again(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))
    post(client, feed, siu(EPIC, trigger="S15", control_id="E2", msh7="20270105090000"))

    post(client, feed, siu(EPIC, trigger="S14", control_id="E3", msh7="20270105100000", start="20270112100000"))

    assert status(feed) == AppointmentStatus.CANCELLED
    assert pending(feed, MessageKind.REMINDER) == []
    assert len(texts(feed, kind=MessageKind.CONFIRMATION)) == 1


# --- item 5: times ----------------------------------------------------------------------------


def test_an_engines_tq1_end_wins_over_a_60_s_duration(client, feed):
    post(client, feed, siu(ENGINE, control_id="R1", end="20270112103000", duration=("60", "s")))

    [appointment] = stored(feed)
    assert appointment.end - appointment.start == timedelta(hours=1)


def test_oracle_health_times_come_from_sch_11_with_their_offset_and_sch_9_units(client, feed):
    post(client, feed, siu(ORACLE, control_id="C1", duration=("20", "M"), end="20270112095000"))

    [appointment] = stored(feed)
    assert appointment.start == datetime(2027, 1, 12, 15, 30, tzinfo=UTC)
    assert appointment.end - appointment.start == timedelta(minutes=20)


@pytest.mark.parametrize("duration", [("NaN", "min"), ("1e400", "min"), ("3", "d"), ("30", "fortnight")])
def test_an_absurd_duration_is_refused_with_an_error_naming_sch_9(client, feed, duration):
    ack = post(client, feed, siu(ORACLE, control_id="C1", duration=duration))

    assert code(ack) == "AE"
    assert reason(ack).startswith("SCH-9")
    assert stored(feed) == []


# --- item 6: texts once -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [EPIC, ORACLE, ENGINE])
def test_a_renumbered_resend_that_changes_nothing_sends_nothing(client, feed, shape):
    post(client, feed, siu(shape, control_id="M1"))
    before = [(t.pk, t.state) for t in texts(feed)]

    post(client, feed, siu(shape, control_id="M2", msh7="20270105090000"))  # new MSH-10 and MSH-7
    post(client, feed, siu(shape, trigger="S14", control_id="M3", msh7="20270105091000"))

    assert [(t.pk, t.state) for t in texts(feed)] == before


def test_a_move_sends_one_changed_text_and_reschedules_the_reminders(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))
    with tenant_scope(feed.tenant):  # it went
        OutboundMessage.objects.filter(kind=MessageKind.CONFIRMATION).update(state=MessageState.SENT)

    moved = dict(start="20270113093000")
    post(client, feed, siu(EPIC, trigger="S13", control_id="E2", msh7="20270105090000", **moved))
    post(client, feed, siu(EPIC, trigger="S14", control_id="E3", msh7="20270105091000", **moved))  # again

    [changed] = texts(feed, kind=MessageKind.RESCHEDULE)
    assert changed.state == MessageState.SCHEDULED
    reminders = pending(feed, MessageKind.REMINDER)
    assert [r.send_at for r in reminders] == [
        datetime(2027, 1, 12, 15, 30, tzinfo=UTC),  # 24 h before the new time
        datetime(2027, 1, 13, 14, 30, tzinfo=UTC),  # 1 h before
    ]
    assert len(texts(feed, kind=MessageKind.REMINDER, state=MessageState.CANCELLED)) == 2


def test_moving_back_to_the_first_time_schedules_its_reminders_again(client, feed):
    post(client, feed, siu(ENGINE, control_id="R1"))
    post(client, feed, siu(ENGINE, trigger="S13", control_id="R2", msh7="20270105090000", start="20270113093000"))

    post(client, feed, siu(ENGINE, trigger="S13", control_id="R3", msh7="20270105100000"))

    assert [r.send_at.date().day for r in pending(feed, MessageKind.REMINDER)] == [11, 12]


def test_a_move_before_the_confirmation_went_sends_one_confirmation_of_the_new_time(client, feed):
    post(client, feed, siu(EPIC, control_id="E1"))  # its confirmation is still scheduled

    post(client, feed, siu(EPIC, trigger="S13", control_id="E2", msh7="20270105090000", start="20270113093000"))

    assert [t.state for t in texts(feed, kind=MessageKind.CONFIRMATION)] == [
        MessageState.CANCELLED,
        MessageState.SCHEDULED,
    ]
    assert texts(feed, kind=MessageKind.RESCHEDULE) == []


def test_a_new_mobile_number_gets_the_confirmation_and_the_reminders(client, feed):
    post(client, feed, siu(ORACLE, control_id="C1"))

    new_number = "^PRN^CP^^1^415^5550177"
    post(client, feed, siu(ORACLE, trigger="S14", control_id="C2", msh7="20270105090000", phone=new_number))

    assert {t.to for t in pending(feed)} == {"+14155550177"}
    assert len(pending(feed, MessageKind.REMINDER)) == 2


# --- item 9: phones ---------------------------------------------------------------------------

UK_MOBILE = "07400^123456"  # libphonenumber's example GB mobile, national form: XTN-6 area, XTN-7 local


def uk_patient(feed, control_id: str):
    return siu(ENGINE, control_id=control_id, phone=f"^PRN^CP^^^{UK_MOBILE}")


def set_region(feed, *, phone_region: str = "", number_country: str | None = None) -> None:
    from sms.hl7.feed_setup import feed_setup_forget
    from sms.models import PhoneNumber

    with tenant_scope(feed.tenant):
        SmsSettings.objects.filter(endpoint=feed.endpoint).update(phone_region=phone_region)
        if number_country:
            PhoneNumber.objects.filter(tenant=feed.tenant).update(country=number_country)
    feed_setup_forget()


def test_a_national_number_is_read_in_the_endpoints_patients_country(client, feed):
    set_region(feed, phone_region="GB")

    post(client, feed, uk_patient(feed, "R1"))

    [appointment] = stored(feed)
    assert appointment.phone == "+447400123456"
    assert {t.to for t in texts(feed)} == {"+447400123456"}


def test_without_a_setting_the_sending_numbers_country_is_the_patients(client, feed):
    set_region(feed, number_country="GB")

    post(client, feed, uk_patient(feed, "R1"))

    assert stored(feed)[0].phone == "+447400123456"


def test_a_us_region_does_not_read_a_uk_national_number_as_american(client, feed):
    set_region(feed, number_country="US")

    post(client, feed, uk_patient(feed, "R1"))

    assert stored(feed)[0].phone == ""  # not a valid US number: no text rather than a stranger's phone
    assert texts(feed) == []


def test_a_number_with_its_country_code_is_read_whatever_the_region(client, feed):
    set_region(feed, phone_region="GB")

    post(client, feed, siu(ORACLE, control_id="C1", phone="+1 (312) 555-0187^PRN^CP"))

    assert stored(feed)[0].phone == "+13125550187"


def test_the_patients_country_is_refused_when_it_is_not_a_country(feed):
    from django.core.exceptions import ValidationError

    from sms.services.setup import sms_settings_update

    with tenant_scope(feed.tenant), pytest.raises(ValidationError) as refused:
        sms_settings_update(
            endpoint=feed.endpoint,
            phone_number=None,
            confirmations_enabled=True,
            reminders_enabled=False,
            reminder_lead_minutes=[],
            quiet_hours_start=time(21),
            quiet_hours_end=time(8),
            default_language="en",
            phone_region="XX",
        )
    assert "phone_region" in refused.value.message_dict


# --- item 10: the patient's time --------------------------------------------------------------


def dispatched_bodies() -> list[str]:
    from sms.backends import locmem
    from sms.services.dispatch import messages_dispatch

    messages_dispatch()
    return [text.body for text in locmem.outbox]


def test_a_utc_stamped_message_is_texted_in_the_departments_time_and_outside_its_quiet_hours(
    client, org_a, settings
):
    # The demo: a 05:41 New York visit sent by an engine in UTC ("10:41+0000"),
    # the message arriving at 03:41 New York: no text before 08:00 there, and "5:41 AM EST".
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 1000
    with time_machine.travel(datetime(2026, 12, 5, 8, 41, tzinfo=UTC), tick=False):
        feed = set_up_feed(org_a, time_zone="America/New_York")
        body = siu(EPIC, control_id="E1", msh7="20261205084100+0000", start="20261206104100+0000",
                   end="20261206111100+0000")
        assert code(post(client, feed, body)) == "AA"
        [appointment] = stored(feed)
        assert appointment.time_zone == "America/New_York"
        [confirmation] = texts(feed, kind=MessageKind.CONFIRMATION)
        assert confirmation.send_at == datetime(2026, 12, 5, 13, 0, tzinfo=UTC)  # 08:00 EST, not 03:41
        reminders = texts(feed, kind=MessageKind.REMINDER)
        # Both fall in New York's quiet hours (21:00-08:00) and move to the nearest allowed minute.
        assert [r.send_at for r in reminders] == [
            datetime(2026, 12, 5, 13, 0, tzinfo=UTC),  # the day before at 05:41 EST -> 08:00 EST
            datetime(2026, 12, 6, 1, 59, tzinfo=UTC),  # an hour before, 04:41 EST -> 20:59 EST the evening before
        ]

    with time_machine.travel(datetime(2026, 12, 5, 13, 0, 5, tzinfo=UTC), tick=False):
        [body_text] = dispatched_bodies()  # the confirmation; the reminder due too is held by the daily cap
    assert "booked for Sun Dec 6 at 5:41 AM EST." in body_text


@pytest.mark.parametrize(
    ("zone", "moment", "language", "date", "clock"),
    [
        ("America/New_York", datetime(2026, 12, 6, 10, 41, tzinfo=UTC), "en", "Sun Dec 6", "5:41 AM EST"),
        ("America/New_York", datetime(2027, 7, 4, 16, 5, tzinfo=UTC), "en", "Sun Jul 4", "12:05 PM EDT"),
        ("Europe/Paris", datetime(2027, 1, 12, 23, 30, tzinfo=UTC), "en", "Wed Jan 13", "12:30 AM CET"),
        ("America/Sao_Paulo", datetime(2027, 1, 12, 15, 0, tzinfo=UTC), "en", "Tue Jan 12", "12:00 PM UTC-3"),
        ("Asia/Kolkata", datetime(2027, 1, 12, 4, 0, tzinfo=UTC), "en", "Tue Jan 12", "9:30 AM IST"),
        ("America/Mexico_City", datetime(2027, 1, 12, 23, 15, tzinfo=UTC), "es", "mar 12 ene", "17:15 CST"),
    ],
)
def test_times_in_texts_are_written_in_the_appointments_zone(zone, moment, language, date, clock):
    from sms.texts import patient_date, patient_time

    assert patient_date(moment, ZoneInfo(zone), language) == date
    assert patient_time(moment, ZoneInfo(zone), language) == clock


def test_the_day_before_reminder_keeps_the_wall_clock_time_across_a_dst_change():
    from sms.scheduling import reminder_times

    new_york = ZoneInfo("America/New_York")
    start = datetime(2027, 11, 7, 9, 0, tzinfo=new_york)  # clocks went back at 02:00 that morning

    [(_, day_before), (_, hour_before)] = reminder_times(start, [1440, 60], new_york)

    assert day_before.astimezone(new_york).replace(tzinfo=None) == datetime(2027, 11, 6, 9, 0)
    assert start - day_before == timedelta(hours=25)
    assert start - hour_before == timedelta(hours=1)
