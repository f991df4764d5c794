"""The organization's visit event feed position and its live-status version.

Why a per-organization counter under a row lock, and not the event's primary key or its time:
a primary key is handed out when a transaction inserts, not when it commits, so a reader can
see event 11 while event 10 is still uncommitted, move its cursor past 10 and never see it.
Here the number is taken by `UPDATE ... SET last_seq = last_seq + 1` on the organization's
`VisitFeed` row inside the transaction that stores the event; the row stays locked until that
transaction ends, so the next writer gets its number only after this one has committed (or
rolled back, leaving a harmless hole in the numbering). Numbers therefore become visible in
increasing order: a reader that has seen N has seen every committed event below N, and
`seq > since` never skips or repeats one. The cost is that one organization's event writes
queue on one row for the few milliseconds between the number and the commit, far below the
rate at which people join visits.

Lock order: the visit row (event_record), then this row. Callers store each event in its own
transaction (never several visits' events in one), so two writers cannot wait on each other.

`live_version` moves in the same UPDATE (and when the no-show sweep changes a visit's state),
so the live-status endpoint can answer `If-None-Match` by reading one integer.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from connector.models import VisitFeed
from tenants.scoping import all_tenants


def _bump(*, tenant_id: int, seq_by: int, live: bool) -> int:
    changes = {"live_version": F("live_version") + 1} if live else {}
    if seq_by:
        changes["last_seq"] = F("last_seq") + seq_by
    with all_tenants():  # the counter row is keyed by tenant_id itself
        feed = VisitFeed.objects.filter(tenant_id=tenant_id)
        if not feed.update(**changes):
            try:
                with transaction.atomic():
                    VisitFeed.objects.create(tenant_id=tenant_id)
            except IntegrityError:
                pass  # another writer made it first; its lock now orders us after it
            feed.update(**changes)
        return feed.values_list("last_seq", flat=True).get()


def visit_feed_take(*, tenant_id: int, count: int = 1) -> int:
    """Reserve `count` feed positions; returns the last one (the first is `last - count + 1`).

    Must run inside the transaction that stores the events: the row lock it takes is what keeps
    positions in commit order. Also moves the live-status version.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("visit_feed_take must run in the transaction that stores the events")
    return _bump(tenant_id=tenant_id, seq_by=count, live=True)


def live_version_bump(*, tenant_id: int) -> None:
    """Something shown on the live status changed without a new event (e.g. a visit became a no-show)."""
    _bump(tenant_id=tenant_id, seq_by=0, live=True)


def live_version(*, tenant_id: int) -> int:
    with all_tenants():
        version = VisitFeed.objects.filter(tenant_id=tenant_id).values_list("live_version", flat=True).first()
    return version or 0
