"""Launch views: the EHR's buttons land here (clinician and patient), then the SMART callback.

These pages run inside EHR embedded browsers: no pop-ups, frameable, and the
launch works even where third-party cookies are blocked (see services/launch.py).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET
from social_django.models import UserSocialAuth

from connector.meetings.base import MeetingError
from connector.models import ClinicianLink, LaunchState, ParticipantRole, Visit
from connector.services.launch import (
    LAUNCH_VIEW_CONSOLE,
    LAUNCH_VIEW_MEETING,
    LaunchContext,
    LaunchError,
    clinician_link_find,
    clinician_link_get_or_create,
    launch_begin,
    launch_complete,
    launch_context_remember,
    launch_parameters_from,
)
from connector.services.visits import (
    join_token_make,
    join_url_for,
    meeting_ensure,
    participant_id_for,
    visit_for_launch,
)
from connector.visits.pages import console_url_for
from tenants.auth_pipeline import SIGN_IN_TENANT_SESSION_KEY
from tenants.models import Role
from tenants.scoping import tenant_scope
from tenants.selectors import demo_memberships, membership_of
from tenants.services import ENTRA_PROVIDER

logger = logging.getLogger(__name__)

BINDING_COOKIE = "ehr_launch_binding"
LINK_SALT = "connector.clinician-link"
LINK_MAX_AGE_SECONDS = 15 * 60


def launch_failed(request: HttpRequest, error: LaunchError) -> HttpResponse:
    # The precise cause, for administrators who come with the request id (no tokens, no PHI in it).
    logger.info("launch refused (%s): %s %s", error.audience or "unknown role", error.title, error.detail)
    # Each reader gets their own words: a patient (or someone unknown) never the administrator's
    # cause, unless whoever reads the page administers an organization here (testing a launch).
    show_detail = bool(error.detail) and (
        error.audience == ParticipantRole.CLINICIAN or _reader_administers(request)
    )
    return render(
        request, "visits/launch_error.html", {"error": error, "show_detail": show_detail}, status=error.status
    )


def _reader_administers(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    return any(
        m.role in (Role.ADMINISTRATOR, Role.EHR_APPROVER) for m in getattr(request, "memberships", None) or []
    )


def _start(request: HttpRequest, role: str, view: str = LAUNCH_VIEW_MEETING) -> HttpResponse:
    try:
        start = launch_begin(
            iss=request.GET.get("iss", ""),
            launch=request.GET.get("launch", ""),
            role=role,
            view=view,
            launch_parameters=launch_parameters_from(request.GET),
        )
    except LaunchError as error:
        return launch_failed(request, error)
    response = redirect(start.authorize_url)
    secure = request.is_secure()
    # SameSite=None lets the cookie through when the EHR shows us in a frame;
    # browsers accept it only with Secure, so plain-http development uses Lax.
    response.set_cookie(
        BINDING_COOKIE,
        start.browser_binding,
        max_age=600,
        secure=secure,
        httponly=True,
        samesite="None" if secure else "Lax",
    )
    return response


@require_GET
@xframe_options_exempt
def provider_launch(request: HttpRequest) -> HttpResponse:
    # ?view=console: a second launch record that opens the visit's console instead of the meeting,
    # for meeting providers whose own window cannot show the connector's lobby (Teams, Jitsi).
    view = LAUNCH_VIEW_CONSOLE if request.GET.get("view") == LAUNCH_VIEW_CONSOLE else LAUNCH_VIEW_MEETING
    return _start(request, ParticipantRole.CLINICIAN, view)


@require_GET
@xframe_options_exempt
def patient_launch(request: HttpRequest) -> HttpResponse:
    return _start(request, ParticipantRole.PATIENT)


@require_GET
@xframe_options_exempt
def callback(request: HttpRequest) -> HttpResponse:
    try:
        context = launch_complete(
            state=request.GET.get("state", ""),
            code=request.GET.get("code", ""),
            binding=request.COOKIES.get(BINDING_COOKIE),
            error=request.GET.get("error", ""),
            error_description=request.GET.get("error_description", ""),
        )
    except LaunchError as error:
        return launch_failed(request, error)
    with tenant_scope(context.endpoint.tenant):
        visit = visit_for_launch(
            endpoint=context.endpoint,
            found=context.found,
            conference_id=context.conference_id,
            department_id=context.department_id,
        )
        if context.role == ParticipantRole.PATIENT:
            response = _send_patient(request, visit, context)
        else:
            response = _route_clinician(request, visit, context)
    response.delete_cookie(BINDING_COOKIE)
    return response


def _send_patient(request: HttpRequest, visit: Visit, context: LaunchContext) -> HttpResponse:
    participant = participant_id_for(
        ParticipantRole.PATIENT, context.fhir_user or f"appointment:{visit.appointment_id}"
    )
    token = join_token_make(visit=visit, role=ParticipantRole.PATIENT, participant_id=participant)
    return redirect("visits:join", token=token)


def _route_clinician(request: HttpRequest, visit: Visit, context: LaunchContext) -> HttpResponse:
    if not context.fhir_user:
        return launch_failed(
            request,
            LaunchError(
                "The EHR did not say who you are, so the visit cannot open for you.",
                detail="The EHR sent no fhirUser with the clinician's launch: the provider launch record needs the "
                "openid and fhirUser scopes.",
                audience=ParticipantRole.CLINICIAN,
            ),
        )
    link = clinician_link_find(environment=context.endpoint.environment, fhir_user=context.fhir_user)
    if link is None:
        launch_context_remember(context)  # what the account link page reads back
        token = signing.dumps({"s": context.launch_state_pk, "v": visit.pk}, salt=LINK_SALT)
        return redirect("visits:clinician-link", token=token)
    return _send_clinician(request, visit, link, context.view)


def _organizer_id(link: ClinicianLink) -> str | None:
    social = UserSocialAuth.objects.filter(user=link.user, provider=ENTRA_PROVIDER).first()
    return (social.extra_data or {}).get("oid") if social else None


def _send_clinician(
    request: HttpRequest, visit: Visit, link: ClinicianLink, view: str = LAUNCH_VIEW_MEETING
) -> HttpResponse:
    """To the meeting as organizer, or (view=console) to the visit's console, whose Join opens it."""
    if visit.primary_clinician_id is None:
        visit.primary_clinician = link.user
        visit.primary_clinician_ehr_id = link.fhir_user
        visit.save(update_fields=["primary_clinician", "primary_clinician_ehr_id"])
    participant_id = participant_id_for(ParticipantRole.CLINICIAN, link.fhir_user)
    try:
        meeting_ensure(visit=visit, organizer_id=_organizer_id(link))
        if view == LAUNCH_VIEW_CONSOLE:
            url = console_url_for(visit, participant_id)
        else:
            url = join_url_for(
                visit=visit,
                role=ParticipantRole.CLINICIAN,
                participant_id=participant_id,
                display_name="Clinician",
            )
    except MeetingError as error:
        return launch_failed(
            request,
            LaunchError(
                "The video meeting could not be created just now. Try again in a few minutes.",
                title="Meeting not available",
                detail=f"The meeting provider refused: {error.message}",
                status=502,
                audience=ParticipantRole.CLINICIAN,
            ),
        )
    return redirect(url)


