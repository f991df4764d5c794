"""Background tasks of the reports app: each loads, scopes and calls one service; each is idempotent.

The nightly roll-up fans out (reports/jobs.py): one planning task per
organization, then one build task per organization and day, so no task grows
with the number of organizations.
"""

from __future__ import annotations

from connector.background import queue_now, tenant_task
from reports.models import RollupJob
from tenants.models import Tenant, TenantStatus
from tenants.scoping import all_tenants


def reports_build_due() -> str:
    """Scheduled hourly (reports/schedules.py): queue one planning task per enabled organization."""
    with all_tenants():
        tenants = list(Tenant.objects.filter(status=TenantStatus.ENABLED).order_by("pk").values_list("pk", flat=True))
    for pk in tenants:
        queue_now("reports.tasks.reports_plan_tenant", pk)
    return f"{len(tenants)} organization(s) planned"


def reports_plan_tenant(tenant_pk: int) -> str:
    """One organization: queue its due days, send its allotment warnings."""
    from reports.jobs import reports_plan_tenant as plan
    from tenants.scoping import tenant_scope

    with all_tenants():
        tenant = Tenant.objects.filter(pk=tenant_pk, status=TenantStatus.ENABLED).first()
    if tenant is None:
        return "gone"
    with tenant_scope(tenant):
        return plan(tenant=tenant)


@tenant_task(RollupJob)
def rollup_job_build(job: RollupJob) -> str:
    """Build one organization's one local day."""
    from reports.jobs import rollup_job_build as build

    return build(job=job)
