"""SMS backends: Twilio and Azure Communication Services through their official SDKs against a real
local HTTP(S) server speaking the providers' documented shapes; callbacks with real signatures and
Event Grid handshakes; the console and locmem backends; loading by dotted path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from urllib.parse import unquote

import phonenumbers
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from twilio.request_validator import RequestValidator

from sms.backends import (
    AvailableNumber,
    CallbackRejected,
    DeliveryReport,
    InboundText,
    ProvisionedNumber,
    SmsError,
    get_sms_backend,
    locmem,
)
from sms.backends.acs import AcsSmsBackend
from sms.backends.base import mask, mask_numbers, parse_retry_after
from sms.backends.console import ConsoleSmsBackend
from sms.backends.locmem import LocmemSmsBackend
from sms.backends.twilio import TwilioSmsBackend
from tests.support.local_server import Route, Seen

ACCOUNT = "AC" + "a1" * 16
TOKEN = "twilio-auth-token-for-tests"
PATIENT = "+14155550123"
OURS = "+18335550142"
CALLBACK = "https://connector.example.org/sms/callbacks/twilio/"
MESSAGES = f"/api/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
INCOMING = f"/api/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"
VERIFICATIONS = "/messaging/v1/Tollfree/Verifications"
EVENTGRID_SECRET = "eventgrid-shared-secret-for-tests"
ACS_KEY = base64.b64encode(b"acs-access-key-for-tests-32-byte").decode()
SMS_API = "2021-03-07"
NUMBERS_API = "2025-06-01"


@pytest.fixture(autouse=True)
def _fresh_locmem():
    locmem.reset()
    yield
    locmem.reset()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Loading and the interface ---------------------------------------------------------------


def test_the_backend_comes_from_the_setting(settings):
    settings.SMS_BACKEND = "sms.backends.locmem.LocmemSmsBackend"

    assert isinstance(get_sms_backend(), LocmemSmsBackend)
    assert isinstance(get_sms_backend("sms.backends.twilio.TwilioSmsBackend"), TwilioSmsBackend)


def test_without_the_setting_the_console_backend_is_used(settings):
    del settings.SMS_BACKEND

    assert isinstance(get_sms_backend(), ConsoleSmsBackend)


def test_a_wrong_backend_path_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        get_sms_backend("sms.backends.nowhere.Backend")
    with pytest.raises(ImproperlyConfigured, match="not a BaseSmsBackend"):
        get_sms_backend("sms.backends.base.SmsError")


def test_an_sms_error_says_whether_to_retry_and_why():
    error = SmsError("Slow down", permanent=False, code="rate_limited", retry_after=30)

    assert str(error) == "Slow down"
    assert (error.message, error.permanent, error.code, error.retry_after) == (
        "Slow down",
        False,
        "rate_limited",
        30,
    )
    assert SmsError("x", permanent=True).code == "rejected"
    assert SmsError("x", permanent=False).code == "unavailable"


def test_reports_take_known_statuses_and_aware_times():
    with pytest.raises(ValueError, match="status must be one of"):
        DeliveryReport("SM1", "read", "", datetime.now(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        DeliveryReport("SM1", "delivered", "", datetime(2030, 1, 1))


def test_numbers_are_masked_in_what_backends_print_and_store():
    assert mask("+14155550123") == "…0123"
    assert (
        mask_numbers("The 'To' number +1 415-555-0123 is not valid") == "The 'To' number …0123 is not valid"
    )
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    later = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 100 <= parse_retry_after(later) <= 120


# --- Console ---------------------------------------------------------------------------------


def test_the_console_backend_logs_one_event_per_text_with_the_number_masked(caplog):
    backend = ConsoleSmsBackend()

    with caplog.at_level("INFO", logger="sms.backends.console"):
        sent = backend.send(from_number=OURS, to_number=PATIENT, body="Org A: your visit is booked.")

    (record,) = [r for r in caplog.records if r.name == "sms.backends.console"]
    logged = record.getMessage()
    assert "Org A: your visit is booked." in logged
    assert "…0123" in logged
    assert PATIENT not in logged and "4155550123" not in logged
    assert sent.provider_message_id in logged


def test_the_console_backend_hands_out_valid_made_up_toll_free_numbers(db, org_a, unscoped):
    from sms.models import NumberState, PhoneNumber

    backend = ConsoleSmsBackend()
    first = backend.search_number(country="US", toll_free=True)
    PhoneNumber.objects.create(tenant=org_a, number=first.number, state=NumberState.ACTIVE)
    second = backend.search_number(country="US", toll_free=True)
    local = backend.search_number(country="US", toll_free=False)

    for found in (first, second, local):
        assert phonenumbers.is_valid_number(phonenumbers.parse(found.number))
    assert first.number == "+18335550100" and second.number == "+18335550101"
    assert (
        phonenumbers.number_type(phonenumbers.parse(first.number)) == phonenumbers.PhoneNumberType.TOLL_FREE
    )
    assert backend.purchase_number(second) == ProvisionedNumber(second.number, second.number, True)
    # The demo approves a toll-free verification at once.
    assert backend.submit_toll_free_verification(backend.purchase_number(second), {}) == "verified"


def test_the_console_backend_has_no_callbacks():
    request = RequestFactory().post("/sms/callbacks/console/", data={})

    with pytest.raises(CallbackRejected, match="no callbacks"):
        ConsoleSmsBackend().parse_callback(request)


# --- Locmem ----------------------------------------------------------------------------------


def test_locmem_keeps_texts_with_deterministic_ids():
    backend = LocmemSmsBackend()

    first = backend.send(from_number=OURS, to_number=PATIENT, body="one")
    second = backend.send(from_number=OURS, to_number=PATIENT, body="two")

    assert (first.provider_message_id, second.provider_message_id) == ("locmem-msg-1", "locmem-msg-2")
    assert [text.body for text in locmem.outbox] == ["one", "two"]
    assert locmem.outbox[0].to_number == PATIENT


def test_locmem_fails_the_next_calls_as_told():
    backend = LocmemSmsBackend()
    LocmemSmsBackend.fail_next = SmsError("down", permanent=False)
    LocmemSmsBackend.failures = [None, SmsError("refused", permanent=True, code="invalid_number")]

    with pytest.raises(SmsError, match="down"):
        backend.send(from_number=OURS, to_number=PATIENT, body="a")
    backend.send(from_number=OURS, to_number=PATIENT, body="b")
    with pytest.raises(SmsError) as refused:
        backend.send(from_number=OURS, to_number=PATIENT, body="c")
    backend.send(from_number=OURS, to_number=PATIENT, body="d")

    assert refused.value.code == "invalid_number" and refused.value.permanent
    assert [text.body for text in locmem.outbox] == ["b", "d"]


def test_locmem_numbers_and_verifications():
    backend = LocmemSmsBackend()

    found = backend.search_number(country="US", toll_free=True)
    bought = backend.purchase_number(found)
    again = backend.search_number(country="US", toll_free=True)

    assert bought == ProvisionedNumber("+18335550100", "locmem-PN1", True)
    assert again.number == "+18335550101"
    assert backend.find_number(bought.number) == bought
    assert backend.toll_free_verification_status(bought) == "not_submitted"
    assert backend.submit_toll_free_verification(bought, {"business_name": "Org A"}) == "pending"
    locmem.verifications["locmem-PN1"] = "verified"
    assert backend.toll_free_verification_status(bought) == "verified"
    backend.release_number(bought.provider_id)
    assert backend.find_number(bought.number) is None


def test_locmem_callbacks_need_the_secret_and_give_reports_and_texts():
    body = {
        "reports": [
            {
                "provider_message_id": "locmem-msg-1",
                "status": "delivered",
                "error": "",
                "occurred_at": "2030-05-01T14:00:00+00:00",
            }
        ],
        "inbound": [
            {"from_number": PATIENT, "to_number": OURS, "body": "STOP", "provider_message_id": "in-1"}
        ],
    }
    factory = RequestFactory()
    good = factory.post(
        "/",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_X_LOCMEM_SECRET=LocmemSmsBackend.callback_secret,
    )
    bad = factory.post("/", data=json.dumps(body), content_type="application/json", HTTP_X_LOCMEM_SECRET="no")

    result = LocmemSmsBackend().parse_callback(good)

    assert result.reports == [
        DeliveryReport("locmem-msg-1", "delivered", "", datetime(2030, 5, 1, 14, tzinfo=UTC))
    ]
    assert result.inbound == [InboundText(PATIENT, OURS, "STOP", "in-1")]
    assert result.response is None
    with pytest.raises(CallbackRejected):
        LocmemSmsBackend().parse_callback(bad)


# --- Twilio: a local server answering Twilio's REST shapes --------------------------------------


@pytest.fixture
def twilio(settings, local_server):
    settings.TWILIO_ACCOUNT_SID = ACCOUNT
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_API_BASE_URL = local_server.base
    settings.TWILIO_STATUS_CALLBACK_URL = CALLBACK
    settings.TWILIO_CALLBACK_BASE_URL = ""
    return local_server


def twilio_error(status: int, code: int, message: str, headers: dict | None = None) -> Route:
    return Route(
        status=status,
        body={
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        headers=headers or {},
    )


def message_resource(sid: str = "SM" + "b2" * 16) -> dict:
    return {
        "account_sid": ACCOUNT,
        "api_version": "2010-04-01",
        "body": "Org A: booked",
        "date_created": "Wed, 01 May 2030 14:00:00 +0000",
        "date_sent": None,
        "date_updated": "Wed, 01 May 2030 14:00:00 +0000",
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": OURS,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {},
        "to": PATIENT,
        "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json",
    }


def test_twilio_sends_with_basic_auth_and_a_status_callback(twilio):
    twilio.add(MESSAGES, status=201, body=message_resource())

    sent = TwilioSmsBackend().send(from_number=OURS, to_number=PATIENT, body="Org A: booked")

    assert sent.provider_message_id == "SM" + "b2" * 16
    (seen,) = twilio.seen
    assert seen.method == "POST"
    assert seen.form() == {"From": OURS, "To": PATIENT, "Body": "Org A: booked", "StatusCallback": CALLBACK}
    assert (
        seen.headers["authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    )


@pytest.mark.parametrize(
    ("status", "code", "expected_code", "permanent"),
    [
        (400, 21211, "invalid_number", True),
        (400, 21614, "invalid_number", True),
        (400, 21610, "opted_out", True),
        (401, 20003, "auth", True),
        (400, 21606, "rejected", True),
        (500, 20500, "unavailable", False),
        (503, 20503, "unavailable", False),
    ],
)
def test_twilio_errors_are_mapped_to_permanent_or_temporary(twilio, status, code, expected_code, permanent):
    twilio.add(MESSAGES, twilio_error(status, code, f"The 'To' number {PATIENT} is not right."))

    with pytest.raises(SmsError) as raised:
        TwilioSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent) == (expected_code, permanent)
    assert PATIENT not in raised.value.message  # Twilio's message repeats the number


def test_twilio_throttling_is_temporary_with_retry_after(twilio):
    twilio.add(MESSAGES, twilio_error(429, 20429, "Too Many Requests", headers={"Retry-After": "7"}))

    with pytest.raises(SmsError) as raised:
        TwilioSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent, raised.value.retry_after) == ("rate_limited", False, 7)
    assert len(twilio.seen) == 1  # no retry inside the backend: the dispatcher paces


def test_twilio_unreachable_is_temporary(settings, twilio):
    settings.TWILIO_API_BASE_URL = f"http://127.0.0.1:{closed_port()}"

    with pytest.raises(SmsError) as raised:
        TwilioSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent) == ("unavailable", False)


def test_twilio_without_credentials_refuses_to_send(settings):
    settings.TWILIO_ACCOUNT_SID = ""

    with pytest.raises(SmsError) as raised:
        TwilioSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert raised.value.permanent and raised.value.code == "auth"


def page(key: str, items: list, path: str) -> dict:
    return {
        key: items,
        "end": max(len(items) - 1, 0),
        "first_page_uri": path,
        "next_page_uri": None,
        "page": 0,
        "page_size": 1,
        "previous_page_uri": None,
        "start": 0,
        "uri": path,
    }


def available(number: str) -> dict:
    return {
        "friendly_name": "(833) 555-0142",
        "phone_number": number,
        "lata": None,
        "locality": None,
        "rate_center": None,
        "latitude": None,
        "longitude": None,
        "region": None,
        "postal_code": None,
        "iso_country": "US",
        "address_requirements": "none",
        "beta": False,
        "capabilities": {"voice": True, "SMS": True, "MMS": False, "fax": False},
    }


def incoming(number: str, sid: str = "PN" + "c3" * 16) -> dict:
    return {
        "sid": sid,
        "account_sid": ACCOUNT,
        "phone_number": number,
        "friendly_name": "(833) 555-0142",
        "sms_url": CALLBACK,
        "sms_method": "POST",
        "capabilities": {"voice": True, "sms": True, "mms": False},
        "status": "in-use",
        "uri": f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{sid}.json",
    }


def test_twilio_searches_a_toll_free_number_and_buys_it_pointing_texts_at_the_connector(twilio):
    tollfree = f"/api/2010-04-01/Accounts/{ACCOUNT}/AvailablePhoneNumbers/US/TollFree.json"
    twilio.add(tollfree, body=page("available_phone_numbers", [available(OURS)], tollfree))
    twilio.add(INCOMING, status=201, body=incoming(OURS))
    backend = TwilioSmsBackend()

    found = backend.search_number(country="US", toll_free=True)
    bought = backend.purchase_number(found)

    assert found == AvailableNumber(OURS, OURS, True)
    assert bought == ProvisionedNumber(OURS, "PN" + "c3" * 16, True)
    search, purchase = twilio.seen
    assert search.method == "GET" and search.query() == {"SmsEnabled": "true", "PageSize": "1"}
    assert purchase.method == "POST"
    assert purchase.form() == {"PhoneNumber": OURS, "SmsUrl": CALLBACK, "SmsMethod": "POST"}


def test_twilio_local_numbers_and_an_empty_search(twilio):
    local = f"/api/2010-04-01/Accounts/{ACCOUNT}/AvailablePhoneNumbers/CA/Local.json"
    twilio.add(local, body=page("available_phone_numbers", [], local))

    with pytest.raises(SmsError) as raised:
        TwilioSmsBackend().search_number(country="CA", toll_free=False)

    assert (raised.value.code, raised.value.permanent) == ("no_numbers", True)
    assert "local" in raised.value.message and "CA" in raised.value.message
    assert twilio.seen[0].route == local


def test_twilio_finds_and_releases_numbers(twilio):
    sid = "PN" + "c3" * 16
    twilio.add(
        INCOMING,
        lambda seen: Route(
            body=page(
                "incoming_phone_numbers", [incoming(OURS)] if OURS in unquote(seen.path) else [], INCOMING
            )
        ),
    )
    twilio.add(f"/api/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{sid}.json", status=204)
    twilio.add(
        f"/api/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/PNgone.json",
        twilio_error(404, 20404, "not found"),
    )
    backend = TwilioSmsBackend()

    assert backend.find_number(OURS) == ProvisionedNumber(OURS, sid, True)
    assert backend.find_number("+18335550199") is None
    backend.release_number(sid)
    backend.release_number("PNgone")  # already gone: released all the same

    assert [s.method for s in twilio.seen] == ["GET", "GET", "DELETE", "DELETE"]
    assert twilio.seen[0].query()["PhoneNumber"] == OURS


VERIFICATION_DETAILS = {
    "business_name": "Org A Health",
    "business_website": "https://org-a.example.org",
    "contact_email": "sms-admin@org-a.example.org",
    "contact_phone": "+14155550100",
    "monthly_volume": 2500,
    "use_case": "Appointment confirmations and reminders for video visits.",
    "sample_message": "Org A: reminder, your video visit is on May 1 at 2:00 PM. Join here: https://...",
    "opt_in_image_urls": "https://org-a.example.org/sms-consent.png",
}


def verifications_page(items: list) -> dict:
    return {
        "verifications": items,
        "meta": {
            "page": 0,
            "page_size": 1,
            "first_page_url": "x",
            "previous_page_url": None,
            "url": "x",
            "next_page_url": None,
            "key": "verifications",
        },
    }


def verification(status: str, sid: str = "HH" + "d4" * 16) -> dict:
    return {
        "sid": sid,
        "account_sid": ACCOUNT,
        "status": status,
        "tollfree_phone_number_sid": "PN" + "c3" * 16,
        "url": f"https://messaging.twilio.com/v1/Tollfree/Verifications/{sid}",
    }


def test_twilio_submits_a_toll_free_verification_with_mapped_details(twilio):
    def route(seen: Seen) -> Route:
        if seen.method == "GET":
            return Route(body=verifications_page([]))
        return Route(status=201, body=verification("PENDING_REVIEW"))

    twilio.add(VERIFICATIONS, route)
    number = ProvisionedNumber(OURS, "PN" + "c3" * 16, True)

    state = TwilioSmsBackend().submit_toll_free_verification(number, VERIFICATION_DETAILS)

    assert state == "pending"
    lookup, create = twilio.seen
    assert lookup.query() == {"TollfreePhoneNumberSid": "PN" + "c3" * 16, "PageSize": "1"}
    form = create.form()
    assert form["TollfreePhoneNumberSid"] == "PN" + "c3" * 16
    assert form["BusinessName"] == "Org A Health"
    assert form["NotificationEmail"] == "sms-admin@org-a.example.org"
    assert form["MessageVolume"] == "10,000"  # Twilio's bucket for 2,500 a month
    assert form["UseCaseCategories"] == "ACCOUNT_NOTIFICATIONS"
    assert form["OptInType"] == "VERBAL"
    assert form["OptInImageUrls"] == "https://org-a.example.org/sms-consent.png"
    assert form["ProductionMessageSample"].startswith("Org A: reminder")


def test_twilio_says_which_verification_details_are_missing(twilio):
    details = {k: v for k, v in VERIFICATION_DETAILS.items() if k != "opt_in_image_urls"}

    with pytest.raises(SmsError) as raised:
        TwilioSmsBackend().submit_toll_free_verification(ProvisionedNumber(OURS, "PN1", True), details)

    assert raised.value.code == "invalid_details" and raised.value.permanent
    assert "opt_in_image_urls" in raised.value.message
    assert twilio.seen == []


@pytest.mark.parametrize(
    ("twilio_status", "state"),
    [
        ("PENDING_REVIEW", "pending"),
        ("IN_REVIEW", "pending"),
        ("TWILIO_APPROVED", "verified"),
        ("TWILIO_REJECTED", "rejected"),
    ],
)
def test_twilio_verification_states_are_mapped(twilio, twilio_status, state):
    twilio.add(VERIFICATIONS, body=verifications_page([verification(twilio_status)]))

    assert TwilioSmsBackend().toll_free_verification_status(ProvisionedNumber(OURS, "PN1", True)) == state


def test_twilio_resubmits_a_rejected_verification_instead_of_creating_another(twilio):
    sid = "HH" + "d4" * 16
    twilio.add(VERIFICATIONS, body=verifications_page([verification("TWILIO_REJECTED", sid)]))
    twilio.add(f"{VERIFICATIONS}/{sid}", status=200, body=verification("PENDING_REVIEW", sid))

    state = TwilioSmsBackend().submit_toll_free_verification(
        ProvisionedNumber(OURS, "PN" + "c3" * 16, True), VERIFICATION_DETAILS
    )

    assert state == "pending"
    assert [(s.method, s.route) for s in twilio.seen] == [
        ("GET", VERIFICATIONS),
        ("POST", f"{VERIFICATIONS}/{sid}"),
    ]
    assert "TollfreePhoneNumberSid" not in twilio.seen[1].form()


# --- Twilio callbacks: X-Twilio-Signature ------------------------------------------------------


def signed_post(
    params: dict,
    *,
    url: str = "http://testserver/sms/callbacks/twilio/",
    token: str = TOKEN,
    path: str = "/sms/callbacks/twilio/",
    **extra,
):
    signature = RequestValidator(token).compute_signature(url, params)
    return RequestFactory().post(path, data=params, HTTP_X_TWILIO_SIGNATURE=signature, **extra)


STATUS_CALLBACK = {
    "AccountSid": ACCOUNT,
    "ApiVersion": "2010-04-01",
    "From": OURS,
    "To": PATIENT,
    "MessageSid": "SM" + "b2" * 16,
    "SmsSid": "SM" + "b2" * 16,
    "MessageStatus": "delivered",
    "SmsStatus": "delivered",
}


def test_a_signed_twilio_status_callback_gives_a_delivery_report(twilio):
    result = TwilioSmsBackend().parse_callback(signed_post(STATUS_CALLBACK))

    (report,) = result.reports
    assert (report.provider_message_id, report.status, report.error) == ("SM" + "b2" * 16, "delivered", "")
    assert report.occurred_at.tzinfo is not None
    assert result.response is None and result.inbound == []


@pytest.mark.parametrize(
    ("twilio_status", "error_code", "status", "error"),
    [
        ("undelivered", "30003", "failed", "Twilio error 30003: Unreachable destination handset"),
        ("failed", "30032", "failed", "Twilio error 30032: Toll-free number not verified"),
        ("sent", "", "sent", ""),
    ],
)
def test_twilio_status_callbacks_map_statuses_and_error_codes(
    twilio, twilio_status, error_code, status, error
):
    params = {**STATUS_CALLBACK, "MessageStatus": twilio_status, "ErrorCode": error_code}

    (report,) = TwilioSmsBackend().parse_callback(signed_post(params)).reports

    assert (report.status, report.error) == (status, error)


def test_intermediate_twilio_statuses_are_accepted_and_ignored(twilio):
    result = TwilioSmsBackend().parse_callback(signed_post({**STATUS_CALLBACK, "MessageStatus": "queued"}))

    assert result.reports == [] and result.inbound == []


def test_a_signed_inbound_twilio_text_is_answered_with_empty_twiml(twilio):
    params = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "Body": "STOP",
        "From": PATIENT,
        "To": OURS,
        "MessageSid": "SM" + "e5" * 16,
        "SmsSid": "SM" + "e5" * 16,
        "SmsStatus": "received",
        "NumMedia": "0",
        "NumSegments": "1",
        "FromCountry": "US",
        "ToCountry": "US",
    }

    result = TwilioSmsBackend().parse_callback(signed_post(params))

    assert result.inbound == [InboundText(PATIENT, OURS, "STOP", "SM" + "e5" * 16)]
    assert result.response["Content-Type"] == "text/xml"
    assert result.response.content.decode().endswith("<Response/>")


def test_a_twilio_callback_signed_with_another_token_is_rejected(twilio):
    with pytest.raises(CallbackRejected, match="does not match"):
        TwilioSmsBackend().parse_callback(signed_post(STATUS_CALLBACK, token="someone-elses-token"))


def test_a_twilio_callback_without_a_signature_is_rejected(twilio):
    request = RequestFactory().post("/sms/callbacks/twilio/", data=STATUS_CALLBACK)

    with pytest.raises(CallbackRejected, match="missing"):
        TwilioSmsBackend().parse_callback(request)


def test_a_twilio_callback_changed_after_signing_is_rejected(twilio):
    signature = RequestValidator(TOKEN).compute_signature(
        "http://testserver/sms/callbacks/twilio/", STATUS_CALLBACK
    )
    tampered = {**STATUS_CALLBACK, "MessageStatus": "failed"}
    request = RequestFactory().post(
        "/sms/callbacks/twilio/", data=tampered, HTTP_X_TWILIO_SIGNATURE=signature
    )

    with pytest.raises(CallbackRejected):
        TwilioSmsBackend().parse_callback(request)


def test_behind_a_proxy_the_signature_is_checked_against_the_public_url(settings, twilio):
    settings.TWILIO_CALLBACK_BASE_URL = "https://connector.example.org"
    public = signed_post(
        STATUS_CALLBACK,
        url="https://connector.example.org/sms/callbacks/twilio/?x=1",
        path="/sms/callbacks/twilio/?x=1",
    )
    internal = signed_post(STATUS_CALLBACK)  # signed for http://testserver/..., not what Twilio called

    assert TwilioSmsBackend().parse_callback(public).reports
    with pytest.raises(CallbackRejected):
        TwilioSmsBackend().parse_callback(internal)


def test_a_twilio_callback_for_another_account_is_rejected(twilio):
    with pytest.raises(CallbackRejected, match="another Twilio account"):
        TwilioSmsBackend().parse_callback(signed_post({**STATUS_CALLBACK, "AccountSid": "AC" + "ff" * 16}))


# --- Azure Communication Services: a local HTTPS server answering ACS's shapes ----------------


def self_signed_for_loopback(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "acs-test.pem", directory / "acs-test.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def acs(settings, local_server_factory, tmp_path, monkeypatch):
    """A TLS LocalServer trusted through REQUESTS_CA_BUNDLE: the SDK always speaks https to the endpoint."""
    cert_path, key_path = self_signed_for_loopback(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = local_server_factory(tls=context)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert_path)
    settings.ACS_CONNECTION_STRING = f"endpoint=https://127.0.0.1:{server.port}/;accesskey={ACS_KEY}"
    settings.ACS_EVENTGRID_SECRET = EVENTGRID_SECRET
    monkeypatch.setattr(AcsSmsBackend, "polling_interval", 0)
    return server


def recipient_result(**changes) -> dict:
    result = {
        "to": PATIENT,
        "messageId": "Outgoing_20300501140000a1b2c3d4_noam",
        "httpStatusCode": 202,
        "repeatabilityResult": "accepted",
        "successful": True,
        "errorMessage": None,
    }
    result.update(changes)
    return result


def test_acs_sends_with_a_delivery_report_and_an_hmac_signature(acs):
    acs.add("/sms", status=202, body={"value": [recipient_result()]})

    sent = AcsSmsBackend().send(from_number=OURS, to_number=PATIENT, body="Org A: booked")

    assert sent.provider_message_id == "Outgoing_20300501140000a1b2c3d4_noam"
    (seen,) = acs.seen
    assert seen.method == "POST" and seen.query() == {"api-version": SMS_API}
    body = seen.json()
    assert body["from"] == OURS and body["message"] == "Org A: booked"
    assert body["smsRecipients"][0]["to"] == PATIENT and body["smsRecipients"][0]["repeatabilityRequestId"]
    assert body["smsSendOptions"]["enableDeliveryReport"] is True
    # The request is signed as ACS checks it: HMAC-SHA256 over verb, path, date, host and body hash.
    content_hash = base64.b64encode(hashlib.sha256(seen.body).digest()).decode()
    assert seen.headers["x-ms-content-sha256"] == content_hash
    signed = f"POST\n{seen.path}\n{seen.headers['x-ms-date']};127.0.0.1:{acs.port};{content_hash}"
    expected = base64.b64encode(hmac.new(base64.b64decode(ACS_KEY), signed.encode(), hashlib.sha256).digest())
    assert seen.headers["authorization"] == (
        "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=" + expected.decode()
    )


@pytest.mark.parametrize(
    ("result", "expected_code", "permanent"),
    [
        (
            {"httpStatusCode": 400, "errorMessage": f"Invalid To phone number {PATIENT}."},
            "invalid_number",
            True,
        ),
        (
            {"httpStatusCode": 400, "errorMessage": "The recipient has opted out of messages."},
            "opted_out",
            True,
        ),
        ({"httpStatusCode": 429, "errorMessage": "Too many requests."}, "rate_limited", False),
        ({"httpStatusCode": 503, "errorMessage": "Service unavailable."}, "unavailable", False),
    ],
)
def test_acs_recipient_failures_are_mapped(acs, result, expected_code, permanent):
    acs.add(
        "/sms", status=202, body={"value": [recipient_result(successful=False, messageId=None, **result)]}
    )

    with pytest.raises(SmsError) as raised:
        AcsSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent) == (expected_code, permanent)
    assert PATIENT not in raised.value.message


def test_acs_throttling_is_temporary_with_retry_after_and_not_retried_by_the_sdk(acs):
    acs.add(
        "/sms",
        status=429,
        headers={"Retry-After": "12"},
        body={"error": {"code": "TooManyRequests", "message": "Rate limit exceeded."}},
    )

    with pytest.raises(SmsError) as raised:
        AcsSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent, raised.value.retry_after) == (
        "rate_limited",
        False,
        12,
    )
    assert len(acs.seen) == 1


@pytest.mark.parametrize(
    ("status", "expected_code", "permanent"),
    [(401, "auth", True), (403, "rejected", True), (500, "unavailable", False), (503, "unavailable", False)],
)
def test_acs_request_failures_are_mapped(acs, status, expected_code, permanent):
    acs.add("/sms", status=status, body={"error": {"code": "Problem", "message": "Something is wrong."}})

    with pytest.raises(SmsError) as raised:
        AcsSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent) == (expected_code, permanent)
    assert len(acs.seen) == 1


def test_acs_unreachable_is_temporary(settings, acs):
    settings.ACS_CONNECTION_STRING = f"endpoint=https://127.0.0.1:{closed_port()}/;accesskey={ACS_KEY}"

    with pytest.raises(SmsError) as raised:
        AcsSmsBackend().send(from_number=OURS, to_number=PATIENT, body="x")

    assert (raised.value.code, raised.value.permanent) == ("unavailable", False)


def long_running(
    server,
    start_path: str,
    operation_id: str,
    *,
    final: dict | None = None,
    final_path: str = "",
    status: str = "succeeded",
    extra_headers: dict | None = None,
):
    """ACS's long-running operation: 202 with Operation-Location, a poll, then the result at Location."""
    operation = f"/phoneNumbers/operations/{operation_id}"
    headers = {
        "Operation-Location": server.url(f"{operation}?api-version={NUMBERS_API}"),
        "operation-id": operation_id,
        **(extra_headers or {}),
    }
    if final_path:
        headers["Location"] = server.url(f"{final_path}?api-version={NUMBERS_API}")
    server.add(start_path, status=202, headers=headers, body=b"")
    polled = {
        "operationType": operation_id.split("_")[0],
        "status": status,
        "id": operation_id,
        "createdDateTime": "2030-05-01T14:00:00Z",
        "lastActionDateTime": "2030-05-01T14:00:01Z",
    }
    if status == "failed":
        polled["error"] = {"code": "OutOfStock", "message": "No numbers match the search."}
    server.add(operation, body=polled)
    if final_path:
        server.add(final_path, body=final or {})


