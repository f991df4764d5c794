"""The demo meeting page (connector.meetings.demo): a stand-in for a video call.

Reached by the demo backend's signed link; records joins and leaves on every visit of the meeting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from urllib.parse import urlencode

from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt

from connector.meetings import get_meeting_backend
from connector.meetings.base import ROLES
from connector.meetings.demo import DemoMeetingBackend
from connector.models import GuestInvite, Meeting, ParticipantRole, Visit
from connector.services.participants import (
    InvalidField,
    client_event_id_clean,
    demo_meeting_event_record,
    display_name_for,
    guest_invite_usable,
)
from connector.services.presence import HEARTBEAT_SECONDS, ended_for, heartbeat_record, heartbeat_touch
from connector.visits.pages.common import (
    POLL_SECONDS,
    json_body,
    json_problem,
    methods,
    no_store,
    presence_for_display,
    problem,
)
from connector.visits.pages.console import ConsoleAccess, console_panel, console_token_make, console_url_for
from tenants.scoping import all_tenants, tenant_scope

# The demo backend signs its links with this salt (connector/meetings/demo.py).
DEMO_MEETING_SALT = "connector.demo-meeting"


@dataclass(frozen=True)
class DemoSeat:
    meeting: Meeting
    visits: list[Visit]
    role: str
    participant_id: str
    sig: str


def _demo_signature_ok(meeting_id: str, role: str, participant_id: str, sig: str) -> bool:
    if not sig:
        return False
    try:
        # unsign() also accepts signatures made with SECRET_KEY_FALLBACKS.
        signing.Signer(salt=DEMO_MEETING_SALT).unsign(f"{meeting_id}:{role}:{participant_id}:{sig}")
    except signing.BadSignature:
        return False
    return True


def _demo_meeting(meeting_id: str) -> Meeting | None:
    with all_tenants():
        candidates = list(Meeting.objects.select_related("tenant").filter(meeting_id=meeting_id))
    for meeting in candidates:
        try:
            backend = get_meeting_backend(meeting.backend)
        except ImproperlyConfigured:
            continue  # a backend since removed from the code: not a demo meeting
        if isinstance(backend, DemoMeetingBackend):
            return meeting
    return None


def _with_demo_seat(*, as_json: bool) -> Callable:
    """Check the demo link's signature over meeting, role and participant; enter the meeting's scope."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, meeting_id: str, *args, **kwargs) -> HttpResponse:
            def refuse(code: str, title: str, message: str, status: int) -> HttpResponse:
                if as_json:
                    return json_problem(code, message, status)
                return problem(request, title, message, status)

            if request.method == "POST":
                try:
                    body = json_body(request)
                except InvalidField as error:
                    return json_problem("invalid", error.message, 400, field=error.field)
                if not isinstance(body, dict):
                    return json_problem("invalid", "The body must be a JSON object.", 400, field="body")
                request.demo_body = body
                source = {key: body.get(key) or request.GET.get(key, "") for key in ("role", "sig")}
                source["p"] = body.get("participant_id") or ""
            else:
                source = {key: request.GET.get(key, "") for key in ("role", "p", "sig")}
            role, participant_id, sig = (str(source[key] or "") for key in ("role", "p", "sig"))
            if (
                role not in ROLES
                or not participant_id
                or not _demo_signature_ok(meeting_id, role, participant_id, sig)
            ):
                return refuse(
                    "bad_signature",
                    "This meeting link does not work",
                    "The link is incomplete or was changed. Open the visit again from the link you were given.",
                    403,
                )
            meeting = _demo_meeting(meeting_id)
            if meeting is None:
                return refuse("not_found", "Meeting not found", "This demo meeting does not exist.", 404)
            with tenant_scope(meeting.tenant):
                visits = list(meeting.visits.select_related("tenant", "endpoint").order_by("pk"))
                if role == ParticipantRole.GUEST and not any(
                    guest_invite_usable(visit=visit, participant_id=participant_id) for visit in visits
                ):
                    return refuse(
                        "invite_revoked",
                        "This invitation was withdrawn",
                        "The care team withdrew this invitation.",
                        403,
                    )
                seat = DemoSeat(
                    meeting=meeting, visits=visits, role=role, participant_id=participant_id, sig=sig
                )
                return view(request, seat, *args, **kwargs)

        return wrapped

    return decorator


def _demo_query(seat: DemoSeat) -> str:
    return urlencode({"role": seat.role, "p": seat.participant_id, "sig": seat.sig})


def _demo_display_name(seat: DemoSeat) -> str:
    kind = None
    if seat.role == ParticipantRole.GUEST:
        invite = GuestInvite.objects.filter(participant_id=seat.participant_id).first()
        kind = invite.kind if invite else None
    return display_name_for(role=seat.role, invite_kind=kind)


