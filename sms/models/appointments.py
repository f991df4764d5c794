"""Appointments learned from the EHR's scheduling feed."""

from __future__ import annotations

from django.db import models

from connector.encryption import EncryptedTextField
from tenants.scoping import TenantOwnedModel


class AppointmentStatus(models.TextChoices):
    BOOKED = "booked", "Booked"
    CANCELLED = "cancelled", "Cancelled"
    DELETED = "deleted", "Deleted"
    NO_SHOW = "no_show", "No show"


class Appointment(TenantOwnedModel):
    """An appointment: times, status and the patient's mobile number (encrypted, purged after the visit).

    No names or clinical data: the raw message is not kept after processing.
    """

    # No index of its own: the unique constraint below starts with the tenant and serves
    # every lookup by tenant (one index fewer to write for every message of the feed).
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    endpoint = models.ForeignKey(
        "connector.FhirEndpoint", on_delete=models.CASCADE, related_name="appointments"
    )
    # The appointment's identity is the EHR's ID within the organization and environment
    # (see AppointmentIdField): never the sending facility, which one EHR's messages of
    # one appointment do not always agree on. Kept for support, not for matching.
    environment = models.CharField(max_length=12, default="test")
    sending_facility = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(
        max_length=200, help_text="The EHR's appointment ID, from the field the SMS settings name (SCH-2 by default)."
    )
    start = models.DateTimeField()
    end = models.DateTimeField()
    time_zone = models.CharField(max_length=64, default="UTC")
    status = models.CharField(
        max_length=10, choices=AppointmentStatus.choices, default=AppointmentStatus.BOOKED
    )
    department = models.CharField(max_length=200, blank=True)
    language = models.CharField(max_length=8, default="en")
    phone = EncryptedTextField(blank=True, help_text="E.164, encrypted at rest; emptied after the visit.")
    phone_last_four = models.CharField(max_length=4, blank=True)
    phone_purged_at = models.DateTimeField(null=True, blank=True)
    # The newest message applied (MSH-7): an older message never undoes newer state.
    state_as_of = models.DateTimeField()
    # Keyed hash of the patient's identifier (PID-3): tells an appointment ID reused for
    # another patient (a constant in the chosen field) from an update. Not reversible.
    patient_key = models.CharField(max_length=64, blank=True)
    # The short link's code (/j/<code>): 128 random bits, made when the first text with a link is sent.
    join_code = models.CharField(max_length=32, null=True, blank=True, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "environment", "external_id"],
                name="one_appointment_per_environment_and_id",
            )
        ]
        indexes = [models.Index(fields=["end", "phone_purged_at"])]

    def __str__(self) -> str:
        return f"Appointment {self.external_id}"


class ProcessedMessage(TenantOwnedModel):
    """One accepted HL7v2 message, by sender and control ID (MSH-10), for idempotency. No content kept."""

    # No index of its own: the unique constraint below starts with the tenant and serves
    # every lookup by tenant (one index fewer to write for every message of the feed).
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    sender = models.CharField(max_length=200, help_text="MSH-3 and MSH-4.")
    control_id = models.CharField(max_length=200)
    message_type = models.CharField(max_length=20)
    ack_code = models.CharField(max_length=2)
    ack_text = models.CharField(max_length=500, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "sender", "control_id"], name="one_row_per_control_id")
        ]

    def __str__(self) -> str:
        return f"{self.message_type} {self.control_id} ({self.ack_code})"
