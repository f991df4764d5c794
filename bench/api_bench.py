"""Benchmark: the visits API over a month of visits, and the live status a wall board polls.

Creates a throwaway test database and an organization, fills a month with 1,000 and then
10,000 visits (four events each) plus 40 visits happening now (patients in lobbies, people
connected), and times full Django requests in-process with a read-only API token:

- the visits list (first page, a month in the department's zone), a later page (cursor),
  the list filtered by state, one visit's detail, the event feed (1,000 events a page);
- the live status (200, body computed) and the same with `If-None-Match` (304, one number read).

Query counts are printed at both sizes: they must not grow with the rows. Every figure is
also given as a ratio to a reference request through the same stack (token, tenant,
middleware): `GET /api/v1/tenants/<id>/`, a one-query view.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector_bench \\
        .venv/bin/python bench/api_bench.py [--runs 40]
"""

from __future__ import annotations

import argparse
import os
import random
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

from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

TENANT_ID = "66666666-6666-4666-8666-666666666666"
LIVE_VISITS = 40


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def fill(tenant, endpoint, visits: int, made: int) -> int:
    """Add visits (a month, four events each) until there are `visits`; returns the new total."""
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from connector.models import Visit, VisitEvent, VisitState
    from connector.services.visit_feed import visit_feed_take
    from tenants.scoping import tenant_scope

    rng = random.Random(visits)  # noqa: S311 - benchmark data
    now = timezone.now()
    todo = visits - made
    with tenant_scope(tenant), transaction.atomic():
        rows = []
        for n in range(made, visits):
            start = now - timedelta(days=rng.uniform(1, 30))
            done = rng.random() < 0.85
            rows.append(
                Visit(
                    tenant=tenant,
                    endpoint=endpoint,
                    public_id=get_random_string(24),
                    appointment_id=f"CSN-{n}",
                    department_id=f"DEPT-{n % 20:02d}",
                    scheduled_start=start,
                    scheduled_end=start + timedelta(minutes=30),
                    state=VisitState.COMPLETED if done else VisitState.NO_SHOW,
                    started_at=start + timedelta(minutes=3) if done else None,
                    ended_at=start + timedelta(minutes=25) if done else None,
                    lobby_wait_seconds=180 if done else None,
                )
            )
        created = Visit.objects.bulk_create(rows, batch_size=1000)
        events = []
        for visit in created:
            if visit.started_at is None:
                continue
            for i, (kind, role, who, minutes) in enumerate(
                [
                    ("lobby_entered", "patient", "p", 0),
                    ("joined", "clinician", "c", 2),
                    ("joined", "patient", "p", 3),
                    ("left", "patient", "p", 25),
                ]
            ):
                events.append(
                    VisitEvent(
                        tenant=tenant,
                        visit=visit,
                        event_id=f"bench:{visit.public_id}:{i}",
                        kind=kind,
                        role=role,
                        participant_id=f"{who}-{visit.pk}",
                        occurred_at=visit.scheduled_start + timedelta(minutes=minutes),
                        source="demo",
                    )
                )
        last = visit_feed_take(tenant_id=tenant.pk, count=len(events))
        for position, event in enumerate(events, start=last - len(events) + 1):
            event.seq = position
        VisitEvent.objects.bulk_create(events, batch_size=2000)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return made + todo


def live_visits(tenant, endpoint) -> None:
    """Visits happening now: half with a patient in the lobby, half in progress."""
    from django.utils import timezone

    from connector.services.visits import event_record, visit_get_or_create
    from tenants.scoping import tenant_scope

    now = timezone.now()
    with tenant_scope(tenant):
        for n in range(LIVE_VISITS):
            visit = visit_get_or_create(
                endpoint=endpoint,
                appointment_id=f"LIVE-{n}",
                department_id=f"DEPT-{n % 20:02d}",
                scheduled_start=now,
                scheduled_end=now + timedelta(minutes=30),
            )
            steps = [("lobby_entered", "patient", "p")]
            if n % 2:
                steps += [("joined", "clinician", "c"), ("joined", "patient", "p")]
            for i, (kind, role, who) in enumerate(steps):
                event_record(
                    visit=visit,
                    event_id=f"live:{visit.public_id}:{i}",
                    kind=kind,
                    role=role,
                    participant_id=f"{who}-live-{n}",
                    occurred_at=now - timedelta(minutes=10 - i),
                    source="demo",
                )