def test_acs_searches_a_toll_free_number_then_buys_it(acs):
    long_running(
        acs,
        "/availablePhoneNumbers/countries/US/:search",
        "search_1",
        final_path="/availablePhoneNumbers/searchResults/sr-1",
        final={
            "searchId": "sr-1",
            "phoneNumbers": [OURS],
            "phoneNumberType": "tollFree",
            "assignmentType": "application",
            "capabilities": {"calling": "inbound", "sms": "inbound+outbound"},
            "cost": {"amount": 2.0, "currencyCode": "USD", "billingFrequency": "monthly"},
            "searchExpiresBy": "2030-05-01T14:16:00Z",
            "isAgreementToNotResellRequired": False,
        },
        extra_headers={"search-id": "sr-1"},
    )
    long_running(acs, "/availablePhoneNumbers/:purchase", "purchase_1", extra_headers={"purchase-id": "sr-1"})
    backend = AcsSmsBackend()

    found = backend.search_number(country="US", toll_free=True)
    bought = backend.purchase_number(found)

    assert found == AvailableNumber(OURS, "sr-1", True)
    assert bought == ProvisionedNumber(OURS, OURS, True)
    search = acs.seen[0]
    assert search.method == "POST" and search.query() == {"api-version": NUMBERS_API}
    assert search.json() == {
        "phoneNumberType": "tollFree",
        "assignmentType": "application",
        "capabilities": {"calling": "inbound", "sms": "inbound+outbound"},
        "quantity": 1,
    }
    purchase = next(s for s in acs.seen if s.route == "/availablePhoneNumbers/:purchase")
    assert purchase.json()["searchId"] == "sr-1"


