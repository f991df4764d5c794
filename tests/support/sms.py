"""Set-up helpers for SMS tests: an endpoint with SMS on, and scheduling messages."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from connector.models import EndpointStatus, FhirEndpoint
from sms.models import NumberState, PhoneNumber, SmsConsent, SmsSettings, TollFreeVerification
from sms.services.appointments import SchedulingMessage
from tenants.scoping import tenant_scope


def sms_ready_endpoint(
    tenant, *, number="+18335550142", time_zone="America/New_York", verified=True, **settings_fields
):
    """An approved endpoint with consent given, an active number linked, and SMS settings."""
    with tenant_scope(tenant):
        endpoint = FhirEndpoint.objects.create(
            tenant=tenant,
            base_url=f"https://fhir-{tenant.pk}.example.org/R4",
            environment="test",
            label="Main",
            time_zone=time_zone,
            status=EndpointStatus.APPROVED,
        )
        now = timezone.now()
        SmsConsent.objects.create(tenant=tenant, on_behalf_confirmed_at=now, patient_consent_confirmed_at=now)
        phone = PhoneNumber.objects.create(
            tenant=tenant,
            number=number,
            state=NumberState.ACTIVE,
            toll_free=True,
            provider="locmem",
            verification=TollFreeVerification.VERIFIED if verified else TollFreeVerification.NOT_SUBMITTED,
        )
        SmsSettings.objects.create(tenant=tenant, endpoint=endpoint, phone_number=phone, **settings_fields)
    return endpoint


def siu(
    event="S12",
    *,
    external_id="APPT-1",
    start=None,
    minutes=30,
    phone="+14155550123",
    sent_at=None,
    language="en",
    facility="MAIN",
    time_zone="",
):
    start = start or timezone.now() + timedelta(days=3)
    return SchedulingMessage(
        event=event,
        message_time=sent_at or timezone.now(),
        sending_facility=facility,
        external_id=external_id,
        start=start,
        end=start + timedelta(minutes=minutes),
        phone=phone,
        language=language,
        department="DEPT-1",
        time_zone=time_zone,
    )


def at(text: str, zone: str) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
