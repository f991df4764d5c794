"""Background tasks of outbound webhooks (queued after commit by connector/webhooks/services.py,
again by the sweeper for retries and lost tasks)."""

from __future__ import annotations

from connector.background import tenant_task
from connector.webhooks.models import WebhookDelivery


@tenant_task(WebhookDelivery)
def webhook_deliver(delivery: WebhookDelivery) -> str:
    from connector.webhooks.sender import webhook_deliver as deliver

    return deliver(delivery_pk=delivery.pk)


def webhook_deliveries_purge() -> int:
    """Scheduled daily: delivered and failed deliveries older than WEBHOOK_LOG_DAYS are deleted."""
    from connector.webhooks.services import webhook_deliveries_purge as purge
    from tenants.scoping import all_tenants

    with all_tenants():
        return purge()
