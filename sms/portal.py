"""Step 2 of the setup wizard: SMS notifications (consent, numbers, certificates, per-endpoint settings)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from connector.forms import add_service_errors
from connector.models import EndpointStatus, FhirEndpoint
from connector.portal.views import require_role, wizard_context
from sms.certificates import EXPIRY_WARNING_DAYS
from sms.forms import (
    LANGUAGES,
    MESSAGE_KINDS,
    CertificateForm,
    ConsentForm,
    EndpointSmsForm,
    NumberRequestForm,
    VerificationForm,
)
from sms.models import (
    NumberState,
    PhoneNumber,
    SigningCertificate,
    SmsConsent,
    SmsSettings,
    TollFreeVerification,
)
from sms.selectors import sending_blocker
from sms.services.setup import format_lead_times, parse_lead_times, sms_consent_set, sms_settings_update
from sms.texts import (
    SHIPPED,
    patient_date,
    patient_time,
    segment_count,
    template_for,
    template_problems,
)
from tenants.models import Role

SETUP_ROLES = (Role.ADMINISTRATOR, Role.EHR_APPROVER)
# The longest date and time a text shows ("Wed Sep 30", "10:45 AM"), as the patient's local time.
EXAMPLE_START = datetime(2026, 9, 30, 10, 45)  # noqa: DTZ001 - given the endpoint's zone below
EXAMPLE_CONTACT = "555-0100"


def _example_link() -> str:
    """A join link as texts carry it: the short link, of the same length and alphabet as a real one."""
    from sms.services.links import SHORT_PATH

    return f"{settings.PUBLIC_BASE_URL}{SHORT_PATH}{'Xy7_' * 5}Q-"


def _example_values(language: str, organization: str, contact: str, time_zone: str) -> dict[str, str]:
    """The values a preview is rendered with, formatted as the texts of that language are, in the endpoint's zone."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    start = EXAMPLE_START.replace(tzinfo=zone)
    return {
        "organization": organization,
        "date": patient_date(start, zone, language),
        "time": patient_time(start, zone, language),
        "link": _example_link(),
        "contact": contact or EXAMPLE_CONTACT,
    }


def feed_addresses(tenant) -> list[dict[str, str]]:
    """Where this organization's interface engine sends scheduling messages, per environment.

    Built from this deployment's own public address, so in a multi-region installation
    they always point at the organization's region (docs/deployment.md).
    """
    from urllib.parse import urlsplit

    from django.conf import settings
    from django.urls import reverse

    from connector.models import Environment

    mllp = settings.MLLP_PUBLIC_ADDRESS or f"{urlsplit(settings.PUBLIC_BASE_URL).hostname}:2575"
    return [
        {
            "environment": label,
            "https": settings.PUBLIC_BASE_URL
            + reverse(
                "sms:hl7-ingest", kwargs={"tenant_id": tenant.microsoft_tenant_id, "environment": value}
            ),
            "mllp": mllp,
        }
        for value, label in Environment.choices
    ]


def _needs_verification(number: PhoneNumber) -> bool:
    return (
        number.state == NumberState.ACTIVE
        and number.toll_free
        and number.verification in (TollFreeVerification.NOT_SUBMITTED, TollFreeVerification.REJECTED)
    )


