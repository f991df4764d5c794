"""What the visit pages do for participants: device tests, the lobby, admission, guest invites, demo events.

Every function here runs inside `tenant_scope(visit.tenant)`; the callers (the
token-reached pages in connector/visits/pages.py) enter it. Events go through
`services.visits.event_record`, so each one is stored once and the visit's
derived figures (state, start, end, lobby wait) follow.

Event IDs are built here, never taken as they come from a browser: a browser's
random ID is always namespaced by visit and participant, so it can neither
collide with nor replay another visit's event.
"""

from __future__ import annotations

import secrets
import uuid

from django.db import transaction
from django.utils import timezone

from connector.models import (
    EventKind,
    EventSource,
    GuestInvite,
    Meeting,
    ParticipantRole,
    Visit,
    VisitEvent,
)
from connector.services.visits import event_record, visit_presence

DEVICE_CHECKS: tuple[str, ...] = ("camera", "microphone", "speaker")
DEVICE_OUTCOMES: tuple[str, ...] = ("ok", "failed", "skipped")
# A round trip slower than a minute is no measurement: the page gives up long before.
MAX_CONNECTION_MS = 60_000

LOBBY_WAITING_FOR_CLINICIAN = "waiting_for_clinician"
LOBBY_WAITING_FOR_ADMISSION = "waiting_for_admission"
LOBBY_ADMITTED = "admitted"

DEMO_EVENT_KINDS: tuple[str, ...] = (EventKind.JOINED, EventKind.LEFT)

_INVITE_DISPLAY_NAMES = {
    GuestInvite.Kind.CLINICIAN: "Clinician",
    GuestInvite.Kind.FAMILY: "Family member",
    GuestInvite.Kind.INTERPRETER: "Interpreter",
}


class InvalidField(ValueError):
    """A request field that is missing or wrong; `field` names it, `message` says what is expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotInLobby(ValueError):
    """Admission asked for someone who never entered this visit's lobby."""


class InviteLimitReached(Exception):
    """No guest link now: the organization's limit of guests per visit is reached, or the visit is
    over (`VisitOver`); `message` says so and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VisitOver(InviteLimitReached):
    """A guest link was asked for a visit that has ended: a guest joining would start it again."""


def display_name_for(*, role: str, invite_kind: str | None = None) -> str:
    """The only name a participant ever gets: a role label, never a person's name."""
    if role == ParticipantRole.CLINICIAN:
        return "Clinician"
    if role == ParticipantRole.PATIENT:
        return "Patient"
    return _INVITE_DISPLAY_NAMES.get(invite_kind, "Guest")


def client_event_id_clean(value: object, *, field: str = "event_id") -> str:
    """A browser-made event ID: a UUID, in its canonical form."""
    if not isinstance(value, str) or len(value) != 36:
        raise InvalidField(field, f"{field} must be a UUID such as 3f2b8c1e-8d4a-4f7e-9a51-0c2d4e6f8a10.")
    try:
        return str(uuid.UUID(value))
    except ValueError as error:
        raise InvalidField(
            field, f"{field} must be a UUID such as 3f2b8c1e-8d4a-4f7e-9a51-0c2d4e6f8a10."
        ) from error


# --- device test -----------------------------------------------------------------------------


