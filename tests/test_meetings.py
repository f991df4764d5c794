"""Meeting backends: Teams through a real local HTTP server speaking Graph's shapes, Jitsi tokens and
signed webhooks, the demo and locmem backends, and loading by dotted path."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import pytest
import time_machine
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.signing import Signer
from django.test import RequestFactory

from connector.meetings import (
    Meeting,
    MeetingError,
    MeetingEvent,
    MeetingRequest,
    Participant,
    WebhookRejected,
    get_meeting_backend,
    locmem,
)
from connector.meetings.demo import DemoMeetingBackend
from connector.meetings.jitsi import JitsiMeetingBackend
from connector.meetings.locmem import LocmemMeetingBackend
from connector.meetings.teams import TeamsGraphMeetingBackend, thread_id_from_join_url
from tests.support.local_server import LocalServer, Route, Seen

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ORGANIZER = "550fae72-d251-43ec-868c-373732c2704f"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENT_STATE = "a-secret-client-state-from-the-subscription"
THREAD = "19:meeting_M2IzYzczNTItYmY3OC00MDlmLWJjMzUtYmFiMjNlOTY4MGEz@thread.v2"
JOIN_WEB_URL = (
    "https://teams.microsoft.com/l/meetup-join/"
    + quote(THREAD, safe="").replace("%3A", "%3a")
    + "/0?context=%7b%22Tid%22%3a%22"
    + TENANT
    + "%22%2c%22Oid%22%3a%22"
    + ORGANIZER
    + "%22%7d"
)
GRAPH_MEETING_ID = "MSo1NTBmYWU3Mi1kMjUxLTQzZWMtODY4Yy0zNzM3MzJjMjcwNGYqMCoqMTk6bWVldGluZ19NMkl6"
MEETINGS_PATH = f"/graph/v1.0/users/{ORGANIZER}/onlineMeetings"
TOKEN_PATH = f"/login/{TENANT}/oauth2/v2.0/token"

JITSI_SECRET = "jitsi-app-secret-of-at-least-32-characters"
JITSI_WEBHOOK_SECRET = "jitsi-webhook-signing-secret"

# A visit at 16:00-16:30 in UTC+2, i.e. 14:00-14:30 UTC.
PLUS_TWO = timezone(timedelta(hours=2))
START = datetime(2030, 5, 1, 16, 0, tzinfo=PLUS_TWO)
END = datetime(2030, 5, 1, 16, 30, tzinfo=PLUS_TWO)


def visit_request(**changes) -> MeetingRequest:
    values = {
        "visit_reference": "visit-42",
        "subject": "Virtual visit",
        "start": START,
        "end": END,
        "organizer_id": ORGANIZER,
        "tenant_key": TENANT,
    }
    values.update(changes)
    return MeetingRequest(**values)


CLINICIAN = Participant(role="clinician", display_name="Clinician", participant_id="p-clin-1")
PATIENT = Participant(role="patient", display_name="Patient", participant_id="p-pat-1")
INTERPRETER = Participant(role="guest", display_name="Interpreter", participant_id="p-guest-1")


# --- The interface -----------------------------------------------------------------------------


def test_a_meeting_request_needs_aware_times_in_order():
    with pytest.raises(ValueError, match="timezone-aware"):
        visit_request(start=datetime(2030, 5, 1, 14, 0))
    with pytest.raises(ValueError, match="end must be after start"):
        visit_request(end=START)


def test_participants_and_events_only_take_known_roles_and_kinds():
    with pytest.raises(ValueError, match="role must be one of"):
        Participant(role="doctor", display_name="Clinician", participant_id="x")
    with pytest.raises(ValueError, match="kind must be one of"):
        MeetingEvent(
            event_id="e", meeting_id="m", participant_id="p", role="unknown", kind="waved", occurred_at=START
        )


def test_a_meeting_error_says_whether_to_retry():
    error = MeetingError("Throttled", permanent=False, retry_after=30)

    assert str(error) == "Throttled"
    assert (error.message, error.permanent, error.retry_after) == ("Throttled", False, 30)


# --- Loading by dotted path --------------------------------------------------------------------


def test_the_backend_comes_from_the_setting(settings):
    settings.MEETING_BACKEND = "connector.meetings.locmem.LocmemMeetingBackend"

    assert isinstance(get_meeting_backend(), LocmemMeetingBackend)
    assert isinstance(
        get_meeting_backend("connector.meetings.jitsi.JitsiMeetingBackend"), JitsiMeetingBackend
    )


def test_without_the_setting_the_demo_backend_is_used(settings):
    if hasattr(settings, "MEETING_BACKEND"):
        del settings.MEETING_BACKEND

    assert isinstance(get_meeting_backend(), DemoMeetingBackend)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("connector.meetings.nowhere.Backend", "cannot be imported"),
        ("connector.meetings.base.Meeting", "is not a BaseMeetingBackend subclass"),
    ],
)
def test_a_wrong_backend_path_is_a_configuration_error(path, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        get_meeting_backend(path)


# --- Demo --------------------------------------------------------------------------------------


def test_the_demo_backend_links_to_the_connectors_demo_meeting_page(settings):
    settings.PUBLIC_BASE_URL = "https://connector.example.org"
    backend = DemoMeetingBackend()

    meeting = backend.create_meeting(visit_request())
    other = backend.create_meeting(visit_request())

    assert meeting.meeting_id != other.meeting_id
    assert len(meeting.meeting_id) >= 20
    assert meeting.join_url == f"https://connector.example.org/visit/demo-meeting/{meeting.meeting_id}/"
    url = backend.join_url(meeting, PATIENT)
    assert url.startswith(
        f"https://connector.example.org/visit/demo-meeting/{meeting.meeting_id}/?role=patient&p=p-pat-1&sig="
    )
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    signer = Signer(salt="connector.demo-meeting")
    assert signer.unsign(f"{meeting.meeting_id}:patient:p-pat-1:{signature}")
    assert parse_qs(urlsplit(backend.join_url(meeting, CLINICIAN)).query)["sig"][0] != signature
    assert backend.parse_webhook(RequestFactory().post("/webhooks/meetings/demo/")).events == []


# --- Locmem ------------------------------------------------------------------------------------


def test_the_locmem_backend_records_meetings_with_deterministic_ids():
    backend = LocmemMeetingBackend()

    first = backend.create_meeting(visit_request())
    second = backend.create_meeting(visit_request(visit_reference="visit-43"))

    assert [m.meeting_id for m in locmem.outbox] == ["locmem-1", "locmem-2"]
    assert locmem.outbox == [first, second]
    assert first.data["visit_reference"] == "visit-42"
    assert first.data["subject"] == "Virtual visit"
    assert backend.join_url(first, CLINICIAN) == "https://meetings.invalid/locmem-1?role=clinician&p=p-clin-1"


def test_the_locmem_backend_fails_once_when_told_to():
    LocmemMeetingBackend.fail_next = MeetingError("Provider down", permanent=False)
    backend = LocmemMeetingBackend()

    with pytest.raises(MeetingError, match="Provider down"):
        backend.create_meeting(visit_request())
    assert backend.create_meeting(visit_request()).meeting_id == "locmem-1"
    assert LocmemMeetingBackend.fail_next is None


def test_the_locmem_backend_reads_events_from_a_webhook_with_its_secret():
    body = {
        "events": [
            {
                "event_id": "e-1",
                "meeting_id": "locmem-1",
                "participant_id": "p-pat-1",
                "role": "patient",
                "kind": "lobby_entered",
                "occurred_at": "2030-05-01T14:01:00+00:00",
            }
        ]
    }
    request = RequestFactory().post(
        "/webhooks/meetings/locmem/",
        data=json.dumps(body),
        content_type="application/json",
        headers={"X-Locmem-Secret": LocmemMeetingBackend.webhook_secret},
    )

    [event] = LocmemMeetingBackend().parse_webhook(request).events

    assert event.kind == "lobby_entered"
    assert event.occurred_at == datetime(2030, 5, 1, 14, 1, tzinfo=UTC)
    unsigned = RequestFactory().post("/w/", data=json.dumps(body), content_type="application/json")
    with pytest.raises(WebhookRejected):
        LocmemMeetingBackend().parse_webhook(unsigned)


# --- Teams through Microsoft Graph -------------------------------------------------------------


def graph_meeting(**changes) -> dict:
    """An onlineMeeting as Graph returns it from POST /users/{id}/onlineMeetings (201 Created)."""
    body = {
        "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{ORGANIZER}')/onlineMeetings/$entity",
        "id": GRAPH_MEETING_ID,
        "creationDateTime": "2030-04-20T09:00:00.1234567Z",
        "startDateTime": "2030-05-01T14:00:00Z",
        "endDateTime": "2030-05-01T14:30:00Z",
        "joinWebUrl": JOIN_WEB_URL,
        "subject": "Virtual visit",
        "chatInfo": {"threadId": THREAD, "messageId": "0", "replyChainMessageId": None},
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "allowedPresenters": "organizer",
        "participants": {"organizer": {"identity": {"user": {"id": ORGANIZER}}, "role": "presenter"}},
        "joinMeetingIdSettings": {
            "isPasscodeRequired": False,
            "joinMeetingId": "1234567890",
            "passcode": None,
        },
    }
    body.update(changes)
    return body


def token_response(
    token: str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.app-token", expires_in: int = 3599
) -> Route:
    return Route(
        body={
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }
    )


@pytest.fixture
def graph(local_server: LocalServer, settings) -> LocalServer:
    """Microsoft Entra ID's token endpoint under /login and Graph under /graph, on one local server."""
    settings.GRAPH_CLIENT_ID = CLIENT_ID
    settings.GRAPH_CLIENT_SECRET = "client-secret-value"
    settings.GRAPH_AUTHORITY = local_server.url("/login")
    settings.GRAPH_BASE_URL = local_server.url("/graph")
    settings.GRAPH_WEBHOOK_CLIENT_STATE = CLIENT_STATE
    local_server.add(TOKEN_PATH, token_response())
    local_server.add(MEETINGS_PATH, Route(status=201, body=graph_meeting()))
    return local_server


