"""Uploading the certificate that checks the signature of the EHR's scheduling feed."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from connector.models import Environment
from sms.certificates import certificate_parse
from sms.models import SigningCertificate
from tenants.models import Tenant
from tenants.scoping import tenant_scope


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
