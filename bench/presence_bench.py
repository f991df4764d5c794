"""Benchmark: what presence costs the pages that poll and beat (connector/services/presence.py).

In a throwaway database (PostgreSQL with DATABASE_URL, SQLite otherwise), one visit with a
clinician and a patient connected and a realistic trail of events (lobby, admit, device test):

1. Status read: `presence_for_display` (what the console, lobby and meeting polls run every
   3 s; it now sweeps the visit first) against the reference, the same read without the sweep
   (`visit_presence` and the guest labels); ms per read, the ratio, queries per read.
2. Heartbeat: `heartbeat_record` (what each open visit page sends every 15 s: an upsert, a
   sweep, the participant's presence) against the reference, one status read; ms per beat,
   the ratio, queries per beat.
3. Scheduled sweep: `presence_sweep` over N visits each with one silent participant.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector .venv/bin/python bench/presence_bench.py
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

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402


def _setup(visits: int):
    from connector.models import EndpointStatus, EventKind, EventSource, FhirEndpoint, Heartbeat
    from connector.services.visits import event_record, visit_get_or_create
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    tenant = Tenant.objects.create(
        name="Bench Health",
        microsoft_tenant_id="33333333-3333-4333-8333-333333333333",
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    made = []
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant,
            base_url="https://fhir.example.org/R4",
            environment="test",
            label="Main",
            status=EndpointStatus.APPROVED,
        )
        now = timezone.now()
        for n in range(visits):
            visit = visit_get_or_create(endpoint=endpoint, appointment_id=f"A-{n}", encounter_id=f"enc-{n}")
            trail = [
                (EventKind.LOBBY_ENTERED, "patient", "p-1"),
                (EventKind.DEVICE_TEST, "patient", "p-1"),
                (EventKind.JOINED, "clinician", "c-1"),
                (EventKind.ADMITTED, "patient", "p-1"),
                (EventKind.JOINED, "patient", "p-1"),
            ]
            for i, (kind, role, pid) in enumerate(trail):
                event_record(
                    visit=visit,
                    event_id=f"bench:{n}:{i}",
                    kind=kind,
                    role=role,
                    participant_id=pid,
                    occurred_at=now - timedelta(minutes=5) + timedelta(seconds=i),
                    source=EventSource.DEMO,
                )
            for role, pid in (("clinician", "c-1"), ("patient", "p-1")):
                Heartbeat.objects.create(
                    tenant=tenant, visit=visit, participant_id=pid, role=role, last_seen_at=now
                )
            made.append(visit)
    return tenant, made


def _timed(fn, rounds: int) -> tuple[float, float]:
    """(ms per call, queries per call)"""
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        elapsed = time.perf_counter() - start
    return elapsed * 1000 / rounds, len(queries) / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--visits", type=int, default=200)
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    try:
        from connector.models import Heartbeat
        from connector.services.presence import heartbeat_record, presence_sweep
        from connector.services.visits import visit_presence
        from connector.visits.pages.common import _labels_for, presence_for_display
        from tenants.scoping import all_tenants, tenant_scope

        tenant, visits = _setup(args.visits)
        visit = visits[0]
        with tenant_scope(tenant):
            reference_ms, reference_q = _timed(
                lambda: (_labels_for(visit), visit_presence(visit=visit)), args.rounds
            )
            read_ms, read_q = _timed(lambda: presence_for_display(visit), args.rounds)
            beat_ms, beat_q = _timed(
                lambda: heartbeat_record(visits=[visit], role="patient", participant_id="p-1"), args.rounds
            )
        with all_tenants():
            Heartbeat.objects.filter(participant_id="p-1").update(
                last_seen_at=timezone.now() - timedelta(minutes=1)
            )
        start = time.perf_counter()
        marked = presence_sweep()
        sweep_ms = (time.perf_counter() - start) * 1000
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"database: {connection.vendor}; rounds: {args.rounds}; visits: {args.visits}")
    print(
        f"status read: {read_ms:.2f} ms, {read_q:.0f} queries (reference without the sweep: "
        f"{reference_ms:.2f} ms, {reference_q:.0f} queries); ratio {read_ms / reference_ms:.2f}"
    )
    print(
        f"heartbeat: {beat_ms:.2f} ms, {beat_q:.0f} queries (reference, one status read: {reference_ms:.2f} ms); "
        f"ratio {beat_ms / reference_ms:.2f}; every 15 s per open page"
    )
    print(f"scheduled sweep: {marked} silent participants marked as left in {sweep_ms:.0f} ms")


if __name__ == "__main__":
    main()
