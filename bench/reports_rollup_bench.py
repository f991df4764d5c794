"""Benchmark: the nightly roll-up over 1,000,000 visits (and 10,000,000 visit events) on PostgreSQL.

Fills a throwaway test database with SQL (INSERT ... SELECT generate_series),
then times, in the same run and over the same rows:

- the roll-up as the connector runs it: `reports.services.rollup_build` for the
  whole range (ORM aggregate queries, merge, bulk upsert of the roll-up rows,
  removal of stale rows, bookkeeping), and its aggregate query alone;
- a hand-written SQL GROUP BY computing the same figures (one query, read only).

Visit events are not read by the roll-up (Visit holds the derived figures);
they make the tables realistic, and the late-event check that the schedule
runs every night is timed against them (it goes through an index on
(tenant_id, received_at)).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/connector_reports_bench \\
        .venv/bin/python bench/reports_rollup_bench.py                      # full size
    ... bench/reports_rollup_bench.py --visits 100000 --events 1000000      # quick run

Target (issue 6): the roll-up at most 1.5x the hand-written GROUP BY.
"""

from __future__ import annotations

import argparse
import os
import statistics
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

from django.db import connection, transaction  # noqa: E402

from connector.encryption import encrypt_text  # noqa: E402
from connector.lookup_hash import EHR_USER, lookup_hash  # noqa: E402

BASE = datetime(2025, 1, 1, 12, tzinfo=UTC)
DAYS = 365
ENDPOINTS = [
    ("America/New_York", "production"),
    ("America/New_York", "test"),
    ("Europe/Copenhagen", "production"),
    ("Europe/Copenhagen", "test"),
]


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def seconds(function, repeat: int) -> list[float]:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return timings


class Indexes:
    """Drop a table's secondary indexes and constraints for a bulk load, then put them back (much faster)."""

    def __init__(self, table: str) -> None:
        self.table = table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype IN ('u', 'f')",
                [table],
            )
            self.constraints = cursor.fetchall()
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
                [table, table],
            )
            self.indexes = cursor.fetchall()

    def __enter__(self):
        with connection.cursor() as cursor:
            for name, _ in self.constraints:
                cursor.execute(f'ALTER TABLE {self.table} DROP CONSTRAINT "{name}"')
            for name, _ in self.indexes:
                cursor.execute(f'DROP INDEX "{name}"')
        return self

    def __exit__(self, *exc) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '512MB'")
            for _, definition in self.indexes:
                cursor.execute(definition)
            for name, definition in self.constraints:
                cursor.execute(f'ALTER TABLE {self.table} ADD CONSTRAINT "{name}" {definition}')