def calls_to(server: LocalServer, path: str) -> list[Seen]:
    return [seen for seen in server.seen if seen.route == path]


def teams_failure(request: MeetingRequest | None = None) -> MeetingError:
    with pytest.raises(MeetingError) as caught:
        TeamsGraphMeetingBackend().create_meeting(request or visit_request())
    return caught.value


def test_it_creates_a_teams_meeting_for_the_clinician_with_the_lobby_for_outsiders(graph):
    meeting = TeamsGraphMeetingBackend().create_meeting(visit_request())

    [token_call] = calls_to(graph, TOKEN_PATH)
    assert token_call.method == "POST"
    assert token_call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_call.form() == {
        "client_id": CLIENT_ID,
        "client_secret": "client-secret-value",
        "scope": "https://graph.microsoft.com/.default",
        "grant_type": "client_credentials",
    }
    [create] = calls_to(graph, MEETINGS_PATH)
    assert create.method == "POST"
    assert create.headers["authorization"] == "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.app-token"
    assert create.headers["content-type"] == "application/json"
    assert create.json() == {
        "startDateTime": "2030-05-01T14:00:00Z",
        "endDateTime": "2030-05-01T14:30:00Z",
        "subject": "Virtual visit",
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "allowedPresenters": "organizer",
    }
    assert "visit-42" not in create.body.decode()  # not even the opaque reference leaves the connector
    assert meeting == Meeting(
        meeting_id=THREAD,
        join_url=JOIN_WEB_URL,
        data={
            "onlineMeetingId": GRAPH_MEETING_ID,
            "joinWebUrl": JOIN_WEB_URL,
            "organizer_id": ORGANIZER,
            "tenant_id": TENANT,
        },
    )


