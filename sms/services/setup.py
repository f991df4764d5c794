"""SMS setup: consent and per-endpoint settings."""

from __future__ import annotations

import logging
from datetime import time

import phonenumbers
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from connector.models import FhirEndpoint
from sms.models import AppointmentIdField, NumberState, PhoneNumber, SmsConsent, SmsSettings
from sms.texts import SHIPPED, template_problems
from tenants.models import Tenant

logger = logging.getLogger(__name__)

MAX_LEAD_MINUTES = 14 * 24 * 60


def sms_consent_set(
    *, tenant: Tenant, user: AbstractBaseUser, on_behalf: bool, patients_consented: bool
) -> SmsConsent:
    """Record the two confirmations with who gave them and when; unticking withdraws one."""
    consent, _ = SmsConsent.objects.get_or_create(tenant=tenant)
    now = timezone.now()
    if on_behalf and not consent.on_behalf_confirmed_at:
        consent.on_behalf_confirmed_at, consent.on_behalf_confirmed_by = now, user
    elif not on_behalf:
        consent.on_behalf_confirmed_at = consent.on_behalf_confirmed_by = None
    if patients_consented and not consent.patient_consent_confirmed_at:
        consent.patient_consent_confirmed_at, consent.patient_consent_confirmed_by = now, user
    elif not patients_consented:
        consent.patient_consent_confirmed_at = consent.patient_consent_confirmed_by = None
    consent.save()
    logger.info("SMS consent of tenant %s: complete=%s", tenant.pk, consent.complete)
    return consent


def parse_lead_times(text: str) -> list[int]:
    """'24h, 1h, 30m' -> [1440, 60, 30]. Plain numbers are hours."""
    leads = []
    for part in text.replace(";", ",").split(","):
        part = part.strip().lower()
        if not part:
            continue
        unit = part[-1]
        number = part[:-1] if unit in "hmd" else part
        if not number.isdigit():
            raise ValidationError(
                {"reminder_lead_times": f"{part!r} is not a lead time: write e.g. 24h, 1h or 30m."}
            )
        value = int(number) * {"d": 1440, "h": 60, "m": 1}.get(unit, 60)
        if not 5 <= value <= MAX_LEAD_MINUTES:
            raise ValidationError(
                {"reminder_lead_times": "Lead times go from 5 minutes to 14 days before the visit."}
            )
        leads.append(value)
    return sorted(set(leads), reverse=True)


def format_lead_times(minutes: list[int]) -> str:
    return ", ".join(f"{m // 60}h" if m % 60 == 0 else f"{m}m" for m in sorted(minutes, reverse=True))


def sms_settings_update(
    *,
    endpoint: FhirEndpoint,
    phone_number: PhoneNumber | None,
    confirmations_enabled: bool,
    reminders_enabled: bool,
    reminder_lead_minutes: list[int],
    quiet_hours_start: time,
    quiet_hours_end: time,
    default_language: str,
    contact: str = "",
    templates: dict | None = None,
    appointment_id_field: str | None = None,
    phone_region: str | None = None,
) -> SmsSettings:
    """Save an endpoint's SMS settings; `appointment_id_field` and `phone_region` are kept when None."""
    if phone_number is not None:
        if phone_number.tenant_id != endpoint.tenant_id:
            raise ValidationError({"phone_number": "That number belongs to another organization."})
        if phone_number.state != NumberState.ACTIVE:
            raise ValidationError({"phone_number": "Only an active number can be linked."})
    if reminders_enabled and not reminder_lead_minutes:
        raise ValidationError({"reminder_lead_times": "Give at least one lead time, or turn reminders off."})
    if quiet_hours_start == quiet_hours_end:
        raise ValidationError({"quiet_hours_end": "Quiet hours need a start and an end that differ."})
    problems = {}
    for language, kinds in (templates or {}).items():
        for kind, text in kinds.items():
            if kind not in SHIPPED["en"]:
                problems[f"{language}.{kind}"] = f"Unknown message type {kind}."
            elif text and template_problems(text):
                problems[f"{language}.{kind}"] = " ".join(template_problems(text))
    if appointment_id_field is not None and appointment_id_field not in AppointmentIdField.values:
        raise ValidationError(
            {"appointment_id_field": f"Choose one of {', '.join(AppointmentIdField.values)}."}
        )
    if phone_region:
        phone_region = phone_region.strip().upper()
        if phone_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValidationError(
                {"phone_region": "Not a country code: give two letters such as US, CA or GB, or leave it empty."}
            )
    if problems:
        raise ValidationError({"templates": [f"{k}: {v}" for k, v in problems.items()]})
    row, _ = SmsSettings.objects.get_or_create(tenant=endpoint.tenant, endpoint=endpoint)
    row.phone_number = phone_number
    row.confirmations_enabled = confirmations_enabled
    row.reminders_enabled = reminders_enabled
    row.reminder_lead_minutes = reminder_lead_minutes
    row.quiet_hours_start = quiet_hours_start
    row.quiet_hours_end = quiet_hours_end
    row.default_language = default_language
    row.contact = contact.strip()
    if appointment_id_field is not None:
        row.appointment_id_field = appointment_id_field
    if phone_region is not None:
        row.phone_region = phone_region
    if templates is not None:
        # Empty texts (and languages left with none) mean the shipped ones: not stored.
        row.templates = {
            lang: texts
            for lang, kinds in templates.items()
            if (texts := {k: v for k, v in kinds.items() if v})
        }
    row.save()
    return row
