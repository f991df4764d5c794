"""SMART launches of visits: from the EHR (clinician), the patient portal (patient).

    /launch/provider?iss=...&launch=...  -> launch_begin -> the EHR's authorize endpoint
    /launch/callback?code=...&state=...  -> launch_complete -> context -> visit -> meeting

The state is 256 random bits; only its hash is stored, with the PKCE verifier,
in a LaunchState row that is claimed exactly once. A cookie binds it to the
browser that started the launch; where an EHR's embedded browser blocks the
cookie, the single-use state and the server-held PKCE verifier still stop
replays (see docs/visits.md).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from connector.ehr_http import EhrHttpError
from connector.endpoint_checks import fetch_smart_configuration, normalize_fhir_base_url
from connector.kept_documents import keep, kept
from connector.lookup_hash import EHR_USER, lookup_hashes
from connector.models import ClinicianLink, EndpointStatus, FhirEndpoint, LaunchState, ParticipantRole
from connector.services.appointment_finder import (
    AppointmentNotFound,
    FoundAppointment,
    appointment_find,
    launch_facts,
)
from connector.services.records import LAUNCH_PARAMETERS, PATIENT_SCOPES, PROVIDER_SCOPES
from connector.signing_keys import client_authentication
from connector.smart import (
    SmartError,
    absolute_fhir_user,
    authorize_url,
    exchange_code,
    expected_issuers,
    pkce_pair,
    verify_id_token,
)
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

LAUNCH_MAX_AGE = timedelta(minutes=10)
# Where a clinician's launch ends: the meeting (default), or the visit's console, for a second
# EHR launch record whose URL is /launch/provider?view=console (see docs/visits.md).
LAUNCH_VIEW_MEETING = ""
LAUNCH_VIEW_CONSOLE = "console"
SMART_CONFIGURATION_CACHE_SECONDS = 3600
# What the person who launched reads; the precise cause goes into LaunchError.detail.
START_AGAIN = "The visit did not open. Start it again from the same place."
NOT_SET_UP = "Virtual visits are not set up here yet."
TRY_LATER = "The visit could not be opened just now. Try again in a few minutes."


class LaunchError(Exception):
    """A launch that cannot go on.

    `message` is for the person who launched, in their words; `detail` is the precise cause and
    the fix, for the organization's administrators (shown to clinicians under "For your
    administrator", logged with the request id, never shown to patients: the error page gives
    them their own words). `audience` is the role of who launched, when it is known.
    """

    def __init__(
        self,
        message: str,
        *,
        title: str = "The visit could not start",
        status: int = 400,
        detail: str = "",
        audience: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.title = title
        self.status = status
        self.detail = detail
        self.audience = audience


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def endpoint_for_issuer(iss: str) -> FhirEndpoint:
    """The usable endpoint whose base URL is `iss`. Looks across organizations: `iss` decides which."""
    try:
        base_url = normalize_fhir_base_url(iss)
    except Exception as error:  # noqa: BLE001 - any malformed iss is the same answer
        raise LaunchError(
            START_AGAIN,
            detail="The EHR sent no valid FHIR server address (iss) with the launch: the launch record must "
            "open the launch URL as a SMART EHR launch.",
        ) from error
    with all_tenants():
        candidates = list(FhirEndpoint.objects.select_related("tenant").filter(base_url=base_url))
    usable = [e for e in candidates if e.is_usable and e.tenant.is_enabled]
    if len(usable) == 1:
        return usable[0]
    if len(usable) > 1:
        raise LaunchError(
            NOT_SET_UP,
            title="Not set up yet",
            detail="This EHR server is configured by more than one organization, so the launch is ambiguous: "
            "ask support to remove the FHIR base URL from the organization that does not own it.",
        )
    if candidates:
        endpoint = candidates[0]
        if endpoint.status == EndpointStatus.DISABLED:
            raise LaunchError(
                "Virtual visits are turned off here at the moment.",
                title="Not available",
                detail="The FHIR endpoint is disabled in the connector's setup: enable it to accept launches.",
            )
        raise LaunchError(
            NOT_SET_UP,
            title="Not ready yet",
            detail=f"This EHR environment is configured but not ready ({endpoint.get_status_display().lower()}): "
            "it must be validated and, for Epic, approved in the connector's setup.",
        )
    raise LaunchError(
        NOT_SET_UP,
        title="Not set up yet",
        detail="This EHR environment is not configured: check that a test EHR is not using a production URL, "
        "or the other way round, and that the FHIR base URL in the setup matches the EHR's exactly.",
        status=404,
    )


def smart_configuration_for(endpoint: FhirEndpoint) -> dict:
    """The endpoint's SMART configuration, cached for an hour (and a minute in this process)."""
    from django.core.cache import cache

    key = f"smart-configuration:{_hash(endpoint.base_url)}"
    configuration = kept(key)  # this process's copy first (connector/kept_documents.py)
    if configuration is not None:
        return configuration
    configuration = cache.get(key)
    if configuration is None:
        try:
            configuration = fetch_smart_configuration(endpoint.base_url)
        except EhrHttpError as error:
            raise LaunchError(
                TRY_LATER, detail=f"The EHR's SMART configuration could not be read: {error.message}"
            ) from error
        cache.set(key, configuration, SMART_CONFIGURATION_CACHE_SECONDS)
    keep(key, configuration)
    return configuration


