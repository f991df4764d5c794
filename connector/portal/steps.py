"""The setup wizard's steps and how far an organization has come."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from connector.models import EhrApprover, EndpointStatus, FhirEndpoint
from tenants.models import EhrVendor, Tenant


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    url: str
    done: bool
    applies: bool = True


def wizard_steps(tenant: Tenant) -> list[Step]:
    endpoints = list(FhirEndpoint.objects.exclude(status=EndpointStatus.DISABLED).only("status"))
    is_epic = tenant.ehr_vendor == EhrVendor.EPIC
    configured = bool(endpoints) and (not is_epic or EhrApprover.objects.exists())
    approved = bool(endpoints) and all(e.status == EndpointStatus.APPROVED for e in endpoints)
    usable = any(e.is_usable for e in endpoints)
    return [
        Step("configure", "Configure", reverse("portal:configure"), configured),
        Step("sms", "SMS notifications", reverse("portal:sms"), configured),
        Step("approve", "Approve", reverse("portal:approve"), approved, applies=is_epic),
        Step("review", "Review and finish", reverse("portal:review"), usable),
    ]


def first_open_step(tenant: Tenant) -> Step:
    steps = [s for s in wizard_steps(tenant) if s.applies]
    return next((s for s in steps if not s.done), steps[-1])


def neighbours(tenant: Tenant, key: str) -> tuple[Step | None, Step | None]:
    steps = [s for s in wizard_steps(tenant) if s.applies]
    index = next(i for i, s in enumerate(steps) if s.key == key)
    return (steps[index - 1] if index > 0 else None, steps[index + 1] if index + 1 < len(steps) else None)
