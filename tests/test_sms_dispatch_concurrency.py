"""Exactly-once sending with two dispatchers at the same time (real threads, real database)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sms.backends import locmem
from sms.models import MessageState, OutboundMessage, PhoneNumber
from sms.phones import number_hash
from sms.services.dispatch import messages_dispatch
from tenants.scoping import tenant_scope
from tests.support.sms import sms_ready_endpoint

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # SQLite's shared in-memory test database locks whole tables across threads;
    # the row-level claim (FOR UPDATE SKIP LOCKED) is what is under test here.
    pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent dispatchers need PostgreSQL"),
]


def test_two_dispatchers_never_send_a_message_twice(org_a, settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"
    settings.SMS_RATE_PER_NUMBER = 100000
    locmem.reset()
    sms_ready_endpoint(org_a)
    with tenant_scope(org_a):
        number = PhoneNumber.objects.get()
        OutboundMessage.objects.bulk_create(
            OutboundMessage(
                tenant=org_a,
                phone_number=number,
                kind="guest_invite",
                to=f"+1415555{i:04d}",
                to_last_four=f"{i:04d}",
                to_hash=number_hash(f"+1415555{i:04d}"),
                body=f"message {i}",
                send_at=timezone.now() - timedelta(seconds=1),
                dedupe_key=f"bulk:{i}",
            )
            for i in range(300)
        )
    results = []
    barrier = threading.Barrier(2)

    def dispatcher():
        barrier.wait()
        try:
            results.append(messages_dispatch())
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    bodies = Counter(text.body for text in locmem.outbox)
    assert len(bodies) == 300
    assert max(bodies.values()) == 1, [b for b, n in bodies.items() if n > 1][:5]
    assert sum(r.sent for r in results) == 300
    with tenant_scope(org_a):
        assert set(OutboundMessage.objects.values_list("state", flat=True)) == {MessageState.SENT}
    # Both dispatchers really worked side by side (SKIP LOCKED), not one after the other.
    assert all(r.sent > 0 for r in results)
