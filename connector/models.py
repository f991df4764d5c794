"""The connector's configuration: FHIR endpoints, EHR approvers, approvals, integration records."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone
from simple_history.models import HistoricalRecords

from connector.encryption import EncryptedJSONField, EncryptedTextField
from connector.lookup_hash import EHR_USER, LookupHashField, hash_fields_for
from tenants.scoping import TenantOwnedModel, setup_scoped_manager


class Environment(models.TextChoices):
    TEST = "test", "Test"
    PRODUCTION = "production", "Production"


class EndpointStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    VALIDATING = "validating", "Validating"
    VALIDATED = "validated", "Validated"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved", "Approved"
    DISABLED = "disabled", "Disabled"


def _time_zone_choices() -> list[tuple[str, str]]:
    from zoneinfo import available_timezones

    return [(name, name) for name in sorted(available_timezones()) if "/" in name or name == "UTC"]


class FhirEndpoint(TenantOwnedModel):
    """One FHIR R4 base URL of the organization's EHR, in one environment."""

    objects = (
        setup_scoped_manager()
    )  # moves the shared setup token on .update() too (tenants/setup_changes.py)

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="fhir_endpoints")
    base_url = models.URLField(
        "FHIR base URL",
        max_length=500,
        help_text="The FHIR R4 base URL, e.g. https://fhir.example.org/api/FHIR/R4",
    )
    environment = models.CharField(max_length=12, choices=Environment.choices)
    label = models.CharField(
        "department or organization", max_length=200, help_text="Shown to people choosing between endpoints."
    )
    time_zone = models.CharField(max_length=64, choices=_time_zone_choices, default="UTC")
    status = models.CharField(max_length=20, choices=EndpointStatus.choices, default=EndpointStatus.DRAFT)
    # Bumped whenever the URL or environment changes: approvals and integration
    # records are tied to the version they were made for.
    config_version = models.PositiveIntegerField(default=1)
    validation_step = models.CharField(
        max_length=40, blank=True, help_text="The step a running validation is at."
    )
    # While VALIDATING: when the sweeper queues the validation again (its worker died).
    validation_lease_until = models.DateTimeField(null=True, blank=True)
    validation_attempts = models.PositiveSmallIntegerField(default=0)
    last_validation = models.JSONField(default=dict, blank=True)
    last_validated_at = models.DateTimeField(null=True, blank=True)
    write_back_enabled = models.BooleanField(
        default=False,
        help_text="Write participant connects and disconnects, visit start and end, device test results and "
        "the appointment's status (arrived, fulfilled, no-show) back to the EHR (SMART Backend Services).",
    )
    write_join_link = models.BooleanField(
        "put the join link on the appointment",
        default=False,
        help_text="With write-back on: put the patient's join link on the EHR's Appointment when the visit "
        "is made (Oracle Health: its video visit links; other EHRs: the R5 virtualService extension).",
    )
    smart_client_id = models.CharField(
        "SMART client ID",
        max_length=200,
        blank=True,
        help_text="The client ID this EHR assigned to the connector (Epic gives one per environment: non-production "
        "and production). Leave blank to use the installation's SMART_CLIENT_ID.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Deleted in the portal: kept (past visits and reports point to it), gone from every list,
    # disabled for launches. Adding its URL again brings it back (services/endpoints.py).
    deleted_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords(
        excluded_fields=["validation_step", "validation_lease_until", "validation_attempts"]
    )

    class Meta:
        ordering = ["environment", "label"]
        verbose_name = "FHIR endpoint"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "base_url"], name="one_endpoint_per_tenant_and_url")
        ]
        indexes = [models.Index(fields=["base_url"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_environment_display()}): {self.base_url}"

    @property
    def client_id(self) -> str:
        """The client ID to present to this EHR: the one it assigned, else the installation's."""
        return self.smart_client_id or settings.SMART_CLIENT_ID

    @property
    def is_usable(self) -> bool:
        """Launches are accepted: approved (Epic) or validated (other vendors)."""
        return self.status in (EndpointStatus.APPROVED, EndpointStatus.VALIDATED)

    @property
    def last_validation_ok(self) -> bool | None:
        return self.last_validation.get("ok") if self.last_validation else None

    @property
    def validation_gaps(self) -> list[dict]:
        """The features the last validation found lost or unconfirmed (connector/endpoint_features.py)."""
        features = (self.last_validation.get("details") or {}).get("features") or []
        return [f for f in features if isinstance(f, dict) and f.get("status") in ("lost", "unconfirmed")]


class ApproverMatch(models.TextChoices):
    """Which form of an approver's entry matched their EHR sign-in (docs/configuration-portal.md)."""

    USERNAME = "username", "EHR username (preferred_username)"
    FHIR_USER = "fhir_user", "fhirUser reference"
    IDENTIFIER = "identifier", "Practitioner identifier"


class EhrApprover(TenantOwnedModel):
    """An EHR analyst who may approve the organization's endpoints (Epic).

    `ehr_username` holds one entry as the administrator typed it: an EHR username, a fhirUser
    reference (`Practitioner/123` or its absolute URL) or a Practitioner identifier (`value` or
    `system|value`); many EHRs send no username, so the other two forms exist.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="ehr_approvers")
    ehr_username = models.CharField("EHR username, fhirUser or identifier", max_length=500)
    last_matched_as = models.CharField(
        max_length=12,
        choices=ApproverMatch.choices,
        blank=True,
        help_text="How the last EHR sign-in matched.",
    )
    last_matched_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["ehr_username"]
        verbose_name = "EHR approver"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "ehr_username"], name="one_approver_per_tenant_and_username"
            )
        ]

    def __str__(self) -> str:
        return self.ehr_username


class ApprovalDecision(models.TextChoices):
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class EndpointApproval(TenantOwnedModel):
    """Who approved or rejected which endpoint configuration, and when. Never deleted."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(FhirEndpoint, on_delete=models.CASCADE, related_name="approvals")
    config_version = models.PositiveIntegerField()
    base_url = models.URLField(max_length=500, help_text="The URL as it was when decided.")
    decision = models.CharField(max_length=10, choices=ApprovalDecision.choices)
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Identifiers of a person: encrypted at rest (docs/security.md), shown, never searched.
    ehr_username = EncryptedTextField("EHR username")
    ehr_user = EncryptedTextField("EHR user (fhirUser)", blank=True)
    matched_as = models.CharField(
        "approver matched by", max_length=12, choices=ApproverMatch.choices, blank=True
    )
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-decided_at"]
        verbose_name = "endpoint approval"

    def __str__(self) -> str:
        return f"{self.get_decision_display()} by {self.ehr_username} at {self.decided_at:%Y-%m-%d %H:%M}"


class RecordKind(models.TextChoices):
    PATIENT_LAUNCH = "patient_launch", "Patient launch"
    PROVIDER_LAUNCH = "provider_launch", "Provider launch"
    DIRECT_SMS_LAUNCH = "direct_sms_launch", "Direct SMS launch"
    SMS_CONFIGURATION = "sms_configuration", "SMS configuration"
    DEVICE_TEST_CONFIGURATION = "device_test_configuration", "Device test configuration"
    CLIENT_REGISTRATION = "client_registration", "Client registration (SMART app)"
    BACKEND_SERVICES = "backend_services", "Backend services (write-back)"
    VENDOR_SETUP = "vendor_setup", "EHR vendor setup"


class IntegrationRecord(TenantOwnedModel):
    """What the EHR team types into the EHR for one endpoint and one kind of launch."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(FhirEndpoint, on_delete=models.CASCADE, related_name="integration_records")
    kind = models.CharField(max_length=30, choices=RecordKind.choices)
    config_version = models.PositiveIntegerField()
    out_of_date = models.BooleanField(
        default=False, help_text="The endpoint changed since: wait for the new records before using these."
    )
    launch_url = models.URLField(max_length=500, blank=True)
    redirect_uri = models.URLField(max_length=500, blank=True)
    client_id = models.CharField(max_length=200, blank=True)
    scopes = models.TextField(blank=True)
    context_parameters = models.JSONField(
        default=list, blank=True, help_text="Parameters the EHR must append to the launch URL."
    )
    context_token = models.CharField(max_length=100, blank=True)
    details = models.JSONField(default=dict, blank=True)
    generated_at = models.DateTimeField(default=timezone.now)

    history = HistoricalRecords()

    class Meta:
        ordering = ["endpoint", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "kind"], name="one_record_per_endpoint_and_kind")
        ]
        indexes = [models.Index(fields=["context_token"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.endpoint.label}"

    def as_export(self) -> dict:
        """The record as the EHR team reads it (JSON download and API)."""
        return {
            "kind": self.kind,
            "title": self.get_kind_display(),
            "endpoint": self.endpoint.base_url,
            "environment": self.endpoint.environment,
            "label": self.endpoint.label,
            "launch_url": self.launch_url,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "scopes": self.scopes,
            "context_parameters": self.context_parameters,
            "context_token": self.context_token,
            "details": self.details,
            "out_of_date": self.out_of_date,
            "generated_at": self.generated_at.isoformat(),
        }


# --- virtual visits ---------------------------------------------------------------


class ParticipantRole(models.TextChoices):
    CLINICIAN = "clinician", "Clinician"
    PATIENT = "patient", "Patient"
    GUEST = "guest", "Guest"


class ClinicianLink(TenantOwnedModel):
    """The one identity the connector keeps: an EHR user's unique ID linked to an organization user.

    Made at a clinician's first launch, after a one-time Microsoft sign-in. Keyed to the
    organization, the EHR environment and the absolute fhirUser URL, so a test EHR's user and a
    production EHR's user with the same id never share a link.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=12, choices=Environment.choices)
    fhir_user = EncryptedTextField("EHR user (absolute fhirUser URL)", help_text="Encrypted at rest.")
    # What the launch finds the link by: `fhir_user_hash__in=lookup_hashes(url, purpose=EHR_USER)`.
    fhir_user_hash = LookupHashField(source="fhir_user", purpose=EHR_USER)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="clinician_links"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "environment", "fhir_user_hash"],
                name="one_link_per_environment_and_ehr_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.fhir_user} -> {self.user}"

    def save(self, *args, update_fields=None, **kwargs):
        super().save(*args, update_fields=hash_fields_for(type(self), update_fields), **kwargs)


