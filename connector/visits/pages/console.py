"""The clinician's console for one visit: live status, Admit, guest invites.

Reached with a console token (`console_url_for`), inside the EHR frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from urllib.parse import urlencode

from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt

from connector.meetings.base import MeetingError
from connector.models import GuestInvite, ParticipantRole, Visit
from connector.services.participants import (
    InvalidField,
    InviteLimitReached,
    NotInLobby,
    VisitNotStarted,
    guest_invite_create,
    guest_invite_revoke,
    participant_admit,
    visit_end,
)
from connector.services.presence import HEARTBEAT_SECONDS, heartbeat_record, heartbeat_touch
from connector.services.visits import join_token_make, join_url_for
from connector.visits.pages.common import (
    POLL_SECONDS,
    json_problem,
    methods,
    no_store,
    presence_for_display,
    problem,
    public_url,
    quiet,
    scheduled_display,
    visit_scope,
    visit_zone,
    wants_json,
)

CONSOLE_SALT = "connector.clinician-console"
CONSOLE_MAX_AGE = timedelta(hours=12)


def console_token_make(*, visit: Visit, participant_id: str) -> str:
    return signing.dumps({"v": visit.public_id, "p": participant_id}, salt=CONSOLE_SALT, compress=True)


def _console_path(visit: Visit, token: str, name: str = "visits:console") -> str:
    return f"{reverse(name, kwargs={'public_id': visit.public_id})}?{urlencode({'t': token})}"


def console_url_for(visit: Visit, participant_id: str) -> str:
    """The clinician's live status page for one visit (absolute URL, valid 12 hours).

    `participant_id` is the clinician's ID in the visit's events
    (`participant_id_for(ParticipantRole.CLINICIAN, fhir_user)`). The link is a
    credential: hand it only to that clinician (e.g. on the launch page in the EHR frame).
    """
    return public_url(_console_path(visit, console_token_make(visit=visit, participant_id=participant_id)))


@dataclass(frozen=True)
class ConsoleAccess:
    token: str
    visit: Visit
    participant_id: str

    def path(self, name: str = "visits:console") -> str:
        return _console_path(self.visit, self.token, name)


def _with_console(*, as_json: bool = False) -> Callable:
    """Check the console token (`t`) is valid and for THIS visit, then enter the visit's scope."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, public_id: str, *args, **kwargs) -> HttpResponse:
            def refuse(code: str, title: str, message: str, status: int) -> HttpResponse:
                if as_json or wants_json(request):
                    return json_problem(code, message, status)
                return problem(request, title, message, status)

            token = request.GET.get("t") or request.POST.get("t") or ""
            try:
                payload = signing.loads(token, salt=CONSOLE_SALT, max_age=CONSOLE_MAX_AGE)
            except signing.SignatureExpired:
                return refuse(
                    "console_expired",
                    "This page has expired",
                    "The visit's status page is valid for 12 hours. Open the visit from the EHR again.",
                    403,
                )
            except signing.BadSignature:
                return refuse(
                    "console_invalid",
                    "Not allowed",
                    "This status page link is not valid. Open the visit from the EHR again.",
                    403,
                )
            not_found = (
                "not_found",
                "Not found",
                "There is no such visit, or this link is for another one.",
                404,
            )
            if not isinstance(payload, dict) or payload.get("v") != public_id or not payload.get("p"):
                return refuse(*not_found)
            with visit_scope(public_id) as visit:
                if visit is None or not visit.tenant.is_enabled:
                    return refuse(*not_found)
                access = ConsoleAccess(token=token, visit=visit, participant_id=payload["p"])
                return view(request, access, *args, **kwargs)

        return wrapped

    return decorator


def _invites_for_display(visit: Visit) -> list[dict]:
    rows = []
    for invite in GuestInvite.objects.filter(visit=visit).order_by("created_at", "pk"):
        row: dict = {"invite": invite}
        if invite.revoked_at is None:
            token = join_token_make(
                visit=visit, role=ParticipantRole.GUEST, participant_id=invite.participant_id
            )
            row["link"] = public_url(reverse("visits:join", kwargs={"token": token}))
        rows.append(row)
    return rows


def console_panel(access: ConsoleAccess, title: str = "") -> dict:
    """What the live status panel (visits/_live_panel.html) needs for one visit."""
    return {
        "title": title,
        "status_url": access.path("visits:console-status"),
        "admit_url": access.path("visits:console-admit"),
        "presence": presence_for_display(access.visit),
        "visit_state_label": access.visit.get_state_display(),
        "poll_ms": POLL_SECONDS * 1000,
        "heartbeat_url": access.path("visits:console-heartbeat"),
    }


