"""Integration records: what the EHR team types into the EHR for each endpoint.

Everything an EHR team needs to register the connector: the client ID, the
redirect and launch URLs, the JWKS URL and token endpoint authentication
(private_key_jwt, RS384), the scopes of each launch and of backend services
(write-back), and what the organization's EHR vendor calls these things (Epic
FDI records, Oracle Health's code console). See docs/configuration-portal.md,
"Integration records".
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from connector.models import FhirEndpoint, IntegrationRecord, RecordKind
from tenants.models import EhrVendor

logger = logging.getLogger(__name__)

PROVIDER_SCOPES = (
    "launch openid fhirUser user/Patient.read user/Practitioner.read "
    "user/Appointment.read user/Encounter.read user/Encounter.write"
)
PATIENT_SCOPES = "launch openid fhirUser patient/Patient.read patient/Appointment.read patient/Encounter.read"
# How the connector authenticates at every token endpoint (connector/signing_keys.py).
TOKEN_ENDPOINT_AUTH_METHOD = "private_key_jwt"
TOKEN_ENDPOINT_AUTH_SIGNING_ALG = "RS384"
# Context the EHR may append to the launch URL (Epic: the appointment's CSN, conference and
# department IDs). None is required: the connector finds the appointment from the SMART context and
# FHIR (docs/visits.md, "How the connector finds the appointment"); these make it faster and let
# group visits share a meeting. /launch/provider and /launch/patient read exactly these names.
VISIT_CONTEXT = [
    {
        "name": "appointment",
        "description": "The appointment's ID or identifier (Epic: the CSN); `csn` is read as well",
        "required": False,
    },
    {
        "name": "conference_id",
        "description": "Shared by every visit of a group appointment",
        "required": False,
    },
    {"name": "department_id", "description": "The department the visit belongs to", "required": False},
]
LAUNCH_PARAMETERS = tuple(p["name"] for p in VISIT_CONTEXT) + ("csn",)


def new_context_token() -> str:
    """256 random bits: never guessable, rotated on demand."""
    return secrets.token_urlsafe(32)


def _public(path: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}{path}"


def _client_id(endpoint: FhirEndpoint) -> str:
    return endpoint.client_id


def _backend_scopes() -> str:
    # Imported here: the write-back sender imports the launch service, which imports this module.
    from connector.write_back_sender import BACKEND_SCOPES

    return BACKEND_SCOPES


def _client_authentication() -> dict:
    """What every SMART record says about how the connector proves who it is."""
    return {
        "client_type": "confidential-asymmetric",
        "jwks_url": _public(reverse("jwks")),
        "token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHOD,
        "token_endpoint_auth_signing_alg": TOKEN_ENDPOINT_AUTH_SIGNING_ALG,
    }


def _redirect_uris() -> list[str]:
    """Every redirect URI the connector uses: launches, and the EHR analysts' approval sign-in."""
    return [_public(reverse("visits:launch-callback")), _public(reverse("portal:approval-callback"))]