class Meeting(TenantOwnedModel):
    """An online meeting at the meeting provider; a group visit's visits share one."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    backend = models.CharField(max_length=200)
    meeting_id = models.CharField(max_length=500)
    join_url = models.URLField(max_length=2000)
    data = models.JSONField(default=dict, blank=True)
    conference_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["backend", "meeting_id"], name="one_row_per_provider_meeting"),
        ]
        indexes = [models.Index(fields=["tenant", "conference_id"])]

    def __str__(self) -> str:
        return self.meeting_id


class AppointmentSource(models.TextChoices):
    """Which step of the documented order found a visit's appointment (docs/visits.md)."""

    FHIR_CONTEXT = "fhir_context", "SMART fhirContext"
    LAUNCH_PARAMETER = "launch_parameter", "Vendor launch parameter"
    ENCOUNTER = "encounter", "Encounter.appointment"
    SEARCH = "search", "Appointment search"
    FEED = "feed", "Scheduling feed (SMS link)"
    UNSCHEDULED = "unscheduled", "None: unscheduled visit"


class VisitState(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    NO_SHOW = "no_show", "No show"


class Visit(TenantOwnedModel):
    """One virtual visit per appointment. Holds IDs and timestamps only: no names, no clinical data."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="visits")
    public_id = models.CharField(max_length=32, unique=True, editable=False)
    endpoint = models.ForeignKey(FhirEndpoint, on_delete=models.PROTECT, related_name="visits")
    appointment_id = models.CharField(max_length=200, help_text="The EHR's appointment ID (Epic: the CSN).")
    conference_id = models.CharField(max_length=200, blank=True)
    department_id = models.CharField(max_length=200, blank=True)
    encounter_id = models.CharField(max_length=200, blank=True)
    meeting = models.ForeignKey(
        Meeting, on_delete=models.SET_NULL, null=True, blank=True, related_name="visits"
    )
    scheduled_start = models.DateTimeField(null=True, blank=True)
    scheduled_end = models.DateTimeField(null=True, blank=True)
    # What the connector read of the EHR's schedule (times and identifiers only; see
    # connector/services/appointment_finder.py and docs/visits.md).
    fhir_appointment_id = models.CharField(
        "FHIR Appointment id", max_length=200, blank=True, help_text="Empty when the EHR had no appointment."
    )
    appointment_status = models.CharField(
        max_length=20, blank=True, help_text="Appointment.status as last read from the EHR."
    )
    participant_count = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Participants on the EHR's appointment."
    )
    location_reference = models.CharField(
        max_length=300, blank=True, help_text="The appointment's or encounter's Location reference."
    )
    time_zone = models.CharField(
        max_length=64, blank=True, help_text="The department's time zone; empty: the endpoint's."
    )
    unscheduled = models.BooleanField(
        default=False, help_text="The EHR had no appointment: the visit is keyed to the encounter."
    )
    found_by = models.CharField(
        max_length=20,
        choices=AppointmentSource.choices,
        blank=True,
        help_text="How the launch found the appointment.",
    )
    schedule_read_at = models.DateTimeField(null=True, blank=True)
    primary_clinician = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    primary_clinician_ehr_id = EncryptedTextField(
        blank=True, help_text="The clinician's fhirUser, encrypted at rest."
    )
    primary_clinician_ehr_id_hash = LookupHashField(source="primary_clinician_ehr_id", purpose=EHR_USER)
    # Derived from the visit's events by services.visits.visit_recompute.
    state = models.CharField(max_length=12, choices=VisitState.choices, default=VisitState.SCHEDULED)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    lobby_wait_seconds = models.PositiveIntegerField(null=True, blank=True)
    peak_attendees = models.PositiveIntegerField(default=0)
    # The first lobby entry or join: a scheduled visit someone arrived at is "waiting" in the API.
    arrived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "appointment_id"], name="one_visit_per_appointment")
        ]
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            models.Index(fields=["tenant", "started_at"]),
            # The API's `time` (connector/visits/selectors.py): its date range, ordering and cursor.
            models.Index(
                models.F("tenant"),
                Coalesce(models.F("scheduled_start"), models.F("created_at")),
                models.F("id"),
                name="visit_api_time",
            ),
        ]

    def __str__(self) -> str:
        return f"Visit {self.public_id}"

    def save(self, *args, update_fields=None, **kwargs):
        super().save(*args, update_fields=hash_fields_for(type(self), update_fields), **kwargs)

    @property
    def duration_seconds(self) -> int | None:
        if self.started_at and self.ended_at:
            return int((self.ended_at - self.started_at).total_seconds())
        return None


class VisitKey(TenantOwnedModel):
    """One of the IDs a visit's appointment is known by, unique per organization and environment.

    The EHR launch knows the FHIR Appointment id and its identifiers, the patient's SMS link the
    scheduling feed's appointment ID (the EHR's placer or filler ID), a relaunch perhaps only the
    encounter: every one of them leads to the same visit. Keys: `Appointment/<id>`,
    `Encounter/<id>`, and `id:<value>` for identifier values and feed IDs.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    environment = models.CharField(max_length=12, choices=Environment.choices)
    key = models.CharField(max_length=300)
    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="keys")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "environment", "key"], name="one_visit_per_appointment_key"
            )
        ]

    def __str__(self) -> str:
        return self.key