def measure(client: Client, url: str, runs: int, expect: int = 200, **headers) -> tuple[float, float, int]:
    for _ in range(3):
        assert client.get(url, **headers).status_code == expect, url
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url, **headers)
        timings.append(time.perf_counter() - start)
        assert response.status_code == expect, url
    with CaptureQueriesContext(connection) as queries:
        client.get(url, **headers)
    return percentile(timings, 0.5) * 1000, percentile(timings, 0.95) * 1000, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument(
        "--memory-cache",
        action="store_true",
        help="keep rate-limit counters in process memory (as Redis would) instead of the configured cache",
    )
    args = parser.parse_args()
    setup_test_environment()
    if args.memory_cache:
        from django.test.utils import override_settings

        override_settings(
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        ).enable()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    try:
        run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(args) -> None:
    from django.conf import settings

    from connector.api.throttles import ApiRateThrottle
    from connector.models import EndpointStatus, FhirEndpoint, Visit
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope
    from tenants.services import api_token_create

    ApiRateThrottle.THROTTLE_RATES = {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "api": "1000000/hour",
    }
    tenant = Tenant.objects.create(
        name="Bench Health",
        microsoft_tenant_id=TENANT_ID,
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant,
            base_url="https://fhir.bench.example/R4",
            environment="production",
            label="Main",
            time_zone="America/New_York",
            status=EndpointStatus.APPROVED,
        )
    token = api_token_create(tenant=tenant, name="bench", scope="read", created_by=None).raw
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    base = f"/api/v1/tenants/{TENANT_ID}"
    live_visits(tenant, endpoint)

    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    print(
        f"database: {connection.vendor}; cache (rate limits): {cache}; {args.runs} requests each after 3 warm-ups"
    )
    results: dict[tuple[str, int], tuple[float, float, int]] = {}
    made = 0
    for size in (1_000, 10_000):
        made = fill(tenant, endpoint, size, made)
        with tenant_scope(tenant):
            a_month = Visit.objects.count()
        # A page of 50 from row 501 on, reached by the cursor.
        cursor_page = client.get(f"{base}/visits/", {"page_size": 500}).json()["next"].replace("=500", "=50")
        live = client.get(f"{base}/live-status/")  # after the fill, which moved the live version
        etag = live["ETag"]
        assert len(live.json()["visits"]) == LIVE_VISITS
        urls = {
            "reference (tenant detail)": (f"{base}/", 200, {}),
            "visits list, a month": (f"{base}/visits/?tz=America/New_York&from={_month_ago()}", 200, {}),
            "visits list, later page": (cursor_page.replace("http://testserver", ""), 200, {}),
            "visits list, completed": (f"{base}/visits/?state=completed&ordering=-time", 200, {}),
            "visits list, waiting": (f"{base}/visits/?state=waiting", 200, {}),
            "visit detail": (f"{base}/visits/{_any_visit(tenant)}/", 200, {}),
            "event feed, 1,000 a page": (f"{base}/visit-events/?since=0&limit=1000", 200, {}),
            "live status, 200": (f"{base}/live-status/", 200, {}),
            "live status, 304": (f"{base}/live-status/", 304, {"HTTP_IF_NONE_MATCH": etag}),
        }
        print(f"{a_month:,} visits ({LIVE_VISITS} of them live):")
        for name, (url, expect, headers) in urls.items():
            results[(name, size)] = measure(client, url, args.runs, expect, **headers)
            p50, p95, queries = results[(name, size)]
            reference = results[("reference (tenant detail)", size)][1]
            print(
                f"  {name:<27} p50 {p50:6.1f} ms, p95 {p95:6.1f} ms, {queries:>2} queries, "
                f"p95 {p95 / reference:4.1f}x the reference"
            )
    grown = [
        name
        for name, size in results
        if size == 1_000 and results[(name, 1_000)][2] != results[(name, 10_000)][2]
    ]
    print(
        f"queries per request: {'GROW for ' + ', '.join(grown) if grown else 'the same at 1,000 and 10,000 visits'}"
    )
    p95_304 = results[("live status, 304", 10_000)][1]
    print(
        f"live status 304: p95 {p95_304:.1f} ms ({'a few milliseconds' if p95_304 < 10 else 'SLOWER than 10 ms'})"
    )


def _month_ago() -> str:
    from django.utils import timezone

    return (timezone.localdate() - timedelta(days=30)).isoformat()


def _any_visit(tenant) -> str:
    from connector.models import Visit
    from tenants.scoping import tenant_scope

    with tenant_scope(tenant):
        return (
            Visit.objects.filter(started_at__isnull=False)
            .order_by("pk")
            .values_list("public_id", flat=True)[0]
        )


if __name__ == "__main__":
    main()
