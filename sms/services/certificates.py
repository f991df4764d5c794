"""Uploading the certificate that checks the signature of the EHR's scheduling feed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from connector.models import Environment
from sms.certificates import EXPIRY_WARNING_DAYS, certificate_parse
from sms.models import SigningCertificate
from tenants.models import Membership, Role, Tenant, TenantStatus
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)


def certificate_upload(
    *, tenant: Tenant, environment: str, data: bytes | str, uploaded_by
) -> SigningCertificate:
    """Check `data` and make it the active certificate of `environment`, replacing the previous one.

    The previous active certificate is deactivated in the same transaction, so
    there is never a moment with two (or, if the new one is refused, none).
    The returned row carries `warnings` (a tuple of strings, e.g. "expires in 10
    days") for the portal to show; they are not stored.
    """
    if environment not in Environment.values:
        raise ValidationError(
            f"Unknown environment {environment!r}: use test or production.", code="environment"
        )
    parsed = certificate_parse(data)
    with tenant_scope(tenant), transaction.atomic():
        previous = list(
            SigningCertificate.objects.select_for_update().filter(
                tenant=tenant, environment=environment, active=True
            )
        )
        for row in previous:
            row.active = False
            row.save(update_fields=["active"])  # save(), not update(): the history records who replaced it
        certificate = SigningCertificate.objects.create(
            tenant=tenant,
            environment=environment,
            pem=parsed.pem,
            thumbprint_sha256=parsed.thumbprint_sha256,
            thumbprint_sha1=parsed.thumbprint_sha1,
            subject=parsed.subject,
            key_description=parsed.key_description,
            not_before=parsed.not_before,
            not_after=parsed.not_after,
            uploaded_by=uploaded_by,
            active=True,
        )
    certificate.warnings = parsed.warnings
    certificate.expires_soon = parsed.expires_soon
    return certificate


def certificates_warn_expiring(*, now: datetime | None = None) -> int:
    """E-mail each organization's administrators once about an active feed certificate expiring soon.

    "Soon" is EXPIRY_WARNING_DAYS (30) days; the portal shows the same warning
    from then on. A certificate is warned about once (`expiry_warned_at`); its
    replacement, a new row, is warned about in its turn. Returns how many were sent.
    """
    now = now or timezone.now()
    with all_tenants():
        due = list(
            SigningCertificate.objects.select_related("tenant")
            .filter(
                active=True,
                expiry_warned_at__isnull=True,
                not_after__lte=now + timedelta(days=EXPIRY_WARNING_DAYS),
                tenant__status=TenantStatus.ENABLED,
            )
            .order_by("pk")
        )
    sent = 0
    for certificate in due:
        with tenant_scope(certificate.tenant):
            recipients = sorted(
                set(
                    Membership.objects.filter(tenant=certificate.tenant, role=Role.ADMINISTRATOR)
                    .exclude(user__email="")
                    .values_list("user__email", flat=True)
                )
            )
            # Claim first, so that two runs at once never send the same warning twice.
            with transaction.atomic():
                claimed = SigningCertificate.objects.filter(
                    pk=certificate.pk, expiry_warned_at__isnull=True
                ).update(expiry_warned_at=now)
                if claimed:
                    # The certificate.expiring webhook commits with the claim: sent once, never lost.
                    from connector.webhooks.events import emit_certificate_expiring

                    emit_certificate_expiring(certificate=certificate)
            if not claimed or not recipients:
                continue
        expired = certificate.not_after <= now
        subject = (
            f"{certificate.tenant.name}: the scheduling feed certificate "
            f"({certificate.get_environment_display().lower()}) "
            + ("has expired" if expired else f"expires on {certificate.not_after:%Y-%m-%d}")
        )
        body = (
            f"The certificate that signs the EHR's scheduling messages for the "
            f"{certificate.get_environment_display().lower()} environment "
            f"(SHA-256 {certificate.thumbprint_sha256[:16]}…) "
            + (
                "has expired: every message is refused until a renewed certificate is uploaded."
                if expired
                else f"expires on {certificate.not_after:%Y-%m-%d %H:%M} UTC. From then on every message "
                "is refused (HTTPS and MLLP)."
            )
            + "\n\nAsk the EHR's interface team for the renewed certificate and upload it in the portal: "
            f"{settings.PUBLIC_BASE_URL}{reverse('portal:sms')}#sms-certificates\n"
        )
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
        logger.info(
            "certificate %s expiry warning sent to %d administrators", certificate.pk, len(recipients)
        )
        sent += 1
    return sent