def test_acs_local_numbers_are_geographic(acs):
    long_running(
        acs,
        "/availablePhoneNumbers/countries/US/:search",
        "search_2",
        final_path="/availablePhoneNumbers/searchResults/sr-2",
        final={
            "searchId": "sr-2",
            "phoneNumbers": [],
            "phoneNumberType": "geographic",
            "assignmentType": "application",
            "capabilities": {"calling": "inbound", "sms": "inbound+outbound"},
            "cost": {"amount": 1.0, "currencyCode": "USD", "billingFrequency": "monthly"},
            "searchExpiresBy": "2030-05-01T14:16:00Z",
            "error": "OutOfStock",
        },
    )

    with pytest.raises(SmsError) as raised:
        AcsSmsBackend().search_number(country="US", toll_free=False)

    assert acs.seen[0].json()["phoneNumberType"] == "geographic"
    assert (raised.value.code, raised.value.permanent) == ("no_numbers", True)
    assert "OutOfStock" in raised.value.message


def test_an_acs_search_that_fails_is_permanent(acs):
    long_running(
        acs,
        "/availablePhoneNumbers/countries/US/:search",
        "search_3",
        status="failed",
        final_path="/availablePhoneNumbers/searchResults/sr-3",
    )

    with pytest.raises(SmsError) as raised:
        AcsSmsBackend().search_number(country="US", toll_free=True)

    assert (raised.value.code, raised.value.permanent) == ("no_numbers", True)


