"""The nightly roll-up, fanned out: one task per organization and local day.

- `reports.tasks.reports_build_due` (hourly) queues `reports_plan_tenant` for
  each enabled organization;
- `rollup_days_plan` marks the organization's due days as RollupJob rows
  (state "due", with a lease), moves its ReportBuild bookkeeping in the same
  transaction, and queues one `rollup_job_build` task per day after commit;
- `rollup_job_build` claims its job (due -> building, with a lease), builds the
  day (`rollup_build`, idempotent), and records done or the error;
- the sweeper (`rollup_jobs_recover`) queues again jobs whose lease ended: a
  lost task or a killed worker delays a day by at most its lease.

"Retry now" in the admin (and marking a day due while it is building) never
runs two builds of a day at once: a building job is only flagged `again`, and
built once more when its current build ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from connector.background import queue_after_commit, queue_now
from reports.models import ReportBuild, RollupJob, RollupJobState
from reports.services import allotment_warnings_send, rollup_build, rollup_due_range
from tenants.models import Tenant
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

# One day's build takes seconds; a job holding a day longer than this has died.
JOB_LEASE = timedelta(minutes=10)
MAX_ATTEMPTS = 3


def rollup_days_mark_due(*, tenant: Tenant, days: Iterable[date]) -> list[int]:
    """Mark these local days due (building ones: built again after) and queue their builds. Returns job IDs."""
    now = timezone.now()
    queued = []
    with tenant_scope(tenant), transaction.atomic():
        for day in sorted(set(days)):
            job, created = RollupJob.objects.get_or_create(
                tenant=tenant, day=day, defaults={"lease_until": now + JOB_LEASE, "requested_at": now}
            )
            if not created:
                if job.state == RollupJobState.BUILDING and job.lease_until and job.lease_until > now:
                    RollupJob.objects.filter(pk=job.pk).update(again=True)
                    continue
                RollupJob.objects.filter(pk=job.pk).update(
                    state=RollupJobState.DUE,
                    lease_until=now + JOB_LEASE,
                    requested_at=now,
                    attempts=0,
                    again=False,
                    last_error="",
                )
            queue_after_commit("reports.tasks.rollup_job_build", job.pk)
            queued.append(job.pk)
    return queued


def rollup_days_plan(*, tenant: Tenant, now: datetime | None = None) -> list[int]:
    """Mark what the schedule must build for one organization (see rollups_build_due) and queue it."""
    now = now or timezone.now()
    due = rollup_due_range(tenant=tenant, now=now)
    if due is None:
        return []
    first, last = due
    with tenant_scope(tenant), transaction.atomic():
        jobs = rollup_days_mark_due(
            tenant=tenant, days=(first + timedelta(days=n) for n in range((last - first).days + 1))
        )
        # The bookkeeping moves with the plan: the jobs are durable rows, built even if tasks are lost.
        build, _ = ReportBuild.objects.select_for_update().get_or_create(tenant=tenant)
        build.last_built_day = max(last, build.last_built_day or last)
        build.built_at = now
        build.save(update_fields=["last_built_day", "built_at"])
    return jobs


def reports_plan_tenant(*, tenant: Tenant, now: datetime | None = None) -> str:
    """One organization's hourly run: plan its due days, then send its allotment warnings."""
    jobs = rollup_days_plan(tenant=tenant, now=now)
    allotment_warnings_send(tenant=tenant, now=now)
    return f"{len(jobs)} day(s) queued"


def rollup_job_build(*, job: RollupJob) -> str:
    """Claim one day's job, build the day, record the outcome. Safe to call twice: one claim wins."""
    now = timezone.now()
    lease = now + JOB_LEASE
    claimed = RollupJob.objects.filter(pk=job.pk, state=RollupJobState.DUE).update(
        state=RollupJobState.BUILDING, lease_until=lease, attempts=F("attempts") + 1, again=False
    )
    if not claimed:
        return "not due"
    mine = RollupJob.objects.filter(pk=job.pk, state=RollupJobState.BUILDING, lease_until=lease)
    try:
        result = rollup_build(tenant=job.tenant, first=job.day, last=job.day)
    except Exception as error:
        logger.exception("roll-up of %s failed for tenant %s", job.day, job.tenant_id)
        job.refresh_from_db()
        failed = job.attempts >= MAX_ATTEMPTS
        mine.update(
            state=RollupJobState.FAILED if failed else RollupJobState.DUE,
            lease_until=None if failed else timezone.now() + JOB_LEASE,  # the sweeper retries it then
            last_error=repr(error)[:2000],
        )
        ReportBuild.objects.update_or_create(tenant=job.tenant, defaults={"last_error": repr(error)[:2000]})
        return "failed" if failed else "retry"
    # Marked due again during the build (a retry, late data): due once more, as one conditional UPDATE
    # so a retry landing between two statements is never lost.
    finished = timezone.now()
    again = mine.filter(again=True).update(
        state=RollupJobState.DUE, again=False, lease_until=finished + JOB_LEASE, built_at=finished, attempts=0
    )
    if again:
        queue_after_commit("reports.tasks.rollup_job_build", job.pk)
    else:
        mine.update(state=RollupJobState.DONE, lease_until=None, built_at=finished, last_error="")
    return f"built: {result}"


def rollup_jobs_retry(*, jobs: Iterable[RollupJob]) -> int:
    """The admin's "Retry now": mark these days due again (a building one is built again after). Returns how many."""
    count = 0
    for job in jobs:
        with tenant_scope(job.tenant):
            rollup_days_mark_due(tenant=job.tenant, days=[job.day])
        count += 1
    return count


def rollup_jobs_recover(*, limit: int = 200) -> int:
    """Queue again the jobs whose lease ended (a lost task, a killed worker). For the sweeper."""
    now = timezone.now()
    with all_tenants():
        stale = list(
            RollupJob.objects.filter(
                Q(state__in=[RollupJobState.DUE, RollupJobState.BUILDING]),
                Q(lease_until__lt=now) | Q(lease_until__isnull=True),
            ).values_list("pk", "lease_until")[:limit]
        )
        requeued = []
        for pk, lease in stale:
            if RollupJob.objects.filter(pk=pk, lease_until=lease).update(
                state=RollupJobState.DUE, lease_until=now + JOB_LEASE
            ):
                requeued.append(pk)
    for pk in requeued:
        queue_now("reports.tasks.rollup_job_build", pk)
    return len(requeued)
