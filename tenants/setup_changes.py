"""A token in the shared cache that changes whenever an organization's feed setup changes.

Processes that keep part of an organization's setup in memory (the scheduling
feed: `sms/hl7/feed_setup.py`) compare the token they saw with the one in
Django's cache (Redis in production, the database cache otherwise: both shared
by every process) and forget what they kept when it differs. So a suspended
organization or a withdrawn certificate is refused by every web process and
MLLP listener, not only by the one that saved the change.

Every write path moves the token: saves and deletes through signals (connected
by `feed_setup`), and `.update()`, `.delete()`, `bulk_create()` and
`bulk_update()` through `SetupQuerySet`, the query set of every model whose rows
make up a setup. The token moves when the transaction commits: moved earlier,
another process could read the old rows again and keep them under the new token.

The token is a random string rather than a counter, so that two changes made at
the same moment in two processes never leave the same value behind (the
database cache's `incr` is a read and a write).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from django.core.cache import cache
from django.db import models, transaction

logger = logging.getLogger(__name__)

CACHE_KEY = "connector:setup-generation"

# Called in this process as soon as something changes (before commit): this
# process never waits for the shared token to see its own change.
_local_listeners: list[Callable[[], None]] = []


def on_local_change(listener: Callable[[], None]) -> None:
    if listener not in _local_listeners:
        _local_listeners.append(listener)


def setup_changed(**_signal_kwargs) -> None:
    """Record that a setup row changed: now in this process, on commit for every process."""
    for listener in _local_listeners:
        listener()
    transaction.on_commit(_move_token)


def _move_token() -> None:
    try:
        cache.set(CACHE_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:  # the cache is down: readers that cannot read it keep nothing (see current_token)
        logger.warning("the shared cache could not record a setup change", exc_info=True)
    for listener in _local_listeners:  # a read between the change and the commit kept the old rows
        listener()


def current_token() -> str | None:
    """The shared token, created if missing (evicted, first start); None when the cache cannot be read."""
    try:
        token = cache.get(CACHE_KEY)
        if token is None:
            cache.add(CACHE_KEY, uuid.uuid4().hex, timeout=None)
            token = cache.get(CACHE_KEY)
    except Exception:
        logger.warning("the shared cache could not be read; the feed setup is read for every message", exc_info=True)
        return None
    return token


class SetupQuerySet(models.QuerySet):
    """Moves the setup token on the query set's write paths, which send no signals."""

    def update(self, **kwargs):
        changed = super().update(**kwargs)
        if changed:
            setup_changed()
        return changed

    def delete(self):
        result = super().delete()
        setup_changed()
        return result

    def bulk_create(self, objs, *args, **kwargs):
        created = super().bulk_create(objs, *args, **kwargs)
        setup_changed()
        return created

    def bulk_update(self, objs, fields, *args, **kwargs):
        changed = super().bulk_update(objs, fields, *args, **kwargs)
        setup_changed()
        return changed


SetupManager = models.Manager.from_queryset(SetupQuerySet)