def test_everyone_joins_a_teams_meeting_by_its_one_link(graph):
    backend = TeamsGraphMeetingBackend()
    meeting = backend.create_meeting(visit_request())

    assert {backend.join_url(meeting, p) for p in (CLINICIAN, PATIENT, INTERPRETER)} == {JOIN_WEB_URL}


def test_a_graph_token_is_reused_until_five_minutes_before_it_expires(graph):
    backend = TeamsGraphMeetingBackend()
    with time_machine.travel(datetime(2030, 4, 20, 9, 0, tzinfo=UTC), tick=False) as clock:
        backend.create_meeting(visit_request())
        backend.create_meeting(visit_request())
        assert len(calls_to(graph, TOKEN_PATH)) == 1

        clock.shift(timedelta(seconds=3599 - 300 - 1))
        backend.create_meeting(visit_request())
        assert len(calls_to(graph, TOKEN_PATH)) == 1

        clock.shift(timedelta(seconds=2))
        backend.create_meeting(visit_request())
        assert len(calls_to(graph, TOKEN_PATH)) == 2
    assert len(calls_to(graph, MEETINGS_PATH)) == 4


def test_tokens_are_cached_per_tenant_and_encrypted(graph):
    other_tenant = "0e3c0b7d-3f5e-4b6a-9d43-0f1c2e3d4a5b"
    graph.add(f"/login/{other_tenant}/oauth2/v2.0/token", token_response("token-of-the-other-tenant"))
    backend = TeamsGraphMeetingBackend()

    backend.create_meeting(visit_request())
    backend.create_meeting(visit_request(tenant_key=other_tenant))

    creates = calls_to(graph, MEETINGS_PATH)
    assert creates[1].headers["authorization"] == "Bearer token-of-the-other-tenant"
    cached = cache.get(backend._token_cache_key(other_tenant))
    assert cached and "token-of-the-other-tenant" not in cached


def test_a_short_lived_token_is_not_cached(graph):
    graph.add(TOKEN_PATH, token_response(expires_in=120))
    backend = TeamsGraphMeetingBackend()

    backend.create_meeting(visit_request())
    backend.create_meeting(visit_request())

    assert len(calls_to(graph, TOKEN_PATH)) == 2


def test_without_the_meeting_permission_graph_403_is_permanent_and_says_what_to_grant(graph):
    graph.add(
        MEETINGS_PATH,
        Route(
            status=403,
            body={
                "error": {
                    "code": "Forbidden",
                    "message": "Application does not have permission to create online meeting on behalf of this user.",
                    "innerError": {"request-id": "7c2b5b7e-0000", "date": "2030-04-20T09:00:00"},
                }
            },
        ),
    )

    error = teams_failure()

    assert error.permanent is True
    assert "OnlineMeetings.ReadWrite.All" in error.message
    assert "application access policy" in error.message
    assert "Forbidden" in error.message


