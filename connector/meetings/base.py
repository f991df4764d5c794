"""The interface every meeting backend implements, and the values that cross it.

A meeting backend turns a scheduled video visit into a meeting at a video
provider (Microsoft Teams, a self-hosted Jitsi Meet, the built-in demo page),
hands out a join link per participant, and turns the provider's webhooks into
`MeetingEvent`s (who joined, who left, when). Backends are chosen by dotted
path, like Django's `EMAIL_BACKEND` (see `connector.meetings.get_meeting_backend`).

Rules for every backend:

- No patient data goes to the provider: the meeting subject is a generic
  phrase ("Virtual visit"), participants are named by role ("Patient",
  "Interpreter"), and visits are referred to by an opaque reference.
- Every failure to reach or use the provider is a `MeetingError` whose
  `permanent` flag says whether retrying can help (a missing permission will
  not fix itself; a throttled or unavailable service will).
- A webhook that fails authentication raises `WebhookRejected`; nothing in it
  is trusted or returned.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse

Role = Literal["clinician", "patient", "guest"]
EventRole = Literal["clinician", "patient", "guest", "unknown"]
EventKind = Literal["joined", "left", "lobby_entered", "admitted"]

ROLES: tuple[str, ...] = ("clinician", "patient", "guest")
EVENT_ROLES: tuple[str, ...] = (*ROLES, "unknown")
EVENT_KINDS: tuple[str, ...] = ("joined", "left", "lobby_entered", "admitted")


class MeetingError(Exception):
    """A meeting provider could not do what was asked.

    `permanent` is True when retrying the same call cannot succeed until someone
    changes a configuration or permission (the message says what to change);
    False for throttling, timeouts and outages. `retry_after` is the number of
    seconds the provider asked callers to wait, when it said so.
    """

    def __init__(self, message: str, *, permanent: bool, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"MeetingError({self.message!r}, permanent={self.permanent}, retry_after={self.retry_after})"


class WebhookRejected(Exception):
    """A webhook request failed its signature or validation check; answer it with 4xx."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _require_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


@dataclass(frozen=True)
class MeetingRequest:
    """What a backend needs to create the meeting for one visit.

    - `visit_reference`: an opaque reference to the visit ("visit-42"); never a
      patient identifier.
    - `subject`: shown to participants by some providers; must not contain a
      patient's name or anything clinical. Callers pass e.g. "Virtual visit".
    - `start`, `end`: timezone-aware; `end` after `start`.
    - `organizer_id`: the clinician's Microsoft Entra object ID (Teams needs it,
      as Teams meetings belong to a user); None for providers without accounts.
    - `tenant_key`: the organization's Microsoft 365 tenant ID (Teams); other
      backends ignore it.
    """

    visit_reference: str
    subject: str
    start: datetime
    end: datetime
    organizer_id: str | None = None
    tenant_key: str = ""

    def __post_init__(self) -> None:
        _require_aware("start", self.start)
        _require_aware("end", self.end)
        if self.end <= self.start:
            raise ValueError("end must be after start")


@dataclass(frozen=True)
class Meeting:
    """A created meeting, as the caller stores it with the visit.

    - `meeting_id`: the backend's key for the meeting; `MeetingEvent.meeting_id`
      carries the same value, so events can be matched to the visit.
    - `join_url`: a generic link (the organizer's, where the provider has one).
      Use `BaseMeetingBackend.join_url` for each participant's own link.
    - `data`: backend-specific, non-secret, JSON-serializable values the backend
      needs again later (e.g. Graph's joinWebUrl, a Jitsi room name and times).
      Store it and pass the whole `Meeting` back to the backend.
    """

    meeting_id: str
    join_url: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Participant:
    """Someone who will join a meeting.

    - `role`: "clinician" joins as organizer or moderator; "patient" and
      "guest" (an interpreter, a relative) join as guests and wait in the lobby.
    - `display_name`: a role label ("Clinician", "Patient", "Interpreter"),
      not a real name: whatever is given here may be shown to every participant
      and may be kept by the provider.
    - `participant_id`: the caller's opaque, stable ID for this participant in
      this visit; webhook events carry it back where the provider allows.
    """

    role: Role
    display_name: str
    participant_id: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")


@dataclass(frozen=True)
class MeetingEvent:
    """One thing that happened in a meeting, taken from a provider's webhook.

    - `event_id`: stable and unique for one real event: a provider delivering
      the same notification twice yields the same `event_id`, so the caller can
      drop duplicates with a unique constraint.
    - `meeting_id`: equals `Meeting.meeting_id` of the meeting it happened in.
    - `participant_id`: the `Participant.participant_id` where the provider
      carries it back (Jitsi tokens, the demo page), else the provider's own ID
      for that person (a Microsoft Entra object ID for the Teams organizer).
    - `role`: "unknown" when the provider does not say.
    - `kind`: "joined", "left", "lobby_entered" or "admitted".
    - `occurred_at`: timezone-aware, as reported by the provider.
    """

    event_id: str
    meeting_id: str
    participant_id: str
    role: EventRole
    kind: EventKind
    occurred_at: datetime

    def __post_init__(self) -> None:
        if self.role not in EVENT_ROLES:
            raise ValueError(f"role must be one of {', '.join(EVENT_ROLES)}, not {self.role!r}")
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EVENT_KINDS)}, not {self.kind!r}")
        _require_aware("occurred_at", self.occurred_at)


@dataclass
class WebhookResult:
    """What a backend made of one webhook request.

    `response`, when set, must be sent back as it is (a validation handshake's
    echo). Otherwise the view answers with a 2xx of its own once the events are
    stored. `events` may be empty: a provider's notification about something
    the connector does not track is accepted and yields nothing.
    """

    response: HttpResponse | None = None
    events: list[MeetingEvent] = field(default_factory=list)


def stable_event_id(prefix: str, *parts: Any) -> str:
    """A short, stable ID built from the parts of a notification that identify one event."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"{prefix}:{digest[:40]}"


class BaseMeetingBackend:
    """Base class of the meeting backends.

    Subclasses set `name` (the slug of their webhook URL,
    `/webhooks/meetings/<name>/`) and implement `create_meeting` and `join_url`;
    those with webhooks implement `parse_webhook`.
    """

    name: str = ""

    def configuration_problems(self) -> list[str]:
        """Settings this backend needs but does not have, as sentences (empty: ready)."""
        return []

    def create_meeting(self, request: MeetingRequest) -> Meeting:
        """Create the meeting for one visit at the provider.

        Raises `MeetingError`. Creating is not idempotent at every provider:
        callers store the returned `Meeting` and do not call this again for a
        visit that already has one.
        """
        raise NotImplementedError

    def join_url(self, meeting: Meeting, participant: Participant) -> str:
        """The link one participant opens to join.

        Clinicians join as organizer or moderator; patients and guests join as
        guests and wait in the lobby until a clinician admits them. The link
        may carry a credential (a signed token): send it only to that person.
        Raises `MeetingError`.
        """
        raise NotImplementedError

    def parse_webhook(self, request: HttpRequest) -> WebhookResult:
        """Authenticate one webhook request from the provider and read its events.

        Raises `WebhookRejected` when the request's signature or shared secret
        is missing or wrong, or the body is not what the provider sends.
        Backends without webhooks accept nothing and return no events.
        """
        return WebhookResult()
