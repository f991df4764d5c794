"""Self-hosted Jitsi Meet with token authentication ("jitsi-meet-tokens", Prosody `token` auth).

Meetings are rooms with unguessable names; nothing is created at the server in
advance (Jitsi makes a room when the first person with a valid token enters).
Each participant's link carries a JWT signed with the shared app secret
(HS256), which says who they are, which room they may enter and whether they
are a moderator:

    {"iss": JITSI_APP_ID, "aud": "jitsi", "sub": "<host of JITSI_BASE_URL>",
     "room": "<room>", "iat": ..., "nbf": <start - 1 h>, "exp": <end + 2 h, at most start + 24 h>,
     "context": {"user": {"id": "<participant_id>", "name": "Patient",
                          "moderator": "false", "affiliation": "member",
                          "lobby_bypass": false, "role": "patient"}}}

Clinicians get `moderator: "true"` / `affiliation: "owner"` and may bypass the
lobby; patients and guests get `"false"` / `"member"` and `lobby_bypass: false`.
The deployment must therefore (docs/meetings.md):

- use token authentication with the same app ID and secret;
- turn token claims into roles (a token affiliation/moderation Prosody plugin,
  e.g. jitsi-contrib `token_affiliation`), or every token holder may become a
  moderator;
- have the lobby enabled for every room (e.g. jitsi-contrib `lobby_autostart`
  or `token_lobby_ondemand`), so patients wait until the clinician admits them.

Webhooks: JSON bodies signed with `X-Jitsi-Signature: hex(HMAC-SHA256(JITSI_WEBHOOK_SECRET, body))`.
Two shapes are read, both about participants joining and leaving the room:

- jitsi-contrib `event_sync` ("muc-occupant-joined" / "muc-occupant-left",
  with `room_name` and `occupant` {id, occupant_jid, joined_at, left_at, ...});
- the JaaS-style one ("PARTICIPANT_JOINED" / "PARTICIPANT_LEFT", with
  `idempotencyKey`, `fqn` "<app>/<room>", `timestamp` in milliseconds and
  `data` {id, moderator, ...}).

Other event types are accepted and yield no events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import jwt
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from connector.meetings.base import (
    ROLES,
    BaseMeetingBackend,
    Meeting,
    MeetingError,
    MeetingEvent,
    MeetingRequest,
    Participant,
    WebhookRejected,
    WebhookResult,
    stable_event_id,
)

logger = logging.getLogger(__name__)

# Tokens are good from an hour before the visit (people come early) to two hours
# after its planned end (visits overrun), and never for more than a day.
TOKEN_EARLY = timedelta(hours=1)
TOKEN_LATE = timedelta(hours=2)
TOKEN_MAX_AFTER_START = timedelta(hours=24)
MIN_SECRET_LENGTH = 32  # HS256 with a shorter secret can be brute-forced offline from any link

SIGNATURE_HEADER = "X-Jitsi-Signature"

_JOINED = {"muc-occupant-joined": "joined", "PARTICIPANT_JOINED": "joined"}
_LEFT = {"muc-occupant-left": "left", "PARTICIPANT_LEFT": "left"}
_KINDS = {**_JOINED, **_LEFT}


def _setting(name: str) -> str:
    return str(getattr(settings, name, "") or "")


class JitsiMeetingBackend(BaseMeetingBackend):
    """Rooms on a self-hosted Jitsi Meet; per-participant JWT links; signed event webhooks."""

    name = "jitsi"

    def configuration_problems(self) -> list[str]:
        problems = self._meeting_problems()
        if not _setting("JITSI_WEBHOOK_SECRET"):
            problems.append(
                "JITSI_WEBHOOK_SECRET must be set to the secret that signs Jitsi's event webhooks"
            )
        return problems

    def _meeting_problems(self) -> list[str]:
        problems = []
        base = _setting("JITSI_BASE_URL")
        parts = urlsplit(base)
        if not base or parts.scheme not in ("https", "http") or not parts.hostname:
            problems.append(
                "JITSI_BASE_URL must be the address of the Jitsi Meet server, e.g. https://meet.example.org"
            )
        if not _setting("JITSI_APP_ID"):
            problems.append("JITSI_APP_ID must be the app_id of the Jitsi server's token authentication")
        if len(_setting("JITSI_APP_SECRET")) < MIN_SECRET_LENGTH:
            problems.append(
                f"JITSI_APP_SECRET must be the app_secret of the Jitsi server's token authentication, "
                f"at least {MIN_SECRET_LENGTH} characters long"
            )
        return problems

    def _require_meeting_settings(self) -> None:
        problems = self._meeting_problems()
        if problems:
            raise MeetingError(
                "The Jitsi meeting backend is not configured: " + "; ".join(problems), permanent=True
            )

    # --- meetings ------------------------------------------------------------------------------

    def create_meeting(self, request: MeetingRequest) -> Meeting:
        self._require_meeting_settings()
        # The room name is the only thing between a stranger and the room's lobby.
        room = f"visit-{secrets.token_hex(16)}"
        base = _setting("JITSI_BASE_URL").rstrip("/")
        return Meeting(
            meeting_id=room,
            join_url=f"{base}/{room}",
            data={
                "room": room,
                "start": request.start.astimezone(UTC).isoformat(),
                "end": request.end.astimezone(UTC).isoformat(),
            },
        )

    def join_url(self, meeting: Meeting, participant: Participant) -> str:
        self._require_meeting_settings()
        base = _setting("JITSI_BASE_URL").rstrip("/")
        room = meeting.data.get("room") or meeting.meeting_id
        token = self.participant_token(meeting, participant)
        return f"{base}/{quote(room, safe='')}?jwt={token}"

    def participant_token(self, meeting: Meeting, participant: Participant) -> str:
        """The signed JWT that lets one participant into the meeting's room."""
        try:
            start = datetime.fromisoformat(meeting.data["start"])
            end = datetime.fromisoformat(meeting.data["end"])
        except (KeyError, TypeError, ValueError) as error:
            raise MeetingError(
                "This meeting was not made by the Jitsi backend (it has no start and end).", permanent=True
            ) from error
        now = timezone.now()
        expires = min(end + TOKEN_LATE, start + TOKEN_MAX_AFTER_START)
        if expires <= now:
            raise MeetingError(
                "The visit is over: its meeting no longer admits anyone, so no join link can be made.",
                permanent=True,
            )
        clinician = participant.role == "clinician"
        claims = {
            "iss": _setting("JITSI_APP_ID"),
            "aud": "jitsi",
            "sub": urlsplit(_setting("JITSI_BASE_URL")).hostname,
            "room": meeting.data.get("room") or meeting.meeting_id,
            "iat": int(now.timestamp()),
            "nbf": int((start - TOKEN_EARLY).timestamp()),
            "exp": int(expires.timestamp()),
            "context": {
                "user": {
                    "id": participant.participant_id,
                    "name": participant.display_name,
                    # A string, as Jitsi's token moderation plugins compare it.
                    "moderator": "true" if clinician else "false",
                    "affiliation": "owner" if clinician else "member",
                    # Patients and guests wait in the lobby until a clinician lets them in.
                    "lobby_bypass": clinician,
                    # Carried back in event webhooks (event_sync's include_user_info).
                    "role": participant.role,
                }
            },
        }
        return jwt.encode(claims, _setting("JITSI_APP_SECRET"), algorithm="HS256")

    # --- webhooks ------------------------------------------------------------------------------

    def parse_webhook(self, request: HttpRequest) -> WebhookResult:
        secret = _setting("JITSI_WEBHOOK_SECRET")
        if not secret:
            raise WebhookRejected("JITSI_WEBHOOK_SECRET is not set, so no Jitsi webhook can be trusted.")
        signature = request.headers.get(SIGNATURE_HEADER, "").strip().lower().removeprefix("sha256=")
        if not signature:
            raise WebhookRejected(f"The {SIGNATURE_HEADER} header is missing.")
        body = request.body
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise WebhookRejected(f"The {SIGNATURE_HEADER} signature does not match the body.")
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise WebhookRejected("The body is not JSON.") from error
        if not isinstance(payload, dict):
            raise WebhookRejected("The body is not a JSON object.")
        event = _event_sync_event(payload) if "event_name" in payload else _jaas_style_event(payload)
        return WebhookResult(events=[event] if event else [])