def callback_uri() -> str:
    return f"{settings.PUBLIC_BASE_URL}/launch/callback"


@dataclass(frozen=True)
class LaunchStart:
    authorize_url: str
    browser_binding: str  # goes into the cookie


def launch_parameters_from(query: dict) -> dict[str, str]:
    """The vendor launch parameters the integration records tell the EHR team to append to the
    launch URL (appointment / CSN, conference ID, department ID), bounded; others are ignored."""
    kept = {}
    for name in LAUNCH_PARAMETERS:
        value = str(query.get(name) or "").strip()
        if value and value.isprintable():
            kept[name] = value[:200]
    return kept


def launch_begin(
    *,
    iss: str,
    launch: str,
    role: str,
    view: str = LAUNCH_VIEW_MEETING,
    launch_parameters: dict[str, str] | None = None,
) -> LaunchStart:
    """Start a launch; `view` (clinicians only) and the vendor launch parameters are kept with the
    state until the callback."""
    if not launch:
        raise LaunchError(
            "The EHR sent no launch parameter: start the visit from the EHR's button again.",
            detail="The request to the launch URL had no `launch` parameter: the EHR's launch record must open "
            "the launch URL as a SMART EHR launch (it appends iss and launch).",
            audience=role,
        )
    try:
        endpoint = endpoint_for_issuer(iss)
    except LaunchError as error:
        error.audience = role
        raise
    configuration = smart_configuration_for(endpoint)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(16)
    binding = secrets.token_urlsafe(32)
    LaunchState.objects.create(
        state_hash=_hash(state),
        endpoint=endpoint,
        role=role,
        code_verifier=verifier,
        nonce=nonce,
        browser_binding=_hash(binding),
        context={
            "view": view if view == LAUNCH_VIEW_CONSOLE and role == ParticipantRole.CLINICIAN else "",
            "launch_parameters": launch_parameters or {},
        },
    )
    url = authorize_url(
        configuration,
        redirect_uri=callback_uri(),
        scope=PROVIDER_SCOPES if role == ParticipantRole.CLINICIAN else PATIENT_SCOPES,
        state=state,
        code_challenge=challenge,
        aud=endpoint.base_url,
        nonce=nonce,
        launch=launch,
        client_id=endpoint.client_id,
    )
    return LaunchStart(authorize_url=url, browser_binding=binding)


@dataclass
class LaunchContext:
    endpoint: FhirEndpoint
    role: str
    fhir_user: str
    appointment_id: str
    conference_id: str = ""
    department_id: str = ""
    encounter_id: str = ""
    launch_state_pk: int | None = None
    view: str = LAUNCH_VIEW_MEETING
    found: FoundAppointment | None = None
    extra: dict = field(default_factory=dict)


def _claim(state: str, binding: str | None) -> LaunchState:
    """Take the launch state exactly once, from the browser that started it where we can tell."""
    if not state:
        raise LaunchError(START_AGAIN, detail="The EHR sent back no state with the authorization answer.")
    now = timezone.now()
    claimed = LaunchState.objects.filter(
        state_hash=_hash(state), used_at__isnull=True, created_at__gte=now - LAUNCH_MAX_AGE
    ).update(used_at=now)
    if claimed != 1:
        known_role = (
            LaunchState.objects.filter(state_hash=_hash(state)).values_list("role", flat=True).first()
        )
        raise LaunchError(
            START_AGAIN,
            detail="This launch was already used, took too long (over 10 minutes), or did not start here.",
            status=400,
            audience=known_role or "",
        )
    launch_state = LaunchState.objects.select_related("endpoint__tenant").get(state_hash=_hash(state))
    if binding is not None and _hash(binding) != launch_state.browser_binding:
        raise LaunchError(
            START_AGAIN,
            detail="This launch was started in another browser (its cookie does not match).",
            audience=launch_state.role,
        )
    return launch_state


