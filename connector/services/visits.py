"""Visits: one per appointment, its meeting, its events and what is derived from them."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string

from connector.meetings import get_meeting_backend
from connector.meetings.base import MeetingRequest, Participant
from connector.models import (
    AppointmentSource,
    EventKind,
    FhirEndpoint,
    Meeting,
    ParticipantRole,
    Visit,
    VisitEvent,
    VisitKey,
    VisitState,
)
from connector.services.appointment_finder import FoundAppointment
from connector.services.visit_feed import live_version_bump, visit_feed_take

logger = logging.getLogger(__name__)

JOIN_SALT = "connector.visit-join"
# A join link works from when it is made until this long after the visit's
# scheduled end (or after it was made, when the schedule is unknown).
JOIN_LINK_GRACE = timedelta(hours=2)
JOIN_LINK_UNSCHEDULED_LIFETIME = timedelta(hours=24)
MEETING_SUBJECT = "Virtual visit"  # never the patient's name


# Filled once, then kept: later launches may bring context the first one lacked.
_FILL_BLANKS = ("conference_id", "department_id", "encounter_id", "time_zone")
# The EHR's schedule as last read: a fresh read replaces what an earlier one (or the feed) said.
_SCHEDULE = (
    "scheduled_start",
    "scheduled_end",
    "fhir_appointment_id",
    "appointment_status",
    "participant_count",
    "location_reference",
    "unscheduled",
    "found_by",
    "schedule_read_at",
)


def _feed_appointment(*, endpoint: FhirEndpoint, keys: list[str]):
    """The scheduling feed's appointment (sms app) with one of these IDs, in this organization and
    environment: the feed knows the department and its time zone."""
    from sms.models import Appointment as FeedAppointment

    values = [key.partition(":")[2] for key in keys if key.startswith("id:")]
    values += [key.partition("/")[2] for key in keys if key.startswith("Appointment/")]
    if not values:
        return None
    return (
        FeedAppointment.objects.filter(
            tenant=endpoint.tenant_id, endpoint__environment=endpoint.environment, external_id__in=values
        )
        .order_by("pk")
        .only("start", "end", "time_zone", "department")
        .first()
    )


def _keys_add(*, visit: Visit, endpoint: FhirEndpoint, keys: list[str]) -> None:
    known = set(VisitKey.objects.filter(visit=visit).values_list("key", flat=True))
    for key in keys:
        if key in known:
            continue
        try:
            with transaction.atomic():
                VisitKey.objects.create(
                    tenant=visit.tenant, environment=endpoint.environment, key=key, visit=visit
                )
        except IntegrityError:
            # Another visit is known by it already (two EHR appointments sharing an identifier
            # value): it stays with the first, which the launch's other keys did not reach.
            logger.warning("visit %s: an appointment key is already another visit's", visit.pk)


def visit_get_or_create(
    *,
    endpoint: FhirEndpoint,
    appointment_id: str,
    keys: list[str] | tuple[str, ...] = (),
    conference_id: str = "",
    department_id: str = "",
    encounter_id: str = "",
    scheduled_start: datetime | None = None,
    scheduled_end: datetime | None = None,
    schedule: dict | None = None,
) -> Visit:
    """The one visit of this appointment, however it is reached. Safe under concurrent launches.

    `keys` are every ID the appointment is known by (connector.models.VisitKey); the default is
    the appointment ID itself as the scheduling feed gives it (`id:<appointment_id>`). The first
    key that leads to a visit decides; the visit then learns the other keys. `schedule` is what
    was just read from the EHR (fields of _SCHEDULE) and replaces an older reading.
    """
    if not appointment_id:
        raise ValueError("A visit needs the appointment's ID from the launch context.")
    keys = list(dict.fromkeys(keys or [f"id:{appointment_id}"]))
    fields = {
        "conference_id": conference_id,
        "department_id": department_id,
        "encounter_id": encounter_id,
        "scheduled_start": scheduled_start,
        "scheduled_end": scheduled_end,
        **(schedule or {}),
    }
    from connector.services.appointment_finder import visit_for_keys

    visit = visit_for_keys(endpoint=endpoint, keys=keys)
    if visit is None:
        feed = _feed_appointment(endpoint=endpoint, keys=keys)
        if feed is not None:
            fields["time_zone"] = fields.get("time_zone") or feed.time_zone
            fields["department_id"] = fields["department_id"] or feed.department[:200]
            fields["scheduled_start"] = fields["scheduled_start"] or feed.start
            fields["scheduled_end"] = fields["scheduled_end"] or feed.end
        try:
            with transaction.atomic():
                visit = Visit.objects.create(
                    tenant=endpoint.tenant,
                    endpoint=endpoint,
                    appointment_id=appointment_id[:200],
                    public_id=get_random_string(24),
                    **{name: value for name, value in fields.items() if value is not None},
                )
                VisitKey.objects.bulk_create(
                    [
                        VisitKey(
                            tenant=endpoint.tenant, environment=endpoint.environment, key=key, visit=visit
                        )
                        for key in keys
                    ]
                )
            from connector.services.write_back import write_back_queue_for_new_visit

            write_back_queue_for_new_visit(visit=visit)
            return visit
        except IntegrityError:
            # Another launch (or the SMS link) made it between our look-up and our insert.
            visit = (
                visit_for_keys(endpoint=endpoint, keys=keys)
                or Visit.objects.filter(endpoint=endpoint, appointment_id=appointment_id).first()
            )
            if visit is None:
                raise
    changed = []
    for name in _FILL_BLANKS + ("scheduled_start", "scheduled_end"):
        value = fields.get(name)
        if value and not getattr(visit, name):
            setattr(visit, name, value)
            changed.append(name)
    for name, value in (schedule or {}).items():
        if name in _SCHEDULE and getattr(visit, name) != value:
            setattr(visit, name, value)
            changed.append(name)
    if changed:
        visit.save(update_fields=list(dict.fromkeys(changed)))
    _keys_add(visit=visit, endpoint=endpoint, keys=keys)
    return visit


def visit_for_launch(
    *, endpoint: FhirEndpoint, found: FoundAppointment, conference_id: str = "", department_id: str = ""
) -> Visit:
    """The visit a launch found its way to (connector.services.appointment_finder)."""
    if found.visit is not None and not conference_id and not department_id:
        return found.visit  # a relaunch: nothing new to write
    schedule: dict = {}
    if found.visit is None:
        read = found.schedule
        schedule = {
            "fhir_appointment_id": found.fhir_appointment_id,
            "unscheduled": found.found_by == AppointmentSource.UNSCHEDULED,
            "found_by": found.found_by,
            "schedule_read_at": timezone.now(),
        }
        if read is not None:
            schedule.update(
                scheduled_start=read.start,
                scheduled_end=read.end,
                appointment_status=read.status,
                participant_count=read.participant_count,
                location_reference=read.location_reference,
            )
            # Reports group by department: without a vendor department ID, the location's.
            department_id = department_id or read.location_reference.partition("/")[2]
        schedule = {name: value for name, value in schedule.items() if value not in (None, "")}
    return visit_get_or_create(
        endpoint=endpoint,
        appointment_id=found.appointment_id,
        keys=found.keys,
        conference_id=conference_id,
        department_id=department_id,
        encounter_id=found.encounter_id,
        schedule=schedule,
    )


def _backend_path(visit: Visit) -> str:
    return visit.tenant.meeting_backend or settings.MEETING_BACKEND


def meeting_ensure(*, visit: Visit, organizer_id: str | None = None) -> Meeting:
    """The visit's meeting, made at the provider on first need; a group visit shares one meeting.

    The visit row is locked while the meeting is made so two simultaneous
    launches never create two meetings.
    """
    if visit.meeting_id:
        return visit.meeting
    backend_path = _backend_path(visit)
    with transaction.atomic():
        # Lock only the visit row: PostgreSQL refuses FOR UPDATE on the nullable side of a join.
        locked = Visit.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=visit.pk)
        if locked.meeting_id:
            visit.meeting = Meeting.objects.get(pk=locked.meeting_id)
            return visit.meeting
        meeting = None
        if locked.conference_id:
            meeting = Meeting.objects.filter(conference_id=locked.conference_id, backend=backend_path).first()
        if meeting is None:
            start = locked.scheduled_start or timezone.now()
            end = locked.scheduled_end or start + timedelta(hours=1)
            created = get_meeting_backend(backend_path).create_meeting(
                MeetingRequest(
                    visit_reference=f"visit-{locked.public_id}",
                    subject=MEETING_SUBJECT,
                    start=start,
                    end=end,
                    organizer_id=organizer_id,
                    tenant_key=locked.tenant.microsoft_tenant_id,
                )
            )
            meeting = Meeting.objects.create(
                tenant=locked.tenant,
                backend=backend_path,
                meeting_id=created.meeting_id,
                join_url=created.join_url,
                data=created.data,
                conference_id=locked.conference_id,
            )
            logger.info("meeting %s created for visit %s", meeting.pk, locked.pk)
        locked.meeting = meeting
        locked.save(update_fields=["meeting"])
    visit.meeting = meeting
    return meeting


def participant_id_for(role: str, identity: str) -> str:
    """A stable, opaque participant ID: the same person gets the same ID in every event."""
    digest = hashlib.sha256(f"{settings.SECRET_KEY}:{role}:{identity}".encode()).hexdigest()
    return f"{role[:1]}-{digest[:20]}"


def join_url_for(*, visit: Visit, role: str, participant_id: str, display_name: str) -> str:
    meeting = meeting_ensure(visit=visit)
    backend = get_meeting_backend(meeting.backend)
    from connector.meetings.base import Meeting as ProviderMeeting

    return backend.join_url(
        ProviderMeeting(meeting_id=meeting.meeting_id, join_url=meeting.join_url, data=meeting.data),
        Participant(role=role, display_name=display_name, participant_id=participant_id),
    )


# --- join links (patient portal, SMS, guests) -----------------------------------------------


def join_token_make(*, visit: Visit, role: str, participant_id: str) -> str:
    if visit.scheduled_end:
        expires = visit.scheduled_end + JOIN_LINK_GRACE
    else:
        expires = timezone.now() + JOIN_LINK_UNSCHEDULED_LIFETIME
    payload = {"v": visit.public_id, "r": role, "p": participant_id, "e": int(expires.timestamp())}
    return signing.dumps(payload, salt=JOIN_SALT, compress=True)


class JoinLinkError(Exception):
    """A join link that cannot be used; `message` is shown to the patient."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def join_token_read(token: str) -> dict:
    """The payload of a join link, or JoinLinkError if it was tampered with or has expired."""
    try:
        payload = signing.loads(token, salt=JOIN_SALT)
    except signing.BadSignature as error:
        raise JoinLinkError(
            "This visit link is not valid. Use the latest link your care team sent you."
        ) from error
    if payload.get("e", 0) < timezone.now().timestamp():
        raise JoinLinkError(
            "This visit link has expired. Contact your care team for a new link if your visit is still to come."
        )
    return payload


