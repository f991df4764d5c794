"""Benchmark: the usage report page and its API answer over a month of roll-ups for 50 departments.

Creates a throwaway test database, an organization with two endpoints and a
month of daily roll-ups (30 days x departments x 2 environments), signs in a
viewer, and times the full Django request (middleware, session, queries,
template, charts) in-process. Prints query counts at two sizes: they must not
grow with the rows. Also times the other two reports over a month of visits.

    .venv/bin/python bench/reports_page_bench.py                                  # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector_page \\
        .venv/bin/python bench/reports_page_bench.py

Target (issue 6): at most 200 ms with 50 departments.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connector.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

TENANT_ID = "55555555-5555-4555-8555-555555555555"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def fill(tenant, endpoints, departments: int, today: date, visits_per_day: int) -> None:
    """A month of roll-ups for `departments` departments in both environments, and of visits and texts."""
    from connector.models import Visit
    from reports.models import BUCKET_FIELDS, DailyRollup, ReportBuild
    from reports.stats import histogram_percentile
    from sms.models import Appointment, OutboundMessage, PhoneNumber
    from tenants.scoping import tenant_scope

    rng = random.Random(departments)  # noqa: S311 - benchmark data
    with tenant_scope(tenant):
        DailyRollup.objects.all().delete()
        rows = []
        for offset in range(1, 31):
            day = today - timedelta(days=offset)
            for d in range(departments):
                for environment in ("production", "test"):
                    counts = [rng.randint(0, 4) for _ in BUCKET_FIELDS]
                    visits = sum(counts) + rng.randint(0, 3)
                    rows.append(
                        DailyRollup(
                            tenant=tenant,
                            day=day,
                            department=f"DEPT-{d:02d}",
                            environment=environment,
                            visits=visits,
                            completed=sum(counts),
                            no_shows=visits - sum(counts),
                            total_seconds=sum(counts) * 1100,
                            attendees_sum=visits * 2,
                            lobby_wait_sum_seconds=sum(counts) * 240,
                            lobby_wait_count=sum(counts),
                            lobby_wait_max_seconds=3900,
                            lobby_wait_p90_seconds=histogram_percentile(counts, 0.9, 3900),
                            sms_sent=visits * 2,
                            sms_delivered=visits * 2 - 1 if visits else 0,
                            sms_failed=1 if visits else 0,
                            **dict(zip(BUCKET_FIELDS, counts, strict=True)),
                        )
                    )
        DailyRollup.objects.bulk_create(rows, batch_size=1000)
        ReportBuild.objects.update_or_create(
            tenant=tenant,
            defaults={"last_built_day": today - timedelta(days=1), "built_at": datetime.now(UTC)},
        )
        if visits_per_day and not Visit.objects.exists():
            number = PhoneNumber.objects.create(tenant=tenant, number="+12025550199", state="active")
            visits, appointments = [], []
            for offset in range(1, 31):
                day = datetime.combine(today - timedelta(days=offset), datetime.min.time(), tzinfo=UTC)
                for n in range(visits_per_day):
                    start = day + timedelta(hours=13, minutes=n % 600)
                    visits.append(
                        Visit(
                            tenant=tenant,
                            public_id=f"b{offset:02d}{n:05d}",
                            endpoint=endpoints[n % 2],
                            appointment_id=f"A{offset:02d}{n:05d}",
                            department_id=f"DEPT-{n % 50:02d}",
                            scheduled_start=start,
                            scheduled_end=start + timedelta(minutes=30),
                            state="completed",
                            started_at=start,
                            ended_at=start + timedelta(minutes=17),
                            lobby_wait_seconds=n % 900,
                            peak_attendees=2,
                            primary_clinician_ehr_id="Practitioner/x",
                        )
                    )
                    appointments.append(
                        Appointment(
                            tenant=tenant,
                            endpoint=endpoints[n % 2],
                            external_id=f"A{offset:02d}{n:05d}",
                            start=start,
                            end=start + timedelta(minutes=30),
                            state_as_of=start,
                            department=f"DEPT-{n % 50:02d}",
                            phone_last_four="1234",
                        )
                    )
            Visit.objects.bulk_create(visits, batch_size=1000)
            Appointment.objects.bulk_create(appointments, batch_size=1000)
            messages = [
                OutboundMessage(
                    tenant=tenant,
                    appointment=a,
                    phone_number=number,
                    kind="reminder",
                    to_last_four="1234",
                    to_hash="x",
                    send_at=a.start - timedelta(hours=1),
                    sent_at=a.start - timedelta(hours=1),
                    state="delivered",
                    provider="bench",
                    dedupe_key=f"m{a.pk}",
                )
                for a in Appointment.objects.all()
            ]
            OutboundMessage.objects.bulk_create(messages, batch_size=1000)


def measure(client: Client, url: str, runs: int) -> tuple[float, float, int]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        timings.append(time.perf_counter() - start)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return percentile(timings, 0.5) * 1000, percentile(timings, 0.95) * 1000, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--visits-per-day", type=int, default=300, help="for the visits and SMS reports")
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=False, serialize=False
    )
    try:
        run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(args) -> None:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from connector.models import EndpointStatus, FhirEndpoint
    from tenants.models import Membership, Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    tenant = Tenant.objects.create(
        name="Bench Health",
        microsoft_tenant_id=TENANT_ID,
        ehr_vendor="epic",
        data_region="americas",
        status=TenantStatus.ENABLED,
    )
    viewer = get_user_model().objects.create_user(username="bench-viewer")
    with tenant_scope(tenant):
        Membership.objects.create(tenant=tenant, user=viewer, role="viewer")
        endpoints = [
            FhirEndpoint.objects.create(
                tenant=tenant,
                base_url=f"https://fhir{i}.bench.example/R4",
                environment=env,
                label=env,
                time_zone=zone,
                status=EndpointStatus.APPROVED,
            )
            for i, (env, zone) in enumerate(
                [("production", "America/New_York"), ("test", "Europe/Copenhagen")]
            )
        ]
    client = Client()
    client.force_login(viewer, backend="django.contrib.auth.backends.ModelBackend")
    today = timezone.localdate()
    urls = {
        "usage page": "/portal/reports/usage/?period=30",
        "usage API": f"/api/v1/tenants/{TENANT_ID}/reports/usage/?period=30",
    }
    print(f"database: {connection.vendor}; {args.runs} requests each after 3 warm-up ones")
    results = {}
    for departments in (10, 50):
        fill(tenant, endpoints, departments, today, 0)
        rows = departments * 2 * 30
        for name, url in urls.items():
            p50, p95, queries = measure(client, url, args.runs)
            results[(name, departments)] = (p50, p95, queries)
            print(
                f"  {name:<11} {departments:>2} departments ({rows:>5,} roll-up rows): "
                f"p50 {p50:6.1f} ms, p95 {p95:6.1f} ms, {queries} queries"
            )
    for name in urls:
        same = results[(name, 10)][2] == results[(name, 50)][2]
        print(
            f"  {name}: queries {'do not grow' if same else 'GROW'} with the rows; "
            f"target p95 <= 200 ms with 50 departments: {'met' if results[(name, 50)][1] <= 200 else 'NOT met'}"
        )
    fill(tenant, endpoints, 50, today, args.visits_per_day)
    print(f"with {args.visits_per_day * 30:,} visits and as many texts in the month:")
    for name, url in {
        "virtual appointments page": "/portal/reports/virtual-appointments/?period=30",
        "virtual appointments API": f"/api/v1/tenants/{TENANT_ID}/reports/virtual-appointments/?period=30",
        "SMS page": "/portal/reports/sms/?period=30",
        "SMS API": f"/api/v1/tenants/{TENANT_ID}/reports/sms/?period=30",
        "usage page": "/portal/reports/usage/?period=30",
    }.items():
        p50, p95, queries = measure(client, url, args.runs)
        print(f"  {name:<26} p50 {p50:6.1f} ms, p95 {p95:6.1f} ms, {queries} queries")
    start = time.perf_counter()
    response = client.get(f"/api/v1/tenants/{TENANT_ID}/reports/virtual-appointments/?period=30&format=csv")
    size = sum(len(chunk) for chunk in response.streaming_content)
    elapsed = (time.perf_counter() - start) * 1000
    rows = args.visits_per_day * 30
    print(f"  virtual appointments CSV, {rows:,} rows: {elapsed:.0f} ms, {size / 1024:.0f} KiB streamed")


if __name__ == "__main__":
    main()