@login_required
def sms_step(request: HttpRequest) -> HttpResponse:
    require_role(request, *SETUP_ROLES)
    tenant = request.tenant
    can_configure = request.membership.role == Role.ADMINISTRATOR
    consent = SmsConsent.objects.filter(tenant=tenant).first()
    consent_form = ConsentForm(
        initial={
            "on_behalf": bool(consent and consent.on_behalf_confirmed_at),
            "patients_consented": bool(consent and consent.patient_consent_confirmed_at),
        }
    )
    if not can_configure:
        for field in consent_form.fields.values():
            field.disabled = True
    number_form = NumberRequestForm()
    certificate_form = CertificateForm()
    # One verification form per number (own prefix, so own field IDs); the one posted keeps its errors.
    verification_forms: dict[int, VerificationForm] = {}
    if request.method == "POST":
        require_role(request, Role.ADMINISTRATOR)
        action = request.POST.get("action")
        if action == "consent":
            consent_form = ConsentForm(request.POST)
            if consent_form.is_valid():
                sms_consent_set(tenant=tenant, user=request.user, **consent_form.cleaned_data)
                messages.success(request, "Your consent choices were saved.")
                return redirect("portal:sms")
        elif action == "request_number":
            number_form = NumberRequestForm(request.POST)
            if number_form.is_valid():
                from sms.services.numbers import phone_number_request

                phone_number_request(tenant=tenant, requested_by=request.user, **number_form.cleaned_data)
                messages.success(request, "A new number was requested; this can take a few minutes.")
                return redirect("portal:sms")
        elif action == "verify_number":
            number = get_object_or_404(PhoneNumber, pk=request.POST.get("number"))
            verification_form = VerificationForm(request.POST, prefix=f"verify-{number.pk}")
            verification_forms[number.pk] = verification_form
            if verification_form.is_valid():
                from sms.services.numbers import phone_number_submit_verification

                try:
                    phone_number_submit_verification(
                        phone_number=number, details=verification_form.cleaned_data
                    )
                except ValidationError as error:
                    add_service_errors(verification_form, error)
                    if not _needs_verification(number):  # no form on the row to show the error in
                        messages.error(request, " ".join(error.messages))
                else:
                    messages.success(request, f"Verification of {number.number} was submitted.")
                    return redirect("portal:sms")
        elif action == "upload_certificate":
            certificate_form = CertificateForm(request.POST, request.FILES)
            if certificate_form.is_valid():
                from sms.services.certificates import certificate_upload

                upload = certificate_form.cleaned_data["certificate_file"]
                data = upload.read() if upload else certificate_form.cleaned_data["certificate_text"]
                try:
                    certificate = certificate_upload(
                        tenant=tenant,
                        environment=certificate_form.cleaned_data["environment"],
                        data=data,
                        uploaded_by=request.user,
                    )
                except ValidationError as error:
                    add_service_errors(certificate_form, error)
                else:
                    messages.success(
                        request, f"Certificate {certificate.thumbprint_sha256[:16]}… is now in use."
                    )
                    for warning in getattr(certificate, "warnings", ()):
                        messages.warning(request, warning)
                    return redirect("portal:sms")
    endpoints = list(
        FhirEndpoint.objects.exclude(status=EndpointStatus.DISABLED).order_by("environment", "label")
    )
    settings_by_endpoint = {s.endpoint_id: s for s in SmsSettings.objects.select_related("phone_number")}
    endpoint_rows = [(e, settings_by_endpoint.get(e.pk)) for e in endpoints]
    # On only when some endpoint may text now: both consents, an active number linked to it.
    sms_on = any(row is not None and not sending_blocker(tenant, row) for _, row in endpoint_rows)
    numbers = list(PhoneNumber.objects.exclude(state=NumberState.RELEASED))
    for number in numbers:
        number.verification_form = None
        if can_configure and _needs_verification(number):
            number.verification_form = verification_forms.get(number.pk) or VerificationForm(
                prefix=f"verify-{number.pk}", initial={"business_name": tenant.name}
            )
    certificates = SigningCertificate.objects.filter(active=True).order_by("environment")
    soon = timezone.now() + timezone.timedelta(days=EXPIRY_WARNING_DAYS)
    return render(
        request,
        "sms/step.html",
        wizard_context(
            request,
            "sms",
            consent=consent,
            consent_form=consent_form,
            number_form=number_form,
            certificate_form=certificate_form,
            numbers=numbers,
            verifying=next(iter(verification_forms), None),
            endpoint_rows=endpoint_rows,
            sms_on=sms_on,
            certificates=certificates,
            expiring_before=soon,
            now=timezone.now(),
            feed_addresses=feed_addresses(tenant),
        ),
    )


