"""Background tasks of the SMS app: each takes a primary key, runs in the tenant scope and calls one service."""

from __future__ import annotations

import logging
from datetime import timedelta

from connector.background import tenant_task
from sms.models import NumberState, PhoneNumber, TollFreeVerification
from tenants.scoping import all_tenants, tenant_scope

logger = logging.getLogger(__name__)

STALLED_REQUEST = timedelta(minutes=30)  # a requested row this old has no task left to run it


@tenant_task(PhoneNumber)
def phone_number_provision(number: PhoneNumber) -> str:
    """Search and buy the number of one request. A temporary provider error is raised, so django-q retries."""
    from sms.services.numbers import phone_number_provision as provision

    return provision(phone_number=number).state


def phone_number_refresh_verifications() -> int:
    """Scheduled hourly: ask the provider about every pending toll-free verification. Returns how many changed."""
    from sms.backends import SmsError
    from sms.services.numbers import phone_number_refresh_verification as refresh

    with all_tenants():
        pending = list(
            PhoneNumber.objects.select_related("tenant")
            .filter(state=NumberState.ACTIVE, toll_free=True, verification=TollFreeVerification.PENDING)
            .order_by("pk")
        )
    changed = 0
    for number in pending:
        with tenant_scope(number.tenant):
            try:
                refreshed = refresh(phone_number=number)
            except SmsError as error:
                # One number's failure must not hold up the others; the next run asks again.
                logger.warning("verification of phone number %s not refreshed: %s", number.pk, error.message)
                continue
        changed += refreshed.verification != TollFreeVerification.PENDING
    return changed


def phone_numbers_provision_stalled() -> int:
    """The former schedule's name (a queued run during an upgrade still finds it): the sweeper does it now."""
    from connector.sweeper import phone_numbers_recover

    return phone_numbers_recover()


def messages_dispatch() -> dict:
    """Scheduled every minute, and queued after new texts: send everything that is due."""
    from sms.services.dispatch import messages_dispatch as dispatch

    result = dispatch()
    return {
        "claimed": result.claimed,
        "sent": result.sent,
        "retried": result.retried,
        "failed": result.failed,
        "held": result.held,
    }


def appointment_phones_purge() -> int:
    """Scheduled hourly: forget patients' numbers once their visit is over plus the grace period."""
    from sms.services.appointments import appointment_phones_purge as purge

    with all_tenants():
        return purge()


def signing_certificates_warn_expiring() -> int:
    """Scheduled daily: e-mail administrators about feed certificates that expire within 30 days."""
    from sms.services.certificates import certificates_warn_expiring

    return certificates_warn_expiring()