def test_a_401_is_tried_once_more_with_a_fresh_token_then_is_permanent(graph):
    graph.add(MEETINGS_PATH, Route(status=401, body={"error": {"code": "InvalidAuthenticationToken"}}))

    error = teams_failure()

    assert error.permanent is True
    assert len(calls_to(graph, MEETINGS_PATH)) == 2
    assert len(calls_to(graph, TOKEN_PATH)) == 2


def test_a_stale_cached_token_is_replaced_without_failing(graph):
    answers = iter([Route(status=401, body={}), Route(status=201, body=graph_meeting())])
    graph.add(MEETINGS_PATH, lambda seen: next(answers))

    meeting = TeamsGraphMeetingBackend().create_meeting(visit_request())

    assert meeting.meeting_id == THREAD
    assert len(calls_to(graph, TOKEN_PATH)) == 2


def test_an_unknown_clinician_is_a_permanent_failure(graph):
    graph.add(
        MEETINGS_PATH, Route(status=404, body={"error": {"code": "NotFound", "message": "User not found"}})
    )

    error = teams_failure()

    assert error.permanent is True
    assert error.message.startswith("The clinician's Microsoft account was not found")


def test_throttling_is_temporary_and_says_when_to_retry(graph):
    graph.add(
        MEETINGS_PATH,
        Route(status=429, headers={"Retry-After": "17"}, body={"error": {"code": "TooManyRequests"}}),
    )

    error = teams_failure()

    assert error.permanent is False
    assert error.retry_after == 17
    assert "retry after 17 seconds" in error.message


def test_an_outage_is_temporary(graph):
    graph.add(MEETINGS_PATH, Route(status=503, body="Service Unavailable", content_type="text/plain"))

    error = teams_failure()

    assert error.permanent is False
    assert error.retry_after is None


def test_a_bad_request_is_permanent_with_graphs_reason(graph):
    graph.add(
        MEETINGS_PATH, Route(status=400, body={"error": {"code": "BadRequest", "message": "Invalid time"}})
    )

    error = teams_failure()

    assert error.permanent is True
    assert "BadRequest: Invalid time" in error.message


@pytest.mark.parametrize(
    ("status", "body", "advice"),
    [
        (
            401,
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x",
                "error_codes": [7000215],
            },
            "client secrets expire",
        ),
        (
            400,
            {
                "error": "unauthorized_client",
                "error_description": "AADSTS700016: Application with identifier 'x' was not found in the directory.",
                "error_codes": [700016],
            },
            "must consent",
        ),
        (
            400,
            {
                "error": "invalid_request",
                "error_description": "AADSTS90002: Tenant not found.",
                "error_codes": [90002],
            },
            "tenant ID",
        ),
    ],
)
def test_a_refused_token_is_permanent_and_says_what_to_fix(graph, status, body, advice):
    graph.add(TOKEN_PATH, Route(status=status, body=body))

    error = teams_failure()

    assert error.permanent is True
    assert advice in error.message
    assert "Trace ID" not in error.message
    assert calls_to(graph, MEETINGS_PATH) == []


def test_an_unavailable_token_endpoint_is_temporary(graph):
    graph.add(TOKEN_PATH, Route(status=503, headers={"Retry-After": "5"}, body={}))

    error = teams_failure()

    assert (error.permanent, error.retry_after) == (False, 5)


def test_an_unreachable_graph_is_temporary(graph, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.GRAPH_BASE_URL = f"http://127.0.0.1:{closed_port}"

    error = teams_failure()

    assert error.permanent is False
    assert "could not be reached" in error.message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"organizer_id": None}, "Microsoft Entra object ID"),
        ({"tenant_key": ""}, "Microsoft 365 tenant ID"),
        ({"tenant_key": "../../evil"}, "Microsoft 365 tenant ID"),
    ],
)
def test_a_visit_without_organizer_or_tenant_is_refused_before_calling_microsoft(graph, changes, message):
    error = teams_failure(visit_request(**changes))

    assert error.permanent is True
    assert message in error.message
    assert graph.seen == []


def test_an_unconfigured_teams_backend_says_which_settings_are_missing(settings):
    settings.GRAPH_CLIENT_ID = ""
    settings.GRAPH_CLIENT_SECRET = ""
    settings.GRAPH_WEBHOOK_CLIENT_STATE = ""

    error = teams_failure()

    assert error.permanent is True
    assert "GRAPH_CLIENT_ID" in error.message and "GRAPH_CLIENT_SECRET" in error.message
    assert len(TeamsGraphMeetingBackend().configuration_problems()) == 3


