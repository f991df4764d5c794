"""The demo backend: meetings on the connector's own demo meeting page.

Nothing leaves the connector. Each meeting is a random ID; participants join
at `{PUBLIC_BASE_URL}/visit/demo-meeting/<meeting_id>/?role=<role>&p=<participant_id>&sig=<signature>`,
a page of the connector itself that stands in for a video call.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlencode

from django.conf import settings

from connector.meetings.base import BaseMeetingBackend, Meeting, MeetingRequest, Participant


def _demo_meeting_url(meeting_id: str, query: dict[str, str] | None = None) -> str:
    base = getattr(settings, "PUBLIC_BASE_URL", "http://localhost:8000").rstrip("/")
    url = f"{base}/visit/demo-meeting/{quote(meeting_id, safe='')}/"
    return f"{url}?{urlencode(query)}" if query else url


class DemoMeetingBackend(BaseMeetingBackend):
    """Meetings on the built-in demo page; no provider, no webhooks."""

    name = "demo"

    def create_meeting(self, request: MeetingRequest) -> Meeting:
        # Unguessable, since the demo page admits whoever has the link.
        meeting_id = secrets.token_urlsafe(16)
        return Meeting(meeting_id=meeting_id, join_url=_demo_meeting_url(meeting_id), data={})

    def join_url(self, meeting: Meeting, participant: Participant) -> str:
        # The demo page records joins and leaves for whoever opens it, so the link is
        # signed: only participant IDs the connector issued for this meeting are accepted
        # (checked by connector/visits/pages.py with the same salt).
        from django.core.signing import Signer

        sig = Signer(salt="connector.demo-meeting").signature(
            f"{meeting.meeting_id}:{participant.role}:{participant.participant_id}"
        )
        return _demo_meeting_url(
            meeting.meeting_id, {"role": participant.role, "p": participant.participant_id, "sig": sig}
        )
