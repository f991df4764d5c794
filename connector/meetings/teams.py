"""Microsoft Teams meetings through Microsoft Graph, with application permissions.

One multi-tenant app registration (GRAPH_CLIENT_ID / GRAPH_CLIENT_SECRET)
serves every organization: each organization's administrator consents to it in
their own Microsoft 365 tenant, grants it `OnlineMeetings.ReadWrite.All` and an
application access policy covering their clinicians. The tenant comes from
`MeetingRequest.tenant_key`, the meeting's organizer (the clinician) from
`MeetingRequest.organizer_id` (their Microsoft Entra object ID).

Calls:

- token: client credentials, `POST {GRAPH_AUTHORITY}/{tenant}/oauth2/v2.0/token`,
  cached per tenant in Django's cache (encrypted) until five minutes before it expires;
- create: `POST {GRAPH_BASE_URL}/v1.0/users/{organizer}/onlineMeetings` with the
  times in UTC, the generic subject, `lobbyBypassSettings.scope = "organization"`
  (only people signed in to the organization skip the lobby: patients and other
  anonymous guests always wait) and `allowedPresenters = "organizer"`.

Graph is a fixed, trusted host, so `requests` is used directly (not
connector.ehr_http, which is for untrusted EHR addresses and refuses loopback);
the addresses are settings so tests can point them at a local server.

`Meeting.meeting_id` is the meeting's Teams thread ID ("19:meeting_...@thread.v2"),
not Graph's onlineMeeting ID: Graph's call-event notifications name a meeting
only by its join URL, which contains the thread ID, so events can be matched to
the meeting without another call to Graph. Graph's own ID is kept in
`Meeting.data["onlineMeetingId"]`.

Webhooks are Graph change notifications (docs/meetings.md has the subscription):

- a validation handshake, `POST ...?validationToken=<token>`, answered
  `200 text/plain` with the token;
- notifications `{"value": [<changeNotification>, ...]}`, each with the
  `clientState` the subscription was made with (GRAPH_WEBHOOK_CLIENT_STATE; any
  other value rejects the whole request). Items for the meeting call events
  resource (`communications/onlineMeetings?$filter=joinWebUrl eq '<joinWebUrl>'`)
  whose `resourceData` (subscribed without `includeResourceData`, so it comes
  unencrypted) is a `Microsoft.Communication.CallRosterUpdate` give a "joined"
  event per entry of `activeParticipants@joined` and a "left" one per entry of
  `activeParticipants@exited`. CallStarted, CallEnded and lifecycle
  notifications yield no events.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote

import requests
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from connector.encryption import decrypt_text, encrypt_text
from connector.meetings.base import (
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

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com"
DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
TIMEOUT = (5, 15)  # seconds: connect, read
TOKEN_EXPIRY_MARGIN = 300  # seconds: a token this close to expiry is not reused

PERMISSION_HINT = (
    "grant the app the OnlineMeetings.ReadWrite.All application permission (with admin consent) "
    "and an application access policy that includes this clinician "
    "(New-CsApplicationAccessPolicy and Grant-CsApplicationAccessPolicy in Teams PowerShell)"
)

# A tenant is a GUID or a verified domain name; it goes into the token URL's path.
_TENANT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_THREAD_ID = re.compile(r"19:meeting_[^@/?&'\"\s]+@thread\.[A-Za-z0-9]+")
_ORGANIZER_OID = re.compile(r'"oid"\s*:\s*"([0-9A-Fa-f-]{36})"', re.IGNORECASE)


def _setting(name: str, default: str = "") -> str:
    return str(getattr(settings, name, "") or default)


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry_after(response: requests.Response) -> int | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        delay = (parsedate_to_datetime(value) - timezone.now()).total_seconds()
    except (TypeError, ValueError):
        return None
    return max(int(delay), 0)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _graph_error(response: requests.Response) -> str:
    error = _json(response).get("error")
    if isinstance(error, dict):
        code, message = error.get("code", ""), error.get("message", "")
        return ": ".join(str(part) for part in (code, message) if part)
    return ""


def thread_id_from_join_url(text: str) -> str | None:
    """The Teams thread ID ("19:meeting_...@thread.v2") in a join URL, however often URL-encoded."""
    for _ in range(4):
        match = _THREAD_ID.search(text)
        if match:
            return match.group(0)
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return None


def _organizer_from_join_url(text: str) -> str | None:
    for _ in range(4):
        match = _ORGANIZER_OID.search(text)
        if match:
            return match.group(1).lower()
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return None


def _lower_keys(value: Any) -> Any:
    """Graph's call events spell identity keys both ways ("User"/"user", "Id"/"id")."""
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


