"""Outbound webhooks: the endpoints an organization registers and every delivery made to them.

An event (visit.started, text.delivered, ...) becomes one WebhookDelivery per
enabled endpoint that asked for its type, in the same transaction as the fact
it reports; a task sends it once that commits (connector/webhooks/sender.py).
The delivery row is the truth: a lost task is made up for by the sweeper.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from connector.encryption import EncryptedTextField
from tenants.scoping import TenantOwnedModel


class EventType(models.TextChoices):
    VISIT_SCHEDULED = "visit.scheduled", "A visit was scheduled (scheduling feed)"
    PARTICIPANT_WAITING = "participant.waiting", "A participant is waiting in the lobby"
    PARTICIPANT_JOINED = "participant.joined", "A participant joined"
    PARTICIPANT_LEFT = "participant.left", "A participant left"
    VISIT_STARTED = "visit.started", "A visit started (clinician and patient present)"
    VISIT_ENDED = "visit.ended", "A visit ended"
    VISIT_NO_SHOW = "visit.no_show", "Nobody came by the scheduled end"
    TEXT_DELIVERED = "text.delivered", "A text message was delivered"
    TEXT_FAILED = "text.failed", "A text message could not be delivered"
    ENDPOINT_APPROVED = "endpoint.approved", "An EHR analyst approved a FHIR endpoint"
    CERTIFICATE_EXPIRING = "certificate.expiring", "A scheduling feed certificate expires soon"


def _in_a_day():
    return timezone.now() + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)


class WebhookEndpoint(TenantOwnedModel):
    url = models.URLField(max_length=2000, help_text="Where deliveries are POSTed (https).")
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, help_text="The event types sent to this endpoint.")
    # Shown once when made; kept encrypted because the connector signs with it.
    secret = EncryptedTextField()
    # After a rotation the replaced secret signs too, until this time: receivers switch
    # over without missing a delivery (Standard Webhooks sends several signatures).
    previous_secret = EncryptedTextField(blank=True, default="")
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=1000, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    total_failures = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["tenant", "enabled"])]

    def __str__(self) -> str:
        return self.url


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENDING = "sending", "Being sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(TenantOwnedModel):
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # The webhook-id header: the same for every attempt and every endpoint of one event,
    # so receivers deduplicate on it.
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=40, choices=EventType.choices)
    payload = models.JSONField(help_text="The body sent: IDs and times only, never a name or a phone number.")
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When due (pending), or when the sending lease ends (sending).
    next_attempt_at = models.DateTimeField(default=timezone.now)
    retry_until = models.DateTimeField(default=_in_a_day)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="one_delivery_per_event_and_endpoint"
            )
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            models.Index(fields=["tenant", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
