"""EHR write-back: visit events become standard FHIR writes, sent later by a task.

This module decides *what* to write (one WriteBack row per event and kind,
deduplicated). Sending lives in connector/write_back_sender.py.

- each connect, disconnect and device test: a Communication about the Encounter;
- the visit's start and end: the Encounter's status and period;
- the Appointment's status: `arrived` when the patient first joins, `fulfilled`
  when the visit ends, `noshow` when nobody came by the scheduled end;
- when the endpoint asks for it, the patient's join link on the Appointment,
  once, when the visit is made.

Only visits whose endpoint has write-back on; Appointment writes only for visits
that found a FHIR Appointment (never for unscheduled ones).
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from connector.background import queue_after_commit
from connector.models import EventKind, ParticipantRole, Visit, VisitEvent, WriteBack, WriteBackState

logger = logging.getLogger(__name__)

_KIND_FOR_EVENT = {
    EventKind.JOINED: WriteBack.Kind.PARTICIPANT_CONNECTED,
    EventKind.LEFT: WriteBack.Kind.PARTICIPANT_DISCONNECTED,
    EventKind.DEVICE_TEST: WriteBack.Kind.DEVICE_TEST,
}


def _queue(*, visit: Visit, kind: str, dedupe_key: str, payload: dict) -> WriteBack | None:
    try:
        with transaction.atomic():
            write = WriteBack.objects.create(
                tenant=visit.tenant, visit=visit, kind=kind, dedupe_key=dedupe_key, payload=payload
            )
    except IntegrityError:
        return None  # already queued: events may arrive twice
    pk = write.pk
    queue_after_commit("connector.tasks.write_back_send", pk)
    return write


def write_back_queue_for_event(*, event: VisitEvent) -> list[WriteBack]:
    """Queue the writes an event causes, when write-back is on for the visit's endpoint."""
    visit = event.visit
    if not visit.endpoint.write_back_enabled:
        return []
    queued = []
    kind = _KIND_FOR_EVENT.get(event.kind)
    if event.data.get("from") == "lobby":
        # Someone who never connected leaving the lobby is no disconnection (services/presence.py).
        kind = None
    if kind is not None:
        payload = {
            "event_id": event.event_id,
            "role": event.role,
            "participant_id": event.participant_id,
            "occurred_at": event.occurred_at.isoformat(),
        }
        if event.kind == EventKind.DEVICE_TEST:
            payload["result"] = event.data
        write = _queue(visit=visit, kind=kind, dedupe_key=f"{kind}:{event.event_id}", payload=payload)
        if write:
            queued.append(write)
    if event.kind == EventKind.JOINED and event.role == ParticipantRole.PATIENT:
        queued += _appointment_status(visit, "arrived")
    # Visit start and end follow from the derived figures; one write each per value.
    if visit.started_at:
        write = _queue(
            visit=visit,
            kind=WriteBack.Kind.VISIT_STARTED,
            dedupe_key=f"visit_started:{visit.pk}:{visit.started_at.isoformat()}",
            payload={"started_at": visit.started_at.isoformat()},
        )
        if write:
            queued.append(write)
    if visit.ended_at:
        write = _queue(
            visit=visit,
            kind=WriteBack.Kind.VISIT_ENDED,
            dedupe_key=f"visit_ended:{visit.pk}:{visit.ended_at.isoformat()}",
            payload={"started_at": visit.started_at.isoformat(), "ended_at": visit.ended_at.isoformat()},
        )
        if write:
            queued.append(write)
        queued += _appointment_status(visit, "fulfilled")
    return queued


def _appointment_status(visit: Visit, status: str) -> list[WriteBack]:
    """One write per visit and status: a patient who joins twice arrives once."""
    if not visit.fhir_appointment_id:
        return []  # unscheduled: the EHR has no appointment to update
    write = _queue(
        visit=visit,
        kind=WriteBack.Kind.APPOINTMENT_STATUS,
        dedupe_key=f"appointment_status:{visit.pk}:{status}",
        payload={"status": status},
    )
    return [write] if write else []


def write_back_queue_for_no_show(*, visit: Visit) -> list[WriteBack]:
    """Nobody came by the scheduled end: the Appointment becomes `noshow`."""
    if not visit.endpoint.write_back_enabled:
        return []
    return _appointment_status(visit, "noshow")


def write_back_queue_for_new_visit(*, visit: Visit) -> list[WriteBack]:
    """A new visit: its join link goes on the Appointment when the endpoint asks for it."""
    endpoint = visit.endpoint
    if not (endpoint.write_back_enabled and endpoint.write_join_link and visit.fhir_appointment_id):
        return []
    # The link itself is made when it is sent: a signed link is a credential, not kept in a row.
    write = _queue(visit=visit, kind=WriteBack.Kind.JOIN_LINK, dedupe_key=f"join_link:{visit.pk}", payload={})
    return [write] if write else []


def write_backs_needing_attention():
    """The organization's writes that failed, or that failed and wait to be tried again (scoped)."""
    return (
        WriteBack.objects.filter(Q(state=WriteBackState.FAILED) | ~Q(last_error=""))
        .exclude(state=WriteBackState.SENT)
        .select_related("visit__endpoint")
        .order_by("-created_at")
    )


def write_backs_retry(*, pks) -> tuple[int, int]:
    """Queue these writes again now; returns (queued, left alone because they are being sent)."""
    now = timezone.now()
    # Never a write that is being sent now (its lease has not ended): it would be written twice.
    retryable = Q(state__in=[WriteBackState.PENDING, WriteBackState.FAILED]) | Q(
        state=WriteBackState.SENDING, next_attempt_at__lte=now
    )
    queued = [
        pk
        for pk in pks
        if WriteBack.objects.filter(retryable, pk=pk).update(
            state=WriteBackState.PENDING, next_attempt_at=now
        )
    ]
    for pk in queued:
        queue_after_commit("connector.tasks.write_back_send", pk)
    busy = WriteBack.objects.filter(pk__in=pks, state=WriteBackState.SENDING, next_attempt_at__gt=now).count()
    return len(queued), busy
