"""Meeting providers' webhooks: participant events become VisitEvents.

POST /webhooks/meetings/<backend>/ where <backend> is "teams" or "jitsi" (and
"locmem" in tests). The backend checks the signature or validation token; a
rejected delivery gets 403 and nothing is stored. Events are idempotent on their
id, so a provider retrying a delivery changes nothing.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connector.meetings import get_meeting_backend
from connector.meetings.base import MeetingEvent, WebhookRejected
from connector.models import EventSource, Meeting, ParticipantRole, VisitEvent
from connector.services.visits import event_record
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

WEBHOOK_BACKENDS = {
    "teams": ("connector.meetings.teams.TeamsGraphMeetingBackend", EventSource.TEAMS),
    "jitsi": ("connector.meetings.jitsi.JitsiMeetingBackend", EventSource.JITSI),
    "locmem": ("connector.meetings.locmem.LocmemMeetingBackend", EventSource.DEMO),
}


def _role_for(event: MeetingEvent, visit) -> str:
    if event.role in ParticipantRole.values:
        return event.role
    # The provider did not say: a participant keeps the role they were first seen with.
    known = VisitEvent.objects.filter(visit=visit, participant_id=event.participant_id).values_list(
        "role", flat=True
    )
    return known.first() or ParticipantRole.GUEST


def events_store(events: list[MeetingEvent], *, source: str) -> int:
    """Store provider events on every visit of their meeting; returns how many were new."""
    stored = 0
    for event in events:
        with all_tenants():
            meetings = list(Meeting.objects.select_related("tenant").filter(meeting_id=event.meeting_id))
        for meeting in meetings:
            with tenant_scope(meeting.tenant):
                for visit in meeting.visits.select_related("endpoint", "tenant"):
                    _, created = event_record(
                        visit=visit,
                        # Group visits share a meeting: one row per visit.
                        event_id=f"{event.event_id}@{visit.public_id}",
                        kind=event.kind,
                        role=_role_for(event, visit),
                        participant_id=event.participant_id,
                        occurred_at=event.occurred_at,
                        source=source,
                    )
                    stored += created
        if not meetings:
            logger.info("webhook event for an unknown meeting ignored")
    return stored


@csrf_exempt
@require_POST
def meeting_webhook(request: HttpRequest, backend: str, rest: str = "") -> HttpResponse:
    path, source = WEBHOOK_BACKENDS.get(backend, ("", ""))
    # The in-memory test backend's webhook exists only where that backend is in use.
    if not path or (backend == "locmem" and path != settings.MEETING_BACKEND):
        return JsonResponse({"error": f"No meeting webhook for {backend!r}."}, status=404)
    try:
        result = get_meeting_backend(path).parse_webhook(request)
    except WebhookRejected as error:
        logger.warning("%s webhook rejected: %s", backend, error)
        return JsonResponse({"error": str(error)}, status=403)
    if result.response is not None:
        return result.response  # a validation handshake
    stored = events_store(result.events, source=source)
    return JsonResponse({"received": len(result.events), "stored": stored}, status=202)
