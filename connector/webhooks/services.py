"""Outbound webhooks: registering endpoints, emitting events, sending again, disabling.

Emitting: `webhook_emit` is called where the project records a fact (a visit
event, a delivery report, an approval, ...). It writes one WebhookDelivery per
enabled endpoint of the organization that asked for the event type, inside the
caller's transaction, so a rolled-back fact emits nothing and a committed one
is never lost; the sending task is queued with `transaction.on_commit`, so the
request or task that caused the event never waits for a receiver.

The event ID (the `webhook-id` header) is derived from the fact itself, so the
same fact emitted twice (a provider retrying a callback, an event arriving
again) makes no second delivery, and a receiver sees one ID however many times
a delivery is attempted.

Sending lives in connector/webhooks/sender.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from connector.background import queue_after_commit
from connector.ehr_http import is_forbidden_address, is_insecure_host
from connector.webhooks.models import DeliveryState, EventType, WebhookDelivery, WebhookEndpoint
from tenants.models import Membership, Role, Tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

DELIVER_TASK = "connector.webhooks.tasks.webhook_deliver"
MAX_ENDPOINTS = 20
# How long a replaced signing secret still signs beside the new one (webhook_secret_rotate).
SECRET_OVERLAP = timedelta(hours=24)


def secret_make() -> str:
    """A new signing secret in the Standard Webhooks form: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def event_id_for(*, tenant: Tenant, event_type: str, key: str) -> str:
    """A stable ID for one fact: the same fact always gets the same ID."""
    digest = hashlib.sha256(f"{tenant.pk}:{event_type}:{key}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _clean_url(url: str) -> str:
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValidationError(
            {
                "url": "Enter the full address of your receiver, such as https://hooks.example.org/ehr-connector."
            }
        )
    if parts.username or parts.password:
        raise ValidationError({"url": "Enter the address without a user name or password."})
    if parts.scheme != "https" and not is_insecure_host(host):
        raise ValidationError(
            {"url": "Use an https:// address: webhooks carry signed data and are sent over TLS."}
        )
    literal = host.strip("[]")
    if _is_ip(literal) and is_forbidden_address(literal) and not is_insecure_host(host):
        raise ValidationError(
            {
                "url": f"{host} is a private, loopback or otherwise internal address: the connector only "
                "sends webhooks to receivers on the public internet."
            }
        )
    return url


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _clean_event_types(event_types) -> list[str]:
    wanted = list(dict.fromkeys(str(e) for e in event_types or []))
    unknown = [e for e in wanted if e not in EventType.values]
    if unknown:
        raise ValidationError(
            {
                "event_types": f"Unknown event type(s) {', '.join(unknown)}: choose from {', '.join(EventType.values)}."
            }
        )
    if not wanted:
        raise ValidationError({"event_types": "Choose at least one event type to send to this endpoint."})
    return wanted


def webhook_endpoint_create(
    *, tenant: Tenant, url: str, event_types, description: str = "", created_by=None
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret, which is shown this once."""
    if WebhookEndpoint.objects.filter(tenant=tenant).count() >= MAX_ENDPOINTS:
        raise ValidationError(f"An organization may register at most {MAX_ENDPOINTS} webhook endpoints.")
    secret = secret_make()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=_clean_url(url),
        event_types=_clean_event_types(event_types),
        description=(description or "").strip()[:200],
        secret=secret,
        created_by=created_by,
    )
    logger.info("webhook endpoint %s registered", endpoint.pk)
    return endpoint, secret


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """Change the URL, event types, description or enabled flag. Enabling again resets the failure count."""
    fields = []
    if "url" in changes:
        endpoint.url = _clean_url(changes["url"])
        fields.append("url")
    if "event_types" in changes:
        endpoint.event_types = _clean_event_types(changes["event_types"])
        fields.append("event_types")
    if "description" in changes:
        endpoint.description = (changes["description"] or "").strip()[:200]
        fields.append("description")
    if "enabled" in changes and bool(changes["enabled"]) != endpoint.enabled:
        endpoint.enabled = bool(changes["enabled"])
        if endpoint.enabled:
            endpoint.consecutive_failures = 0
            endpoint.disabled_reason = ""
            endpoint.disabled_at = None
        else:
            endpoint.disabled_reason = "Disabled by the organization."
            endpoint.disabled_at = timezone.now()
        fields += ["enabled", "consecutive_failures", "disabled_reason", "disabled_at"]
    if fields:
        endpoint.save(update_fields=[*fields, "updated_at"])
    return endpoint


def webhook_secret_rotate(*, endpoint: WebhookEndpoint, overlap: timedelta = SECRET_OVERLAP) -> str:
    """A new signing secret for the endpoint; returns it (shown this once).

    The replaced secret keeps signing beside the new one for `overlap` (a day by
    default): every delivery carries both signatures, so a receiver that still checks
    with the old secret goes on verifying until it is given the new one. Rotating again
    within the overlap replaces the older secret: only the last two ever sign.
    """
    secret = secret_make()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = timezone.now() + overlap
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return secret


def signing_secrets(endpoint: WebhookEndpoint, *, now: datetime | None = None) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the replaced one during the overlap."""
    now = now or timezone.now()
    secrets_now = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        secrets_now.append(endpoint.previous_secret)
    return secrets_now


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


def webhook_emit(
    *, tenant: Tenant, event_type: str, key: str, data: dict, occurred_at: datetime | None = None
) -> list[int]:
    """Record an event for every endpoint of the organization that wants it; returns the new deliveries' IDs.

    `key` names the fact (e.g. the visit event's ID) so that emitting it again adds nothing.
    `data` must hold IDs, states and times only: no names, phone numbers or clinical data.
    """
    assert event_type in EventType.values, event_type
    # Callers run in their tenant's scope or across tenants (scheduled jobs): this is the tenant's own.
    with tenant_scope(tenant):
        return _emit(tenant=tenant, event_type=event_type, key=key, data=data, occurred_at=occurred_at)


def _emit(
    *, tenant: Tenant, event_type: str, key: str, data: dict, occurred_at: datetime | None
) -> list[int]:
    endpoints = [
        e
        for e in WebhookEndpoint.objects.filter(tenant=tenant, enabled=True).only("pk", "event_types")
        if event_type in e.event_types
    ]
    if not endpoints:
        return []
    event_id = event_id_for(tenant=tenant, event_type=event_type, key=key)
    payload = {
        "id": event_id,
        "type": event_type,
        "timestamp": (occurred_at or timezone.now()).isoformat(),
        "tenant_id": tenant.microsoft_tenant_id,
        "data": data,
    }
    # Facts such as visit.started are emitted again with every later event: skip without an error.
    already = set(
        WebhookDelivery.objects.filter(event_id=event_id, endpoint__in=endpoints).values_list(
            "endpoint_id", flat=True
        )
    )
    created = []
    for endpoint in endpoints:
        if endpoint.pk in already:
            continue
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    tenant=tenant,
                    endpoint=endpoint,
                    event_id=event_id,
                    event_type=event_type,
                    payload=payload,
                )
        except IntegrityError:
            continue  # emitted before: the first delivery stands
        created.append(delivery.pk)
        queue_after_commit(DELIVER_TASK, delivery.pk)
    return created


def webhook_deliveries_redeliver(*, pks) -> tuple[int, int]:
    """Send these deliveries again now (with the same event ID); returns (queued, refused).

    A delivery being sent right now, or whose endpoint is disabled, is left alone.
    """
    now = timezone.now()
    retryable = Q(state__in=[DeliveryState.PENDING, DeliveryState.FAILED, DeliveryState.DELIVERED]) | Q(
        state=DeliveryState.SENDING, next_attempt_at__lte=now
    )
    window = timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
    queued = [
        pk
        for pk in pks
        if WebhookDelivery.objects.filter(retryable, pk=pk, endpoint__enabled=True).update(
            state=DeliveryState.PENDING, next_attempt_at=now, retry_until=now + window
        )
    ]
    for pk in queued:
        queue_after_commit(DELIVER_TASK, pk)
    return len(queued), len(set(pks)) - len(queued)


def webhook_endpoint_disable(*, endpoint_pk: int, reason: str) -> bool:
    """Disable an endpoint that keeps failing and e-mail the organization's administrators (once)."""
    now = timezone.now()
    with transaction.atomic():
        claimed = WebhookEndpoint.objects.filter(pk=endpoint_pk, enabled=True).update(
            enabled=False, disabled_reason=reason[:1000], disabled_at=now, updated_at=now
        )
        if not claimed:
            return False  # already disabled: the administrators were told then
        # Its waiting deliveries stop here; "send again" queues them once it is enabled again.
        WebhookDelivery.objects.filter(
            endpoint_id=endpoint_pk, state__in=[DeliveryState.PENDING, DeliveryState.SENDING]
        ).update(
            state=DeliveryState.FAILED, last_error="Not sent: the endpoint was disabled. " + reason[:800]
        )
    endpoint = WebhookEndpoint.objects.select_related("tenant").get(pk=endpoint_pk)
    logger.warning(
        "webhook endpoint %s disabled after %s failures", endpoint.pk, endpoint.consecutive_failures
    )
    recipients = sorted(
        set(
            Membership.objects.filter(tenant=endpoint.tenant, role=Role.ADMINISTRATOR)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
    )
    if recipients:
        host = urlsplit(endpoint.url).hostname or endpoint.url
        send_mail(
            f"{endpoint.tenant.name}: webhook endpoint {host} was disabled",
            f"The connector stopped sending webhooks to {endpoint.url}.\n\n"
            f"Why: {reason}\n\n"
            "Events are no longer sent there. Fix the receiver, then enable the endpoint again and use "
            '"Send again" for the deliveries it missed: '
            f"{settings.PUBLIC_BASE_URL}{reverse('portal:webhooks')}\n",
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    return True


def webhook_deliveries_due() -> list[int]:
    """Deliveries to send now (unscoped; for the sweeper): due ones, and ones whose sender died."""
    now = timezone.now()
    WebhookDelivery.objects.filter(state=DeliveryState.SENDING, next_attempt_at__lte=now).update(
        state=DeliveryState.PENDING
    )
    return list(
        WebhookDelivery.objects.filter(
            state=DeliveryState.PENDING, next_attempt_at__lte=now, endpoint__enabled=True
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:400]
    )


def webhook_deliveries_purge(*, now: datetime | None = None) -> int:
    """Forget finished deliveries after WEBHOOK_LOG_DAYS: the log is for troubleshooting, not an archive."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_LOG_DAYS)
    deleted, _ = WebhookDelivery.objects.filter(
        state__in=[DeliveryState.DELIVERED, DeliveryState.FAILED], created_at__lt=cutoff
    ).delete()
    return deleted