def generate(tenant_id: int, endpoint_ids: list[int], visits: int, events: int) -> tuple[float, float]:
    span = DAYS * 86400
    started = time.perf_counter()
    with Indexes("connector_visit"), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO connector_visit (tenant_id, public_id, endpoint_id, appointment_id, conference_id,
                department_id, encounter_id, meeting_id, scheduled_start, scheduled_end, primary_clinician_id,
                primary_clinician_ehr_id, primary_clinician_ehr_id_hash, state, started_at, ended_at,
                lobby_wait_seconds, peak_attendees, created_at, fhir_appointment_id, appointment_status,
                location_reference, time_zone, unscheduled, found_by)
            SELECT %(tenant)s, 'bench-' || i, (%(endpoints)s::bigint[])[1 + i %% 4], 'APPT-' || i, '',
                'DEPT-' || lpad((((i / 4) * 7) %% 50)::text, 2, '0'), '', NULL, s.start, s.start + interval '30 min',
                NULL, (%(ehr_ids)s::text[])[1 + i %% 300], (%(ehr_hashes)s::text[])[1 + i %% 300],
                CASE WHEN i %% 12 = 0 THEN 'no_show' ELSE 'completed' END,
                CASE WHEN i %% 12 = 0 THEN NULL ELSE s.start + make_interval(secs => s.wait) END,
                CASE WHEN i %% 12 = 0 THEN NULL
                     ELSE s.start + make_interval(secs => s.wait + 300 + (i * 37) %% 3300) END,
                CASE WHEN i %% 12 = 0 THEN NULL ELSE s.wait END,
                CASE WHEN i %% 12 = 0 THEN 0 WHEN i %% 9 = 0 THEN 3 ELSE 2 END,
                s.start - interval '7 days', '', '', '', '', false, ''
            FROM generate_series(1, %(n)s) AS i,
                LATERAL (SELECT %(base)s::timestamptz + ((i::bigint * %(span)s) / %(n)s) * interval '1 second'
                                AS start,
                                ((i::bigint * 2654435761) %% 1500)::int AS wait) AS s
            """,
            {
                "tenant": tenant_id,
                "endpoints": endpoint_ids,
                "n": visits,
                "base": BASE,
                "span": span,
                # 300 clinicians, encrypted and hashed as the model stores them (docs/security.md).
                "ehr_ids": [encrypt_text(f"Practitioner/dr-{n}") for n in range(300)],
                "ehr_hashes": [lookup_hash(f"Practitioner/dr-{n}", purpose=EHR_USER) for n in range(300)],
            },
        )
    visits_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM connector_visit")
        first_visit = cursor.fetchone()[0]
    with Indexes("connector_visitevent"), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO connector_visitevent (tenant_id, visit_id, event_id, kind, role, participant_id,
                occurred_at, received_at, source, data)
            SELECT %(tenant)s, %(first)s + (i %% %(n)s), 'ev-' || i,
                (ARRAY['lobby_entered', 'admitted', 'joined', 'joined', 'left', 'left'])[1 + i %% 6],
                (ARRAY['patient', 'patient', 'clinician', 'patient', 'patient', 'clinician'])[1 + i %% 6],
                'participant-' || (i %% 100000), t.at, t.at + interval '2 seconds', 'teams', '{}'::jsonb
            FROM generate_series(1, %(m)s) AS i,
                LATERAL (SELECT %(base)s::timestamptz + ((i::bigint * %(span)s) / %(m)s) * interval '1 second'
                                AS at) AS t
            """,
            {"tenant": tenant_id, "first": first_visit, "n": visits, "m": events, "base": BASE, "span": span},
        )
    events_seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE connector_visit")
        cursor.execute("ANALYZE connector_visitevent")
    return visits_seconds, events_seconds


def hand_written_select(tenant_id: int, lower: datetime, upper: datetime) -> tuple[str, dict]:
    """The same figures as the roll-up, written by hand: one GROUP BY."""
    from reports.models import LOBBY_WAIT_BUCKETS

    buckets = ",\n".join(
        f"count(*) FILTER (WHERE v.lobby_wait_seconds >= {low}"
        + (f" AND v.lobby_wait_seconds < {high})" if high else ")")
        + f" AS {name}"
        for name, low, high in LOBBY_WAIT_BUCKETS
    )
    sql = f"""
        SELECT (coalesce(v.started_at, v.scheduled_start, v.created_at) AT TIME ZONE e.time_zone)::date AS day,
               v.department_id AS department, e.environment,
               count(*) AS visits, count(*) FILTER (WHERE v.state = 'completed') AS completed,
               count(*) FILTER (WHERE v.state = 'no_show') AS no_shows,
               extract(epoch FROM sum(v.ended_at - v.started_at) FILTER (WHERE v.state = 'completed'))::bigint
                   AS total_seconds,
               sum(v.peak_attendees) AS attendees_sum, sum(v.lobby_wait_seconds) AS lobby_wait_sum_seconds,
               count(v.lobby_wait_seconds) AS lobby_wait_count, max(v.lobby_wait_seconds) AS lobby_wait_max_seconds,
               {buckets}
        FROM connector_visit v JOIN connector_fhirendpoint e ON e.id = v.endpoint_id
        WHERE v.tenant_id = %(tenant)s AND v.state IN ('completed', 'no_show')
          AND (v.started_at >= %(lower)s AND v.started_at < %(upper)s
               OR v.started_at IS NULL AND v.scheduled_start >= %(lower)s AND v.scheduled_start < %(upper)s
               OR v.started_at IS NULL AND v.scheduled_start IS NULL
                  AND v.created_at >= %(lower)s AND v.created_at < %(upper)s)
        GROUP BY 1, 2, 3
    """
    return sql, {"tenant": tenant_id, "lower": lower, "upper": upper}


