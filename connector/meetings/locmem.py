"""The test backend: meetings kept in memory, in `outbox`, like Django's locmem email backend.

    from connector.meetings import locmem

    locmem.outbox            # every Meeting created, oldest first
    LocmemMeetingBackend.fail_next = MeetingError("...", permanent=False)  # next create fails
    locmem.reset()           # empty outbox, IDs from 1 again, no failure queued

Meeting IDs are deterministic ("locmem-1", "locmem-2", ...). Each meeting's
`data` records the request it was made from (reference, subject, times,
organizer, tenant), so tests can check what would have reached a provider.

Webhooks: a JSON body `{"events": [{event_id, meeting_id, participant_id,
role, kind, occurred_at}, ...]}` with the header `X-Locmem-Secret:
<LocmemMeetingBackend.webhook_secret>` gives those events, so the webhook
view can be tested end to end.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from urllib.parse import quote, urlencode

from django.http import HttpRequest

from connector.meetings.base import (
    BaseMeetingBackend,
    Meeting,
    MeetingError,
    MeetingEvent,
    MeetingRequest,
    Participant,
    WebhookRejected,
    WebhookResult,
)

outbox: list[Meeting] = []
_ids = itertools.count(1)


def reset() -> None:
    """Forget every meeting, restart the IDs and clear a queued failure."""
    global _ids
    outbox.clear()
    _ids = itertools.count(1)
    LocmemMeetingBackend.fail_next = None


class LocmemMeetingBackend(BaseMeetingBackend):
    """Records meetings in `outbox`; can be told to fail the next create."""

    name = "locmem"
    fail_next: MeetingError | None = None
    webhook_secret: str = "locmem-webhook-secret"

    def create_meeting(self, request: MeetingRequest) -> Meeting:
        failure = LocmemMeetingBackend.fail_next
        if failure is not None:
            LocmemMeetingBackend.fail_next = None
            raise failure
        meeting_id = f"locmem-{next(_ids)}"
        meeting = Meeting(
            meeting_id=meeting_id,
            join_url=f"https://meetings.invalid/{meeting_id}",
            data={
                "visit_reference": request.visit_reference,
                "subject": request.subject,
                "start": request.start.isoformat(),
                "end": request.end.isoformat(),
                "organizer_id": request.organizer_id,
                "tenant_key": request.tenant_key,
            },
        )
        outbox.append(meeting)
        return meeting

    def join_url(self, meeting: Meeting, participant: Participant) -> str:
        query = urlencode({"role": participant.role, "p": participant.participant_id})
        return f"https://meetings.invalid/{quote(meeting.meeting_id, safe='')}?{query}"

    def parse_webhook(self, request: HttpRequest) -> WebhookResult:
        if request.headers.get("X-Locmem-Secret") != self.webhook_secret:
            raise WebhookRejected("The X-Locmem-Secret header is missing or wrong.")
        try:
            items = json.loads(request.body)["events"]
            events = [
                MeetingEvent(**{**item, "occurred_at": datetime.fromisoformat(item["occurred_at"])})
                for item in items
            ]
        except (ValueError, KeyError, TypeError) as error:
            raise WebhookRejected(f"The body is not a list of meeting events: {error}") from error
        return WebhookResult(events=events)