def test_the_organizer_id_cannot_leave_the_users_path(graph):
    teams_failure(visit_request(organizer_id="../../admin"))  # the local server has no such route: 404

    assert calls_to(graph, MEETINGS_PATH) == []
    assert [seen.path for seen in graph.seen][-1] == "/graph/v1.0/users/..%2F..%2Fadmin/onlineMeetings"


# --- Teams webhooks (Graph change notifications) ----------------------------------------------


def roster_notification(
    *, joined: list[dict] | None = None, exited: list[dict] | None = None, **changes
) -> dict:
    """One changeNotification for the meeting call events resource, without includeResourceData."""
    resource = f"communications/onlineMeetings?$filter=joinWebUrl+eq+'{quote(JOIN_WEB_URL, safe='')}'"
    item = {
        "subscriptionId": "b9c1a0f4-7c1e-4f3e-9c11-3a2f7f0e9a10",
        "clientState": CLIENT_STATE,
        "changeType": "updated",
        "tenantId": TENANT,
        "resource": resource,
        "subscriptionExpirationDateTime": "2030-05-03T00:00:00.0000000Z",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.onlineMeeting",
            "@odata.id": resource,
            "id": resource,
            "eventType": "Microsoft.Communication.CallRosterUpdate",
            "eventDateTime": "2030-05-01T14:02:03.1234567Z",
            "state": "active",
            "activeParticipants@joined": joined or [],
            "activeParticipants@exited": exited or [],
        },
    }
    item.update(changes)
    return item


ORGANIZER_LEG = {
    "Id": "a4d67b60-56a5-4202-9f1c-f123ff40621e",
    "Identity": {"User": {"Id": ORGANIZER, "DisplayName": "Dr. Someone", "TenantId": TENANT}},
}
GUEST_LEG = {
    "id": "11141402-1b62-4795-b540-4ffee8544231",
    "identity": {"guest": {"id": "c5e3a8f1-guest", "displayName": "Patient"}},
}


def graph_post(body: dict | str, query: str = "") -> object:
    data = body if isinstance(body, str) else json.dumps(body)
    return RequestFactory().post(
        f"/webhooks/meetings/teams/{query}", data=data, content_type="application/json"
    )


@pytest.fixture
def teams_webhook(settings) -> TeamsGraphMeetingBackend:
    settings.GRAPH_WEBHOOK_CLIENT_STATE = CLIENT_STATE
    return TeamsGraphMeetingBackend()


def test_a_subscription_validation_is_answered_with_the_token_as_plain_text(teams_webhook):
    token = "Validation: Token+1 <with> 'odd' characters & more"
    request = RequestFactory().post(
        f"/webhooks/meetings/teams/?validationToken={quote(token, safe='')}",
        data="",
        content_type="text/plain",
    )

    result = teams_webhook.parse_webhook(request)

    assert result.events == []
    assert result.response.status_code == 200
    assert result.response["Content-Type"].startswith("text/plain")
    assert result.response.content.decode() == token


def test_roster_updates_become_joined_and_left_events(teams_webhook):
    body = {
        "value": [
            roster_notification(joined=[ORGANIZER_LEG, GUEST_LEG]),
            roster_notification(exited=[GUEST_LEG]),
        ]
    }

    events = teams_webhook.parse_webhook(graph_post(body)).events

    assert [(e.kind, e.role, e.participant_id) for e in events] == [
        ("joined", "clinician", ORGANIZER),
        ("joined", "unknown", "c5e3a8f1-guest"),
        ("left", "unknown", "c5e3a8f1-guest"),
    ]
    assert {e.meeting_id for e in events} == {THREAD}
    assert events[0].occurred_at == datetime(2030, 5, 1, 14, 2, 3, 123456, tzinfo=UTC)
    assert len({e.event_id for e in events}) == 3


def test_events_carry_the_meeting_id_the_meeting_was_created_with(graph, teams_webhook):
    meeting = TeamsGraphMeetingBackend().create_meeting(visit_request())

    [event] = teams_webhook.parse_webhook(
        graph_post({"value": [roster_notification(joined=[GUEST_LEG])]})
    ).events

    assert event.meeting_id == meeting.meeting_id


def test_a_notification_delivered_twice_gives_the_same_event_ids(teams_webhook):
    body = {"value": [roster_notification(joined=[ORGANIZER_LEG, GUEST_LEG])]}

    first = teams_webhook.parse_webhook(graph_post(body)).events
    again = teams_webhook.parse_webhook(graph_post(body)).events
    later = roster_notification(joined=[GUEST_LEG])
    later["resourceData"]["eventDateTime"] = "2030-05-01T14:09:00.0000000Z"
    rejoined = teams_webhook.parse_webhook(graph_post({"value": [later]})).events

    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert rejoined[0].event_id not in {e.event_id for e in first}


