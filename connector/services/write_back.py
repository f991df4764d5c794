"""EHR write-back: visit events become standard FHIR writes, sent later by a task.

This module decides *what* to write (one WriteBack row per event and kind,
deduplicated). Sending lives in connector/write_back_sender.py.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from connector.background import queue_after_commit
from connector.models import EventKind, Visit, VisitEvent, WriteBack

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
    return queued