# --- events ------------------------------------------------------------------------------


def event_record(
    *,
    visit: Visit,
    event_id: str,
    kind: str,
    role: str,
    participant_id: str,
    occurred_at: datetime,
    source: str,
    data: dict | None = None,
) -> tuple[VisitEvent, bool]:
    """Store an event once (idempotent on `event_id`), then bring the visit's figures up to date.

    Events may arrive late or out of order: the figures are recomputed from all
    events every time, so arrival order never matters. The event and the figures
    commit together, under a lock on the visit: two events arriving at once are
    recomputed one after the other, so the later recompute always sees both and
    nobody ever reads an event whose figures are not in yet.
    """
    try:
        with transaction.atomic():
            # The state as stored, under the lock: `visit` may have been read before another event moved it.
            state_before = (
                Visit.objects.select_for_update().filter(pk=visit.pk).values_list("state", flat=True).get()
            )
            # A repeat would take a position and roll it back: look first (the visit lock keeps
            # two deliveries of the same event from both passing this check).
            if VisitEvent.objects.filter(tenant_id=visit.tenant_id, event_id=event_id).exists():
                raise IntegrityError("repeated event")
            event = VisitEvent.objects.create(
                seq=visit_feed_take(tenant_id=visit.tenant_id),
                tenant=visit.tenant,
                visit=visit,
                event_id=event_id,
                kind=kind,
                role=role,
                participant_id=participant_id,
                occurred_at=occurred_at,
                source=source,
                data=data or {},
            )
            visit_recompute(visit=visit)
            # Webhooks commit with the event: a crash after the commit cannot lose them,
            # and their sending is queued once it commits.
            from connector.webhooks.events import emit_for_visit_event

            emit_for_visit_event(event=event, visit=visit)
            if visit.state == VisitState.NO_SHOW and state_before != VisitState.NO_SHOW:
                # An event after the scheduled end without a start (a patient who came too late):
                # the same no-show as the scheduled sweep's (visits_mark_no_show), told the same way.
                _no_show_announce(visit)
    except IntegrityError:
        return VisitEvent.objects.get(event_id=event_id), False
    from connector.services.write_back import write_back_queue_for_event

    write_back_queue_for_event(event=event)
    return event, True