@pytest.mark.parametrize(
    "items",
    [
        [roster_notification(clientState="guessed")],
        [roster_notification(joined=[GUEST_LEG]), roster_notification(clientState="guessed")],
        [{k: v for k, v in roster_notification().items() if k != "clientState"}],
    ],
)
def test_a_notification_without_the_subscriptions_client_state_is_rejected(teams_webhook, items):
    with pytest.raises(WebhookRejected, match="clientState does not match"):
        teams_webhook.parse_webhook(graph_post({"value": items}))


def test_without_a_configured_client_state_every_notification_is_rejected(settings):
    settings.GRAPH_WEBHOOK_CLIENT_STATE = ""

    with pytest.raises(WebhookRejected, match="GRAPH_WEBHOOK_CLIENT_STATE is not set"):
        TeamsGraphMeetingBackend().parse_webhook(graph_post({"value": [roster_notification(clientState="")]}))


@pytest.mark.parametrize("body", ["not json", "[]", json.dumps({"value": []}), json.dumps({"value": ["x"]})])
def test_a_body_that_is_not_a_notification_collection_is_rejected(teams_webhook, body):
    with pytest.raises(WebhookRejected):
        teams_webhook.parse_webhook(graph_post(body))


def test_call_started_and_lifecycle_notifications_give_no_events(teams_webhook):
    started = roster_notification()
    started["resourceData"]["eventType"] = "Microsoft.Communication.CallStarted"
    lifecycle = {
        "subscriptionId": "b9c1a0f4-7c1e-4f3e-9c11-3a2f7f0e9a10",
        "clientState": CLIENT_STATE,
        "lifecycleEvent": "reauthorizationRequired",
        "tenantId": TENANT,
        "subscriptionExpirationDateTime": "2030-05-03T00:00:00.0000000Z",
    }

    assert teams_webhook.parse_webhook(graph_post({"value": [started, lifecycle]})).events == []


def test_encrypted_resource_data_is_rejected_with_what_to_change(teams_webhook):
    item = roster_notification(encryptedContent={"data": "...", "dataKey": "...", "dataSignature": "..."})

    with pytest.raises(WebhookRejected, match="without includeResourceData"):
        teams_webhook.parse_webhook(graph_post({"value": [item]}))


def test_the_thread_id_is_found_however_the_join_url_is_encoded():
    assert thread_id_from_join_url(JOIN_WEB_URL) == THREAD
    assert thread_id_from_join_url(quote(quote(JOIN_WEB_URL, safe=""), safe="")) == THREAD
    assert thread_id_from_join_url("https://teams.microsoft.com/l/meetup-join/nothing") is None


# --- Jitsi -------------------------------------------------------------------------------------


@pytest.fixture
def jitsi(settings) -> JitsiMeetingBackend:
    settings.JITSI_BASE_URL = "https://meet.example.org"
    settings.JITSI_APP_ID = "ehr-connector"
    settings.JITSI_APP_SECRET = JITSI_SECRET
    settings.JITSI_WEBHOOK_SECRET = JITSI_WEBHOOK_SECRET
    return JitsiMeetingBackend()


def claims_of(url: str) -> dict:
    token = parse_qs(urlsplit(url).query)["jwt"][0]
    return jwt.decode(
        token,
        JITSI_SECRET,
        algorithms=["HS256"],
        audience="jitsi",
        issuer="ehr-connector",
        options={"verify_exp": False, "verify_nbf": False},
    )


def test_a_jitsi_meeting_is_an_unguessable_room(jitsi):
    meeting = jitsi.create_meeting(visit_request())
    other = jitsi.create_meeting(visit_request())

    assert meeting.meeting_id.startswith("visit-") and len(meeting.meeting_id) == len("visit-") + 32
    assert meeting.meeting_id != other.meeting_id
    int(meeting.meeting_id.removeprefix("visit-"), 16)  # random hex: nothing of the visit in the name
    assert meeting.join_url == f"https://meet.example.org/{meeting.meeting_id}"
    assert meeting.data == {
        "room": meeting.meeting_id,
        "start": "2030-05-01T14:00:00+00:00",
        "end": "2030-05-01T14:30:00+00:00",
    }


@time_machine.travel(datetime(2030, 4, 30, 12, 0, tzinfo=UTC), tick=False)
def test_the_clinician_joins_jitsi_as_moderator(jitsi):
    meeting = jitsi.create_meeting(visit_request())

    url = jitsi.join_url(meeting, CLINICIAN)

    assert url.startswith(f"https://meet.example.org/{meeting.meeting_id}?jwt=")
    claims = claims_of(url)
    assert claims["iss"] == "ehr-connector"
    assert claims["aud"] == "jitsi"
    assert claims["sub"] == "meet.example.org"
    assert claims["room"] == meeting.meeting_id
    assert claims["iat"] == int(datetime(2030, 4, 30, 12, 0, tzinfo=UTC).timestamp())
    assert claims["nbf"] == int(datetime(2030, 5, 1, 13, 0, tzinfo=UTC).timestamp())
    assert claims["exp"] == int(datetime(2030, 5, 1, 16, 30, tzinfo=UTC).timestamp())
    assert claims["context"]["user"] == {
        "id": "p-clin-1",
        "name": "Clinician",
        "moderator": "true",
        "affiliation": "owner",
        "lobby_bypass": True,
        "role": "clinician",
    }


