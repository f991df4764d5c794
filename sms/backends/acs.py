"""Azure Communication Services, through the official SDKs (azure-communication-sms and -phonenumbers).

    SMS_BACKEND = "sms.backends.acs.AcsSmsBackend"
    ACS_CONNECTION_STRING = "endpoint=https://<resource>.communication.azure.com/;accesskey=<key>"
    ACS_EVENTGRID_SECRET = "<a long random value, also in the Event Grid subscription's URL>"

Calls:

- send: `SmsClient.send(from_, to, message, enable_delivery_report=True)`,
  i.e. `POST {endpoint}/sms?api-version=2021-03-07`. ACS answers 202 with one
  result per recipient (`successful`, `httpStatusCode`, `errorMessage`); a
  whole-request failure is an `HttpResponseError`. The SDK's own retries are
  off for error statuses (`retry_status=0`): a 429 reaches the dispatcher at
  once, with Retry-After. Network retries stay on; each recipient carries a
  repeatability ID, so ACS drops a retried duplicate.
- numbers: `PhoneNumbersClient.begin_search_available_phone_numbers(country,
  TOLL_FREE or GEOGRAPHIC, APPLICATION, capabilities: SMS inbound+outbound,
  calling inbound)`, then `begin_purchase_phone_numbers(search_id)`; both are
  long-running operations, polled until done (at most `operation_timeout`
  seconds each). `begin_release_phone_number(number)` releases. ACS names a
  purchased number by the number itself, so `provider_id` is the number.
- toll-free verification: ACS takes it only in the Azure portal (Phone
  numbers > Regulatory documents), so `submit_toll_free_verification` raises a
  permanent SmsError saying so, `toll_free_verification_status` answers
  "not_submitted", and `manages_toll_free_verification` is False: the state
  support staff record in the admin is kept.

Errors (`SmsError.code`): a recipient result with 400 invalid_number (or
opted_out when ACS says the recipient opted out); 429 rate_limited
(temporary, Retry-After when given); 401 auth and 403 rejected (permanent);
5xx and network failures unavailable (temporary).

Callbacks come from an Event Grid subscription on the ACS resource
(events SMSReceived and SMSDeliveryReportReceived) to
`https://<connector>/sms/callbacks/acs/?secret=<ACS_EVENTGRID_SECRET>`.
Event Grid webhooks carry no signature: they are authenticated by a secret in
the URL (or a static delivery header `X-Callback-Secret`), or by Microsoft
Entra ID, which this backend does not use. Handled:

1. the subscription validation handshake (Event Grid schema): a
   `Microsoft.EventGrid.SubscriptionValidationEvent` is answered with
   `{"validationResponse": <validationCode>}`; with the CloudEvents schema an
   `OPTIONS` request with `WebHook-Request-Origin` is answered with
   `WebHook-Allowed-Origin`. The handshakes are answered before the secret is
   checked: they create nothing and echo only what Event Grid sent, and a
   secret passed as a delivery header may not accompany them.
2. every other request must carry the secret, compared in constant time;
3. `Microsoft.Communication.SMSDeliveryReportReceived` gives a DeliveryReport
   (Delivered: delivered; Failed, Expired and the rest: failed), and
   `Microsoft.Communication.SMSReceived` an InboundText. Other events are
   accepted and ignored. Both the Event Grid schema (`eventType`) and the
   CloudEvents 1.0 schema (`type`, single or batched) are read.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

from azure.communication.phonenumbers import (
    PhoneNumberAssignmentType,
    PhoneNumberCapabilities,
    PhoneNumberCapabilityType,
    PhoneNumbersClient,
    PhoneNumberType,
)
from azure.communication.sms import SmsClient
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sms.backends.base import (
    NOT_SUBMITTED,
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
    plain_e164,
)

logger = logging.getLogger(__name__)

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
DELIVERY_EVENT = "Microsoft.Communication.SMSDeliveryReportReceived"
RECEIVED_EVENT = "Microsoft.Communication.SMSReceived"
SECRET_HEADER = "X-Callback-Secret"


class AcsSmsBackend(BaseSmsBackend):
    """Texts and numbers through Azure Communication Services."""

    name = "acs"
    manages_toll_free_verification = False
    polling_interval: float = 2.0  # seconds between polls of a number operation, without Retry-After
    operation_timeout: float = 50.0  # seconds to wait for a search or purchase (the task times out at 120)

    def __init__(self) -> None:
        self.connection_string: str = getattr(settings, "ACS_CONNECTION_STRING", "")
        self.eventgrid_secret: str = getattr(settings, "ACS_EVENTGRID_SECRET", "")
        self._agreement_required: dict[str, bool] = {}

    def configuration_problems(self) -> list[str]:
        problems = []
        if (
            "endpoint=" not in self.connection_string.lower()
            or "accesskey=" not in self.connection_string.lower()
        ):
            problems.append(
                "ACS_CONNECTION_STRING must be the resource's connection string "
                "(endpoint=https://...;accesskey=...), from Keys in the Azure portal."
            )
        if len(self.eventgrid_secret) < 16:
            problems.append(
                "ACS_EVENTGRID_SECRET must be a random value of at least 16 characters, also put in the "
                "Event Grid subscription's endpoint URL (?secret=...)."
            )
        return problems

    def _client_options(self) -> dict[str, Any]:
        if not self.connection_string:
            raise SmsError(
                "Azure Communication Services is not configured: set ACS_CONNECTION_STRING.",
                permanent=True,
                code=SmsErrorCode.AUTH,
            )
        # No SDK retries on 429/5xx (the dispatcher paces and retries); short timeouts.
        return {"retry_status": 0, "connection_timeout": 5, "read_timeout": 20}

    def _sms_client(self) -> SmsClient:
        try:
            return SmsClient.from_connection_string(self.connection_string, **self._client_options())
        except ValueError as error:
            raise SmsError(
                f"ACS_CONNECTION_STRING is not usable: {error}", permanent=True, code=SmsErrorCode.AUTH
            ) from error

    def _numbers_client(self) -> PhoneNumbersClient:
        try:
            return PhoneNumbersClient.from_connection_string(self.connection_string, **self._client_options())
        except ValueError as error:
            raise SmsError(
                f"ACS_CONNECTION_STRING is not usable: {error}", permanent=True, code=SmsErrorCode.AUTH
            ) from error

    def _error(self, error: AzureError, doing: str) -> SmsError:
        if isinstance(error, ServiceRequestError | ServiceResponseError):
            return SmsError(
                f"Azure Communication Services could not be reached while {doing}: {type(error).__name__}.",
                permanent=False,
                code=SmsErrorCode.UNAVAILABLE,
            )
        status = getattr(error, "status_code", None)
        message = _detail(error)
        if isinstance(error, ClientAuthenticationError) or status == 401:
            return SmsError(
                "Azure Communication Services refused the access key: check ACS_CONNECTION_STRING.",
                permanent=True,
                code=SmsErrorCode.AUTH,
            )
        if status == 429:
            response = getattr(error, "response", None)
            headers = response.headers if response is not None else {}
            return SmsError(
                f"Azure Communication Services asked to slow down while {doing}.",
                permanent=False,
                code=SmsErrorCode.RATE_LIMITED,
                retry_after=parse_retry_after(headers.get("Retry-After")),
            )
        if status is None or status >= 500 or status == 408:
            return SmsError(
                f"Azure Communication Services had a problem while {doing}: {message}",
                permanent=False,
                code=SmsErrorCode.UNAVAILABLE,
            )
        return SmsError(f"Azure Communication Services refused {doing}: {message}", permanent=True)

    # --- texts ----------------------------------------------------------------------------------

    def send(self, *, from_number: str, to_number: str, body: str) -> SentMessage:
        client = self._sms_client()
        try:
            results = client.send(
                from_=from_number, to=[to_number], message=body, enable_delivery_report=True
            )
        except AzureError as error:
            raise self._error(error, "sending a text") from error
        result = results[0]
        if result.successful and result.message_id:
            return SentMessage(provider_message_id=result.message_id)
        raise _recipient_error(result.http_status_code, result.error_message or "")

    # --- numbers --------------------------------------------------------------------------------

    def _wait(self, poller, doing: str):
        result = poller.result(timeout=self.operation_timeout)
        if not poller.done():
            raise SmsError(
                f"Azure Communication Services did not finish {doing} within {int(self.operation_timeout)} "
                "seconds; it will be checked again.",
                permanent=False,
                code=SmsErrorCode.UNAVAILABLE,
            )
        return result

    def search_number(self, *, country: str, toll_free: bool) -> AvailableNumber:
        kind = "toll-free" if toll_free else "local"
        client = self._numbers_client()
        try:
            poller = client.begin_search_available_phone_numbers(
                country.upper(),
                PhoneNumberType.TOLL_FREE if toll_free else PhoneNumberType.GEOGRAPHIC,
                PhoneNumberAssignmentType.APPLICATION,
                # ACS sells numbers by offer; SMS both ways with inbound calling is the one
                # offered for toll-free numbers in the US and Canada.
                PhoneNumberCapabilities(
                    calling=PhoneNumberCapabilityType.INBOUND, sms=PhoneNumberCapabilityType.INBOUND_OUTBOUND
                ),
                quantity=1,
                polling_interval=self.polling_interval,
            )
            result = self._wait(poller, f"searching for a {kind} number")
        except HttpResponseError as error:
            if error.status_code in (400, 404) or _operation_failed(error):
                raise SmsError(
                    f"Azure Communication Services has no {kind} number with SMS in {country} for this "
                    f"resource ({_detail(error)}); "
                    "check the country and number type are offered to your Azure subscription.",
                    permanent=True,
                    code=SmsErrorCode.NO_NUMBERS,
                ) from error
            raise self._error(error, f"searching for a {kind} number") from error
        except AzureError as error:
            raise self._error(error, f"searching for a {kind} number") from error
        if not result or not result.phone_numbers:
            detail = f" ({result.error})" if result is not None and result.error else ""
            raise SmsError(
                f"Azure Communication Services found no {kind} number with SMS in {country}{detail}; "
                "request one again later or choose another kind of number.",
                permanent=True,
                code=SmsErrorCode.NO_NUMBERS,
            )
        self._agreement_required[result.search_id] = bool(result.is_agreement_to_not_resell_required)
        return AvailableNumber(
            number=result.phone_numbers[0], provider_id=result.search_id, toll_free=toll_free
        )

    def purchase_number(self, number: AvailableNumber) -> ProvisionedNumber:
        if self._agreement_required.get(number.provider_id) and not getattr(
            settings, "ACS_AGREE_TO_NOT_RESELL", False
        ):
            raise SmsError(
                "Azure requires an agreement not to resell numbers in this country; set "
                "ACS_AGREE_TO_NOT_RESELL=true if your use allows it, then request the number again.",
                permanent=True,
            )
        client = self._numbers_client()
        try:
            poller = client.begin_purchase_phone_numbers(
                number.provider_id,
                agree_to_not_resell=bool(getattr(settings, "ACS_AGREE_TO_NOT_RESELL", False)),
                polling_interval=self.polling_interval,
            )
            self._wait(poller, f"buying {number.number}")
        except HttpResponseError as error:
            if _operation_failed(error):
                raise SmsError(
                    f"Azure Communication Services could not complete the purchase of {number.number}: "
                    f"{_detail(error)}. "
                    "Check the subscription's billing and the number's regulatory requirements.",
                    permanent=True,
                ) from error
            raise self._error(error, f"buying {number.number}") from error
        except AzureError as error:
            raise self._error(error, f"buying {number.number}") from error
        return ProvisionedNumber(number=number.number, provider_id=number.number, toll_free=number.toll_free)

    def find_number(self, number: str) -> ProvisionedNumber | None:
        client = self._numbers_client()
        try:
            owned = client.get_purchased_phone_number(number)
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise self._error(error, f"looking up {number}") from error
        toll_free = (owned.phone_number_type or "").lower() == "tollfree" or is_toll_free(owned.phone_number)
        return ProvisionedNumber(
            number=owned.phone_number, provider_id=owned.phone_number, toll_free=toll_free
        )

    def release_number(self, provider_id: str) -> None:
        client = self._numbers_client()
        try:
            poller = client.begin_release_phone_number(provider_id, polling_interval=self.polling_interval)
            self._wait(poller, "releasing the number")
        except ResourceNotFoundError:
            return  # already released
        except AzureError as error:
            raise self._error(error, "releasing the number") from error

    # --- toll-free verification -----------------------------------------------------------------

    def submit_toll_free_verification(self, number: ProvisionedNumber, details: dict) -> str:
        raise SmsError(
            "Azure Communication Services takes toll-free verifications only in the Azure portal: submit "
            f"the toll-free verification of {number.number} in the Azure portal: Phone numbers > "
            "Regulatory documents. Support staff record the outcome here once Microsoft decides.",
            permanent=True,
            code=SmsErrorCode.NOT_SUPPORTED,
        )

    def toll_free_verification_status(self, number: ProvisionedNumber) -> str:
        return NOT_SUBMITTED  # ACS has no API for it; see manages_toll_free_verification

    # --- callbacks (Event Grid) -----------------------------------------------------------------

    def _secret_matches(self, request: HttpRequest) -> bool:
        if not self.eventgrid_secret:
            return False
        given = request.GET.get("secret") or request.headers.get(SECRET_HEADER) or ""
        return hmac.compare_digest(given.encode(), self.eventgrid_secret.encode())

    def parse_callback(self, request: HttpRequest) -> CallbackResult:
        if request.method == "OPTIONS":
            # CloudEvents webhook validation (abuse protection).
            origin = request.headers.get("WebHook-Request-Origin", "")
            if not origin:
                raise CallbackRejected(
                    "An OPTIONS request without WebHook-Request-Origin is not Event Grid's."
                )
            response = HttpResponse(status=200)
            response["WebHook-Allowed-Origin"] = origin
            response["WebHook-Allowed-Rate"] = "*"
            return CallbackResult(response=response)
        if request.method != "POST":
            raise CallbackRejected("Event Grid delivers events with POST.")
        try:
            payload = json.loads(request.body)
        except ValueError as error:
            raise CallbackRejected("The body is not JSON.") from error
        events = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(event, dict) for event in events):
            raise CallbackRejected("The body is not a list of Event Grid events.")
        for event in events:
            if _event_type(event) == VALIDATION_EVENT:
                code = (event.get("data") or {}).get("validationCode")
                if not code:
                    raise CallbackRejected("The validation event has no validationCode.")
                return CallbackResult(response=JsonResponse({"validationResponse": code}))
        if not self._secret_matches(request):
            raise CallbackRejected(
                "The Event Grid secret is missing or wrong (the subscription's URL must end in "
                "?secret=<ACS_EVENTGRID_SECRET>)."
            )
        result = CallbackResult()
        for event in events:
            data = event.get("data") or {}
            kind = _event_type(event)
            try:
                if kind == DELIVERY_EVENT:
                    result.reports.append(_delivery_report(event, data))
                elif kind == RECEIVED_EVENT:
                    result.inbound.append(
                        InboundText(
                            from_number=plain_e164(data["from"]),
                            to_number=plain_e164(data["to"]),
                            body=data.get("message") or "",
                            provider_message_id=data["messageId"],
                        )
                    )
            except (KeyError, TypeError, ValueError) as error:
                raise CallbackRejected(f"A {kind} event lacks {error}.") from error
        return result


def _event_type(event: dict) -> str:
    return event.get("eventType") or event.get("type") or ""


def _when(*values: Any) -> datetime:
    for value in values:
        if isinstance(value, str) and value:
            parsed = parse_datetime(value)
            if parsed is not None:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return timezone.now()


def _delivery_report(event: dict, data: dict) -> DeliveryReport:
    delivered = (data.get("deliveryStatus") or "").lower() == "delivered"
    error = ""
    if not delivered:
        error = (
            f"{data.get('deliveryStatus') or 'Failed'}: {data.get('deliveryStatusDetails') or 'no detail'}"
        )
    return DeliveryReport(
        provider_message_id=data["messageId"],
        status="delivered" if delivered else "failed",
        error=mask_numbers(error),
        occurred_at=_when(data.get("receivedTimestamp"), event.get("eventTime"), event.get("time")),
    )


def _detail(error: AzureError) -> str:
    """The first line of an Azure error's message, numbers masked."""
    lines = (getattr(error, "message", None) or str(error) or "").strip().splitlines()
    return mask_numbers(lines[0]) if lines else "no detail"