def _settings(cursor, tuned: bool) -> None:
    from reports.rollups import POSTGRES_SETTINGS

    # rollup_build's own session settings (work_mem, no JIT), or the server's defaults.
    for setting in POSTGRES_SETTINGS if tuned else ():
        cursor.execute(setting)


def hand_written_sql(tenant_id: int, lower: datetime, upper: datetime, *, tuned: bool) -> list[tuple]:
    """Read only: the hand-written GROUP BY, every row fetched."""
    sql, params = hand_written_select(tenant_id, lower, upper)
    with transaction.atomic(), connection.cursor() as cursor:
        _settings(cursor, tuned)
        cursor.execute(sql, params)
        return cursor.fetchall()


def hand_written_job(
    tenant_id: int, lower: datetime, upper: datetime, first: date, last: date, *, tuned: bool
):
    """The whole job by hand: delete the range, INSERT ... SELECT the GROUP BY (with the p90), commit."""
    from reports.models import BUCKET_FIELDS
    from reports.rollups import p90_sql

    select, params = hand_written_select(tenant_id, lower, upper)
    counts = [
        "visits", "completed", "no_shows", "total_seconds", "attendees_sum", "lobby_wait_sum_seconds",
        "lobby_wait_count", "lobby_wait_max_seconds", *BUCKET_FIELDS,
    ]  # fmt: skip
    columns = ["tenant_id", "day", "department", "environment", *counts, "lobby_wait_p90_seconds",
               "sms_sent", "sms_delivered", "sms_failed", "built_at"]  # fmt: skip
    values = ", ".join(f"coalesce(g.{c}, 0)" if c != "lobby_wait_max_seconds" else f"g.{c}" for c in counts)
    with transaction.atomic(), connection.cursor() as cursor:
        _settings(cursor, tuned)
        cursor.execute(
            "DELETE FROM reports_dailyrollup WHERE tenant_id = %s AND day BETWEEN %s AND %s",
            [tenant_id, first, last],
        )
        cursor.execute(
            f"INSERT INTO reports_dailyrollup ({', '.join(columns)}) "
            f"SELECT %(tenant)s, g.day, g.department, g.environment, {values}, {p90_sql('g')}, 0, 0, 0, now() "
            f"FROM ({select}) g WHERE g.day BETWEEN %(first)s AND %(last)s",
            params | {"first": first, "last": last},
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the test database (keepdb) for another run")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database (a test_ copy of it is created and dropped).")

    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=args.keep, serialize=False
    )
    try:
        run(args)
    finally:
        if not args.keep:
            connection.creation.destroy_test_db(old_name, verbosity=0)


