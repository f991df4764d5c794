"""Local days in the departments' time zones, as SQL expressions and range filters.

A department's time zone is its FHIR endpoint's. An organization has a few
endpoints and usually one or two time zones, so every per-row expression here
is a CASE over the endpoint IDs of each zone: no join, and one query however
many zones there are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from django.db.models import Case, CharField, DateField, Expression, F, Q, Value, When
from django.db.models.functions import Coalesce, TruncDate

from connector.models import FhirEndpoint

# When a visit happened: its start, or for a no-show its scheduled start.
VISIT_TIME = ("started_at", "scheduled_start", "created_at")
# When a text happened: when it was handed to the provider, or when it was due.
MESSAGE_TIME = ("sent_at", "send_at")


def visit_time() -> Coalesce:
    return Coalesce(*VISIT_TIME)


def visit_time_between(lower: datetime, upper: datetime) -> Q:
    """lower <= visit time < upper, column by column.

    The same rows as filtering the COALESCE, but PostgreSQL estimates each
    column from its statistics (a COALESCE range gets a blind guess, and with
    it a sort spilling to disk instead of a hash aggregate), and an index on
    started_at can serve it.
    """
    return (
        Q(started_at__gte=lower, started_at__lt=upper)
        | Q(started_at__isnull=True, scheduled_start__gte=lower, scheduled_start__lt=upper)
        | Q(
            started_at__isnull=True, scheduled_start__isnull=True, created_at__gte=lower, created_at__lt=upper
        )
    )


def message_time() -> Coalesce:
    return Coalesce(*MESSAGE_TIME)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def local_midnight(day: date, zone_name: str) -> datetime:
    """The instant a local day begins, in UTC."""
    return datetime.combine(day, time.min, tzinfo=zone(zone_name)).astimezone(UTC)


@dataclass
class EndpointInfo:
    pk: int
    time_zone: str
    environment: str
    label: str


@dataclass
class Zones:
    """The organization's endpoints, grouped by time zone."""

    endpoints: dict[int, EndpointInfo] = field(default_factory=dict)

    @property
    def by_zone(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = defaultdict(list)
        for info in self.endpoints.values():
            groups[info.time_zone or "UTC"].append(info.pk)
        return {name: sorted(pks) for name, pks in sorted(groups.items())}

    @property
    def names(self) -> list[str]:
        return list(self.by_zone) or ["UTC"]

    def utc_window(self, first: date, last: date) -> tuple[datetime, datetime]:
        """From the earliest local start of `first` to the latest local end of `last` over all zones."""
        names = [*self.names, "UTC"]
        return (
            min(local_midnight(first, name) for name in names),
            max(local_midnight(last + timedelta(days=1), name) for name in names),
        )

    def day_expression(self, moment: Expression | str, endpoint_field: str = "endpoint_id") -> Expression:
        """The local date of `moment` in the zone of the row's endpoint (UTC when it has none)."""
        moment = F(moment) if isinstance(moment, str) else moment
        groups = self.by_zone
        if len(groups) <= 1:
            name = next(iter(groups), "UTC")
            return TruncDate(moment, tzinfo=zone(name))
        whens = [
            When(**{f"{endpoint_field}__in": pks}, then=TruncDate(moment, tzinfo=zone(name)))
            for name, pks in groups.items()
        ]
        return Case(*whens, default=TruncDate(moment, tzinfo=zone("UTC")), output_field=DateField())

    def visit_range_q(self, first: date, last: date, endpoint_field: str = "endpoint_id") -> Q:
        """Visits whose time falls on a local day from `first` to `last` in their endpoint's zone.

        Exactly those days (no wider UTC window to cut afterwards), column by
        column (see visit_time_between), so the database estimates it well.
        """
        end = last + timedelta(days=1)
        parts = [
            Q(**{f"{endpoint_field}__in": pks})
            & visit_time_between(local_midnight(first, name), local_midnight(end, name))
            for name, pks in self.by_zone.items()
        ]
        if not parts:
            return Q(pk__in=[])
        query = parts[0]
        for part in parts[1:]:
            query |= part
        return query

    def environment_expression(self, endpoint_field: str = "endpoint_id") -> Expression:
        """The environment of the row's endpoint, as a CASE over endpoint IDs (no join)."""
        groups: dict[str, list[int]] = defaultdict(list)
        for info in self.endpoints.values():
            groups[info.environment].append(info.pk)
        whens = [
            When(**{f"{endpoint_field}__in": sorted(pks)}, then=Value(env))
            for env, pks in sorted(groups.items())
        ]
        if not whens:
            return Value("", output_field=CharField())
        return Case(*whens, default=Value(""), output_field=CharField())

    def range_q(
        self,
        moment: str,
        first: date,
        last: date,
        endpoint_field: str = "endpoint_id",
        *,
        endpointless: bool = False,
    ) -> Q:
        """Rows whose `moment` falls on a local day from `first` to `last`, in their endpoint's zone.

        `moment` names a field or an annotation. With `endpointless`, rows with no
        endpoint are included by UTC days.
        """
        parts: list[Q] = []
        end = last + timedelta(days=1)
        for name, pks in self.by_zone.items():
            parts.append(
                Q(
                    **{
                        f"{endpoint_field}__in": pks,
                        f"{moment}__gte": local_midnight(first, name),
                        f"{moment}__lt": local_midnight(end, name),
                    }
                )
            )
        if endpointless:
            parts.append(
                Q(
                    **{
                        f"{endpoint_field}__isnull": True,
                        f"{moment}__gte": local_midnight(first, "UTC"),
                        f"{moment}__lt": local_midnight(end, "UTC"),
                    }
                )
            )
        if not parts:
            return Q(pk__in=[])
        query = parts[0]
        for part in parts[1:]:
            query |= part
        return query


def zones_for_tenant() -> Zones:
    """The current tenant's endpoints (call inside its scope). One query."""
    rows = FhirEndpoint.objects.order_by().values_list("pk", "time_zone", "environment", "label")
    return Zones({pk: EndpointInfo(pk, tz or "UTC", env, label) for pk, tz, env, label in rows})


def local_today(zones: Zones, now: datetime) -> date:
    """The earliest local date among the organization's zones: days before it are over everywhere."""
    return min(now.astimezone(zone(name)).date() for name in zones.names)
