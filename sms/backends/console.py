"""The demo backend: texts are printed to standard output, numbers are made up.

    SMS_BACKEND = "sms.backends.console.ConsoleSmsBackend"

Each text is logged as one event (logger `sms.backends.console`, INFO) by
whichever process sends it (the django-q worker in the demo), so it goes through
the log redaction like every other line: the recipient is masked to its last
four digits and the patient's join link is redacted (open visits from the
sandbox EHR instead):

    SMS (console backend) from +18335550100 to …0123, id console-5f0c...:
    Org A Health: your video visit ... https://.../join/[redacted]/

Numbers: `search_number` offers the first of +1 833 555 0100...0199 (toll-free)
or +1 201 555 0100...0199 (local) that no PhoneNumber row holds; these are
valid numbers for `phonenumbers` in ranges reserved for fiction, so nothing is
ever bought or reachable. Toll-free verification is approved at once: in the
demo, `submit_toll_free_verification` returns "verified" (a real provider
answers "pending" and decides days later). There are no callbacks: delivery
reports never come, so printed texts stay "sent".
"""

from __future__ import annotations

import logging
import uuid

from django.http import HttpRequest

from sms.backends.base import (
    VERIFIED,
    AvailableNumber,
    BaseSmsBackend,
    CallbackRejected,
    CallbackResult,
    ProvisionedNumber,
    SentMessage,
    SmsError,
    SmsErrorCode,
    is_toll_free,
    mask,
)

TOLL_FREE_PREFIX = "+1833555"
LOCAL_PREFIX = "+1201555"
logger = logging.getLogger(__name__)


class ConsoleSmsBackend(BaseSmsBackend):
    """Prints texts; hands out made-up numbers; approves verifications at once."""

    name = "console"

    def send(self, *, from_number: str, to_number: str, body: str) -> SentMessage:
        message_id = f"console-{uuid.uuid4().hex}"
        # One log event per text: lines from several threads never interleave, and the
        # handler's redaction removes join links (and any phone number in the body).
        logger.info(
            "SMS (console backend) from %s to %s, id %s: %s", from_number, mask(to_number), message_id, body
        )
        return SentMessage(provider_message_id=message_id)

    def search_number(self, *, country: str, toll_free: bool) -> AvailableNumber:
        if country.upper() not in ("US", "CA"):
            raise SmsError(
                f"The console backend only makes up North American numbers, not numbers in {country}.",
                permanent=True,
                code=SmsErrorCode.NO_NUMBERS,
            )
        from sms.models import PhoneNumber
        from tenants.scoping import all_tenants

        prefix = TOLL_FREE_PREFIX if toll_free else LOCAL_PREFIX
        with all_tenants():
            taken = set(
                PhoneNumber.objects.filter(number__startswith=prefix).values_list("number", flat=True)
            )
        for suffix in range(100, 200):
            number = f"{prefix}0{suffix}"
            if number not in taken:
                return AvailableNumber(number=number, provider_id=number, toll_free=toll_free)
        raise SmsError(
            "The console backend has handed out all 100 of its made-up numbers of this kind; release one.",
            permanent=True,
            code=SmsErrorCode.NO_NUMBERS,
        )

    def purchase_number(self, number: AvailableNumber) -> ProvisionedNumber:
        return ProvisionedNumber(number=number.number, provider_id=number.number, toll_free=number.toll_free)

    def find_number(self, number: str) -> ProvisionedNumber | None:
        if number.startswith((TOLL_FREE_PREFIX, LOCAL_PREFIX)):
            return ProvisionedNumber(number=number, provider_id=number, toll_free=is_toll_free(number))
        return None

    def release_number(self, provider_id: str) -> None:
        return None

    def submit_toll_free_verification(self, number: ProvisionedNumber, details: dict) -> str:
        return VERIFIED  # the demo approves at once

    def toll_free_verification_status(self, number: ProvisionedNumber) -> str:
        return VERIFIED

    def parse_callback(self, request: HttpRequest) -> CallbackResult:
        raise CallbackRejected("console backend has no callbacks")