def test_acs_finds_and_releases_numbers(acs):
    quoted = "/phoneNumbers/%2B18335550142"
    acs.add(
        quoted,
        lambda seen: (
            Route(
                body={
                    "id": "18335550142",
                    "phoneNumber": OURS,
                    "countryCode": "US",
                    "phoneNumberType": "tollFree",
                    "capabilities": {"calling": "inbound", "sms": "inbound+outbound"},
                    "assignmentType": "application",
                    "purchaseDate": "2030-05-01T14:00:00Z",
                    "cost": {"amount": 2.0, "currencyCode": "USD", "billingFrequency": "monthly"},
                }
            )
            if seen.method == "GET"
            else Route(
                status=202,
                headers={
                    "Operation-Location": acs.url(
                        f"/phoneNumbers/operations/release_1?api-version={NUMBERS_API}"
                    ),
                    "operation-id": "release_1",
                },
            )
        ),
    )
    acs.add(
        "/phoneNumbers/operations/release_1",
        body={
            "operationType": "releasePhoneNumber",
            "status": "succeeded",
            "id": "release_1",
            "createdDateTime": "2030-05-01T14:00:00Z",
        },
    )
    acs.add(
        "/phoneNumbers/%2B18335550199",
        status=404,
        body={"error": {"code": "NotFound", "message": "Not found."}},
    )
    backend = AcsSmsBackend()

    assert backend.find_number(OURS) == ProvisionedNumber(OURS, OURS, True)
    assert backend.find_number("+18335550199") is None
    backend.release_number(OURS)
    backend.release_number("+18335550199")  # already gone

    assert [(s.method, s.route) for s in acs.seen if s.route.startswith("/phoneNumbers/%2B")] == [
        ("GET", quoted),
        ("GET", "/phoneNumbers/%2B18335550199"),
        ("DELETE", quoted),
        ("DELETE", "/phoneNumbers/%2B18335550199"),
    ]