@time_machine.travel(datetime(2030, 4, 30, 12, 0, tzinfo=UTC), tick=False)
@pytest.mark.parametrize("participant", [PATIENT, INTERPRETER], ids=["patient", "guest"])
def test_patients_and_guests_join_jitsi_through_the_lobby(jitsi, participant):
    meeting = jitsi.create_meeting(visit_request())

    user = claims_of(jitsi.join_url(meeting, participant))["context"]["user"]

    assert user["moderator"] == "false"
    assert user["affiliation"] == "member"
    assert user["lobby_bypass"] is False
    assert (user["id"], user["name"], user["role"]) == (
        participant.participant_id,
        participant.display_name,
        participant.role,
    )


@time_machine.travel(datetime(2030, 4, 30, 12, 0, tzinfo=UTC), tick=False)
def test_a_jitsi_token_lasts_at_most_a_day_from_the_start(jitsi):
    meeting = jitsi.create_meeting(visit_request(end=START + timedelta(days=3)))

    claims = claims_of(jitsi.join_url(meeting, PATIENT))

    assert claims["exp"] == int((START + timedelta(hours=24)).timestamp())


def test_a_jitsi_token_verifies_with_the_app_secret_only(jitsi):
    with time_machine.travel(datetime(2030, 5, 1, 14, 5, tzinfo=UTC), tick=False):
        url = jitsi.join_url(jitsi.create_meeting(visit_request()), PATIENT)
        token = parse_qs(urlsplit(url).query)["jwt"][0]
        assert jwt.decode(token, JITSI_SECRET, algorithms=["HS256"], audience="jitsi")["room"].startswith(
            "visit-"
        )
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(
                token, "another-secret-of-at-least-32-characters", algorithms=["HS256"], audience="jitsi"
            )


def test_no_jitsi_link_is_made_for_a_visit_that_is_over(jitsi):
    meeting = jitsi.create_meeting(visit_request())

    with (
        time_machine.travel(END + timedelta(hours=2, seconds=1), tick=False),
        pytest.raises(MeetingError) as caught,
    ):
        jitsi.join_url(meeting, PATIENT)

    assert caught.value.permanent is True
    assert "over" in caught.value.message


def test_an_unconfigured_jitsi_backend_says_what_is_missing(settings):
    settings.JITSI_BASE_URL = ""
    settings.JITSI_APP_ID = "ehr-connector"
    settings.JITSI_APP_SECRET = "short"
    settings.JITSI_WEBHOOK_SECRET = ""

    with pytest.raises(MeetingError) as caught:
        JitsiMeetingBackend().create_meeting(visit_request())

    assert caught.value.permanent is True
    assert "JITSI_BASE_URL" in caught.value.message and "at least 32 characters" in caught.value.message
    assert len(JitsiMeetingBackend().configuration_problems()) == 3


# --- Jitsi webhooks ----------------------------------------------------------------------------

JOINED_AT = datetime(2030, 5, 1, 14, 2, tzinfo=UTC)
LEFT_AT = datetime(2030, 5, 1, 14, 20, tzinfo=UTC)


def occupant_event(event_name: str = "muc-occupant-joined", **occupant) -> dict:
    """jitsi-contrib event_sync, with include_user_info = true."""
    data = {
        "occupant_jid": "14f01c40-5195-4a4d-8efb-f58b49d18741@meet.example.org/OWhl8jSh",
        "joined_at": int(JOINED_AT.timestamp()),
        "id": "p-pat-1",
        "name": "Patient",
        "moderator": "false",
        "role": "patient",
    }
    if event_name == "muc-occupant-left":
        data["left_at"] = int(LEFT_AT.timestamp())
    data.update(occupant)
    return {
        "event_name": event_name,
        "room_name": "visit-0123456789abcdef0123456789abcdef",
        "room_jid": "visit-0123456789abcdef0123456789abcdef@conference.meet.example.org",
        "is_breakout": False,
        "active_occupants_count": 2,
        "occupant": data,
    }


def signed(body: dict | bytes, secret: str = JITSI_WEBHOOK_SECRET, header: str | None = None) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest() if header is None else header
    headers = {"X-Jitsi-Signature": signature} if signature else {}
    return RequestFactory().post(
        "/webhooks/meetings/jitsi/", data=raw, content_type="application/json", headers=headers
    )


