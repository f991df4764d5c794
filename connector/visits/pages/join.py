"""The patient's and guest's pages: the join link (device test), its results, the lobby.

Also the stand-alone device test of the EHR's device test record, and the ping it times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt

from connector.meetings.base import MeetingError
from connector.models import GuestInvite, IntegrationRecord, ParticipantRole, RecordKind, Visit
from connector.services.participants import (
    DEVICE_CHECKS,
    LOBBY_ADMITTED,
    InvalidField,
    device_test_record,
    device_test_result_clean,
    display_name_for,
    guest_invite_usable,
    lobby_enter,
    lobby_status,
)
from connector.services.presence import (
    HEARTBEAT_SECONDS,
    heartbeat_record,
    heartbeat_touch,
    presence_timeouts,
)
from connector.services.visits import JoinLinkError, join_token_read, join_url_for
from connector.visits.pages.common import (
    POLL_SECONDS,
    json_body,
    json_problem,
    methods,
    no_store,
    problem,
    scheduled_display,
    visit_scope,
)
from tenants.scoping import all_tenants

LOBBY_MESSAGES = {
    "waiting_for_clinician": "Your clinician has not joined yet. Keep this page open: you will be let in "
    "as soon as they are ready.",
    "waiting_for_admission": "Your clinician is here and will let you in shortly. Keep this page open.",
    "admitted": "You have been let in. Opening the visit…",
}

logger = logging.getLogger(__name__)


# --- join links: device test and lobby ----------------------------------------------------------


@dataclass(frozen=True)
class JoinLink:
    token: str
    visit: Visit
    role: str
    participant_id: str
    invite: GuestInvite | None

    @property
    def display_name(self) -> str:
        return display_name_for(role=self.role, invite_kind=self.invite.kind if self.invite else None)


def _join_refusal(request: HttpRequest, as_json: bool, code: str, title: str, message: str, status: int):
    if as_json:
        return json_problem(code, message, status)
    return problem(request, title, message, status)


def _with_join_link(*, as_json: bool = False) -> Callable:
    """Read the join token in the path, find its visit and enter its scope; refuse clearly otherwise.

    Expired links answer 410, tampered ones 400, a withdrawn guest link 403.
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, token: str, *args, **kwargs) -> HttpResponse:
            try:
                payload = join_token_read(token)
            except JoinLinkError as error:
                # join_token_read raises from BadSignature for a tampered link, on its own for an expired one.
                expired = not isinstance(error.__cause__, signing.BadSignature)
                return _join_refusal(
                    request,
                    as_json,
                    "link_expired" if expired else "link_invalid",
                    "This link has expired" if expired else "This link does not work",
                    error.message,
                    410 if expired else 400,
                )
            role, participant_id = payload.get("r"), payload.get("p")
            if role not in (ParticipantRole.PATIENT, ParticipantRole.GUEST) or not participant_id:
                return _join_refusal(
                    request,
                    as_json,
                    "link_invalid",
                    "This link does not work",
                    "This is not a patient's or guest's visit link. Use the latest link your care team sent you.",
                    400,
                )
            with visit_scope(payload.get("v", "")) as visit:
                if visit is None or not visit.tenant.is_enabled:
                    return _join_refusal(
                        request,
                        as_json,
                        "visit_not_found",
                        "Visit not found",
                        "This visit is no longer available. Contact your care team.",
                        404,
                    )
                invite = None
                if role == ParticipantRole.GUEST:
                    invite = guest_invite_usable(visit=visit, participant_id=participant_id)
                    if invite is None:
                        return _join_refusal(
                            request,
                            as_json,
                            "invite_revoked",
                            "This invitation was withdrawn",
                            "The care team withdrew this invitation. Ask them for a new link if you should "
                            "still join.",
                            403,
                        )
                link = JoinLink(
                    token=token, visit=visit, role=role, participant_id=participant_id, invite=invite
                )
                return view(request, link, *args, **kwargs)

        return wrapped

    return decorator


def _device_test_context(**extra) -> dict:
    return {"checks": DEVICE_CHECKS, "ping_url": reverse("visits:ping"), **extra}


@methods("GET", "HEAD")
@xframe_options_exempt
@_with_join_link()
def join(request: HttpRequest, link: JoinLink) -> HttpResponse:
    """The patient's (or guest's) link: the device test first, then the waiting room."""
    return no_store(
        render(
            request,
            "visits/device_test.html",
            _device_test_context(
                results_url=reverse("visits:join-device-test", kwargs={"token": link.token}),
                continue_url=reverse("visits:lobby", kwargs={"token": link.token}),
                display_name=link.display_name,
                scheduled=scheduled_display(link.visit),
            ),
        )
    )


