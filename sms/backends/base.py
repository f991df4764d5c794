"""The interface every SMS backend implements, and the values that cross it.

An SMS backend sends texts through a provider (Twilio, Azure Communication
Services, the console for the demo, memory for tests), obtains and releases
the organizations' sending numbers, submits toll-free verifications, and
turns the provider's callbacks into delivery reports and inbound texts.
Backends are chosen by dotted path, like Django's `EMAIL_BACKEND` (see
`sms.backends.get_sms_backend`).

Rules for every backend:

- Every failure to reach or use the provider is an `SmsError`. Its `permanent`
  flag says whether sending the same thing again can succeed; its `code` says
  what kind of failure it was (`SmsErrorCode`); `retry_after` carries the
  seconds a provider asked for with a 429. Backends do not pace or retry
  throttled calls themselves: the dispatcher does.
- Error messages are written for an administrator and never carry a
  patient's full phone number (see `mask_numbers`).
- A callback that fails the provider's authentication raises
  `CallbackRejected`; nothing in it is trusted or returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import phonenumbers
from django.http import HttpRequest, HttpResponse

ReportStatus = Literal["delivered", "failed", "sent"]
REPORT_STATUSES: tuple[str, ...] = ("delivered", "failed", "sent")

# Toll-free verification states, as in sms.models.TollFreeVerification.
NOT_SUBMITTED, PENDING, VERIFIED, REJECTED = "not_submitted", "pending", "verified", "rejected"
VERIFICATION_STATES: tuple[str, ...] = (NOT_SUBMITTED, PENDING, VERIFIED, REJECTED)

# What `submit_toll_free_verification` receives (the portal's verification form).
# Backends map these to their provider's fields; other keys a backend documents
# (e.g. Twilio's own parameter names) pass through.
TOLL_FREE_DETAILS: dict[str, str] = {
    "business_name": "Legal name of the organization sending the texts.",
    "business_website": "Public website of the organization.",
    "contact_email": "Where the provider sends the verification result.",
    "contact_phone": "A phone number of the organization's contact person.",
    "monthly_volume": "Expected texts per month (a number).",
    "use_case": "How the texts are used, in a sentence or two.",
    "sample_message": "One text exactly as patients receive it.",
    "opt_in_type": "Optional: how patients agree (VERBAL, PAPER_FORM, WEB_FORM...); default VERBAL.",
    "opt_in_image_urls": "Optional: public links to an image or page showing how patients agree.",
}


class SmsErrorCode:
    """Values of `SmsError.code`."""

    INVALID_NUMBER = "invalid_number"  # the recipient's number cannot receive texts
    OPTED_OUT = "opted_out"  # the recipient told the provider STOP
    RATE_LIMITED = "rate_limited"  # 429: slow down (see retry_after)
    UNAVAILABLE = "unavailable"  # the provider is down, slow or unreachable
    AUTH = "auth"  # the credentials were refused
    NO_NUMBERS = "no_numbers"  # no number of the kind asked for is available
    INVALID_DETAILS = "invalid_details"  # verification details missing or refused
    NOT_SUPPORTED = "not_supported"  # this provider cannot do that through its API
    REJECTED = "rejected"  # any other refusal of the provider


class SmsError(Exception):
    """An SMS provider could not do what was asked.

    `permanent` is True when the same call cannot succeed until someone changes
    something (the number, a setting, a registration: the message says what);
    False for throttling, timeouts and outages. `retry_after` is the number of
    seconds the provider asked callers to wait (from a 429's Retry-After), when
    it said so. `code` is one of `SmsErrorCode`.
    """

    def __init__(
        self, message: str, *, permanent: bool, code: str = "", retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code or (SmsErrorCode.REJECTED if permanent else SmsErrorCode.UNAVAILABLE)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"SmsError({self.message!r}, code={self.code!r}, permanent={self.permanent}, "
            f"retry_after={self.retry_after})"
        )


class CallbackRejected(Exception):
    """A callback request failed its signature or secret check, or is not what the provider sends.

    Answer it with a 4xx (403 for a bad signature, 404 for a backend without callbacks).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SentMessage:
    """A text the provider accepted. Delivery reports name it by `provider_message_id`."""

    provider_message_id: str


@dataclass(frozen=True)
class AvailableNumber:
    """A number the provider offers, found by `search_number` and not yet bought.

    `provider_id` is what the provider needs to buy it (Twilio: the number
    itself; ACS: the search's ID, which holds the number for about 16 minutes).
    """

    number: str  # E.164
    provider_id: str
    toll_free: bool


@dataclass(frozen=True)
class ProvisionedNumber:
    """A number the account owns. `provider_id` releases it (Twilio: the number's PN SID; ACS: the number)."""

    number: str  # E.164
    provider_id: str
    toll_free: bool


@dataclass(frozen=True)
class DeliveryReport:
    """What a provider says became of a sent text.

    `status` is "delivered", "failed" (not delivered, finally) or "sent"
    (handed to the carrier). `error` explains a failure (the provider's code
    and meaning), empty otherwise. `occurred_at` is timezone-aware.
    """

    provider_message_id: str
    status: ReportStatus
    error: str
    occurred_at: datetime

    def __post_init__(self) -> None:
        if self.status not in REPORT_STATUSES:
            raise ValueError(f"status must be one of {', '.join(REPORT_STATUSES)}, not {self.status!r}")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must be a timezone-aware datetime")


@dataclass(frozen=True)
class InboundText:
    """A text a patient sent to one of the organizations' numbers.

    `from_number` and `to_number` are E.164 as the provider gave them (with a
    leading "+" added where a provider leaves it out); callers check them.
    `provider_message_id` is the same when a provider delivers the text twice.
    """

    from_number: str
    to_number: str
    body: str
    provider_message_id: str


@dataclass
class CallbackResult:
    """What a backend made of one callback request.

    `response`, when set, must be sent back as it is (Twilio's empty TwiML for
    an inbound text, Event Grid's validation handshake). Otherwise the view
    answers with a 2xx of its own once the reports and texts are applied.
    Both lists may be empty: callbacks the connector does not track are
    accepted and yield nothing.
    """

    response: HttpResponse | None = None
    reports: list[DeliveryReport] = field(default_factory=list)
    inbound: list[InboundText] = field(default_factory=list)


class BaseSmsBackend:
    """Base class of the SMS backends.

    Subclasses set `name` (stored as `PhoneNumber.provider` and
    `OutboundMessage.provider`, and the slug of the callback URL
    `/sms/callbacks/<name>/`) and implement the methods below. Every method
    that talks to the provider raises `SmsError`.
    """

    name: str = ""
    # False when the provider has no API for toll-free verification (ACS: the
    # Azure portal). The status is then whatever support staff record; the
    # scheduled refresh leaves it alone.
    manages_toll_free_verification: bool = True

    def configuration_problems(self) -> list[str]:
        """Settings this backend needs but does not have, as sentences (empty: ready)."""
        return []

    def send(self, *, from_number: str, to_number: str, body: str) -> SentMessage:
        """Send one text from one of our numbers (E.164) to a patient (E.164).

        Asks the provider for delivery reports (through `parse_callback`).
        Raises `SmsError`: `invalid_number` and `opted_out` are permanent for
        that recipient, `rate_limited` carries `retry_after` when the provider
        gave it. Not idempotent: the dispatcher claims a text before calling.
        """
        raise NotImplementedError

    def find_sent(self, *, from_number: str, to_number: str, since: datetime) -> SentMessage | None:
        """After a dispatcher died mid-send: the text if the provider accepted it, None if it did not.

        Asks the provider's message history for a text from `from_number` to
        `to_number` accepted at or after `since` (the moment the text was
        claimed). Another text to the same number after that moment also
        counts: that errs on the side of not sending twice. Raises
        `NotImplementedError` where the provider has no such API (the text is
        then marked "outcome unknown" and never resent blindly), `SmsError`
        when the provider cannot answer now (asked again later).
        """
        raise NotImplementedError

    def search_number(self, *, country: str, toll_free: bool) -> AvailableNumber:
        """Find one number able to send and receive texts in `country` (ISO 3166 alpha-2).

        A toll-free number when `toll_free`, else a local (geographic) one.
        Raises `SmsError` (`no_numbers`, permanent, when there is none).
        """
        raise NotImplementedError

    def purchase_number(self, number: AvailableNumber) -> ProvisionedNumber:
        """Buy a number found by `search_number` and point its inbound texts at our callback.

        Not idempotent: the provisioning service claims the request first and
        remembers the number before buying, so an interrupted purchase is
        found again with `find_number` instead of buying a second one.
        """
        raise NotImplementedError

    def find_number(self, number: str) -> ProvisionedNumber | None:
        """The number (E.164) if the account owns it, else None.

        Used after an interrupted purchase, to learn whether it went through.
        """
        raise NotImplementedError

    def release_number(self, provider_id: str) -> None:
        """Give a number back to the provider. A number already gone counts as released."""
        raise NotImplementedError

    def submit_toll_free_verification(self, number: ProvisionedNumber, details: dict) -> str:
        """Submit the toll-free verification of `number`; returns the new state (normally "pending").

        `details` has the keys of `TOLL_FREE_DETAILS`. Raises `SmsError`
        (`invalid_details` for missing or refused details, `not_supported`
        where the provider only takes verifications in its own portal).
        Submitting again after a rejection resubmits the same registration.
        """
        raise NotImplementedError

    def toll_free_verification_status(self, number: ProvisionedNumber) -> str:
        """The verification state of `number`: not_submitted, pending, verified or rejected."""
        raise NotImplementedError

    def parse_callback(self, request: HttpRequest) -> CallbackResult:
        """Authenticate one callback request of the provider and read it.

        Raises `CallbackRejected` when the provider's signature or shared
        secret is missing or wrong, or the body is not what the provider sends.
        """
        raise CallbackRejected(f"The {self.name or 'SMS'} backend accepts no callbacks.")


# --- helpers shared by the backends ---------------------------------------------------------

_NUMBER_LIKE = re.compile(r"\+?\d[\d ()\-.]{5,}\d")


def mask(number: str) -> str:
    """A phone number shown by its last four digits only: '…0123'."""
    digits = re.sub(r"\D", "", number or "")
    return f"…{digits[-4:]}" if digits else ""


def mask_numbers(text: str) -> str:
    """`text` with every phone-number-like run of digits masked to its last four digits.

    Providers repeat the recipient's number in their error messages; those
    messages are stored with the text and logged.
    """
    return _NUMBER_LIKE.sub(lambda match: mask(match.group(0)), text or "")


def parse_retry_after(value: str | None) -> int | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - datetime.now(UTC)).total_seconds()))


def is_toll_free(e164: str) -> bool:
    """Whether a number is toll-free by its numbering plan (NANP 800, 833, 844...)."""
    try:
        parsed = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.TOLL_FREE


def plain_e164(value: str) -> str:
    """A provider's number as E.164: trimmed, with the '+' some providers leave out."""
    value = (value or "").strip().replace(" ", "")
    if value and value[0] != "+" and value.isdigit():
        value = "+" + value
    return value