def test_acs_toll_free_verification_is_done_in_the_azure_portal(acs):
    number = ProvisionedNumber(OURS, OURS, True)
    backend = AcsSmsBackend()

    with pytest.raises(SmsError) as raised:
        backend.submit_toll_free_verification(number, VERIFICATION_DETAILS)

    assert raised.value.permanent and raised.value.code == "not_supported"
    assert "Azure portal" in raised.value.message and "Regulatory documents" in raised.value.message
    assert backend.toll_free_verification_status(number) == "not_submitted"
    assert backend.manages_toll_free_verification is False
    assert acs.seen == []


# --- ACS callbacks: Event Grid ------------------------------------------------------------------


def eventgrid_post(events, *, secret: str | None = EVENTGRID_SECRET, **extra):
    path = "/sms/callbacks/acs/" + (f"?secret={secret}" if secret is not None else "")
    return RequestFactory().post(path, data=json.dumps(events), content_type="application/json", **extra)


RESOURCE = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Communication/CommunicationServices/acs-1"
)


def delivery_event(status: str = "Delivered", details: str = "No error.") -> dict:
    return {
        "id": "e1",
        "topic": RESOURCE,
        "subject": f"/phonenumber/{OURS[1:]}",
        "eventType": "Microsoft.Communication.SMSDeliveryReportReceived",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2030-05-01T14:00:05Z",
        "data": {
            "messageId": "Outgoing_20300501140000a1b2c3d4_noam",
            "from": OURS,
            "to": PATIENT,
            "deliveryStatus": status,
            "deliveryStatusDetails": details,
            "deliveryAttempts": [
                {"timestamp": "2030-05-01T14:00:03Z", "segmentsSucceeded": 1, "segmentsFailed": 0}
            ],
            "receivedTimestamp": "2030-05-01T14:00:04.2855749Z",
            "tag": "",
        },
    }