def _console_page(
    request: HttpRequest, access: ConsoleAccess, *, error: str = "", notice: str = "", status: int = 200
):
    visit = access.visit
    try:
        clinician_join_url = join_url_for(
            visit=visit,
            role=ParticipantRole.CLINICIAN,
            participant_id=access.participant_id,
            display_name="Clinician",
        )
        meeting_problem = ""
    except MeetingError as error:
        clinician_join_url, meeting_problem = "", error.message
    invites = _invites_for_display(visit)
    response = render(
        request,
        "visits/console.html",
        {
            "visit": visit,
            "scheduled": scheduled_display(visit, for_clinician=True),
            "zone": visit_zone(visit).key,
            "panel": console_panel(access),
            "clinician_join_url": clinician_join_url,
            "meeting_problem": meeting_problem,
            "invites": invites,
            "active_invites": sum(1 for row in invites if "link" in row),
            "max_guests": visit.tenant.max_guests_per_visit,
            "invite_kinds": GuestInvite.Kind.choices,
            "invite_url": access.path("visits:console-invite"),
            "revoke_url": access.path("visits:console-revoke"),
            "end_url": access.path("visits:console-end"),
            "text_url": access.path("visits:console-invite-text"),
            "error": error,
            "notice": notice,
            "heartbeat_url": access.path("visits:console-heartbeat"),
            "heartbeat_ms": HEARTBEAT_SECONDS * 1000,
        },
        status=status,
    )
    return no_store(quiet(response) if status >= 400 else response)


@methods("GET", "HEAD")
@xframe_options_exempt
@_with_console()
def console(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    heartbeat_touch(visit=access.visit, role=ParticipantRole.CLINICIAN, participant_id=access.participant_id)
    return _console_page(request, access)


@methods("GET", "HEAD")
@_with_console(as_json=True)
def console_status(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    visit = access.visit
    return no_store(
        JsonResponse(
            {
                "visit_state": visit.state,
                "visit_state_label": visit.get_state_display(),
                **presence_for_display(visit),
            }
        )
    )


@csrf_exempt
@methods("POST")
@_with_console(as_json=True)
def console_heartbeat(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    """The console is still open (every ~15 s): keeps the clinician present while any of their pages is."""
    present = heartbeat_record(
        visits=[access.visit], role=ParticipantRole.CLINICIAN, participant_id=access.participant_id
    )
    return no_store(JsonResponse({"present": present, "every_seconds": HEARTBEAT_SECONDS}))


@csrf_exempt
@methods("POST")
@xframe_options_exempt
@_with_console()
def console_admit(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    participant_id = request.POST.get("participant_id", "")
    try:
        _, created = participant_admit(visit=access.visit, participant_id=participant_id)
    except NotInLobby:
        message = "This person is not waiting in this visit's lobby (they may have left). Refresh the list."
        if wants_json(request):
            return json_problem("not_in_lobby", message, 400, field="participant_id")
        return _console_page(request, access, error=message, status=400)
    if wants_json(request):
        return no_store(JsonResponse({"admitted": participant_id, "created": created}))
    return redirect(access.path())


@csrf_exempt
@methods("POST")
@xframe_options_exempt
@_with_console()
def console_invite(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    try:
        invite = guest_invite_create(visit=access.visit, kind=request.POST.get("kind", ""))
    except InvalidField:
        return _console_page(
            request,
            access,
            error="Choose who to invite: another clinician, a family member or an interpreter.",
            status=400,
        )
    except InviteLimitReached as refusal:
        return _console_page(request, access, error=refusal.message, status=409)
    return redirect(f"{access.path()}#invite-{invite.participant_id}")


@csrf_exempt
@methods("POST")
@xframe_options_exempt
@_with_console()
def console_invite_text(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    """Send a guest link by text message (SMS step of the setup must be done)."""
    from django.core.exceptions import ValidationError

    from sms.services.invites import guest_invite_text

    participant_id = request.POST.get("participant_id", "")
    invite = GuestInvite.objects.filter(visit=access.visit, participant_id=participant_id).first()
    if invite is None:
        return _console_page(request, access, error="That guest link does not exist.", status=404)
    token = join_token_make(
        visit=access.visit, role=ParticipantRole.GUEST, participant_id=invite.participant_id
    )
    try:
        message = guest_invite_text(
            invite=invite,
            phone=request.POST.get("phone", ""),
            link=public_url(reverse("visits:join", kwargs={"token": token})),
        )
    except ValidationError as error:
        return _console_page(request, access, error=" ".join(error.messages), status=400)
    return _console_page(request, access, notice=f"The link is being texted to …{message.to_last_four}.")


@csrf_exempt
@methods("POST")
@xframe_options_exempt
@_with_console()
def console_revoke(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    guest_invite_revoke(visit=access.visit, participant_id=request.POST.get("participant_id", ""))
    return redirect(f"{access.path()}#invites")


@csrf_exempt
@methods("POST")
@xframe_options_exempt
@_with_console()
def console_end(request: HttpRequest, access: ConsoleAccess) -> HttpResponse:
    """End the visit for everyone still connected (the API's POST .../end/ calls the same service)."""
    try:
        visit_end(visit=access.visit)
    except VisitNotStarted as refusal:
        return _console_page(request, access, error=str(refusal), status=409)
    return redirect(access.path())
