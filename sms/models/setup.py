"""What an organization sets up before any text is sent."""

from __future__ import annotations

from datetime import time

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from tenants.scoping import TenantOwnedModel, setup_scoped_manager


class SmsConsent(TenantOwnedModel):
    """The two confirmations the organization gives. Nothing is sent without both."""

    objects = setup_scoped_manager()  # moves the shared setup token on .update() too (tenants/setup_changes.py)

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="sms_consent")
    on_behalf_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    on_behalf_confirmed_at = models.DateTimeField(null=True, blank=True)
    patient_consent_confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    patient_consent_confirmed_at = models.DateTimeField(null=True, blank=True)
    # The healthcare exemption's limits (one text a day, three a week per patient number).
    # Answers to STOP, START and HELP are not counted and never held.
    texts_per_day = models.PositiveSmallIntegerField(
        "texts per patient number per day",
        default=1,
        help_text="Texts beyond this many to one number in 24 hours are held back (0: no limit).",
    )
    texts_per_week = models.PositiveSmallIntegerField(
        "texts per patient number per week",
        default=3,
        help_text="Texts beyond this many to one number in 7 days are held back (0: no limit).",
    )

    history = HistoricalRecords()

    class Meta:
        verbose_name = "SMS consent"

    def __str__(self) -> str:
        return f"SMS consent of {self.tenant}"

    @property
    def complete(self) -> bool:
        return bool(self.on_behalf_confirmed_at and self.patient_consent_confirmed_at)


class NumberState(models.TextChoices):
    REQUESTED = "requested", "Requested"
    PROVISIONING = "provisioning", "Provisioning"
    ACTIVE = "active", "Active"
    FAILED = "failed", "Failed"
    RELEASED = "released", "Released"


class TollFreeVerification(models.TextChoices):
    NOT_APPLICABLE = "not_applicable", "Not a toll-free number"
    NOT_SUBMITTED = "not_submitted", "Not submitted"
    PENDING = "pending", "Pending"
    VERIFIED = "verified", "Verified"
    REJECTED = "rejected", "Rejected"


class PhoneNumber(TenantOwnedModel):
    """A sending number obtained from the SMS provider for the organization."""

    objects = setup_scoped_manager()  # moves the shared setup token on .update() too (tenants/setup_changes.py)

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="phone_numbers")
    number = models.CharField("number (E.164)", max_length=20, blank=True)
    country = models.CharField(max_length=2, default="US")
    toll_free = models.BooleanField(default=True)
    state = models.CharField(max_length=14, choices=NumberState.choices, default=NumberState.REQUESTED)
    failure_reason = models.TextField(blank=True)
    provider = models.CharField(max_length=40, blank=True)
    provider_id = models.CharField(max_length=200, blank=True)
    verification = models.CharField(
        "toll-free verification",
        max_length=16,
        choices=TollFreeVerification.choices,
        default=TollFreeVerification.NOT_SUBMITTED,
    )
    verification_details = models.JSONField(
        default=dict, blank=True, help_text="Registration details sent for verification."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["number"], condition=~models.Q(number=""), name="one_row_per_phone_number"
            )
        ]

    def __str__(self) -> str:
        return self.number or f"Number #{self.pk} ({self.get_state_display()})"

    @property
    def held_for_us_recipients(self) -> bool:
        """An unverified toll-free number may not text US phones yet."""
        return self.toll_free and self.verification != TollFreeVerification.VERIFIED


class AppointmentIdField(models.TextChoices):
    """Where the EHR puts its own ID of an appointment (see docs/scheduling-feed.md, "Appointment identity")."""

    FILLER = "SCH-2", "SCH-2 filler appointment ID (default: Epic, Oracle Health, most engines)"
    PLACER = "SCH-1", "SCH-1 placer appointment ID"
    FILLER_ORDER = "SCH-27", "SCH-27 filler order number"
    ARQ_FILLER = "ARQ-2", "ARQ-2 filler appointment ID (engines that forward the request segment)"
    VISIT_NUMBER = "PV1-19", "PV1-19 visit number (Epic's contact serial number)"


def default_lead_minutes() -> list[int]:
    return [24 * 60, 60]


class SmsSettings(TenantOwnedModel):
    """SMS settings of one FHIR endpoint."""

    objects = setup_scoped_manager()  # moves the shared setup token on .update() too (tenants/setup_changes.py)

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    endpoint = models.OneToOneField(
        "connector.FhirEndpoint", on_delete=models.CASCADE, related_name="sms_settings"
    )
    phone_number = models.ForeignKey(
        PhoneNumber,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="endpoint_settings",
        help_text="One number may serve many endpoints; an endpoint uses at most one.",
    )
    confirmations_enabled = models.BooleanField(default=True)
    reminders_enabled = models.BooleanField(default=True)
    reminder_lead_minutes = models.JSONField(
        default=default_lead_minutes, help_text="Minutes before the visit, e.g. [1440, 60]."
    )
    quiet_hours_start = models.TimeField(default=time(21, 0), help_text="No texts from this local time...")
    quiet_hours_end = models.TimeField(default=time(8, 0), help_text="...until this local time.")
    default_language = models.CharField(max_length=8, default="en")
    templates = models.JSONField(
        default=dict,
        blank=True,
        help_text="Overrides per language and message type; shipped texts otherwise.",
    )
    contact = models.CharField(
        max_length=200, blank=True, help_text="Shown in answers to HELP, e.g. a phone number."
    )
    appointment_id_field = models.CharField(
        "appointment ID field",
        max_length=8,
        choices=AppointmentIdField.choices,
        default=AppointmentIdField.FILLER,
        help_text="The field of the scheduling messages that holds the EHR's appointment ID.",
    )
    phone_region = models.CharField(
        "patients' country",
        max_length=2,
        blank=True,
        help_text="Two-letter country (ISO 3166) of patients' numbers written without a country code; "
        "empty: the country of the sending number.",
    )

    history = HistoricalRecords()

    class Meta:
        verbose_name = "SMS settings"
        verbose_name_plural = "SMS settings"

    def __str__(self) -> str:
        return f"SMS settings of {self.endpoint}"


class SigningCertificate(TenantOwnedModel):
    """The public-key certificate that checks the signature of the EHR's scheduling messages."""

    objects = setup_scoped_manager()  # moves the shared setup token on .update() too (tenants/setup_changes.py)

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=12, choices=[("test", "Test"), ("production", "Production")])
    pem = models.TextField()
    thumbprint_sha256 = models.CharField(max_length=64)
    thumbprint_sha1 = models.CharField(max_length=40)
    subject = models.CharField(max_length=500)
    key_description = models.CharField(max_length=40, help_text="e.g. RSA 2048, EC P-256")
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=True)
    expiry_warned_at = models.DateTimeField(
        null=True, blank=True, help_text="When the administrators were e-mailed that it expires soon."
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "environment"],
                condition=models.Q(active=True),
                name="one_active_certificate_per_environment",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_environment_display()} certificate {self.thumbprint_sha256[:16]}…"