@csrf_exempt
@methods("POST")
@_with_join_link(as_json=True)
def join_device_test_results(request: HttpRequest, link: JoinLink) -> HttpResponse:
    """The device test's results, as JSON; the page's event_id makes a retried POST the same event."""
    try:
        client_event_id, result = device_test_result_clean(json_body(request))
    except InvalidField as error:
        return json_problem("invalid", error.message, 400, field=error.field)
    event, created = device_test_record(
        visit=link.visit,
        role=link.role,
        participant_id=link.participant_id,
        client_event_id=client_event_id,
        result=result,
    )
    return no_store(
        JsonResponse(
            {"recorded": True, "created": created, "result": event.data}, status=201 if created else 200
        )
    )


@methods("GET", "HEAD")
@xframe_options_exempt
@_with_join_link()
def lobby(request: HttpRequest, link: JoinLink) -> HttpResponse:
    lobby_enter(visit=link.visit, role=link.role, participant_id=link.participant_id)
    heartbeat_touch(visit=link.visit, role=link.role, participant_id=link.participant_id)
    state = lobby_status(visit=link.visit, participant_id=link.participant_id)
    return no_store(
        render(
            request,
            "visits/lobby.html",
            {
                "visit": link.visit,
                "scheduled": scheduled_display(link.visit),
                "display_name": link.display_name,
                "state": state,
                "message": LOBBY_MESSAGES[state],
                "status_url": reverse("visits:lobby-status", kwargs={"token": link.token}),
                "device_test_url": reverse("visits:join", kwargs={"token": link.token}),
                "poll_ms": POLL_SECONDS * 1000,
                "heartbeat_url": reverse("visits:lobby-heartbeat", kwargs={"token": link.token}),
                "heartbeat_ms": HEARTBEAT_SECONDS * 1000,
            },
        )
    )


@methods("GET", "HEAD")
@_with_join_link(as_json=True)
def lobby_status_json(request: HttpRequest, link: JoinLink) -> HttpResponse:
    state = lobby_status(visit=link.visit, participant_id=link.participant_id)
    body: dict = {
        "state": state,
        "message": LOBBY_MESSAGES[state],
        "visit_state": link.visit.state,
        "visit_state_label": link.visit.get_state_display(),
    }
    if state == LOBBY_ADMITTED:
        try:
            body["join_url"] = join_url_for(
                visit=link.visit,
                role=link.role,
                participant_id=link.participant_id,
                display_name=link.display_name,
            )
        except MeetingError:
            # Keep polling: the next attempt may reach the provider.
            body["message"] = (
                "You have been let in, but the video meeting is not reachable yet. Trying again…"
            )
    return no_store(JsonResponse(body))


@csrf_exempt
@methods("POST")
@_with_join_link(as_json=True)
def lobby_heartbeat(request: HttpRequest, link: JoinLink) -> HttpResponse:
    """The lobby page is still open (every ~15 s). A waiter marked as left for silence enters again."""
    present = heartbeat_record(visits=[link.visit], role=link.role, participant_id=link.participant_id)
    if not present and lobby_status(visit=link.visit, participant_id=link.participant_id) != LOBBY_ADMITTED:
        lobby_enter(
            visit=link.visit,
            role=link.role,
            participant_id=link.participant_id,
            attempt=presence_timeouts(visit=link.visit, participant_id=link.participant_id),
        )
        present = True
    return no_store(JsonResponse({"present": present, "every_seconds": HEARTBEAT_SECONDS}))


# --- stand-alone device test and the connection check -----------------------------------------


@methods("GET", "HEAD")
@xframe_options_exempt
def device_test(request: HttpRequest) -> HttpResponse:
    """The device test from the EHR's device test record: same checks, nothing stored."""
    token = request.GET.get("token", "")
    record = None
    if token:
        with all_tenants():
            record = (
                IntegrationRecord.objects.select_related("tenant")
                .filter(context_token=token, kind=RecordKind.DEVICE_TEST_CONFIGURATION, out_of_date=False)
                .first()
            )
    if record is None or not record.tenant.is_enabled:
        # Patients open this link too: their words on the page; the cause and the fix for the
        # administrators in the log, found by the request id the page shows.
        logger.info(
            "device test link refused: no current device test record has this token; the EHR team must "
            "update the device test link from the connector's current integration records"
        )
        return problem(
            request,
            "This device test link does not work",
            "This link to test your camera and microphone is no longer valid. Use the device test in your "
            "patient portal or visit, or ask your care team for the current link.",
            404,
        )
    return no_store(render(request, "visits/device_test.html", _device_test_context(standalone=True)))


@never_cache
@methods("GET", "HEAD")
def ping(request: HttpRequest) -> HttpResponse:
    """The device test's connection check times a few of these."""
    return HttpResponse(status=204)