class EventKind(models.TextChoices):
    LOBBY_ENTERED = "lobby_entered", "Entered the lobby"
    ADMITTED = "admitted", "Admitted from the lobby"
    JOINED = "joined", "Joined"
    LEFT = "left", "Left"
    DEVICE_TEST = "device_test", "Device test"


class EventSource(models.TextChoices):
    CONNECTOR = "connector", "The connector's pages"
    TEAMS = "teams", "Microsoft Teams (Graph)"
    JITSI = "jitsi", "Jitsi"
    DEMO = "demo", "Demo meeting"


class VisitEvent(TenantOwnedModel):
    """Something that happened in a visit. Idempotent on `event_id`: late or repeated deliveries are kept once."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    role = models.CharField(max_length=12, choices=ParticipantRole.choices)
    participant_id = models.CharField(max_length=200)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=12, choices=EventSource.choices)
    data = models.JSONField(default=dict, blank=True, help_text="Device test results; never PHI.")
    # The organization's event feed position (VisitFeed.last_seq when stored): the API's
    # `since` cursor. Numbers commit in order, so a reader never skips one (services/visit_feed.py).
    seq = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["occurred_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "event_id"], name="one_row_per_event_id"),
            models.UniqueConstraint(fields=["tenant", "seq"], name="one_event_per_feed_position"),
        ]
        indexes = [
            models.Index(fields=["visit", "occurred_at"]),
            # The live status: the organization's recent events (connector/visits/selectors.py).
            models.Index(fields=["tenant", "occurred_at"], name="visit_event_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.role}) at {self.occurred_at:%H:%M:%S}"


class VisitFeed(TenantOwnedModel):
    """One row per organization: the last event feed position handed out and the live-status version.

    `last_seq` is advanced under this row's lock in the transaction that stores the event, so
    positions become visible in order (see connector/services/visit_feed.py). `live_version`
    moves whenever who is where, or a visit's state, changes: the live-status ETag.
    """

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    last_seq = models.BigIntegerField(default=0)
    live_version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"feed at {self.last_seq}, live version {self.live_version}"


class IdempotentRequest(TenantOwnedModel):
    """An API POST made with an `Idempotency-Key`: its request digest and the stored answer.

    Claimed (a row without `status_code`) before the action runs, answered after; a retry
    with the same key and body gets the stored answer and the action is not done again.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    caller = models.CharField(max_length=40, help_text="token:<pk> or user:<pk>.")
    key = models.CharField(max_length=255)
    request_digest = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "caller", "key"], name="one_answer_per_idempotency_key")
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.caller} {self.key}"


