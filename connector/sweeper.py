"""The one periodic sweeper: work whose lease ended is queued again, so a lost task loses nothing.

django-q2's Redis broker does not redeliver the task of a worker that died
(a plain pop, no acknowledgement), and a task can be lost between a commit and
its queueing. So every piece of work that a task moves into an in-progress
state carries a lease in its row, and this sweeper (scheduled every minute by
`setup_schedules`) looks for leases that ended:

- endpoint validation (FhirEndpoint VALIDATING, `validation_lease_until`):
  queued again; after 3 runs that died, back to draft with a message;
- number provisioning (PhoneNumber REQUESTED for 30 min / PROVISIONING for
  15 min, by `updated_at`): queued again (the service finds an interrupted
  purchase instead of buying twice);
- write-back (WriteBack SENDING, `next_attempt_at`): back to pending; every
  due pending write is queued (this is also how backoff retries happen);
- report builds (RollupJob DUE or BUILDING, `lease_until`): queued again;
- texts (OutboundMessage SENDING, `lease_until`): reconciled with the provider
  (sms/services/recovery.py); due texts get a dispatch queued;
- webhooks (WebhookDelivery SENDING, `next_attempt_at`): back to pending; every
  due pending delivery is queued (this is also how backoff retries happen);
- presence (Heartbeat older than 45 s): the participant is marked as left
  (connector/services/presence.py) in visits nobody's page sweeps any more.

Each step is bounded (a few hundred rows a run) and one failing step does not
stop the others. Every step is safe to run twice at once: each row is taken
back with a conditional UPDATE on its old lease, so only one sweeper wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from connector.background import queue_now
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

BATCH = 200
PENDING_REPORT_TTL = timedelta(days=1)


def endpoints_recover() -> int:
    from connector.models import EndpointStatus, FhirEndpoint
    from connector.services.endpoints import endpoint_validation_recover

    with all_tenants():
        stale = list(
            FhirEndpoint.objects.select_related("tenant")
            .filter(status=EndpointStatus.VALIDATING)
            .filter(Q(validation_lease_until__lt=timezone.now()) | Q(validation_lease_until__isnull=True))
            .order_by("pk")[:BATCH]
        )
    for endpoint in stale:
        with tenant_scope(endpoint.tenant):
            endpoint_validation_recover(endpoint=endpoint)
    return len(stale)


def phone_numbers_recover() -> int:
    from sms.models import NumberState, PhoneNumber
    from sms.services.numbers import STALE_CLAIM
    from sms.tasks import STALLED_REQUEST

    now = timezone.now()
    with all_tenants():
        stalled = list(
            PhoneNumber.objects.filter(
                Q(state=NumberState.REQUESTED, updated_at__lt=now - STALLED_REQUEST)
                | Q(state=NumberState.PROVISIONING, updated_at__lt=now - STALE_CLAIM)
            )
            .order_by("updated_at")
            .values_list("pk", flat=True)[:BATCH]
        )
    for pk in stalled:
        queue_now("sms.tasks.phone_number_provision", pk)
    return len(stalled)


def write_backs_recover() -> int:
    from connector.models import WriteBack, WriteBackState

    now = timezone.now()
    with all_tenants():
        # Rows whose worker died mid-send come back once their lease has passed.
        WriteBack.objects.filter(state=WriteBackState.SENDING, next_attempt_at__lte=now).update(
            state=WriteBackState.PENDING
        )
        due = list(
            WriteBack.objects.filter(state=WriteBackState.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[: BATCH * 2]
        )
    for pk in due:
        queue_now("connector.tasks.write_back_send", pk)
    return len(due)


def rollup_jobs_recover() -> int:
    from reports.jobs import rollup_jobs_recover as recover

    return recover(limit=BATCH)


def texts_recover() -> int:
    from sms.models import MessageState, OutboundMessage, PendingDeliveryReport
    from sms.services.recovery import messages_reconcile

    outcomes = messages_reconcile(limit=BATCH)
    with all_tenants():
        PendingDeliveryReport.objects.filter(received_at__lt=timezone.now() - PENDING_REPORT_TTL).delete()
        due = OutboundMessage.objects.filter(
            state=MessageState.SCHEDULED, send_at__lte=timezone.now()
        ).exists()
    if due or outcomes.get("due"):
        queue_now("sms.tasks.messages_dispatch")
    return sum(outcomes.values())


def webhooks_recover() -> int:
    """Deliveries that are due (backoff retries) or whose sender died: queued again."""
    from connector.webhooks.services import webhook_deliveries_due

    with all_tenants():
        due = webhook_deliveries_due()
    for pk in due:
        queue_now("connector.webhooks.tasks.webhook_deliver", pk)
    return len(due)


def presence_recover() -> int:
    from connector.services.presence import presence_sweep

    return presence_sweep()


STEPS: dict[str, Callable[[], int]] = {
    "endpoints": endpoints_recover,
    "phone_numbers": phone_numbers_recover,
    "write_backs": write_backs_recover,
    "rollups": rollup_jobs_recover,
    "texts": texts_recover,
    "webhooks": webhooks_recover,
    "presence": presence_recover,
}


def work_sweep() -> dict[str, int | str]:
    """Run every step; returns what each found (or the error that stopped it)."""
    found: dict[str, int | str] = {}
    for name, step in STEPS.items():
        try:
            found[name] = step()
        except Exception as error:  # noqa: BLE001 - one broken step must not stop the others
            logger.exception("sweeper step %s failed", name)
            found[name] = f"error: {type(error).__name__}"
    return found
