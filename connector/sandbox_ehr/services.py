"""Writes of the sandbox EHR: launches, authorization codes, tokens and FHIR resources."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from connector.sandbox_ehr.common import FhirError, OAuthError
from connector.sandbox_ehr.flavors import DEFAULT_SERVER, FLAVORS
from connector.sandbox_ehr.keys import id_token_sign
from connector.sandbox_ehr.models import AccessToken, AuthorizationCode, Launch, Resource
from connector.sandbox_ehr.seed import CONFERENCE_SYSTEM, CSN_SYSTEM, DEPARTMENT_SYSTEM
from connector.sandbox_ehr.selectors import identifier_value, resource_get, secret_hash, user_get

CODE_LIFETIME = timedelta(seconds=60)
TOKEN_LIFETIME_SECONDS = 3600
LAUNCH_LIFETIME = timedelta(minutes=10)
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


# --- EHR launch -------------------------------------------------------------------------------------


def launch_create(*, appointment_id: str, role: str, server: str = DEFAULT_SERVER) -> Launch:
    """Record an EHR launch of one appointment, by its clinician (`role="provider"`) or its patient
    (`role="patient"`). The returned `launch_id` goes to the app as `launch=`.

    Raises LookupError when the appointment does not exist.
    """
    appointment = resource_get(server=server, resource_type="Appointment", fhir_id=appointment_id)
    if appointment is None:
        raise LookupError(f"There is no Appointment/{appointment_id} on the {server} server.")
    actors = [p.get("actor", {}).get("reference", "") for p in appointment.body.get("participant", [])]

    def actor_id(kind: str) -> str:
        return next((a.partition("/")[2] for a in actors if a.startswith(f"{kind}/")), "")

    location = resource_get(server=server, resource_type="Location", fhir_id=actor_id("Location"))
    encounter = next(
        (
            e
            for e in Resource.objects.filter(server=server, resource_type="Encounter")
            if f"Appointment/{appointment_id}" in [a.get("reference") for a in e.body.get("appointment", [])]
        ),
        None,
    )
    user = (
        f"Practitioner/{actor_id('Practitioner')}" if role == "provider" else f"Patient/{actor_id('Patient')}"
    )
    return Launch.objects.create(
        launch_id=secrets.token_urlsafe(24),
        server=server,
        user_reference=user,
        patient_id=actor_id("Patient"),
        encounter_id=encounter.fhir_id if encounter else "",
        appointment_id=appointment_id,
        appointment_csn=identifier_value(appointment.body, CSN_SYSTEM),
        conference_id=identifier_value(appointment.body, CONFERENCE_SYSTEM),
        department_id=identifier_value(location.body, DEPARTMENT_SYSTEM) if location else "",
        expires_at=timezone.now() + LAUNCH_LIFETIME,
    )


def launch_context(launch: Launch) -> dict:
    """The launch context the token response carries (SMART names plus Epic-style extras; only
    `patient` and `encounter` on a flavor with minimal launch context)."""
    flavor = FLAVORS.get(launch.server)
    if flavor is not None and flavor.launch_context == "minimal":
        return {
            key: value
            for key, value in {"patient": launch.patient_id, "encounter": launch.encounter_id}.items()
            if value
        }
    context = {
        "patient": launch.patient_id,
        "encounter": launch.encounter_id,
        "fhirContext": [{"reference": f"Appointment/{launch.appointment_id}"}]
        if launch.appointment_id
        else [],
        "appointment": launch.appointment_csn,
        "conference_id": launch.conference_id,
        "department_id": launch.department_id,
    }
    return {key: value for key, value in context.items() if value}


# --- authorization codes and tokens -----------------------------------------------------------------


def code_issue(
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    server: str,
    code_challenge: str,
    nonce: str,
    user_reference: str,
    context: dict,
) -> str:
    """Issue a single-use authorization code (valid 60 seconds) and return its value."""
    raw = secrets.token_urlsafe(32)
    AuthorizationCode.objects.create(
        code_hash=secret_hash(raw),
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        server=server,
        code_challenge=code_challenge,
        nonce=nonce,
        user_reference=user_reference,
        context=context,
        expires_at=timezone.now() + CODE_LIFETIME,
    )
    return raw


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def code_redeem(*, code: str, client_id: str, redirect_uri: str, code_verifier: str) -> AuthorizationCode:
    """Check a code against the token request and mark it used. Raises OAuthError (invalid_grant)."""
    row = AuthorizationCode.objects.filter(code_hash=secret_hash(code)).first()
    if row is None:
        raise OAuthError("invalid_grant", "The authorization code is unknown.")
    if row.used_at is not None:
        # RFC 6749 section 4.1.2: a code used twice revokes what it issued.
        AccessToken.objects.filter(code=row).update(revoked=True)
        raise OAuthError("invalid_grant", "The authorization code was already used; its tokens are revoked.")
    if row.expires_at <= timezone.now():
        raise OAuthError("invalid_grant", "The authorization code expired (codes live 60 seconds).")
    if row.client_id != client_id:
        raise OAuthError("invalid_grant", "The authorization code was issued to another client_id.")
    if row.redirect_uri != redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri differs from the one sent to the authorize endpoint.")
    if not _VERIFIER.match(code_verifier):
        raise OAuthError("invalid_grant", "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~].")
    if not hmac.compare_digest(_s256(code_verifier), row.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge (S256).")
    claimed = AuthorizationCode.objects.filter(pk=row.pk, used_at__isnull=True).update(used_at=timezone.now())
    if claimed != 1:
        raise OAuthError("invalid_grant", "The authorization code was already used.")
    return row


def _id_token(*, issuer: str, client_id: str, user_reference: str, server: str, nonce: str) -> str:
    now = int(timezone.now().timestamp())
    user = user_get(server=server, reference=user_reference)
    claims = {
        "iss": issuer,
        "sub": user_reference.partition("/")[2],
        "aud": client_id,
        "iat": now,
        "exp": now + TOKEN_LIFETIME_SECONDS,
        "fhirUser": f"{issuer}/{user_reference}",
        "preferred_username": user.username if user else "",
    }
    if nonce:
        claims["nonce"] = nonce
    return id_token_sign(claims)


def token_issue(
    *,
    client_id: str,
    scope: str,
    server: str = "",
    issuer: str = "",
    user_reference: str = "",
    context: dict | None = None,
    nonce: str = "",
    code: AuthorizationCode | None = None,
) -> dict:
    """Issue an access token (and a refresh token for offline_access or online_access, an id_token
    for openid) and return the token response body. `issuer` is the FHIR base URL of `server`.
    """
    raw = secrets.token_urlsafe(32)
    refresh = secrets.token_urlsafe(32) if {"offline_access", "online_access"} & set(scope.split()) else None
    AccessToken.objects.create(
        token_hash=secret_hash(raw),
        refresh_token_hash=secret_hash(refresh) if refresh else None,
        client_id=client_id,
        scope=scope,
        server=server,
        user_reference=user_reference,
        context=context or {},
        code=code,
        expires_at=timezone.now() + timedelta(seconds=TOKEN_LIFETIME_SECONDS),
    )
    body: dict = {
        "access_token": raw,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECONDS,
        "scope": scope,
    }
    if refresh:
        body["refresh_token"] = refresh
    if "openid" in scope.split() and user_reference:
        body["id_token"] = _id_token(
            issuer=issuer, client_id=client_id, user_reference=user_reference, server=server, nonce=nonce
        )
    if context:
        body.update(context)
        body["need_patient_banner"] = False
    return body


def token_refresh(*, refresh_token: str, client_id: str, issuer_for: dict[str, str]) -> dict:
    """Swap a refresh token for a new access token (and a new refresh token; the old pair is revoked).
    `issuer_for` maps a server name to its FHIR base URL, for the id_token.
    """
    with transaction.atomic():
        old = (
            AccessToken.objects.select_for_update()
            .filter(refresh_token_hash=secret_hash(refresh_token), revoked=False)
            .first()
        )
        if old is None:
            raise OAuthError("invalid_grant", "The refresh token is unknown or was already used.")
        if old.client_id != client_id:
            raise OAuthError("invalid_grant", "The refresh token was issued to another client_id.")
        old.revoked = True
        old.save(update_fields=["revoked"])
    return token_issue(
        client_id=client_id,
        scope=old.scope,
        server=old.server,
        issuer=issuer_for.get(old.server, ""),
        user_reference=old.user_reference,
        context=old.context,
    )


# --- FHIR writes ------------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_STATUSES = {
    "Encounter": {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    },  # fmt: skip
    "Appointment": {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    },  # fmt: skip
    "Communication": {
        "preparation",
        "in-progress",
        "not-done",
        "on-hold",
        "stopped",
        "completed",
        "entered-in-error",
        "unknown",
    },  # fmt: skip
}
# Elements FHIR R4 requires (1..1 or 1..*), checked on the resources the connector writes.
_REQUIRED = {
    "Encounter": ["status", "class"],
    "Appointment": ["status", "participant"],
    "AuditEvent": ["type", "recorded", "agent", "source"],
    "Communication": ["status"],
}


def _check_date_time(resource_type: str, path: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _DATE_TIME.fullmatch(value):
        raise FhirError(
            400,
            "invalid",
            f"{resource_type}.{path} is not a FHIR dateTime; a time needs a timezone: 2025-01-31T09:00:00Z.",
        )


def _validate(resource_type: str, body: dict) -> None:
    """The few R4 rules that catch a broken write-back: required elements, status codes, dates."""
    for element in _REQUIRED.get(resource_type, []):
        if body.get(element) in (None, "", [], {}):
            raise FhirError(400, "required", f"{resource_type}.{element} is required.")
    status = body.get("status")
    if resource_type in _STATUSES and status not in _STATUSES[resource_type]:
        allowed = ", ".join(sorted(_STATUSES[resource_type]))
        raise FhirError(400, "code-invalid", f"{resource_type}.status '{status}' is not one of: {allowed}.")
    if resource_type == "Encounter":
        period = body.get("period") or {}
        _check_date_time("Encounter", "period.start", period.get("start"))
        _check_date_time("Encounter", "period.end", period.get("end"))
    if resource_type == "Appointment":
        _check_date_time("Appointment", "start", body.get("start"))
        _check_date_time("Appointment", "end", body.get("end"))
    if resource_type == "AuditEvent":
        _check_date_time("AuditEvent", "recorded", body.get("recorded"))


def _parse_body(resource_type: str, body) -> dict:
    if not isinstance(body, dict):
        raise FhirError(400, "structure", "The body must be one FHIR resource as a JSON object.")
    if body.get("resourceType") != resource_type:
        raise FhirError(
            400, "invalid", f"resourceType is '{body.get('resourceType')}' but the URL says {resource_type}."
        )
    _validate(resource_type, body)
    return {key: value for key, value in body.items() if key != "meta"}


def resource_update(
    *, server: str, resource_type: str, fhir_id: str, body, if_match: str | None = None
) -> Resource:
    """FHIR update (PUT) of an existing resource; `if_match` is an ETag such as W/"3". Raises FhirError."""
    body = _parse_body(resource_type, body)
    if body.get("id") != fhir_id:
        raise FhirError(
            400, "invalid", f"The resource's id '{body.get('id')}' must equal the URL's id '{fhir_id}'."
        )
    with transaction.atomic():
        row = (
            Resource.objects.select_for_update()
            .filter(server=server, resource_type=resource_type, fhir_id=fhir_id)
            .first()
        )
        if row is None:
            raise FhirError(
                405,
                "not-supported",
                f"{resource_type}/{fhir_id} does not exist and this server has no update-as-create.",
            )
        if if_match and if_match.strip() not in (f'W/"{row.version}"', f'"{row.version}"'):
            raise FhirError(
                412, "conflict", f'If-Match {if_match} does not match the current version W/"{row.version}".'
            )
        row.body = body
        row.version += 1
        row.save()
    return row


def resource_create(*, server: str, resource_type: str, body) -> Resource:
    """FHIR create (POST): the server assigns the id, as FHIR requires. Raises FhirError."""
    body = _parse_body(resource_type, body)
    fhir_id = str(uuid.uuid4())
    return Resource.objects.create(
        server=server, resource_type=resource_type, fhir_id=fhir_id, body={**body, "id": fhir_id}
    )