class TeamsGraphMeetingBackend(BaseMeetingBackend):
    """Teams online meetings created through Microsoft Graph; roster events from Graph change notifications."""

    name = "teams"

    def configuration_problems(self) -> list[str]:
        problems = self._meeting_problems()
        if not _setting("GRAPH_WEBHOOK_CLIENT_STATE"):
            problems.append(
                "GRAPH_WEBHOOK_CLIENT_STATE must be set to the secret clientState of the Graph subscriptions"
            )
        return problems

    def _meeting_problems(self) -> list[str]:
        problems = []
        if not _setting("GRAPH_CLIENT_ID"):
            problems.append(
                "GRAPH_CLIENT_ID must be the application (client) ID of the connector's app registration"
            )
        if not _setting("GRAPH_CLIENT_SECRET"):
            problems.append("GRAPH_CLIENT_SECRET must be a client secret of the connector's app registration")
        return problems

    # --- meetings ------------------------------------------------------------------------------

    def create_meeting(self, request: MeetingRequest) -> Meeting:
        problems = self._meeting_problems()
        if problems:
            raise MeetingError(
                "The Teams meeting backend is not configured: " + "; ".join(problems), permanent=True
            )
        if not request.organizer_id:
            raise MeetingError(
                "A Teams meeting needs the clinician's Microsoft Entra object ID as its organizer: "
                "the clinician must sign in with their Microsoft account once.",
                permanent=True,
            )
        tenant = self._tenant(request.tenant_key)
        body = {
            "startDateTime": _utc(request.start),
            "endDateTime": _utc(request.end),
            "subject": request.subject,
            # Organization members skip the lobby; anonymous guests (patients) always wait in it.
            "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
            "allowedPresenters": "organizer",
        }
        url = f"{self._graph_base()}/v1.0/users/{quote(request.organizer_id, safe='')}/onlineMeetings"
        response = self._graph_post(tenant, url, body)
        if response.status_code not in (200, 201):
            raise self._create_error(response)
        created = _json(response)
        join_web_url = created.get("joinWebUrl") or created.get("joinUrl")
        graph_id = created.get("id")
        if not isinstance(join_web_url, str) or not join_web_url or not isinstance(graph_id, str):
            raise MeetingError(
                "Microsoft Graph answered the meeting request without a meeting ID or join URL.",
                permanent=False,
            )
        chat_info = created.get("chatInfo") if isinstance(created.get("chatInfo"), dict) else {}
        thread_id = thread_id_from_join_url(join_web_url) or chat_info.get("threadId")
        if not thread_id:
            raise MeetingError(
                "Microsoft Graph answered with a join URL that names no Teams meeting thread.",
                permanent=False,
            )
        return Meeting(
            meeting_id=thread_id,
            join_url=join_web_url,
            data={
                "onlineMeetingId": graph_id,
                "joinWebUrl": join_web_url,
                "organizer_id": request.organizer_id,
                "tenant_id": tenant,
            },
        )

    def join_url(self, meeting: Meeting, participant: Participant) -> str:
        # Teams has one link per meeting, not per person: the role follows from who
        # opens it. The clinician, signed in as the organizer, starts the meeting;
        # patients and guests open it without signing in to the organization, so
        # the organization-only lobby bypass sends them to the lobby.
        return meeting.data.get("joinWebUrl") or meeting.join_url

    # --- Graph calls ---------------------------------------------------------------------------

    def _graph_base(self) -> str:
        return _setting("GRAPH_BASE_URL", DEFAULT_GRAPH_BASE_URL).rstrip("/")

    def _tenant(self, tenant_key: str) -> str:
        tenant = (tenant_key or "").strip()
        if not _TENANT.match(tenant):
            raise MeetingError(
                "The organization has no valid Microsoft 365 tenant ID, so no Teams meeting can be made in it.",
                permanent=True,
            )
        return tenant

    def _token_cache_key(self, tenant: str) -> str:
        authority = _setting("GRAPH_AUTHORITY", DEFAULT_AUTHORITY).rstrip("/")
        return f"connector:meetings:graph-token:{_setting('GRAPH_CLIENT_ID')}:{tenant.lower()}:{authority}"

    def _access_token(self, tenant: str) -> str:
        key = self._token_cache_key(tenant)
        cached = cache.get(key)
        if cached:
            try:
                return decrypt_text(cached)
            except ImproperlyConfigured:
                cache.delete(key)  # encrypted with a key since removed: fetch a new token
        authority = _setting("GRAPH_AUTHORITY", DEFAULT_AUTHORITY).rstrip("/")
        try:
            response = requests.post(
                f"{authority}/{quote(tenant, safe='')}/oauth2/v2.0/token",
                data={
                    "client_id": _setting("GRAPH_CLIENT_ID"),
                    "client_secret": _setting("GRAPH_CLIENT_SECRET"),
                    "scope": _setting("GRAPH_SCOPE", DEFAULT_SCOPE),
                    "grant_type": "client_credentials",
                },
                timeout=TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise MeetingError(
                f"Microsoft Entra ID could not be reached for a token ({type(error).__name__}).",
                permanent=False,
            ) from error
        body = _json(response)
        token = body.get("access_token")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise self._token_error(response, body, tenant)
        try:
            lifetime = int(body.get("expires_in", 0))
        except (TypeError, ValueError):
            lifetime = 0
        if lifetime > TOKEN_EXPIRY_MARGIN:
            cache.set(key, encrypt_text(token), timeout=lifetime - TOKEN_EXPIRY_MARGIN)
        return token

    def _token_error(self, response: requests.Response, body: dict[str, Any], tenant: str) -> MeetingError:
        status = response.status_code
        if status == 429 or status >= 500:
            return MeetingError(
                f"Microsoft Entra ID is unavailable or throttling token requests (HTTP {status}).",
                permanent=False,
                retry_after=_retry_after(response),
            )
        error = str(body.get("error") or "")
        # The description's first line is the AADSTS code and Microsoft's own explanation.
        # (Later lines carry trace and correlation IDs, which only clutter the message.)
        description = (str(body.get("error_description") or "").splitlines() or [""])[0].strip()
        detail = ": ".join(part for part in (error, description) if part)
        detail = f" ({detail})" if detail else ""
        codes = {str(code) for code in body.get("error_codes") or []}
        if error == "invalid_client" or codes & {"7000215", "7000222"}:
            advice = "check GRAPH_CLIENT_ID and that GRAPH_CLIENT_SECRET is current (client secrets expire)"
        elif codes & {"90002", "90023"}:
            advice = f"check the organization's Microsoft 365 tenant ID ({tenant})"
        elif error == "unauthorized_client" or codes & {"700016", "65001"}:
            advice = (
                "an administrator of the organization must consent to the connector's app in their tenant"
            )
        else:
            advice = "check the app registration and the organization's admin consent"
        return MeetingError(
            f"Microsoft Entra ID refused a token for the organization's tenant (HTTP {status}){detail}: {advice}.",
            permanent=True,
        )

    def _graph_post(self, tenant: str, url: str, body: dict[str, Any]) -> requests.Response:
        for attempt in (1, 2):
            token = self._access_token(tenant)
            try:
                response = requests.post(
                    url,
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                    timeout=TIMEOUT,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                raise MeetingError(
                    f"Microsoft Graph could not be reached ({type(error).__name__}).", permanent=False
                ) from error
            if response.status_code == 401 and attempt == 1:
                # A cached token Graph no longer accepts: try once more with a fresh one.
                cache.delete(self._token_cache_key(tenant))
                continue
            return response
        return response

    def _create_error(self, response: requests.Response) -> MeetingError:
        status = response.status_code
        detail = _graph_error(response)
        detail = f" ({detail})" if detail else ""
        if status == 429 or status >= 500:
            retry_after = _retry_after(response)
            wait = f"; retry after {retry_after} seconds" if retry_after is not None else ""
            return MeetingError(
                f"Microsoft Graph is unavailable or throttling requests (HTTP {status}){detail}{wait}.",
                permanent=False,
                retry_after=retry_after,
            )
        if status in (401, 403):
            return MeetingError(
                f"Microsoft Graph refused to create the meeting (HTTP {status}){detail}: {PERMISSION_HINT}.",
                permanent=True,
            )
        if status == 404:
            return MeetingError(
                f"The clinician's Microsoft account was not found in the organization's tenant (HTTP 404){detail}: "
                "check the clinician's Microsoft Entra object ID and that they have a Teams license.",
                permanent=True,
            )
        return MeetingError(
            f"Microsoft Graph rejected the meeting request (HTTP {status}){detail}.", permanent=True
        )

    # --- webhooks ------------------------------------------------------------------------------

    def parse_webhook(self, request: HttpRequest) -> WebhookResult:
        validation_token = request.GET.get("validationToken")
        if validation_token is not None:
            # Graph checks a new subscription's URL: echo the (already URL-decoded) token
            # as plain text within 10 seconds. text/plain and nosniff keep it inert.
            if request.method != "POST" or not validation_token or len(validation_token) > 4096:
                raise WebhookRejected("A validation request is a POST with a non-empty validationToken.")
            response = HttpResponse(validation_token, content_type="text/plain; charset=utf-8")
            response["X-Content-Type-Options"] = "nosniff"
            return WebhookResult(response=response)

        client_state = _setting("GRAPH_WEBHOOK_CLIENT_STATE")
        if not client_state:
            raise WebhookRejected(
                "GRAPH_WEBHOOK_CLIENT_STATE is not set, so no Graph notification can be trusted."
            )
        try:
            payload = json.loads(request.body)
        except ValueError as error:
            raise WebhookRejected("The body is not JSON.") from error
        items = payload.get("value") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise WebhookRejected('The body is not a Graph notification collection ({"value": [...]}).')
        for item in items:
            given = item.get("clientState")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), client_state.encode()):
                raise WebhookRejected(
                    "A notification's clientState does not match GRAPH_WEBHOOK_CLIENT_STATE."
                )

        events: list[MeetingEvent] = []
        for item in items:
            events.extend(self._events_from(item))
        return WebhookResult(events=events)

    def _events_from(self, item: dict[str, Any]) -> list[MeetingEvent]:
        if "lifecycleEvent" in item:
            # reauthorizationRequired, subscriptionRemoved, missed: about the subscription, not a visit.
            logger.info(
                "Graph lifecycle notification %s for subscription %s",
                item.get("lifecycleEvent"),
                item.get("subscriptionId"),
            )
            return []
        if "encryptedContent" in item:
            raise WebhookRejected(
                "The notification carries encrypted resource data, which the connector does not read: "
                "create the subscription without includeResourceData."
            )
        data = _lower_keys(item.get("resourceData") or {})
        event_type = str(data.get("eventtype") or "")
        if not event_type.lower().endswith("callrosterupdate"):
            return []  # CallStarted, CallEnded and other resources: nothing about participants
        names_meeting = " ".join(
            str(v) for v in (item.get("resource"), data.get("@odata.id"), data.get("id")) if v
        )
        meeting_id = thread_id_from_join_url(names_meeting)
        if meeting_id is None:
            raise WebhookRejected(
                "A call roster notification names no Teams meeting (no join URL in its resource)."
            )
        organizer = _organizer_from_join_url(names_meeting)
        occurred_at = _parse_time(data.get("eventdatetime"))
        notification_key = item.get("id") or [
            item.get("subscriptionId"),
            item.get("resource"),
            item.get("changeType"),
            event_type,
            data.get("eventdatetime"),
        ]
        events = []
        for list_name, kind in (
            ("activeparticipants@joined", "joined"),
            ("activeparticipants@exited", "left"),
        ):
            for entry in data.get(list_name) or []:
                if not isinstance(entry, dict):
                    continue
                identity_kind, identity = _identity(entry)
                participant_id = str(identity.get("id") or entry.get("id") or "")
                role = (
                    "clinician"
                    if identity_kind == "user" and organizer and participant_id.lower() == organizer
                    else "unknown"
                )
                events.append(
                    MeetingEvent(
                        event_id=stable_event_id(
                            "teams", notification_key, kind, entry.get("id"), participant_id
                        ),
                        meeting_id=meeting_id,
                        participant_id=participant_id,
                        role=role,
                        kind=kind,
                        occurred_at=occurred_at,
                    )
                )
        return events


def _identity(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The kind ("user", "guest", "phone", ...) and value of a participant's communicationsIdentitySet."""
    identity = entry.get("identity")
    if isinstance(identity, dict):
        for kind, value in identity.items():
            if isinstance(value, dict) and not kind.startswith("@"):
                return kind, value
    return "", {}


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    # Graph always sends eventDateTime; without one, the time of receipt is the best estimate.
    return timezone.now()