def _role(user: dict[str, Any]) -> str:
    role = user.get("role")
    if role in ROLES:
        return role
    moderator = user.get("moderator")
    if moderator is True or str(moderator).lower() == "true":
        return "clinician"
    return "unknown"


def _from_epoch(value: Any, *, milliseconds: bool = False) -> datetime | None:
    try:
        seconds = float(value) / (1000 if milliseconds else 1)
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _event_sync_event(payload: dict[str, Any]) -> MeetingEvent | None:
    """jitsi-contrib event_sync: {"event_name": "muc-occupant-joined", "room_name", "occupant": {...}}."""
    event_name = payload.get("event_name")
    kind = _KINDS.get(event_name)
    if kind is None:
        return None
    if payload.get("is_breakout"):
        # A move into a breakout room of the same visit: the person has not left the visit.
        return None
    room = payload.get("room_name")
    occupant = payload.get("occupant")
    if not isinstance(room, str) or not room or not isinstance(occupant, dict):
        raise WebhookRejected(f"A {event_name} event needs room_name and occupant.")
    at = _from_epoch(occupant.get("left_at" if kind == "left" else "joined_at"))
    occupant_jid = str(occupant.get("occupant_jid") or "")
    participant_id = str(occupant.get("id") or occupant_jid)
    return MeetingEvent(
        event_id=stable_event_id("jitsi", room, occupant_jid, participant_id, event_name, at),
        meeting_id=room,
        participant_id=participant_id,
        role=_role(occupant),
        kind=kind,
        occurred_at=at or timezone.now(),
    )


def _jaas_style_event(payload: dict[str, Any]) -> MeetingEvent | None:
    """JaaS-style: {"eventType": "PARTICIPANT_JOINED", "idempotencyKey", "fqn", "timestamp", "data"}."""
    event_type = payload.get("eventType")
    kind = _KINDS.get(event_type)
    if kind is None:
        return None
    data = payload.get("data")
    fqn = payload.get("fqn")
    if not isinstance(fqn, str) or not fqn or not isinstance(data, dict):
        raise WebhookRejected(f"A {event_type} event needs fqn and data.")
    if data.get("isBreakout"):
        return None
    room = fqn.rsplit("/", 1)[-1]
    at = _from_epoch(payload.get("timestamp"), milliseconds=True)
    participant_id = str(data.get("id") or data.get("participantId") or data.get("participantJid") or "")
    key = payload.get("idempotencyKey")
    if isinstance(key, str) and 0 < len(key) <= 100:
        event_id = f"jitsi:{key}"  # the provider's own ID for this delivery's event
    else:
        event_id = stable_event_id("jitsi", room, participant_id, event_type, payload.get("timestamp"), key)
    return MeetingEvent(
        event_id=event_id,
        meeting_id=room,
        participant_id=participant_id,
        role=_role(data),
        kind=kind,
        occurred_at=at or timezone.now(),
    )
