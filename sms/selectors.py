"""Reads of the SMS app."""

from __future__ import annotations

from collections.abc import Iterable

from sms.models import NumberState, OptOut, SmsConsent, SmsSettings
from tenants.models import Tenant


def number_is_opted_out(tenant: Tenant, hashed_number: str | Iterable[str]) -> bool:
    """Whether the number opted out; pass all its hashes (`number_hashes`) so a rotated key still finds it."""
    hashes = [hashed_number] if isinstance(hashed_number, str) else list(hashed_number)
    return OptOut.objects.filter(tenant=tenant, number_hash__in=hashes, active=True).exists()


UNREAD = object()  # "not read yet": callers that already have a row pass it, even None


def sending_blocker(tenant: Tenant, settings_row: SmsSettings | None, consent=UNREAD) -> str:
    """Why nothing may be sent for this endpoint now, or "" when texts may go out.

    Pass `consent` when it was already read (None for none) to save the query.
    """
    if consent is UNREAD:
        consent = SmsConsent.objects.filter(tenant=tenant).first()
    if consent is None or not consent.complete:
        return "Both consent confirmations are needed before any text is sent."
    if settings_row is None or settings_row.phone_number is None:
        return "No phone number is linked to this endpoint."
    if settings_row.phone_number.state != NumberState.ACTIVE:
        return "The linked phone number is not active."
    return ""
