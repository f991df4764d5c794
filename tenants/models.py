"""Organizations, their members, access requests and API tokens."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from tenants.scoping import TenantOwnedModel
from tenants.setup_changes import SetupManager


def validate_microsoft_tenant_id(value: str) -> None:
    """A Microsoft 365 (Entra ID) tenant ID is a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47."""
    try:
        parsed = uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError) as error:
        raise ValidationError(
            "%(value)s is not a Microsoft 365 tenant ID. It is a GUID like "
            "72f988bf-86f1-41af-91ab-2d7cd011db47: find it in the Entra admin center "
            "under Overview, Tenant ID.",
            params={"value": value},
            code="invalid_tenant_id",
        ) from error
    if parsed.int == 0:
        raise ValidationError("The all-zero GUID is not a tenant ID.", code="invalid_tenant_id")


def normalize_microsoft_tenant_id(value: str) -> str:
    return str(uuid.UUID(str(value).strip()))


class EhrVendor(models.TextChoices):
    EPIC = "epic", "Epic"
    ORACLE_HEALTH = "oracle_health", "Oracle Health (Cerner)"
    SMART_ON_FHIR = "smart_on_fhir", "Other SMART on FHIR R4 EHR"


class DataRegion(models.TextChoices):
    AMERICAS = "americas", "Americas"
    EUROPE = "europe", "Europe"
    ASIA_PACIFIC = "asia_pacific", "Asia-Pacific"


class TenantStatus(models.TextChoices):
    ACCESS_REQUESTED = "access_requested", "Access requested"
    ENABLED = "enabled", "Enabled"
    SUSPENDED = "suspended", "Suspended"


class Tenant(models.Model):
    """One organization (a hospital or health system) using the connector."""

    name = models.CharField("display name", max_length=200)
    microsoft_tenant_id = models.CharField(
        "Microsoft 365 tenant ID",
        max_length=36,
        unique=True,
        validators=[validate_microsoft_tenant_id],
        help_text="The organization's Entra ID tenant GUID; sign-in matches it to the tid claim.",
    )
    ehr_vendor = models.CharField("EHR vendor", max_length=20, choices=EhrVendor.choices)
    data_region = models.CharField(max_length=20, choices=DataRegion.choices)
    status = models.CharField(
        max_length=20, choices=TenantStatus.choices, default=TenantStatus.ACCESS_REQUESTED
    )
    monthly_visit_allotment = models.PositiveIntegerField(
        default=1000, help_text="Visits per calendar month included in the organization's plan."
    )
    max_guests_per_visit = models.PositiveSmallIntegerField(
        default=4, help_text="How many extra participants a clinician may invite to one visit."
    )
    meeting_backend = models.CharField(
        max_length=200,
        blank=True,
        help_text="Dotted path of the meeting backend for this organization; empty uses MEETING_BACKEND.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SetupManager()  # moves the shared setup token on .update() too (tenants/setup_changes.py)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.microsoft_tenant_id:
            validate_microsoft_tenant_id(self.microsoft_tenant_id)
            self.microsoft_tenant_id = normalize_microsoft_tenant_id(self.microsoft_tenant_id)

    @property
    def is_enabled(self) -> bool:
        return self.status == TenantStatus.ENABLED


class AccessRequestState(models.TextChoices):
    OPEN = "open", "Waiting for review"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class AccessRequest(models.Model):
    """An organization's request to use the connector, reviewed by support staff.

    Not tenant-owned: it exists before its tenant does.
    """

    organization_name = models.CharField(max_length=200)
    microsoft_tenant_id = models.CharField(
        "Microsoft 365 tenant ID", max_length=36, validators=[validate_microsoft_tenant_id]
    )
    ehr_vendor = models.CharField("EHR vendor", max_length=20, choices=EhrVendor.choices)
    data_region = models.CharField(max_length=20, choices=DataRegion.choices)
    technical_contact_email = models.EmailField("EHR technical contact email")
    # Who asked: a signed-in user, or someone whose Microsoft sign-in was refused
    # because their organization is not enabled yet (no account exists for them).
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="access_requests",
    )
    requester_email = models.EmailField()
    requester_subject = models.CharField(
        max_length=255,
        blank=True,
        help_text="The requester's Entra ID subject, linked to their account on approval.",
    )
    status_token = models.CharField(
        max_length=43,
        unique=True,
        editable=False,
        help_text="Random key of the status page the requester can open without an account.",
    )
    requested_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(
        max_length=10, choices=AccessRequestState.choices, default=AccessRequestState.OPEN
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.SET_NULL, null=True, blank=True, related_name="access_requests"
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            # The database itself refuses a second open request for one tenant ID.
            models.UniqueConstraint(
                fields=["microsoft_tenant_id"],
                condition=Q(state="open"),
                name="one_open_access_request_per_tenant_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization_name} ({self.get_state_display()})"


class Role(models.TextChoices):
    ADMINISTRATOR = "administrator", "Administrator"
    EHR_APPROVER = "ehr_approver", "EHR approver"
    VIEWER = "viewer", "Viewer"


class Membership(TenantOwnedModel):
    """A user's role in one organization. A user may hold several."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    ehr_username = models.CharField(
        "EHR username",
        max_length=150,
        blank=True,
        help_text="For EHR approvers: the analyst's user name in the EHR, checked at approval.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["tenant__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="one_membership_per_user_and_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} as {self.get_role_display()}"

    def clean(self) -> None:
        if self.role == Role.EHR_APPROVER and not self.ehr_username.strip():
            raise ValidationError(
                {"ehr_username": "An EHR approver needs their EHR username, as they sign in to the EHR."}
            )


class TokenScope(models.TextChoices):
    READ = "read", "Read only"
    READ_WRITE = "read_write", "Read and write"


class ApiToken(TenantOwnedModel):
    """A per-organization API credential. Only its SHA-256 hash is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses this token, e.g. 'Reporting warehouse'.")
    prefix = models.CharField(
        max_length=16, unique=True, help_text="The token's first characters, to recognize it."
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=12, choices=TokenScope.choices, default=TokenScope.READ)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords(excluded_fields=["last_used_at"])

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def allows_writes(self) -> bool:
        return self.scope == TokenScope.READ_WRITE


class MembershipInvite(TenantOwnedModel):
    """An administrator's invitation: whoever signs in with this e-mail address becomes a member.

    Accepted at the invitee's first Microsoft sign-in through the organization's own Microsoft
    tenant (tenants/auth_pipeline.py), so only the organization's own people can accept it; in
    demo mode the demo sign-in page offers it instead. Kept after acceptance or withdrawal.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="membership_invites")
    email = models.EmailField("e-mail address", max_length=254)
    role = models.CharField(max_length=20, choices=Role.choices)
    ehr_username = models.CharField("EHR username", max_length=150, blank=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "email"],
                condition=Q(accepted_at__isnull=True, withdrawn_at__isnull=True),
                name="one_open_invite_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.email} as {self.get_role_display()}"

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.withdrawn_at is None