@xframe_options_exempt
def clinician_link(request: HttpRequest, token: str) -> HttpResponse:
    """A clinician's first launch: one Microsoft sign-in links their EHR user to their account."""
    try:
        data = signing.loads(token, salt=LINK_SALT, max_age=LINK_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return launch_failed(
            request, LaunchError("This sign-in link has expired. Start the visit from the EHR again.")
        )
    state = LaunchState.objects.select_related("endpoint__tenant").filter(pk=data["s"]).first()
    if state is None:
        return launch_failed(
            request, LaunchError("This launch is no longer known. Start the visit from the EHR again.")
        )
    tenant = state.endpoint.tenant
    if not request.user.is_authenticated:
        get_token(request)  # the sign-in forms post with the CSRF cookie, whichever of them is shown
        next_url = reverse("visits:clinician-link", kwargs={"token": token})
        return render(
            request,
            "visits/clinician_link.html",
            {
                "tenant": tenant,
                "microsoft_url": reverse("social:begin", args=[ENTRA_PROVIDER]),
                "next": next_url,
                "entra_configured": settings.ENTRA_CONFIGURED,
                # The demo's chooser stands in for Microsoft: this organization's demo users only.
                "demo_users": [
                    {"username": m.user.username, "role": m.get_role_display()}
                    for m in demo_memberships()
                    if m.tenant_id == tenant.pk
                ]
                if settings.DEMO_SIGN_IN
                else [],
            },
        )
    signed_in_here = request.session.get(SIGN_IN_TENANT_SESSION_KEY) == tenant.pk
    if not signed_in_here and membership_of(request.user, tenant) is None:
        return launch_failed(
            request,
            LaunchError(
                f"You are signed in with an account that does not belong to {tenant.name}. Sign out, then sign in "
                "with your work account of that organization.",
                title="Wrong account",
                status=403,
            ),
        )
    with tenant_scope(tenant):
        link = clinician_link_get_or_create(
            tenant=tenant,
            environment=state.endpoint.environment,
            fhir_user=state.context["fhir_user"],
            user=request.user,
        )
        if link.user_id != request.user.pk:
            return launch_failed(
                request,
                LaunchError(
                    "This EHR user is already linked to another account. Ask your administrator to check it.",
                    status=403,
                ),
            )
        visit = Visit.objects.get(pk=data["v"])
        logger.info("clinician link %s made", link.pk)
        return _send_clinician(request, visit, link, state.context.get("view") or LAUNCH_VIEW_MEETING)
