"""Demo configuration: the demo organizations' FHIR endpoints point at the sandbox EHR."""

from __future__ import annotations

from django.conf import settings

from connector.models import EndpointStatus, Environment, FhirEndpoint
from connector.services.endpoints import (
    ehr_approvers_set,
    endpoint_create,
    endpoint_request_validation,
    endpoint_update,
)
from tenants.models import EhrVendor, Tenant
from tenants.scoping import all_tenants, tenant_scope

DEMO_EPIC_TENANT_ID = "7d3c2a4e-1b5f-4c8e-9a0d-3e6f1b2c4d5a"
DEMO_TENANT_IDS = {
    DEMO_EPIC_TENANT_ID: ("r4", "America/New_York", "Contoso Main Campus"),
    "2f9e8d7c-6b5a-4938-8271-6a5b4c3d2e1f": ("r4-other", "Europe/Copenhagen", "Fabrikam Clinics"),
}


def sandbox_base_url(flavor: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}/sandbox-ehr/fhir/{flavor}"


def demo_endpoint(tenant: Tenant) -> FhirEndpoint | None:
    """The demo's own endpoint of a demo organization: the first one on its sandbox EHR path.

    Found by path, not by full address, so running the demo on another port (`--port`)
    finds the same endpoint; endpoints people add in the portal are never the demo's.
    """
    flavor = DEMO_TENANT_IDS[tenant.microsoft_tenant_id][0]
    with tenant_scope(tenant):
        return (
            FhirEndpoint.objects.filter(tenant=tenant, base_url__endswith=f"/sandbox-ehr/fhir/{flavor}")
            .order_by("pk")
            .first()
        )


def configure_demo_endpoints() -> list[FhirEndpoint]:
    """Give each demo organization a test endpoint on the sandbox (idempotent)."""
    endpoints = []
    with all_tenants():
        tenants = list(Tenant.objects.filter(microsoft_tenant_id__in=DEMO_TENANT_IDS))
    for tenant in tenants:
        flavor, time_zone, label = DEMO_TENANT_IDS[tenant.microsoft_tenant_id]
        endpoint = demo_endpoint(tenant)
        with tenant_scope(tenant):
            if endpoint is None:
                endpoint = endpoint_create(
                    tenant=tenant,
                    base_url=sandbox_base_url(flavor),
                    environment=Environment.TEST,
                    label=label,
                    time_zone=time_zone,
                )
            elif endpoint.base_url != sandbox_base_url(flavor) and endpoint.status != EndpointStatus.DISABLED:
                # The demo now runs on another port: its sandbox EHR moved with it.
                endpoint = endpoint_update(endpoint=endpoint, base_url=sandbox_base_url(flavor))
            if tenant.ehr_vendor == EhrVendor.EPIC:
                ehr_approvers_set(tenant=tenant, usernames=["ANALYST1"])
            endpoints.append(endpoint)
    return endpoints


def validate_demo_endpoints() -> None:
    """Queue validation of demo endpoints that have not passed yet."""
    with all_tenants():
        pending = list(
            FhirEndpoint.objects.select_related("tenant").filter(
                status__in=[EndpointStatus.DRAFT, EndpointStatus.VALIDATING],
                tenant__microsoft_tenant_id__in=DEMO_TENANT_IDS,
            )
        )
    for endpoint in pending:
        with tenant_scope(endpoint.tenant):
            FhirEndpoint.objects.filter(pk=endpoint.pk).update(status=EndpointStatus.DRAFT)
            endpoint.refresh_from_db()
            endpoint_request_validation(endpoint=endpoint)


def configure_demo_sms() -> None:
    """SMS on for the Epic demo organization: consent, a console-backend number, settings (idempotent)."""
    from django.utils import timezone

    from sms.models import NumberState, PhoneNumber, SmsConsent, SmsSettings, TollFreeVerification

    with all_tenants():
        tenant = Tenant.objects.filter(microsoft_tenant_id=DEMO_EPIC_TENANT_ID).first()
    if tenant is None:
        return
    with tenant_scope(tenant):
        now = timezone.now()
        SmsConsent.objects.get_or_create(
            tenant=tenant, defaults={"on_behalf_confirmed_at": now, "patient_consent_confirmed_at": now}
        )
        number, _ = PhoneNumber.objects.get_or_create(
            tenant=tenant,
            number="+18335550199",
            defaults={
                "state": NumberState.ACTIVE,
                "toll_free": True,
                "provider": "console",
                "verification": TollFreeVerification.VERIFIED,
            },
        )
        for endpoint in FhirEndpoint.objects.filter(tenant=tenant):
            SmsSettings.objects.get_or_create(
                tenant=tenant, endpoint=endpoint, defaults={"phone_number": number, "contact": "555-0100"}
            )
