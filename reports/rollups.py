"""How a range of roll-ups is computed and stored: two ORM aggregate queries, run inside the database.

For local days first..last of one organization:

1. the range's rows are deleted;
   (each query selects exactly the rows of those local days, per time zone,
   so no filter on the computed day is needed: PostgreSQL would push it into
   the scan, misjudge it and pick a slow plan);
2. the visits grouped by local day, department and environment, ONE query
   built with the ORM (values/annotate, TruncDate in each endpoint's time
   zone), into a temporary table, then INSERT INTO reports_dailyrollup
   SELECT ... FROM it (with each row's 90th percentile);
3. INSERT ... SELECT ... FROM (<texts aggregate>) ON CONFLICT DO UPDATE: the
   texts' counts, into the same rows (or new ones for days with texts only).

The aggregates never travel to Python and back: a year of 50 departments is
~36,000 rows, and fetching them, merging them and writing them back with
bulk_create took twice as long as the aggregate itself
(bench/reports_rollup_bench.py). The SQL around the ORM's is generated here
from the model's column names; it runs on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from datetime import date, datetime

from django.db import connection
from django.db.models import (
    BigIntegerField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from connector.models import Visit, VisitState
from reports.models import BUCKET_FIELDS, LOBBY_WAIT_BUCKETS, DailyRollup
from reports.zones import Zones, message_time, visit_time
from sms.models import MessageState, OutboundMessage
from tenants.models import Tenant

REPORTED_STATES = (VisitState.COMPLETED, VisitState.NO_SHOW)
SENT_STATES = (MessageState.SENT, MessageState.DELIVERED)
KEY_COLUMNS = ("tenant_id", "day", "department", "environment")
VISIT_COLUMNS = (
    "visits",
    "completed",
    "no_shows",
    "total_seconds",
    "attendees_sum",
    "lobby_wait_sum_seconds",
    "lobby_wait_count",
    "lobby_wait_max_seconds",
    *BUCKET_FIELDS,
)
MESSAGE_COLUMNS = ("sms_sent", "sms_delivered", "sms_failed")


class DurationSeconds(Func):
    """Whole seconds of a duration: an interval on PostgreSQL, microseconds on SQLite."""

    output_field = BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="CAST(EXTRACT(EPOCH FROM %(expressions)s) AS BIGINT)"
        )

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="CAST((%(expressions)s) / 1000000 AS INTEGER)")


def visit_aggregate(zones: Zones, first: date, last: date) -> QuerySet:
    """ONE query: the finished visits of local days first..last by local day, department and environment."""
    completed = Q(state=VisitState.COMPLETED)
    buckets = {
        name: Count(
            "pk", filter=Q(lobby_wait_seconds__gte=low, **({"lobby_wait_seconds__lt": high} if high else {}))
        )
        for name, low, high in LOBBY_WAIT_BUCKETS
    }
    duration = ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField())
    return (
        Visit.objects.filter(zones.visit_range_q(first, last), state__in=REPORTED_STATES)
        .annotate(
            local_day=zones.day_expression(visit_time()),
            department=F("department_id"),
            environment=zones.environment_expression(),
        )
        .values("local_day", "department", "environment")
        .order_by()
        .annotate(
            visits=Count("pk"),
            completed=Count("pk", filter=completed),
            no_shows=Count("pk", filter=Q(state=VisitState.NO_SHOW)),
            total_seconds=DurationSeconds(
                Sum(duration, filter=completed & Q(started_at__isnull=False, ended_at__isnull=False))
            ),
            attendees_sum=Sum("peak_attendees"),
            lobby_wait_sum_seconds=Sum("lobby_wait_seconds"),
            lobby_wait_count=Count("lobby_wait_seconds"),
            lobby_wait_max_seconds=Max("lobby_wait_seconds"),
            **buckets,
        )
    )


def message_aggregate(zones: Zones, first: date, last: date) -> QuerySet:
    """ONE query: the texts of first..last by local day, department and environment.

    A text's department and environment are its appointment's; texts tied to
    no appointment (help, opt-out) count by UTC day under an empty department
    and environment.
    """
    endpoint = "appointment__endpoint_id"
    return (
        OutboundMessage.objects.filter(state__in=[*SENT_STATES, MessageState.FAILED])
        .annotate(at=message_time())
        .filter(zones.range_q("at", first, last, endpoint, endpointless=True))
        .annotate(
            local_day=zones.day_expression("at", endpoint),
            department=Coalesce(F("appointment__department"), Value("")),
            environment=Coalesce(F("appointment__endpoint__environment"), Value("")),
        )
        .values("local_day", "department", "environment")
        .order_by()
        .annotate(
            sms_sent=Count("pk", filter=Q(state__in=SENT_STATES)),
            sms_delivered=Count("pk", filter=Q(state=MessageState.DELIVERED)),
            sms_failed=Count("pk", filter=Q(state=MessageState.FAILED)),
        )
    )


def p90_sql(alias: str) -> str:
    """The 90th-percentile lobby wait of a row from its histogram columns, as SQL.

    The same grouped-data interpolation as reports.stats.histogram_percentile
    (a test holds the two together).
    """
    quote = connection.ops.quote_name

    def col(name: str) -> str:
        return f"{alias}.{quote(name)}"

    total = "(" + " + ".join(col(name) for name in BUCKET_FIELDS) + ")"
    rank = f"(0.9 * {total})"
    longest = col("lobby_wait_max_seconds")
    whens, below = [], ["0"]
    for name, low, high in LOBBY_WAIT_BUCKETS:
        count = col(name)
        before = "(" + " + ".join(below) + ")"
        if high is None:
            end = f"(CASE WHEN {longest} > {low} THEN {longest} ELSE {low} END)"
        else:
            end = f"(CASE WHEN {longest} >= {low} AND {longest} < {high} THEN {longest} ELSE {high} END)"
        whens.append(
            f"WHEN {count} > 0 AND {before} + {count} >= {rank} "
            f"THEN {low} + ({end} - {low}) * ({rank} - {before}) / {count}"
        )
        below.append(count)
    return f"CAST(FLOOR(CASE {' '.join(whens)} END + 0.5) AS INTEGER)"


def _subquery(queryset: QuerySet) -> tuple[str, tuple]:
    sql, params = queryset.query.sql_with_params()
    return sql, tuple(params)


# Settings for the build's transaction only (set_config(..., true) is SET LOCAL),
# on PostgreSQL. A year of 50 departments is ~36,000 groups: with the default
# 4 MB work_mem the aggregate sorts on disk. JIT compiling the long CASE
# expressions took longer (1.7 s) than the aggregate it was meant to speed up.
# The commit does not wait for the disk: roll-ups are derived data, and a build
# lost in a crash is lost with its bookkeeping, so the next run builds it again.
POSTGRES_SETTINGS = (
    "SELECT set_config('work_mem', '64MB', true), set_config('jit', 'off', true), "
    "set_config('synchronous_commit', 'off', true)",
)


def rollup_replace(
    *, tenant: Tenant, zones: Zones, first: date, last: date, stamp: datetime
) -> tuple[int, int]:
    """Replace the stored roll-ups of local days first..last (call in a transaction): (rows before, rows now)."""
    ops, quote = connection.ops, connection.ops.quote_name
    table = quote(DailyRollup._meta.db_table)
    days = DailyRollup.objects.filter(tenant=tenant, day__gte=first, day__lte=last)
    before = days.delete()[0]
    built_at = ops.adapt_datetimefield_value(stamp)
    all_columns = [*KEY_COLUMNS, *VISIT_COLUMNS, "lobby_wait_p90_seconds", *MESSAGE_COLUMNS, "built_at"]
    names = ", ".join(quote(c) for c in all_columns)

    def g(column: str) -> str:
        return f"g.{quote(column)}"

    # Only quoted column names of these tables and ORM-generated SQL go into the text; values are parameters.
    visits_sql, visits_params = _subquery(visit_aggregate(zones, first, last))
    visit_values = [f"COALESCE({g(c)}, 0)" if c != "lobby_wait_max_seconds" else g(c) for c in VISIT_COLUMNS]
    scratch = quote("reports_rollup_scratch")
    with connection.cursor() as cursor:
        # The aggregate goes into a temporary table first: PostgreSQL runs
        # CREATE TABLE ... AS with parallel workers, INSERT ... SELECT without.
        cursor.execute(f"DROP TABLE IF EXISTS {scratch}")
        cursor.execute(f"CREATE TEMPORARY TABLE {scratch} AS {visits_sql}", visits_params)
        cursor.execute(
            f"INSERT INTO {table} ({names}) "  # noqa: S608
            f"SELECT %s, {g('local_day')}, {g('department')}, {g('environment')}, {', '.join(visit_values)}, "
            f"{p90_sql('g')}, 0, 0, 0, %s FROM {scratch} g",
            (tenant.pk, built_at),
        )
        cursor.execute(f"DROP TABLE {scratch}")
        messages_sql, messages_params = _subquery(message_aggregate(zones, first, last))
        zero_visits = ", ".join("NULL" if c == "lobby_wait_max_seconds" else "0" for c in VISIT_COLUMNS)
        cursor.execute(
            f"INSERT INTO {table} ({names}) "  # noqa: S608
            f"SELECT %s, {g('local_day')}, {g('department')}, {g('environment')}, {zero_visits}, NULL, "
            # WHERE TRUE: SQLite would read "g ON CONFLICT" as the start of a join.
            f"{', '.join(g(c) for c in MESSAGE_COLUMNS)}, %s FROM ({messages_sql}) g WHERE TRUE "
            f"ON CONFLICT ({', '.join(quote(c) for c in KEY_COLUMNS)}) DO UPDATE SET "
            + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in MESSAGE_COLUMNS),
            (tenant.pk, built_at, *messages_params),
        )
    return before, days.count()
