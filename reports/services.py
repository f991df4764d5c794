"""Building the daily roll-ups, and the allotment warnings.

Entry points:

- `rollup_build(tenant=, first=, last=)`: recompute local days `first`..`last`
  and replace what was stored for them (idempotent; how: reports/rollups.py).
- `rollups_build_due(tenant=)`: what the schedule runs: every day since the
  last one built up to the last day that is over in all the organization's
  time zones, the last `REBUILD_DAYS` again (late delivery reports, visits
  closed late), and any older day that received visit events or new rows since.
- `allotment_warnings_send(tenant=)`: email the administrators once per
  threshold (80%, 100%) per month.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from connector.models import Visit, VisitEvent
from reports.models import AllotmentWarning, ReportBuild
from reports.rollups import POSTGRES_SETTINGS, REPORTED_STATES, rollup_replace
from reports.selectors import AllotmentUsage, allotment_usage
from reports.zones import Zones, local_today, message_time, visit_time, zone, zones_for_tenant
from sms.models import OutboundMessage
from tenants.models import Membership, Role, Tenant, TenantStatus
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

REBUILD_DAYS = 7


@dataclass
class BuildResult:
    tenant_id: int
    first: date
    last: date
    rows_before: int
    rows: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"tenant {self.tenant_id}: {self.first}..{self.last}, {self.rows} row(s) "
            f"(replacing {self.rows_before}), {self.seconds:.2f} s"
        )


# --- building ------------------------------------------------------------------------------


def rollup_build(
    *, tenant: Tenant, first: date, last: date, now: datetime | None = None, scheduled: bool = False
) -> BuildResult:
    """Recompute the roll-ups of local days `first` to `last` and replace the stored ones.

    Runs in one transaction holding the organization's ReportBuild row, so two
    workers never interleave their writes and readers never see half a range.
    `scheduled` builds (rollups_build_due) also move `last_built_day` and the
    late-data watermark `built_at`.
    """
    if first > last:
        raise ValueError(f"the range starts after it ends: {first} > {last}")
    started = time.perf_counter()
    stamp = now or timezone.now()
    with tenant_scope(tenant), transaction.atomic():
        build, _ = ReportBuild.objects.select_for_update().get_or_create(tenant=tenant)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                for setting in POSTGRES_SETTINGS:  # for this transaction only
                    cursor.execute(setting)
        zones = zones_for_tenant()
        before, rows = rollup_replace(tenant=tenant, zones=zones, first=first, last=last, stamp=stamp)
        if scheduled:
            # Only the schedule moves the bookkeeping: a build by hand may cover a day not
            # over yet, or leave a gap; the schedule then still builds from where it was.
            build.last_built_day = max(last, build.last_built_day or last)
            build.built_at = stamp
        build.last_range_start, build.last_range_end = first, last
        build.last_duration_ms = int((time.perf_counter() - started) * 1000)
        build.last_error = ""
        build.save()
    return BuildResult(tenant.pk, first, last, before, rows, time.perf_counter() - started)


def _first_data_day(zones: Zones) -> date | None:
    earliest = [
        Visit.objects.filter(state__in=REPORTED_STATES).aggregate(at=Min(visit_time()))["at"],
        OutboundMessage.objects.aggregate(at=Min(message_time()))["at"],
    ]
    moments = [m for m in earliest if m is not None]
    if not moments:
        return None
    return min(min(m.astimezone(zone(name)).date() for name in [*zones.names, "UTC"]) for m in moments)


def _days_with_late_data(zones: Zones, since: datetime) -> set[date]:
    """Local days of visits that got events or were created since `since`, and of texts made since.

    Three small queries, each on an index: (tenant, received_at) of the events,
    (tenant, created_at) of the visits and of the texts.
    """
    day = zones.day_expression(visit_time())
    touched = VisitEvent.objects.filter(received_at__gt=since).values("visit_id")
    days: set[date] = set()
    for visits in (
        Visit.objects.filter(pk__in=touched, state__in=REPORTED_STATES),
        Visit.objects.filter(created_at__gt=since, state__in=REPORTED_STATES),
    ):
        days.update(visits.annotate(local_day=day).order_by().values_list("local_day", flat=True).distinct())
    days.update(
        OutboundMessage.objects.filter(created_at__gt=since)
        .annotate(local_day=zones.day_expression(message_time(), "appointment__endpoint_id"))
        .order_by()
        .values_list("local_day", flat=True)
        .distinct()
    )
    return {d for d in days if d is not None}


def rollups_build_due(*, tenant: Tenant, now: datetime | None = None) -> BuildResult | None:
    """Build what is due for one organization; None when nothing is.

    Due: every day after the last one built, up to the last local day that is
    over in all its time zones; then the last REBUILD_DAYS again; then any
    older day with visit events received, visits or texts created since the
    last scheduled build.
    """
    now = now or timezone.now()
    due = rollup_due_range(tenant=tenant, now=now)
    if due is None:
        return None
    return rollup_build(tenant=tenant, first=due[0], last=due[1], now=now, scheduled=True)


def rollup_due_range(*, tenant: Tenant, now: datetime) -> tuple[date, date] | None:
    """The local days due for building (see `rollups_build_due`), or None when nothing is."""
    with tenant_scope(tenant):
        zones = zones_for_tenant()
        if not zones.endpoints:
            return None
        end = local_today(zones, now) - timedelta(days=1)
        build = ReportBuild.objects.filter(tenant=tenant).first()
        if build is None or build.last_built_day is None:
            first = min(_first_data_day(zones) or end, end)
        else:
            late = (
                {d for d in _days_with_late_data(zones, build.built_at) if d <= end}
                if build.built_at
                else set()
            )
            if build.last_built_day >= end and not late:
                return None
            first = min(
                build.last_built_day + timedelta(days=1), end - timedelta(days=REBUILD_DAYS - 1), *late
            )
    return first, end


def rollups_build_all_due(*, now: datetime | None = None) -> list[BuildResult]:
    """Every enabled organization's due build, then its allotment warnings. One failure stops no other."""
    now = now or timezone.now()
    with all_tenants():
        tenants = list(Tenant.objects.filter(status=TenantStatus.ENABLED).order_by("pk"))
    results = []
    for tenant in tenants:
        try:
            result = rollups_build_due(tenant=tenant, now=now)
        except Exception as error:
            logger.exception("roll-up build failed for tenant %s", tenant.pk)
            with tenant_scope(tenant):
                ReportBuild.objects.update_or_create(
                    tenant=tenant, defaults={"last_error": repr(error)[:2000]}
                )
            continue
        if result is not None:
            results.append(result)
        try:
            allotment_warnings_send(tenant=tenant, now=now)
        except Exception:
            logger.exception("allotment warning failed for tenant %s", tenant.pk)
    return results