def device_test_result_clean(body: object) -> tuple[str, dict]:
    """The event ID and the result of a device test as the page POSTs it, checked field by field.

    The body is exactly {"event_id": "<uuid>", "camera": "ok|failed|skipped",
    "microphone": ..., "speaker": ..., "connection_ms": <int>}; anything else
    raises `InvalidField` naming the first wrong field.
    """
    if not isinstance(body, dict):
        raise InvalidField("body", "The body must be a JSON object.")
    allowed = {"event_id", *DEVICE_CHECKS, "connection_ms"}
    unknown = sorted(str(key) for key in body if key not in allowed)
    if unknown:
        raise InvalidField(
            unknown[0], f"{unknown[0]} is not a device test field; send only {', '.join(sorted(allowed))}."
        )
    event_id = client_event_id_clean(body.get("event_id"))
    result: dict = {}
    for check in DEVICE_CHECKS:
        value = body.get(check)
        if not isinstance(value, str) or value not in DEVICE_OUTCOMES:
            raise InvalidField(check, f"{check} must be one of {', '.join(DEVICE_OUTCOMES)}.")
        result[check] = value
    milliseconds = body.get("connection_ms")
    # bool is an int in Python; true is no measurement.
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int):
        raise InvalidField("connection_ms", "connection_ms must be a whole number of milliseconds.")
    if not 0 <= milliseconds <= MAX_CONNECTION_MS:
        raise InvalidField("connection_ms", f"connection_ms must be between 0 and {MAX_CONNECTION_MS}.")
    result["connection_ms"] = milliseconds
    return event_id, result


def device_test_record(
    *, visit: Visit, role: str, participant_id: str, client_event_id: str, result: dict
) -> tuple[VisitEvent, bool]:
    """Store one device test result; the same `client_event_id` again is the same event (a retry)."""
    return event_record(
        visit=visit,
        event_id=f"device-test:{visit.public_id}:{participant_id}:{client_event_id}",
        kind=EventKind.DEVICE_TEST,
        role=role,
        participant_id=participant_id,
        occurred_at=timezone.now(),
        source=EventSource.CONNECTOR,
        data=result,
    )


# --- lobby and admission -------------------------------------------------------------------------


def lobby_enter(*, visit: Visit, role: str, participant_id: str, attempt: int = 0) -> tuple[VisitEvent, bool]:
    """Record that a participant reached the lobby: once per participant, however often the page loads.

    `attempt` > 0 is a return after the participant was marked as left for silence (their
    page went quiet, services/presence.py): one more entry per such return.
    """
    suffix = f":{attempt}" if attempt else ""
    return event_record(
        visit=visit,
        event_id=f"lobby:{visit.public_id}:{participant_id}{suffix}",
        kind=EventKind.LOBBY_ENTERED,
        role=role,
        participant_id=participant_id,
        occurred_at=timezone.now(),
        source=EventSource.CONNECTOR,
    )


def participant_admit(*, visit: Visit, participant_id: str) -> tuple[VisitEvent, bool]:
    """A clinician admits someone waiting in the lobby; admitting twice is the same admission.

    Raises `NotInLobby` for an ID that never entered this visit's lobby.
    """
    entry = VisitEvent.objects.filter(
        visit=visit, kind=EventKind.LOBBY_ENTERED, participant_id=participant_id
    ).first()
    if entry is None:
        raise NotInLobby("Nobody with this participant ID entered this visit's lobby.")
    return event_record(
        visit=visit,
        event_id=f"admit:{visit.public_id}:{participant_id}",
        kind=EventKind.ADMITTED,
        role=entry.role,
        participant_id=participant_id,
        occurred_at=timezone.now(),
        source=EventSource.CONNECTOR,
    )


def lobby_status(*, visit: Visit, participant_id: str) -> str:
    """Where a waiting participant stands: admitted, waiting for admission (a clinician is in), or waiting."""
    if visit.events.filter(kind=EventKind.ADMITTED, participant_id=participant_id).exists():
        return LOBBY_ADMITTED
    connected = visit_presence(visit=visit)["connected"]
    if any(entry["role"] == ParticipantRole.CLINICIAN for entry in connected):
        return LOBBY_WAITING_FOR_ADMISSION
    return LOBBY_WAITING_FOR_CLINICIAN


class VisitNotStarted(Exception):
    """Ending was asked for a visit nobody is connected to and that never started."""