def visit_recompute(*, visit: Visit) -> Visit:
    """Derive start, end, lobby wait, peak attendees and state from the events.

    - start: the first moment a clinician and a patient are both present;
    - end: when the last participant leaves (after the start);
    - lobby wait: first lobby entry to the first admission;
    - arrival: the first lobby entry or join (the API's "waiting" state);
    - state: completed once started, no show when the scheduled end has passed without a start.
    """
    events = list(visit.events.order_by("occurred_at", "pk"))
    present: dict[str, str] = {}  # participant -> role
    started_at = ended_at = None
    peak = 0
    first_lobby = first_admit = None
    for event in events:
        was_present = False
        if event.kind == EventKind.JOINED:
            present[event.participant_id] = event.role
        elif event.kind == EventKind.LEFT:
            was_present = present.pop(event.participant_id, None) is not None
        elif event.kind == EventKind.LOBBY_ENTERED and first_lobby is None:
            first_lobby = event.occurred_at
        elif event.kind == EventKind.ADMITTED and first_admit is None:
            first_admit = event.occurred_at
        peak = max(peak, len(present))
        roles = set(present.values())
        if started_at is None and ParticipantRole.CLINICIAN in roles and ParticipantRole.PATIENT in roles:
            started_at = event.occurred_at
        # Only the last one out ends it: a lobby waiter going, or a repeated leave, moves nothing.
        if started_at is not None and was_present and not present:
            ended_at = event.occurred_at
        if (
            present
            and ended_at is not None
            and event.occurred_at >= ended_at
            and event.kind == EventKind.JOINED
        ):
            ended_at = None  # someone came back: the visit goes on
    visit.started_at = started_at
    visit.ended_at = ended_at if started_at else None
    visit.peak_attendees = peak
    arrivals = [e.occurred_at for e in events if e.kind in (EventKind.LOBBY_ENTERED, EventKind.JOINED)]
    visit.arrived_at = min(arrivals) if arrivals else None
    visit.lobby_wait_seconds = (
        int((first_admit - first_lobby).total_seconds())
        if first_lobby and first_admit and first_admit >= first_lobby
        else None
    )
    if started_at and visit.ended_at:
        visit.state = VisitState.COMPLETED
    elif started_at:
        visit.state = VisitState.IN_PROGRESS
    elif visit.scheduled_end and visit.scheduled_end < timezone.now():
        visit.state = VisitState.NO_SHOW
    else:
        visit.state = VisitState.SCHEDULED
    visit.save(
        update_fields=[
            "started_at",
            "ended_at",
            "peak_attendees",
            "lobby_wait_seconds",
            "arrived_at",
            "state",
        ]
    )
    return visit


