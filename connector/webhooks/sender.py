"""Sending one webhook delivery: claim, POST outside any transaction, record.

Signed in the Standard Webhooks style (https://www.standardwebhooks.com/), with
the maintained `standardwebhooks` package:

    webhook-id:        the event ID (the same on every attempt: receivers deduplicate on it)
    webhook-timestamp: seconds since the epoch, when this attempt was signed
    webhook-signature: v1,<base64 of HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>
                       (and, for a day after the secret was rotated, a second one with the
                       replaced secret, space-separated)

The POST goes through the same SSRF guard as every EHR call
(`connector.ehr_http.guarded_post_bytes`): https only, no private, loopback or
metadata addresses, the address checked is the one connected to, bounded time
and answer size, and no redirects followed.

Any 2xx answer is a delivery. Anything else is retried with exponential backoff
until the delivery's `retry_until` (a day after it was made); then it fails for
good. An endpoint whose deliveries fail for a whole day, that fails
WEBHOOK_DISABLE_AFTER_FAILURES times in a row, or whose address the guard
refuses outright is disabled, and the organization's administrators get an e-mail.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from connector.ehr_http import EhrHttpError, guarded_post_bytes
from connector.webhooks.models import DeliveryState, WebhookDelivery, WebhookEndpoint
from connector.webhooks.services import signing_secrets, webhook_endpoint_disable

logger = logging.getLogger(__name__)

# A worker killed mid-send leaves its row "sending"; after this lease the sweeper sends it again.
SENDING_LEASE = timedelta(minutes=5)
MAX_BACKOFF = timedelta(hours=4)
# The guard refused the address itself: retrying cannot help.
REFUSED_ADDRESS_CODES = frozenset({"forbidden_address", "invalid_url", "insecure_scheme"})


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, status: int | None = None, refused_address: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.refused_address = refused_address


def backoff_for(attempts: int) -> timedelta:
    first = timedelta(seconds=settings.WEBHOOK_FIRST_BACKOFF_SECONDS)
    return min(first * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def body_for(delivery: WebhookDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def signed_headers(
    *, secret: str, event_id: str, body: bytes, now=None, also: tuple[str, ...] = ()
) -> dict[str, str]:
    """The Standard Webhooks headers; `also` are more secrets to sign with (a rotation's overlap):
    the signatures are space-separated, and a receiver accepts the delivery if any one verifies."""
    now = now or timezone.now()
    signatures = [Webhook(key).sign(msg_id=event_id, timestamp=now, data=body) for key in (secret, *also)]
    return {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def _post(delivery: WebhookDelivery) -> int:
    endpoint = delivery.endpoint
    body = body_for(delivery)
    current, *previous = signing_secrets(endpoint)
    headers = signed_headers(secret=current, event_id=delivery.event_id, body=body, also=tuple(previous))
    try:
        status = guarded_post_bytes(endpoint.url, body, headers=headers)
    except EhrHttpError as error:
        if error.code in REFUSED_ADDRESS_CODES:
            raise DeliveryFailed(
                f"The address was refused: {error.message.split(':', 1)[0]}. Webhooks are only sent over "
                "https to receivers on the public internet; register the receiver's public address.",
                refused_address=True,
            ) from error
        raise DeliveryFailed(f"The receiver could not be reached: {error.message}") from error
    if 300 <= status < 400:
        raise DeliveryFailed(
            f"The receiver answered HTTP {status} (a redirect): redirects are not followed, "
            "register the final address.",
            status=status,
        )
    if not 200 <= status < 300:
        raise DeliveryFailed(
            f"The receiver answered HTTP {status}; a delivery needs a 2xx answer.", status=status
        )
    return status


def webhook_deliver(*, delivery_pk: int) -> str:
    """Claim a due delivery, POST it, record the outcome. Safe to call twice: only one claim wins."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_pk, state=DeliveryState.PENDING, next_attempt_at__lte=now, endpoint__enabled=True
    ).update(state=DeliveryState.SENDING, attempts=F("attempts") + 1, next_attempt_at=now + SENDING_LEASE)
    if claimed != 1:
        return "not due"
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_pk)
    # No transaction is open here: the claim is committed and the POST may take seconds.
    try:
        status = _post(delivery)
    except DeliveryFailed as error:
        return _record_failure(delivery, error)
    done = timezone.now()
    with transaction.atomic():  # one commit for the outcome
        WebhookDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.SENDING).update(
            state=DeliveryState.DELIVERED, delivered_at=done, last_status=status, last_error=""
        )
        WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(
            consecutive_failures=0, last_success_at=done
        )
    return DeliveryState.DELIVERED


def _record_failure(delivery: WebhookDelivery, error: DeliveryFailed) -> str:
    now = timezone.now()
    endpoint_pk = delivery.endpoint_id
    next_at = now + backoff_for(delivery.attempts)
    give_up = error.refused_address or next_at > delivery.retry_until
    state = DeliveryState.FAILED if give_up else DeliveryState.PENDING
    with transaction.atomic():  # one commit for the outcome
        WebhookEndpoint.objects.filter(pk=endpoint_pk).update(
            consecutive_failures=F("consecutive_failures") + 1,
            total_failures=F("total_failures") + 1,
            last_failure_at=now,
        )
        failures, last_success_at = WebhookEndpoint.objects.filter(pk=endpoint_pk).values_list(
            "consecutive_failures", "last_success_at"
        ).first() or (0, None)
        WebhookDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.SENDING).update(
            state=state, last_error=error.message[:2000], last_status=error.status, next_attempt_at=next_at
        )
    # Disabling e-mails the administrators: after the commit, outside any transaction.
    logger.info(
        "webhook delivery %s attempt %s failed (status %s); %s",
        delivery.pk,
        delivery.attempts,
        error.status,
        "giving up" if give_up else "will retry",
    )
    if error.refused_address:
        webhook_endpoint_disable(endpoint_pk=endpoint_pk, reason=error.message)
    elif give_up and (last_success_at is None or last_success_at < delivery.created_at):
        # Nothing got through since this delivery was made: the receiver is down, not one payload refused.
        webhook_endpoint_disable(
            endpoint_pk=endpoint_pk,
            reason=f"A delivery failed for {settings.WEBHOOK_RETRY_WINDOW_SECONDS // 3600} hours "
            f"and nothing was delivered since it was made. The last error: {error.message}",
        )
    elif failures and failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES:
        webhook_endpoint_disable(
            endpoint_pk=endpoint_pk,
            reason=f"{failures} deliveries failed in a row. The last error: {error.message}",
        )
    return state
