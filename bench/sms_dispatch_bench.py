"""Benchmark: dispatcher throughput to the in-memory SMS backend.

Creates N due messages in a throwaway database (PostgreSQL with DATABASE_URL,
SQLite otherwise), then times `messages_dispatch()` sending them all: claim,
checks (consent, opt-out, toll-free hold, pacing), render, send, record.
The reference, in the same run, is the bare cost of claiming and marking the
same number of rows sent with one UPDATE each (the database floor).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/sms_dispatch_bench.py
Target (issue 5): at least 500 messages/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["SMS_BACKEND"] = "sms.backends.locmem.LocmemSmsBackend"
os.environ.setdefault("SMS_RATE_PER_NUMBER", "100000")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402


def make_messages(count: int):
    from sms.models import OutboundMessage, PhoneNumber
    from sms.phones import number_hash
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope
    from tests.support.sms import sms_ready_endpoint

    tenant = Tenant.objects.create(
        name="Bench",
        microsoft_tenant_id="44444444-4444-4444-8444-444444444444",
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    sms_ready_endpoint(tenant)
    with tenant_scope(tenant):
        number = PhoneNumber.objects.get()
        due = timezone.now() - timedelta(seconds=1)
        OutboundMessage.objects.bulk_create(
            [
                OutboundMessage(
                    tenant=tenant,
                    phone_number=number,
                    kind="guest_invite",
                    to=f"+1415555{i % 10000:04d}",
                    to_last_four=f"{i % 10000:04d}",
                    to_hash=number_hash(f"+1415555{i % 10000:04d}"),
                    body=f"Bench message {i}",
                    send_at=due,
                    dedupe_key=f"bench:{i}",
                )
                for i in range(count)
            ],
            batch_size=1000,
        )
    return tenant


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    setup_test_environment()
    from django.conf import settings

    settings.SMS_RATE_PER_NUMBER = 100000
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    try:
        from sms.backends import locmem
        from sms.models import OutboundMessage
        from sms.services.dispatch import messages_dispatch
        from tenants.scoping import all_tenants

        make_messages(args.messages)
        locmem.reset()
        start = time.perf_counter()
        result = messages_dispatch(batch=500, max_batches=10_000)
        dispatch_seconds = time.perf_counter() - start
        assert result.sent == args.messages and len(locmem.outbox) == args.messages, result

        # Reference: the database floor, one UPDATE per row, on the same rows.
        with all_tenants():
            ids = list(OutboundMessage.objects.values_list("pk", flat=True))
            start = time.perf_counter()
            for pk in ids:
                OutboundMessage.objects.filter(pk=pk).update(state="sent", sent_at=timezone.now())
            floor_seconds = time.perf_counter() - start
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    rate = args.messages / dispatch_seconds
    floor = args.messages / floor_seconds
    print(f"database: {connection.vendor}; messages: {args.messages}")
    print(f"dispatcher to the locmem backend: {rate:.0f} messages/s ({dispatch_seconds:.2f} s)")
    print(
        f"reference, one UPDATE per message: {floor:.0f} rows/s; dispatcher/reference ratio {rate / floor:.2f}"
    )
    print(f"target >= 500 messages/s: {'met' if rate >= 500 else 'NOT met'}")


if __name__ == "__main__":
    main()
