"""Twilio, through the official `twilio` SDK.

    SMS_BACKEND = "sms.backends.twilio.TwilioSmsBackend"
    TWILIO_ACCOUNT_SID = "AC..."
    TWILIO_AUTH_TOKEN = "..."                       # also checks the callbacks' signatures
    TWILIO_STATUS_CALLBACK_URL = "https://connector.example.org/sms/callbacks/twilio/"
    TWILIO_CALLBACK_BASE_URL = "https://connector.example.org"   # optional, behind proxies

Calls:

- send: `client.messages.create(from_, to, body, status_callback)`, i.e.
  `POST /2010-04-01/Accounts/{sid}/Messages.json`. The status callback URL is
  TWILIO_STATUS_CALLBACK_URL, or `{PUBLIC_BASE_URL}/sms/callbacks/twilio/`.
- numbers: `available_phone_numbers(country).toll_free` (or `.local`)
  `.list(sms_enabled=True, limit=1)`, then `incoming_phone_numbers.create(
  phone_number=..., sms_url=<the callback URL>)` so inbound texts reach the
  connector without any setup in the Twilio console;
  `incoming_phone_numbers(sid).delete()` releases.
- toll-free verification: `messaging.v1.tollfree_verifications` (create,
  or update a rejected one; read back by the number's SID). TWILIO_APPROVED is
  "verified", PENDING_REVIEW and IN_REVIEW "pending", TWILIO_REJECTED "rejected".

Errors (`SmsError.code`): 21211, 21614, 21612, 21401 invalid_number
(permanent); 21610 opted_out (permanent: the recipient texted STOP to this
number); 429 / 20429 rate_limited (temporary, with Retry-After when Twilio
sends it: the SDK drops response headers, so the HTTP client below keeps the
last ones); 401 / 20003 auth (permanent); 5xx and network failures
unavailable (temporary); any other 4xx rejected (permanent, with Twilio's
message). Recipients' numbers in Twilio's messages are masked.

Callbacks (`POST /sms/callbacks/twilio/`, form-encoded) are authenticated with
`X-Twilio-Signature`: HMAC-SHA1 of the URL Twilio called plus the sorted POST
parameters, keyed with the auth token (the SDK's `RequestValidator`). The URL
is TWILIO_CALLBACK_BASE_URL + the request's path and query when set (a proxy
in front of Django changes scheme or host), else `request.build_absolute_uri()`.
A body with `MessageStatus` is a status callback (delivered, undelivered,
failed, sent; others are ignored); one with `Body` is an inbound text, answered
with an empty TwiML `<Response/>` (answers go out through the dispatcher).

TWILIO_API_BASE_URL, when set, sends every API call to that origin instead,
with the Twilio product as the first path segment
(`https://api.twilio.com/2010-04-01/...` becomes `{base}/api/2010-04-01/...`):
for tests against a local server, or an egress proxy.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from sms.backends.base import (
    NOT_SUBMITTED,
    PENDING,
    REJECTED,
    VERIFIED,
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
    is_toll_free,
    mask_numbers,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

TIMEOUT = 15.0  # seconds, per request
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

_INVALID_NUMBER = {21211, 21401, 21612, 21614}
_OPTED_OUT = {21610}
_REPORT_STATUS = {"delivered": "delivered", "undelivered": "failed", "failed": "failed", "sent": "sent"}
_VERIFICATION_STATE = {
    "PENDING_REVIEW": PENDING,
    "IN_REVIEW": PENDING,
    "TWILIO_APPROVED": VERIFIED,
    "TWILIO_REJECTED": REJECTED,
}
# Carrier error codes of status callbacks an administrator may see.
DELIVERY_ERRORS = {
    "30003": "Unreachable destination handset",
    "30004": "Message blocked (the recipient blocked texts or the carrier did)",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Filtered by the carrier as spam",
    "30008": "Unknown error",
    "30032": "Toll-free number not verified",
    "21610": "The recipient replied STOP to this number",
}
# Twilio's message_volume buckets (texts per month).
_VOLUMES = [
    (10, "10"),
    (100, "100"),
    (1_000, "1,000"),
    (10_000, "10,000"),
    (100_000, "100,000"),
    (250_000, "250,000"),
    (500_000, "500,000"),
    (750_000, "750,000"),
    (1_000_000, "1,000,000"),
    (5_000_000, "5,000,000"),
    (10_000_000, "10,000,000+"),
]


class _HttpClient(TwilioHttpClient):
    """The SDK's client, keeping the last response's headers (for Retry-After) and
    optionally sending every request to TWILIO_API_BASE_URL."""

    def __init__(self, base_url: str = "") -> None:
        super().__init__(timeout=TIMEOUT)
        self.base_url = base_url.rstrip("/")
        self.last_headers: Any = {}

    def request(self, method: str, url: str, *args: Any, **kwargs: Any):
        if self.base_url:
            parts = urlsplit(url)
            product = (parts.hostname or "api").split(".")[0]
            url = f"{self.base_url}/{product}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        self.last_headers = {}
        response = super().request(method, url, *args, **kwargs)
        self.last_headers = response.headers or {}
        return response


def callback_url() -> str:
    """Where Twilio posts status callbacks and inbound texts."""
    configured = getattr(settings, "TWILIO_STATUS_CALLBACK_URL", "")
    if configured:
        return configured
    return (
        f"{getattr(settings, 'PUBLIC_BASE_URL', 'http://localhost:8000').rstrip('/')}/sms/callbacks/twilio/"
    )


class TwilioSmsBackend(BaseSmsBackend):
    """Texts and numbers through Twilio's REST API."""

    name = "twilio"

    def __init__(self) -> None:
        self.account_sid: str = getattr(settings, "TWILIO_ACCOUNT_SID", "")
        self.auth_token: str = getattr(settings, "TWILIO_AUTH_TOKEN", "")
        self._http = _HttpClient(getattr(settings, "TWILIO_API_BASE_URL", ""))
        self._client: Client | None = None

    def configuration_problems(self) -> list[str]:
        problems = []
        if not self.account_sid.startswith("AC"):
            problems.append("TWILIO_ACCOUNT_SID must be set to the account SID (it starts with AC).")
        if not self.auth_token:
            problems.append("TWILIO_AUTH_TOKEN must be set (it also checks the signatures of callbacks).")
        if not callback_url().startswith("https://"):
            problems.append(
                "TWILIO_STATUS_CALLBACK_URL (or PUBLIC_BASE_URL) must be a public https:// address "
                "for Twilio to post delivery reports and inbound texts to."
            )
        return problems

    @property
    def client(self) -> Client:
        if self._client is None:
            if not (self.account_sid and self.auth_token):
                raise SmsError(
                    "Twilio is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.",
                    permanent=True,
                    code=SmsErrorCode.AUTH,
                )
            # The SDK still reads TWILIO_REGION and TWILIO_EDGE from the environment, as documented by Twilio.
            self._client = Client(self.account_sid, self.auth_token, http_client=self._http)
        return self._client

    def _error(self, error: Exception, doing: str) -> SmsError:
        """An SmsError for a failed SDK call (`doing`: what was attempted, for the message)."""
        if isinstance(error, requests.RequestException):
            return SmsError(
                f"Twilio could not be reached while {doing}: {type(error).__name__}.",
                permanent=False,
                code=SmsErrorCode.UNAVAILABLE,
            )
        if isinstance(error, TwilioServiceException):
            status, code = error.status, error.code
            text = f"{error.title}: {error.detail}" if error.detail else error.title
        elif isinstance(error, TwilioRestException):
            status, code, text = error.status, error.code, error.msg
        else:
            return SmsError(f"Twilio failed while {doing}: {error}", permanent=False)
        text = mask_numbers(str(text))
        if status == 429 or code == 20429:
            return SmsError(
                f"Twilio asked to slow down while {doing} (error {code}).",
                permanent=False,
                code=SmsErrorCode.RATE_LIMITED,
                retry_after=parse_retry_after(self._http.last_headers.get("Retry-After")),
            )
        if code in _INVALID_NUMBER:
            return SmsError(
                f"The recipient's number cannot receive texts (Twilio error {code}: {text}).",
                permanent=True,
                code=SmsErrorCode.INVALID_NUMBER,
            )
        if code in _OPTED_OUT:
            return SmsError(
                "The recipient replied STOP to this number; Twilio will not text them until they reply START.",
                permanent=True,
                code=SmsErrorCode.OPTED_OUT,
            )
        if status == 401 or code == 20003:
            return SmsError(
                "Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.",
                permanent=True,
                code=SmsErrorCode.AUTH,
            )
        if status >= 500:
            return SmsError(
                f"Twilio had a problem while {doing} (HTTP {status}); it will be tried again.",
                permanent=False,
                code=SmsErrorCode.UNAVAILABLE,
            )
        return SmsError(f"Twilio refused {doing} (error {code}): {text}", permanent=True)

    # --- texts ----------------------------------------------------------------------------------

    def send(self, *, from_number: str, to_number: str, body: str) -> SentMessage:
        try:
            message = self.client.messages.create(
                from_=from_number, to=to_number, body=body, status_callback=callback_url()
            )
        except (TwilioRestException, TwilioServiceException, requests.RequestException) as error:
            raise self._error(error, "sending a text") from error
        return SentMessage(provider_message_id=message.sid)

    # --- numbers --------------------------------------------------------------------------------

    def search_number(self, *, country: str, toll_free: bool) -> AvailableNumber:
        kind = "toll-free" if toll_free else "local"
        try:
            country_numbers = self.client.available_phone_numbers(country.upper())
            listing = country_numbers.toll_free if toll_free else country_numbers.local
            found = listing.list(sms_enabled=True, limit=1)
        except (TwilioRestException, TwilioServiceException) as error:
            if getattr(error, "status", None) == 404:
                raise SmsError(
                    f"Twilio offers no {kind} numbers in {country}; choose another country or kind of number.",
                    permanent=True,
                    code=SmsErrorCode.NO_NUMBERS,
                ) from error
            raise self._error(error, f"searching for a {kind} number") from error
        except requests.RequestException as error:
            raise self._error(error, f"searching for a {kind} number") from error
        if not found:
            raise SmsError(
                f"Twilio has no {kind} number able to text in {country} right now; "
                "request one again later or choose another kind of number.",
                permanent=True,
                code=SmsErrorCode.NO_NUMBERS,
            )
        return AvailableNumber(
            number=found[0].phone_number, provider_id=found[0].phone_number, toll_free=toll_free
        )

    def purchase_number(self, number: AvailableNumber) -> ProvisionedNumber:
        try:
            bought = self.client.incoming_phone_numbers.create(
                phone_number=number.number, sms_url=callback_url(), sms_method="POST"
            )
        except (TwilioRestException, TwilioServiceException, requests.RequestException) as error:
            raise self._error(error, f"buying {number.number}") from error
        return ProvisionedNumber(
            number=bought.phone_number, provider_id=bought.sid, toll_free=number.toll_free
        )

    def find_number(self, number: str) -> ProvisionedNumber | None:
        try:
            owned = self.client.incoming_phone_numbers.list(phone_number=number, limit=1)
        except (TwilioRestException, TwilioServiceException, requests.RequestException) as error:
            raise self._error(error, f"looking up {number}") from error
        if not owned:
            return None
        return ProvisionedNumber(
            number=owned[0].phone_number,
            provider_id=owned[0].sid,
            toll_free=is_toll_free(owned[0].phone_number),
        )

    def release_number(self, provider_id: str) -> None:
        try:
            self.client.incoming_phone_numbers(provider_id).delete()
        except (TwilioRestException, TwilioServiceException) as error:
            if getattr(error, "status", None) == 404:
                return  # already released
            raise self._error(error, "releasing the number") from error
        except requests.RequestException as error:
            raise self._error(error, "releasing the number") from error

    # --- toll-free verification -----------------------------------------------------------------

    def _verification_params(self, number: ProvisionedNumber, details: dict) -> dict[str, Any]:
        create = self.client.messaging.v1.tollfree_verifications.create
        accepted = {name for name in inspect.signature(create).parameters if name != "self"}
        params: dict[str, Any] = {
            "business_name": details.get("business_name"),
            "business_website": details.get("business_website"),
            "notification_email": details.get("contact_email"),
            "business_contact_email": details.get("contact_email"),
            "business_contact_phone": details.get("contact_phone"),
            "use_case_categories": ["ACCOUNT_NOTIFICATIONS"],
            "use_case_summary": details.get("use_case"),
            "production_message_sample": details.get("sample_message"),
            "opt_in_type": details.get("opt_in_type") or "VERBAL",
            "opt_in_image_urls": details.get("opt_in_image_urls"),
            "message_volume": _volume_bucket(details.get("monthly_volume")),
        }
        # Twilio's own parameter names pass through (additional_information, business_type...).
        params.update({k: v for k, v in details.items() if k in accepted})
        if isinstance(params["opt_in_image_urls"], str):
            params["opt_in_image_urls"] = [params["opt_in_image_urls"]]
        params["tollfree_phone_number_sid"] = number.provider_id
        required = [
            name
            for name, p in inspect.signature(create).parameters.items()
            if name != "self" and p.default is inspect.Parameter.empty
        ]
        missing = [name for name in required if not params.get(name)]
        if missing:
            raise SmsError(
                "Twilio needs these for a toll-free verification: " + ", ".join(missing) + ".",
                permanent=True,
                code=SmsErrorCode.INVALID_DETAILS,
            )
        return {k: v for k, v in params.items() if k in accepted and v not in (None, "")}

    def _current_verification(self, number: ProvisionedNumber):
        found = self.client.messaging.v1.tollfree_verifications.list(
            tollfree_phone_number_sid=number.provider_id, limit=1
        )
        return found[0] if found else None

    def submit_toll_free_verification(self, number: ProvisionedNumber, details: dict) -> str:
        params = self._verification_params(number, details)
        try:
            current = self._current_verification(number)
            if current is None:
                created = self.client.messaging.v1.tollfree_verifications.create(**params)
                return _VERIFICATION_STATE.get(created.status, PENDING)
            if current.status != "TWILIO_REJECTED":
                return _VERIFICATION_STATE.get(current.status, PENDING)  # already in review or approved
            # A rejected verification is edited and resubmitted, not created again.
            update = current.update
            accepted = set(inspect.signature(update).parameters)
            updated = update(**{k: v for k, v in params.items() if k in accepted})
            return _VERIFICATION_STATE.get(updated.status, PENDING)
        except (TwilioRestException, TwilioServiceException) as error:
            mapped = self._error(error, "submitting the toll-free verification")
            if mapped.permanent and mapped.code == SmsErrorCode.REJECTED:
                mapped.code = SmsErrorCode.INVALID_DETAILS
            raise mapped from error
        except requests.RequestException as error:
            raise self._error(error, "submitting the toll-free verification") from error

    def toll_free_verification_status(self, number: ProvisionedNumber) -> str:
        try:
            current = self._current_verification(number)
        except (TwilioRestException, TwilioServiceException, requests.RequestException) as error:
            raise self._error(error, "reading the toll-free verification") from error
        if current is None:
            return NOT_SUBMITTED
        return _VERIFICATION_STATE.get(current.status, PENDING)

    # --- callbacks ------------------------------------------------------------------------------

    def _signed_url(self, request: HttpRequest) -> str:
        base = getattr(settings, "TWILIO_CALLBACK_BASE_URL", "")
        if base:
            return base.rstrip("/") + request.get_full_path()
        return request.build_absolute_uri()

    def parse_callback(self, request: HttpRequest) -> CallbackResult:
        if request.method != "POST":
            raise CallbackRejected("Twilio callbacks are POST requests.")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature:
            raise CallbackRejected("The X-Twilio-Signature header is missing.")
        if not self.auth_token:
            raise CallbackRejected("TWILIO_AUTH_TOKEN is not set, so no callback can be checked.")
        if not RequestValidator(self.auth_token).validate(self._signed_url(request), request.POST, signature):
            raise CallbackRejected(
                "The X-Twilio-Signature does not match (wrong auth token, or a proxy changed the URL: "
                "set TWILIO_CALLBACK_BASE_URL)."
            )
        data = request.POST
        if data.get("AccountSid") and self.account_sid and data["AccountSid"] != self.account_sid:
            raise CallbackRejected("The callback is for another Twilio account.")
        message_sid = data.get("MessageSid") or data.get("SmsSid") or ""
        if "MessageStatus" in data:
            status = _REPORT_STATUS.get(data["MessageStatus"])
            if status is None or not message_sid:
                return CallbackResult()  # queued, sending, accepted...: nothing to record
            code = data.get("ErrorCode", "")
            error = ""
            if status == "failed" and code:
                meaning = DELIVERY_ERRORS.get(code, f"see https://www.twilio.com/docs/errors/{code}")
                error = f"Twilio error {code}: {meaning}"
            elif status == "failed":
                error = f"Twilio reported the text {data['MessageStatus']}."
            report = DeliveryReport(message_sid, status, error, timezone.now())
            return CallbackResult(reports=[report])
        if "Body" in data and data.get("From") and data.get("To"):
            text = InboundText(
                from_number=data["From"],
                to_number=data["To"],
                body=data["Body"],
                provider_message_id=message_sid,
            )
            return CallbackResult(response=HttpResponse(EMPTY_TWIML, content_type="text/xml"), inbound=[text])
        return CallbackResult()


def _volume_bucket(value: Any) -> str | None:
    """Twilio's message_volume bucket for a number of texts per month."""
    if value in (None, ""):
        return None
    try:
        volume = int(str(value).replace(",", "").rstrip("+"))
    except ValueError:
        return str(value)  # already one of Twilio's buckets, or Twilio will say what is wrong
    for limit, bucket in _VOLUMES:
        if volume <= limit:
            return bucket
    return _VOLUMES[-1][1]