def visits_mark_no_show(*, now: datetime | None = None) -> int:
    """Visits whose scheduled end has passed without a start become no-shows (the reports count them).

    The same rule visit_recompute applies when an event arrives, for the visits no event ever
    reaches: nobody came. A later start still wins, since every event recomputes the state.
    Unscheduled visits without an end are never no-shows. Runs across organizations (scheduled).
    """
    now = now or timezone.now()
    due = Visit.objects.filter(state=VisitState.SCHEDULED, started_at__isnull=True, scheduled_end__lt=now)
    marked = 0
    # A list, not a cursor kept open: each visit commits (and its write-back is queued) on its own.
    for visit in list(due.select_related("endpoint", "tenant")):
        with transaction.atomic():
            # The state check again: an event may have started the visit since the query.
            if not Visit.objects.filter(
                pk=visit.pk, state=VisitState.SCHEDULED, started_at__isnull=True
            ).update(state=VisitState.NO_SHOW):
                continue
            marked += 1
            live_version_bump(tenant_id=visit.tenant_id)
            visit.state = VisitState.NO_SHOW
            _no_show_announce(visit)
    return marked


def _no_show_announce(visit: Visit) -> None:
    """The Appointment's `noshow` write-back and the visit.no_show webhook, inside the caller's transaction.

    Both are recorded with the state change and sent once it commits (no EHR or receiver
    call while it is open).
    """
    from connector.services.write_back import write_back_queue_for_no_show
    from connector.webhooks.events import emit_visit_no_show

    write_back_queue_for_no_show(visit=visit)
    emit_visit_no_show(visit=visit)


def presence_from_events(events) -> tuple[dict, dict]:
    """(in the lobby, connected) after these events, in order: participant -> {role, since}.

    The one reading of presence shared by the console (`visit_presence`) and the API's live
    status (connector/visits/selectors.py), so the two never disagree.
    """
    lobby: dict[str, dict] = {}
    present: dict[str, dict] = {}
    for event in events:
        who = event.participant_id
        if event.kind == EventKind.LOBBY_ENTERED:
            lobby[who] = {"role": event.role, "since": event.occurred_at}
        elif event.kind == EventKind.ADMITTED:
            lobby.pop(who, None)
        elif event.kind == EventKind.JOINED:
            lobby.pop(who, None)
            present.setdefault(who, {"role": event.role, "since": event.occurred_at})
        elif event.kind == EventKind.LEFT:
            # A lobby waiter whose page went silent leaves the lobby too (services/presence.py).
            lobby.pop(who, None)
            present.pop(who, None)
    return lobby, present


def visit_presence(*, visit: Visit) -> dict:
    """Who is in the lobby and who is connected now (for the clinician's live status)."""
    lobby, present = presence_from_events(visit.events.order_by("occurred_at", "pk"))
    return {
        "in_lobby": [{"participant_id": p, "role": e["role"]} for p, e in lobby.items()],
        "connected": [{"participant_id": p, "role": e["role"]} for p, e in present.items()],
    }