# --- allotment warnings --------------------------------------------------------------------


def _administrator_emails(tenant: Tenant) -> list[str]:
    with tenant_scope(tenant):
        emails = Membership.objects.filter(
            tenant=tenant, role=Role.ADMINISTRATOR, user__is_active=True
        ).values_list("user__email", flat=True)
        return sorted({email for email in emails if email})


def _warning_text(tenant: Tenant, usage: AllotmentUsage, threshold: int) -> tuple[str, str]:
    month = f"{usage.month:%B %Y}"
    if threshold >= 100:
        subject = f"{tenant.name} has used all {usage.allotment} virtual visits of {month}"
        lead = "has used its whole monthly allotment of virtual visits"
    else:
        subject = f"{tenant.name} has used {threshold}% of its virtual visits for {month}"
        lead = f"has used {threshold}% of its monthly allotment of virtual visits"
    body = (
        f"{tenant.name} {lead}: {usage.used} of {usage.allotment} in {month} ({usage.percent:.0f}%).\n\n"
        "Visits beyond the allotment are marked in the Virtual appointments report. "
        "Talk to your account contact to raise the allotment.\n\n"
        f"Reports: {settings.PUBLIC_BASE_URL}/portal/reports/\n"
    )
    return subject, body


def allotment_warnings_send(*, tenant: Tenant, now: datetime | None = None) -> list[AllotmentWarning]:
    """Email the organization's administrators when this month's use passes 80% or 100%, once each.

    The warning row is claimed (sent_at set) before the mail goes, so two workers
    never both send; a failed send clears the claim and the next run tries again.
    Crossing both thresholds at once sends only the 100% mail.
    """
    now = now or timezone.now()
    with tenant_scope(tenant):
        usage = allotment_usage(tenant=tenant, now=now)
        crossed = [t for t in AllotmentWarning.Threshold.values if usage.percent >= t]
        sent = []
        for threshold in crossed:
            warning, _ = AllotmentWarning.objects.get_or_create(
                tenant=tenant,
                month=usage.month,
                threshold=threshold,
                defaults={"used": usage.used, "allotment": usage.allotment},
            )
            if warning.sent_at is not None:
                continue
            claimed = AllotmentWarning.objects.filter(pk=warning.pk, sent_at__isnull=True).update(
                sent_at=now, used=usage.used, allotment=usage.allotment
            )
            if not claimed:
                continue
            if threshold != crossed[-1]:
                continue  # superseded by the higher threshold crossed in the same run: recorded, not mailed
            recipients = _administrator_emails(tenant)
            subject, body = _warning_text(tenant, usage, threshold)
            try:
                if recipients:
                    send_mail(subject, body, None, recipients)
            except Exception:
                AllotmentWarning.objects.filter(pk=warning.pk).update(sent_at=None)
                raise
            AllotmentWarning.objects.filter(pk=warning.pk).update(recipients=len(recipients))
            warning.refresh_from_db()
            sent.append(warning)
    return sent