def launch_complete(
    *, state: str, code: str, binding: str | None, error: str = "", error_description: str = ""
) -> LaunchContext:
    launch_state = _claim(state, binding)
    endpoint = launch_state.endpoint
    if error:
        said = f"{error}: {error_description}" if error_description else error
        raise LaunchError(
            "The EHR did not allow the connector to open this visit.",
            title="Not allowed",
            detail=f"The EHR refused the authorization ({said}). Check the connector's client registration in "
            "the EHR (client ID, redirect URI, scopes) and this user's security.",
            audience=launch_state.role,
        )
    configuration = smart_configuration_for(endpoint)
    try:
        token = exchange_code(
            configuration,
            code=code,
            redirect_uri=callback_uri(),
            code_verifier=launch_state.code_verifier,
            client_id=endpoint.client_id,
            client_authentication=client_authentication(
                client_id=endpoint.client_id, token_endpoint=configuration["token_endpoint"]
            ),
        )
    except SmartError as error_:
        said = f" (the EHR said {error_.ehr_error}: {error_.ehr_description})" if error_.ehr_error else ""
        raise LaunchError(TRY_LATER, detail=error_.message + said, audience=launch_state.role) from error_
    fhir_user = ""
    if token.get("id_token"):
        try:
            identity = verify_id_token(
                token["id_token"],
                smart_configuration=configuration,
                expected_issuers=expected_issuers(endpoint.base_url, configuration),
                nonce=launch_state.nonce,
                client_id=endpoint.client_id,
            )
        except (SmartError, EhrHttpError) as error_:
            raise LaunchError(
                TRY_LATER, detail=getattr(error_, "message", str(error_)), audience=launch_state.role
            ) from error_
        # Absolute, so the same id on the test and the production EHR never names one user.
        fhir_user = absolute_fhir_user(identity.fhir_user, endpoint.base_url)
    launch_parameters = (launch_state.context or {}).get("launch_parameters") or {}
    facts = launch_facts(
        token=token, role=launch_state.role, fhir_user=fhir_user, launch_parameters=launch_parameters
    )
    try:
        # Outside any transaction: these are calls to the EHR.
        with tenant_scope(endpoint.tenant):
            found = appointment_find(endpoint=endpoint, facts=facts, access_token=str(token["access_token"]))
    except AppointmentNotFound as error:
        raise LaunchError(
            "This visit could not be matched to an appointment in the EHR.",
            detail="The EHR sent neither an appointment nor an encounter with the launch, and no appointment of "
            "this patient was found around now"
            + (f" ({'; '.join(error.notes)})" if error.notes else "")
            + ". Launch from an appointment or an encounter (the launch record needs the launch scope), or "
            "append the appointment (Epic: the CSN) to the launch URL as the integration records show.",
            audience=launch_state.role,
        ) from error
    logger.info(
        "launch appointment found by %s with %d FHIR requests%s",
        found.found_by or "known visit",
        found.fhir_requests,
        f" ({len(found.notes)} failed)" if found.notes else "",
    )
    context = LaunchContext(
        endpoint=endpoint,
        role=launch_state.role,
        fhir_user=fhir_user,
        appointment_id=found.appointment_id,
        conference_id=str(token.get("conference_id") or launch_parameters.get("conference_id") or "")[:200],
        department_id=str(token.get("department_id") or launch_parameters.get("department_id") or "")[:200],
        encounter_id=found.encounter_id or facts.encounter_id,
        launch_state_pk=launch_state.pk,
        view=str((launch_state.context or {}).get("view") or LAUNCH_VIEW_MEETING),
        found=found,
    )
    # The EHR's tokens are dropped here: nothing of them is kept.
    return context


def launch_context_remember(context: LaunchContext) -> None:
    """Keep on the launch state what the one-time account link needs (a clinician not linked yet).

    Only then: a clinician already linked goes straight to the visit, and the write is saved.
    """
    LaunchState.objects.filter(pk=context.launch_state_pk).update(
        context={
            "view": context.view,
            "fhir_user": context.fhir_user,
            "appointment_id": context.appointment_id,
            "conference_id": context.conference_id,
            "department_id": context.department_id,
            "encounter_id": context.encounter_id,
        }
    )


def launch_states_purge() -> int:
    """Delete launch states older than their lifetime (scheduled)."""
    deleted, _ = LaunchState.objects.filter(created_at__lt=timezone.now() - 2 * LAUNCH_MAX_AGE).delete()
    return deleted


def clinician_link_find(*, environment: str, fhir_user: str) -> ClinicianLink | None:
    """The organization user linked to this EHR user (absolute fhirUser), found by its keyed hash."""
    if not fhir_user:
        return None
    return (
        ClinicianLink.objects.filter(
            environment=environment, fhir_user_hash__in=lookup_hashes(fhir_user, purpose=EHR_USER)
        )
        .select_related("user")
        .first()
    )


def clinician_link_get_or_create(*, tenant, environment: str, fhir_user: str, user) -> ClinicianLink:
    """The EHR user's link in the tenant's scope, made for `user` when there is none (its `user` may differ)."""
    link = clinician_link_find(environment=environment, fhir_user=fhir_user)
    if link is not None:
        return link
    try:
        with transaction.atomic():
            return ClinicianLink.objects.create(
                tenant=tenant, environment=environment, fhir_user=fhir_user, user=user
            )
    except IntegrityError:
        # A second tab linked the same EHR user a moment ago (unique on the hash).
        link = clinician_link_find(environment=environment, fhir_user=fhir_user)
        if link is None:
            raise
        return link
