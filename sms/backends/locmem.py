"""The test backend: texts and numbers kept in memory, like Django's locmem email backend.

    from sms.backends import locmem

    locmem.outbox            # every text sent (LocmemText), oldest first
    locmem.numbers           # numbers bought, by provider_id (LocmemNumber), released ones included
    locmem.purchases         # every ProvisionedNumber bought, in order (a second purchase shows here)
    locmem.calls             # the name of every provider call made: "send", "search_number", ...
    LocmemSmsBackend.fail_next = SmsError("...", permanent=False)   # the next provider call fails
    LocmemSmsBackend.failures = [None, SmsError(...)]               # then these, one per call
    locmem.reset()           # all of the above emptied, IDs from 1 again

Failures: every call that would reach a provider (send, search_number,
purchase_number, find_number, release_number, find_sent and the two verification calls)
first takes `fail_next`, else the first entry of `failures`; an SmsError is
raised, None lets that call through. So `failures = [None, error]` lets a
search succeed and fails the purchase after it.

IDs are deterministic: texts "locmem-msg-1", "locmem-msg-2"...; numbers are
bought as "locmem-PN1"...; searches offer +1 833 555 0100, 0101... (toll-free)
or +1 201 555 0100... (local), skipping numbers already bought.

Toll-free verification: a submit sets the number's state to "pending" (in
`verifications`, by provider_id); a test moves it on with
`locmem.verifications["locmem-PN1"] = "verified"`.

Callbacks: a JSON body `{"reports": [{provider_message_id, status, error,
occurred_at}], "inbound": [{from_number, to_number, body,
provider_message_id}]}` with the header `X-Locmem-Secret:
<LocmemSmsBackend.callback_secret>` gives those reports and texts, so the
callback view can be tested end to end. A body with `"twiml": true` answers
with an empty TwiML response, as Twilio's inbound callback does.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import datetime

from django.http import HttpRequest, HttpResponse

from sms.backends.base import (
    NOT_SUBMITTED,
    PENDING,
    AvailableNumber,
    BaseSmsBackend,
    CallbackRejected,
    CallbackResult,
    DeliveryReport,
    InboundText,
    ProvisionedNumber,
    SentMessage,
    SmsError,
    SmsErrorCode,
)

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class LocmemText:
    from_number: str
    to_number: str
    body: str
    provider_message_id: str


@dataclass
class LocmemNumber:
    number: str
    provider_id: str
    toll_free: bool
    released: bool = False


outbox: list[LocmemText] = []
numbers: dict[str, LocmemNumber] = {}
purchases: list[ProvisionedNumber] = []
verifications: dict[str, str] = {}
verification_details: dict[str, dict] = {}
calls: list[str] = []
_message_ids = itertools.count(1)
_number_ids = itertools.count(1)


def reset() -> None:
    """Forget every text, number, verification and queued failure; IDs start from 1 again."""
    global _message_ids, _number_ids
    outbox.clear()
    numbers.clear()
    purchases.clear()
    verifications.clear()
    verification_details.clear()
    calls.clear()
    _message_ids = itertools.count(1)
    _number_ids = itertools.count(1)
    LocmemSmsBackend.fail_next = None
    LocmemSmsBackend.failures = []


class LocmemSmsBackend(BaseSmsBackend):
    """Records texts and numbers in memory; can be told to fail the next calls."""

    name = "locmem"
    fail_next: SmsError | None = None
    failures: list[SmsError | None] = []
    callback_secret: str = "locmem-callback-secret"

    def _call(self, operation: str) -> None:
        calls.append(operation)
        cls = LocmemSmsBackend
        if cls.fail_next is not None:
            failure, cls.fail_next = cls.fail_next, None
            raise failure
        if cls.failures:
            failure = cls.failures.pop(0)
            if failure is not None:
                raise failure

    def send(self, *, from_number: str, to_number: str, body: str) -> SentMessage:
        self._call("send")
        if not _E164.match(to_number or ""):
            raise SmsError(
                "The recipient's number is not in E.164 form.",
                permanent=True,
                code=SmsErrorCode.INVALID_NUMBER,
            )
        text = LocmemText(from_number, to_number, body, f"locmem-msg-{next(_message_ids)}")
        outbox.append(text)
        return SentMessage(provider_message_id=text.provider_message_id)

    def find_sent(self, *, from_number: str, to_number: str, since: datetime) -> SentMessage | None:
        self._call("find_sent")
        for text in outbox:
            if (text.from_number, text.to_number) == (from_number, to_number):
                return SentMessage(provider_message_id=text.provider_message_id)
        return None

    def search_number(self, *, country: str, toll_free: bool) -> AvailableNumber:
        self._call("search_number")
        prefix = "+1833555" if toll_free else "+1201555"
        owned = {n.number for n in numbers.values() if not n.released}
        for suffix in range(100, 200):
            number = f"{prefix}0{suffix}"
            if number not in owned:
                return AvailableNumber(number=number, provider_id=number, toll_free=toll_free)
        raise SmsError("No numbers left.", permanent=True, code=SmsErrorCode.NO_NUMBERS)

    def purchase_number(self, number: AvailableNumber) -> ProvisionedNumber:
        self._call("purchase_number")
        if any(n.number == number.number and not n.released for n in numbers.values()):
            raise SmsError(f"{number.number} is already owned.", permanent=True)
        provider_id = f"locmem-PN{next(_number_ids)}"
        numbers[provider_id] = LocmemNumber(number.number, provider_id, number.toll_free)
        provisioned = ProvisionedNumber(
            number=number.number, provider_id=provider_id, toll_free=number.toll_free
        )
        purchases.append(provisioned)
        return provisioned

    def find_number(self, number: str) -> ProvisionedNumber | None:
        self._call("find_number")
        for owned in numbers.values():
            if owned.number == number and not owned.released:
                return ProvisionedNumber(
                    number=owned.number, provider_id=owned.provider_id, toll_free=owned.toll_free
                )
        return None

    def release_number(self, provider_id: str) -> None:
        self._call("release_number")
        if provider_id in numbers:
            numbers[provider_id].released = True

    def submit_toll_free_verification(self, number: ProvisionedNumber, details: dict) -> str:
        self._call("submit_toll_free_verification")
        verifications[number.provider_id] = PENDING
        verification_details[number.provider_id] = dict(details)
        return PENDING

    def toll_free_verification_status(self, number: ProvisionedNumber) -> str:
        self._call("toll_free_verification_status")
        return verifications.get(number.provider_id, NOT_SUBMITTED)

    def parse_callback(self, request: HttpRequest) -> CallbackResult:
        if request.headers.get("X-Locmem-Secret") != self.callback_secret:
            raise CallbackRejected("The X-Locmem-Secret header is missing or wrong.")
        try:
            payload = json.loads(request.body)
            reports = [
                DeliveryReport(**{**item, "occurred_at": datetime.fromisoformat(item["occurred_at"])})
                for item in payload.get("reports", [])
            ]
            inbound = [InboundText(**item) for item in payload.get("inbound", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CallbackRejected(f"The body is not a list of reports and inbound texts: {error}") from error
        response = None
        if payload.get("twiml"):
            response = HttpResponse(
                '<?xml version="1.0" encoding="UTF-8"?><Response/>', content_type="text/xml"
            )
        return CallbackResult(response=response, reports=reports, inbound=inbound)
