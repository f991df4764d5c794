"""Reads for reports: the monthly allotment, and what the filters offer."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from connector.models import FhirEndpoint, Visit, VisitState
from reports.zones import EndpointInfo, Zones, local_today, zone, zones_for_tenant
from tenants.models import Tenant, TenantStatus

# A visit uses the allotment once it has started (a clinician and the patient met).
ALLOTMENT_STATES = (VisitState.COMPLETED, VisitState.IN_PROGRESS)


def month_bounds(day: date) -> tuple[date, date]:
    first = day.replace(day=1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def months_between(first: date, last: date) -> list[date]:
    months, current = [], first.replace(day=1)
    while current <= last:
        months.append(current)
        current = (current + timedelta(days=32)).replace(day=1)
    return months


@dataclass
class AllotmentUsage:
    month: date
    allotment: int
    used: int

    @property
    def remaining(self) -> int:
        return max(self.allotment - self.used, 0)

    @property
    def over(self) -> int:
        return max(self.used - self.allotment, 0)

    @property
    def percent(self) -> float:
        if self.allotment <= 0:
            return 100.0 if self.used else 0.0
        return 100.0 * self.used / self.allotment

    @property
    def level(self) -> int | None:
        """The highest warning threshold reached: 100, 80 or None."""
        return 100 if self.percent >= 100 else 80 if self.percent >= 80 else None

    def as_dict(self) -> dict:
        return {
            "month": self.month.isoformat(),
            "allotment": self.allotment,
            "used": self.used,
            "remaining": self.remaining,
            "percent": round(self.percent, 1),
            "warning": self.level,
        }


def _started_in_month(zones: Zones, month: date):
    first, last = month_bounds(month)
    return Visit.objects.filter(zones.range_q("started_at", first, last), state__in=ALLOTMENT_STATES)


def allotment_usage(
    *, tenant: Tenant, now: datetime | None = None, zones: Zones | None = None
) -> AllotmentUsage:
    """Visits started this month (the month of the organization's local today); call in the tenant's scope.

    A visit counts in the month of its start's local day, in its department's time zone.
    """
    zones = zones or zones_for_tenant()
    month = local_today(zones, now or timezone.now()).replace(day=1)
    used = _started_in_month(zones, month).count()
    return AllotmentUsage(month=month, allotment=tenant.monthly_visit_allotment, used=used)


@dataclass(frozen=True)
class AllotmentCutoff:
    """The last visit of a month still within the allotment, as (started_at, pk); None: all are."""

    month: date
    last_within: tuple[datetime, int] | None
    nothing_within: bool = False


def allotment_cutoffs(
    *, tenant: Tenant, zones: Zones, first: date, last: date
) -> dict[date, AllotmentCutoff]:
    """For each month touching first..last, where the allotment ran out. One query per month."""
    allotment = tenant.monthly_visit_allotment
    cutoffs = {}
    for month in months_between(first, last):
        if allotment <= 0:
            cutoffs[month] = AllotmentCutoff(month, None, nothing_within=True)
            continue
        nth = (
            _started_in_month(zones, month)
            .order_by("started_at", "pk")
            .values_list("started_at", "pk")[allotment - 1 : allotment]
        )
        found = list(nth)
        cutoffs[month] = AllotmentCutoff(month, found[0] if found else None)
    return cutoffs


def within_allotment(
    cutoffs: dict[date, AllotmentCutoff], *, state: str, started_at: datetime | None, pk: int, time_zone: str
) -> bool | None:
    """Whether a visit is within its month's allotment; None for visits that never started."""
    if started_at is None or state not in ALLOTMENT_STATES:
        return None
    month = started_at.astimezone(zone(time_zone)).date().replace(day=1)
    cutoff = cutoffs.get(month)
    if cutoff is None:
        return None
    if cutoff.nothing_within:
        return False
    return cutoff.last_within is None or (started_at, pk) <= cutoff.last_within


def department_suggestions(limit: int = 500) -> list[str]:
    """Departments seen in the roll-ups (call in the tenant's scope)."""
    from reports.models import DailyRollup

    return list(
        DailyRollup.objects.exclude(department="")
        .order_by("department")
        .values_list("department", flat=True)
        .distinct()[:limit]
    )


def usage_overview(*, now: datetime | None = None) -> list[dict]:
    """Support staff's list: every enabled organization's use of this month's allotment.

    Cross-tenant; call with the scope lifted. Two queries plus one count per organization.
    """
    now = now or timezone.now()
    tenants = list(Tenant.objects.filter(status=TenantStatus.ENABLED).order_by("name"))
    endpoints: dict[int, Zones] = {}
    for pk, tenant_id, tz, env, label in FhirEndpoint.objects.values_list(
        "pk", "tenant_id", "time_zone", "environment", "label"
    ):
        endpoints.setdefault(tenant_id, Zones()).endpoints[pk] = EndpointInfo(pk, tz or "UTC", env, label)
    rows = []
    for tenant in tenants:
        zones = endpoints.get(tenant.pk)
        if zones is None:
            usage = AllotmentUsage(now.date().replace(day=1), tenant.monthly_visit_allotment, 0)
        else:
            month = local_today(zones, now).replace(day=1)
            first, last = month_bounds(month)
            used = Visit.objects.filter(
                Q(tenant=tenant), zones.range_q("started_at", first, last), state__in=ALLOTMENT_STATES
            ).count()
            usage = AllotmentUsage(month, tenant.monthly_visit_allotment, used)
        rows.append({"tenant": tenant, "usage": usage})
    return rows
