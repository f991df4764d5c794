"""What each webhook event says, built from the rows where the project records the fact.

Called where the fact is recorded (connector/services/visits.py, sms/services/,
connector/services/approvals.py); each function makes the event's `data` and
its key (what makes a second emit of the same fact a no-op), then calls
`webhook_emit`. Only IDs, states and times: never a name, a phone number, a
message text or clinical data.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from connector.webhooks.models import EventType
from connector.webhooks.services import webhook_emit

if TYPE_CHECKING:
    from connector.models import EndpointApproval, FhirEndpoint, Visit, VisitEvent
    from sms.models import Appointment, SigningCertificate


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def visit_data(visit: Visit) -> dict:
    """The visit as the visits API names it (`id` is the API's visit ID, `state` the API's state)."""
    from connector.visits.selectors import api_state

    return {
        "id": visit.public_id,
        "appointment_id": visit.appointment_id,
        "fhir_appointment_id": visit.fhir_appointment_id,
        "encounter_id": visit.encounter_id,
        "endpoint_id": visit.endpoint_id,
        "department_id": visit.department_id,
        "state": api_state(visit),
        "scheduled_start": _iso(visit.scheduled_start),
        "scheduled_end": _iso(visit.scheduled_end),
        "arrived_at": _iso(getattr(visit, "arrived_at", None)),
        "started_at": _iso(visit.started_at),
        "ended_at": _iso(visit.ended_at),
        "lobby_wait_seconds": visit.lobby_wait_seconds,
    }


_PARTICIPANT_EVENTS = {
    "lobby_entered": EventType.PARTICIPANT_WAITING,
    "joined": EventType.PARTICIPANT_JOINED,
    "left": EventType.PARTICIPANT_LEFT,
}


def emit_for_visit_event(*, event: VisitEvent, visit: Visit) -> None:
    """A participant's event, and the visit's start and end when this event decided them."""
    event_type = _PARTICIPANT_EVENTS.get(event.kind)
    if event_type is not None:
        webhook_emit(
            tenant=visit.tenant,
            event_type=event_type,
            key=event.event_id,
            occurred_at=event.occurred_at,
            data={
                "visit": visit_data(visit),
                "participant": {"id": event.participant_id, "role": event.role},
                # The same event in the API's event feed (`since` cursor) and its own ID.
                "event": {"id": event.event_id, "seq": getattr(event, "seq", None)},
                "occurred_at": event.occurred_at.isoformat(),
            },
        )
    # Start and end follow from the derived figures: one event per value, as for the EHR write-back.
    if visit.started_at:
        webhook_emit(
            tenant=visit.tenant,
            event_type=EventType.VISIT_STARTED,
            key=f"{visit.pk}:{visit.started_at.isoformat()}",
            occurred_at=visit.started_at,
            data={"visit": visit_data(visit)},
        )
    if visit.ended_at:
        webhook_emit(
            tenant=visit.tenant,
            event_type=EventType.VISIT_ENDED,
            key=f"{visit.pk}:{visit.ended_at.isoformat()}",
            occurred_at=visit.ended_at,
            data={"visit": visit_data(visit)},
        )


def emit_visit_no_show(*, visit: Visit) -> None:
    webhook_emit(
        tenant=visit.tenant,
        event_type=EventType.VISIT_NO_SHOW,
        key=str(visit.pk),
        data={"visit": {**visit_data(visit), "state": "no_show"}},
    )


def emit_visit_scheduled(*, appointment: Appointment) -> None:
    """A new appointment from the scheduling feed (HL7v2 SIU)."""
    webhook_emit(
        tenant=appointment.tenant,
        event_type=EventType.VISIT_SCHEDULED,
        key=str(appointment.pk),
        data={
            "appointment": {
                "id": appointment.pk,
                "external_id": appointment.external_id,
                "endpoint_id": appointment.endpoint_id,
                "environment": appointment.environment,
                "status": appointment.status,
                "start": _iso(appointment.start),
                "end": _iso(appointment.end),
                "time_zone": appointment.time_zone,
                "department": appointment.department,
            }
        },
    )


def emit_text_outcome(
    *, tenant, message_pk: int, kind: str, appointment_id: int | None, delivered: bool, at
) -> None:
    """A text's delivery report: delivered, or failed (the provider's reason is not sent: it may quote the number)."""
    webhook_emit(
        tenant=tenant,
        event_type=EventType.TEXT_DELIVERED if delivered else EventType.TEXT_FAILED,
        key=str(message_pk),
        occurred_at=at,
        data={"message": {"id": message_pk, "kind": kind, "appointment_id": appointment_id}},
    )


def emit_endpoint_approved(*, endpoint: FhirEndpoint, approval: EndpointApproval) -> None:
    webhook_emit(
        tenant=endpoint.tenant,
        event_type=EventType.ENDPOINT_APPROVED,
        key=str(approval.pk),
        data={
            "endpoint": {
                "id": endpoint.pk,
                "base_url": approval.base_url,
                "environment": endpoint.environment,
                "config_version": approval.config_version,
            },
            "approval": {"id": approval.pk, "decided_at": _iso(getattr(approval, "decided_at", None))},
        },
    )


def emit_certificate_expiring(*, certificate: SigningCertificate) -> None:
    webhook_emit(
        tenant=certificate.tenant,
        event_type=EventType.CERTIFICATE_EXPIRING,
        key=str(certificate.pk),
        data={
            "certificate": {
                "id": certificate.pk,
                "environment": certificate.environment,
                "thumbprint_sha256": certificate.thumbprint_sha256,
                "not_after": _iso(certificate.not_after),
            }
        },
    )