def test_a_signed_occupant_joined_event_becomes_a_joined_event(jitsi):
    [event] = jitsi.parse_webhook(signed(occupant_event())).events

    assert event.meeting_id == "visit-0123456789abcdef0123456789abcdef"
    assert (event.kind, event.role, event.participant_id) == ("joined", "patient", "p-pat-1")
    assert event.occurred_at == JOINED_AT


def test_an_occupant_left_event_uses_the_time_of_leaving(jitsi):
    [event] = jitsi.parse_webhook(signed(occupant_event("muc-occupant-left"))).events

    assert event.kind == "left"
    assert event.occurred_at == LEFT_AT


def test_a_moderator_without_a_role_claim_is_the_clinician(jitsi):
    body = occupant_event(id="p-clin-1", moderator="true", role=None)

    [event] = jitsi.parse_webhook(signed(body)).events

    assert event.role == "clinician"


def test_a_jitsi_event_delivered_twice_gives_the_same_event_id(jitsi):
    first = jitsi.parse_webhook(signed(occupant_event())).events[0]
    again = jitsi.parse_webhook(signed(occupant_event())).events[0]
    rejoined = jitsi.parse_webhook(signed(occupant_event(occupant_jid="x@meet.example.org/other"))).events[0]

    assert first.event_id == again.event_id
    assert rejoined.event_id != first.event_id


def test_a_jaas_style_participant_event_is_read_too(jitsi):
    body = {
        "idempotencyKey": "d11f155d-ced5-4a7e-b6d9-aaa135c64f65",
        "customerId": "c2824d584eac4489a1e32e4e164d5a3c",
        "appId": "ehr-connector",
        "eventType": "PARTICIPANT_LEFT",
        "sessionId": "c3348153-1027-4382-afad-5ae91b433c26",
        "timestamp": int(LEFT_AT.timestamp()) * 1000 + 123,
        "fqn": "ehr-connector/visit-0123456789abcdef0123456789abcdef",
        "data": {"moderator": "true", "name": "Clinician", "id": "p-clin-1", "participantJid": "abc@meet/x"},
    }

    [event] = jitsi.parse_webhook(signed(body)).events

    assert event.event_id == "jitsi:d11f155d-ced5-4a7e-b6d9-aaa135c64f65"
    assert (event.meeting_id, event.kind, event.role) == (
        "visit-0123456789abcdef0123456789abcdef",
        "left",
        "clinician",
    )
    assert event.occurred_at == LEFT_AT + timedelta(milliseconds=123)


def test_other_jitsi_events_and_breakout_moves_give_no_events(jitsi):
    created = {
        "event_name": "muc-room-created",
        "room_name": "visit-x",
        "created_at": int(JOINED_AT.timestamp()),
    }
    breakout = {**occupant_event(), "is_breakout": True, "breakout_room_id": "e0f49fd5"}

    assert jitsi.parse_webhook(signed(created)).events == []
    assert jitsi.parse_webhook(signed(breakout)).events == []


def test_the_signature_may_carry_a_sha256_prefix(jitsi):
    raw = json.dumps(occupant_event()).encode()
    digest = hmac.new(JITSI_WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()

    assert len(jitsi.parse_webhook(signed(raw, header=f"sha256={digest.upper()}")).events) == 1


@pytest.mark.parametrize(
    ("request_of", "message"),
    [
        (lambda: signed(occupant_event(), secret="a-guessed-secret"), "does not match"),
        (lambda: signed(occupant_event(), header=""), "missing"),
        (lambda: signed(occupant_event(), header="00" * 32), "does not match"),
    ],
    ids=["wrong-secret", "missing", "forged"],
)
def test_a_jitsi_webhook_without_a_good_signature_is_rejected(jitsi, request_of, message):
    with pytest.raises(WebhookRejected, match=message):
        jitsi.parse_webhook(request_of())


def test_a_body_changed_after_signing_is_rejected(jitsi):
    request = signed(occupant_event())
    tampered = signed(occupant_event(id="p-clin-1"), header=request.headers["X-Jitsi-Signature"])

    with pytest.raises(WebhookRejected, match="does not match"):
        jitsi.parse_webhook(tampered)


def test_without_a_webhook_secret_no_jitsi_webhook_is_trusted(jitsi, settings):
    settings.JITSI_WEBHOOK_SECRET = ""

    with pytest.raises(WebhookRejected, match="JITSI_WEBHOOK_SECRET is not set"):
        jitsi.parse_webhook(signed(occupant_event(), secret=""))


def test_a_signed_body_that_is_not_an_occupant_event_is_rejected(jitsi):
    with pytest.raises(WebhookRejected, match="not JSON"):
        jitsi.parse_webhook(signed(b"not json"))
    with pytest.raises(WebhookRejected, match="needs room_name and occupant"):
        jitsi.parse_webhook(signed({"event_name": "muc-occupant-joined"}))