def _record_fields(endpoint: FhirEndpoint, kind: str) -> dict:
    common = {"details": {"iss": endpoint.base_url, "time_zone": endpoint.time_zone}}
    smart = {"details": {**common["details"], **_client_authentication()}}
    if kind == RecordKind.PROVIDER_LAUNCH:
        return {
            **smart,
            "launch_url": _public("/launch/provider"),
            "redirect_uri": _public("/launch/callback"),
            "client_id": _client_id(endpoint),
            "scopes": PROVIDER_SCOPES,
            "context_parameters": VISIT_CONTEXT,
        }
    if kind == RecordKind.PATIENT_LAUNCH:
        return {
            **smart,
            "launch_url": _public("/launch/patient"),
            "redirect_uri": _public("/launch/callback"),
            "client_id": _client_id(endpoint),
            "scopes": PATIENT_SCOPES,
            "context_parameters": VISIT_CONTEXT,
        }
    if kind == RecordKind.CLIENT_REGISTRATION:
        return {
            "launch_url": _public("/launch/provider"),
            "redirect_uri": _public("/launch/callback"),
            "client_id": _client_id(endpoint),
            "scopes": " ".join(dict.fromkeys(f"{PROVIDER_SCOPES} {PATIENT_SCOPES}".split())),
            "context_parameters": [],
            "details": {
                **smart["details"],
                "redirect_uris": _redirect_uris(),
                "launch_urls": [_public("/launch/provider"), _public("/launch/patient")],
                "launch_type": "SMART on FHIR EHR launch (launch-ehr), PKCE S256",
                "note": "Register the connector once per EHR environment as a confidential client with "
                "asymmetric keys: the connector signs token requests with its private key; the EHR checks "
                "them with the public keys at the JWKS URL (keys rotate without re-registration).",
            },
        }
    if kind == RecordKind.BACKEND_SERVICES:
        token_endpoint = (endpoint.last_validation.get("details") or {}).get("token_endpoint", "")
        return {
            "launch_url": "",
            "redirect_uri": "",
            "client_id": _client_id(endpoint),
            "scopes": _backend_scopes(),
            "context_parameters": [],
            "details": {
                **smart["details"],
                "grant_type": "client_credentials",
                "token_endpoint": token_endpoint,
                "write_back_enabled": endpoint.write_back_enabled,
                "note": "SMART Backend Services for write-back (Encounter, Appointment status, Communication): "
                "the same client ID and JWKS URL, the client_credentials grant and these system scopes."
                + ("" if endpoint.write_back_enabled else " Write-back is off for this endpoint."),
            },
        }
    if kind == RecordKind.VENDOR_SETUP:
        return {
            "launch_url": "",
            "redirect_uri": "",
            "client_id": _client_id(endpoint),
            "scopes": "",
            "context_parameters": [],
            "details": {**common["details"], **_vendor_setup(endpoint)},
        }
    if kind == RecordKind.DIRECT_SMS_LAUNCH:
        return {
            **common,
            "launch_url": _public("/join"),
            "client_id": _client_id(endpoint),
            "context_parameters": VISIT_CONTEXT[:2],
            "details": {**common["details"], "note": "The patient's link in text messages; no sign-in."},
        }
    if kind == RecordKind.SMS_CONFIGURATION:
        return {
            **common,
            "launch_url": _public(
                f"/sms/ingest/{endpoint.tenant.microsoft_tenant_id}/{endpoint.environment}/"
            ),
            "details": {
                **common["details"],
                "message_types": [
                    "SIU^S12",
                    "SIU^S13",
                    "SIU^S14",
                    "SIU^S15",
                    "SIU^S16",
                    "SIU^S17",
                    "SIU^S26",
                ],
                "signature_header": "X-HL7-Signature",
                "note": "POST signed HL7v2 SIU messages here (see the SMS settings step).",
            },
        }
    if kind == RecordKind.DEVICE_TEST_CONFIGURATION:
        return {**common, "launch_url": _public("/device-test")}
    raise ValueError(f"unknown record kind {kind}")