def run(args) -> None:
    from connector.models import EndpointStatus, FhirEndpoint, Visit
    from reports.models import DailyRollup
    from reports.rollups import visit_aggregate
    from reports.services import _days_with_late_data, rollup_build
    from reports.zones import zones_for_tenant
    from tenants.models import Tenant, TenantStatus
    from tenants.scoping import tenant_scope

    tenant, _ = Tenant.objects.get_or_create(
        microsoft_tenant_id="44444444-4444-4444-8444-444444444444",
        defaults={
            "name": "Bench Health",
            "ehr_vendor": "epic",
            "data_region": "americas",
            "status": TenantStatus.ENABLED,
        },
    )
    with tenant_scope(tenant):
        endpoint_ids = []
        for i, (zone, environment) in enumerate(ENDPOINTS):
            endpoint, _ = FhirEndpoint.objects.get_or_create(
                tenant=tenant,
                base_url=f"https://fhir{i}.bench.example/R4",
                defaults={
                    "environment": environment,
                    "label": f"bench {i}",
                    "time_zone": zone,
                    "status": EndpointStatus.APPROVED,
                },
            )
            endpoint_ids.append(endpoint.pk)
        present = Visit.objects.count()
    if present != args.visits:
        print(f"generating {args.visits:,} visits and {args.events:,} visit events ...", flush=True)
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE connector_visitevent, connector_visit CASCADE")
        visits_s, events_s = generate(tenant.pk, endpoint_ids, args.visits, args.events)
        print(f"  visits {visits_s:.1f} s, events {events_s:.1f} s (with their indexes)", flush=True)

    first, last = (BASE - timedelta(days=1)).date(), (BASE + timedelta(days=DAYS + 1)).date()
    with tenant_scope(tenant):
        zones = zones_for_tenant()
        lower, upper = zones.utc_window(first, last)

        def orm_build():
            return rollup_build(tenant=tenant, first=first, last=last)

        def orm_query():
            return list(visit_aggregate(zones, first, last))

        def empty_rollups():
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM reports_dailyrollup")
                cursor.execute("VACUUM reports_dailyrollup")

        timings: dict[str, list[float]] = {}

        def timed(name: str, function) -> None:
            timings.setdefault(name, []).extend(seconds(function, 1))

        for _ in range(args.repeat):  # interleaved, so caches and load treat all alike
            empty_rollups()
            timed("build_empty", orm_build)  # nothing stored yet
            timed("build", orm_build)  # the range replaced, as every night
            for tuned in (False, True):
                timed(
                    f"job_{tuned}",
                    lambda t=tuned: hand_written_job(tenant.pk, lower, upper, first, last, tuned=t),
                )
                timed(f"sql_{tuned}", lambda t=tuned: hand_written_sql(tenant.pk, lower, upper, tuned=t))
            timed("query", orm_query)
        orm_build()
        rows = DailyRollup.objects.count()
        groups_orm, groups_sql = len(orm_query()), len(hand_written_sql(tenant.pk, lower, upper, tuned=True))

        since = datetime.now(UTC) - timedelta(days=1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(received_at) FROM connector_visitevent")
            newest = cursor.fetchone()[0]
        late_since = newest - timedelta(days=1)
        late = seconds(lambda: _days_with_late_data(zones, late_since), args.repeat)
        late_days = _days_with_late_data(zones, late_since)
        nothing = seconds(lambda: _days_with_late_data(zones, since), args.repeat)
        total = sum(DailyRollup.objects.values_list("visits", flat=True))

    median = {name: statistics.median(values) for name, values in timings.items()}
    # The reference is the faster of the hand-written runs: server defaults or rollup_build's settings.
    hand_tuned = "tuned" if median["sql_True"] <= median["sql_False"] else "defaults"
    hand = min(median["sql_True"], median["sql_False"])
    job = min(median["job_True"], median["job_False"])
    print(
        f"\ndatabase: PostgreSQL {connection.pg_version // 10000}; {args.visits:,} visits, {args.events:,} events; "
        f"{DAYS} days, 4 endpoints in 2 time zones, 50 departments; {os.cpu_count()} CPUs"
    )
    print(
        f"roll-up rows: {rows:,} (visits counted in them: {total:,}); groups ORM {groups_orm:,} / SQL {groups_sql:,}"
    )
    print(f"medians of {args.repeat} runs, interleaved (s):")
    lines = [
        ("rollup_build, whole range, into an empty table", "build_empty"),
        ("rollup_build, whole range again (replacing it)", "build"),
        ("hand-written job, DELETE + INSERT..SELECT, server defaults", "job_False"),
        ("hand-written job, DELETE + INSERT..SELECT, rollup_build's settings", "job_True"),
        ("ORM aggregate query alone, rows fetched", "query"),
        ("hand-written GROUP BY alone, rows fetched, server defaults", "sql_False"),
        ("hand-written GROUP BY alone, rows fetched, rollup_build's settings", "sql_True"),
    ]
    for label, name in lines:
        print(f"  {label:<68} {median[name]:6.2f}  ({_runs(timings[name])})")

    def verdict(ratio: float) -> str:
        return "met" if ratio <= 1.5 else "NOT met"

    for label, ratio in (
        (f"rollup_build / hand-written GROUP BY ({hand_tuned})", median["build"] / hand),
        ("rollup_build / hand-written job (faster settings)", median["build"] / job),
        (f"ORM aggregate query / hand-written GROUP BY ({hand_tuned})", median["query"] / hand),
    ):
        print(f"ratio {label:<58} {ratio:5.2f}x  (target <= 1.5x: {verdict(ratio)})")
    print(
        f"late-event check (events received in the last day -> {len(late_days)} day(s)): "
        f"{statistics.median(late) * 1000:.1f} ms; with nothing new: {statistics.median(nothing) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
