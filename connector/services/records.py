"""Integration records: what the EHR team types into the EHR for each endpoint."""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.utils import timezone

from connector.models import FhirEndpoint, IntegrationRecord, RecordKind

logger = logging.getLogger(__name__)

PROVIDER_SCOPES = (
    "launch openid fhirUser user/Patient.read user/Practitioner.read "
    "user/Appointment.read user/Encounter.read user/Encounter.write"
)
PATIENT_SCOPES = "launch openid fhirUser patient/Patient.read patient/Appointment.read patient/Encounter.read"
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


def _client_id() -> str:
    return settings.SMART_CLIENT_ID


def _record_fields(endpoint: FhirEndpoint, kind: str) -> dict:
    common = {"details": {"iss": endpoint.base_url, "time_zone": endpoint.time_zone}}
    if kind == RecordKind.PROVIDER_LAUNCH:
        return {
            **common,
            "launch_url": _public("/launch/provider"),
            "redirect_uri": _public("/launch/callback"),
            "client_id": _client_id(),
            "scopes": PROVIDER_SCOPES,
            "context_parameters": VISIT_CONTEXT,
        }
    if kind == RecordKind.PATIENT_LAUNCH:
        return {
            **common,
            "launch_url": _public("/launch/patient"),
            "redirect_uri": _public("/launch/callback"),
            "client_id": _client_id(),
            "scopes": PATIENT_SCOPES,
            "context_parameters": VISIT_CONTEXT,
        }
    if kind == RecordKind.DIRECT_SMS_LAUNCH:
        return {
            **common,
            "launch_url": _public("/join"),
            "client_id": _client_id(),
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
                "message_types": ["SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15", "SIU^S16", "SIU^S17", "SIU^S26"],
                "signature_header": "X-HL7-Signature",
                "note": "POST signed HL7v2 SIU messages here (see the SMS settings step).",
            },
        }
    if kind == RecordKind.DEVICE_TEST_CONFIGURATION:
        return {**common, "launch_url": _public("/device-test")}
    raise ValueError(f"unknown record kind {kind}")


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