@methods("GET", "HEAD")
@xframe_options_exempt
@_with_demo_seat(as_json=False)
def demo_meeting(request: HttpRequest, seat: DemoSeat) -> HttpResponse:
    """A stand-in for a video call: camera preview, who is here, and (for clinicians) the lobby."""
    for visit in seat.visits:
        heartbeat_touch(visit=visit, role=seat.role, participant_id=seat.participant_id)
    panels = []
    if seat.role == ParticipantRole.CLINICIAN:
        for index, visit in enumerate(seat.visits, start=1):
            token = console_token_make(visit=visit, participant_id=seat.participant_id)
            access = ConsoleAccess(token=token, visit=visit, participant_id=seat.participant_id)
            title = f"Visit {index}" if len(seat.visits) > 1 else ""
            # The full console (guest invites too), in a new tab: leaving this page would leave the meeting.
            panels.append(
                {**console_panel(access, title), "console_url": console_url_for(visit, seat.participant_id)}
            )
    meeting_id = seat.meeting.meeting_id
    return no_store(
        render(
            request,
            "visits/demo_meeting.html",
            {
                "role": seat.role,
                "participant_id": seat.participant_id,
                "sig": seat.sig,
                "display_name": _demo_display_name(seat),
                "event_url": reverse("visits:demo-meeting-event", kwargs={"meeting_id": meeting_id}),
                "status_url": reverse("visits:demo-meeting-status", kwargs={"meeting_id": meeting_id})
                + "?"
                + _demo_query(seat),
                "panels": panels,
                "group": len(seat.visits) > 1,
                "poll_ms": POLL_SECONDS * 1000,
                "heartbeat_url": reverse("visits:demo-meeting-heartbeat", kwargs={"meeting_id": meeting_id}),
                "heartbeat_ms": HEARTBEAT_SECONDS * 1000,
            },
        )
    )


@methods("GET", "HEAD")
@_with_demo_seat(as_json=True)
def demo_meeting_status(request: HttpRequest, seat: DemoSeat) -> HttpResponse:
    """Who is in the meeting now: everyone connected to any of its visits, once each."""
    seen: dict[str, dict] = {}
    for visit in seat.visits:
        for entry in presence_for_display(visit)["connected"]:
            seen.setdefault(entry["participant_id"], entry)
    participants = [
        {**entry, "you": entry["participant_id"] == seat.participant_id} for entry in seen.values()
    ]
    return no_store(JsonResponse({"participants": participants}))


@csrf_exempt
@methods("POST")
@_with_demo_seat(as_json=True)
def demo_meeting_heartbeat(request: HttpRequest, seat: DemoSeat) -> HttpResponse:
    """The meeting page is still open (every ~15 s): {participant_id, role, sig}.

    `present: false` means the participant was marked as left for silence; the page joins again,
    unless `ended: true`: the visit was ended (console or API), and the page stops.
    """
    body = request.demo_body
    unknown = sorted(str(key) for key in body if key not in {"participant_id", "role", "sig"})
    if unknown:
        return json_problem("invalid", f"{unknown[0]} is not a heartbeat field.", 400, field=unknown[0])
    present = heartbeat_record(visits=seat.visits, role=seat.role, participant_id=seat.participant_id)
    ended = not present and ended_for(visits=seat.visits, participant_id=seat.participant_id)
    return no_store(JsonResponse({"present": present, "ended": ended, "every_seconds": HEARTBEAT_SECONDS}))


@csrf_exempt
@methods("POST")
@_with_demo_seat(as_json=True)
def demo_meeting_event(request: HttpRequest, seat: DemoSeat) -> HttpResponse:
    """A join or leave from the demo page (navigator.sendBeacon): {kind, participant_id, role, event_id, sig}."""
    body = request.demo_body
    allowed = {"kind", "participant_id", "role", "event_id", "sig"}
    unknown = sorted(str(key) for key in body if key not in allowed)
    if unknown:
        return json_problem("invalid", f"{unknown[0]} is not an event field.", 400, field=unknown[0])
    try:
        client_event_id = client_event_id_clean(body.get("event_id"))
        created = demo_meeting_event_record(
            meeting=seat.meeting,
            client_event_id=client_event_id,
            kind=str(body.get("kind") or ""),
            role=seat.role,
            participant_id=seat.participant_id,
        )
    except InvalidField as error:
        return json_problem("invalid", error.message, 400, field=error.field)
    return no_store(JsonResponse({"recorded": True, "created": created}, status=202))
