"""Texts sent to patients, and their opt-outs."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from connector.encryption import EncryptedTextField
from tenants.scoping import TenantOwnedModel, setup_scoped_manager


class MessageKind(models.TextChoices):
    CONFIRMATION = "confirmation", "Confirmation"
    RESCHEDULE = "reschedule", "Reschedule confirmation"
    CANCELLATION = "cancellation", "Cancellation"
    REMINDER = "reminder", "Reminder"
    HELP = "help", "Help"
    OPT_OUT = "opt_out", "Opt-out confirmation"
    OPT_IN = "opt_in", "Opt-in confirmation"
    GUEST_INVITE = "guest_invite", "Guest invite"


class MessageState(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    # A dispatcher died mid-send and the provider cannot tell whether the text went: never resent blindly.
    UNKNOWN = "unknown", "Outcome unknown"
    # Not sent: the patient's number reached the organization's cap of texts per day or week.
    HELD = "held", "Held back"


class OutboundMessage(TenantOwnedModel):
    """One text. Claimed atomically by a dispatcher so it is never sent twice."""

    # No index of its own: the unique constraint below starts with the tenant and serves
    # every lookup by tenant (one index fewer to write for every message of the feed).
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    appointment = models.ForeignKey(
        "sms.Appointment", on_delete=models.CASCADE, null=True, blank=True, related_name="messages"
    )
    phone_number = models.ForeignKey("sms.PhoneNumber", on_delete=models.PROTECT, related_name="messages")
    kind = models.CharField(max_length=14, choices=MessageKind.choices)
    to = EncryptedTextField(blank=True, help_text="E.164, encrypted; emptied with the appointment's number.")
    to_last_four = models.CharField(max_length=4, blank=True)
    to_hash = models.CharField(max_length=64, help_text="Keyed hash of the number, for opt-outs and pacing.")
    body = EncryptedTextField(blank=True)
    send_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=MessageState.choices, default=MessageState.SCHEDULED)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    dedupe_key = models.CharField(
        max_length=200, help_text="One message per purpose: no double confirmations."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["send_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "dedupe_key"], name="one_message_per_dedupe_key")
        ]
        indexes = [
            models.Index(fields=["state", "send_at"]),
            # Only sent texts have a provider ID; scheduled ones stay out of the index.
            models.Index(
                fields=["provider_message_id"],
                name="outbound_by_provider_id",
                condition=~models.Q(provider_message_id=""),
            ),
            models.Index(fields=["tenant", "created_at"]),
            # The cap per patient number and STOP look up a number's texts.
            models.Index(fields=["tenant", "to_hash"], name="outbound_by_number"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} to …{self.to_last_four} ({self.get_state_display()})"


class OptOut(TenantOwnedModel):
    """A number that said STOP to this organization. Never texted again until START."""

    objects = setup_scoped_manager()  # moves the shared setup token on .update() too (tenants/setup_changes.py)

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    number_hash = models.CharField(max_length=64)
    hash_key_id = models.CharField(
        max_length=12,
        blank=True,
        help_text="Which PHONE_HASH_KEY made the hash (a fingerprint, sms/phones.py); empty: not recorded.",
    )
    number_last_four = models.CharField(max_length=4)
    opted_out_at = models.DateTimeField(default=timezone.now)
    opted_in_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number_hash"], name="one_opt_out_per_number")
        ]

    def __str__(self) -> str:
        return f"…{self.number_last_four} ({'opted out' if self.active else 'opted in again'})"


class PendingDeliveryReport(models.Model):
    """A delivery report that named no known text yet: its send is still being recorded.

    The provider may call back before the dispatcher has written down the
    provider's message ID (the send and the record are separate commits). The
    report waits here and is applied when the text is recorded (or reconciled);
    reports older than a day are dropped by the sweeper. Holds no patient data.
    """

    provider_message_id = models.CharField(max_length=200, db_index=True)
    status = models.CharField(max_length=10)
    error = models.TextField(blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.status} report for {self.provider_message_id}"