def _vendor_setup(endpoint: FhirEndpoint) -> dict:
    """The organization's EHR vendor's own names for the registration, as steps for its EHR team."""
    provider, patient = _public("/launch/provider"), _public("/launch/patient")
    console = _public("/launch/provider?view=console")
    vendor = endpoint.tenant.ehr_vendor
    if vendor == EhrVendor.EPIC:
        return {
            "vendor": "epic",
            "title": "Epic: FDI records and client registration",
            "steps": [
                "Client registration (Epic on FHIR / Vendor Services): "
                f"client ID {_client_id(endpoint)}, a confidential "
                f"client with JWT authentication whose public keys are at {_public(reverse('jwks'))}; "
                "redirect URIs as in the client registration record; enable the SMART scopes of the launch "
                "records, and Backend Services with the system scopes if write-back is on.",
                f"Provider FDI record: SMART EHR launch to {provider}, embedded in the visit's activity; "
                "append appointment=<the appointment's CSN> to the launch URL (conference_id and "
                "department_id as well, for group visits and reports).",
                f"Patient FDI record (MyChart): SMART EHR launch to {patient}, with the same appended "
                "parameters.",
                f"Optional second provider FDI record (visit status console): {console}.",
                "The connector's approver list matches analysts by Epic username, fhirUser or Practitioner "
                "identifier: an analyst listed there approves each FHIR base URL in the portal.",
            ],
            "fdi_records": [
                {"name": "Provider launch", "launch_url": provider, "parameters": "appointment=<CSN>"},
                {
                    "name": "Patient launch (MyChart)",
                    "launch_url": patient,
                    "parameters": "appointment=<CSN>",
                },
                {
                    "name": "Visit status console (optional)",
                    "launch_url": console,
                    "parameters": "appointment=<CSN>",
                },
            ],
        }
    if vendor == EhrVendor.ORACLE_HEALTH:
        return {
            "vendor": "oracle_health",
            "title": "Oracle Health (Cerner Millennium): code console registration",
            "steps": [
                f"Register a SMART app in the Oracle Health code console: type Provider (and a second app, or the "
                f"same one, for Patient), SMART version R4, launch URIs {provider} and {patient}, redirect URI "
                f"{_public('/launch/callback')}.",
                f"Client authentication: confidential, JWT (private_key_jwt, {TOKEN_ENDPOINT_AUTH_SIGNING_ALG}) "
                f"with the JWKS URL {_public(reverse('jwks'))}.",
                "Scopes: those of the provider and patient launch records; for write-back, a system account with "
                "the backend services scopes.",
                "Oracle Health sends no appointment with the launch: the connector follows Encounter.appointment, "
                "so launch from a chart with the visit's encounter in context.",
                f"The FHIR base URL ({endpoint.base_url}) contains your Millennium tenant ID; the test "
                "(sandbox) and production domains are separate endpoints.",
            ],
        }
    return {
        "vendor": "smart_on_fhir",
        "title": "Any SMART on FHIR R4 EHR",
        "steps": [
            "Register a confidential SMART app with asymmetric client authentication (private_key_jwt, "
            f"{TOKEN_ENDPOINT_AUTH_SIGNING_ALG}) and the JWKS URL of the client registration record.",
            f"EHR launch URLs {provider} (clinicians) and {patient} (patients), redirect URI "
            f"{_public('/launch/callback')}, the scopes of the launch records.",
            "For write-back: SMART Backend Services (client_credentials) with the backend services scopes.",
        ],
    }


def integration_records_produce(*, endpoint: FhirEndpoint) -> list[IntegrationRecord]:
    """Create or refresh every record of a usable endpoint (idempotent).

    The device-test context token survives a refresh: the EHR already holds it.
    """
    records = []
    existing = {r.kind: r for r in IntegrationRecord.objects.filter(endpoint=endpoint)}
    for kind in RecordKind.values:
        fields = _record_fields(endpoint, kind)
        record = existing.get(kind) or IntegrationRecord(tenant=endpoint.tenant, endpoint=endpoint, kind=kind)
        for name, value in fields.items():
            setattr(record, name, value)
        if kind == RecordKind.DEVICE_TEST_CONFIGURATION and not record.context_token:
            record.context_token = new_context_token()
        record.config_version = endpoint.config_version
        record.out_of_date = False
        record.generated_at = timezone.now()
        record.save()
        records.append(record)
    logger.info("integration records produced for endpoint %s (v%s)", endpoint.pk, endpoint.config_version)
    return records


def integration_records_mark_out_of_date(*, endpoint: FhirEndpoint) -> int:
    return IntegrationRecord.objects.filter(endpoint=endpoint, out_of_date=False).update(out_of_date=True)


def integration_record_rotate_token(*, record: IntegrationRecord) -> IntegrationRecord:
    """A new context token; the old one stops working at once."""
    if record.kind != RecordKind.DEVICE_TEST_CONFIGURATION:
        raise ValueError("Only the device test configuration record has a context token.")
    record.context_token = new_context_token()
    record.generated_at = timezone.now()
    record.save(update_fields=["context_token", "generated_at"])
    logger.info("context token rotated for record %s", record.pk)
    return record
