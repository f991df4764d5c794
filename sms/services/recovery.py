"""Texts whose dispatcher died mid-send: reconciled with the provider, never resent blindly.

A text is "sending" from its claim until its outcome is recorded. If its lease
ends first, the dispatcher is gone (the lease is longer than the task timeout,
at which django-q2 kills a task). What the provider did is unknown, so
`messages_reconcile` (run by the sweeper) asks the provider's message history:

- the provider has it: recorded as sent (and any delivery report that came
  meanwhile is applied);
- the provider does not have it: due again, sent by the next dispatch;
- the provider has no such API (ACS): "outcome unknown", never resent; the SMS
  report shows it;
- the provider cannot answer now: asked again at the next sweep.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from sms.backends import get_sms_backend
from sms.backends.base import SmsError
from sms.models import MessageState, OutboundMessage
from sms.services.dispatch import lease_length, message_sent_record
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

RECHECK = timedelta(minutes=1)
UNKNOWN_ERROR = (
    "Outcome unknown: the dispatcher stopped while sending and the provider cannot say whether the "
    "text went, so it is not sent again."
)


def message_reconcile(*, message: OutboundMessage) -> str:
    """Reconcile one text whose lease ended. Returns "sent", "due", "unknown" or "later"."""
    expired_lease = message.lease_until
    # Claim it for the reconciliation (one sweeper wins), with a short lease of its own.
    new_lease = timezone.now() + RECHECK
    taken = OutboundMessage.objects.filter(
        pk=message.pk, state=MessageState.SENDING, lease_until=expired_lease
    ).update(lease_until=new_lease)
    if not taken:
        return "later"
    claimed_at = expired_lease - lease_length() - timedelta(seconds=5)
    backend = get_sms_backend(settings.SMS_BACKEND)
    try:
        found = backend.find_sent(
            from_number=message.phone_number.number, to_number=message.to, since=claimed_at
        )
    except NotImplementedError:
        OutboundMessage.objects.filter(pk=message.pk, state=MessageState.SENDING, lease_until=new_lease).update(
            state=MessageState.UNKNOWN, error=UNKNOWN_ERROR
        )
        return "unknown"
    except SmsError as error:
        logger.warning("text %s not reconciled yet: %s", message.pk, error.message)
        return "later"  # the short lease ends; the next sweep asks again
    if found is not None:
        message.lease_until = new_lease
        message_sent_record(message=message, provider=backend.name, provider_message_id=found.provider_message_id)
        return "sent"
    OutboundMessage.objects.filter(pk=message.pk, state=MessageState.SENDING, lease_until=new_lease).update(
        state=MessageState.SCHEDULED,
        lease_until=None,
        send_at=timezone.now(),
        error="Due again: the dispatcher stopped before the provider accepted it.",
    )
    return "due"


def messages_reconcile(*, limit: int = 200) -> dict[str, int]:
    """Reconcile texts whose lease has ended (the sweeper calls this every minute)."""
    with all_tenants():
        stale = list(
            OutboundMessage.objects.select_related("tenant", "phone_number")
            .filter(state=MessageState.SENDING, lease_until__lt=timezone.now())
            .order_by("lease_until")[:limit]
        )
    outcomes: dict[str, int] = {}
    for message in stale:
        with tenant_scope(message.tenant):
            outcome = message_reconcile(message=message)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes
