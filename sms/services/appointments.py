"""Appointments from the scheduling feed, and the texts they cause.

The HL7 layer (sms/hl7/) parses and checks a message, then calls
`appointment_apply` with a `SchedulingMessage`. This module decides what the
message changes and which texts to schedule; sending is the dispatcher's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, transaction
from django.utils import timezone

from connector.background import queue_after_commit
from connector.models import FhirEndpoint
from connector.row_insert import rows_insert
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

NEW, RESCHEDULE, MODIFY, CANCEL, DELETE, NO_SHOW = "S12", "S13", "S14", "S15", "S17", "S26"
SUPPORTED_EVENTS = {NEW, RESCHEDULE, MODIFY, CANCEL, DELETE, NO_SHOW}
_STATUS_FOR_EVENT = {
    NEW: AppointmentStatus.BOOKED,
    RESCHEDULE: AppointmentStatus.BOOKED,
    MODIFY: AppointmentStatus.BOOKED,
    CANCEL: AppointmentStatus.CANCELLED,
    DELETE: AppointmentStatus.DELETED,
    NO_SHOW: AppointmentStatus.NO_SHOW,
}


@dataclass(frozen=True)
class SchedulingMessage:
    """What the HL7 parser found in one SIU message (no names, no clinical data)."""

    event: str  # S12, S13, S14, S15, S17, S26
    message_time: datetime  # MSH-7, aware
    sending_facility: str  # MSH-4
    external_id: str  # SCH-1 or SCH-2
    start: datetime  # aware
    end: datetime  # aware
    phone: str = ""  # E.164, or empty when PID-13 has no usable mobile number
    language: str = "en"
    department: str = ""
    time_zone: str = ""  # IANA name (or Etc/GMT±N from a fixed offset); empty: the endpoint's


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
) -> AppliedMessage:
    """Apply one scheduling message. Out-of-order messages never undo newer state.

    `sms_settings` (the endpoint's, with its phone number) and `consent` are read
    here unless the caller already has them, and `is_opted_out` may answer from
    what the caller keeps (the feed does both: see sms/hl7/feed_setup.py).

    `assume_new=True` inserts the appointment without looking for it first (one
    query fewer, for an S12, which nearly always books a new one). If it exists
    after all, AppointmentAlreadyStored is raised with the transaction spoiled:
    the caller rolls back and calls again with `assume_new=False`.
    """
    if message.event not in SUPPORTED_EVENTS:
        raise ValueError(f"unsupported event {message.event}")
    tenant = endpoint.tenant
    # No savepoint when the caller's transaction is open (the feed's is): a failure
    # here rolls back the caller's work too, which is what the feed wants.
    with transaction.atomic(savepoint=False):
        appointment = None if assume_new else _stored_appointment(message)
        if appointment is not None and message.message_time < appointment.state_as_of:
            logger.info("appointment %s: message older than stored state ignored", appointment.pk)
            return AppliedMessage(appointment, False, [], "older than the state already stored; not applied")
        previous_start = appointment.start if appointment else None
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
                sending_facility=message.sending_facility,
                external_id=message.external_id,
            )
        appointment.start = message.start
        appointment.end = message.end
        appointment.status = _STATUS_FOR_EVENT[message.event]
        appointment.state_as_of = message.message_time
        appointment.time_zone = message.time_zone or endpoint.time_zone
        if message.department:
            appointment.department = message.department
        if message.language:
            appointment.language = message.language
        changed = list(_FIELDS_A_MESSAGE_SETS)
        if message.phone and not appointment.phone_purged_at and message.phone != appointment.phone:
            appointment.phone = message.phone
            appointment.phone_last_four = last_four(message.phone)
            changed += ["phone", "phone_last_four"]  # re-encrypted only when it changed
        # Two messages for a new appointment at once: the loser's insert fails on the
        # unique constraint. With assume_new the caller runs it again as an update;
        # otherwise the ingest answers AE and the EHR resends it.
        if appointment.pk is not None:
            appointment.save(update_fields=changed)
        elif assume_new:
            try:
                rows_insert([appointment])  # save()'s work at a fraction of its cost
            except IntegrityError as error:
                raise AppointmentAlreadyStored(message.external_id) from error
        else:
            rows_insert([appointment])
        scheduled = _schedule_texts(
            appointment, message.event, previous_start, sms_settings, consent, is_opted_out
        )
        if any(m.send_at <= timezone.now() for m in scheduled):
            _queue_dispatch_soon()
    return AppliedMessage(appointment, True, scheduled)


def _stored_appointment(message: SchedulingMessage) -> Appointment | None:
    """The appointment the message is about, locked until the transaction ends; None if new."""
    return next(
        iter(
            Appointment.objects.select_for_update().filter(
                sending_facility=message.sending_facility, external_id=message.external_id
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


def _schedule_texts(
    appointment: Appointment,
    event: str,
    previous_start: datetime | None,
    settings_row,
    consent,
    is_opted_out: Callable[[Tenant, tuple[str, ...]], bool],
) -> list[OutboundMessage]:
    now = timezone.now()
    if event in (CANCEL, DELETE, NO_SHOW):
        _cancel_pending(appointment, [MessageKind.REMINDER, MessageKind.CONFIRMATION, MessageKind.RESCHEDULE])
    elif event in (NEW, RESCHEDULE, MODIFY) and previous_start and previous_start != appointment.start:
        # (NEW too: an EHR that books a stored appointment again at another time.)
        _cancel_pending(appointment, [MessageKind.REMINDER])
    if appointment.start <= now:
        return []  # nothing is sent for an appointment in the past
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
    wanted = []  # (kind, when, dedupe key)
    if settings_row.confirmations_enabled:
        moved = bool(previous_start and previous_start != appointment.start)
        kind = {
            NEW: MessageKind.CONFIRMATION,
            RESCHEDULE: MessageKind.RESCHEDULE,
            MODIFY: MessageKind.RESCHEDULE if moved else MessageKind.CONFIRMATION,
            CANCEL: MessageKind.CANCELLATION,
        }.get(event)
        if kind:
            when = nearest_allowed(
                now,
                zone,
                settings_row.quiet_hours_start,
                settings_row.quiet_hours_end,
                not_before=now,
                not_after=appointment.start,
            )
            if when:
                wanted.append((kind, when, f"{appointment.pk}:{kind}:{appointment.state_as_of.isoformat()}"))
    if settings_row.reminders_enabled and event in (NEW, RESCHEDULE, MODIFY):
        for lead, at in reminder_times(appointment.start, settings_row.reminder_lead_minutes):
            when = nearest_allowed(
                at,
                zone,
                settings_row.quiet_hours_start,
                settings_row.quiet_hours_end,
                not_before=now,
                not_after=appointment.start,
            )
            if when is not None:
                key = f"{appointment.pk}:reminder:{lead}:{appointment.start.isoformat()}"
                wanted.append((MessageKind.REMINDER, when, key))
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
    rows_insert(messages, ignore_conflicts=True)  # bulk_create's work at a fraction of its cost
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
