"""The sandbox EHR's own screens (a development peer): the day's virtual visits with the buttons an
EHR shows to start them, as a clinician or from the patient portal (SMART EHR launch).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from connector.sandbox_ehr.common import sandbox_only
from connector.sandbox_ehr.flavors import DEFAULT_SERVER, FLAVORS, fhir_base_url
from connector.sandbox_ehr.oauth import TRY_CHALLENGE, TRY_CLIENT_ID
from connector.sandbox_ehr.selectors import appointments_for_home, users_for_sign_in
from connector.sandbox_ehr.services import launch_create

ROLES = {"provider": "SANDBOX_EHR_PROVIDER_LAUNCH_URL", "patient": "SANDBOX_EHR_PATIENT_LAUNCH_URL"}
DEFAULT_LAUNCH_URLS = {"provider": "/launch/provider", "patient": "/launch/patient"}


def connector_launch_url(request: HttpRequest, role: str) -> str:
    """The app's launch URL for a role, absolute (settings may give it relative to this origin)."""
    return request.build_absolute_uri(getattr(settings, ROLES[role], DEFAULT_LAUNCH_URLS[role]))


def _try_it_url(request: HttpRequest) -> str:
    params = {
        "response_type": "code",
        "client_id": TRY_CLIENT_ID,
        "redirect_uri": request.build_absolute_uri(reverse("sandbox_ehr:try-callback")),
        "scope": "openid fhirUser launch/patient patient/*.read offline_access",
        "state": "try-it",
        "aud": fhir_base_url(request, DEFAULT_SERVER),
        "code_challenge": TRY_CHALLENGE,
        "code_challenge_method": "S256",
    }
    return f"{reverse('sandbox_ehr:authorize')}?{urlencode(params)}"


@sandbox_only
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "appointments": appointments_for_home(server=DEFAULT_SERVER),
        "staff": users_for_sign_in(server=DEFAULT_SERVER, resource_type="Practitioner"),
        "patients": users_for_sign_in(server=DEFAULT_SERVER, resource_type="Patient"),
        "servers": [(f, fhir_base_url(request, f.name)) for f in FLAVORS.values()],
        "launch_urls": {role: connector_launch_url(request, role) for role in ROLES},
        "try_it_url": _try_it_url(request),
    }
    return render(request, "sandbox_ehr/home.html", context)


@sandbox_only
@require_POST
def start(request: HttpRequest) -> HttpResponse:
    """A "start/join virtual visit" button: record the launch and open the app with iss and launch."""
    role = request.POST.get("role", "")
    if role not in ROLES:
        return render(
            request,
            "sandbox_ehr/error.html",
            {"title": "Launch refused", "message": "Unknown role."},
            status=400,
        )
    try:
        launch = launch_create(appointment_id=request.POST.get("appointment", ""), role=role)
    except LookupError as error:
        return render(
            request, "sandbox_ehr/error.html", {"title": "Launch refused", "message": str(error)}, status=400
        )
    query = urlencode({"iss": fhir_base_url(request, launch.server), "launch": launch.launch_id})
    url = connector_launch_url(request, role)
    return HttpResponseRedirect(f"{url}{'&' if '?' in url else '?'}{query}")
