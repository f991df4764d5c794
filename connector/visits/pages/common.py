"""Plumbing shared by the visit pages: refusals that never log tokens, the token visit look-up, displays."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from connector.api.errors import error_body
from connector.datetimes import format_day, format_when, zone_name
from connector.models import GuestInvite, ParticipantRole, Visit
from connector.services.participants import InvalidField, display_name_for
from connector.services.presence import presence_sweep_visit
from connector.services.visits import visit_presence
from tenants.scoping import all_tenants, tenant_scope

# Live pages (lobby, console, demo meeting) poll this often.
POLL_SECONDS = 3
MAX_JSON_BODY = 4096


def quiet(response: HttpResponse) -> HttpResponse:
    # Django's request logger writes "Bad Request: <path>" for every 4xx; our paths
    # and query strings hold tokens. Marking the response as logged skips that line.
    response._has_been_logged = True
    return response


def problem(request: HttpRequest, title: str, message: str, status: int) -> HttpResponse:
    response = render(request, "visits/problem.html", {"title": title, "message": message}, status=status)
    return quiet(response)


def json_problem(code: str, message: str, status: int, field: str | None = None) -> JsonResponse:
    response = JsonResponse(error_body(code, message, {field: message} if field else None), status=status)
    response["Cache-Control"] = "no-store"
    return quiet(response)


def no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def methods(*allowed: str) -> Callable:
    """require_http_methods without its log line (which prints the path, and so the token)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in allowed:
                return quiet(HttpResponseNotAllowed(allowed))
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def json_body(request: HttpRequest) -> object:
    """The request's JSON body (any content type: sendBeacon posts text/plain), or InvalidField."""
    if len(request.body) > MAX_JSON_BODY:
        raise InvalidField("body", f"The body is larger than {MAX_JSON_BODY} bytes.")
    try:
        return json.loads(request.body or b"")
    except ValueError as error:
        raise InvalidField("body", "The body must be JSON.") from error


def public_url(path: str) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{path}"


@contextmanager
def visit_scope(public_id: str) -> Iterator[Visit | None]:
    """The visit with this public ID, inside its organization's tenant scope (None: no such visit).

    A page reached by token knows no organization until it has found the visit,
    so this one look-up crosses organizations; everything after it is scoped.
    """
    with all_tenants():
        visit = (
            Visit.objects.select_related("tenant", "endpoint", "meeting").filter(public_id=public_id).first()
            if public_id
            else None
        )
    if visit is None:
        yield None
        return
    with tenant_scope(visit.tenant):
        yield visit


def visit_zone(visit: Visit) -> ZoneInfo:
    """The time zone the visit's times are shown in: the department's (from the scheduling feed),
    else its endpoint's (the clinic's)."""
    try:
        return ZoneInfo(visit.time_zone or visit.endpoint.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def scheduled_display(visit: Visit, *, for_clinician: bool = False) -> str:
    """The scheduled start and end in the department's time zone; '' when the EHR gave none.

    A visit the EHR had no appointment for is labelled unscheduled (for the clinician: why).
    """
    label = ""
    if visit.unscheduled:
        label = (
            "Unscheduled visit (the EHR has no appointment for it)" if for_clinician else "Unscheduled visit"
        )
    if not visit.scheduled_start:
        return label
    # The product's one format (connector/datetimes.py), in the department's zone, named.
    zone = visit_zone(visit)
    local = timezone.localtime(visit.scheduled_start, zone)
    text = format_when(local, zone)
    if visit.scheduled_end and visit.scheduled_end > visit.scheduled_start:
        end = timezone.localtime(visit.scheduled_end, zone)
        if end.date() == local.date():
            text = f"{format_day(local.date())}, {local:%H:%M}–{end:%H:%M} {zone_name(end)}"
        else:
            text = f"{text} – {format_when(end, zone)}"
    return f"{text} · {label}" if label else text


def _labels_for(visit: Visit) -> dict[str, str]:
    """Participant ID -> role label for the visit's guests (the only participants with a kind)."""
    return {
        invite.participant_id: display_name_for(role=ParticipantRole.GUEST, invite_kind=invite.kind)
        for invite in GuestInvite.objects.filter(visit=visit)
    }


def _summary(connected: int, waiting: int) -> str:
    people = "Nobody is connected" if not connected else f"{connected} connected"
    if waiting:
        people += f", {waiting} waiting in the lobby"
    return people + "."


def presence_for_display(visit: Visit) -> dict:
    """Who is in the lobby and connected, with labels and a one-line summary made from the same lists.

    Whoever's page went silent is marked as left first (services/presence.py), so what a
    page shows is never older than the heartbeat's limit.
    """
    presence_sweep_visit(visit=visit)
    labels = _labels_for(visit)
    presence = visit_presence(visit=visit)

    def entry(item: dict) -> dict:
        label = labels.get(item["participant_id"]) or display_name_for(role=item["role"])
        return {"participant_id": item["participant_id"], "role": item["role"], "label": label}

    return {
        "in_lobby": [entry(item) for item in presence["in_lobby"]],
        "connected": [entry(item) for item in presence["connected"]],
        "summary": _summary(len(presence["connected"]), len(presence["in_lobby"])),
    }
