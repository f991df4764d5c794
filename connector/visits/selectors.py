"""Reading visits for the API: the list, one visit's detail, events and the live status.

Every function runs inside the caller's tenant scope (the API enters it from the URL).
Nothing here returns a name or a phone number: participants are the opaque IDs of the
visit's events, clinicians also by their EHR user ID (fhirUser).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from connector.models import (
    EventKind,
    ParticipantRole,
    Visit,
    VisitEvent,
    VisitState,
    WriteBack,
)
from connector.services.visits import participant_id_for, presence_from_events

WAITING = "waiting"
# The API's states: the stored ones, with "scheduled" split in two. A scheduled visit is
# "waiting" once someone has arrived (entered the lobby or joined) and it has not started.
API_STATES = ("scheduled", WAITING, "in_progress", "completed", "no_show")
# Live status looks at visits with an event this recent; older presence is stale.
LIVE_WINDOW = timedelta(hours=12)


def visits_for_api() -> QuerySet[Visit]:
    """Visits with `time`, the API's sort key: the scheduled start, or when the visit was made for
    an unscheduled one. The date range, the ordering and the cursor use it (index visit_api_time)."""
    return (
        Visit.objects.select_related("endpoint")
        .annotate(time=Coalesce("scheduled_start", "created_at"))
        .defer("primary_clinician", "meeting")
    )


def visits_in_state(queryset: QuerySet[Visit], state: str) -> QuerySet[Visit]:
    if state == WAITING:
        return queryset.filter(state=VisitState.SCHEDULED, arrived_at__isnull=False)
    if state == VisitState.SCHEDULED:
        return queryset.filter(state=VisitState.SCHEDULED, arrived_at__isnull=True)
    return queryset.filter(state=state)


def api_state(visit: Visit) -> str:
    if visit.state == VisitState.SCHEDULED and visit.arrived_at is not None:
        return WAITING
    return visit.state


def visit_participants(visit: Visit, events: list[VisitEvent]) -> list[dict]:
    """Each participant with their role, lobby times and every join/leave, in order of arrival."""
    clinician_ids = {}
    if visit.primary_clinician_ehr_id:
        clinician_ids[participant_id_for(ParticipantRole.CLINICIAN, visit.primary_clinician_ehr_id)] = (
            visit.primary_clinician_ehr_id
        )
    people: dict[str, dict] = {}
    for event in events:
        if event.kind == EventKind.DEVICE_TEST:
            continue
        person = people.setdefault(
            event.participant_id,
            {
                "participant_id": event.participant_id,
                "role": event.role,
                "ehr_user_id": clinician_ids.get(event.participant_id, ""),
                "lobby_entered_at": None,
                "admitted_at": None,
                "sessions": [],
            },
        )
        if event.kind == EventKind.LOBBY_ENTERED and person["lobby_entered_at"] is None:
            person["lobby_entered_at"] = event.occurred_at
        elif event.kind == EventKind.ADMITTED and person["admitted_at"] is None:
            person["admitted_at"] = event.occurred_at
        elif event.kind == EventKind.JOINED:
            sessions = person["sessions"]
            if not sessions or sessions[-1]["left_at"] is not None:
                sessions.append({"joined_at": event.occurred_at, "left_at": None})
        elif event.kind == EventKind.LEFT:
            sessions = person["sessions"]
            if sessions and sessions[-1]["left_at"] is None:
                sessions[-1]["left_at"] = event.occurred_at
    return list(people.values())


def visit_detail(visit: Visit) -> dict:
    """What the detail endpoint adds to a list row: participants, device tests, write-back."""
    events = list(visit.events.order_by("occurred_at", "pk"))
    write_backs = list(
        WriteBack.objects.filter(visit=visit)
        .order_by("created_at", "pk")
        .values("kind", "state", "attempts", "last_error", "created_at", "sent_at", "next_attempt_at")
    )
    summary: dict[str, int] = {}
    for row in write_backs:
        summary[row["state"]] = summary.get(row["state"], 0) + 1
    return {
        "participants": visit_participants(visit, events),
        "device_tests": [
            {
                "participant_id": e.participant_id,
                "role": e.role,
                "tested_at": e.occurred_at,
                "result": e.data,
            }
            for e in events
            if e.kind == EventKind.DEVICE_TEST
        ],
        "write_back": {
            "enabled": visit.endpoint.write_back_enabled,
            "counts": summary,
            "writes": write_backs,
        },
    }


def live_status() -> dict:
    """Who is in which visit's lobby, and who is connected, now: two queries whatever the size.

    Visits count when they had an event in the last LIVE_WINDOW and someone is still in the
    lobby or connected; presence is replayed from all of their events.
    """
    since = timezone.now() - LIVE_WINDOW
    # No filter on the visit's state: a patient still waiting after the scheduled end makes
    # the visit a no-show, and is exactly who a wall board must show. Presence decides.
    live_ids = VisitEvent.objects.filter(occurred_at__gte=since).order_by().values("visit_id").distinct()
    events = (
        VisitEvent.objects.filter(visit_id__in=live_ids)
        .select_related("visit__endpoint")
        .order_by("visit_id", "occurred_at", "pk")
    )
    by_visit: dict[int, list[VisitEvent]] = {}
    for event in events:
        by_visit.setdefault(event.visit_id, []).append(event)
    visits = []
    for visit_events in by_visit.values():
        visit = visit_events[0].visit
        lobby, present = presence_from_events(visit_events)
        if not lobby and not present:
            continue
        visits.append(
            {
                "id": visit.public_id,
                "state": api_state(visit),
                "department_id": visit.department_id,
                "endpoint": visit.endpoint_id,
                "environment": visit.endpoint.environment,
                "scheduled_start": visit.scheduled_start,
                "in_lobby": [{"participant_id": p, **info} for p, info in lobby.items()],
                "connected": [{"participant_id": p, **info} for p, info in present.items()],
            }
        )
    visits.sort(key=lambda v: (v["department_id"], v["scheduled_start"] or since, v["id"]))
    return {
        "visits": visits,
        "waiting": sum(len(v["in_lobby"]) for v in visits),
        "connected": sum(len(v["connected"]) for v in visits),
    }