def _operation_failed(error: HttpResponseError) -> bool:
    """Whether the error is a long-running operation that ended "failed" (not an HTTP error)."""
    return type(error.inner_exception).__name__ == "OperationFailed"


def _recipient_error(status: int | None, message: str) -> SmsError:
    text = mask_numbers(message) or "no detail"
    lowered = text.lower()
    if "opt" in lowered and "out" in lowered:
        return SmsError(
            "The recipient opted out of texts from this number (they replied STOP).",
            permanent=True,
            code=SmsErrorCode.OPTED_OUT,
        )
    if status == 429:
        return SmsError(
            "Azure Communication Services asked to slow down.",
            permanent=False,
            code=SmsErrorCode.RATE_LIMITED,
        )
    if status is None or status >= 500:
        return SmsError(
            f"Azure Communication Services could not send the text: {text}",
            permanent=False,
            code=SmsErrorCode.UNAVAILABLE,
        )
    if status == 400:
        return SmsError(
            f"The recipient's number cannot receive texts: {text}",
            permanent=True,
            code=SmsErrorCode.INVALID_NUMBER,
        )
    if status == 401:
        return SmsError(
            "Azure Communication Services refused the access key: check ACS_CONNECTION_STRING.",
            permanent=True,
            code=SmsErrorCode.AUTH,
        )
    return SmsError(f"Azure Communication Services refused the text (HTTP {status}): {text}", permanent=True)
