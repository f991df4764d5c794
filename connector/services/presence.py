"""Presence that matches reality: visit pages send a heartbeat; whoever stops is marked as left.

The lobby, the clinician's console and the demo meeting page POST a heartbeat
every HEARTBEAT_SECONDS (connector/static/js/heartbeat.js). A participant
whose pages have all been silent for longer than STALE_AFTER gets a `left`
event through `event_record`, the same service the meeting's Leave button
uses, so the visit's figures (end, state) and the EHR write-back follow.

Who sweeps, and when:

- every heartbeat sweeps its own visit, so while anyone is still in a visit a
  participant who closed their browser is marked as left within
  STALE_AFTER + HEARTBEAT_SECONDS (60 s);
- the status reads of the console, lobby and meeting pages do the same;
- the scheduled sweep (`presence_sweep`, every minute) catches visits
  everyone has left. The left event carries the time of the participant's
  last heartbeat, so the visit's end is right whenever the sweep runs.

Only presence the connector itself observed is swept: lobby waiters, and
participants whose join came from the connector's pages or the demo
meeting. A join reported by a meeting provider (Teams, Jitsi) ends with that
provider's own leave event; closing the lobby tab after being admitted to
Teams does not make anyone leave.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from connector.models import EventKind, EventSource, Heartbeat, Visit, VisitEvent
from connector.services.visits import event_record
from tenants.scoping import all_tenants, tenant_scope

HEARTBEAT_SECONDS = 15
STALE_AFTER = timedelta(seconds=45)
BATCH = 200

# Joins the connector saw happen; others are the meeting provider's to end.
_SWEPT_JOIN_SOURCES = (EventSource.CONNECTOR, EventSource.DEMO)


def _participant_state(visit: Visit) -> dict[str, dict]:
    """participant -> {"where": "lobby"|"connected", "source", "since", "sessions"} for those present now."""
    state: dict[str, dict] = {}
    sessions: dict[str, int] = {}
    for event in visit.events.order_by("occurred_at", "pk").only(
        "kind", "participant_id", "source", "occurred_at"
    ):
        pid = event.participant_id
        if event.kind == EventKind.LOBBY_ENTERED:
            sessions[pid] = sessions.get(pid, 0) + 1
            state[pid] = {"where": "lobby", "source": event.source, "since": event.occurred_at}
        elif event.kind == EventKind.ADMITTED:
            if state.get(pid, {}).get("where") == "lobby":
                state.pop(pid)
        elif event.kind == EventKind.JOINED:
            sessions[pid] = sessions.get(pid, 0) + 1
            state[pid] = {"where": "connected", "source": event.source, "since": event.occurred_at}
        elif event.kind == EventKind.LEFT:
            state.pop(pid, None)
    for pid, entry in state.items():
        entry["sessions"] = sessions.get(pid, 0)
    return state


def presence_timeouts(*, visit: Visit, participant_id: str) -> int:
    """How many times this participant was marked as left for silence (makes re-entry IDs unique)."""
    return VisitEvent.objects.filter(
        visit=visit, participant_id=participant_id, event_id__startswith="presence-timeout:"
    ).count()


def presence_sweep_visit(*, visit: Visit, now: datetime | None = None) -> int:
    """Mark as left this visit's participants whose heartbeat stopped; returns how many were marked.

    Runs inside the visit's tenant scope. Safe to run twice at once: the left event's ID is
    fixed per participant and session, so a second sweep stores nothing new.
    """
    now = now or timezone.now()
    stale = list(Heartbeat.objects.filter(visit=visit, last_seen_at__lt=now - STALE_AFTER).order_by("pk"))
    if not stale:
        return 0
    present = _participant_state(visit)
    marked = 0
    for beat in stale:
        entry = present.get(beat.participant_id)
        sweepable = entry is not None and (
            entry["where"] == "lobby" or entry["source"] in _SWEPT_JOIN_SOURCES
        )
        if sweepable:
            _, created = event_record(
                visit=visit,
                # One timeout per session (each join or lobby entry starts one): a repeat is the same event.
                event_id=f"presence-timeout:{visit.public_id}:{beat.participant_id}:{entry['sessions']}",
                kind=EventKind.LEFT,
                role=beat.role,
                participant_id=beat.participant_id,
                # The last moment the participant was known to be there, never before they arrived.
                occurred_at=max(beat.last_seen_at, entry["since"]),
                source=EventSource.CONNECTOR,
                data={
                    "reason": "heartbeat_stopped",
                    **({"from": "lobby"} if entry["where"] == "lobby" else {}),
                },
            )
            marked += int(created)
        # Gone unless a heartbeat arrived meanwhile (then the row stays and the page rejoins).
        Heartbeat.objects.filter(pk=beat.pk, last_seen_at=beat.last_seen_at).delete()
    return marked


def heartbeat_touch(*, visit: Visit, role: str, participant_id: str, now: datetime | None = None) -> None:
    """Note that a page of this participant is open now (one upsert; loading a page counts too)."""
    Heartbeat.objects.bulk_create(
        [
            Heartbeat(
                tenant=visit.tenant,
                visit=visit,
                participant_id=participant_id,
                role=role,
                last_seen_at=now or timezone.now(),
            )
        ],
        update_conflicts=True,
        unique_fields=["visit", "participant_id"],
        update_fields=["last_seen_at", "role"],
    )


def heartbeat_record(*, visits: list[Visit], role: str, participant_id: str) -> bool:
    """A page of this participant is open now; sweeps the visits. Returns whether they are still present.

    False means the participant was marked as left meanwhile (a laptop that slept, a network
    that dropped for a minute): the page joins again (the meeting page) or re-enters the lobby.
    """
    now = timezone.now()
    present = False
    for visit in visits:
        heartbeat_touch(visit=visit, role=role, participant_id=participant_id, now=now)
        presence_sweep_visit(visit=visit, now=now)
        present = present or participant_id in _participant_state(visit)
    return present


def ended_for(*, visits: list[Visit], participant_id: str) -> bool:
    """Whether this participant's last departure was the visit being ended (the console's or the API's End).

    A page that hears it is no longer present joins again only after a silence; after an
    end it must not, or the ended visit would start again (connector/services/participants.py).
    """
    for visit in visits:
        last = (
            visit.events.filter(participant_id=participant_id, kind__in=[EventKind.JOINED, EventKind.LEFT])
            .order_by("-occurred_at", "-pk")
            .only("kind", "event_id")
            .first()
        )
        if last is not None and last.kind == EventKind.LEFT and last.event_id.startswith("end:"):
            return True
    return False


def presence_sweep(*, now: datetime | None = None) -> int:
    """Scheduled: sweep every visit that has a silent participant, across organizations."""
    now = now or timezone.now()
    with all_tenants():
        visit_ids = list(
            Heartbeat.objects.filter(last_seen_at__lt=now - STALE_AFTER)
            .order_by("visit_id")
            .values_list("visit_id", flat=True)
            .distinct()[:BATCH]
        )
        visits = list(Visit.objects.select_related("tenant", "endpoint").filter(pk__in=visit_ids))
    marked = 0
    for visit in visits:
        with tenant_scope(visit.tenant):
            marked += presence_sweep_visit(visit=visit, now=now)
    return marked