class Heartbeat(TenantOwnedModel):
    """When a participant's visit page (lobby, console, meeting) last said it is still open.

    One row per participant and visit, overwritten every ~15 s; the presence sweep
    (connector/services/presence.py) marks as left whoever stops sending, then deletes the row.
    Holds only the participant ID the visit's events already hold.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="heartbeats")
    participant_id = models.CharField(max_length=200)
    role = models.CharField(max_length=12, choices=ParticipantRole.choices)
    last_seen_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["visit", "participant_id"], name="one_heartbeat_per_participant")
        ]
        indexes = [models.Index(fields=["last_seen_at"])]

    def __str__(self) -> str:
        return f"{self.role} last seen {self.last_seen_at:%H:%M:%S}"


class GuestInvite(TenantOwnedModel):
    """A guest link a clinician made for another clinician, a family member or an interpreter."""

    class Kind(models.TextChoices):
        CLINICIAN = "clinician", "Another clinician"
        FAMILY = "family", "Family member"
        INTERPRETER = "interpreter", "Interpreter"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="invites")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    participant_id = models.CharField(max_length=64, unique=True)
    created_by_ehr_id = EncryptedTextField(blank=True, help_text="Encrypted at rest.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.visit}"


class WriteBackState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class WriteBack(TenantOwnedModel):
    """One change to write back to the EHR (FHIR), retried with backoff by a task."""

    class Kind(models.TextChoices):
        PARTICIPANT_CONNECTED = "participant_connected", "Participant connected"
        PARTICIPANT_DISCONNECTED = "participant_disconnected", "Participant disconnected"
        VISIT_STARTED = "visit_started", "Visit started"
        VISIT_ENDED = "visit_ended", "Visit ended"
        DEVICE_TEST = "device_test", "Device test result"
        APPOINTMENT_STATUS = "appointment_status", "Appointment status"
        JOIN_LINK = "join_link", "Join link on the appointment"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    visit = models.ForeignKey(Visit, on_delete=models.CASCADE, related_name="write_backs")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    dedupe_key = models.CharField(max_length=250, help_text="One write per event: the event's id and kind.")
    state = models.CharField(max_length=10, choices=WriteBackState.choices, default=WriteBackState.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "dedupe_key"], name="one_write_back_per_key")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.visit} ({self.get_state_display()})"


class LaunchState(models.Model):
    """A SMART launch between the redirect to the EHR and its callback. Used once, then deleted.

    Not tenant-owned in the scope sense: the callback finds it by its state before
    any tenant is known; it points at the endpoint that decides the tenant.
    """

    state_hash = models.CharField(max_length=64, unique=True)
    endpoint = models.ForeignKey(FhirEndpoint, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=12, choices=ParticipantRole.choices)
    code_verifier = models.CharField(max_length=128)
    nonce = models.CharField(max_length=64)
    browser_binding = models.CharField(max_length=64, help_text="Hash of the cookie set with the redirect.")
    # Holds the clinician's fhirUser and the visit's IDs between callback and account link.
    context = EncryptedJSONField(
        default=dict,
        blank=True,
        help_text="The launch context once the code is exchanged; encrypted at rest.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.get_role_display()} launch at {self.created_at:%Y-%m-%d %H:%M}"
