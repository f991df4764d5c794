"""Sending numbers: request, provision (search and buy), toll-free verification, release.

A request creates a PhoneNumber in state "requested" and queues the task
`sms.tasks.phone_number_provision` once the transaction commits. The task:

1. claims the row atomically (requested -> provisioning, or a row stuck in
   provisioning for more than 15 minutes, whose worker died), so a task
   delivered twice never buys twice;
2. if an earlier attempt was interrupted after choosing a number (the number
   is remembered on the row before buying), asks the provider whether that
   purchase went through (`find_number`) before searching again;
3. searches, remembers the number found, buys it, and stores number,
   provider_id and provider: state "active", verification "not_submitted"
   for a toll-free number, "not_applicable" for a local one.

A permanent SmsError ends in state "failed" with `failure_reason`, a sentence
an administrator can act on (request again, change settings, choose another
country). A temporary one puts the row back to "requested" and is raised
again: django-q does not acknowledge a task that raised, so its broker
delivers it again after Q_CLUSTER["retry"] seconds, up to
Q_CLUSTER["max_attempts"] times; the claim makes every delivery safe.
The scheduled task `sms.tasks.phone_numbers_provision_stalled` queues rows
still "requested" after that, or stuck in "provisioning".

Refusals an administrator can fix (linked numbers, wrong state, provider
errors on submit or release) are `ValidationError`s with a clear message.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from connector.background import queue_after_commit
from sms.backends import BaseSmsBackend, ProvisionedNumber, SmsError, get_sms_backend
from sms.models import NumberState, PhoneNumber, SmsSettings, TollFreeVerification
from tenants.models import Tenant

logger = logging.getLogger(__name__)

STALE_CLAIM = timedelta(minutes=15)  # a provisioning row older than this was abandoned by its worker


def _queue(pk: int) -> None:
    queue_after_commit("sms.tasks.phone_number_provision", pk)


def phone_number_request(
    *, tenant: Tenant, requested_by, country: str = "US", toll_free: bool = True
) -> PhoneNumber:
    """Ask for a new sending number; it is obtained in the background (see the module docstring)."""
    number = PhoneNumber.objects.create(
        tenant=tenant,
        country=country.upper(),
        toll_free=toll_free,
        state=NumberState.REQUESTED,
        requested_by=requested_by,
        verification=TollFreeVerification.NOT_SUBMITTED if toll_free else TollFreeVerification.NOT_APPLICABLE,
    )
    _queue(number.pk)
    return number


def _claim(phone_number: PhoneNumber) -> bool:
    now = timezone.now()
    claimable = Q(state=NumberState.REQUESTED) | Q(
        state=NumberState.PROVISIONING, updated_at__lt=now - STALE_CLAIM
    )
    # update() skips auto_now: the claim time is set by hand, it dates the lease.
    return (
        PhoneNumber.objects.filter(claimable, pk=phone_number.pk).update(
            state=NumberState.PROVISIONING, updated_at=now
        )
        == 1
    )


def _activate(phone_number: PhoneNumber, backend: BaseSmsBackend, owned: ProvisionedNumber) -> PhoneNumber:
    phone_number.number = owned.number
    phone_number.provider_id = owned.provider_id
    phone_number.provider = backend.name
    phone_number.toll_free = owned.toll_free
    phone_number.state = NumberState.ACTIVE
    phone_number.failure_reason = ""
    phone_number.verification = (
        TollFreeVerification.NOT_SUBMITTED if owned.toll_free else TollFreeVerification.NOT_APPLICABLE
    )
    phone_number.save()
    logger.info("phone number %s active at %s", phone_number.pk, backend.name)
    return phone_number


def _give_back(phone_number: PhoneNumber, *, reason: str, keep_candidate: bool) -> None:
    """Back to "requested" for another attempt; the candidate number stays when its purchase may have happened."""
    phone_number.state = NumberState.REQUESTED
    phone_number.failure_reason = reason
    if not keep_candidate:
        phone_number.number = ""
    phone_number.save(update_fields=["state", "failure_reason", "number", "updated_at"])


def _fail(phone_number: PhoneNumber, reason: str) -> None:
    phone_number.state = NumberState.FAILED
    phone_number.failure_reason = reason
    phone_number.number = ""
    phone_number.save(update_fields=["state", "failure_reason", "number", "updated_at"])
    logger.warning("phone number %s failed: %s", phone_number.pk, reason)


def phone_number_provision(*, phone_number: PhoneNumber) -> PhoneNumber:
    """Obtain the number for a request (the task's body). Idempotent; raises a temporary SmsError to be retried."""
    if not _claim(phone_number):
        phone_number.refresh_from_db()
        return phone_number  # done, failed, released, or another worker has it
    phone_number.refresh_from_db()
    backend = get_sms_backend()
    kind = "toll-free" if phone_number.toll_free else "local"
    stage = "search"
    try:
        if phone_number.number:
            # An earlier attempt chose this number and was interrupted around its purchase.
            stage = "find"
            owned = backend.find_number(phone_number.number)
            if owned is not None:
                return _activate(phone_number, backend, owned)
            phone_number.number = ""
            stage = "search"
        available = backend.search_number(country=phone_number.country, toll_free=phone_number.toll_free)
        phone_number.number = available.number
        try:
            with transaction.atomic():
                phone_number.save(update_fields=["number", "updated_at"])
        except IntegrityError:
            # Another row remembers this number as its own candidate: search again next time.
            phone_number.number = ""
            raise SmsError(f"{available.number} is held by another request.", permanent=False) from None
        stage = "purchase"
        owned = backend.purchase_number(available)
    except SmsError as error:
        if error.permanent:
            reason = f"No {kind} number could be obtained from {backend.name}: {error.message}"
            if stage == "find":
                reason += f" If {phone_number.number} shows in the {backend.name} account, release it there."
            _fail(phone_number, reason)
            return phone_number
        # After a search the number was not bought; from the purchase on, it may have been.
        _give_back(
            phone_number,
            reason=f"Temporary problem at {backend.name}, trying again: {error.message}",
            keep_candidate=stage in ("find", "purchase"),
        )
        raise
    except Exception:
        _give_back(
            phone_number,
            reason="Unexpected error; trying again.",
            keep_candidate=stage in ("find", "purchase"),
        )
        raise
    return _activate(phone_number, backend, owned)


def _backend_for(phone_number: PhoneNumber) -> BaseSmsBackend:
    backend = get_sms_backend()
    if phone_number.provider and phone_number.provider != backend.name:
        raise ValidationError(
            f"{phone_number} was obtained from {phone_number.provider}, but the connector now uses "
            f"{backend.name} (SMS_BACKEND); manage it at {phone_number.provider} directly."
        )
    return backend


def _provisioned(phone_number: PhoneNumber) -> ProvisionedNumber:
    return ProvisionedNumber(
        number=phone_number.number, provider_id=phone_number.provider_id, toll_free=phone_number.toll_free
    )


def phone_number_submit_verification(*, phone_number: PhoneNumber, details: dict) -> PhoneNumber:
    """Submit the toll-free verification (details: sms.backends.base.TOLL_FREE_DETAILS). ValidationError if refused."""
    if not phone_number.toll_free:
        raise ValidationError("Only toll-free numbers need a verification.")
    if phone_number.state != NumberState.ACTIVE:
        raise ValidationError("The number is not active yet; submit its verification once it is.")
    if phone_number.verification in (TollFreeVerification.PENDING, TollFreeVerification.VERIFIED):
        state = phone_number.get_verification_display().lower()
        raise ValidationError(f"The verification of {phone_number} is already {state}.")
    backend = _backend_for(phone_number)
    try:
        state = backend.submit_toll_free_verification(_provisioned(phone_number), dict(details))
    except SmsError as error:
        raise ValidationError(error.message) from error
    phone_number.verification = state
    phone_number.verification_details = {k: v for k, v in details.items()}
    phone_number.save(update_fields=["verification", "verification_details", "updated_at"])
    return phone_number


def phone_number_refresh_verification(*, phone_number: PhoneNumber) -> PhoneNumber:
    """Ask the provider how a pending verification stands (scheduled). Raises SmsError from the provider."""
    if not (phone_number.toll_free and phone_number.state == NumberState.ACTIVE):
        return phone_number
    backend = get_sms_backend()
    if phone_number.provider != backend.name or not backend.manages_toll_free_verification:
        return phone_number  # decided elsewhere (the provider's portal); support staff record it
    state = backend.toll_free_verification_status(_provisioned(phone_number))
    if state != phone_number.verification:
        logger.info(
            "phone number %s verification %s -> %s", phone_number.pk, phone_number.verification, state
        )
        phone_number.verification = state
        phone_number.save(update_fields=["verification", "updated_at"])
    return phone_number


def phone_number_release(*, phone_number: PhoneNumber) -> PhoneNumber:
    """Give the number back to the provider. Refused while an endpoint uses it or while it is being obtained.

    The row stays (messages point to it) in state "released"; its number is
    emptied, as the provider may sell it again (the history keeps it).
    """
    linked = list(
        SmsSettings.objects.filter(phone_number=phone_number).select_related("endpoint").order_by("pk")
    )
    if linked:
        names = ", ".join(str(row.endpoint) for row in linked)
        raise ValidationError(
            f"{phone_number} still sends the texts of {names}; choose another number for "
            f"{'that endpoint' if len(linked) == 1 else 'those endpoints'} first."
        )
    if phone_number.state == NumberState.RELEASED:
        return phone_number
    if phone_number.state == NumberState.PROVISIONING:
        raise ValidationError("The number is being obtained right now; release it in a few minutes.")
    if phone_number.state == NumberState.REQUESTED:
        # Only a row not yet claimed may be withdrawn: the update fails if a task just claimed it.
        if not PhoneNumber.objects.filter(pk=phone_number.pk, state=NumberState.REQUESTED, number="").update(
            state=NumberState.RELEASED, updated_at=timezone.now()
        ):
            raise ValidationError("The number is being obtained right now; release it in a few minutes.")
        phone_number.refresh_from_db()
        return phone_number
    if phone_number.state == NumberState.ACTIVE and phone_number.provider_id:
        backend = _backend_for(phone_number)
        try:
            backend.release_number(phone_number.provider_id)
        except SmsError as error:
            raise ValidationError(
                f"{backend.name} did not release {phone_number}: {error.message}"
            ) from error
    phone_number.state = NumberState.RELEASED
    phone_number.number = ""
    phone_number.save(update_fields=["state", "number", "updated_at"])
    return phone_number