def received_event() -> dict:
    return {
        "id": "e2",
        "topic": RESOURCE,
        "subject": f"/phonenumber/{PATIENT[1:]}",
        "eventType": "Microsoft.Communication.SMSReceived",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2030-05-01T14:01:00Z",
        "data": {
            "messageId": "Incoming_20300501140100f6e5d4c3_noam",
            "from": PATIENT[1:],
            "to": OURS,
            "message": "HELP",
            "receivedTimestamp": "2030-05-01T14:01:00.1Z",
        },
    }


def test_the_event_grid_subscription_handshake_is_answered(acs):
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": RESOURCE,
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net/eventsubscriptions/x/validate?id=y",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2030-05-01T14:00:00Z",
            "metadataVersion": "1",
            "dataVersion": "2",
        }
    ]

    result = AcsSmsBackend().parse_callback(
        eventgrid_post(validation, HTTP_AEG_EVENT_TYPE="SubscriptionValidation")
    )

    assert result.response.status_code == 200
    assert json.loads(result.response.content) == {
        "validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    }
    assert result.reports == [] and result.inbound == []


def test_the_cloudevents_handshake_is_answered(acs):
    request = RequestFactory().options(
        "/sms/callbacks/acs/", HTTP_WEBHOOK_REQUEST_ORIGIN="eventgrid.azure.net"
    )

    result = AcsSmsBackend().parse_callback(request)

    assert result.response.status_code == 200
    assert result.response["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_event_grid_deliveries_need_the_secret(settings, acs):
    with pytest.raises(CallbackRejected, match="secret"):
        AcsSmsBackend().parse_callback(eventgrid_post([delivery_event()], secret=None))
    with pytest.raises(CallbackRejected, match="secret"):
        AcsSmsBackend().parse_callback(eventgrid_post([delivery_event()], secret="guessed"))
    # The secret may come in a delivery header instead of the URL.
    by_header = eventgrid_post([delivery_event()], secret=None, HTTP_X_CALLBACK_SECRET=EVENTGRID_SECRET)
    assert AcsSmsBackend().parse_callback(by_header).reports
    # Without a configured secret nothing is accepted.
    settings.ACS_EVENTGRID_SECRET = ""
    with pytest.raises(CallbackRejected):
        AcsSmsBackend().parse_callback(eventgrid_post([delivery_event()], secret=""))


def test_event_grid_delivery_reports_and_inbound_texts_are_read(acs):
    events = [
        delivery_event(),
        delivery_event("Failed", f"Destination {PATIENT} unreachable."),
        received_event(),
        {**received_event(), "eventType": "Microsoft.Communication.SMSSomethingElse"},
    ]

    result = AcsSmsBackend().parse_callback(eventgrid_post(events))

    delivered, failed = result.reports
    assert delivered == DeliveryReport(
        "Outgoing_20300501140000a1b2c3d4_noam",
        "delivered",
        "",
        datetime(2030, 5, 1, 14, 0, 4, 285574, tzinfo=UTC),
    )
    assert failed.status == "failed" and failed.error.startswith("Failed: Destination …0123")
    assert result.inbound == [InboundText(PATIENT, OURS, "HELP", "Incoming_20300501140100f6e5d4c3_noam")]
    assert result.response is None


def test_cloudevents_schema_events_are_read_too(acs):
    event = received_event()
    cloud_event = {
        "specversion": "1.0",
        "id": "e2",
        "source": RESOURCE,
        "subject": event["subject"],
        "type": event["eventType"],
        "time": event["eventTime"],
        "data": event["data"],
    }
    request = RequestFactory().post(
        f"/sms/callbacks/acs/?secret={EVENTGRID_SECRET}",
        data=json.dumps(cloud_event),
        content_type="application/cloudevents+json; charset=utf-8",
    )

    result = AcsSmsBackend().parse_callback(request)

    assert result.inbound == [InboundText(PATIENT, OURS, "HELP", "Incoming_20300501140100f6e5d4c3_noam")]


def test_an_event_grid_body_that_is_not_events_is_rejected(acs):
    request = RequestFactory().post(
        f"/sms/callbacks/acs/?secret={EVENTGRID_SECRET}", data="not json", content_type="application/json"
    )

    with pytest.raises(CallbackRejected):
        AcsSmsBackend().parse_callback(request)
    with pytest.raises(CallbackRejected):
        AcsSmsBackend().parse_callback(
            eventgrid_post([{**delivery_event(), "data": {"deliveryStatus": "Delivered"}}])
        )