@login_required
def number_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled while a number is being provisioned, so the page shows progress across reloads."""
    require_role(request, *SETUP_ROLES)
    number = get_object_or_404(PhoneNumber, pk=pk)
    return JsonResponse(
        {
            "state": number.state,
            "state_display": number.get_state_display(),
            "number": number.number,
            "failure_reason": number.failure_reason,
        }
    )


@login_required
def endpoint_settings(request: HttpRequest, pk: int) -> HttpResponse:
    """An endpoint's SMS settings and message texts (all languages in one form: switching loses nothing)."""
    require_role(request, *SETUP_ROLES)
    can_configure = request.membership.role == Role.ADMINISTRATOR
    if request.method == "POST":
        require_role(request, Role.ADMINISTRATOR)
    endpoint = get_object_or_404(FhirEndpoint, pk=pk)
    row = SmsSettings.objects.filter(endpoint=endpoint).first() or SmsSettings(
        tenant=request.tenant, endpoint=endpoint
    )
    numbers = PhoneNumber.objects.filter(state=NumberState.ACTIVE)
    codes = [code for code, _ in LANGUAGES]
    language = request.POST.get("language") or request.GET.get("language") or row.default_language or "en"
    if language not in codes:
        language = "en"
    initial = {
        "phone_number": str(row.phone_number_id or ""),
        "confirmations_enabled": row.confirmations_enabled,
        "reminders_enabled": row.reminders_enabled,
        "reminder_lead_times": format_lead_times(row.reminder_lead_minutes),
        "quiet_hours_start": row.quiet_hours_start,
        "quiet_hours_end": row.quiet_hours_end,
        "default_language": row.default_language,
        "contact": row.contact,
        "appointment_id_field": row.appointment_id_field,
        "phone_region": row.phone_region,
    }
    form = EndpointSmsForm(request.POST or None, initial=initial, numbers=numbers)
    if not can_configure:
        for field in form.fields.values():
            field.disabled = True

    def text_of(lang: str, kind: str) -> str:
        """What was typed (an emptied box means the shipped text), else the saved or shipped text."""
        key = f"template_{lang}_{kind}"
        if request.method == "POST" and key in request.POST:
            return request.POST[key].strip() or template_for({}, lang, kind)
        return template_for(row.templates, lang, kind)

    texts = {lang: {kind: text_of(lang, kind) for kind, _ in MESSAGE_KINDS} for lang in codes}
    if request.method == "POST" and request.POST.get("action") == "save" and form.is_valid():
        data = form.cleaned_data
        # Only what differs from the shipped texts is stored, so improvements to those still apply.
        overrides = {
            lang: {
                kind: "" if text == SHIPPED.get(lang, {}).get(kind) else text for kind, text in kinds.items()
            }
            for lang, kinds in texts.items()
        }
        try:
            number = numbers.filter(pk=data["phone_number"]).first() if data["phone_number"] else None
            sms_settings_update(
                endpoint=endpoint,
                phone_number=number,
                confirmations_enabled=data["confirmations_enabled"],
                reminders_enabled=data["reminders_enabled"],
                reminder_lead_minutes=parse_lead_times(data["reminder_lead_times"]),
                quiet_hours_start=data["quiet_hours_start"],
                quiet_hours_end=data["quiet_hours_end"],
                default_language=data["default_language"],
                contact=data["contact"],
                appointment_id_field=data["appointment_id_field"],
                phone_region=data["phone_region"],
                templates={**row.templates, **overrides},
            )
        except ValidationError as error:
            add_service_errors(form, error)
        else:
            messages.success(request, f"SMS settings of {endpoint.label} were saved.")
            return redirect("portal:sms")
    # The preview names the contact being typed, not only the saved one.
    contact = (request.POST.get("contact", "") if request.method == "POST" else row.contact).strip()
    groups = []
    for lang, name in LANGUAGES:
        values = _example_values(lang, request.tenant.name, contact, endpoint.time_zone)
        previews = []
        for kind, title in MESSAGE_KINDS:
            text = texts[lang][kind]
            problems = template_problems(text)
            rendered = "" if problems else text.format(**values)
            previews.append(
                {
                    "kind": kind,
                    "title": title,
                    "text": text,
                    "problems": problems,
                    "preview": rendered,
                    "segments": segment_count(rendered) if rendered else None,
                }
            )
        groups.append({"code": lang, "name": name, "previews": previews})
    if request.method == "POST":
        # Open the language whose texts need fixing, if the one shown has none.
        with_problems = [g["code"] for g in groups if any(p["problems"] for p in g["previews"])]
        if with_problems and language not in with_problems:
            language = with_problems[0]
    return render(
        request,
        "sms/endpoint_settings.html",
        wizard_context(
            request,
            "sms",
            endpoint=endpoint,
            form=form,
            groups=groups,
            language=language,
            languages=LANGUAGES,
        ),
    )
