"""Appointments from the scheduling feed, and the texts they cause.

The HL7 layer (sms/hl7/) parses and checks a message, then calls
`appointment_apply` with a `SchedulingMessage`. This module decides what the
message changes and which texts to schedule; sending is the dispatcher's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, transaction
from django.utils import timezone

from connector.background import queue_after_commit
from connector.models import FhirEndpoint
from connector.webhooks.models import EventType
from sms.models import (
    Appointment,
    AppointmentStatus,
    MessageKind,
    MessageState,
    OutboundMessage,
    SmsConsent,
    SmsSettings,
)
from sms.phones import last_four, number_hash, number_hashes
from sms.scheduling import nearest_allowed, reminder_times
from sms.selectors import UNREAD, number_is_opted_out, sending_blocker
from tenants.models import Tenant

logger = logging.getLogger(__name__)

NEW, RESCHEDULE, MODIFY, CANCEL, DISCONTINUE, DELETE, NO_SHOW = "S12", "S13", "S14", "S15", "S16", "S17", "S26"
SUPPORTED_EVENTS = {NEW, RESCHEDULE, MODIFY, CANCEL, DISCONTINUE, DELETE, NO_SHOW}
# Events that end an appointment, and the status each leaves. S16 (discontinued) is a cancellation.
_ENDING_EVENTS = {
    CANCEL: AppointmentStatus.CANCELLED,
    DISCONTINUE: AppointmentStatus.CANCELLED,
    DELETE: AppointmentStatus.DELETED,
    NO_SHOW: AppointmentStatus.NO_SHOW,
}
# Only these book again an appointment that was cancelled, deleted or missed; an S14 changes details.
_BOOKING_EVENTS = {NEW, RESCHEDULE}
_ENDED = {AppointmentStatus.CANCELLED, AppointmentStatus.DELETED, AppointmentStatus.NO_SHOW}


@dataclass(frozen=True)
class SchedulingMessage:
    """What the HL7 parser found in one SIU message (no names, no clinical data)."""

    event: str  # S12, S13, S14, S15, S16, S17, S26
    message_time: datetime  # MSH-7, aware
    sending_facility: str  # MSH-4: kept for support, not part of the identity
    external_id: str  # the EHR's appointment ID, from the endpoint's chosen field (SCH-2 by default)
    start: datetime  # aware
    end: datetime  # aware
    phone: str = ""  # E.164, or empty when PID-13 has no usable mobile number
    language: str = "en"
    department: str = ""
    time_zone: str = ""  # IANA name: the department's (the endpoint's); empty: the endpoint's
    patient: str = ""  # PID-3 (identifier^authority): only its keyed hash is stored
    id_field: str = "SCH-2"  # where external_id was read, for the error that names it


# What a message can change on a stored appointment (never its organization, endpoint or identity).
_FIELDS_A_MESSAGE_SETS = (
    "start",
    "end",
    "status",
    "state_as_of",
    "time_zone",
    "department",
    "language",
    "updated_at",
)


@dataclass(frozen=True)
class AppliedMessage:
    appointment: Appointment
    applied: bool  # False when the message was older than the stored state
    scheduled: list[OutboundMessage]
    note: str = ""


class AppointmentIdReused(Exception):
    """The appointment ID is stored for another patient: the field holds a constant, not an ID.

    Rule (docs/scheduling-feed.md, "Appointment identity"): an ID is a constant when the
    appointment stored under it, in the same organization and environment, belongs to a
    different patient (PID-3's identifier and assigning authority, compared by keyed hash).
    Applying it would merge two patients' appointments, so it is refused (AE) and nothing
    changes. Messages without PID-3 are not checked.
    """

    def __init__(self, id_field: str) -> None:
        super().__init__(id_field)
        self.id_field = id_field
        self.reason = (
            f"{id_field} holds an appointment ID already used for another patient: it is not the "
            "appointment's own ID. Send a unique ID there, or change the appointment ID field in the "
            "SMS settings"
        )


def patient_key(identifier: str) -> str:
    """Keyed hash of the patient's identifier: equal for the same patient, reveals nothing."""
    return number_hash(f"patient:{identifier}") if identifier else ""


class AppointmentAlreadyStored(Exception):
    """`appointment_apply(assume_new=True)` found the appointment already stored.

    The insert failed on the unique constraint, so the caller's transaction can only
    be rolled back: run it again with `assume_new=False`.
    """


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def appointment_apply(
    *,
    endpoint: FhirEndpoint,
    message: SchedulingMessage,
    sms_settings: SmsSettings | None | object = UNREAD,
    consent: SmsConsent | None | object = UNREAD,
    is_opted_out: Callable[[Tenant, tuple[str, ...]], bool] = number_is_opted_out,
    assume_new: bool = False,
    webhook_event_types: frozenset[str] | None = None,
) -> AppliedMessage:
    """Apply one scheduling message. Out-of-order messages never undo newer state.

    `sms_settings` (the endpoint's, with its phone number) and `consent` are read
    here unless the caller already has them, and `is_opted_out` may answer from
    what the caller keeps (the feed does both: see sms/hl7/feed_setup.py).

    `assume_new=True` inserts the appointment without looking for it first (one
    query fewer, for an S12, which nearly always books a new one). If it exists
    after all, AppointmentAlreadyStored is raised with the transaction spoiled:
    the caller rolls back and calls again with `assume_new=False`.

    `webhook_event_types`, when the caller knows them (the feed keeps them with the
    setup), are the event types the organization's webhook endpoints want: a new
    appointment none of them wants emits nothing and costs no query.
    """
    if message.event not in SUPPORTED_EVENTS:
        raise ValueError(f"unsupported event {message.event}")
    tenant = endpoint.tenant
    # No savepoint when the caller's transaction is open (the feed's is): a failure
    # here rolls back the caller's work too, which is what the feed wants.
    with transaction.atomic(savepoint=False):
        appointment = None if assume_new else _stored_appointment(endpoint, message)
        patient = patient_key(message.patient)
        if appointment is not None and patient and appointment.patient_key and patient != appointment.patient_key:
            raise AppointmentIdReused(message.id_field)
        not_applied = _out_of_order(appointment, message)
        if not_applied:
            logger.info("appointment %s: message not applied (ordering)", appointment.pk)
            return AppliedMessage(appointment, False, [], not_applied)
        previous_start = appointment.start if appointment else None
        previous_status = appointment.status if appointment else None
        if appointment is not None:
            appointment.tenant = tenant  # the same row, already loaded: no query when read
            if appointment.endpoint_id == endpoint.pk:
                appointment.endpoint = endpoint
            else:
                sms_settings = UNREAD  # the settings of the appointment's own endpoint apply
        if appointment is None:
            appointment = Appointment(
                tenant=tenant,
                endpoint=endpoint,
                environment=endpoint.environment,
                sending_facility=message.sending_facility,
                external_id=message.external_id,
                patient_key=patient,
            )
        appointment.start = message.start
        appointment.end = message.end
        appointment.status = _status_after(previous_status, message.event)
        appointment.state_as_of = message.message_time
        appointment.time_zone = message.time_zone or endpoint.time_zone
        if message.department:
            appointment.department = message.department
        if message.language:
            appointment.language = message.language
        changed = list(_FIELDS_A_MESSAGE_SETS)
        phone_changed = False
        if patient and not appointment.patient_key:
            appointment.patient_key = patient
            changed.append("patient_key")
        if message.phone and not appointment.phone_purged_at and message.phone != appointment.phone:
            appointment.phone = message.phone
            appointment.phone_last_four = last_four(message.phone)
            changed += ["phone", "phone_last_four"]  # re-encrypted only when it changed
            phone_changed = previous_status is not None
        # Two messages for a new appointment at once: the loser's insert fails on the
        # unique constraint. With assume_new the caller runs it again as an update;
        # otherwise the ingest answers AE and the EHR resends it.
        if appointment.pk is not None:
            appointment.save(update_fields=changed)
        elif assume_new:
            try:
                appointment.save(force_insert=True)
            except IntegrityError as error:
                raise AppointmentAlreadyStored(message.external_id) from error
        else:
            appointment.save(force_insert=True)
        if previous_status is None and (
            webhook_event_types is None or EventType.VISIT_SCHEDULED in webhook_event_types
        ):
            # visit.scheduled commits with the new appointment (and rolls back with it).
            from connector.webhooks.events import emit_visit_scheduled

            emit_visit_scheduled(appointment=appointment)
        scheduled = _schedule_texts(
            appointment,
            message.event,
            previous_start,
            previous_status,
            sms_settings,
            consent,
            is_opted_out,
            phone_changed,
        )
        if any(m.send_at <= timezone.now() for m in scheduled):
            _queue_dispatch_soon()
    return AppliedMessage(appointment, True, scheduled)


def _out_of_order(appointment: Appointment | None, message: SchedulingMessage) -> str:
    """Why the message must not be applied given the stored state (the note of its record), or "".

    The order is total: MSH-7, then arrival. An older message never undoes newer
    state. At the same MSH-7 (senders stamp to the second, and an EHR may send an
    S14 in the second it cancels) messages apply in arrival order, except that
    nothing but another ending event changes an appointment that one ended.
    """
    if appointment is None:
        return ""
    if message.message_time < appointment.state_as_of:
        return "older than the state already stored; not applied"
    if (
        message.message_time == appointment.state_as_of
        and appointment.status in _ENDED
        and message.event not in _ENDING_EVENTS
    ):
        return (
            "same MSH-7 as the cancellation already stored: a message of the same second does not "
            "undo it; not applied"
        )
    return ""


def _status_after(previous: str | None, event: str) -> str:
    """S15/S16 cancel, S17 deletes, S26 marks a no-show; S12/S13 (re)book; S14 keeps what it finds."""
    if event in _ENDING_EVENTS:
        return _ENDING_EVENTS[event]
    if previous in _ENDED and event not in _BOOKING_EVENTS:
        return previous
    return AppointmentStatus.BOOKED


def _stored_appointment(endpoint: FhirEndpoint, message: SchedulingMessage) -> Appointment | None:
    """The appointment the message is about, locked until the transaction ends; None if new.

    Identity is the EHR's ID within the organization and environment: not the endpoint
    (the feed's endpoint may change) and not the sending facility.
    """
    return next(
        iter(
            Appointment.objects.select_for_update().filter(
                tenant=endpoint.tenant_id, environment=endpoint.environment, external_id=message.external_id
            )[:1]  # unique: no ORDER BY needed, unlike first()
        ),
        None,
    )


_DISPATCH_QUEUED_AT = [0.0]
DISPATCH_DEBOUNCE_SECONDS = 1.0


def _queue_dispatch_soon() -> None:
    """A confirmation is due now: queue the dispatcher rather than wait for its schedule.

    At most once a second per process: a burst of messages needs one dispatch,
    not one each (what a queued run misses, the next run or the minute's
    schedule sends).
    """
    now = time.monotonic()
    if now - _DISPATCH_QUEUED_AT[0] < DISPATCH_DEBOUNCE_SECONDS:
        return
    _DISPATCH_QUEUED_AT[0] = now
    queue_after_commit("sms.tasks.messages_dispatch")


def _cancel_pending(appointment: Appointment, kinds: list[str]) -> int:
    return OutboundMessage.objects.filter(
        appointment=appointment, kind__in=kinds, state=MessageState.SCHEDULED
    ).update(state=MessageState.CANCELLED, error="superseded by a later scheduling message")


@dataclass(frozen=True)
class _Change:
    """What a message changed for the patient: only this decides which texts go."""

    booked: bool  # new, or booked again after it ended
    moved: bool  # booked before and after, at another start
    ended: bool  # booked before, cancelled/deleted/no-show now
    new_number: bool  # booked, and the patient's number changed

    @property
    def anything(self) -> bool:
        return self.booked or self.moved or self.ended or self.new_number


def _change(
    appointment: Appointment, previous_start: datetime | None, previous_status: str | None, phone_changed: bool
) -> _Change:
    booked_now = appointment.status == AppointmentStatus.BOOKED
    booked_before = previous_status == AppointmentStatus.BOOKED
    return _Change(
        booked=booked_now and not booked_before,
        moved=booked_now and booked_before and previous_start != appointment.start,
        ended=booked_before and appointment.status in _ENDED,
        new_number=booked_now and booked_before and phone_changed,
    )


def _schedule_texts(
    appointment: Appointment,
    event: str,
    previous_start: datetime | None,
    previous_status: str | None,
    settings_row,
    consent,
    is_opted_out: Callable[[Tenant, tuple[str, ...]], bool],
    phone_changed: bool = False,
) -> list[OutboundMessage]:
    """The texts a message causes: none unless it changed something the patient is told about.

    A resent or renumbered message that changes nothing sends nothing. A booking
    (or booking again) sends a confirmation and schedules reminders; a move sends
    one "changed" text (S12, S13 or S14 alike) and schedules the reminders again;
    a new number gets the confirmation and the reminders; S15/S16 send one
    cancellation. Every text still to come that no longer fits is cancelled first.
    """
    now = timezone.now()
    change = _change(appointment, previous_start, previous_status, phone_changed)
    if appointment.status in _ENDED:
        _cancel_pending(appointment, [MessageKind.REMINDER, MessageKind.CONFIRMATION, MessageKind.RESCHEDULE])
    elif change.moved or change.new_number:
        # A confirmation still waiting (quiet hours) was never read: the patient gets one
        # confirmation of the new time instead of "moved".
        unconfirmed = _cancel_pending(appointment, [MessageKind.CONFIRMATION]) > 0
        _cancel_pending(appointment, [MessageKind.REMINDER, MessageKind.RESCHEDULE])
        if unconfirmed:
            change = replace(change, booked=True)
    if not change.anything or appointment.start <= now:
        return []  # nothing new to tell, or an appointment in the past
    if settings_row is UNREAD:
        settings_row = (
            SmsSettings.objects.filter(endpoint=appointment.endpoint).select_related("phone_number").first()
        )
    if (
        settings_row is None
        or sending_blocker(appointment.tenant, settings_row, consent)
        or not appointment.phone
    ):
        return []
    hashed = number_hash(appointment.phone)
    if is_opted_out(appointment.tenant, number_hashes(appointment.phone)):
        return []
    zone = _zone(appointment.time_zone)
    # Each key names the message that caused the text (MSH-7): a later change has its own
    # texts even when it returns to an earlier time; the same message never makes two.
    version = f"{appointment.start.isoformat()}:{appointment.state_as_of.isoformat()}"
    wanted = []  # (kind, when, dedupe key)
    if change.booked or change.new_number:
        kind = MessageKind.CONFIRMATION
    elif change.moved:
        kind = MessageKind.RESCHEDULE
    elif change.ended and event in (CANCEL, DISCONTINUE):
        kind = MessageKind.CANCELLATION
    else:
        kind = None
    if kind and settings_row.confirmations_enabled:
        when = nearest_allowed(
            now,
            zone,
            settings_row.quiet_hours_start,
            settings_row.quiet_hours_end,
            not_before=now,
            not_after=appointment.start,
        )
        if when:
            wanted.append((kind, when, f"{appointment.pk}:{kind}:{version}"))
    if settings_row.reminders_enabled and appointment.status == AppointmentStatus.BOOKED:
        for lead, at in reminder_times(appointment.start, settings_row.reminder_lead_minutes, zone):
            when = nearest_allowed(
                at,
                zone,
                settings_row.quiet_hours_start,
                settings_row.quiet_hours_end,
                not_before=now,
                not_after=appointment.start,
            )
            if when is not None:
                wanted.append((MessageKind.REMINDER, when, f"{appointment.pk}:reminder:{lead}:{version}"))
    messages = [
        OutboundMessage(
            tenant=appointment.tenant,
            appointment=appointment,
            phone_number=settings_row.phone_number,
            kind=kind,
            to=appointment.phone,
            to_last_four=appointment.phone_last_four,
            to_hash=hashed,
            send_at=when,
            dedupe_key=key,
        )
        for kind, when, key in wanted
    ]
    # One INSERT for all of them; a text already scheduled by the same message
    # (same dedupe key) is skipped by the unique constraint.
    OutboundMessage.objects.bulk_create(messages, ignore_conflicts=True)
    return messages


def appointment_phones_purge(*, grace_hours: int | None = None) -> int:
    """Forget patients' numbers once their appointment is over plus a grace period (scheduled).

    Texts without an appointment (answers to STOP/HELP, guest invites) lose their
    number after the same grace period from when they were made.
    """
    from django.conf import settings

    grace = timezone.timedelta(hours=settings.SMS_PHONE_GRACE_HOURS if grace_hours is None else grace_hours)
    cutoff = timezone.now() - grace
    OutboundMessage.objects.filter(appointment__isnull=True, created_at__lt=cutoff).exclude(to="").update(
        to="", body=""
    )
    due = Appointment.objects.filter(end__lt=cutoff, phone_purged_at__isnull=True)
    count = 0
    for appointment in due.iterator():
        OutboundMessage.objects.filter(appointment=appointment).update(to="", body="")
        OutboundMessage.objects.filter(appointment=appointment, state=MessageState.SCHEDULED).update(
            state=MessageState.CANCELLED, error="the appointment is over"
        )
        appointment.phone = ""
        appointment.phone_purged_at = timezone.now()
        appointment.save(update_fields=["phone", "phone_purged_at"])
        count += 1
    return count