def visit_end(*, visit: Visit) -> int:
    """End a visit: record the departure of everyone still connected, which completes it.

    Each departure's event ID is tied to the join it closes, so ending twice records nothing
    new, while someone who rejoined after an end is disconnected by the next one. The meeting
    at the provider is not closed (no meeting backend offers that). Returns how many
    departures were recorded; raises `VisitNotStarted` when nobody is connected and the visit
    never started.
    """
    connected = visit_presence(visit=visit)["connected"]
    if not connected and visit.started_at is None:
        raise VisitNotStarted("Nobody has joined this visit yet, so there is nothing to end.")
    joins = {}
    for event in VisitEvent.objects.filter(visit=visit, kind=EventKind.JOINED).order_by("occurred_at", "pk"):
        joins[event.participant_id] = event  # the latest join of each participant
    recorded = 0
    for entry in connected:
        join = joins.get(entry["participant_id"])
        _, new = event_record(
            visit=visit,
            event_id=f"end:{visit.public_id}:{join.pk if join else entry['participant_id']}",
            kind=EventKind.LEFT,
            role=entry["role"],
            participant_id=entry["participant_id"],
            occurred_at=max(timezone.now(), join.occurred_at) if join else timezone.now(),
            source=EventSource.CONNECTOR,
        )
        recorded += int(new)
    return recorded


# --- guests --------------------------------------------------------------------------------------


def guest_invite_create(*, visit: Visit, kind: str, created_by_ehr_id: str = "") -> GuestInvite:
    """A new guest for the visit, within the organization's limit of guests per visit.

    Revoked invites do not count. The visit row is locked while counting, so
    two clinicians inviting at once cannot pass the limit together.
    """
    if kind not in GuestInvite.Kind.values:
        raise InvalidField("kind", f"kind must be one of {', '.join(GuestInvite.Kind.values)}.")
    with transaction.atomic():
        locked = Visit.objects.select_for_update().filter(pk=visit.pk).first()
        if locked is not None and locked.ended_at is not None:
            raise VisitOver(
                "This visit has ended, so nobody can be invited to it any more. Start a new visit from the "
                "EHR to see the patient again."
            )
        active = GuestInvite.objects.filter(visit=visit, revoked_at__isnull=True).count()
        limit = visit.tenant.max_guests_per_visit
        if active >= limit:
            raise InviteLimitReached(
                f"This visit already has {active} guest link{'s' if active != 1 else ''}, the most your "
                f"organization allows ({limit}). Revoke a link nobody needs before inviting someone else."
            )
        return GuestInvite.objects.create(
            tenant=visit.tenant,
            visit=visit,
            kind=kind,
            participant_id=f"g-{secrets.token_urlsafe(15)}",
            created_by_ehr_id=created_by_ehr_id,
        )


def guest_invite_revoke(*, visit: Visit, participant_id: str) -> bool:
    """Withdraw a guest link: the guest's join pages refuse it from now on. False: nothing to revoke."""
    return bool(
        GuestInvite.objects.filter(
            visit=visit, participant_id=participant_id, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
    )


def guest_invite_usable(*, visit: Visit, participant_id: str) -> GuestInvite | None:
    """The guest's invite when it exists for this visit and was not revoked."""
    return GuestInvite.objects.filter(
        visit=visit, participant_id=participant_id, revoked_at__isnull=True
    ).first()


# --- the demo meeting page -----------------------------------------------------------------------


def demo_meeting_event_record(
    *, meeting: Meeting, client_event_id: str, kind: str, role: str, participant_id: str
) -> int:
    """Record a join or leave on the demo page on every visit of the meeting (group visits share one).

    Returns how many visits got a new event (0 when it was a repeat).
    """
    if kind not in DEMO_EVENT_KINDS:
        raise InvalidField("kind", f"kind must be one of {', '.join(DEMO_EVENT_KINDS)}.")
    occurred_at = timezone.now()
    created = 0
    for visit in meeting.visits.select_related("tenant", "endpoint").order_by("pk"):
        _, new = event_record(
            visit=visit,
            event_id=f"demo:{visit.public_id}:{participant_id}:{client_event_id}",
            kind=kind,
            role=role,
            participant_id=participant_id,
            occurred_at=occurred_at,
            source=EventSource.DEMO,
        )
        created += int(new)
    return created
